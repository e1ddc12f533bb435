//! Remote workers over the HTTP protocol: leases, heartbeats, completion, cancellation, and the
//! example Python worker as a separate process.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Digest;
use support::Server;

const REMOTE: &str = r#"document:
  dsl: '1.0.3'
  namespace: training
  name: remote
  version: '1.0.0'
do:
  - read:
      call: ocr
      with: { page: '${ .page }' }
"#;

const GREETING: &str = r#"document:
  dsl: '1.0.3'
  namespace: training
  name: greeting
  version: '1.0.0'
do:
  - greet:
      call: greet
      with: { name: '${ .name }' }
      export: { as: '${ {greeting: .greeting} }' }
  - sum:
      call: checksum
      with: { text: '${ $context.greeting }' }
      output: { as: '${ {greeting: $context.greeting, sha256: .sha256} }' }
"#;

async fn start(server: &Server, definition: &str, input: Value) -> String {
    let (status, body) = server
        .call("POST", "/api/v1/instances", Some("otto"), Some(json!({"definition": definition, "input": input})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

async fn poll(server: &Server, as_: &str, activities: &[&str]) -> (StatusCode, Value) {
    server
        .call("POST", "/api/v1/workers/poll", Some(as_), Some(json!({"activities": activities, "waitMs": 5000})))
        .await
}

async fn wait_for_status(server: &Server, id: &str, wanted: &str) -> Value {
    for _ in 0..500 {
        let (_, body) = server.call("GET", &format!("/api/v1/instances/{id}"), Some("root"), None).await;
        if body["instance"]["status"] == wanted {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{id} never became {wanted}");
}

#[tokio::test]
async fn a_worker_leases_an_activity_heartbeats_and_its_result_completes_the_instance() {
    let server = Server::start(false).await;
    assert_eq!(server.deploy(REMOTE, "dora").await.0, StatusCode::CREATED);
    let id = start(&server, "training/remote", json!({"page": 7})).await;

    let (status, problem) = poll(&server, "olga", &["ocr"]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a person without the worker permission: {problem}");
    let (status, lease) = poll(&server, "wendy", &["ocr"]).await;
    assert_eq!(status, StatusCode::OK, "{lease}");
    assert_eq!(lease["activity"], "ocr");
    assert_eq!(lease["instance"], id.as_str());
    assert_eq!(lease["attempt"], 1);
    assert_eq!(lease["input"], json!({"page": 7}));
    assert_eq!(lease["idempotencyKey"], format!("{id}:{}", lease["seq"]));
    let token = lease["token"].as_str().unwrap();

    let (_, queues) = server.call("GET", "/api/v1/workers/queues", Some("root"), None).await;
    assert_eq!(queues, json!([{"activity": "ocr", "waiting": 0, "held": 1}]));
    let heartbeat = format!("/api/v1/workers/leases/{token}/heartbeat");
    let other_worker = server.token("walt", &["worker"]);
    let response =
        server.client.post(format!("{}{heartbeat}", server.base)).bearer_auth(other_worker).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN, "a lease belongs to the worker that polled it");
    assert_eq!(server.call("POST", &heartbeat, Some("wendy"), None).await.0, StatusCode::NO_CONTENT);

    let complete = format!("/api/v1/workers/leases/{token}/complete");
    let (status, body) =
        server.call("POST", &complete, Some("wendy"), Some(json!({"result": {"text": "page seven"}}))).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let detail = wait_for_status(&server, &id, "completed").await;
    assert_eq!(detail["instance"]["result"], json!({"text": "page seven"}), "{detail}");

    let (status, problem) = server.call("POST", &complete, Some("wendy"), Some(json!({"result": 1}))).await;
    assert_eq!(status, StatusCode::GONE, "a lease ends once: {problem}");
    assert_eq!(problem["type"], "urn:baton:problem:lease-gone");
    let (status, _) = server
        .call(
            "POST",
            "/api/v1/workers/poll",
            Some("wendy"),
            Some(json!({"activities": ["nothing-here"], "waitMs": 50})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "no task arrived in time");
}

#[tokio::test]
async fn a_failed_attempt_is_retried_under_the_policy_and_a_terminated_instance_ends_the_lease() {
    let server = Server::start(false).await;
    assert_eq!(server.deploy(REMOTE, "dora").await.0, StatusCode::CREATED);
    let id = start(&server, "training/remote", json!({"page": 1})).await;

    let (_, first) = poll(&server, "wendy", &["ocr"]).await;
    let fail = format!("/api/v1/workers/leases/{}/fail", first["token"].as_str().unwrap());
    let (status, body) =
        server.call("POST", &fail, Some("wendy"), Some(json!({"message": "scanner busy", "retryAfterMs": 10}))).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, second) = poll(&server, "wendy", &["ocr"]).await;
    assert_eq!(status, StatusCode::OK, "the retry comes back to a worker");
    assert_eq!((second["attempt"].as_u64(), &second["seq"]), (Some(2), &first["seq"]), "same task, next attempt");
    assert_ne!(second["token"], first["token"]);

    let (status, body) = server
        .call("POST", &format!("/api/v1/instances/{id}/terminate"), Some("otto"), Some(json!({"reason": "not needed"})))
        .await;
    assert!(status.is_success(), "{status} {body}");
    wait_for_status(&server, &id, "cancelled").await;
    let heartbeat = format!("/api/v1/workers/leases/{}/heartbeat", second["token"].as_str().unwrap());
    let (status, problem) = server.call("POST", &heartbeat, Some("wendy"), None).await;
    assert_eq!(status, StatusCode::GONE, "the worker learns to stop: {problem}");
}

#[tokio::test]
async fn the_example_python_worker_runs_activities_over_http() {
    if !support::python_available(&["--version"], "python3 runs the example worker").await {
        return;
    }
    let server = Server::start(false).await;
    assert_eq!(server.deploy(GREETING, "dora").await.0, StatusCode::CREATED);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/workers/worker.py");
    let mut worker = tokio::process::Command::new("python3")
        .arg(script)
        .env("BATON_ADDRESS", &server.base)
        .env("BATON_TOKEN", server.token("py-worker", &["worker"]))
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs");
    let id = start(&server, "training/greeting", json!({"name": "Ann"})).await;
    let detail = wait_for_status(&server, &id, "completed").await;
    let output = &detail["instance"]["result"];
    assert_eq!(output["greeting"], "Hello, Ann!", "{detail}");
    let expected = format!("{:x}", sha2::Sha256::digest(b"Hello, Ann!"));
    assert_eq!(output["sha256"], expected.as_str());
    worker.kill().await.unwrap();
}

/// A failed activity's incident: retried with an edited input, then completed by hand. (A
/// workflow of the DSL fails on an uncaught error; an orchestration that leaves failures
/// unhandled gets incidents, as this one.)
#[tokio::test]
async fn an_incident_is_repaired_by_an_edited_retry_or_a_completion_by_hand() {
    use baton_engine::program::{Op, Program};
    let server = Server::start(false).await;
    let once = baton_engine::ActivityOptions { retry: baton_engine::RetryPolicy::none(), ..Default::default() };
    let program = Program::new("training/repair", vec![Op::Activity { name: "ocr".into(), options: once }]);
    server.engine.register(program).unwrap();
    let id = start(&server, "training/repair", json!({"page": 1})).await;
    let fail_next = |lease: &Value| {
        let fail = format!("/api/v1/workers/leases/{}/fail", lease["token"].as_str().unwrap());
        (fail, json!({"message": "page 1 is blank", "retryable": false}))
    };
    let incident = async || {
        for _ in 0..500 {
            let (_, open) = server.call("GET", &format!("/api/v1/incidents?instance={id}"), Some("otto"), None).await;
            if let Some(incident) = open.as_array().and_then(|list| list.first()) {
                return incident["id"].as_i64().unwrap();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (_, detail) = server.call("GET", &format!("/api/v1/instances/{id}"), Some("otto"), None).await;
        panic!("no incident: {detail}");
    };

    let (_, lease) = poll(&server, "wendy", &["ocr"]).await;
    let (path, body) = fail_next(&lease);
    assert_eq!(server.call("POST", &path, Some("wendy"), Some(body)).await.0, StatusCode::NO_CONTENT);
    let first = incident().await;
    let retry = json!({"reason": "the right page is 2", "input": {"page": 2}});
    let (status, body) =
        server.call("POST", &format!("/api/v1/incidents/{first}/retry"), Some("otto"), Some(retry)).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (_, lease) = poll(&server, "wendy", &["ocr"]).await;
    assert_eq!(lease["input"], json!({"page": 2}), "the next attempt runs with the edited input");

    let (path, body) = fail_next(&lease);
    server.call("POST", &path, Some("wendy"), Some(body)).await;
    let second = incident().await;
    assert_ne!(second, first);
    let complete = format!("/api/v1/incidents/{second}/complete");
    let (status, problem) = server.call("POST", &complete, Some("otto"), Some(json!({"reason": " "}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a completion by hand needs a reason: {problem}");
    let (status, _) = server.call("POST", &complete, Some("oscar"), Some(json!({"reason": "x", "result": 1}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "oscar operates another namespace");
    let by_hand = json!({"reason": "typed in from the paper copy", "result": {"text": "by hand"}});
    let (status, body) = server.call("POST", &complete, Some("otto"), Some(by_hand)).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let detail = wait_for_status(&server, &id, "completed").await;
    assert_eq!(detail["instance"]["result"]["results"], json!([{"text": "by hand"}]));
    let (_, history) = server.call("GET", &format!("/api/v1/instances/{id}/history"), Some("otto"), None).await;
    let events = history["items"].as_array().unwrap();
    let retried = events.iter().find(|e| e["type"] == "IncidentResolved").unwrap();
    assert_eq!((retried["actor"]["id"].as_str(), &retried["data"]["input"]), (Some("otto"), &json!({"page": 2})));
    let completed = events.iter().rfind(|e| e["type"] == "ActivityCompleted").unwrap();
    assert_eq!(completed["actor"]["id"], "otto", "the completion by hand carries its author: {completed}");
}
