#!/usr/bin/env python3
"""Stand-ins for the training platform's services, to try the shipped definitions.

The definitions in definitions/ call the platform's own services by activity name
(`training.checkCapacity`, `training.mandatoryFor`, `users.assignRole`...): Baton does not
provide them, the Training, Assignment and User services do. This worker answers them with a
small fixed catalogue, so that `baton dev` runs every shipped definition end to end before
those services exist. It is an example: replace each handler with a call to the real service.

    BATON_ADDRESS=http://127.0.0.1:8080 BATON_TOKEN=<the worker token baton dev prints> \\
        python3 examples/workers/training_worker.py

It reuses the polling, heartbeats and lease handling of worker.py, next to it.
"""

import datetime
import hashlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import worker  # noqa: E402 - the HTTP protocol lives there

# The mandatory trainings of each role (the Assignment Service's rules).
MANDATORY = {
    "operator": [
        {"trainingId": "safety-1", "title": "Safety basics", "dueInDays": 14},
        {"trainingId": "forklift", "title": "Forklift safety", "dueInDays": 30},
    ],
    "team_leader": [{"trainingId": "lead-101", "title": "Leading a shift", "dueInDays": 30}],
}
DEFAULT_MANDATORY = [{"trainingId": "safety-1", "title": "Safety basics", "dueInDays": 14}]


def parse_time(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def iso(moment):
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_capacity(task):
    """A room is free on the first working day at or after `earliest`, 09:00 to 13:00 UTC."""
    request = task["input"]
    earliest = request.get("earliest")
    day = parse_time(earliest) if earliest else datetime.datetime.now(datetime.timezone.utc)
    day = day.replace(hour=9, minute=0, second=0, microsecond=0)
    while day.weekday() >= 5:
        day += datetime.timedelta(days=1)
    seats = max(len(request.get("participants") or []), 1)
    return {"available": True, "start": iso(day), "end": iso(day + datetime.timedelta(hours=4)),
            "location": "Room A", "seats": seats}


def reserve_trainer(task):
    request = task["input"]
    reservation = hashlib.sha256(task["idempotencyKey"].encode()).hexdigest()[:12]
    return {"reserved": True, "trainerId": request.get("preferredTrainer") or "trainer",
            "trainerName": "The trainer", "reservationId": reservation}


def expiring_certifications(_task):
    return {"certifications": []}


def mark_recertification_started(task):
    return {"marked": len(task["input"].get("certificationIds") or [])}


def mandatory_for(task):
    role = task["input"].get("role")
    return {"trainings": MANDATORY.get(role, DEFAULT_MANDATORY)}


def publish(task):
    return {"published": True, "trainingId": task["input"].get("trainingId"),
            "publishedAt": iso(datetime.datetime.now(datetime.timezone.utc)), "version": 1}


def assign_role(task):
    return {"changed": True, "user": task["input"].get("user"), "role": task["input"].get("role")}


worker.HANDLERS.update({
    "training.checkCapacity": check_capacity,
    "training.reserveTrainer": reserve_trainer,
    "training.expiringCertifications": expiring_certifications,
    "training.markRecertificationStarted": mark_recertification_started,
    "training.mandatoryFor": mandatory_for,
    "training.publish": publish,
    "users.assignRole": assign_role,
})
for example in ("greet", "checksum"):
    worker.HANDLERS.pop(example, None)

if __name__ == "__main__":
    try:
        sys.exit(worker.main())
    except KeyboardInterrupt:
        sys.exit(0)
