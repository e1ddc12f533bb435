//! Embedding Baton in a Rust program: a custom activity, a SQLite store, a start, an event
//! raised from outside, and the wait for the result.
//!
//! Run it with `cargo run --release -p baton-examples --example embed`; run it again and it
//! finds the instance it started the first time (the idempotency key), already completed.

#![allow(clippy::print_stdout)] // an example talks to its reader

use std::sync::Arc;

use baton_engine::program::{Op, Program};
use baton_engine::store::sqlite::{SqliteOptions, SqliteStore};
use baton_engine::{ActivityError, ActivityOptions, Actor, Engine, RaiseEvent, StartOptions};
use serde_json::json;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("warn").with_writer(std::io::stderr).init();
    let path = std::env::temp_dir().join("baton-embed-example.db");
    let store = SqliteStore::open(&path.to_string_lossy(), SqliteOptions::default()).await?;

    // The process: reserve a seat, wait for the manager's approval, then confirm.
    let process = Program::new(
        "seat-booking",
        vec![
            Op::Activity { name: "training.reserve".into(), options: ActivityOptions::default() },
            Op::WaitEvent { name: "approved".into() },
            Op::Activity { name: "training.confirm".into(), options: ActivityOptions::default() },
        ],
    );

    let engine = Engine::builder()
        .store(Arc::new(store))
        .orchestration(process)
        .activity("training.reserve", |ctx, input| async move {
            // The idempotency key is the same on every attempt of this call: use it to make
            // the side effect happen once.
            Ok(json!({ "reservation": ctx.idempotency_key(), "for": input["input"]["employee"] }))
        })
        .activity("training.confirm", |_, input| async move {
            if input["input"]["employee"].is_null() {
                return Err(ActivityError::non_retryable("no employee given"));
            }
            Ok(json!({ "confirmed": true }))
        })
        .build()
        .await?;

    let started = engine
        .start(
            "seat-booking",
            json!({ "employee": "op-1042", "session": "forklift-2026-12" }),
            StartOptions { idempotency_key: Some("booking-op-1042-forklift".into()), ..StartOptions::default() },
        )
        .await?;
    println!("instance {} ({})", started.id, if started.created { "started" } else { "already there" });

    let approval = RaiseEvent {
        name: "approved".into(),
        payload: json!({ "by": "manager-7" }),
        event_id: Some("approval-op-1042".into()),
        actor: Actor::User { id: "manager-7".into() },
    };
    match engine.raise_event(&started.id, approval).await {
        Ok(raised) => println!("approval {raised:?}"),
        Err(err) => println!("approval not needed: {err}"),
    }

    let outcome = engine.wait(&started.id).await?;
    println!("{:?}: {}", outcome.status, serde_json::to_string_pretty(&outcome.result)?);
    for event in engine.history(&started.id, 0, 100).await? {
        let view = event.to_view();
        println!("  {:>3} {:<18} {}", view["seq"], view["type"].as_str().unwrap_or("?"), view["actor"]);
    }
    println!("store: {}", path.display());
    engine.shutdown().await;
    Ok(())
}
