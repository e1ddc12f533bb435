//! The API's client: `baton deploy`, `baton workflow ...`, `baton task ...` and `baton event
//! send`, each a call or a few to a server's HTTP API (`baton server`, `baton dev`).
//!
//! Exit status: 0 on success; 1 when the API refused (its problem is printed on stderr, with
//! each of its errors); 2 when the server cannot be reached.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::write_out;

/// The exit status when the server cannot be reached.
const UNREACHABLE: u8 = 2;

/// Where the API is, who calls it, and how answers are shown.
#[derive(Debug, clap::Args)]
pub struct Api {
    /// The server (its API is under /api/v1).
    #[arg(long, global = true, env = "BATON_ADDRESS", default_value = "http://127.0.0.1:8080")]
    address: String,
    /// The bearer token to call with (`baton dev` prints some).
    #[arg(long, global = true, env = "BATON_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// `table` for people, `json` (the API's JSON) for scripts.
    #[arg(short = 'o', long = "output", global = true, value_enum, default_value = "table")]
    output: Output,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// The client's verbs, at the top level of `baton`.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Deploy definitions to a server: each one's key, and whether it is new. Every problem of
    /// a definition that does not validate is printed at its position.
    Deploy {
        /// The definitions (YAML or JSON).
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        #[command(flatten)]
        api: Api,
    },
    /// Instances on a server: start, describe, history, list, signal, suspend, resume,
    /// terminate, retry.
    Workflow {
        #[command(subcommand)]
        command: WorkflowCommand,
        #[command(flatten)]
        api: Api,
    },
    /// Human tasks on a server: the inbox, claim, complete, delegate.
    Task {
        #[command(subcommand)]
        command: TaskCommand,
        #[command(flatten)]
        api: Api,
    },
    /// CloudEvents for an instance on a server.
    Event {
        #[command(subcommand)]
        command: EventCommand,
        #[command(flatten)]
        api: Api,
    },
}

/// What `workflow list` and `workflow bulk` search instances by.
#[derive(Debug, clap::Args)]
pub struct Search {
    /// `namespace/name`.
    #[arg(long)]
    definition: Option<String>,
    /// running, waiting, suspended, cancelled, faulted, completed.
    #[arg(long)]
    status: Option<String>,
    #[arg(long)]
    business_key: Option<String>,
    #[arg(long)]
    tag: Option<String>,
}

impl Search {
    /// The search as the API names its fields (query parameters, a bulk filter).
    fn fields(self) -> [(&'static str, Option<String>); 4] {
        [
            ("definition", self.definition),
            ("status", self.status),
            ("businessKey", self.business_key),
            ("tag", self.tag),
        ]
    }
}

#[derive(Debug, Subcommand)]
pub enum WorkflowCommand {
    /// Start an instance of a deployed definition (`namespace/name` or `namespace/name@version`).
    Start {
        definition: String,
        /// The instance's input.
        #[arg(long, value_name = "JSON|@FILE")]
        input: Option<String>,
        /// The instance's id (generated when absent).
        #[arg(long)]
        id: Option<String>,
        /// Starting again with the same key answers with the first instance.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// The business object the instance is about, for searches.
        #[arg(long)]
        business_key: Option<String>,
        /// A tag; repeat for more.
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
    },
    /// An instance, with its human tasks, open activities, timers and incidents.
    Describe { id: String },
    /// An instance's history, oldest first.
    History {
        id: String,
        /// Events per page.
        #[arg(long)]
        limit: Option<u32>,
        /// Every page, not just the first.
        #[arg(long)]
        all: bool,
        /// Start after this cursor (a page's `next`).
        #[arg(long)]
        after: Option<String>,
    },
    /// Search instances.
    List {
        #[command(flatten)]
        search: Search,
        #[arg(long)]
        limit: Option<u32>,
        /// Start after this cursor (a page's `next`).
        #[arg(long)]
        after: Option<String>,
    },
    /// Send a CloudEvent to an instance (as `baton event send`).
    Signal {
        id: String,
        /// The event's id, which deduplicates it (generated when absent).
        #[arg(long)]
        event_id: Option<String>,
        #[command(flatten)]
        event: EventArgs,
    },
    /// Suspend an instance: it takes no input until resumed (what arrives is kept).
    Suspend {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Resume a suspended instance.
    Resume {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// End an instance now.
    Terminate {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Retry the open incidents of an instance; `--input` retries a failed activity with an
    /// edited input (recorded in history).
    Retry {
        id: String,
        /// The failed activity's new input: JSON or @file.
        #[arg(long)]
        input: Option<String>,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Complete the failed activity of each open incident of an instance by hand, with a
    /// result (`null`, the default, skips it) and a reason; both land in history.
    Complete {
        id: String,
        /// The activity's result: JSON or @file.
        #[arg(long)]
        result: Option<String>,
        #[arg(long)]
        reason: String,
    },
    /// Move a running instance to another version of its definition. `--dry-run` tells where
    /// each running task would go, or why the move is refused, and changes nothing.
    Migrate {
        id: String,
        /// The version to move to.
        #[arg(long)]
        to: String,
        /// A running task's counterpart, `OLD=NEW` (names or references such as /do/1/review),
        /// where it is not the task with the same reference or name; repeatable.
        #[arg(long = "map", value_name = "OLD=NEW")]
        mapping: Vec<String>,
        #[arg(long, default_value = "")]
        reason: String,
        #[arg(long)]
        dry_run: bool,
    },
    /// One action (suspend, resume, terminate, retry) on every instance a search finds, with
    /// a progress bar; `--dry-run` counts them first and changes nothing.
    Bulk {
        #[arg(value_parser = ["suspend", "resume", "terminate", "retry"])]
        action: String,
        #[command(flatten)]
        search: Search,
        /// Recorded in each instance's history.
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// The caller's inbox: the tasks they may see.
    List {
        /// `me`, or a person's id: tasks owned by or delegated to them.
        #[arg(long)]
        assignee: Option<String>,
        /// Tasks offered to this role.
        #[arg(long)]
        role: Option<String>,
        #[arg(long)]
        department: Option<String>,
        /// open (the default), completed, cancelled, expired.
        #[arg(long)]
        status: Option<String>,
        /// Only the tasks of this instance.
        #[arg(long)]
        instance: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
        /// Start after this cursor (a page's `next`).
        #[arg(long)]
        after: Option<String>,
    },
    /// Take an unowned task (REF is `instance:seq`, the task's reference).
    Claim {
        #[arg(value_name = "REF")]
        reference: String,
    },
    /// Complete a task with one of its outcomes and its form's data.
    Complete {
        #[arg(value_name = "REF")]
        reference: String,
        #[arg(long)]
        outcome: String,
        #[arg(long, value_name = "JSON|@FILE")]
        data: Option<String>,
        /// Complete for this person (a role allowed to act on their behalf).
        #[arg(long)]
        on_behalf_of: Option<String>,
    },
    /// Hand a task's work to someone else; its owner stays accountable.
    Delegate {
        #[arg(value_name = "REF")]
        reference: String,
        /// A person's id.
        #[arg(long)]
        to: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum EventCommand {
    /// Send a CloudEvent to an instance.
    Send {
        instance: String,
        /// The event's id, which deduplicates it (generated when absent).
        #[arg(long = "id")]
        event_id: Option<String>,
        #[command(flatten)]
        event: EventArgs,
    },
}

/// A CloudEvent's attributes and data.
#[derive(Debug, clap::Args)]
pub struct EventArgs {
    /// The event's `type`.
    #[arg(long = "type", value_name = "TYPE")]
    kind: String,
    /// The event's `source`.
    #[arg(long, default_value = "/baton/cli")]
    source: String,
    /// The event's data.
    #[arg(long, value_name = "JSON|@FILE")]
    data: Option<String>,
}

/// An RFC 7807 problem, as the API answers its errors.
#[derive(Debug, Default, Deserialize)]
struct Problem {
    #[serde(default)]
    title: String,
    #[serde(default)]
    status: u16,
    #[serde(default)]
    detail: String,
    #[serde(default)]
    errors: Vec<FieldError>,
}

/// One problem of a definition or of a form.
#[derive(Debug, Default, Deserialize)]
struct FieldError {
    #[serde(default)]
    message: String,
    line: Option<u64>,
    column: Option<u64>,
    code: Option<String>,
    pointer: Option<String>,
    expected: Option<String>,
}

/// Why a verb did not succeed.
#[derive(Debug)]
enum Failure {
    /// The API answered with a problem.
    Refused(Problem),
    /// No answer from the server.
    Unreachable { address: String, cause: String },
    /// Anything else: a file that cannot be read, JSON on the command line that is not JSON.
    Local(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Self::Local(error)
    }
}

type Outcome<T> = Result<T, Failure>;

/// Runs a client verb.
pub async fn run(command: ClientCommand) -> anyhow::Result<ExitCode> {
    let (api, outcome) = match command {
        ClientCommand::Deploy { files, api } => {
            let outcome = deploy(&api, &files).await;
            (api, outcome)
        }
        ClientCommand::Workflow { command, api } => {
            let outcome = workflow(&api, command).await;
            (api, outcome)
        }
        ClientCommand::Task { command, api } => {
            let outcome = task(&api, command).await;
            (api, outcome)
        }
        ClientCommand::Event { command: EventCommand::Send { instance, event_id, event }, api } => {
            let outcome = send_event(&api, &instance, event_id, &event).await.map(|()| ExitCode::SUCCESS);
            (api, outcome)
        }
    };
    match outcome {
        Ok(code) => Ok(code),
        Err(Failure::Refused(problem)) => {
            report(&problem, None, &api);
            Ok(ExitCode::FAILURE)
        }
        Err(Failure::Unreachable { address, cause }) => {
            eprintln!("error: cannot reach the Baton API at {address}: {cause}");
            Ok(ExitCode::from(UNREACHABLE))
        }
        Err(Failure::Local(error)) => Err(error),
    }
}

/// Prints a problem on stderr: its title and detail, each of its errors (at `file`'s
/// positions when the errors are a definition's), and a hint when the call had no token.
fn report(problem: &Problem, file: Option<&str>, api: &Api) {
    eprintln!("error: {}: {}", problem.title, problem.detail);
    for error in &problem.errors {
        let code = error.code.as_deref().map(|c| format!("[{c}]")).unwrap_or_default();
        let position = match (error.line, error.column) {
            (Some(line), Some(column)) => format!(":{line}:{column}"),
            (Some(line), None) => format!(":{line}"),
            _ => String::new(),
        };
        match file {
            Some(file) => eprintln!("{file}{position}: error{code}: {}", error.message),
            None => {
                let at = error.pointer.as_deref().filter(|p| !p.is_empty()).map(|p| format!(" (at {p})"));
                let code = error.code.as_deref().map(|c| format!(" [{c}]"));
                let line = position.strip_prefix(':').map(|p| format!("{p}: "));
                eprintln!(
                    "  - {}{}{}{}",
                    line.unwrap_or_default(),
                    error.message,
                    at.unwrap_or_default(),
                    code.unwrap_or_default()
                );
            }
        }
        if let Some(expected) = &error.expected {
            eprintln!("  expected {expected}");
        }
    }
    if problem.status == StatusCode::UNAUTHORIZED.as_u16() {
        if api.token.is_none() {
            eprintln!("hint: set BATON_TOKEN (baton dev prints tokens)");
        } else {
            eprintln!("hint: the server refused the token of BATON_TOKEN (or --token); baton dev prints fresh ones");
        }
    }
}

/// A connection to the API.
struct Client {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
}

impl Client {
    fn new(api: &Api) -> Outcome<Self> {
        let unreachable = |cause: String| Failure::Unreachable { address: api.address.clone(), cause };
        let mut text = api.address.trim().trim_end_matches('/').to_owned();
        if !text.contains("://") {
            text = format!("http://{text}");
        }
        // The address a server prints ends with /api/v1: the paths below add it.
        let text = text.strip_suffix("/api/v1").unwrap_or(&text);
        let base = Url::parse(text).map_err(|e| unreachable(format!("not an address: {e}")))?;
        if base.cannot_be_a_base() || !matches!(base.scheme(), "http" | "https") {
            return Err(unreachable("not an http:// or https:// address".into()));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .timeout(std::time::Duration::from_secs(120))
            .user_agent(concat!("baton/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Self { http, base, token: api.token.clone().filter(|t| !t.trim().is_empty()) })
    }

    /// The URL of `/api/v1/<segments>`, each segment percent-encoded.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(["api", "v1"]).extend(segments);
        }
        url
    }

    fn request(&self, method: Method, segments: &[&str]) -> reqwest::RequestBuilder {
        let request = self.http.request(method, self.url(segments));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Sends a request: the status and JSON body of a success (null when empty), or the
    /// problem the API answered.
    async fn send(&self, request: reqwest::RequestBuilder) -> Outcome<(StatusCode, Value)> {
        let response = request.send().await.map_err(|e| Failure::Unreachable {
            address: self.base.as_str().trim_end_matches('/').to_owned(),
            cause: causes(&e),
        })?;
        let status = response.status();
        let text = response.text().await.map_err(|e| Failure::Unreachable {
            address: self.base.as_str().trim_end_matches('/').to_owned(),
            cause: causes(&e),
        })?;
        if status.is_success() {
            let body = if text.trim().is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).with_context(|| format!("the server's answer is not JSON: {text}"))?
            };
            return Ok((status, body));
        }
        let mut problem = serde_json::from_str::<Problem>(&text).unwrap_or_default();
        if problem.title.is_empty() {
            problem.title = status.canonical_reason().unwrap_or("Error").to_owned();
        }
        if problem.detail.is_empty() {
            problem.detail = text.trim().chars().take(500).collect();
        }
        problem.status = status.as_u16();
        Err(Failure::Refused(problem))
    }

    async fn get(&self, segments: &[&str], query: &[(&str, Option<String>)]) -> Outcome<Value> {
        let query: Vec<(&str, &String)> = query.iter().filter_map(|(k, v)| v.as_ref().map(|v| (*k, v))).collect();
        Ok(self.send(self.request(Method::GET, segments).query(&query)).await?.1)
    }

    async fn post(&self, segments: &[&str], body: Option<&Value>) -> Outcome<(StatusCode, Value)> {
        let request = self.request(Method::POST, segments);
        self.send(match body {
            Some(body) => request.json(body),
            None => request,
        })
        .await
    }
}

/// An error and its causes on one line (reqwest's own message names no cause).
fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}

/// A JSON argument given inline, or as `@FILE` (`@-` for stdin).
fn json_argument(flag: &str, text: &str) -> anyhow::Result<Value> {
    let (source, text) = match text.strip_prefix('@') {
        Some("-") => ("stdin".to_owned(), std::io::read_to_string(std::io::stdin()).context("cannot read stdin")?),
        Some(path) => (path.to_owned(), std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?),
        None => (flag.to_owned(), text.to_owned()),
    };
    serde_json::from_str(&text).with_context(|| format!("{flag}: {source} is not JSON"))
}

fn emit_json(value: &Value) -> anyhow::Result<()> {
    write_out(&serde_json::to_string_pretty(value)?)
}

/// Rows in aligned columns under a header.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    let header: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            line.push_str(&" ".repeat(width - cell.chars().count()));
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// A value as a table cell: text as is, nothing as `-`, anything else as compact JSON.
fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// An RFC 3339 time, or milliseconds since the epoch, to the second in UTC.
fn time(value: &Value) -> String {
    let parsed = match value {
        Value::String(s) => chrono::DateTime::parse_from_rfc3339(s).ok().map(|t| t.with_timezone(&chrono::Utc)),
        Value::Number(n) => n.as_i64().and_then(chrono::DateTime::from_timestamp_millis),
        _ => None,
    };
    match parsed {
        Some(t) => t.format("%Y-%m-%d %H:%M:%SZ").to_string(),
        None => cell(value),
    }
}

fn items(page: &Value) -> &[Value] {
    page["items"].as_array().map(Vec::as_slice).unwrap_or_default()
}

/// Tells how to get the page after a table's, when there is one.
fn more(page: &Value) {
    if let Some(next) = page["next"].as_str() {
        eprintln!("(more: add --after {next})");
    }
}

async fn deploy(api: &Api, files: &[PathBuf]) -> Outcome<ExitCode> {
    let client = Client::new(api)?;
    let mut refused = 0;
    for path in files {
        let file = path.display().to_string();
        let source = std::fs::read(path).with_context(|| format!("cannot read {file}"))?;
        let request = client
            .request(Method::POST, &["definitions"])
            .query(&[("file", &file)])
            .header(reqwest::header::CONTENT_TYPE, "application/yaml")
            .body(source);
        match client.send(request).await {
            Ok((status, view)) => {
                for warning in view["warnings"].as_array().map(Vec::as_slice).unwrap_or_default() {
                    let code = warning["code"].as_str().map(|c| format!("[{c}]")).unwrap_or_default();
                    let position = match (warning["line"].as_u64(), warning["column"].as_u64()) {
                        (Some(line), Some(column)) => format!(":{line}:{column}"),
                        _ => String::new(),
                    };
                    eprintln!("{file}{position}: warning{code}: {}", cell(&warning["message"]));
                }
                match api.output {
                    Output::Json => emit_json(&view)?,
                    Output::Table if status == StatusCode::CREATED => {
                        write_out(&format!("{}: deployed (new)", cell(&view["key"])))?
                    }
                    Output::Table => write_out(&format!("{}: already deployed, unchanged", cell(&view["key"])))?,
                }
            }
            // A definition's own refusals; the other files are still tried.
            Err(Failure::Refused(problem))
                if problem.status == StatusCode::UNPROCESSABLE_ENTITY.as_u16()
                    || problem.status == StatusCode::CONFLICT.as_u16() =>
            {
                report(&problem, Some(&file), api);
                refused += 1;
            }
            Err(other) => return Err(other),
        }
    }
    Ok(if refused == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

async fn workflow(api: &Api, command: WorkflowCommand) -> Outcome<ExitCode> {
    let client = Client::new(api)?;
    match command {
        WorkflowCommand::Start { definition, input, id, idempotency_key, business_key, tags } => {
            let mut body = Map::new();
            body.insert("definition".into(), Value::String(definition.clone()));
            if let Some(input) = input {
                body.insert("input".into(), json_argument("--input", &input)?);
            }
            for (key, value) in [("id", id), ("idempotencyKey", idempotency_key.clone()), ("businessKey", business_key)]
            {
                if let Some(value) = value {
                    body.insert(key.into(), Value::String(value));
                }
            }
            if !tags.is_empty() {
                body.insert("tags".into(), json!(tags));
            }
            let (_, answer) = client.post(&["instances"], Some(&Value::Object(body))).await?;
            match api.output {
                Output::Json => emit_json(&answer)?,
                Output::Table if answer["created"] == Value::Bool(false) => write_out(&format!(
                    "{} already started with idempotency key {}",
                    cell(&answer["id"]),
                    idempotency_key.unwrap_or_default()
                ))?,
                Output::Table => write_out(&format!("started {} ({definition})", cell(&answer["id"])))?,
            }
        }
        WorkflowCommand::Describe { id } => {
            let detail = client.get(&["instances", &id], &[]).await?;
            match api.output {
                Output::Json => emit_json(&detail)?,
                Output::Table => write_out(&describe(&detail))?,
            }
        }
        WorkflowCommand::History { id, limit, all, after } => {
            let mut page = client.get(&["instances", &id, "history"], &paging(limit, after.clone())).await?;
            if all {
                let mut events = items(&page).to_vec();
                while let Some(next) = page["next"].as_str().map(str::to_owned) {
                    page = client.get(&["instances", &id, "history"], &paging(limit, Some(next))).await?;
                    events.extend_from_slice(items(&page));
                }
                page = json!({ "items": events });
            }
            match api.output {
                Output::Json => emit_json(&page)?,
                Output::Table => {
                    let rows: Vec<Vec<String>> = items(&page)
                        .iter()
                        .map(|e| vec![cell(&e["seq"]), time(&e["at"]), cell(&e["type"]), actor(&e["actor"])])
                        .collect();
                    write_out(&table(&["SEQ", "AT", "TYPE", "ACTOR"], &rows))?;
                    more(&page);
                }
            }
        }
        WorkflowCommand::List { search, limit, after } => {
            let mut query = search.fields().to_vec();
            query.extend([("limit", limit.map(|l| l.to_string())), ("after", after)]);
            let page = client.get(&["instances"], &query).await?;
            match api.output {
                Output::Json => emit_json(&page)?,
                Output::Table => {
                    let rows: Vec<Vec<String>> = items(&page)
                        .iter()
                        .map(|i| {
                            vec![
                                cell(&i["id"]),
                                cell(&i["definition"]),
                                cell(&i["version"]),
                                cell(&i["status"]),
                                cell(&i["businessKey"]),
                                time(&i["createdAt"]),
                            ]
                        })
                        .collect();
                    write_out(&table(&["ID", "DEFINITION", "VERSION", "STATUS", "BUSINESS KEY", "CREATED"], &rows))?;
                    more(&page);
                }
            }
        }
        WorkflowCommand::Signal { id, event_id, event } => send_event(api, &id, event_id, &event).await?,
        WorkflowCommand::Suspend { id, reason } => operate(api, &client, &id, "suspend", "suspended", reason).await?,
        WorkflowCommand::Resume { id, reason } => operate(api, &client, &id, "resume", "resumed", reason).await?,
        WorkflowCommand::Terminate { id, reason } => {
            operate(api, &client, &id, "terminate", "terminated", reason).await?
        }
        WorkflowCommand::Bulk { action, search, reason, dry_run } => {
            let filter: Map<String, Value> = search
                .fields()
                .into_iter()
                .filter_map(|(name, value)| Some((name.to_owned(), Value::String(value?))))
                .collect();
            let request =
                json!({"action": action, "filter": filter, "reason": reason.unwrap_or_default(), "dryRun": dry_run});
            return bulk(&client, api.output, request).await;
        }
        WorkflowCommand::Retry { id, input, reason } => {
            let mut body = json!({ "reason": reason });
            if let Some(input) = input {
                body["input"] = json_argument("--input", &input)?;
            }
            resolve_incidents(&client, api, &id, "retry", "retried", body).await?;
        }
        WorkflowCommand::Complete { id, result, reason } => {
            let result = result.map(|r| json_argument("--result", &r)).transpose()?.unwrap_or(Value::Null);
            let body = json!({ "reason": reason, "result": result });
            resolve_incidents(&client, api, &id, "complete", "completed by hand", body).await?;
        }
        WorkflowCommand::Migrate { id, to, mapping, reason, dry_run } => {
            let mut pairs = Map::new();
            for entry in &mapping {
                let Some((old, new)) = entry.split_once('=') else {
                    return Err(anyhow::anyhow!("--map {entry}: write it OLD=NEW").into());
                };
                pairs.insert(old.trim().to_owned(), Value::String(new.trim().to_owned()));
            }
            let body = json!({ "to": to, "mapping": pairs, "reason": reason, "dryRun": dry_run });
            let (_, answer) = client.post(&["instances", &id, "migrate"], Some(&body)).await?;
            match api.output {
                Output::Json => emit_json(&answer)?,
                Output::Table => {
                    let verb = if dry_run { "would move" } else { "moved" };
                    let mut text = format!("{verb} {id} from {} to {}", cell(&answer["from"]), cell(&answer["to"]));
                    for moved in answer["moved"].as_array().into_iter().flatten() {
                        text.push_str(&format!("\n  {} -> {}", cell(&moved["from"]), cell(&moved["to"])));
                    }
                    write_out(&text)?;
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Resolves every open incident of instance `id` with `action` (`retry`, `complete`) and
/// `body`, and reports them.
async fn resolve_incidents(client: &Client, api: &Api, id: &str, action: &str, done: &str, body: Value) -> Outcome<()> {
    let incidents = client.get(&["incidents"], &[("instance", Some(id.to_owned()))]).await?;
    let mut resolved = Vec::new();
    for incident in incidents.as_array().map(Vec::as_slice).unwrap_or_default() {
        let number = cell(&incident["id"]);
        client.post(&["incidents", &number, action], Some(&body)).await?;
        resolved.push(incident["id"].clone());
    }
    match api.output {
        Output::Json => emit_json(&json!({ "instance": id, "incidents": resolved }))?,
        Output::Table if resolved.is_empty() => write_out(&format!("{id} has no open incident"))?,
        Output::Table => write_out(&format!(
            "{done} {} incident{} of {id}",
            resolved.len(),
            if resolved.len() == 1 { "" } else { "s" }
        ))?,
    }
    Ok(())
}

/// Starts a bulk job and follows it with a progress bar on stderr until it finishes.
async fn bulk(client: &Client, output: Output, request: Value) -> Outcome<ExitCode> {
    let dry_run = request["dryRun"] == true;
    let (_, answer) = client.post(&["bulk"], Some(&request)).await?;
    if dry_run {
        match output {
            Output::Json => emit_json(&answer)?,
            Output::Table => {
                let sample: Vec<String> = answer["sample"].as_array().into_iter().flatten().map(cell).collect();
                write_out(&format!(
                    "would {} {} instances: {}",
                    cell(&answer["action"]),
                    cell(&answer["matched"]),
                    sample.join(" ")
                ))?;
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let id = cell(&answer["id"]);
    let mut job = answer;
    loop {
        let (total, done, failed) = (
            job["matched"].as_u64().unwrap_or(0),
            job["done"].as_u64().unwrap_or(0),
            job["failed"].as_u64().unwrap_or(0),
        );
        if output == Output::Table {
            let width = 30u64;
            let filled = (done + failed).saturating_mul(width).checked_div(total).unwrap_or(width);
            let bar = format!("{}{}", "#".repeat(filled as usize), ".".repeat((width - filled.min(width)) as usize));
            eprint!("\r[{bar}] {}/{total} done, {failed} failed", done + failed);
        }
        if job["finished"] == true {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        job = client.get(&["bulk", &id], &[]).await?;
    }
    match output {
        Output::Json => emit_json(&job)?,
        Output::Table => {
            eprintln!();
            for failure in job["failures"].as_array().into_iter().flatten() {
                eprintln!("  {}: {}", cell(&failure["instance"]), cell(&failure["reason"]));
            }
            write_out(&format!(
                "{}: {} done, {} failed",
                cell(&job["action"]),
                cell(&job["done"]),
                cell(&job["failed"])
            ))?;
        }
    }
    Ok(if job["failed"].as_u64().unwrap_or(0) == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn paging(limit: Option<u32>, after: Option<String>) -> [(&'static str, Option<String>); 2] {
    [("limit", limit.map(|l| l.to_string())), ("after", after)]
}

/// Who caused an event: a person's or a worker's id, or `system`.
fn actor(value: &Value) -> String {
    match (value["kind"].as_str(), value["id"].as_str()) {
        (Some("user"), Some(id)) => id.to_owned(),
        (Some(kind), Some(id)) => format!("{kind}:{id}"),
        (Some(kind), None) => kind.to_owned(),
        _ => cell(value),
    }
}

/// An instance as `workflow describe` shows it.
fn describe(detail: &Value) -> String {
    let instance = &detail["instance"];
    let tags: Vec<String> = instance["tags"].as_array().map(|t| t.iter().map(cell).collect()).unwrap_or_default();
    let mut fields = vec![
        ("id", cell(&instance["id"])),
        ("definition", format!("{}@{}", cell(&instance["definition"]), cell(&instance["version"]))),
        ("status", cell(&instance["status"])),
    ];
    for (name, key) in [("business key", "businessKey"), ("idempotency", "idempotencyKey"), ("parent", "parent")] {
        if !instance[key].is_null() {
            fields.push((name, cell(&instance[key])));
        }
    }
    if !tags.is_empty() {
        fields.push(("tags", tags.join(", ")));
    }
    fields.push(("created", time(&instance["createdAt"])));
    fields.push(("updated", time(&instance["updatedAt"])));
    if !instance["result"].is_null() {
        fields.push(("result", instance["result"].to_string()));
    }
    let mut text: String = fields.iter().map(|(name, value)| format!("{name:<13}{value}\n")).collect();
    let list = |key: &str| detail[key].as_array().map(Vec::as_slice).unwrap_or_default();
    if !list("humanTasks").is_empty() {
        text.push_str("\nhuman tasks\n");
        text.push_str(&task_table(list("humanTasks")));
    }
    if !list("activities").is_empty() {
        text.push_str("\nactivities\n");
        let rows: Vec<Vec<String>> = list("activities")
            .iter()
            .map(|a| {
                let state = if a["parked"] == Value::Bool(true) { "parked".to_owned() } else { "scheduled".to_owned() };
                vec![cell(&a["seq"]), cell(&a["name"]), state, cell(&a["attempt"]), cell(&a["lastError"])]
            })
            .collect();
        text.push_str(&table(&["SEQ", "ACTIVITY", "STATE", "ATTEMPTS", "LAST ERROR"], &rows));
    }
    if !list("timers").is_empty() {
        text.push_str("\ntimers\n");
        let rows: Vec<Vec<String>> = list("timers").iter().map(|t| vec![cell(&t["seq"]), time(&t["dueAt"])]).collect();
        text.push_str(&table(&["SEQ", "DUE"], &rows));
    }
    if !list("incidents").is_empty() {
        text.push_str("\nincidents (baton workflow retry retries them)\n");
        let rows: Vec<Vec<String>> = list("incidents")
            .iter()
            .map(|i| vec![cell(&i["id"]), cell(&i["kind"]), time(&i["createdAt"]), cell(&i["reason"])])
            .collect();
        text.push_str(&table(&["ID", "KIND", "SINCE", "REASON"], &rows));
    }
    text
}

/// Human tasks in columns: reference, title, status, owner, due, department.
fn task_table(tasks: &[Value]) -> String {
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|row| {
            let task = &row["task"];
            let reference = match row["reference"].as_str() {
                Some(reference) => reference.to_owned(),
                None => format!("{}:{}", cell(&row["instance"]), cell(&row["seq"])),
            };
            vec![
                reference,
                cell(&task["spec"]["title"]),
                cell(&task["status"]),
                owner(task),
                time(&task["spec"]["dueAt"]),
                cell(&task["spec"]["department"]),
            ]
        })
        .collect();
    table(&["REFERENCE", "TITLE", "STATUS", "OWNER", "DUE", "DEPARTMENT"], &rows)
}

fn owner(task: &Value) -> String {
    match (task["assignee"].as_str(), task["delegate"].as_str()) {
        (Some(owner), Some(delegate)) => format!("{owner} (delegated to {delegate})"),
        (Some(owner), None) => owner.to_owned(),
        (None, _) => "-".to_owned(),
    }
}

/// Suspends, resumes or terminates an instance.
async fn operate(
    api: &Api,
    client: &Client,
    id: &str,
    operation: &str,
    done: &str,
    reason: Option<String>,
) -> Outcome<()> {
    let body = reason.map(|reason| json!({ "reason": reason }));
    client.post(&["instances", id, operation], body.as_ref()).await?;
    match api.output {
        Output::Json => emit_json(&json!({ "id": id, "done": operation }))?,
        Output::Table => write_out(&format!("{done} {id}"))?,
    }
    Ok(())
}

/// Sends one structured CloudEvent to an instance (`workflow signal` and `event send`).
async fn send_event(api: &Api, instance: &str, event_id: Option<String>, event: &EventArgs) -> Outcome<()> {
    let client = Client::new(api)?;
    let id = event_id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let mut body = json!({
        "specversion": "1.0",
        "id": id,
        "type": event.kind,
        "source": event.source,
        "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    });
    if let Some(data) = &event.data {
        body["datacontenttype"] = json!("application/json");
        body["data"] = json_argument("--data", data)?;
    }
    let request = client
        .request(Method::POST, &["instances", instance, "events"])
        .header(reqwest::header::CONTENT_TYPE, "application/cloudevents+json")
        .body(body.to_string());
    let (_, answer) = client.send(request).await?;
    match api.output {
        Output::Json => emit_json(&answer)?,
        Output::Table if answer["duplicates"].as_u64().unwrap_or(0) > 0 => {
            write_out(&format!("event {id} reached {instance} before: ignored as a duplicate"))?
        }
        Output::Table => write_out(&format!("event {id} ({}) delivered to {instance}", event.kind))?,
    }
    Ok(())
}

async fn task(api: &Api, command: TaskCommand) -> Outcome<ExitCode> {
    let client = Client::new(api)?;
    match command {
        TaskCommand::List { assignee, role, department, status, instance, limit, after } => {
            let query = [
                ("assignee", assignee),
                ("role", role),
                ("department", department),
                ("status", status),
                ("instance", instance),
                ("limit", limit.map(|l| l.to_string())),
                ("after", after),
            ];
            let page = client.get(&["tasks"], &query).await?;
            match api.output {
                Output::Json => emit_json(&page)?,
                Output::Table => {
                    write_out(&task_table(items(&page)))?;
                    more(&page);
                }
            }
        }
        TaskCommand::Claim { reference } => {
            let (instance, seq) = split_reference(&reference)?;
            let (_, row) = client.post(&["tasks", instance, seq, "claim"], None).await?;
            task_done(api, &row, &format!("claimed {reference}: {}", cell(&row["task"]["spec"]["title"])))?;
        }
        TaskCommand::Complete { reference, outcome, data, on_behalf_of } => {
            let (instance, seq) = split_reference(&reference)?;
            let mut body = json!({ "outcome": outcome });
            if let Some(data) = data {
                body["data"] = json_argument("--data", &data)?;
            }
            if let Some(person) = on_behalf_of {
                body["onBehalfOf"] = json!(person);
            }
            let (_, row) = client.post(&["tasks", instance, seq, "complete"], Some(&body)).await?;
            task_done(api, &row, &format!("completed {reference} with {outcome}"))?;
        }
        TaskCommand::Delegate { reference, to } => {
            let (instance, seq) = split_reference(&reference)?;
            let (_, row) = client.post(&["tasks", instance, seq, "delegate"], Some(&json!({ "to": to }))).await?;
            task_done(api, &row, &format!("delegated {reference} to {to}"))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn task_done(api: &Api, row: &Value, message: &str) -> anyhow::Result<()> {
    match api.output {
        Output::Json => emit_json(row),
        Output::Table => write_out(message),
    }
}

/// `instance:seq` (the instance's id may hold colons; the sequence number is the last part).
fn split_reference(reference: &str) -> anyhow::Result<(&str, &str)> {
    reference
        .rsplit_once(':')
        .filter(|(instance, seq)| !instance.is_empty() && seq.parse::<u64>().is_ok())
        .with_context(|| format!("{reference:?} is not a task reference (instance:seq, as `baton task list` shows)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_their_columns() {
        let rows = vec![
            vec!["a".to_owned(), "long cell".to_owned(), "x".to_owned()],
            vec!["bbbb".to_owned(), "-".to_owned(), "y".to_owned()],
        ];
        assert_eq!(table(&["ID", "NAME", "Z"], &rows), "ID    NAME       Z\na     long cell  x\nbbbb  -          y\n");
    }

    #[test]
    fn references_split_at_the_last_colon() {
        assert_eq!(split_reference("order:42:7").expect("a reference"), ("order:42", "7"));
        assert!(split_reference("order").is_err());
        assert!(split_reference("order:x").is_err());
        assert!(split_reference(":7").is_err());
    }

    #[test]
    fn addresses_are_forgiving_and_paths_encoded() {
        let api = |address: &str| Api { address: address.to_owned(), token: None, output: Output::Table };
        let client = Client::new(&api("127.0.0.1:8080/api/v1/")).expect("an address");
        assert_eq!(client.url(&["instances", "a/b c"]).as_str(), "http://127.0.0.1:8080/api/v1/instances/a%2Fb%20c");
        let client = Client::new(&api("https://baton.example/base")).expect("an address");
        assert_eq!(client.url(&["tasks"]).as_str(), "https://baton.example/base/api/v1/tasks");
        assert!(matches!(Client::new(&api("ftp://x")), Err(Failure::Unreachable { .. })));
    }

    #[test]
    fn times_show_to_the_second() {
        assert_eq!(time(&json!("2025-03-01T08:30:00.123Z")), "2025-03-01 08:30:00Z");
        assert_eq!(time(&json!(0)), "1970-01-01 00:00:00Z");
        assert_eq!(time(&Value::Null), "-");
    }
}
