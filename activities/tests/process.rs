//! The `baton.process` activity on real processes: `sh` always; `python3` and `node` when they
//! are installed.

use std::time::{Duration, Instant};

use baton_activities::{ErrorType, ProcessPolicy, run_process};
use baton_engine::{ActivityError, Failure};
use serde_json::{Value, json};

fn enabled() -> ProcessPolicy {
    ProcessPolicy { shell: true, script: true, ..ProcessPolicy::default() }
}

async fn shell(policy: &ProcessPolicy, shell: Value, returns: &str) -> Result<Value, ActivityError> {
    run_process(policy, &json!({ "shell": shell, "return": returns })).await
}

fn failure(result: Result<Value, ActivityError>) -> Failure {
    match result {
        Err(ActivityError::Failed(failure)) => failure,
        other => panic!("expected a failed process, got {other:?}"),
    }
}

fn assert_problem(failure: &Failure, kind: ErrorType, status: u16) -> String {
    assert_eq!(failure.kind, kind.uri(), "{failure:?}");
    let details = failure.details.as_ref().expect("a failure has details");
    assert_eq!(details["type"], kind.uri());
    assert_eq!(details["status"], status, "{failure:?}");
    details["detail"].as_str().expect("a detail").to_owned()
}

/// A variable of this test process other than `PATH`, to check that it does not leak.
fn engine_variable() -> (String, String) {
    std::env::vars()
        .find(|(name, value)| {
            name != "PATH" && !value.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
        .expect("the test process has an environment variable besides PATH")
}

#[tokio::test]
async fn shell_echoes_its_arguments_in_order() {
    let out = shell(&enabled(), json!({ "command": "echo \"$1-$2\" \"$#\"", "arguments": ["a b", 7] }), "stdout").await;
    assert_eq!(out, Ok(json!("a b-7 2")));
    // An object's values go in key order.
    let out =
        shell(&enabled(), json!({ "command": "echo \"$1 $2\"", "arguments": { "a": "first", "b": true } }), "stdout")
            .await;
    assert_eq!(out, Ok(json!("first true")));
}

#[tokio::test]
async fn environment_is_scrubbed_to_the_passthrough_and_the_task() {
    let (name, value) = engine_variable();
    let probe = json!({ "command": "printenv \"$1\"", "arguments": [name] });
    let hidden = shell(&enabled(), probe.clone(), "all").await.expect("runs");
    assert_ne!(hidden["code"], 0, "{name} leaked: {hidden}");
    assert_eq!(hidden["stdout"], "");

    let path = shell(&enabled(), json!({ "command": "printenv PATH" }), "stdout").await;
    assert_eq!(path, Ok(json!(std::env::var("PATH").expect("PATH is set"))));

    let passing = ProcessPolicy { env_passthrough: vec!["PATH".into(), name.clone()], ..enabled() };
    assert_eq!(shell(&passing, probe, "stdout").await, Ok(json!(value)));

    let task = json!({ "command": "echo \"$GREETING $COUNT\"", "environment": { "GREETING": "hello", "COUNT": 3 } });
    assert_eq!(shell(&enabled(), task, "stdout").await, Ok(json!("hello 3")));
}

#[tokio::test]
async fn a_process_past_its_timeout_is_killed() {
    let policy = ProcessPolicy { timeout: Duration::from_millis(300), ..enabled() };
    let started = Instant::now();
    let failed = failure(shell(&policy, json!({ "command": "sleep 30" }), "stdout").await);
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    let detail = assert_problem(&failed, ErrorType::Timeout, 408);
    assert!(detail.contains("did not finish"), "{detail}");
}

#[tokio::test]
async fn a_non_zero_exit_fails_with_the_start_of_stderr() {
    let failed = failure(shell(&enabled(), json!({ "command": "echo broken >&2; exit 3" }), "stdout").await);
    let detail = assert_problem(&failed, ErrorType::Runtime, 500);
    assert!(detail.contains("code 3") && detail.contains("broken"), "{detail}");

    let long = failure(
        shell(&enabled(), json!({ "command": "head -c 5000 /dev/zero | tr '\\0' x >&2; exit 1" }), "none").await,
    );
    let detail = assert_problem(&long, ErrorType::Runtime, 500);
    assert!(detail.len() < 700, "the detail quotes only the start of stderr: {} bytes", detail.len());
}

#[tokio::test]
async fn return_modes() {
    let command = json!({ "command": "echo out; echo err >&2; exit 4" });
    assert_eq!(shell(&enabled(), command.clone(), "code").await, Ok(json!(4)));
    assert_eq!(
        shell(&enabled(), command.clone(), "all").await,
        Ok(json!({ "code": 4, "stdout": "out", "stderr": "err" }))
    );
    let ok = json!({ "command": "printf 'one\\ntwo\\n\\n'; echo err >&2" });
    assert_eq!(shell(&enabled(), ok.clone(), "stdout").await, Ok(json!("one\ntwo\n")), "one newline trimmed");
    assert_eq!(shell(&enabled(), ok.clone(), "stderr").await, Ok(json!("err")));
    assert_eq!(shell(&enabled(), ok.clone(), "none").await, Ok(Value::Null));
    assert_eq!(run_process(&enabled(), &json!({ "shell": { "command": "echo default" } })).await, Ok(json!("default")));
}

#[tokio::test]
async fn output_past_the_bound_fails() {
    let policy = ProcessPolicy { max_output_bytes: 1000, ..enabled() };
    let failed = failure(shell(&policy, json!({ "command": "head -c 5000 /dev/zero" }), "stdout").await);
    let detail = assert_problem(&failed, ErrorType::Runtime, 500);
    assert!(detail.contains("more than 1000 bytes"), "{detail}");
}

#[tokio::test]
async fn a_disabled_kind_is_refused() {
    let shell_only = ProcessPolicy { shell: true, ..ProcessPolicy::default() };
    let refused =
        failure(run_process(&shell_only, &json!({ "script": { "language": "python", "code": "print(1)" } })).await);
    let detail = assert_problem(&refused, ErrorType::Configuration, 400);
    assert_eq!(detail, "run: script is disabled by the administrator");

    let refused = failure(shell(&ProcessPolicy::default(), json!({ "command": "echo no" }), "stdout").await);
    let detail = assert_problem(&refused, ErrorType::Configuration, 400);
    assert_eq!(detail, "run: shell is disabled by the administrator");
}

/// Whether `program` can be started with the policy's scrubbed environment.
async fn installed(policy: &ProcessPolicy, program: &str) -> bool {
    let mut command = tokio::process::Command::new(program);
    command.arg("--version").env_clear();
    for name in &policy.env_passthrough {
        if let Ok(value) = std::env::var(name) {
            command.env(name, value);
        }
    }
    let found = matches!(command.output().await, Ok(output) if output.status.success());
    if !found {
        eprintln!("skipped: `{program}` is not installed");
    }
    found
}

/// Interpreters installed under a version manager need its variables as well as `PATH`.
fn script_policy() -> ProcessPolicy {
    let env_passthrough = ["PATH", "HOME", "PYENV_ROOT", "PYENV_VERSION"].map(String::from).to_vec();
    ProcessPolicy { env_passthrough, ..enabled() }
}

#[tokio::test]
async fn python_script_gets_its_arguments_and_environment() {
    let policy = script_policy();
    if !installed(&policy, "python3").await {
        return;
    }
    let input = json!({ "script": {
        "language": "python",
        "code": "import os, sys; print(os.environ['GREETING'], sys.argv[1])",
        "arguments": { "name": "Ada" },
        "environment": { "GREETING": "hello" },
    }});
    assert_eq!(run_process(&policy, &input).await, Ok(json!("hello Ada")));
}

#[tokio::test]
async fn js_script_gets_its_arguments_and_environment() {
    let policy = script_policy();
    if !installed(&policy, "node").await {
        return;
    }
    let input = json!({ "script": {
        "language": "js",
        "code": "console.log(process.env.GREETING, process.argv[1])",
        "arguments": ["Ada"],
        "environment": { "GREETING": "hello" },
    }});
    assert_eq!(run_process(&policy, &input).await, Ok(json!("hello Ada")));
}
