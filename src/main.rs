//! `baton`: the command line. A thin layer that wires the library crates together.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[cfg(unix)]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod bench;
mod client_cmd;
mod diagram_cmd;
mod directory_cmd;
mod people;
mod retention;
mod run_cmd;
mod server_cmd;
mod store_url;
mod telemetry;
mod validate;
mod worker_cmd;

#[derive(Debug, Parser)]
#[command(name = "baton", version, about = "Baton: a durable workflow engine driven by declarative YAML")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log filter (RUST_LOG syntax); logs go to stderr.
    #[arg(long, global = true, env = "RUST_LOG", default_value = "warn")]
    log: String,
    /// `text`, or `json` for one JSON object per log line.
    #[arg(long, global = true, env = "BATON_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check definitions: the schema, the flow between tasks, expressions, durations and the
    /// functions they call; every problem is reported with its position.
    Validate(validate::ValidateArgs),
    /// Draw a definition's flow: SVG, or Mermaid text (`--format mermaid`).
    Diagram(diagram_cmd::DiagramArgs),
    /// Run one instance of a definition to its end and print its output (simulated time,
    /// events and activity results given on the command line).
    Run(run_cmd::RunArgs),
    /// Reload a stored instance, replay its history, and report its state or the first
    /// nondeterminism.
    Replay(ReplayArgs),
    /// Documents signed by the engine (`baton.document.sign`).
    Document {
        #[command(subcommand)]
        command: DocumentCommand,
    },
    /// Run a benchmark workload and report its figures.
    Bench(bench::BenchArgs),
    /// The organisation's directory: import it from YAML, show a person, list people.
    Directory(directory_cmd::DirectoryArgs),
    /// Serve the HTTP API on a store, with the engine and its background work.
    Server(server_cmd::ServerArgs),
    /// A development server: a local SQLite store, the definitions/ folder deployed, a demo
    /// organisation with a few requests on a new store, the web UI's development login, and
    /// tokens printed for an admin, a designer and an ops engineer.
    Dev(server_cmd::DevArgs),
    /// A remote worker: runs activities as commands for a server, over its gRPC API.
    Worker(worker_cmd::WorkerArgs),
    #[command(flatten)]
    Client(client_cmd::ClientCommand),
    /// Administration of a store.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Debug, clap::Args)]
struct ReplayArgs {
    /// The instance to replay.
    instance: String,
    /// The store, e.g. sqlite:///var/lib/baton/baton.db
    #[arg(long, env = "BATON_STORE")]
    store: String,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// A workflow definition (YAML or JSON) the instance may run; repeat for more.
    #[arg(long = "definition")]
    definitions: Vec<std::path::PathBuf>,
    /// The definitions were run with processes allowed (`baton run --allow-processes`).
    #[arg(long)]
    allow_processes: bool,
    /// The shared business calendars the definitions' SLAs were run with (`baton run
    /// --calendars`).
    #[arg(long)]
    calendars: Option<std::path::PathBuf>,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// The manual clock of a store run with `--clock manual`.
    Clock {
        #[command(subcommand)]
        command: ClockCommand,
    },
    /// Write a consistent copy of a SQLite store while its engine runs.
    Backup {
        /// The file to write (must not exist).
        target: std::path::PathBuf,
        #[arg(long, env = "BATON_STORE")]
        store: String,
    },
    /// Put a backup in place as a store: the backup is opened and every history's hash chain
    /// checked first. The target must not exist (no engine can be using it).
    Restore {
        /// A file written by `baton admin backup`.
        backup: std::path::PathBuf,
        /// Where the restored store goes.
        #[arg(long)]
        to: std::path::PathBuf,
    },
    /// Delete ended (completed or cancelled) instances and everything kept for them: those of
    /// a definition, ended longer ago than a period. Faulted and running instances stay.
    Purge {
        /// `namespace/name`; every definition when absent.
        #[arg(long)]
        definition: Option<String>,
        /// Only instances ended longer ago than this (ISO 8601, P90D, or 90d).
        #[arg(long)]
        older_than: String,
        /// At most this many (default 1000, at most 10000).
        #[arg(long, default_value_t = 1000)]
        limit: u32,
        /// Name them; delete nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long, env = "BATON_STORE")]
        store: String,
    },
    /// Erase a person's personal data (GDPR): the form data of tasks they completed or that
    /// were completed for them and their comments, in ended instances' histories (the chain
    /// still verifies) and read models, their notifications, their directory entry but the id.
    /// Refused while instances not ended hold some of it (run with --dry-run to list them).
    Erase {
        /// The person's directory id.
        person: String,
        /// Why (the request's reference), kept in the audit trail.
        #[arg(long)]
        reason: String,
        /// Report what would be erased and what blocks it; change nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long, env = "BATON_STORE")]
        store: String,
        /// The report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The audit trail of erasures: who erased whose data, when, why, and how much.
    Erasures {
        /// Only this person's.
        person: Option<String>,
        #[arg(long, env = "BATON_STORE")]
        store: String,
    },
    /// Rebuild every read model (instance rows, human tasks, SLA clocks) of every instance (or
    /// of those named) from its history and compare it with the stored one; exit code 1 when
    /// one differs. `--apply` writes the rebuilt rows over the differing ones.
    RebuildProjections {
        instances: Vec<String>,
        #[arg(long, env = "BATON_STORE")]
        store: String,
        #[arg(long)]
        apply: bool,
        /// One JSON object per instance.
        #[arg(long)]
        json: bool,
    },
    /// Check the hash chain of every instance's history (or of the instances named): an edited
    /// or missing event is named by its instance and sequence number. Exit code 1 when one is.
    Verify {
        /// Instances to check; all of them when none is named.
        instances: Vec<String>,
        #[arg(long, env = "BATON_STORE")]
        store: String,
        /// One JSON object per instance checked.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum DocumentCommand {
    /// Check that a document file is the one the engine signed: its SHA-256 and the signature
    /// (exit code 1 when either does not match).
    Verify {
        /// The document (as stored or printed from the store).
        file: std::path::PathBuf,
        /// The signature `baton.document.sign` returned (base64).
        #[arg(long)]
        signature: String,
        /// The engine's public key (base64); without it, the one of --key.
        #[arg(long)]
        public_key: Option<String>,
        /// The engine's signing key file (`[documents] key`).
        #[arg(long, default_value = ".baton/document-key.der")]
        key: std::path::PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum ClockCommand {
    /// Move simulated time forward by an ISO 8601 duration (PT1H, P2D) or a friendly one (1h 30m).
    Advance {
        duration: String,
        #[arg(long, env = "BATON_STORE")]
        store: String,
    },
    /// Show the simulated time.
    Show {
        #[arg(long, env = "BATON_STORE")]
        store: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut builder = match &cli.command {
        Command::Bench(args) if args.runtime == bench::RuntimeKind::CurrentThread => {
            tokio::runtime::Builder::new_current_thread()
        }
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let telemetry = runtime.block_on(async { telemetry::Telemetry::init(&cli.log, cli.log_format == "json") });
    let code = match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    };
    // The last export runs beside the runtime, which drives its connection.
    let _ = runtime.block_on(async { tokio::task::spawn_blocking(move || telemetry.shutdown()).await });
    code
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Validate(args) => validate::run(&args),
        Command::Diagram(args) => diagram_cmd::run(&args),
        Command::Run(args) => run_cmd::run(args).await,
        Command::Replay(args) => replay(args).await,
        Command::Document { command: DocumentCommand::Verify { file, signature, public_key, key } } => {
            verify_document(&file, &signature, public_key, &key)
        }
        Command::Bench(args) => bench::run(args).await,
        Command::Directory(args) => directory_cmd::run(args).await,
        Command::Server(args) => server_cmd::server(args).await.map(|()| ExitCode::SUCCESS),
        Command::Dev(args) => server_cmd::dev(args).await.map(|()| ExitCode::SUCCESS),
        Command::Worker(args) => worker_cmd::run(args).await.map(|()| ExitCode::SUCCESS),
        Command::Client(command) => client_cmd::run(command).await,
        Command::Admin { command: AdminCommand::Clock { command } } => clock(command).await,
        Command::Admin { command: AdminCommand::Verify { instances, store, json } } => {
            verify(instances, &store, json).await
        }
        Command::Admin { command: AdminCommand::Backup { target, store } } => backup(&store, &target).await,
        Command::Admin { command: AdminCommand::RebuildProjections { instances, store, apply, json } } => {
            rebuild_projections(instances, &store, apply, json).await
        }
        Command::Admin { command: AdminCommand::Purge { definition, older_than, limit, dry_run, store } } => {
            purge(&store, definition, &older_than, limit, dry_run).await
        }
        Command::Admin { command: AdminCommand::Restore { backup, to } } => restore(&backup, &to).await,
        Command::Admin { command: AdminCommand::Erase { person, reason, dry_run, store, json } } => {
            erase(&store, person, reason, dry_run, json).await
        }
        Command::Admin { command: AdminCommand::Erasures { person, store } } => erasures(&store, person).await,
    }
}

async fn replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let store = store_url::open(&args.store).await?;
    let mut replayer = bench::known_orchestrations(baton_engine::replay::Replayer::new());
    let options = baton_workflows::model::CompileOptions { processes: args.allow_processes };
    let calendars = args.calendars.as_deref().map(run_cmd::load_calendars).transpose()?.unwrap_or_default();
    for path in &args.definitions {
        let file = path.display().to_string();
        let source = std::fs::read_to_string(path).with_context(|| format!("cannot read {file}"))?;
        let program = baton_workflows::run::load_with(&source, &file, &options)?;
        let hash = baton_workflows::run::content_hash(&source);
        let workflow = baton_workflows::interp::Workflow::new(std::sync::Arc::new(program), hash)
            .with_calendars(calendars.clone());
        replayer = replayer.orchestration(workflow);
    }
    let id = baton_engine::InstanceId::new(args.instance);
    let report = replayer.replay(store.as_ref(), &id).await?;
    if args.json {
        write_out(&serde_json::to_string_pretty(&report)?)?;
    } else {
        let mut text = format!(
            "instance   {}\ndefinition {}\nstatus     {:?} (stored)\nhistory    {} events, {} replayed\n",
            report.instance, report.definition, report.status, report.events, report.replayed
        );
        if let Some(status) = report.replayed_status {
            text.push_str(&format!("replayed   {status:?}\n"));
        }
        if let Some(matches) = report.snapshot_matches {
            text.push_str(&format!(
                "snapshot   {}\n",
                if matches { "matches the replay" } else { "DIFFERS from the replay" }
            ));
        }
        match &report.error {
            Some(error) => text.push_str(&format!("problem    {error}\n")),
            None => text.push_str(&format!("state      {}\n", report.state.clone().unwrap_or_default())),
        }
        write_out(&text)?;
    }
    Ok(if report.error.is_some() || report.snapshot_matches == Some(false) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

async fn clock(command: ClockCommand) -> anyhow::Result<ExitCode> {
    match command {
        ClockCommand::Advance { duration, store } => {
            let by = parse_duration(&duration)?;
            let store = store_url::open(&store).await?;
            let offset = baton_engine::runtime::advance_persisted_clock(store.as_ref(), by).await?;
            let now = chrono::Utc::now() + chrono::Duration::milliseconds(offset);
            write_out(&format!("simulated time is now {} (offset {offset} ms)\n", now.to_rfc3339()))?;
        }
        ClockCommand::Show { store } => {
            let store = store_url::open(&store).await?;
            let mode = store.setting(baton_engine::runtime::CLOCK_MODE_KEY).await?.unwrap_or_else(|| "system".into());
            let offset: i64 =
                store.setting(baton_engine::runtime::CLOCK_OFFSET_KEY).await?.and_then(|v| v.parse().ok()).unwrap_or(0);
            let now = chrono::Utc::now() + chrono::Duration::milliseconds(offset);
            write_out(&format!("clock {mode}, offset {offset} ms, simulated time {}\n", now.to_rfc3339()))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn backup(store: &str, target: &std::path::Path) -> anyhow::Result<ExitCode> {
    let sqlite = store_url::open_sqlite(store).await?;
    sqlite.backup(target).await.with_context(|| format!("cannot back up {store} to {}", target.display()))?;
    sqlite.close().await;
    write_out(&format!("backed up {store} to {}", target.display()))?;
    Ok(ExitCode::SUCCESS)
}

async fn restore(backup: &std::path::Path, to: &std::path::Path) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(backup.is_file(), "{} is not a file", backup.display());
    anyhow::ensure!(
        !to.exists(),
        "{} exists: restore into a new path, then move it into place with the engine stopped",
        to.display()
    );
    // Check the copy before it becomes a store: every history must hold together.
    let staged = to.with_extension("restoring");
    std::fs::copy(backup, &staged).with_context(|| format!("cannot copy {}", backup.display()))?;
    let sqlite = store_url::open_sqlite(&staged.display().to_string()).await?;
    let broken = broken_histories(&sqlite).await;
    // Closing checkpoints the write-ahead log into the file, which then stands alone.
    sqlite.close().await;
    match broken {
        Ok(0) => {}
        Ok(n) => {
            let _ = std::fs::remove_file(&staged);
            anyhow::bail!("{} has {n} broken histories; nothing was restored", backup.display());
        }
        Err(err) => {
            let _ = std::fs::remove_file(&staged);
            return Err(err);
        }
    }
    std::fs::rename(&staged, to).with_context(|| format!("cannot move the restored store to {}", to.display()))?;
    write_out(&format!("restored {} to {}", backup.display(), to.display()))?;
    Ok(ExitCode::SUCCESS)
}

/// How many instances of a store have a broken hash chain.
async fn broken_histories(store: &dyn baton_engine::Store) -> anyhow::Result<usize> {
    let mut broken = 0;
    for id in all_instances(store).await? {
        broken += usize::from(baton_engine::replay::verify(store, &id).await?.broken.is_some());
    }
    Ok(broken)
}

/// Every instance id of a store, page by page.
async fn all_instances(store: &dyn baton_engine::Store) -> anyhow::Result<Vec<baton_engine::InstanceId>> {
    use baton_engine::store::InstanceFilter;
    let mut ids = Vec::new();
    let mut after = None;
    loop {
        let filter =
            InstanceFilter { after: after.clone(), limit: InstanceFilter::MAX_LIMIT, ..InstanceFilter::default() };
        let page = store.list_instances(&filter).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        ids.extend(page.into_iter().map(|row| row.id));
    }
    Ok(ids)
}

/// The instances named, or every instance of the store when none is.
async fn named_or_all(
    store: &dyn baton_engine::Store,
    instances: Vec<String>,
) -> anyhow::Result<Vec<baton_engine::InstanceId>> {
    if instances.is_empty() {
        return all_instances(store).await;
    }
    Ok(instances.into_iter().map(baton_engine::InstanceId::new).collect())
}

/// Rebuilds the read models of instances from their histories with the definitions deployed
/// in the store (and the built-in test programs), and reports where the stored rows differ.
async fn rebuild_projections(instances: Vec<String>, store: &str, apply: bool, json: bool) -> anyhow::Result<ExitCode> {
    let store = store_url::open(store).await?;
    let mut replayer = bench::known_orchestrations(baton_engine::replay::Replayer::new());
    let options = baton_api::ApiOptions::default();
    for workflow in baton_api::app::stored_definitions(store.as_ref(), &options).await? {
        replayer = replayer.orchestration(workflow);
    }
    let ids = named_or_all(store.as_ref(), instances).await?;
    let (mut differing, mut failed) = (0usize, 0usize);
    for id in &ids {
        let rebuilt = replayer.rebuild_projections(store.as_ref(), id, apply).await?;
        if json {
            write_out(&serde_json::to_string(&rebuilt)?)?;
        } else if let Some(error) = &rebuilt.error {
            write_out(&format!("{id}: cannot rebuild: {error}"))?;
        } else if rebuilt.erased {
            write_out(&format!("{id}: personal data erased from its history; left as it is"))?;
        } else {
            for difference in &rebuilt.differences {
                write_out(&format!("{id}: {difference}"))?;
            }
            if rebuilt.applied {
                write_out(&format!("{id}: rebuilt from history"))?;
            }
        }
        differing += usize::from(!rebuilt.differences.is_empty());
        failed += usize::from(rebuilt.error.is_some());
    }
    if !json {
        let fixed = if apply { ", rewritten from history" } else { "" };
        write_out(&format!(
            "{} instances rebuilt from history: {} equal to the store, {differing} differing{fixed}, {failed} not rebuilt",
            ids.len(),
            ids.len() - differing - failed
        ))?;
    }
    // The read models of domain events, from every instance's history: first everything the
    // outbox holds is applied, so that the live rows are complete.
    let projector = baton_engine::projection::Projector::new(
        Arc::clone(&store),
        Arc::new(baton_engine::SystemClock),
        baton_activities::read_models::training_projections(),
    );
    projector.catch_up().await?;
    let everyone = all_instances(store.as_ref()).await?;
    let models = baton_engine::projection::rebuild(
        store.as_ref(),
        &baton_engine::SystemClock,
        projector.projections(),
        &everyone,
        apply,
    )
    .await?;
    for model in &models {
        if json {
            write_out(&serde_json::to_string(model)?)?;
            continue;
        }
        let kept = if model.kept.is_empty() {
            String::new()
        } else {
            format!("; {} kept that history no longer derives (purged instances)", model.kept.len())
        };
        let state = if model.is_equal() {
            "equal to the store".to_owned()
        } else {
            let fixed = if model.applied { ", rewritten from history" } else { "" };
            format!("{} differing, {} missing{fixed}", model.differing.len(), model.missing.len())
        };
        write_out(&format!("read model {}: {} rows from history, {state}{kept}", model.projection, model.rows))?;
    }
    let models_differ = models.iter().any(|model| !model.is_equal());
    Ok(if differing == 0 && failed == 0 && !models_differ { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

async fn verify(instances: Vec<String>, store: &str, json: bool) -> anyhow::Result<ExitCode> {
    let store = store_url::open(store).await?;
    let ids = named_or_all(store.as_ref(), instances).await?;
    let (mut events, mut erased, mut broken) = (0u64, 0u64, 0usize);
    for id in &ids {
        let verified = baton_engine::replay::verify(store.as_ref(), id).await?;
        events += verified.events;
        erased += verified.erased;
        if json {
            write_out(&serde_json::to_string(&verified)?)?;
        } else if let Some(b) = &verified.broken {
            write_out(&format!("BROKEN {} at seq {}: {}", verified.instance, b.seq, b.detail))?;
        }
        broken += usize::from(verified.broken.is_some());
    }
    if !json {
        let erased = if erased > 0 { format!(" ({erased} with erased personal data)") } else { String::new() };
        write_out(&format!("{} instances, {events} events checked{erased}: {broken} broken", ids.len()))?;
    }
    Ok(if broken == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Parses an ISO 8601 duration (`PT1H30M`, `P2D`) or a friendly one (`1h 30m`, `2 days`).
pub(crate) fn parse_duration(text: &str) -> anyhow::Result<std::time::Duration> {
    let span: jiff::Span =
        text.trim().parse().with_context(|| format!("{text:?} is not a duration (try PT1H or 2d)"))?;
    let signed = span
        .to_duration(jiff::SpanRelativeTo::days_are_24_hours())
        .with_context(|| format!("{text:?} cannot be turned into a fixed length"))?;
    anyhow::ensure!(!signed.is_negative(), "{text:?} is negative");
    Ok(signed.unsigned_abs())
}

async fn purge(
    store: &str,
    definition: Option<String>,
    older_than: &str,
    limit: u32,
    dry_run: bool,
) -> anyhow::Result<ExitCode> {
    let older_than = chrono::Duration::from_std(parse_duration(older_than)?)?;
    let store = store_url::open(store).await?;
    // A store run on the manual clock counts its offset too.
    let offset =
        store.setting(baton_engine::runtime::CLOCK_OFFSET_KEY).await?.and_then(|v| v.parse().ok()).unwrap_or(0);
    let now = chrono::Utc::now() + chrono::Duration::milliseconds(offset);
    let query = baton_engine::store::PurgeQuery { definition, ended_before: now - older_than, limit, dry_run };
    let ids = store.purge(&query).await?;
    let mut text: String = ids.iter().map(|id| format!("{id}\n")).collect();
    let verb = if dry_run { "would be purged" } else { "purged" };
    text.push_str(&format!("{} instance(s) {verb}\n", ids.len()));
    write_out(&text)?;
    Ok(ExitCode::SUCCESS)
}

async fn erase(store: &str, person: String, reason: String, dry_run: bool, json: bool) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(!reason.trim().is_empty(), "--reason names the request (it is kept in the audit trail)");
    let store = store_url::open(store).await?;
    let by = baton_engine::Actor::User { id: std::env::var("USER").unwrap_or_else(|_| "operator".into()) };
    let erasure = baton_engine::erasure::Erasure { person, by, reason: Some(reason), at: chrono::Utc::now(), dry_run };
    let report = match baton_engine::erasure::erase(store.as_ref(), &erasure).await {
        Ok(report) => report,
        Err(error @ baton_engine::EngineError::ErasureRefused { .. }) => {
            eprintln!("{error}\nrun with --dry-run to list them; terminate or finish them first");
            return Ok(ExitCode::FAILURE);
        }
        Err(error) => return Err(error.into()),
    };
    if json {
        write_out(&serde_json::to_string(&report)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut text = String::new();
    for id in &report.blocking {
        text.push_str(&format!("blocking (not ended): {id}\n"));
    }
    let verb = if report.applied { "erased" } else { "would be erased" };
    text.push_str(&format!(
        "{}: {} event(s) in {} ended instance(s), {} task(s), {} delivery(ies), {} in-app notification(s){} {verb}",
        report.person,
        report.events,
        report.instances.len(),
        report.tasks,
        report.deliveries,
        report.notifications,
        if report.directory { ", the directory entry" } else { "" },
    ));
    if report.kept_events > 0 {
        text.push_str(&format!(
            "\n{} event(s) of history schema 1 cannot be erased (purge their instances)",
            report.kept_events
        ));
    }
    write_out(&text)?;
    Ok(if report.blocking.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn verify_document(
    file: &std::path::Path,
    signature: &str,
    public_key: Option<String>,
    key: &std::path::Path,
) -> anyhow::Result<ExitCode> {
    use baton_activities::document::{sha256_hex, verify};
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let public_key = match public_key {
        Some(key) => key,
        None => {
            anyhow::ensure!(key.exists(), "no --public-key, and no signing key at {}", key.display());
            baton_activities::SigningKey::load_or_create(key).map_err(anyhow::Error::msg)?.public_key()
        }
    };
    let sha256 = sha256_hex(&bytes);
    if verify(&public_key, &sha256, signature) {
        write_out(&format!("valid: {} (SHA-256 {sha256}) is the document the engine signed", file.display()))?;
        Ok(ExitCode::SUCCESS)
    } else {
        write_out(&format!(
            "INVALID: the signature does not match {} (SHA-256 {sha256}) under this key",
            file.display()
        ))?;
        Ok(ExitCode::FAILURE)
    }
}

async fn erasures(store: &str, person: Option<String>) -> anyhow::Result<ExitCode> {
    let store = store_url::open(store).await?;
    for record in store.erasures(person.as_deref()).await? {
        write_out(&serde_json::to_string(&record)?)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes to stdout (data goes to stdout, logs to stderr).
fn write_out(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    if !text.ends_with('\n') {
        out.write_all(b"\n")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations_iso_and_friendly() {
        assert_eq!(parse_duration("PT1H").expect("iso").as_secs(), 3_600);
        assert_eq!(parse_duration("P2D").expect("days").as_secs(), 172_800);
        assert_eq!(parse_duration("1h 30m").expect("friendly").as_secs(), 5_400);
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-PT1H").is_err());
    }
}
