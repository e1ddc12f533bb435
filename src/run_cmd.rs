//! `baton run`: one instance of a definition, to its end, with given events and activity results.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use baton_engine::{ActivityError, ActivityRegistry, Failure};
use baton_workflows::run::{RunError, RunOptions, RunOutcome, TaskAnswer, run_definition};
use serde_json::Value;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The definition (YAML or JSON).
    file: PathBuf,
    /// The workflow's input: JSON, or @file (JSON or YAML).
    #[arg(long, default_value = "{}")]
    input: String,
    /// Keep the instance in this SQLite file instead of a temporary one.
    #[arg(long)]
    db: Option<PathBuf>,
    /// `simulated` fires each timer as soon as nothing else is left to do; `real` waits.
    #[arg(long, value_enum, default_value = "simulated")]
    clock: ClockArg,
    /// A CloudEvent (structured JSON, or @file) delivered to the instance; repeat for more, in order.
    #[arg(long = "event")]
    events: Vec<String>,
    /// An activity's result: NAME=JSON, NAME=@file, or NAME=http(s)://... (the input is POSTed
    /// there as JSON and the JSON answer is the result). Repeatable.
    #[arg(long = "activity")]
    activities: Vec<String>,
    /// How long an event given before its listener is kept for it (ISO 8601, e.g. PT1H);
    /// kept until taken when absent.
    #[arg(long)]
    event_retention: Option<String>,
    /// Run `run: shell` and `run: script` tasks (refused otherwise): 60 s timeout, environment
    /// limited to PATH plus the task's own `environment`.
    #[arg(long)]
    allow_processes: bool,
    /// Print the task lifecycle (started, completed, faulted, cancelled) on stderr as JSON lines.
    #[arg(long)]
    trace: bool,
    /// A directory of secrets (one file per secret) for `use.secrets`; environment variables
    /// BATON_SECRET_<NAME> are read too.
    #[arg(long)]
    secrets_dir: Option<PathBuf>,
    /// Answers a human task as it opens: TASK=OUTCOME or TASK=OUTCOME:JSON (the completion's
    /// data). Repeatable; answers for the same task are used in order.
    #[arg(long = "complete", value_name = "TASK=OUTCOME[:JSON]")]
    complete: Vec<String>,
    /// Who answers the human tasks given with --complete.
    #[arg(long = "as", value_name = "USER", default_value = "designer")]
    answer_as: String,
    /// Shared business calendars: a YAML or JSON file with a `calendars:` mapping.
    #[arg(long)]
    calendars: Option<PathBuf>,
    /// People, departments and groups to put in the run's directory (YAML or JSON, as
    /// `baton directory import` reads).
    #[arg(long)]
    directory: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum ClockArg {
    Real,
    Simulated,
}

/// JSON given inline, or `@file` holding JSON or YAML.
pub(crate) fn read_value(text: &str, what: &str) -> anyhow::Result<Value> {
    match text.strip_prefix('@') {
        Some(path) => {
            let bytes = std::fs::read(path).with_context(|| format!("cannot read {what} file {path}"))?;
            if let Ok(value) = serde_json::from_slice(&bytes) {
                return Ok(value);
            }
            let limits = baton_workflows::parse::ParseLimits::default();
            match baton_workflows::parse::parse(path, &bytes, &limits) {
                Ok(parsed) => Ok(parsed.value),
                Err(diagnostics) => {
                    let text = String::from_utf8_lossy(&bytes);
                    let rendered: Vec<String> = diagnostics.iter().map(|d| d.render(&text)).collect();
                    bail!("{what} file {path} is neither JSON nor YAML:\n{}", rendered.join("\n"))
                }
            }
        }
        None => serde_json::from_str(text).with_context(|| format!("{what} is not valid JSON (use @file for a file)")),
    }
}

fn stub_activities(registry: &mut ActivityRegistry, specs: &[String]) -> anyhow::Result<()> {
    for spec in specs {
        let Some((name, target)) = spec.split_once('=') else {
            bail!("--activity {spec}: expected NAME=JSON, NAME=@file or NAME=http(s)://...");
        };
        let name = name.trim().to_owned();
        if target.starts_with("http://") || target.starts_with("https://") {
            let url = target.to_owned();
            let client = reqwest::Client::new();
            registry.register(name, move |_ctx, input| {
                let (client, url) = (client.clone(), url.clone());
                async move {
                    let response = client
                        .post(&url)
                        .json(&input)
                        .send()
                        .await
                        .map_err(|e| ActivityError::Retryable(e.to_string()))?;
                    let status = response.status();
                    let body: Value = response.json().await.unwrap_or(Value::Null);
                    if status.is_success() {
                        Ok(body)
                    } else {
                        let mut failure = Failure::new(
                            "https://serverlessworkflow.io/spec/1.0.0/errors/communication",
                            format!("{url} answered {status}"),
                        );
                        failure.details = Some(serde_json::json!({
                            "type": "https://serverlessworkflow.io/spec/1.0.0/errors/communication",
                            "status": status.as_u16(),
                            "title": status.canonical_reason().unwrap_or("Error"),
                            "detail": format!("{url} answered {status}"),
                            "response": body,
                        }));
                        Err(ActivityError::Failed(failure))
                    }
                }
            });
        } else {
            let result = read_value(target, &format!("--activity {name}"))?;
            registry.register(name, move |_ctx, _input| {
                let result = result.clone();
                async move { Ok(result) }
            });
        }
    }
    Ok(())
}

/// Shared business calendars from a YAML or JSON file: a `calendars:` mapping (or the mapping
/// alone).
pub fn load_calendars(path: &std::path::Path) -> anyhow::Result<Arc<baton_sla::Calendars>> {
    let value = read_value(&format!("@{}", path.display()), "--calendars")?;
    let calendars = value.get("calendars").unwrap_or(&value);
    let calendars = baton_sla::Calendars::from_value(calendars)
        .map_err(|e| anyhow::anyhow!("--calendars {}: {e}", path.display()))?;
    Ok(Arc::new(calendars))
}

pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let file = args.file.display().to_string();
    let source = std::fs::read(&args.file).with_context(|| format!("cannot read {file}"))?;
    let source = match String::from_utf8(source) {
        Ok(text) => text,
        Err(_) => {
            // Let the parser point at the first bad byte.
            let limits = baton_workflows::parse::ParseLimits::default();
            if let Err(diagnostics) = baton_workflows::parse::parse(&file, &std::fs::read(&args.file)?, &limits) {
                for d in diagnostics {
                    eprintln!("{}", d.render(""));
                }
            }
            return Ok(ExitCode::from(2));
        }
    };
    let input = read_value(&args.input, "--input")?;
    let event_retention = match &args.event_retention {
        Some(text) => Some(
            baton_workflows::duration::parse_iso8601(text)
                .with_context(|| format!("--event-retention {text}: expected an ISO 8601 duration such as PT1H"))?,
        ),
        None => None,
    };
    let events = args.events.iter().map(|e| read_value(e, "--event")).collect::<anyhow::Result<Vec<_>>>()?;
    let secrets: Arc<dyn baton_engine::SecretProvider> = {
        let env = Arc::new(baton_engine::secrets::EnvSecrets::default());
        match &args.secrets_dir {
            Some(dir) => Arc::new(baton_engine::secrets::ChainSecrets::new(vec![
                Arc::new(baton_engine::secrets::FileSecrets::new(dir.clone())),
                env,
            ])),
            None => env,
        }
    };
    let mut activities = ActivityRegistry::new();
    baton_activities::register(&mut activities, baton_activities::HttpConfig::new(Arc::clone(&secrets)));
    if args.allow_processes {
        baton_activities::register_processes(
            &mut activities,
            baton_activities::ProcessPolicy { shell: true, script: true, ..Default::default() },
        );
    }
    stub_activities(&mut activities, &args.activities)?;
    let on_lifecycle: Option<baton_workflows::run::LifecycleSink> = if args.trace {
        Some(Arc::new(|event| {
            if let Ok(line) = serde_json::to_string(event) {
                eprintln!("{line}");
            }
        }))
    } else {
        None
    };
    let answers = args
        .complete
        .iter()
        .map(|text| TaskAnswer::parse(text, &args.answer_as).map_err(|e| anyhow::anyhow!("--complete {e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let calendars = args.calendars.as_deref().map(load_calendars).transpose()?;
    let directory = match &args.directory {
        Some(path) => {
            let value = read_value(&format!("@{}", path.display()), "--directory")?;
            Some(
                serde_json::from_value::<baton_engine::directory::Organisation>(value)
                    .with_context(|| format!("--directory {}", path.display()))?,
            )
        }
        None => None,
    };
    let options = RunOptions {
        input,
        events,
        activities,
        db: args.db.clone(),
        real_clock: args.clock == ClockArg::Real,
        secrets: Some(secrets),
        event_retention,
        allow_processes: args.allow_processes,
        on_lifecycle,
        calendars,
        directory,
        answers,
        store_activities: Some(Arc::new(crate::people::register_store_activities)),
        time_limit: None,
    };
    match run_definition(&source, &file, options).await {
        Ok(report) => {
            if let Some(db) = &args.db {
                eprintln!(
                    "instance {} kept in {} (baton replay {} --store sqlite://{} --definition {file})",
                    report.instance,
                    db.display(),
                    report.instance,
                    db.display()
                );
            }
            match report.outcome {
                RunOutcome::Completed { output } => {
                    crate::write_out(&serde_json::to_string_pretty(&output)?)?;
                    Ok(ExitCode::SUCCESS)
                }
                RunOutcome::Faulted { error } => {
                    crate::write_out(&serde_json::to_string_pretty(&error)?)?;
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Err(RunError::Invalid(diagnostics)) => {
            eprintln!("{diagnostics}");
            Ok(ExitCode::from(2))
        }
        Err(error) => Err(error.into()),
    }
}
