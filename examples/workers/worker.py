#!/usr/bin/env python3
"""A Baton remote worker over HTTP, in plain Python (standard library only).

It long-polls the server for activity tasks by name, runs each one, heartbeats while it works,
and reports the result or the failure with the lease token the poll gave. Delivery is at least
once: a task can come again after a crash or a timeout, so handlers make their effects
idempotent with the task's `idempotencyKey` (the same for every attempt).

    BATON_ADDRESS=http://127.0.0.1:8080 BATON_TOKEN=... python3 worker.py

The token needs the `worker` platform permission. Definitions call these activities by name:

    - greet:
        call: greet
        with: { name: ${ .name } }
"""

import hashlib
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request

ADDRESS = os.environ.get("BATON_ADDRESS", "http://127.0.0.1:8080").rstrip("/")
TOKEN = os.environ["BATON_TOKEN"]


class Retryable(Exception):
    """A failure worth another attempt under the activity's retry policy."""


def greet(task):
    name = task["input"].get("name", "world")
    return {"greeting": f"Hello, {name}!", "attempt": task["attempt"]}


def checksum(task):
    text = task["input"].get("text")
    if not isinstance(text, str):
        # Trying again cannot help: a non-retryable failure fails the activity now.
        raise ValueError("`text` must be a string")
    return {"sha256": hashlib.sha256(text.encode()).hexdigest()}


HANDLERS = {"greet": greet, "checksum": checksum}


def call(method, path, body=None):
    """One API call; returns (status, parsed JSON or None)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(ADDRESS + path, data=data, method=method)
    request.add_header("Authorization", "Bearer " + TOKEN)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            text = response.read()
            return response.status, json.loads(text) if text else None
    except urllib.error.HTTPError as error:
        text = error.read()
        return error.code, json.loads(text) if text else None


def heartbeat_while(task, done):
    """Heartbeats until `done` is set or the lease is gone (then the work should stop)."""
    interval = (task.get("heartbeatTimeoutMs") or 30000) / 3000
    while not done.wait(interval):
        status, _ = call("POST", f"/api/v1/workers/leases/{task['token']}/heartbeat")
        if status == 410:
            print(f"lease of {task['idempotencyKey']} is over; stopping", flush=True)
            return


def run(task):
    done = threading.Event()
    beating = threading.Thread(target=heartbeat_while, args=(task, done), daemon=True)
    beating.start()
    lease = f"/api/v1/workers/leases/{task['token']}"
    try:
        result = HANDLERS[task["activity"]](task)
        status, problem = call("POST", lease + "/complete", {"result": result})
    except Retryable as error:
        status, problem = call("POST", lease + "/fail", {"message": str(error), "retryable": True})
    except Exception as error:  # noqa: BLE001 - every other failure is reported, not retried
        status, problem = call("POST", lease + "/fail", {"message": str(error), "retryable": False})
    finally:
        done.set()
    if status == 410:
        print(f"{task['idempotencyKey']}: the lease ended before the result arrived", flush=True)
    elif status >= 400:
        print(f"{task['idempotencyKey']}: {status} {problem}", file=sys.stderr, flush=True)
    else:
        print(f"{task['activity']} {task['idempotencyKey']} attempt {task['attempt']}: done", flush=True)


def main():
    names = sys.argv[1:] or sorted(HANDLERS)
    print(f"polling {ADDRESS} for {', '.join(names)}", flush=True)
    while True:
        try:
            status, body = call("POST", "/api/v1/workers/poll", {"activities": names, "waitMs": 20000})
        except urllib.error.URLError as error:
            # The server restarts or is not up yet: the tasks wait in its store; poll again.
            print(f"poll: {error.reason}; trying again", file=sys.stderr, flush=True)
            time.sleep(1)
            continue
        if status == 200:
            run(body)
        elif status != 204:
            print(f"poll: {status} {body}", file=sys.stderr, flush=True)
            return 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(0)
