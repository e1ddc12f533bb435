//! Calling Baton's HTTP API from a program: deploy a definition, start an instance with a
//! business key, send it a CloudEvent, and read how it ended.
//!
//! Start a server (`cargo run --release -- dev`), copy the `admin` token it prints, then:
//!
//! ```sh
//! BATON_TOKEN=<root token> cargo run -p baton-examples --example api_client
//! ```
//!
//! Errors come back as RFC 7807 problems (`application/problem+json`) whose `type` is stable;
//! this example prints them as they are.

#![allow(clippy::print_stdout)] // an example talks to its reader

use anyhow::{Context, bail};
use serde_json::{Value, json};

const DEFINITION: &str = "document:
  dsl: '1.0.3'
  namespace: examples
  name: enrolment
  version: '1.0.0'
do:
  - waitForConfirmation:
      listen:
        to:
          one:
            with: { type: com.example.enrolment.confirmed }
  - done:
      set:
        confirmedBy: ${ .[0].by }
";

struct Api {
    client: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    /// Sends a request and returns its JSON answer, or the problem as an error.
    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let answer = request.bearer_auth(&self.token).send().await.context("the server does not answer")?;
        let status = answer.status();
        let body: Value = answer.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("{status}: {body}");
        }
        Ok(body)
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let api = Api {
        client: reqwest::Client::new(),
        base: std::env::var("BATON_ADDRESS").unwrap_or_else(|_| "http://127.0.0.1:8080".into()),
        token: std::env::var("BATON_TOKEN").context("set BATON_TOKEN to a token `baton dev` printed")?,
    };

    // Deploying the same version again with the same text is accepted and changes nothing.
    let deployed = api
        .send(api.client.post(api.url("/definitions")).header("content-type", "application/yaml").body(DEFINITION))
        .await?;
    println!("deployed {}@{}", deployed["name"], deployed["version"]);

    let start = json!({
        "definition": "examples/enrolment",
        "businessKey": "enrolment-42",
        "idempotencyKey": "enrolment-42",
    });
    let started = api.send(api.client.post(api.url("/instances")).json(&start)).await?;
    let id = started["id"].as_str().context("an instance id")?.to_owned();
    println!("instance {id} (created: {})", started["created"]);

    // Run again, the idempotency key finds the first instance, which needs no second event.
    if started["created"] == true {
        confirm(&api, &id).await?;
    }
    for _ in 0..50 {
        let detail = api.send(api.client.get(api.url(&format!("/instances/{id}")))).await?;
        let instance = &detail["instance"];
        if instance["status"] == "completed" {
            println!("completed with {}", instance["result"]);
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    bail!("{id} did not complete in 5 seconds")
}

/// Sends the confirmation the instance waits for.
async fn confirm(api: &Api, id: &str) -> anyhow::Result<()> {
    // A CloudEvent in structured mode; its id makes a second delivery a no-op.
    let event = json!({
        "specversion": "1.0",
        "id": "confirmation-42",
        "source": "/examples/api-client",
        "type": "com.example.enrolment.confirmed",
        "data": { "by": "hr" },
    });
    let raised = api
        .send(
            api.client
                .post(api.url(&format!("/instances/{id}/events")))
                .header("content-type", "application/cloudevents+json")
                .body(event.to_string()),
        )
        .await?;
    println!("event accepted: {}, duplicates: {}", raised["accepted"], raised["duplicates"]);
    Ok(())
}
