//! The web UI in a real browser, as a team leader (also signing in through an OpenID provider),
//! a manager, an ops engineer and a designer:
//! Playwright (playwright-core from npm, `api/tests/e2e/`)
//! driving Debian's headless Chromium against a real server. Each scenario is a script in
//! `api/tests/e2e/`; this test prepares the server and its data, runs the script and fails with
//! its output. Screenshots go to BATON_E2E_ARTIFACTS (by default `baton-e2e` in the temporary
//! folder).
//!
//! Without Node, the npm packages (`npm ci --prefix api/tests/e2e`) or Chromium, the test is
//! skipped with a note, unless `BATON_REQUIRE_SERVICES=1`.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};

use reqwest::StatusCode;
use serde_json::json;
use support::{APPROVAL, BROKEN, OidcProvider, Server, supervised_approval};

fn e2e_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e")
}

fn chromium() -> Option<PathBuf> {
    std::env::var_os("BATON_CHROMIUM").map(PathBuf::from).or_else(|| {
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path).map(|dir| dir.join("chromium")).find(|candidate| candidate.is_file())
    })
}

/// What the scripts need, or why the test is skipped.
fn prerequisites() -> Option<PathBuf> {
    let missing = if !e2e_dir().join("node_modules/playwright-core").is_dir() {
        Some("the npm packages (npm ci --prefix api/tests/e2e)")
    } else if std::process::Command::new("node").arg("--version").output().is_err() {
        Some("Node")
    } else if chromium().is_none() {
        Some("Chromium (apt-get install chromium)")
    } else {
        None
    };
    match missing {
        None => chromium(),
        Some(what) => {
            assert!(
                !std::env::var("BATON_REQUIRE_SERVICES").is_ok_and(|v| v == "1"),
                "{what} is required for the browser tests (BATON_REQUIRE_SERVICES=1)"
            );
            eprintln!("skipped: no {what}; set BATON_REQUIRE_SERVICES=1 to fail instead");
            None
        }
    }
}

async fn run_script(script: &str, base: &str, chromium: &Path, env: &[(&str, String)]) {
    let artifacts = std::env::var_os("BATON_E2E_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("baton-e2e"));
    let output = tokio::process::Command::new("node")
        .arg(e2e_dir().join(script))
        .env("BATON_BASE", base)
        .env("BATON_CHROMIUM", chromium)
        .env("BATON_E2E_ARTIFACTS", &artifacts)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{script} failed ({}):\n{stdout}\n{stderr}", output.status);
    eprintln!("{stdout}");
}

#[tokio::test]
async fn a_team_leader_signs_in_sees_their_department_and_completes_a_task_in_a_browser() {
    let Some(chromium) = prerequisites() else { return };
    let s = Server::start_dev(false, &[("root", "admin")]).await;
    s.deploy(APPROVAL, "dora").await;
    s.start_approval("Forklift", "assembly").await;
    s.start_approval("Spray booth", "paint").await;
    run_script("team_leader.mjs", &s.base, &chromium, &[]).await;

    let (_, tasks) = s.call("GET", "/api/v1/tasks?status=completed", Some("root"), None).await;
    let completed = &tasks["items"][0]["task"]["completion"];
    assert_eq!(
        (completed["completedBy"].as_str(), completed["data"]["comment"].as_str()),
        (Some("tom"), Some("Looks right"))
    );
}

/// Waits until the API answers `path` with at least one item.
async fn until_listed(s: &Server, path: &str) {
    for _ in 0..250 {
        let (_, page) = s.call("GET", path, Some("root"), None).await;
        if page["items"].as_array().is_some_and(|items| !items.is_empty()) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("nothing listed at {path}");
}

#[tokio::test]
async fn a_manager_reassigns_a_breached_task_ops_retry_an_incident_a_designer_sees_an_error_at_its_line() {
    let Some(chromium) = prerequisites() else { return };
    let s = Server::start_dev(true, &[("root", "admin")]).await;
    s.deploy(&supervised_approval(), "dora").await;
    s.deploy(BROKEN, "dora").await;
    s.start_approval("Forklift", "assembly").await;
    s.start_approval("Spray booth", "paint").await;
    let broken = json!({ "definition": "training/broken", "input": { "pages": 3 } });
    let (status, started) = s.call("POST", "/api/v1/instances", Some("otto"), Some(broken)).await;
    assert_eq!(status, StatusCode::CREATED, "{started}");
    let (status, moved) =
        s.call("POST", "/api/v1/admin/clock/advance", Some("root"), Some(json!({"by": "PT9H"}))).await;
    assert_eq!(status, StatusCode::OK, "{moved}");
    until_listed(&s, "/api/v1/slas?state=breached&department=assembly").await;
    until_listed(&s, "/api/v1/instances?status=faulted").await;

    let env = [("BATON_OPS_TOKEN", s.token_for("otto")), ("BATON_DESIGNER_TOKEN", s.token_for("dora"))];
    run_script("roles.mjs", &s.base, &chromium, &env).await;

    let (_, tasks) = s.call("GET", "/api/v1/tasks?assignee=pat", Some("root"), None).await;
    assert_eq!(tasks["items"][0]["task"]["assignee"], "pat", "the manager's reassignment: {tasks}");
}

#[tokio::test]
async fn a_team_leader_signs_in_through_the_organisation_s_openid_provider_in_a_browser() {
    let Some(chromium) = prerequisites() else { return };
    let Some(provider) = OidcProvider::start().await else { return };
    let s = Server::start_oidc(&provider.issuer).await;
    s.deploy(APPROVAL, "dora").await;
    s.start_approval("Forklift", "assembly").await;
    run_script("oidc.mjs", &s.base, &chromium, &[]).await;
}

#[tokio::test]
async fn an_ops_engineer_suspends_every_instance_of_a_search_in_a_browser() {
    let Some(chromium) = prerequisites() else { return };
    let s = Server::start_dev(false, &[("root", "admin")]).await;
    s.deploy(APPROVAL, "dora").await;
    let ids = [s.start_approval("Forklift", "assembly").await, s.start_approval("Spray booth", "paint").await];
    run_script("ops_bulk.mjs", &s.base, &chromium, &[("BATON_OPS_TOKEN", s.token_for("otto"))]).await;

    for id in ids {
        let (_, detail) = s.call("GET", &format!("/api/v1/instances/{id}"), Some("root"), None).await;
        assert_eq!(detail["instance"]["status"], "suspended", "{detail}");
    }
}
