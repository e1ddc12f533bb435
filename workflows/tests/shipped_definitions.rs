//! The shipped definitions (`definitions/`), end to end on a real engine and a manual clock:
//! every one validates without an error; mandatory trainings are assigned on `user.created` and
//! `user.role.changed`; the multi-step approval with four-eyes, on-behalf confirmation and an
//! N-of-M vote; training publication and admin promotion as uses of it; the escalation
//! sub-workflow climbing the management chain. Every instance is replayed at the end.

mod shipped;

use std::sync::Arc;

use baton_engine::directory::Directory;
use baton_engine::human::{HumanTaskRow, InboxQuery, TaskAction};
use baton_engine::{Actor, EngineError, InstanceStatus};
use baton_workflows::diagnostic::Severity;
use baton_workflows::validate::{ValidateOptions, check};
use serde_json::{Value, json};
use shipped::{Shipped, sources};

#[test]
fn every_shipped_definition_validates_without_an_error() {
    let found = sources();
    assert!(found.len() >= 9, "the shipped definitions: {:?}", found.iter().map(|(f, _)| f).collect::<Vec<_>>());
    for (file, source) in found {
        let (_, diagnostics) = check(&file, source.as_bytes(), &ValidateOptions::default());
        let errors: Vec<String> = diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .map(|d| format!("{}:{} {} {}", d.line, d.column, d.code, d.message))
            .collect();
        assert!(errors.is_empty(), "{file}: {errors:#?}");
    }
}

#[tokio::test]
async fn mandatory_trainings_are_assigned_when_a_user_is_created_or_changes_role() {
    let mandatory: shipped::Answer = Arc::new(|input: &Value| {
        let trainings = match input["role"].as_str() {
            Some("team_leader") => json!([{"trainingId": "lead-101", "title": "Leading a shift", "dueInDays": 30}]),
            _ => json!([
                {"trainingId": "safety-1", "title": "Safety basics", "dueInDays": 14},
                {"trainingId": "forklift", "title": "Forklift safety"}
            ]),
        };
        Ok(json!({ "trainings": trainings }))
    });
    let h = Shipped::new(vec![("training.mandatoryFor", mandatory)]).await;
    let created = json!({"specversion": "1.0", "id": "u-1", "source": "https://users.example",
        "type": "com.baton.user.created", "data": {"id": "omar", "role": "operator", "department": "assembly"}});
    let started = h.scheduler.on_event(&created, Actor::Worker { id: "users".into() }).await.expect("started");
    assert_eq!(started.len(), 1, "{started:?}");
    let outcome = h.finished(&started[0].instance).await;
    assert_eq!(outcome.status, InstanceStatus::Completed, "{outcome:?}");
    let result = outcome.result.expect("an output");
    assert_eq!((result["userId"].clone(), result["trigger"].clone()), (json!("omar"), json!("com.baton.user.created")));
    assert_eq!(result["assigned"].as_array().map(Vec::len), Some(2), "{result}");
    let emitted = h.emitted(&started[0].instance).await;
    assert_eq!(emitted.iter().filter(|t| *t == "com.baton.training.assigned").count(), 2, "{emitted:?}");
    assert_eq!(h.calls_of("training.mandatoryFor")[0]["userId"], "omar");

    let changed = json!({"specversion": "1.0", "id": "u-2", "source": "https://users.example",
        "type": "com.baton.user.role.changed",
        "data": {"userId": "olga", "role": "team_leader", "previousRole": "operator", "department": "assembly"}});
    let started = h.scheduler.on_event(&changed, Actor::Worker { id: "users".into() }).await.expect("started");
    let result = h.finished(&started[0].instance).await.result.expect("an output");
    assert_eq!(
        (result["role"].clone(), result["assigned"][0]["trainingId"].clone()),
        (json!("team_leader"), json!("lead-101"))
    );
    let again = h.scheduler.on_event(&changed, Actor::Worker { id: "users".into() }).await.expect("again");
    assert_eq!(again, started, "the same event assigns nothing twice");
    h.replay_all().await;
}

/// The open task named `name` that `user` sees, in whichever instance, once there is one.
async fn task_named(h: &Shipped, user: &str, name: &str) -> HumanTaskRow {
    let principal = h.store.principal(user).await.expect("directory").expect("a known person");
    for _ in 0..2_000 {
        let tasks = h.engine.inbox(&InboxQuery::default(), &principal).await.expect("inbox");
        if let Some(task) = tasks.into_iter().find(|t| t.task.spec.name == name) {
            return task;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!("{user} never saw a task {name}; calls: {:?}", h.call_names());
}

async fn act(h: &Shipped, task: &HumanTaskRow, user: &str, action: TaskAction) -> Result<(), EngineError> {
    let principal = h.store.principal(user).await.expect("directory").expect("a known person");
    h.engine.act_on_task(&task.instance, task.seq, &principal, action).await.map(drop)
}

fn decide(outcome: &str, comment: &str) -> TaskAction {
    TaskAction::Complete { outcome: outcome.into(), data: json!({"comment": comment}), on_behalf_of: None }
}

#[tokio::test]
async fn a_request_made_for_an_operator_is_confirmed_then_approved_by_a_manager_and_two_of_three() {
    let h = Shipped::new(vec![]).await;
    let input = json!({
        "subject": {"kind": "training", "id": "req-114", "title": "Forklift training for Olga"},
        "requestedBy": "tom", "onBehalfOf": "olga", "department": "assembly", "confirmByBeneficiary": true,
        "steps": [
            {"name": "manager", "role": "manager"},
            {"name": "committee", "users": ["maria", "sara", "hugo"], "quorum": 2, "title": "Fund it?"}
        ]
    });
    let id = h.start("approval", input, "tom").await;
    let confirm = task_named(&h, "olga", "confirm").await;
    act(
        &h,
        &confirm,
        "olga",
        TaskAction::Complete { outcome: "confirm".into(), data: Value::Null, on_behalf_of: None },
    )
    .await
    .expect("olga confirms the request made for her");
    let step = task_named(&h, "maria", "decide").await;
    assert!(act(&h, &step, "tom", decide("approve", "mine")).await.is_err(), "the requester never approves");
    act(&h, &step, "maria", decide("approve", "budget is there")).await.expect("the manager approves");
    let vote = task_named(&h, "sara", "decide").await;
    assert_ne!(vote.seq, step.seq, "the committee's step");
    act(&h, &vote, "sara", decide("approve", "worth it")).await.expect("sara");
    let vote = task_named(&h, "hugo", "decide").await;
    act(&h, &vote, "hugo", decide("approve", "agreed")).await.expect("hugo: two of three");
    let outcome = h.finished(&id).await;
    let result = outcome.result.expect("an output");
    assert_eq!((result["approved"].clone(), result["rejectedAt"].clone()), (json!(true), Value::Null), "{result}");
    let steps: Vec<&str> =
        result["decisions"].as_array().expect("decisions").iter().filter_map(|d| d["step"].as_str()).collect();
    assert_eq!(steps, ["confirm", "manager", "committee"]);
    let emitted: Vec<String> = h.emitted(&id).await.into_iter().filter(|t| t.starts_with("com.baton.")).collect();
    assert_eq!(
        emitted,
        [
            "com.baton.request.on-behalf.created",
            "com.baton.workflow.started",
            "com.baton.workflow.approved",
            "com.baton.workflow.approved"
        ]
    );
    let told: Vec<Value> = h.calls_of("baton.notify").iter().map(|n| n["template"].clone()).collect();
    assert!(told.contains(&json!("approval-requested")) && told.contains(&json!("approval-decided")), "{told:?}");
    h.replay_all().await;
}

#[tokio::test]
async fn a_training_is_published_after_another_super_administrator_approves_it() {
    let publish: shipped::Answer = Arc::new(|input: &Value| {
        Ok(
            json!({"published": true, "publishedAt": "2026-12-07T09:00:00Z", "version": 3, "trainingId": input["trainingId"]}),
        )
    });
    let h = Shipped::new(vec![("training.publish", publish)]).await;
    let input =
        json!({"trainingId": "t-42", "title": "Forklift safety", "requestedBy": "adam", "department": "assembly"});
    let id = h.start("training-publication", input, "adam").await;
    let review = task_named(&h, "sara", "decide").await;
    assert!(act(&h, &review, "adam", decide("approve", "looks fine")).await.is_err(), "four-eyes: not the requester");
    act(&h, &review, "sara", decide("approve", "ready to go")).await.expect("sara approves");
    let result = h.finished(&id).await.result.expect("an output");
    assert_eq!(result["published"], true, "{result}");
    let calls = h.calls_of("training.publish");
    assert_eq!((calls.len(), calls[0]["approvedBy"].clone()), (1, json!("sara")));
    assert!(h.emitted(&id).await.contains(&"com.baton.training.published".to_owned()));

    // Rejected: nothing is published.
    let input = json!({"trainingId": "t-43", "title": "Crane basics", "requestedBy": "sara", "department": "assembly"});
    let id = h.start("training-publication", input, "sara").await;
    let review = task_named(&h, "adam", "decide").await;
    act(&h, &review, "adam", decide("reject", "not ready")).await.expect("adam rejects");
    let result = h.finished(&id).await.result.expect("an output");
    assert_eq!((result["published"].clone(), h.calls_of("training.publish").len()), (json!(false), 1));
    h.replay_all().await;
}

#[tokio::test]
async fn an_admin_promotion_goes_to_hr_then_it_then_the_role_is_assigned() {
    let h = Shipped::new(vec![]).await;
    let input =
        json!({"user": "olga", "requestedBy": "sara", "department": "assembly", "reason": "runs the night shift"});
    let id = h.start("admin-promotion", input, "sara").await;
    let hr = task_named(&h, "hugo", "decide").await;
    assert!(act(&h, &hr, "ivan", decide("approve", "fine")).await.is_err(), "IT does not act before HR");
    act(&h, &hr, "hugo", decide("approve", "contract checked")).await.expect("HR approves");
    let it = task_named(&h, "ivan", "decide").await;
    act(&h, &it, "ivan", decide("approve", "account ready")).await.expect("IT approves");
    h.finished(&id).await;
    let assigned = h.calls_of("users.assignRole");
    assert_eq!(assigned.len(), 1, "{:?}", h.call_names());
    assert_eq!((assigned[0]["user"].clone(), assigned[0]["role"].clone()), (json!("olga"), json!("admin")));
    h.replay_all().await;
}

#[tokio::test]
async fn an_unacknowledged_escalation_climbs_to_the_next_manager_on_business_time() {
    let h = Shipped::new(vec![]).await;
    let input = json!({"subject": {"kind": "test", "id": "s-1", "title": "Test of Forklift safety"},
        "reason": "Operators have not taken the test in time", "person": "olga", "level": 1});
    let id = h.start("sla-escalation", input, "adam").await;
    let first = task_named(&h, "tom", "ask").await;
    assert_eq!(first.instance, id, "olga's manager is asked first");
    // Tom has four business hours: from Monday 09:00, with the lunch hour, until 14:00. Past
    // them, the next level starts with Tom's manager.
    h.advance(chrono::Duration::hours(6)).await;
    let second = task_named(&h, "maria", "ask").await;
    assert_ne!(second.instance, id, "a new escalation instance, one level up");
    act(
        &h,
        &second,
        "maria",
        TaskAction::Complete { outcome: "acknowledge".into(), data: json!({"action": "call Tom"}), on_behalf_of: None },
    )
    .await
    .expect("maria acknowledges");
    let result = h.finished(&second.instance).await.result.expect("an output");
    assert_eq!(
        (result["level"].clone(), result["manager"].clone(), result["acknowledged"].clone()),
        (json!(2), json!("maria"), json!(true))
    );
    assert_eq!(result["action"], "call Tom");
    act(&h, &first, "tom", TaskAction::Complete { outcome: "acknowledge".into(), data: json!({}), on_behalf_of: None })
        .await
        .expect("tom acknowledges late");
    let result = h.finished(&id).await.result.expect("an output");
    assert_eq!((result["level"].clone(), result["acknowledged"].clone()), (json!(1), json!(true)));
    let told: Vec<Value> = h.calls_of("baton.notify").iter().map(|n| n["to"].clone()).collect();
    assert!(told.contains(&json!([{"user": "tom"}])) && told.contains(&json!([{"user": "maria"}])), "{told:?}");
    h.replay_all().await;
}

#[tokio::test]
async fn a_training_is_assigned_to_a_thousand_people_with_one_start_and_one_notification_call() {
    let notify: shipped::Answer = Arc::new(|input: &Value| {
        let recipients = input["to"].as_array().cloned().unwrap_or_default();
        let deliveries: Vec<Value> = recipients
            .iter()
            .map(|to| json!({"recipient": to["user"], "channel": "inApp", "status": "sent"}))
            .collect();
        Ok(json!({"deliveries": deliveries, "sent": recipients.len()}))
    });
    let h = Shipped::new(vec![("baton.notify", notify)]).await;
    let people: Vec<String> = (0..1_000).map(|i| format!("employee-{i}")).collect();
    let input = json!({"trainingId": "safety-1", "title": "Safety basics", "dueDate": "2026-12-31",
        "assignedBy": "hugo", "people": people});
    let id = h.start("bulk-assignment", input, "hugo").await;
    // When the start answers, its first event, holding every assignment, is in the store.
    let first = baton_engine::store::HistoryStore::history(h.store.as_ref(), &id, 0, 1).await.expect("history");
    let started: Value = serde_json::from_str(&first[0].payload).expect("json");
    assert_eq!(started["input"]["people"].as_array().map(Vec::len), Some(1_000));
    let result = h.finished(&id).await.result.expect("an output");
    assert_eq!(result, json!({"trainingId": "safety-1", "assigned": 1_000, "notified": 1_000}));
    let emitted = h.emitted(&id).await;
    assert_eq!(emitted.iter().filter(|t| *t == "com.baton.training.assigned").count(), 1_000);
    let told = h.calls_of("baton.notify");
    assert_eq!((told.len(), told[0]["to"][999].clone()), (1, json!({"user": "employee-999"})), "one call for all");
    // Everyone's progress shows the assignment, with its due date.
    let progress = h.read_model("training-progress").await;
    assert_eq!(progress.len(), 1_000);
    assert!(
        progress
            .iter()
            .all(|row| row["program"] == "safety-1" && row["status"] == "assigned" && row["dueDate"] == "2026-12-31"),
        "{:?}",
        progress.first()
    );
    h.replay_all().await;
}
