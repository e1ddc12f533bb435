//! A remote worker in Rust: runs the `training.reserve` activity for a Baton server over gRPC,
//! with the `baton-worker` crate.
//!
//! Start a server (`cargo run --release -- dev`), copy the `worker` token it prints (a service account with the `worker` permission), then:
//!
//! ```sh
//! BATON_TOKEN=<worker token> cargo run -p baton-examples --example worker
//! ```
//!
//! Any definition that calls `training.reserve` (`call: training.reserve`) now gets its seat
//! from this process. Stop it with Ctrl-C: leased tasks that were not reported go back to the
//! queue when their heartbeat times out.

#![allow(clippy::print_stdout)] // an example talks to its reader

use baton_worker::{TaskError, Worker};
use serde_json::json;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let address = std::env::var("BATON_GRPC_ADDRESS").unwrap_or_else(|_| "http://127.0.0.1:9090".into());
    let token = std::env::var("BATON_TOKEN").map_err(|_| anyhow::anyhow!("set BATON_TOKEN to a worker token"))?;
    let worker = Worker::connect(&address, &token)
        .await?
        .activity("training.reserve", |task| async move {
            let session = task.input["session"]
                .as_str()
                .ok_or_else(|| TaskError::NonRetryable("the input names no `session`".into()))?
                .to_owned();
            // A real worker books the seat in its own system, keyed by the idempotency key so
            // that a second delivery of the same attempt books nothing twice.
            println!("reserving a seat in {session} ({})", task.idempotency_key);
            Ok(json!({ "session": session, "seat": 12, "reservation": task.idempotency_key }))
        })
        .concurrency(4);
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.cancel();
    });
    println!("working for {address}; Ctrl-C stops");
    worker.run(shutdown).await?;
    Ok(())
}
