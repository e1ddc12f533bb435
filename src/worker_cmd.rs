//! `baton worker`: a remote worker that runs activities as commands, for a server's gRPC API.

use anyhow::Context;
use baton_worker::{Task, TaskError, Worker};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// The server's gRPC address.
    #[arg(long, env = "BATON_GRPC_ADDRESS", default_value = "http://127.0.0.1:9090")]
    address: String,
    /// A token with the `worker` permission.
    #[arg(long, env = "BATON_TOKEN", hide_env_values = true)]
    token: String,
    /// An activity run by a command: `NAME=COMMAND`, run with `sh -c`. The task's input is
    /// its standard input (JSON); its standard output is the result (JSON, or else text). A
    /// non-zero exit is a failure the activity's retry policy retries, with the command's
    /// standard error as its message. Repeatable.
    #[arg(long = "exec", value_name = "NAME=COMMAND", required = true)]
    exec: Vec<String>,
    /// Tasks run at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
}

pub async fn run(args: WorkerArgs) -> anyhow::Result<()> {
    let mut worker = Worker::connect(&args.address, &args.token).await?.concurrency(args.concurrency);
    let mut names = Vec::new();
    for exec in &args.exec {
        let (name, command) = exec
            .split_once('=')
            .filter(|(name, command)| !name.is_empty() && !command.trim().is_empty())
            .with_context(|| format!("--exec {exec:?}: expected NAME=COMMAND"))?;
        names.push(name.to_owned());
        let command = command.to_owned();
        worker = worker.activity(name, move |task| run_command(command.clone(), task));
    }
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.cancel();
    });
    eprintln!("Baton worker for {} on {}", names.join(", "), args.address);
    worker.run(shutdown).await?;
    Ok(())
}

/// One task as a process: input on stdin, result on stdout; dropped (cancelled) means killed.
async fn run_command(command: String, task: Task) -> Result<Value, TaskError> {
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&command)
        .env("BATON_ACTIVITY", &task.activity)
        .env("BATON_TASK_KEY", &task.idempotency_key)
        .env("BATON_TASK_ATTEMPT", task.attempt.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| TaskError::NonRetryable(format!("cannot run {command:?}: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A command that does not read its input closes the pipe early; that is not a failure.
        let _ = stdin.write_all(task.input.to_string().as_bytes()).await;
    }
    let output = child.wait_with_output().await.map_err(|e| TaskError::Retryable(format!("{command:?}: {e}")))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: String = stderr.chars().rev().take(2000).collect::<Vec<_>>().into_iter().rev().collect();
        return Err(TaskError::Retryable(format!("{command:?} exited with {}: {}", output.status, tail.trim())));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let text = stdout.trim();
    Ok(serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned())))
}
