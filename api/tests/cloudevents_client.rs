//! The CloudEvents HTTP binding against a real client: the CloudEvents Python SDK encodes the
//! events (structured and binary mode) and they are sent to `POST /instances/{id}/events` with a
//! worker's token. An instance listening for one event type completes only when an event of that
//! type arrives, and its history keeps what was sent.
//!
//! When the `cloudevents` module is missing the test is skipped with a note, unless
//! `BATON_REQUIRE_SERVICES=1`, which makes it fail.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::Stdio;
use std::time::Duration;

use baton_engine::{InstanceId, InstanceStatus};
use serde_json::{Value, json};
use support::{SIGNAL, Server};

const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/send_cloudevent.py");

/// Whether the Python side can run (skipped, or failed under BATON_REQUIRE_SERVICES=1).
async fn sdk_available() -> bool {
    support::python_available(
        &[CLIENT, "--check"],
        "the CloudEvents client test needs python3 with cloudevents (python3 -m pip install cloudevents)",
    )
    .await
}

/// Sends one event with the SDK; the answer's status and body.
async fn send(s: &Server, instance: &str, mode: &str, attributes: &Value, data: &Value) -> (u16, Value) {
    let url = format!("{}/api/v1/instances/{instance}/events", s.base);
    let output = tokio::process::Command::new("python3")
        .args([
            CLIENT,
            &url,
            &s.worker_token("wendy", &["com.example.*"]),
            mode,
            &attributes.to_string(),
            &data.to_string(),
        ])
        .stdin(Stdio::null())
        .output()
        .await
        .expect("python3 starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "the client failed: {stdout}{}", String::from_utf8_lossy(&output.stderr));
    let answer: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    eprintln!("{mode} {}: {} {}", attributes["type"], answer["status"], answer["body"]);
    (u16::try_from(answer["status"].as_u64().unwrap()).unwrap(), answer["body"].clone())
}

async fn history(s: &Server, instance: &str) -> Vec<Value> {
    let (status, page) =
        s.call("GET", &format!("/api/v1/instances/{instance}/history?limit=1000"), Some("root"), None).await;
    assert!(status.is_success(), "{page}");
    page["items"].as_array().unwrap().clone()
}

/// The payloads of the events the instance received, in order.
async fn received(s: &Server, instance: &str) -> Vec<Value> {
    let events = history(s, instance).await;
    events.iter().filter(|e| e["type"] == "EventReceived").map(|e| e["data"]["payload"].clone()).collect()
}

#[tokio::test]
async fn the_sdk_reaches_a_listening_instance_in_structured_and_binary_mode() {
    if !sdk_available().await {
        return;
    }
    let s = Server::start(false).await;
    let (status, deployed) = s.deploy(SIGNAL, "dora").await;
    assert!(status.is_success(), "{deployed}");

    for mode in ["structured", "binary"] {
        let (status, started) =
            s.call("POST", "/api/v1/instances", Some("root"), Some(json!({"definition": "ops/signal"}))).await;
        assert!(status.is_success(), "{started}");
        let id = started["id"].as_str().unwrap().to_owned();

        // Another type first: the instance takes it in but keeps waiting.
        let other = json!({
            "type": "com.example.rejected",
            "source": "/tests/sdk",
            "id": format!("{mode}-other"),
            "datacontenttype": "application/json",
        });
        let (status, answer) = send(&s, &id, mode, &other, &json!({"mode": mode, "n": 0})).await;
        assert_eq!(status, 202, "{answer}");
        assert_eq!(answer, json!({"accepted": 1, "duplicates": 0}));
        let mut seen = Vec::new();
        for _ in 0..200 {
            seen = received(&s, &id).await;
            if !seen.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(seen.len(), 1, "the other event is in history: {seen:?}");
        let (_, detail) = s.call("GET", &format!("/api/v1/instances/{id}"), Some("root"), None).await;
        assert_eq!(detail["instance"]["status"], "waiting", "an event of another type does not end the wait: {detail}");

        // The type the instance listens for, with a subject a header has to percent-encode.
        let approved = json!({
            "type": "com.example.approved",
            "source": "/tests/sdk",
            "id": format!("{mode}-approved"),
            "subject": "Straße 5 — 100% done",
            "datacontenttype": "application/json",
            "approver": "tom",
        });
        let data = json!({"mode": mode, "ok": true, "items": [1, 2, 3], "note": "héllo"});
        let (status, answer) = send(&s, &id, mode, &approved, &data).await;
        assert_eq!(status, 202, "{answer}");
        let outcome = tokio::time::timeout(Duration::from_secs(20), s.engine.wait(&InstanceId::new(id.clone())))
            .await
            .expect("the instance ends within 20 s")
            .unwrap();
        assert_eq!(outcome.status, InstanceStatus::Completed, "{:?}", outcome.result);

        let seen = received(&s, &id).await;
        let event = seen
            .iter()
            .find(|e| e["type"] == "com.example.approved")
            .unwrap_or_else(|| panic!("no approved event in history: {seen:?}"));
        assert_eq!(event["data"], data, "{mode} mode carries the data: {event}");
        for attribute in ["id", "source", "subject", "datacontenttype", "approver"] {
            assert_eq!(event[attribute], approved[attribute], "{mode} mode carries `{attribute}`: {event}");
        }
        assert_eq!(event["specversion"], "1.0");

        // The same event again is a duplicate of a delivered one; the instance has ended.
        let (status, answer) = send(&s, &id, mode, &approved, &data).await;
        assert_eq!(status, 409, "{answer}");
    }
}
