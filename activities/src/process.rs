//! The `baton.process` activity: the DSL's `run: shell` and `run: script` tasks, for an
//! administrator who enables them.
//!
//! Both are refused unless [`ProcessPolicy`] enables them. An enabled process runs with a
//! timeout (killed on expiry), a scrubbed environment (only the names the policy passes through,
//! then the task's own `environment`), no standard input, and a bound on what it may write.
//!
//! Input, as the interpreter evaluates it from the task:
//!
//! ```json
//! { "shell": { "command": "echo \"$1\"", "arguments": ["Ada"], "environment": { "A": "b" } },
//!   "return": "stdout" }
//! { "script": { "language": "python", "code": "import sys; print(sys.argv[1])", "arguments": ["Ada"] } }
//! ```
//!
//! `return` follows the DSL's `run.return`: `stdout` (the default) and `stderr` give the stream as
//! a string without its final newline, `code` the exit code, `all` `{code, stdout, stderr}`,
//! `none` null. A non-zero exit fails the task unless `return` is `code` or `all`.

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use baton_engine::{ActivityError, ActivityRegistry, Failure};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use crate::problem::{ErrorType, Problem};

/// The activity's registered name, which the interpreter calls for `run: shell` and
/// `run: script`.
pub const PROCESS_ACTIVITY: &str = "baton.process";

/// How much of standard error a failure's detail quotes.
const STDERR_IN_DETAIL: usize = 512;

/// What the administrator allows processes to do. The default refuses both kinds.
#[derive(Clone, Debug)]
pub struct ProcessPolicy {
    /// Whether `run: shell` tasks may run (as `sh -c <command>`).
    pub shell: bool,
    /// Whether `run: script` tasks may run (`node -e` for js, `python3 -c` for python).
    pub script: bool,
    /// Longest a process may run; it is killed when this expires and the task fails with the
    /// DSL's timeout error.
    pub timeout: Duration,
    /// Most bytes a process may write to standard output, and to standard error; a process
    /// that writes more is killed and the task fails with the runtime error.
    pub max_output_bytes: usize,
    /// Environment variables copied from the engine's own environment. Nothing else of it is
    /// visible to a process: the rest comes from the task's `environment`.
    pub env_passthrough: Vec<String>,
    /// The working directory of every process; the engine's own when `None`.
    pub working_dir: Option<PathBuf>,
}

impl Default for ProcessPolicy {
    fn default() -> Self {
        Self {
            shell: false,
            script: false,
            timeout: Duration::from_secs(60),
            max_output_bytes: 1024 * 1024,
            env_passthrough: vec!["PATH".to_owned()],
            working_dir: None,
        }
    }
}

/// Registers the `baton.process` activity under `policy`.
pub fn register_processes(registry: &mut ActivityRegistry, policy: ProcessPolicy) {
    let policy = Arc::new(policy);
    registry.register(PROCESS_ACTIVITY, move |_ctx, input| {
        let policy = Arc::clone(&policy);
        async move { run_process(&policy, &input).await }
    });
}

/// Runs one `baton.process` input under `policy`: what the registered activity does.
pub async fn run_process(policy: &ProcessPolicy, input: &Value) -> Result<Value, ActivityError> {
    run(policy, input).await.map_err(failed)
}

fn failed(problem: Problem) -> ActivityError {
    let uri = problem.kind.uri();
    ActivityError::Failed(Failure {
        kind: uri.to_owned(),
        message: problem.title.clone(),
        details: Some(json!({
            "type": uri,
            "status": problem.status,
            "title": problem.title,
            "detail": problem.detail,
        })),
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Return {
    Stdout,
    Stderr,
    Code,
    All,
    None,
}

impl Return {
    fn parse(value: Option<&Value>) -> Result<Self, Problem> {
        Ok(match value {
            None | Some(Value::Null) => Self::Stdout,
            Some(Value::String(s)) if s == "stdout" => Self::Stdout,
            Some(Value::String(s)) if s == "stderr" => Self::Stderr,
            Some(Value::String(s)) if s == "code" => Self::Code,
            Some(Value::String(s)) if s == "all" => Self::All,
            Some(Value::String(s)) if s == "none" => Self::None,
            Some(other) => {
                return Err(Problem::validation(format!(
                    "`return` is {other}: expected one of stdout, stderr, code, all, none"
                )));
            }
        })
    }

    /// Whether the caller reads the exit code itself, so a non-zero one is not a failure.
    fn wants_code(self) -> bool {
        matches!(self, Self::Code | Self::All)
    }
}

/// What a process left behind.
struct Finished {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

async fn run(policy: &ProcessPolicy, input: &Value) -> Result<Value, Problem> {
    let returns = Return::parse(input.get("return"))?;
    let (mut command, program) = if let Some(shell) = input.get("shell") {
        if !policy.shell {
            return Err(refused("shell"));
        }
        let text = string_field(shell, "shell", "command")?;
        let mut command = Command::new("sh");
        // `sh -c` takes the word after the command as `$0`; the arguments start at `$1`.
        command.arg("-c").arg(text).arg("sh");
        (command, "sh")
    } else if let Some(script) = input.get("script") {
        if !policy.script {
            return Err(refused("script"));
        }
        if script.get("code").is_none() && script.get("source").is_some() {
            return Err(Problem::configuration(
                "run: script with an external `source` is not supported; give the script as `code`",
            ));
        }
        let code = string_field(script, "script", "code")?;
        let (program, flag) = match script.get("language").and_then(Value::as_str) {
            Some("js" | "javascript") => ("node", "-e"),
            Some("python") => ("python3", "-c"),
            other => {
                return Err(Problem::configuration(format!(
                    "run: script language {}: expected js, javascript or python",
                    other.map_or_else(|| "missing".to_owned(), |l| format!("`{l}`"))
                )));
            }
        };
        let mut command = Command::new(program);
        command.arg(flag).arg(code);
        (command, program)
    } else {
        return Err(Problem::validation("expected `shell` or `script`"));
    };
    let spec = input.get("shell").or_else(|| input.get("script")).unwrap_or(&Value::Null);
    command.args(arguments(spec.get("arguments"))?);
    command.env_clear();
    for name in &policy.env_passthrough {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    for (name, value) in environment(spec.get("environment"))? {
        command.env(name, value);
    }
    if let Some(dir) = &policy.working_dir {
        command.current_dir(dir);
    }
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);

    let finished = execute(command, program, policy).await?;
    let code = finished.status.code();
    if !returns.wants_code() || code.is_none() {
        match code {
            Some(0) => {}
            Some(code) => {
                return Err(runtime(format!("`{program}` exited with code {code}{}", quote(&finished.stderr))));
            }
            None => {
                return Err(runtime(format!(
                    "`{program}` was ended by a signal ({}){}",
                    finished.status,
                    quote(&finished.stderr)
                )));
            }
        }
    }
    let code = code.unwrap_or_default();
    Ok(match returns {
        Return::Stdout => Value::String(text(&finished.stdout)),
        Return::Stderr => Value::String(text(&finished.stderr)),
        Return::Code => json!(code),
        Return::All => json!({ "code": code, "stdout": text(&finished.stdout), "stderr": text(&finished.stderr) }),
        Return::None => Value::Null,
    })
}

/// Runs the process to its end within the policy's timeout and output bound.
async fn execute(mut command: Command, program: &str, policy: &ProcessPolicy) -> Result<Finished, Problem> {
    let mut child = command.spawn().map_err(|e| runtime(format!("cannot start `{program}`: {e}")))?;
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(runtime(format!("`{program}` has no output pipes")));
    };
    let limit = policy.max_output_bytes;
    let work = async {
        let (stdout, stderr) = tokio::try_join!(
            read_bounded(stdout, limit, "standard output"),
            read_bounded(stderr, limit, "standard error")
        )?;
        let status = child.wait().await.map_err(|e| runtime(format!("cannot wait for `{program}`: {e}")))?;
        Ok::<_, Problem>(Finished { status, stdout, stderr })
    };
    let outcome = tokio::time::timeout(policy.timeout, work).await;
    match outcome {
        Ok(Ok(finished)) => Ok(finished),
        Ok(Err(problem)) => {
            // Killing a process that already ended fails harmlessly.
            let _ = child.kill().await;
            Err(problem)
        }
        Err(_) => {
            let _ = child.kill().await;
            Err(Problem::new(
                ErrorType::Timeout,
                "Process timed out",
                format!("`{program}` did not finish within {:?} and was killed", policy.timeout),
            ))
        }
    }
}

/// Reads a stream to its end, or fails once it holds more than `limit` bytes.
async fn read_bounded(stream: impl AsyncRead + Unpin, limit: usize, name: &str) -> Result<Vec<u8>, Problem> {
    let mut buffer = Vec::new();
    let bound = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    stream
        .take(bound)
        .read_to_end(&mut buffer)
        .await
        .map_err(|e| runtime(format!("cannot read the process's {name}: {e}")))?;
    if buffer.len() > limit {
        return Err(runtime(format!("the process wrote more than {limit} bytes to its {name}")));
    }
    Ok(buffer)
}

fn refused(kind: &str) -> Problem {
    Problem::new(ErrorType::Configuration, "Refused by policy", format!("run: {kind} is disabled by the administrator"))
}

fn runtime(detail: String) -> Problem {
    Problem::new(ErrorType::Runtime, "Process failed", detail)
}

fn string_field<'a>(spec: &'a Value, kind: &str, key: &str) -> Result<&'a str, Problem> {
    spec.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| Problem::validation(format!("run: {kind} needs `{key}` (a string)")))
}

/// A value as a process sees it: a string as it is, anything else as JSON.
fn word(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Positional arguments: an array's items, or an object's values in key order.
fn arguments(value: Option<&Value>) -> Result<Vec<String>, Problem> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => Ok(items.iter().map(word).collect()),
        Some(Value::Object(fields)) => Ok(fields.values().map(word).collect()),
        Some(other) => Err(Problem::validation(format!("`arguments` is {other}: expected an object or an array"))),
    }
}

fn environment(value: Option<&Value>) -> Result<Vec<(String, String)>, Problem> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Object(fields)) => Ok(pairs(fields)),
        Some(other) => Err(Problem::validation(format!("`environment` is {other}: expected an object"))),
    }
}

fn pairs(fields: &Map<String, Value>) -> Vec<(String, String)> {
    fields.iter().map(|(name, value)| (name.clone(), word(value))).collect()
}

/// A stream as text, without the one newline that ends its last line.
fn text(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text);
    text.to_owned()
}

/// The start of standard error, for a failure's detail.
fn quote(stderr: &[u8]) -> String {
    let shown = text(&stderr[..stderr.len().min(STDERR_IN_DETAIL)]);
    if shown.trim().is_empty() { String::new() } else { format!(": {}", shown.trim_end()) }
}
