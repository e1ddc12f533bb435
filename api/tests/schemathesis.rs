//! The OpenAPI document against the server that serves it: schemathesis (Python) reads
//! `/api/v1/openapi.json`, generates requests for every operation, valid and invalid, sends
//! them with an admin token, and checks the answers: no server error, every documented answer
//! body matching its schema, no operation that needs a token answering without one, and a
//! created instance readable at once.
//!
//! When the `schemathesis` module is missing the test is skipped with a note, unless
//! `BATON_REQUIRE_SERVICES=1`, which makes it fail.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;

use serde_json::{Value, json};
use support::{APPROVAL, SIGNAL, Server};

/// Test cases per operation and phase: enough to find what a handler does with odd input,
/// few enough that the run stays well under a minute.
const MAX_EXAMPLES: &str = "25";

/// The checks that fail the test. Left out: `status_code_conformance` and
/// `content_type_conformance` (the document declares few of the 400s and 401s the API answers,
/// and problems as `application/json` rather than `application/problem+json`) and
/// `positive_data_acceptance` / `negative_data_rejection` (the document is looser and stricter
/// than the handlers in places, e.g. empty cursors and limits above the maximum, which are
/// clamped).
const CHECKS: &str = "not_a_server_error,response_schema_conformance,ignored_auth,ensure_resource_availability";

/// The run's configuration: half of the generated path parameters are the identifiers of what
/// exists (so handlers get past their 404s), half are whatever schemathesis makes up; the live
/// stream never ends by itself, so each request to it is read for a second and cut.
fn config(instances: &[&str], task: (&str, u64)) -> String {
    let list = |values: &[&str]| values.iter().map(|v| format!("{v:?}")).collect::<Vec<_>>().join(", ");
    let mut ids = instances.to_vec();
    ids.extend(["tom", "tina"]);
    format!(
        r#"
[dictionaries]
ids = {{ values = [{ids}] }}
instances = {{ values = [{instance:?}] }}
seqs = {{ values = [{seq}] }}
namespaces = {{ values = ["training", "ops"] }}
names = {{ values = ["approval", "signal"] }}

[parameters]
"path.id" = {{ dictionary = "ids", probability = 0.5 }}
"path.instance" = {{ dictionary = "instances", probability = 0.5 }}
"path.seq" = {{ dictionary = "seqs", probability = 0.5 }}
"path.namespace" = {{ dictionary = "namespaces", probability = 0.5 }}
"path.name" = {{ dictionary = "names", probability = 0.5 }}

[[operations]]
include-operation-id = "streamChanges"
request-timeout = 1
generation.max-examples = 3
"#,
        ids = list(&ids),
        instance = task.0,
        seq = task.1,
    )
}

/// Whether the Python side can run (skipped, or failed under BATON_REQUIRE_SERVICES=1).
async fn schemathesis_available() -> bool {
    support::python_available(
        &["-c", "import schemathesis.cli"],
        "the OpenAPI fuzz test needs python3 with schemathesis (python3 -m pip install schemathesis)",
    )
    .await
}

/// What the run checked, per operation (the stateful phase is one "operation"), from its
/// NDJSON event stream.
#[derive(Debug, Default)]
struct Tally {
    /// Operation → check → (passed, failed).
    checks: BTreeMap<String, BTreeMap<String, (u64, u64)>>,
    /// Operation → status code → answers.
    statuses: BTreeMap<String, BTreeMap<u64, u64>>,
}

impl Tally {
    fn read(ndjson: &str) -> Self {
        let mut tally = Self::default();
        for line in ndjson.lines() {
            let Ok(event) = serde_json::from_str::<Value>(line) else { continue };
            let Some(recorder) = event.get("ScenarioFinished").map(|finished| &finished["recorder"]) else { continue };
            let label = recorder["label"].as_str().unwrap_or("?").to_owned();
            let statuses = tally.statuses.entry(label.clone()).or_default();
            for interaction in recorder["interactions"].as_object().into_iter().flat_map(|i| i.values()) {
                if let Some(status) = interaction["response"]["status_code"].as_u64() {
                    *statuses.entry(status).or_default() += 1;
                }
            }
            let per_check = tally.checks.entry(label).or_default();
            for check in recorder["checks"].as_object().into_iter().flat_map(|c| c.values()).flat_map(|c| c.as_array())
            {
                for result in check {
                    let counts = per_check.entry(result["name"].as_str().unwrap_or("?").to_owned()).or_default();
                    if result["status"] == "success" {
                        counts.0 += 1;
                    } else {
                        counts.1 += 1;
                    }
                }
            }
        }
        tally
    }

    fn print(&self) {
        eprintln!("checks per operation (passed/failed), and the answers (status×count):");
        for (operation, checks) in &self.checks {
            let cells: Vec<String> =
                checks.iter().map(|(check, (passed, failed))| format!("{check} {passed}/{failed}")).collect();
            let answers: Vec<String> =
                self.statuses.get(operation).into_iter().flatten().map(|(s, n)| format!("{s}×{n}")).collect();
            eprintln!("  {operation}: {}; answers {}", cells.join(", "), answers.join(" "));
        }
        let names: BTreeSet<&String> = self.checks.values().flat_map(BTreeMap::keys).collect();
        for name in names {
            let (passed, failed) = self
                .checks
                .values()
                .filter_map(|checks| checks.get(name))
                .fold((0, 0), |(p, f), (passed, failed)| (p + passed, f + failed));
            eprintln!("  total {name}: {passed} passed, {failed} failed");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_answers_without_a_server_error_and_as_its_openapi_document_says() {
    if !schemathesis_available().await {
        return;
    }
    let s = Server::start(true).await;
    for source in [APPROVAL, SIGNAL] {
        let (status, deployed) = s.deploy(source, "dora").await;
        assert!(status.is_success(), "{deployed}");
    }
    // Lists with content: an instance waiting on a human task, one waiting on an event.
    let approval = json!({"definition": "training/approval", "input": {"title": "Forklift", "department": "assembly"}});
    let (status, started) = s.call("POST", "/api/v1/instances", Some("root"), Some(approval)).await;
    assert!(status.is_success(), "{started}");
    let approval = started["id"].as_str().unwrap().to_owned();
    let task = s.wait_for_task(&approval, "tom").await;
    let signal = json!({"definition": "ops/signal"});
    let (status, started) = s.call("POST", "/api/v1/instances", Some("root"), Some(signal)).await;
    assert!(status.is_success(), "{started}");
    let signal = started["id"].as_str().unwrap().to_owned();

    // Everything the run writes (its report, hypothesis' files) stays in a temporary directory.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("schemathesis.toml");
    std::fs::write(&config, self::config(&[&approval, &signal], (&approval, task["seq"].as_u64().unwrap()))).unwrap();
    let report = dir.path().join("events.ndjson");
    let token = s.token("root", &["admin"]);
    let started = std::time::Instant::now();
    let run = tokio::process::Command::new("python3")
        .args(["-m", "schemathesis.cli", "--config-file"])
        .arg(&config)
        .args(["run", &format!("{}/api/v1/openapi.json", s.base)])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--checks", CHECKS, "--continue-on-failure"])
        .args(["--max-examples", MAX_EXAMPLES, "--seed", "1", "--workers", "2"])
        .args(["--report", "ndjson", "--report-ndjson-path"])
        .arg(&report)
        .args(["--generation-database", "none", "--no-color", "--output-truncate", "false"])
        .current_dir(dir.path())
        .env("HYPOTHESIS_STORAGE_DIRECTORY", dir.path().join("hypothesis"))
        .stdin(Stdio::null())
        .output()
        .await
        .expect("python3 starts");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    eprintln!("{stdout}{stderr}");

    let tally = Tally::read(&std::fs::read_to_string(&report).unwrap_or_default());
    tally.print();
    eprintln!("schemathesis ran for {:.1} s", started.elapsed().as_secs_f64());
    assert!(!tally.checks.is_empty(), "schemathesis checked nothing ({}): {stderr}", run.status);
    assert!(run.status.success(), "schemathesis found failures ({}): see its report above", run.status);
}
