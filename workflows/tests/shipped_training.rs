//! Training definitions end to end on the manual clock: training-scheduling,
//! recertification-check, test-assignment and physical-document.

mod shipped;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use baton_engine::directory::Directory;
use baton_engine::human::{InboxQuery, TaskAction};
use baton_engine::store::HistoryStore;
use baton_engine::{InstanceId, InstanceStatus};
use chrono::Duration;
use serde_json::{Value, json};
use shipped::{Answer, Shipped};

fn answer(value: Value) -> Answer {
    Arc::new(move |_input: &Value| Ok(value.clone()))
}

fn count(items: &[String], wanted: &str) -> usize {
    items.iter().filter(|t| *t == wanted).count()
}

fn templates(h: &Shipped) -> Vec<String> {
    h.calls_of("baton.notify").iter().map(|c| c["template"].as_str().unwrap_or_default().to_owned()).collect()
}

/// The input an instance started with.
async fn input_of(h: &Shipped, id: &InstanceId) -> Value {
    let history = h.store.history(id, 0, 1).await.expect("history");
    history[0].to_view()["data"]["input"].clone()
}

/// The data of the CloudEvents of `kind` that `id` emitted, in order.
async fn emitted_data(h: &Shipped, id: &InstanceId, kind: &str) -> Vec<Value> {
    let history = h.store.history(id, 0, u32::MAX).await.expect("history");
    history
        .iter()
        .map(|e| e.to_view())
        .filter(|v| v["type"] == "Emitted" && v["data"]["payload"]["type"] == kind)
        .map(|v| v["data"]["payload"]["data"].clone())
        .collect()
}

/// Waits until `name` has been called `n` times.
async fn until_called(h: &Shipped, name: &str, n: usize) {
    for _ in 0..2_000 {
        if h.calls_of(name).len() >= n {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!("{name} was never called {n} time(s): {:?}", h.call_names());
}

/// Waits until `id` has a timer running (so a wait has taken its start time before the clock
/// moves).
async fn until_timer(h: &Shipped, id: &InstanceId) {
    for _ in 0..2_000 {
        if !h.engine.describe(id).await.expect("describe").timers.is_empty() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!("{id} never started a timer: {:?}", h.call_names());
}

/// Completes the task `name` of `id` that `user` sees, on behalf of `owner`.
async fn complete_for(h: &Shipped, id: &InstanceId, name: &str, user: &str, owner: &str, outcome: &str, data: Value) {
    let principal = h.store.principal(user).await.expect("directory").expect("a known person");
    let tasks = h.tasks(id, user, 1).await;
    let task = tasks.iter().find(|t| t.task.spec.name == name).expect("the task");
    let action = TaskAction::Complete { outcome: outcome.into(), data, on_behalf_of: Some(owner.into()) };
    h.engine.act_on_task(id, task.seq, &principal, action).await.expect("completes");
}

fn scheduling_answers() -> Vec<(&'static str, Answer)> {
    vec![
        (
            "training.checkCapacity",
            answer(json!({"available": true, "start": "2026-12-08T08:00:00Z", "end": "2026-12-08T15:00:00Z",
                "location": "Room 2"})),
        ),
        ("training.reserveTrainer", answer(json!({"reserved": true, "trainerId": "trish", "trainerName": "Trish"}))),
    ]
}

#[tokio::test]
async fn a_session_is_planned_announced_and_its_attendance_recorded() {
    let h = Shipped::new(scheduling_answers()).await;
    let input = json!({"programId": "forklift", "programTitle": "Forklift safety", "department": "assembly",
        "participants": ["olga", "omar"], "requestedBy": "tom", "test": {"testId": "t-forklift", "passScore": 75}});
    let id = h.start("training-scheduling", input, "tom").await;
    until_timer(&h, &id).await;

    let capacity = h.calls_of("training.checkCapacity");
    assert_eq!(capacity.len(), 1, "{capacity:?}");
    assert_eq!(
        (capacity[0]["programId"].clone(), capacity[0]["participants"].clone()),
        (json!("forklift"), json!(["olga", "omar"]))
    );
    let trainer = h.calls_of("training.reserveTrainer");
    assert_eq!(trainer[0]["sessionId"], json!(id.to_string()));
    assert_eq!(trainer[0]["start"], "2026-12-08T08:00:00Z");
    let invitations = h.calls_of("baton.notify");
    assert_eq!(invitations.len(), 1, "{invitations:?}");
    assert_eq!(invitations[0]["template"], "training-invitation");
    assert_eq!(
        invitations[0]["to"],
        json!([{"user": "olga"}, {"user": "omar"}, {"user": "trish"}, {"role": "team_leader", "department": "assembly"}])
    );
    let emitted = h.emitted(&id).await;
    assert_eq!(count(&emitted, "com.baton.training.scheduled"), 1, "{emitted:?}");

    // Nobody records attendance before the session has ended.
    h.advance(Duration::hours(24)).await;
    let trish = h.store.principal("trish").await.expect("directory").expect("trish");
    let inbox = h.engine.inbox(&InboxQuery::default(), &trish).await.expect("inbox");
    assert!(inbox.iter().all(|t| t.instance != id), "{inbox:?}");
    // Tuesday 16:00 Brussels: the session (until 15:00 UTC) is over.
    h.advance(Duration::hours(8)).await;
    let tasks = h.tasks(&id, "trish", 1).await;
    assert_eq!(tasks[0].task.spec.name, "attendance");
    h.tasks(&id, "tom", 1).await;
    h.complete(&id, "attendance", "trish", "done", json!({"attendees": ["olga"], "notes": "omar was ill"})).await;

    let outcome = h.finished(&id).await;
    assert_eq!(outcome.status, InstanceStatus::Completed, "{outcome:?}");
    let result = outcome.result.expect("an output");
    assert_eq!(result["sessionId"], json!(id.to_string()));
    assert_eq!(result["scheduled"], true);
    assert_eq!((result["attendees"].clone(), result["absentees"].clone()), (json!(["olga"]), json!(["omar"])));
    assert_eq!(result["trainer"]["trainerId"], "trish");
    let emitted = h.emitted(&id).await;
    assert_eq!(count(&emitted, "com.baton.training.attendance.recorded"), 1, "{emitted:?}");

    // The attendees take the test: a test-assignment instance for olga only.
    let tests = h.instances_of("test-assignment").await;
    assert_eq!(tests.len(), 1, "{tests:?}");
    assert_eq!(tests[0].1, InstanceStatus::Waiting);
    let test = input_of(&h, &tests[0].0).await;
    assert_eq!((test["operators"].clone(), test["passScore"].clone()), (json!(["olga"]), json!(75)), "{test}");
    assert_eq!((test["sessionId"].clone(), test["testId"].clone()), (json!(id.to_string()), json!("t-forklift")));
    let assigned = emitted_data(&h, &tests[0].0, "com.baton.training.test.assigned").await;
    assert_eq!(assigned.len(), 1, "{assigned:?}");
    assert_eq!(assigned[0]["operatorId"], "olga");
    // Olga attended and takes the test; omar was absent.
    let progress = h.read_model("training-progress").await;
    let status_of = |person: &str| {
        progress.iter().find(|row| row["person"] == person).map(|row| row["status"].clone()).unwrap_or_default()
    };
    assert_eq!((status_of("olga"), status_of("omar")), (json!("testing"), json!("absent")), "{progress:?}");
    let recorded = emitted_data(&h, &id, "com.baton.training.attendance.recorded").await;
    assert_eq!(
        (recorded[0]["recordedBy"].clone(), recorded[0]["notes"].clone()),
        (json!("trish"), json!("omar was ill"))
    );
    h.replay_all().await;
}

#[tokio::test]
async fn a_session_without_a_slot_is_not_scheduled() {
    let h = Shipped::new(vec![(
        "training.checkCapacity",
        answer(json!({"available": false, "reason": "no room free before January"})),
    )])
    .await;
    let input = json!({"programId": "forklift", "programTitle": "Forklift safety", "department": "assembly"});
    let id = h.start("training-scheduling", input, "tom").await;
    let outcome = h.finished(&id).await;
    assert_eq!(outcome.status, InstanceStatus::Completed, "{outcome:?}");
    let result = outcome.result.expect("an output");
    assert_eq!(result["scheduled"], false);
    // Every operator of the department, from the directory.
    assert_eq!(result["participants"], json!(["olga", "omar"]));
    assert!(h.calls_of("training.reserveTrainer").is_empty());
    let notes = h.calls_of("baton.notify");
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0]["template"], "not-scheduled");
    assert_eq!(notes[0]["data"]["reason"], "no room free before January");
    assert!(!h.emitted(&id).await.contains(&"com.baton.training.scheduled".to_owned()));
    h.replay_all().await;
}

#[tokio::test]
async fn unrecorded_attendance_is_reminded_then_reported_to_the_manager() {
    // The Training Service writes its times with milliseconds here.
    let h = Shipped::new(vec![
        (
            "training.checkCapacity",
            answer(json!({"available": true, "start": "2026-12-08T08:00:00.000Z", "end": "2026-12-08T15:00:00.000Z"})),
        ),
        ("training.reserveTrainer", answer(json!({"reserved": true, "trainerId": "trish"}))),
    ])
    .await;
    let input = json!({"programId": "forklift", "programTitle": "Forklift safety", "department": "assembly",
        "participants": ["olga", "omar"]});
    let id = h.start("training-scheduling", input, "tom").await;
    until_timer(&h, &id).await;
    // The session ends Tuesday 16:00 Brussels; the 8 office hours run until Wednesday 16:00.
    h.advance(Duration::hours(32)).await;
    h.tasks(&id, "trish", 1).await;
    // 80%: Wednesday 14:24.
    h.advance(Duration::hours(22) + Duration::minutes(30)).await;
    assert_eq!(templates(&h), vec!["training-invitation", "attendance-due"]);
    let reminder = &h.calls_of("baton.notify")[1];
    assert_eq!(reminder["data"], json!({"program": "Forklift safety", "start": "2026-12-08T08:00:00.000Z"}));
    // 100%: Wednesday 16:00, the department's manager hears of it.
    h.advance(Duration::hours(2)).await;
    assert_eq!(templates(&h), vec!["training-invitation", "attendance-due", "attendance-late"]);
    let late = &h.calls_of("baton.notify")[2];
    assert_eq!(late["data"]["department"], "assembly");
    assert_eq!(late["to"], json!([{"role": "manager", "department": "assembly"}, {"managerOf": "tom"}]));
    let escalated = h.store.history(&id, 0, u32::MAX).await.expect("history");
    assert!(escalated.iter().all(|e| e.to_view()["data"]["kind"] != "io.baton.sla.escalation.faulted.v1"));
    let described = h.engine.describe(&id).await.expect("describe");
    assert_eq!(described.row.status, InstanceStatus::Waiting, "{described:?}");
    // Still open: the team leader records it late.
    h.complete(&id, "attendance", "tom", "done", json!({"attendees": ["olga", "omar"]})).await;
    let result = h.finished(&id).await.result.expect("an output");
    assert_eq!((result["attendees"].clone(), result["absentees"].clone()), (json!(["olga", "omar"]), json!([])));
    assert!(h.instances_of("test-assignment").await.is_empty(), "no test without one");
    h.replay_all().await;
}

#[tokio::test]
async fn the_nightly_check_starts_recertifications() {
    let certifications = json!([
    {"certificationId": "c-1", "operatorId": "olga", "programId": "forklift", "programTitle": "Forklift safety",
     "department": "assembly", "testId": "t-forklift", "passScore": 75, "expiresAt": "2027-01-20T00:00:00Z"},
    {"certificationId": "c-2", "operatorId": "omar", "programId": "forklift", "programTitle": "Forklift safety",
     "department": "assembly", "testId": "t-forklift", "passScore": 75, "expiresAt": "2027-01-10T00:00:00Z"}
    ]);
    // The host marks them in recertification: the next night lists nothing.
    let nights = Arc::new(AtomicUsize::new(0));
    let expiring: Answer = Arc::new(move |_input: &Value| {
        let first = nights.fetch_add(1, Ordering::SeqCst) == 0;
        Ok(json!({"certifications": if first { certifications.clone() } else { json!([]) }}))
    });
    let mut answers = scheduling_answers();
    answers.push(("training.expiringCertifications", expiring));
    let h = Shipped::new(answers).await;
    h.scheduler.tick().await.expect("tick");
    assert!(h.instances_of("recertification-check").await.is_empty(), "nothing before 02:00");
    // Tuesday 02:00 in Brussels is 01:00 UTC, 17 hours after Monday 09:00.
    h.advance(Duration::hours(17) + Duration::minutes(1)).await;
    h.scheduler.tick().await.expect("tick");
    let checks = h.instances_of("recertification-check").await;
    assert_eq!(checks.len(), 1, "{checks:?}");
    let id = checks[0].0.clone();
    let outcome = h.finished(&id).await;
    assert_eq!(outcome.status, InstanceStatus::Completed, "{outcome:?}");
    let result = outcome.result.expect("an output");
    assert_eq!((result["certifications"].clone(), result["sessions"].clone()), (json!(2), json!(1)), "{result}");

    let listed = h.calls_of("training.expiringCertifications");
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0]["within"].clone(), listed[0]["excludeInProgress"].clone()), (json!("P60D"), json!(true)));
    assert_eq!(listed[0]["asOf"], "2026-12-08T01:00:00.000Z");
    let marked = h.calls_of("training.markRecertificationStarted");
    assert_eq!(marked.len(), 1, "{marked:?}");
    assert_eq!(marked[0]["certificationIds"], json!(["c-1", "c-2"]));
    assert_eq!(marked[0]["assignmentId"], json!(format!("{id}-0")));
    let emitted = h.emitted(&id).await;
    assert_eq!(count(&emitted, "com.baton.training.assigned"), 1, "{emitted:?}");

    let sessions = h.instances_of("training-scheduling").await;
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    until_called(&h, "training.checkCapacity", 1).await;
    let capacity = h.calls_of("training.checkCapacity");
    assert_eq!(capacity.len(), 1, "{capacity:?}");
    assert_eq!(capacity[0]["participants"], json!(["olga", "omar"]));
    assert_eq!(capacity[0]["latest"], "2027-01-10T00:00:00Z");
    assert_eq!(capacity[0]["earliest"], "2026-12-08T01:00:00.000Z");
    until_called(&h, "baton.notify", 1).await;
    assert_eq!(templates(&h), vec!["training-invitation"]);
    let session = input_of(&h, &sessions[0].0).await;
    assert_eq!(session["reason"], "recertification");
    assert_eq!(session["test"], json!({"testId": "t-forklift", "passScore": 75}));
    let scheduled = emitted_data(&h, &sessions[0].0, "com.baton.training.scheduled").await;
    assert_eq!(scheduled.len(), 1, "the session is scheduled");
    assert_eq!(scheduled[0]["reason"], "recertification");
    let assigned = emitted_data(&h, &id, "com.baton.training.assigned").await;
    assert_eq!(assigned[0]["assignmentType"], "RECERTIFICATION");
    assert_eq!(assigned[0]["userIds"], json!(["olga", "omar"]));
    // The next night's check finds nothing new (the host excludes those in progress).
    h.advance(Duration::hours(24)).await;
    h.scheduler.tick().await.expect("tick");
    let checks = h.instances_of("recertification-check").await;
    assert_eq!(checks.len(), 2, "{checks:?}");
    let second = checks.iter().find(|(c, _)| *c != id).expect("the second night").0.clone();
    let result = h.finished(&second).await.result.expect("an output");
    assert_eq!((result["certifications"].clone(), result["sessions"].clone()), (json!(0), json!(0)), "{result}");
    assert_eq!(h.calls_of("training.markRecertificationStarted").len(), 1);
    assert_eq!(h.instances_of("training-scheduling").await.len(), 1);
    h.replay_all().await;
}

fn completed(event_id: &str, operator: &str, score: u32) -> Value {
    json!({"specversion": "1.0", "id": event_id, "source": "https://tests.example", "type": "com.baton.training.test.completed",
        "data": {"sessionId": "s-1", "operatorId": operator, "score": score, "completedAt": "2026-12-08T10:00:00Z"}})
}

fn test_input() -> Value {
    json!({"sessionId": "s-1", "programId": "forklift", "programTitle": "Forklift safety", "department": "assembly",
        "testId": "t-forklift", "operators": ["olga", "omar"], "passScore": 75, "validUntil": "2028-12-31"})
}

#[tokio::test]
async fn a_test_certifies_who_passes() {
    let h = Shipped::new(vec![]).await;
    let id = h.start("test-assignment", test_input(), "tom").await;
    until_called(&h, "baton.notify", 1).await;
    let emitted = h.emitted(&id).await;
    assert_eq!(count(&emitted, "com.baton.training.test.assigned"), 2, "{emitted:?}");
    assert_eq!(templates(&h), vec!["test-assigned"]);
    assert_eq!(h.calls_of("baton.notify")[0]["to"], json!([{"user": "olga"}, {"user": "omar"}]));

    h.raise(&id, completed("tc-1", "olga", 92)).await;
    h.advance(Duration::hours(2)).await;
    // Another session's result is not this one's.
    let mut other = completed("tc-x", "omar", 99);
    other["data"]["sessionId"] = json!("s-2");
    h.raise(&id, other).await;
    h.raise(&id, completed("tc-2", "omar", 40)).await;

    let outcome = h.finished(&id).await;
    assert_eq!(outcome.status, InstanceStatus::Completed, "{outcome:?}");
    let result = outcome.result.expect("an output");
    assert_eq!(result["certified"], json!(["olga"]), "{result}");
    assert_eq!(result["failed"], json!(["omar"]), "{result}");
    assert_eq!(result["missing"], json!([]), "{result}");
    assert_eq!(result["results"][1]["score"], 40, "{result}");
    let emitted = h.emitted(&id).await;
    assert_eq!(count(&emitted, "com.baton.training.operator.certified"), 1, "{emitted:?}");
    assert_eq!(count(&emitted, "com.baton.training.versatility-matrix.updated"), 2, "{emitted:?}");
    let summary = h.calls_of("baton.notify");
    assert_eq!(templates(&h), vec!["test-assigned", "test-results"]);
    assert_eq!(
        summary[1]["data"],
        json!({"program": "Forklift safety", "department": "assembly", "certified": 1, "failed": 1, "missing": 0})
    );
    assert!(h.instances_of("sla-escalation").await.is_empty());
    // The versatility matrix and the progress of each operator.
    let matrix = h.read_model("certifications").await;
    let row = |rows: &[Value], key: &str, who: &str| {
        rows.iter().find(|r| r[key] == who).cloned().unwrap_or_else(|| panic!("no row for {who}: {rows:?}"))
    };
    let olga = row(&matrix, "operatorId", "olga");
    assert_eq!(
        (olga["programId"].clone(), olga["status"].clone(), olga["score"].clone(), olga["validUntil"].clone()),
        (json!("forklift"), json!("certified"), json!(92), json!("2028-12-31")),
        "{olga}"
    );
    let omar = row(&matrix, "operatorId", "omar");
    assert_eq!((omar["status"].clone(), omar.get("certifiedAt")), (json!("failed"), None), "{omar}");
    let progress = h.read_model("training-progress").await;
    assert_eq!(row(&progress, "person", "olga")["status"], "certified");
    assert_eq!(row(&progress, "person", "omar")["status"], "failed");
    assert_eq!(row(&progress, "person", "omar")["department"], "assembly");
    h.replay_all().await;
}

#[tokio::test]
async fn a_test_nobody_takes_is_reminded_escalated_and_closed() {
    let h = Shipped::new(vec![]).await;
    let id = h.start("test-assignment", test_input(), "tom").await;
    until_called(&h, "baton.notify", 1).await;
    h.raise(&id, completed("tc-1", "olga", 80)).await;
    // 50% of 40 business hours: Wednesday 14:00; only omar is reminded.
    h.advance(Duration::days(2) + Duration::hours(6)).await;
    assert_eq!(templates(&h), vec!["test-assigned", "test-reminder"]);
    assert_eq!(h.calls_of("baton.notify")[1]["to"], json!([{"user": "omar"}]));
    assert!(h.instances_of("sla-escalation").await.is_empty());
    // 80% (Friday 09:00), then 100% (the next Monday 09:00).
    h.advance(Duration::days(5)).await;
    let notes = h.calls_of("baton.notify");
    assert_eq!(&templates(&h)[..4], ["test-assigned", "test-reminder", "test-reminder", "test-overdue"]);
    assert_eq!(notes[2]["channels"], json!(["inApp", "email", "sms"]));
    assert_eq!(notes[3]["to"], json!([{"role": "team_leader", "department": "assembly"}]));
    assert_eq!((notes[3]["data"]["count"].clone(), notes[3]["data"]["missing"].clone()), (json!(1), json!("omar")));
    // Higher management hears of it: above the missing operator's team leader.
    let escalations = h.instances_of("sla-escalation").await;
    let mut first = None;
    for (child, _) in &escalations {
        let input = input_of(&h, child).await;
        if input["level"] == 1 {
            first = Some((child.clone(), input));
        }
    }
    let (first, input) = first.expect("a first escalation");
    assert_eq!(input["source"], json!({"instance": id.to_string(), "task": "results"}));
    let raised = emitted_data(&h, &first, "com.baton.training.escalation.raised").await;
    assert_eq!(raised.len(), 1, "{:?}", h.calls_of("baton.notify"));
    assert_eq!((input["person"].clone(), input["department"].clone()), (json!("tom"), json!("assembly")));
    assert_eq!(raised[0]["manager"], "maria");
    assert_ne!(h.engine.describe(&id).await.expect("describe").row.status, InstanceStatus::Completed);
    // The hard stop: 21 days after the start.
    h.advance(Duration::days(15)).await;
    let outcome = h.finished(&id).await;
    assert_eq!(outcome.status, InstanceStatus::Completed, "{outcome:?}");
    let result = outcome.result.expect("an output");
    assert_eq!(
        (result["certified"].clone(), result["failed"].clone(), result["missing"].clone()),
        (json!(["olga"]), json!([]), json!(["omar"])),
        "{result}"
    );
    assert_eq!(
        result["results"][1],
        json!({"operatorId": "omar", "score": null, "passed": false, "status": "missing", "completedAt": null})
    );
    let emitted = h.emitted(&id).await;
    assert_eq!(count(&emitted, "com.baton.training.operator.certified"), 1, "{emitted:?}");
    assert_eq!(count(&emitted, "com.baton.training.versatility-matrix.updated"), 1, "{emitted:?}");
    let summary =
        h.calls_of("baton.notify").into_iter().find(|n| n["template"] == "test-results").expect("the summary");
    assert_eq!(summary["data"]["missing"], 1);
    h.replay_all().await;
}

/// The document activities, answering as Baton's (`baton_activities::document`) do.
fn document_answers() -> Vec<(&'static str, Answer)> {
    let store: Answer = Arc::new(|input: &Value| {
        let id = format!("{}/{}", input["trackingCode"].as_str().unwrap_or_default(), SHA);
        Ok(json!({"documentId": id, "uri": format!("documents/{id}.html"), "sha256": SHA}))
    });
    let archive: Answer = Arc::new(|input: &Value| {
        let code = input["trackingCode"].as_str().unwrap_or_default();
        Ok(json!({"archiveRef": format!("archive/{code}/{SHA}"), "sha256": SHA}))
    });
    vec![
        (
            "baton.document.render",
            answer(json!({"draftId": SHA, "sha256": SHA, "mediaType": "text/html", "bytes": 812})),
        ),
        ("baton.document.store", store),
        (
            "baton.document.sign",
            answer(
                json!({"signatureId": "5a1d0c3e9b7f2a64", "algorithm": "Ed25519", "signature": "c2lnbmF0dXJl", "keyId": "k-1"}),
            ),
        ),
        ("baton.document.archive", archive),
    ]
}

const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

fn document_input(digital: bool) -> Value {
    json!({"documentType": "certificate", "templateId": "tpl-cert", "person": "olga", "department": "assembly",
        "data": {"program": "Forklift safety"}, "digital": digital})
}

#[tokio::test]
async fn a_digital_document_is_signed_and_archived() {
    let h = Shipped::new(document_answers()).await;
    let id = h.start("physical-document", document_input(true), "tom").await;
    // Signing without ticking the consent gives olga the task again: no signature yet.
    h.complete(&id, "consent", "olga", "sign", json!({})).await;
    h.tasks(&id, "olga", 1).await;
    assert!(h.calls_of("baton.document.sign").is_empty());
    h.complete(&id, "consent", "olga", "sign", json!({"consent": true})).await;
    let outcome = h.finished(&id).await;
    assert_eq!(outcome.status, InstanceStatus::Completed, "{outcome:?}");
    let result = outcome.result.expect("an output");
    let code = format!("BTN-{id}");
    assert_eq!(h.calls_of("baton.document.sign").len(), 1);
    assert_eq!(result["trackingCode"], json!(code));
    assert_eq!(result["sha256"], SHA);
    assert_eq!((result["status"].clone(), result["digital"].clone()), (json!("archived"), json!(true)));
    assert_eq!(result["documentId"], json!(format!("{code}/{SHA}")));
    assert_eq!(result["archive"]["archiveRef"], json!(format!("archive/{code}/{SHA}")));
    assert_eq!(h.calls_of("baton.document.render")[0]["trackingCode"], json!(code));
    assert_eq!(h.calls_of("baton.document.store")[0]["sha256"], SHA);
    let signed = h.calls_of("baton.document.sign");
    assert_eq!((signed[0]["sha256"].clone(), signed[0]["signer"].clone()), (json!(SHA), json!("olga")));
    assert_eq!(h.calls_of("baton.document.archive")[0]["channel"], "digital");
    assert_eq!(
        h.emitted(&id).await,
        [
            "com.baton.training.document.issued",
            "com.baton.training.document.signed",
            "com.baton.training.document.archived"
        ]
    );
    let signed = emitted_data(&h, &id, "com.baton.training.document.signed").await;
    assert_eq!((signed[0]["channel"].clone(), signed[0]["sha256"].clone()), (json!("digital"), json!(SHA)));
    assert_eq!(signed[0]["signature"]["signatureId"], "5a1d0c3e9b7f2a64");
    let archived = emitted_data(&h, &id, "com.baton.training.document.archived").await;
    assert_eq!((archived[0]["trackingCode"].clone(), archived[0]["channel"].clone()), (json!(code), json!("digital")));
    h.replay_all().await;
}

#[tokio::test]
async fn a_refused_digital_signature_ends_the_document() {
    let h = Shipped::new(document_answers()).await;
    let id = h.start("physical-document", document_input(true), "hugo").await;
    h.complete(&id, "consent", "olga", "refuse", json!({"reason": "the dates are wrong"})).await;
    let outcome = h.finished(&id).await;
    assert_eq!(outcome.status, InstanceStatus::Completed, "{outcome:?}");
    let result = outcome.result.expect("an output");
    assert_eq!((result["status"].clone(), result["archive"].clone()), (json!("refused"), Value::Null));
    assert!(h.calls_of("baton.document.sign").is_empty() && h.calls_of("baton.document.archive").is_empty());
    let refused = emitted_data(&h, &id, "com.baton.training.document.refused").await;
    assert_eq!(
        (refused[0]["recordedBy"].clone(), refused[0]["remark"].clone()),
        (json!("olga"), json!("the dates are wrong"))
    );
    h.replay_all().await;
}

#[tokio::test]
async fn a_paper_document_goes_out_and_comes_back() {
    let h = Shipped::new(document_answers()).await;
    let id = h.start("physical-document", document_input(false), "tom").await;
    let code = format!("BTN-{id}");
    h.complete(&id, "print", "dora", "printed", json!({"printer": "P2", "copies": 1})).await;
    h.complete(&id, "send", "dora", "sent", json!({"via": "internal-mail"})).await;
    // Olga signs the paper; her team leader records it for her.
    let olga = h.tasks(&id, "olga", 1).await;
    assert_eq!(olga[0].task.spec.name, "sign");
    complete_for(&h, &id, "sign", "tom", "olga", "signed", json!({"remark": "signed at the line"})).await;
    h.advance(Duration::seconds(1)).await;
    h.raise(
        &id,
        json!({"specversion": "1.0", "id": "scan-1", "source": "https://mailroom.example",
        "type": "com.baton.training.document.scanned", "data": {"trackingCode": code, "scannedBy": "dora"}}),
    )
    .await;
    h.complete(&id, "fileOriginal", "dora", "archived", json!({"location": "Cabinet 3"})).await;
    let outcome = h.finished(&id).await;
    assert_eq!(outcome.status, InstanceStatus::Completed, "{outcome:?}");
    let result = outcome.result.expect("an output");
    assert_eq!((result["status"].clone(), result["digital"].clone()), (json!("archived"), json!(false)));
    let archive = h.calls_of("baton.document.archive");
    assert_eq!((archive[0]["channel"].clone(), archive[0]["location"].clone()), (json!("paper"), json!("Cabinet 3")));
    assert_eq!((archive[0]["sha256"].clone(), archive[0]["archivedBy"].clone()), (json!(SHA), json!("dora")));
    assert!(h.calls_of("baton.document.sign").is_empty(), "paper is not signed digitally");
    assert_eq!(
        h.emitted(&id).await,
        [
            "com.baton.training.document.issued",
            "com.baton.training.document.printed",
            "com.baton.training.document.sent",
            "com.baton.training.document.signed",
            "com.baton.training.document.returned",
            "com.baton.training.document.archived"
        ]
    );
    let signed = emitted_data(&h, &id, "com.baton.training.document.signed").await;
    assert_eq!(
        (signed[0]["signer"].clone(), signed[0]["recordedBy"].clone(), signed[0]["onBehalfOf"].clone()),
        (json!("olga"), json!("tom"), json!("olga"))
    );
    let returned = emitted_data(&h, &id, "com.baton.training.document.returned").await;
    assert_eq!((returned[0]["how"].clone(), returned[0]["receivedBy"].clone()), (json!("scanned"), json!("dora")));
    let archived = emitted_data(&h, &id, "com.baton.training.document.archived").await;
    assert_eq!((archived[0]["channel"].clone(), archived[0]["sha256"].clone()), (json!("paper"), json!(SHA)));
    assert!(templates(&h).is_empty(), "nothing was late: {:?}", templates(&h));
    // Where it is now, and its custody trail.
    let documents = h.read_model("documents").await;
    assert_eq!(documents.len(), 1, "{documents:?}");
    let document = &documents[0];
    assert_eq!(
        (document["trackingCode"].as_str(), document["state"].as_str(), document["person"].as_str()),
        (Some(code.as_str()), Some("archived"), Some("olga")),
        "{document}"
    );
    let legs: Vec<&str> =
        document["trail"].as_array().expect("a trail").iter().filter_map(|l| l["state"].as_str()).collect();
    assert_eq!(legs, ["issued", "printed", "sent", "signed", "returned", "archived"]);
    assert_eq!(document["trail"][3]["recordedBy"], "tom", "who recorded the signature: {document}");
    h.replay_all().await;
}

#[tokio::test]
async fn an_unsigned_paper_escalates() {
    let h = Shipped::new(document_answers()).await;
    let id = h.start("physical-document", document_input(false), "tom").await;
    // Nobody prints it for 4 office hours: the clerks are reminded at 80%, their manager told at
    // 100% (Monday 14:00).
    h.tasks(&id, "dora", 1).await;
    h.advance(Duration::hours(6)).await;
    assert_eq!(templates(&h), vec!["document-due-soon", "document-late"]);
    let notes = h.calls_of("baton.notify");
    assert_eq!(notes[0]["to"], json!([{"role": "document_clerk", "department": null}]));
    assert_eq!(notes[1]["to"], json!([{"managerOf": "dora"}, {"role": "manager", "department": "assembly"}]));
    assert_eq!(notes[1]["data"]["leg"], "printing");
    h.calls.lock().expect("calls").clear();
    h.complete(&id, "print", "dora", "printed", json!({})).await;
    h.complete(&id, "send", "dora", "sent", json!({"via": "by-hand"})).await;
    let code = format!("BTN-{id}");
    h.tasks(&id, "olga", 1).await;
    // 50% of 24 office hours: Wednesday 09:00, olga is reminded.
    h.advance(Duration::days(2)).await;
    assert_eq!(templates(&h), vec!["document-due-soon"]);
    assert_eq!(h.calls_of("baton.notify")[0]["to"], json!([{"user": "olga"}]));
    // 100% (Thursday 14:00): the team leaders; 200% (Tuesday 15 December 14:00): management.
    h.advance(Duration::days(7)).await;
    assert_eq!(templates(&h)[..3], ["document-due-soon", "document-late", "escalation"]);
    assert_eq!(h.calls_of("baton.notify")[1]["data"]["leg"], "signature");
    let escalations = h.instances_of("sla-escalation").await;
    assert_eq!(escalations.len(), 1, "{escalations:?}");
    let escalation = escalations[0].0.clone();
    let input = input_of(&h, &escalation).await;
    assert_eq!((input["person"].clone(), input["level"].clone()), (json!("olga"), json!(1)));
    assert_eq!(input["subject"]["id"], json!(code));
    // Tom acknowledges; olga signs at last.
    h.complete(&escalation, "ask", "tom", "acknowledge", json!({"action": "spoke to olga"})).await;
    let acknowledged = h.finished(&escalation).await.result.expect("an output");
    assert_eq!((acknowledged["acknowledged"].clone(), acknowledged["by"].clone()), (json!(true), json!("tom")));
    h.complete(&id, "sign", "olga", "signed", json!({})).await;
    // The signed paper never comes back: after 20 days a clerk says it is lost.
    h.advance(Duration::days(21)).await;
    assert!(templates(&h).iter().any(|t| t == "document-late"));
    h.complete(&id, "notReturned", "dora", "lost", json!({})).await;
    let outcome = h.finished(&id).await;
    assert_eq!(outcome.status, InstanceStatus::Completed, "{outcome:?}");
    let result = outcome.result.expect("an output");
    assert_eq!((result["status"].clone(), result["archive"].clone()), (json!("lost"), Value::Null));
    let lost = emitted_data(&h, &id, "com.baton.training.document.lost").await;
    assert_eq!(lost[0]["recordedBy"], "dora");
    assert!(h.calls_of("baton.document.archive").is_empty());
    h.replay_all().await;
}
