//! `baton bench`: the workloads of docs/PERFORMANCE (W1 throughput and latency, W2 approvals,
//! W3 timers, reload, loop; and for people and deadlines, open human tasks with SLAs and their
//! inbox queries, and escalation rungs due at once), run against a real store with in-process
//! no-op activities.
//!
//! Every run gets a fresh engine on a fresh temporary SQLite file (unless `--store` names one)
//! and prints one report: with `--json` one JSON object per line, otherwise a short table.
//! Figures that do not apply to a workload are `null`. Nothing is left out of a figure: failed
//! instances and engine errors are counted in `errors` (and the exit status is a failure).
//!
//! Definitions used here:
//! - a **step** is one activity completion, committed durably before that instance's next
//!   activity is dispatched (the engine guarantees the order); `steps` is the engine's count of
//!   activity completions over the measured phase;
//! - `commits` is the engine's count of store transactions over the same phase;
//! - memory figures are MiB read from `/proc/self/status` (`VmRSS`, `VmHWM`); the peak is reset
//!   at the start of each run, so it is that run's peak. They are the whole process, the load
//!   generator included.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use baton_engine::directory::{Department, Directory, Organisation, Person};
use baton_engine::human::{InboxQuery, Principal, RoleGrant};
use baton_engine::program::{Op, Program};
use baton_engine::replay::Replayer;
use baton_engine::store::sqlite::{SqliteOptions, SqliteStore, Synchronous};
use baton_engine::store::{HistoryStore, NotificationStore, SlaQuery};
use baton_engine::{
    ActivityOptions, Actor, Clock, Engine, EngineOptions, InstanceId, InstanceStatus, ManualClock, Outcome, RaiseEvent,
    StartOptions, StatsSnapshot, Store,
};
use baton_workflows::interp::Workflow;
use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Value, json};
use tokio::task::JoinSet;

#[path = "bench_w4.rs"]
mod w4;

/// Definition names of the bench programs. Their content (and so their hash) must never depend
/// on the command line, so `baton replay` can replay any bench instance.
const W1: &str = "bench-w1";
const W2: &str = "bench-w2";
const W3: &str = "bench-w3";
const RELOAD: &str = "bench-reload";
const LOOP: &str = "bench-loop";
/// The loop workload's iterations, and how often it continues as new.
const LOOP_ITERATIONS: u64 = 100_000;
const LOOP_RUN_LENGTH: u64 = 1_000;
/// Iterations of the reload program: two events each, so 10,000 events (plus start and end).
const RELOAD_ITERATIONS: u64 = 5_000;
/// Starts in flight at once where a workload does not ask for "all at once" (W2, W3): twice the
/// default group-commit batch, so the core always has a full batch waiting.
const START_CONCURRENCY: usize = 4_000;
/// Cold loads timed per kind in the reload workload.
const RELOAD_REPETITIONS: usize = 21;
/// The first errors are logged in full; after that only counted.
const LOGGED_ERRORS: u64 = 5;
/// Definition keys of the people-and-deadlines workloads (the `document` of each YAML below).
const TASKS: &str = "bench/tasks@1.0.0";
const RUNGS: &str = "bench/rungs@1.0.0";
const BULK: &str = "training/bulk-assignment";
/// The shipped definition itself, so the figure is the one a deployment gets.
const BULK_YAML: &str = include_str!("../definitions/bulk-assignment.yaml");
/// The tasks workload: open tasks per department (the team leader's inbox), and most departments.
const TASKS_PER_DEPARTMENT: usize = 200;
const DEPARTMENTS: usize = 500;
/// Inbox queries timed per page size, and the page sizes.
const INBOX_QUERIES: usize = 2_000;
/// Unmeasured inbox queries before each timed series.
const INBOX_WARMUPS: usize = 20;
const INBOX_SMALL_PAGE: u32 = 50;
const INBOX_LARGE_PAGE: u32 = 200;
/// How often the rungs workload looks at the engine's counters while the rungs fire.
const RUNGS_POLL: Duration = Duration::from_millis(5);
/// The rungs workload gives up when no timer fired for this long.
const RUNGS_STALL: Duration = Duration::from_secs(60);

/// The tasks workload: one human task for the team leaders of the request's department, with an
/// 8-working-hour SLA on an office calendar and a three-rung ladder. Its text (and so its hash)
/// never depends on the command line.
const TASKS_YAML: &str = r#"document:
  dsl: '1.0.3'
  namespace: bench
  name: tasks
  version: '1.0.0'
use:
  calendars:
    office:
      timezone: Europe/Brussels
      hours: { mon-fri: ['09:00-17:00'] }
      holidays: [{ yearly: 12-25, name: Christmas }, { easter: 1, name: Easter Monday }]
do:
  - review:
      call: humanTask
      with:
        title: '${ "Review request \(.request) of \(.department)" }'
        assign: { role: team_leader, department: '${ .department }' }
        outcomes: [approve, reject]
        data: '${ . }'
      sla:
        within: PT8H
        calendar: office
        escalate:
          - after: 80%
            do:
              - dueSoon: { set: { escalation: due-soon } }
          - after: 100%
            do:
              - breached: { set: { escalation: breached } }
          - after: 200%
            do:
              - late: { set: { escalation: late } }
"#;

/// The rungs workload: one human task whose SLA has a single rung at 100% of one hour (no
/// calendar: every hour counts).
const RUNGS_YAML: &str = r#"document:
  dsl: '1.0.3'
  namespace: bench
  name: rungs
  version: '1.0.0'
do:
  - review:
      call: humanTask
      with:
        title: '${ "Review request \(.request)" }'
        assign: { role: team_leader, department: '${ .department }' }
      sla:
        within: PT1H
        escalate:
          - after: 100%
            do:
              - mark: { set: { escalated: true } }
"#;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// 10 sequential no-op activities, 500 instances started at once: steps/s, workflows/s.
    #[value(name = "w1")]
    W1,
    /// The W1 program, one instance at a time: p50/p99 start-to-completion latency.
    #[value(name = "w1-latency")]
    W1Latency,
    /// 10,000 instances waiting for an event: RSS while waiting, then completions/s once
    /// every event is raised.
    #[value(name = "w2")]
    W2,
    /// 100,000 instances on durable timers due at the same instant: RSS, timer lag.
    #[value(name = "w3")]
    W3,
    /// Cold load of an instance with 10,000 history events, with and without its snapshot.
    #[value(name = "reload")]
    Reload,
    /// A 100,000-iteration loop that continues as new every 1,000: memory stays bounded, and
    /// the instance still reloads fast at the end.
    #[value(name = "loop")]
    Loop,
    /// 100,000 open human tasks with SLAs, 200 per department: start time, RSS while all wait,
    /// store size; then inbox query latency for a team leader with 200 open tasks.
    #[value(name = "tasks")]
    Tasks,
    /// 10,000 escalation rungs due at the same simulated instant: time from the clock move to the
    /// last rung fired and recorded.
    #[value(name = "rungs")]
    Rungs,
    /// The shipped bulk assignment: one training assigned to 1,000 people (the instance
    /// count). Reports the time to the start's answer, when every assignment is durable (the
    /// target: under 1 s), and the time until all of them are notified (in-app, durable).
    #[value(name = "bulk")]
    Bulk,
    /// 500 simulated users on the HTTP API (inbox, open, claim, complete) plus 50 starts/s,
    /// the load generator in its own process; then an open-loop ramp to the saturation point.
    #[value(name = "w4")]
    W4,
    /// The load generator of w4 (started by w4 itself; its plan comes on stdin).
    #[value(name = "w4-load", hide = true)]
    W4Load,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Self::W1 => "w1",
            Self::W1Latency => "w1-latency",
            Self::W2 => "w2",
            Self::W3 => "w3",
            Self::Reload => "reload",
            Self::Loop => "loop",
            Self::Tasks => "tasks",
            Self::Rungs => "rungs",
            Self::Bulk => "bulk",
            Self::W4 => "w4",
            Self::W4Load => "w4-load",
        }
    }

    fn default_instances(self) -> usize {
        match self {
            Self::W1 => 500,
            Self::W1Latency => 200,
            Self::W2 => 10_000,
            Self::W3 | Self::Tasks => 100_000,
            Self::Rungs => 10_000,
            Self::Bulk => 1_000,
            Self::Reload | Self::Loop => 1,
            Self::W4 | Self::W4Load => 500,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RuntimeKind {
    #[value(name = "multi-thread")]
    MultiThread,
    #[value(name = "current-thread")]
    CurrentThread,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum WorkerKind {
    /// Activities run as in-process handlers.
    #[value(name = "in-process")]
    InProcess,
    /// Activities run in a separate worker process (not available yet).
    #[value(name = "remote")]
    Remote,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SyncMode {
    /// Every commit is fsynced before it returns: what every target means.
    #[value(name = "full")]
    Full,
    /// Opt-in, not power-loss safe: WAL commits are not fsynced; reported apart.
    #[value(name = "normal")]
    Normal,
}

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// The workload to run.
    #[arg(value_enum)]
    workload: Workload,
    /// The store, e.g. sqlite:///path/to/file.db (default: a fresh temporary SQLite file per
    /// run). A given store is reused by every run; its earlier instances stay in it.
    #[arg(long)]
    store: Option<String>,
    /// Where activities run.
    #[arg(long, value_enum, default_value = "in-process")]
    worker: WorkerKind,
    /// SQLite's synchronous mode. `normal` is not power-loss safe and only an explicit opt-in;
    /// the targets are meant with `full`.
    #[arg(long, value_enum, default_value = "full")]
    synchronous: SyncMode,
    /// Print one JSON object per run instead of a table.
    #[arg(long)]
    json: bool,
    /// The async runtime the engine (and the load generator) run on. SQLite has its own
    /// thread either way; `current-thread` saves the cross-thread wake-ups of the core loop.
    #[arg(long, value_enum, default_value = "multi-thread")]
    pub runtime: RuntimeKind,
    /// Instances (w1: started at once, default 500; w1-latency: measured runs, default 200;
    /// w2: default 10,000; w3: default 100,000; tasks: default 100,000, 200 per department;
    /// rungs: default 10,000). The reload and loop workloads have one instance.
    #[arg(long)]
    instances: Option<usize>,
    /// Runs, each on a fresh engine (and a fresh store unless --store is given).
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// w1-latency: unmeasured runs first.
    #[arg(long, default_value_t = 20)]
    warmups: usize,
    /// w3: the timers are due this many seconds after the first start (default: 10 s plus 1 s
    /// per 5,000 instances, which leaves time for the starts to finish).
    #[arg(long)]
    due_in_secs: Option<u64>,
    /// The engine's instance cache capacity (default: the engine's default).
    #[arg(long)]
    cache_capacity: Option<usize>,
    /// w4: the measured seconds of the closed loop (after a 10 s warm-up).
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Gives up on a run that has not finished after this many seconds.
    #[arg(long, default_value_t = 900)]
    timeout_secs: u64,
}

/// The W1 program: 10 sequential no-op activities.
fn w1_program() -> Program {
    Program::sequential(W1, "noop", 10)
}

/// The W2 program: wait for "approve", then one no-op activity.
fn w2_program() -> Program {
    Program::new(
        W2,
        vec![
            Op::WaitEvent { name: "approve".into() },
            Op::Activity { name: "noop".into(), options: ActivityOptions::default() },
        ],
    )
}

/// The W3 program: sleep until the instant (epoch ms) of the input field `due_ms`.
fn w3_program() -> Program {
    Program::new(W3, vec![Op::SleepUntilInput { field: "due_ms".into() }])
}

/// The reload program: a long loop of no-op activities that never continues as new.
fn reload_program() -> Program {
    Program::new(RELOAD, vec![Op::Loop { name: "noop".into(), times: RELOAD_ITERATIONS, every: 0 }])
}

/// The loop program: many iterations of a no-op activity, continuing as new as it goes.
fn loop_program() -> Program {
    Program::new(LOOP, vec![Op::Loop { name: "noop".into(), times: LOOP_ITERATIONS, every: LOOP_RUN_LENGTH }])
}

/// A people-and-deadlines bench definition, compiled.
fn people_workflow(source: &str) -> anyhow::Result<Workflow> {
    let program = baton_workflows::run::load(source, "bench.yaml")?;
    Ok(Workflow::new(Arc::new(program), baton_workflows::run::content_hash(source)))
}

/// Registers every orchestration the benches start, so their instances can be replayed.
pub fn known_orchestrations(replayer: Replayer) -> Replayer {
    let mut replayer = replayer
        .orchestration(w1_program())
        .orchestration(w2_program())
        .orchestration(w3_program())
        .orchestration(reload_program())
        .orchestration(loop_program());
    for source in [TASKS_YAML, RUNGS_YAML] {
        match people_workflow(source) {
            Ok(workflow) => replayer = replayer.orchestration(workflow),
            Err(err) => tracing::warn!("a bench definition does not compile: {err:#}"),
        }
    }
    replayer
}

/// Where the people-and-deadlines workloads' simulated time starts: Monday 23 November 2026,
/// 09:00 in Brussels (08:00 UTC), the start of a working day.
fn people_epoch() -> anyhow::Result<DateTime<Utc>> {
    Utc.with_ymd_and_hms(2026, 11, 23, 8, 0, 0).single().context("the bench epoch is a valid time")
}

pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    match args.workload {
        Workload::W4 => return w4::run(&args).await,
        Workload::W4Load => return w4::load().await,
        _ => {}
    }
    if args.worker == WorkerKind::Remote {
        anyhow::bail!(
            "--worker remote is not available yet: the remote worker process and its protocol are still to come; \
             run with --worker in-process"
        );
    }
    anyhow::ensure!(args.runs >= 1, "--runs must be at least 1");
    if let Some(instances) = args.instances {
        anyhow::ensure!(instances >= 1, "--instances must be at least 1");
    }
    if let Some(store) = &args.store
        && (store.starts_with("postgres://") || store.starts_with("postgresql://"))
    {
        anyhow::bail!("PostgreSQL stores are not available yet; use sqlite:///path/to/file.db");
    }
    let mut failed = false;
    for run in 1..=args.runs {
        let report = run_once(&args, run).await?;
        failed |= report.errors > 0;
        if args.json {
            crate::write_out(&report.to_json())?;
        } else {
            crate::write_out(&report.to_table())?;
        }
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// One run: a fresh store (unless given) and engine, the workload, then the report.
/// The store a run uses: the one `--store` names, or a SQLite file in a temporary directory
/// (kept alive by the returned guard; `true` says it is temporary).
pub(crate) fn store_location(args: &BenchArgs) -> anyhow::Result<(String, bool, Option<tempfile::TempDir>)> {
    Ok(match &args.store {
        Some(url) => (url.clone(), false, None),
        None => {
            let dir =
                tempfile::Builder::new().prefix("baton-bench-").tempdir().context("creating a temporary directory")?;
            let url = format!("sqlite://{}", dir.path().join("bench.db").display());
            (url, true, Some(dir))
        }
    })
}

async fn run_once(args: &BenchArgs, run: usize) -> anyhow::Result<Report> {
    let began = Instant::now();
    reset_peak_rss();
    let written_before = proc_io_bytes("write_bytes:");
    let (url, temporary, _temp) = store_location(args)?;
    let synchronous = match args.synchronous {
        SyncMode::Full => Synchronous::Full,
        SyncMode::Normal => Synchronous::Normal,
    };
    let sqlite = SqliteOptions { synchronous, ..SqliteOptions::default() };
    let store = Arc::new(
        SqliteStore::open(&url, sqlite.clone()).await.with_context(|| format!("cannot open the store {url}"))?,
    );
    let mut options = EngineOptions::default();
    if let Some(capacity) = args.cache_capacity {
        options.cache_capacity = capacity;
    }
    let cache_capacity = options.cache_capacity;
    // The people-and-deadlines workloads run on simulated time, frozen until advanced.
    let clock = match args.workload {
        Workload::Tasks | Workload::Rungs => Some(Arc::new(ManualClock::frozen(people_epoch()?))),
        _ => None,
    };
    let engine = Arc::new(build_engine(store.clone(), options, clock).await?);
    let mut report = Report::new(args, run, &url);
    let runtime = match args.runtime {
        RuntimeKind::MultiThread => "multi-thread",
        RuntimeKind::CurrentThread => "current-thread",
    };
    report.extra("runtime", json!(runtime));
    report.extra("store_temporary", json!(temporary));
    report.extra("cache_capacity", json!(cache_capacity));
    report.extra("rss_base_mb", json!(rss_mb().map(round3)));
    let instances = args.instances.unwrap_or(args.workload.default_instances());
    let bench =
        Bench { engine: engine.clone(), store: store.clone(), url: url.clone(), sqlite, errors: Errors::default() };
    let timeout = Duration::from_secs(args.timeout_secs);
    let outcome = tokio::time::timeout(timeout, bench.run(args, instances, &mut report)).await;
    report.rss_mb = rss_mb().map(round3);
    engine.shutdown().await;
    store.close().await;
    let errors = match outcome {
        Ok(Ok(errors)) => errors,
        Ok(Err(err)) => return Err(err.context(format!("{} run {run} failed", args.workload.name()))),
        Err(_) => anyhow::bail!(
            "{} run {run} did not finish within {} s (the engine may be stuck; try RUST_LOG=debug)",
            args.workload.name(),
            args.timeout_secs
        ),
    };
    report.errors = errors;
    if let (Some(before), Some(after)) = (written_before, proc_io_bytes("write_bytes:")) {
        report.extra("written_mb", json!(round3(after.saturating_sub(before) as f64 / 1_048_576.0)));
    }
    report.peak_rss_mb = peak_rss_mb().map(round3);
    report.seconds = round3(began.elapsed().as_secs_f64());
    Ok(report)
}

async fn build_engine(
    store: Arc<SqliteStore>,
    options: EngineOptions,
    clock: Option<Arc<ManualClock>>,
) -> anyhow::Result<Engine> {
    let store: Arc<dyn Store> = store;
    let store_for_notify = Arc::clone(&store);
    let mut builder = Engine::builder()
        .store(store)
        .options(options)
        .orchestration(w1_program())
        .orchestration(w2_program())
        .orchestration(w3_program())
        .orchestration(reload_program())
        .orchestration(loop_program())
        .orchestration(people_workflow(TASKS_YAML).context("the tasks bench definition")?)
        .orchestration(people_workflow(RUNGS_YAML).context("the rungs bench definition")?);
    let bulk = people_workflow(BULK_YAML).context("the shipped bulk assignment")?;
    let notify_clock: Arc<dyn Clock> = match &clock {
        Some(clock) => clock.clone(),
        None => Arc::new(baton_engine::SystemClock),
    };
    let mut activities = baton_engine::ActivityRegistry::new();
    activities.register("noop", |_ctx, _input| async { Ok(Value::Null) });
    let notify = baton_activities::notify::NotifyConfig::new(store_for_notify, notify_clock);
    let key = baton_engine::Orchestration::definition(&bulk).key();
    notify
        .add_definition_templates(&key, &bulk.program().templates)
        .map_err(|error| anyhow::anyhow!("{key}: use.templates: {error}"))?;
    baton_activities::notify::register_notify(&mut activities, Arc::new(notify));
    builder = builder.orchestration(bulk).activities(activities);
    if let Some(clock) = clock {
        let clock: Arc<dyn Clock> = clock;
        builder = builder.clock(clock);
    }
    let engine = builder.build().await.context("cannot start the engine")?;
    Ok(engine)
}

/// Counts errors; logs the first few in full.
#[derive(Debug, Default)]
struct Errors {
    count: u64,
}

impl Errors {
    fn add(&mut self, what: impl std::fmt::Display) {
        self.count += 1;
        if self.count <= LOGGED_ERRORS {
            tracing::error!("bench: {what}");
        } else if self.count == LOGGED_ERRORS + 1 {
            tracing::error!("bench: more errors follow; they are only counted");
        }
    }

    /// Checks how an instance ended.
    fn check(&mut self, outcome: Result<Outcome, baton_engine::EngineError>) -> bool {
        match outcome {
            Ok(outcome) if outcome.status == InstanceStatus::Completed => true,
            Ok(outcome) => {
                self.add(format_args!(
                    "an instance ended {:?}: {}",
                    outcome.status,
                    outcome.result.unwrap_or(Value::Null)
                ));
                false
            }
            Err(err) => {
                self.add(format_args!("wait: {err}"));
                false
            }
        }
    }
}

struct Bench {
    engine: Arc<Engine>,
    store: Arc<SqliteStore>,
    url: String,
    sqlite: SqliteOptions,
    errors: Errors,
}

impl Bench {
    async fn run(mut self, args: &BenchArgs, instances: usize, report: &mut Report) -> anyhow::Result<u64> {
        match args.workload {
            Workload::W1 => self.w1(instances, report).await?,
            Workload::W1Latency => self.w1_latency(instances, args.warmups, report).await?,
            Workload::W2 => self.w2(instances, report).await?,
            Workload::W3 => self.w3(instances, args.due_in_secs, report).await?,
            Workload::Reload => self.reload(report).await?,
            Workload::Loop => self.long_loop(report).await?,
            Workload::Tasks => self.tasks(instances, report).await?,
            Workload::Rungs => self.rungs(instances, report).await?,
            Workload::Bulk => self.bulk(instances, report).await?,
            Workload::W4 | Workload::W4Load => anyhow::bail!("w4 runs on its own path"),
        }
        let incidents = self.engine.stats().incidents;
        report.extra("incidents", json!(incidents));
        if incidents > 0 {
            // An incident that did not already fail an instance is still an engine error.
            self.errors.add(format_args!("{incidents} incidents were raised"));
        }
        Ok(self.errors.count)
    }

    /// Joins timed instance tasks (each gives its start and end since a common origin, and its
    /// outcome): the earliest start, the latest end, and the latency of each success in ms.
    async fn collect(&mut self, mut set: JoinSet<Timed>) -> (Duration, Duration, Vec<f64>) {
        let mut first_start = Duration::MAX;
        let mut last_end = Duration::ZERO;
        let mut latencies = Vec::with_capacity(set.len());
        while let Some(joined) = set.join_next().await {
            let Ok((start, end, outcome)) = joined.map_err(|err| self.errors.add(format_args!("instance task: {err}")))
            else {
                continue;
            };
            first_start = first_start.min(start);
            last_end = last_end.max(end);
            if self.errors.check(outcome) {
                latencies.push(ms(end.saturating_sub(start)));
            }
        }
        (first_start, last_end, latencies)
    }

    /// W1: `n` instances of 10 sequential no-op activities, started at once.
    async fn w1(&mut self, n: usize, report: &mut Report) -> anyhow::Result<()> {
        let before = self.engine.stats();
        let origin = Instant::now();
        let mut set = JoinSet::new();
        for _ in 0..n {
            let engine = self.engine.clone();
            set.spawn(async move {
                let start = origin.elapsed();
                let outcome = start_and_wait(&engine, W1, json!({})).await;
                (start, origin.elapsed(), outcome)
            });
        }
        let (first_start, last_end, mut latencies) = self.collect(set).await;
        let delta = delta(before, self.engine.stats());
        let window = last_end.saturating_sub(first_start).as_secs_f64();
        report.instances = Some(n as u64);
        report.set_steps(delta, window);
        report.workflows_per_sec = rate(latencies.len(), window);
        report.set_latencies(&mut latencies);
        report.extra("measure_seconds", json!(round3(window)));
        Ok(())
    }

    /// W1 latency: one instance alone at a time, after `warmups` unmeasured ones.
    async fn w1_latency(&mut self, n: usize, warmups: usize, report: &mut Report) -> anyhow::Result<()> {
        for _ in 0..warmups {
            let outcome = start_and_wait(&self.engine, W1, json!({})).await;
            self.errors.check(outcome);
        }
        let before = self.engine.stats();
        let mut latencies = Vec::with_capacity(n);
        let began = Instant::now();
        for _ in 0..n {
            let start = Instant::now();
            let outcome = start_and_wait(&self.engine, W1, json!({})).await;
            let took = start.elapsed();
            if self.errors.check(outcome) {
                latencies.push(ms(took));
            }
        }
        let window = began.elapsed().as_secs_f64();
        let delta = delta(before, self.engine.stats());
        report.instances = Some(n as u64);
        report.set_steps(delta, window);
        report.workflows_per_sec = rate(latencies.len(), window);
        report.set_latencies(&mut latencies);
        report.extra("warmups", json!(warmups));
        report.extra("measure_seconds", json!(round3(window)));
        Ok(())
    }

    /// W2: `n` instances wait for "approve"; RSS once all wait; then every event is raised at
    /// once and each instance runs one activity and completes.
    async fn w2(&mut self, n: usize, report: &mut Report) -> anyhow::Result<()> {
        let began = Instant::now();
        let mut ids = Vec::with_capacity(n);
        start_many(&self.engine, W2, n, |_| json!({}), &mut self.errors, |id| ids.push(id)).await;
        let start_seconds = began.elapsed().as_secs_f64();
        report.extra("start_seconds", json!(round3(start_seconds)));
        report.extra("starts_per_sec", json!(rate(ids.len(), start_seconds)));
        report.rss_waiting_mb = rss_mb().map(round3);
        if let Some(id) = ids.first() {
            let status = self.engine.describe(id).await?.row.status;
            anyhow::ensure!(status == InstanceStatus::Waiting, "a started W2 instance is {status:?}, not waiting");
        }
        let before = self.engine.stats();
        let origin = Instant::now();
        let mut set = JoinSet::new();
        for id in ids {
            let engine = self.engine.clone();
            set.spawn(async move {
                let event = RaiseEvent {
                    name: "approve".into(),
                    payload: json!({ "approved": true }),
                    event_id: None,
                    actor: Actor::User { id: "bench".into() },
                };
                let start = origin.elapsed();
                let outcome = match engine.raise_event(&id, event).await {
                    Ok(_) => engine.wait(&id).await,
                    Err(err) => Err(err),
                };
                (start, origin.elapsed(), outcome)
            });
        }
        let (_, last_end, mut latencies) = self.collect(set).await;
        let window = last_end.as_secs_f64();
        let delta = delta(before, self.engine.stats());
        report.instances = Some(n as u64);
        report.set_steps(delta, window);
        report.completions_per_sec = rate(latencies.len(), window);
        report.workflows_per_sec = report.completions_per_sec;
        report.set_latencies(&mut latencies);
        report.extra("measure_seconds", json!(round3(window)));
        Ok(())
    }

    /// W3: `n` instances sleep until the same instant T; each completion is observed through
    /// `engine.wait` on the system clock, and its lag is that time minus T.
    async fn w3(&mut self, n: usize, due_in_secs: Option<u64>, report: &mut Report) -> anyhow::Result<()> {
        let due_in_secs = due_in_secs.unwrap_or(10 + (n as u64).div_ceil(5_000));
        let began = Instant::now();
        let due_ms = chrono::Utc::now().timestamp_millis() + i64::try_from(due_in_secs)?.saturating_mul(1_000);
        let mut waiters = JoinSet::new();
        let engine = self.engine.clone();
        start_many(
            &self.engine,
            W3,
            n,
            |_| json!({ "due_ms": due_ms }),
            &mut self.errors,
            |id| {
                let engine = engine.clone();
                waiters.spawn(async move {
                    let outcome = engine.wait(&id).await;
                    (chrono::Utc::now().timestamp_micros(), outcome)
                });
            },
        )
        .await;
        let start_seconds = began.elapsed().as_secs_f64();
        let margin_ms = due_ms - chrono::Utc::now().timestamp_millis();
        report.extra("due_in_secs", json!(due_in_secs));
        report.extra("start_seconds", json!(round3(start_seconds)));
        report.extra("starts_per_sec", json!(rate(waiters.len(), start_seconds)));
        report.extra("starts_done_before_due_ms", json!(margin_ms));
        if margin_ms < 1_000 {
            tracing::warn!(
                "bench: the starts ended {margin_ms} ms before the timers were due; the lag includes late starts \
                 (raise --due-in-secs)"
            );
        }
        // RSS while everything waits: one second before the timers are due.
        let sample_at = due_ms - 1_000;
        let wait_ms = sample_at - chrono::Utc::now().timestamp_millis();
        if wait_ms > 0 {
            tokio::time::sleep(Duration::from_millis(u64::try_from(wait_ms)?)).await;
        }
        report.rss_waiting_mb = rss_mb().map(round3);
        let before = self.engine.stats();
        let mut lags = Vec::with_capacity(n);
        while let Some(joined) = waiters.join_next().await {
            let Ok((done_us, outcome)) = joined.map_err(|err| self.errors.add(format_args!("waiter task: {err}")))
            else {
                continue;
            };
            if self.errors.check(outcome) {
                lags.push((done_us - due_ms * 1_000) as f64 / 1_000.0);
            }
        }
        let delta = delta(before, self.engine.stats());
        lags.sort_by(f64::total_cmp);
        report.instances = Some(n as u64);
        report.commits = Some(delta.commits);
        report.timer_lag_p99_ms = percentile(&lags, 99.0).map(round3);
        report.timer_lag_max_ms = lags.last().copied().map(round3);
        report.extra("timer_lag_p50_ms", json!(percentile(&lags, 50.0).map(round3)));
        report.extra("timer_lag_min_ms", json!(lags.first().copied().map(round3)));
        report.extra("timers_fired", json!(delta.timers_fired));
        if let (Some(first), Some(last)) = (lags.first(), lags.last()) {
            let spread = (last - first) / 1_000.0;
            report.completions_per_sec = rate(lags.len(), spread);
            report.extra("fire_seconds", json!(round3(spread)));
        }
        Ok(())
    }

    /// Reload: one instance with 10,000 history events; the engine shuts down; the store is
    /// opened afresh and the instance cold-loaded with its snapshot and from history alone.
    async fn reload(&mut self, report: &mut Report) -> anyhow::Result<()> {
        let began = Instant::now();
        let started = self.engine.start(RELOAD, json!({}), StartOptions::default()).await.context("starting")?;
        let id = started.id;
        let outcome = self.engine.wait(&id).await;
        if !self.errors.check(outcome) {
            anyhow::bail!("the reload instance did not complete");
        }
        report.extra("build_seconds", json!(round3(began.elapsed().as_secs_f64())));
        report.instances = Some(1);
        self.engine.shutdown().await;
        self.store.close().await;
        let store = SqliteStore::open(&self.url, self.sqlite.clone()).await.context("reopening the store")?;
        let replayer = known_orchestrations(Replayer::new());
        let first = Instant::now();
        let snapshot_events = replayer.cold_load(&store, &id, true).await?;
        report.extra("first_load_ms", json!(round3(ms(first.elapsed()))));
        // Each kind in its own block: a load right after a history-alone load pays ~10 ms of
        // glibc malloc consolidation (freeing the 10,000 events), which is not a cold load's cost.
        let mut with_snapshot = Vec::with_capacity(RELOAD_REPETITIONS);
        for _ in 0..RELOAD_REPETITIONS {
            let start = Instant::now();
            replayer.cold_load(&store, &id, true).await?;
            with_snapshot.push(ms(start.elapsed()));
        }
        let mut from_history = Vec::with_capacity(RELOAD_REPETITIONS);
        let mut replayed = 0;
        for _ in 0..RELOAD_REPETITIONS {
            let start = Instant::now();
            replayed = replayer.cold_load(&store, &id, false).await?;
            from_history.push(ms(start.elapsed()));
        }
        let history_events = store.history(&id, 0, u32::MAX).await?.len();
        store.close().await;
        report.set_latencies(&mut with_snapshot);
        from_history.sort_by(f64::total_cmp);
        report.extra("history_load_ms", json!(percentile(&from_history, 50.0).map(round3)));
        report.extra("history_load_p99_ms", json!(percentile(&from_history, 99.0).map(round3)));
        report.extra("history_events", json!(history_events));
        report.extra("snapshot_replayed_events", json!(snapshot_events));
        report.extra("history_replayed_events", json!(replayed));
        report.extra("repetitions", json!(RELOAD_REPETITIONS));
        Ok(())
    }
}

impl Bench {
    /// Loop: one instance runs 100,000 activities, continuing as new every 1,000; then it is
    /// cold-loaded from a freshly opened store.
    async fn long_loop(&mut self, report: &mut Report) -> anyhow::Result<()> {
        let before = self.engine.stats();
        let began = Instant::now();
        let outcome = start_and_wait(&self.engine, LOOP, json!({})).await;
        let seconds = began.elapsed().as_secs_f64();
        if !self.errors.check(outcome) {
            anyhow::bail!("the loop instance did not complete");
        }
        report.instances = Some(1);
        report.set_steps(delta(before, self.engine.stats()), seconds);
        report.extra("iterations", json!(LOOP_ITERATIONS));
        report.extra("run_length", json!(LOOP_RUN_LENGTH));
        report.extra("peak_rss_during_loop_mb", json!(peak_rss_mb()));
        let id = self.engine.store().list_instances(&Default::default()).await?.remove(0).id;
        self.engine.shutdown().await;
        self.store.close().await;
        let store = SqliteStore::open(&self.url, self.sqlite.clone()).await.context("reopening the store")?;
        let replayer = known_orchestrations(Replayer::new());
        let mut loads = Vec::with_capacity(RELOAD_REPETITIONS);
        let mut replayed = 0;
        for _ in 0..RELOAD_REPETITIONS {
            let start = Instant::now();
            replayed = replayer.cold_load(&store, &id, true).await?;
            loads.push(ms(start.elapsed()));
        }
        // The row's next sequence number is the history's length (reading 200,000 events to
        // count them would measure the bench, not the engine).
        let row = store.instance(&id).await?.context("the loop instance is gone")?;
        report.extra("history_events", json!(row.next_seq));
        report.extra("reload_replayed_events", json!(replayed));
        store.close().await;
        report.set_latencies(&mut loads);
        Ok(())
    }
}

impl Bench {
    /// Tasks: `n` instances each open one human task for the team leaders of their department
    /// (200 per department, at most 500 departments), under an 8-working-hour SLA with a
    /// three-rung ladder; simulated time stands still, so every task stays open. RSS and store
    /// size once all wait; then inbox queries of random team leaders, one at a time.
    async fn tasks(&mut self, n: usize, report: &mut Report) -> anyhow::Result<()> {
        let departments = n.div_ceil(TASKS_PER_DEPARTMENT).clamp(1, DEPARTMENTS);
        let imported = Instant::now();
        self.store.import(&team_leaders(departments)).await.context("importing the organisation")?;
        report.extra("import_ms", json!(round3(ms(imported.elapsed()))));
        let before = self.engine.stats();
        let began = Instant::now();
        let mut started = 0_usize;
        start_many(
            &self.engine,
            TASKS,
            n,
            |i| json!({ "department": department_id(i % departments), "request": i }),
            &mut self.errors,
            |_| started += 1,
        )
        .await;
        let start_seconds = began.elapsed().as_secs_f64();
        let delta = delta(before, self.engine.stats());
        report.rss_waiting_mb = rss_mb().map(round3);
        report.instances = Some(started as u64);
        report.commits = Some(delta.commits);
        report.extra("departments", json!(departments));
        report.extra("start_seconds", json!(round3(start_seconds)));
        report.extra("starts_per_sec", json!(rate(started, start_seconds)));
        report.extra("events", json!(delta.events));
        report.extra("peak_rss_starting_mb", json!(peak_rss_mb().map(round3)));
        if let Some((db, wal)) = store_files_mb(&self.url) {
            report.extra("store_mb", json!(round3(db + wal)));
            report.extra("store_db_mb", json!(round3(db)));
            report.extra("store_wal_mb", json!(round3(wal)));
        }
        let open = self.engine.slas(&SlaQuery { open_only: true, limit: 1, ..SlaQuery::default() }).await?;
        anyhow::ensure!(!open.is_empty() || started == 0, "no SLA clock is running after the starts");

        // The team leaders' principals, as the directory gives them, and how many open tasks
        // each should see.
        let mut leaders = Vec::with_capacity(departments);
        for d in 0..departments {
            let principal = self
                .store
                .principal(&leader_id(d))
                .await?
                .with_context(|| format!("{} is not in the directory", leader_id(d)))?;
            let open_tasks = n / departments + usize::from(d < n % departments);
            leaders.push((department_id(d), principal, open_tasks));
        }
        report.extra("max_tasks_per_leader", json!(leaders.iter().map(|l| l.2).max()));
        let mut rng = SplitMix(0x5eed_ba70);
        for (limit, prefix) in [(INBOX_SMALL_PAGE, "inbox50"), (INBOX_LARGE_PAGE, "inbox200")] {
            let timing = self.inbox_queries(&leaders, limit, &mut rng).await?;
            let mut latencies = timing.latencies;
            latencies.sort_by(f64::total_cmp);
            if limit == INBOX_SMALL_PAGE {
                report.p50_ms = percentile(&latencies, 50.0).map(round3);
                report.p99_ms = percentile(&latencies, 99.0).map(round3);
            }
            let fields: [(&'static str, Option<f64>); 4] = match prefix {
                "inbox50" => [
                    ("inbox50_p50_ms", percentile(&latencies, 50.0)),
                    ("inbox50_p95_ms", percentile(&latencies, 95.0)),
                    ("inbox50_p99_ms", percentile(&latencies, 99.0)),
                    ("inbox50_max_ms", latencies.last().copied()),
                ],
                _ => [
                    ("inbox200_p50_ms", percentile(&latencies, 50.0)),
                    ("inbox200_p95_ms", percentile(&latencies, 95.0)),
                    ("inbox200_p99_ms", percentile(&latencies, 99.0)),
                    ("inbox200_max_ms", latencies.last().copied()),
                ],
            };
            for (name, value) in fields {
                report.extra(name, json!(value.map(round3)));
            }
            let (rows_min, rows_max) = if limit == INBOX_SMALL_PAGE {
                ("inbox50_rows_min", "inbox50_rows_max")
            } else {
                ("inbox200_rows_min", "inbox200_rows_max")
            };
            report.extra(rows_min, json!(timing.rows_min));
            report.extra(rows_max, json!(timing.rows_max));
        }
        report.extra("inbox_queries", json!(INBOX_QUERIES));
        if let Some((db, wal)) = store_files_mb(&self.url) {
            report.extra("store_mb_after_queries", json!(round3(db + wal)));
        }
        Ok(())
    }

    /// `INBOX_QUERIES` inbox queries of `limit` rows for random team leaders, one at a time, after
    /// a few unmeasured ones. A page that is short of what the leader should see, or that holds
    /// another department's task, is an error.
    async fn inbox_queries(
        &mut self,
        leaders: &[(String, Principal, usize)],
        limit: u32,
        rng: &mut SplitMix,
    ) -> anyhow::Result<InboxTiming> {
        let query = InboxQuery { limit, ..InboxQuery::default() };
        let mut timing = InboxTiming { latencies: Vec::with_capacity(INBOX_QUERIES), rows_min: None, rows_max: None };
        for round in 0..INBOX_WARMUPS + INBOX_QUERIES {
            let Some((department, principal, open_tasks)) = leaders.get(rng.below(leaders.len())) else {
                anyhow::bail!("no team leaders");
            };
            let start = Instant::now();
            let rows = self.engine.inbox(&query, principal).await?;
            let took = ms(start.elapsed());
            let expected = (*open_tasks).min(limit as usize);
            if rows.len() != expected {
                self.errors.add(format_args!(
                    "{} saw {} tasks with limit {limit}, not {expected}",
                    principal.user,
                    rows.len()
                ));
            }
            if let Some(row) = rows.iter().find(|r| r.task.spec.department.as_deref() != Some(department.as_str())) {
                self.errors.add(format_args!(
                    "{} of {department} saw a task of {:?}",
                    principal.user, row.task.spec.department
                ));
            }
            if round >= INBOX_WARMUPS {
                timing.latencies.push(took);
                timing.rows_min = Some(timing.rows_min.map_or(rows.len(), |m: usize| m.min(rows.len())));
                timing.rows_max = Some(timing.rows_max.map_or(rows.len(), |m: usize| m.max(rows.len())));
            }
        }
        Ok(timing)
    }

    /// Bulk: one training assigned to `n` people of the directory with one start of the
    /// shipped `training/bulk-assignment`. The answer comes once `InstanceStarted`, holding
    /// every person, is committed: the figure is that wait, then the time until the instance
    /// has ended with every in-app notification written.
    async fn bulk(&mut self, n: usize, report: &mut Report) -> anyhow::Result<()> {
        let people: Vec<Person> = (0..n)
            .map(|i| {
                let mut person = Person::new(format!("bulk-{i}"), format!("Employee {i}"));
                person.department = Some("bulk".into());
                person
            })
            .collect();
        let department = Department { id: "bulk".into(), name: "Bulk".into(), parent: None, head: None };
        let organisation = Organisation { departments: vec![department], groups: vec![], people };
        self.store.import(&organisation).await.context("importing the people")?;
        let ids: Vec<String> = organisation.people.iter().map(|p| p.id.clone()).collect();
        let input = json!({"trainingId": "safety-1", "title": "Safety basics", "dueDate": "2026-12-31",
            "assignedBy": "hr", "people": ids});
        let began = Instant::now();
        let started = self.engine.start(BULK, input, StartOptions::default()).await.context("the bulk start")?;
        let answer = began.elapsed();
        // Durable at the answer: the first history event holds every person.
        let first = self.store.history(&started.id, 0, 1).await?;
        let durable = first
            .first()
            .and_then(|e| serde_json::from_str::<Value>(&e.payload).ok())
            .and_then(|p| p["input"]["people"].as_array().map(Vec::len))
            .unwrap_or(0);
        if durable != n {
            self.errors.add(format_args!("{durable} of {n} assignments in history at the answer"));
        }
        let outcome = self.engine.wait(&started.id).await.context("waiting for the notifications")?;
        let notified = began.elapsed();
        if outcome.status != InstanceStatus::Completed {
            self.errors.add(format_args!("the bulk assignment ended {:?}: {:?}", outcome.status, outcome.result));
        }
        let mut in_app = 0;
        for id in &ids {
            in_app += self.store.in_app(id, false, None, 10).await?.len();
        }
        if in_app != n {
            self.errors.add(format_args!("{in_app} of {n} people have their in-app notification"));
        }
        report.instances = Some(1);
        report.extra("people", json!(n));
        report.extra("answer_ms", json!(round3(ms(answer))));
        report.extra("answer_target_ms", json!(1_000));
        report.extra("assignments_durable_at_answer", json!(durable));
        report.extra("notified_ms", json!(round3(ms(notified))));
        report.extra("notified", json!(in_app));
        Ok(())
    }

    /// Rungs: `n` instances each open a human task whose one-hour SLA has one rung at 100%, all
    /// started at the same simulated instant; the clock then moves one hour, and the figure is
    /// the time from that move to the last rung fired and durable.
    async fn rungs(&mut self, n: usize, report: &mut Report) -> anyhow::Result<()> {
        let departments = n.div_ceil(TASKS_PER_DEPARTMENT).clamp(1, DEPARTMENTS);
        let before_start = self.engine.stats();
        let began = Instant::now();
        let mut ids = Vec::with_capacity(n);
        start_many(
            &self.engine,
            RUNGS,
            n,
            |i| json!({ "department": department_id(i % departments), "request": i }),
            &mut self.errors,
            |id| ids.push(id),
        )
        .await;
        let start_seconds = began.elapsed().as_secs_f64();
        report.instances = Some(ids.len() as u64);
        report.extra("start_seconds", json!(round3(start_seconds)));
        report.extra("starts_per_sec", json!(rate(ids.len(), start_seconds)));
        report.extra("start_commits", json!(delta(before_start, self.engine.stats()).commits));
        report.rss_waiting_mb = rss_mb().map(round3);
        // Each SLA arms two timers due at the same instant: its rung (at 100%) and its breach.
        let expected = 2 * ids.len() as u64;
        let before = self.engine.stats();
        let origin = Instant::now();
        self.engine.advance_clock(Duration::from_secs(3_600)).await.context("advancing the clock")?;
        let mut first_fire = None;
        let mut last_seen = 0;
        let mut last_progress = Instant::now();
        loop {
            let fired = self.engine.stats().timers_fired - before.timers_fired;
            if fired > 0 && first_fire.is_none() {
                first_fire = Some(origin.elapsed());
            }
            if fired >= expected {
                break;
            }
            if fired != last_seen {
                last_seen = fired;
                last_progress = Instant::now();
            } else if last_progress.elapsed() > RUNGS_STALL {
                anyhow::bail!("only {fired} of {expected} SLA timers fired; none for {} s", RUNGS_STALL.as_secs());
            }
            tokio::time::sleep(RUNGS_POLL).await;
        }
        let all_taken = origin.elapsed();
        // A fire is counted when the core takes it, before its batch commits. A wait on an
        // instance that does not exist is answered after the batch in hand (or a later one)
        // has committed, so once it returns the last rung is durable.
        let barrier = self.engine.wait(&InstanceId::new("bench-rungs-barrier")).await;
        anyhow::ensure!(barrier.is_err(), "the barrier instance exists");
        let last_durable = origin.elapsed();
        let delta = delta(before, self.engine.stats());
        report.commits = Some(delta.commits);
        report.timer_lag_max_ms = Some(round3(ms(last_durable)));
        report.completions_per_sec = rate(ids.len(), last_durable.as_secs_f64());
        report.extra("rungs_seconds", json!(round3(last_durable.as_secs_f64())));
        report.extra("first_fire_ms", json!(first_fire.map(|d| round3(ms(d)))));
        report.extra("all_taken_ms", json!(round3(ms(all_taken))));
        report.extra("timers_fired", json!(delta.timers_fired));
        report.extra("sla_breaches", json!(delta.sla_breaches));
        report.extra("events", json!(delta.events));
        report.extra("rss_after_rungs_mb", json!(rss_mb().map(round3)));
        if let Some((db, wal)) = store_files_mb(&self.url) {
            report.extra("store_mb", json!(round3(db + wal)));
        }
        // Unmeasured: every clock escalated once and breached, from the SLA dashboard's rows.
        let ours: std::collections::HashSet<InstanceId> = ids.into_iter().collect();
        let (mut escalated, mut breached, mut clocks) = (0_u64, 0_u64, 0_u64);
        let mut after = None;
        loop {
            let query = SlaQuery { after: after.clone(), limit: SlaQuery::MAX_LIMIT, ..SlaQuery::default() };
            let rows = self.engine.slas(&query).await?;
            let Some(last) = rows.last() else { break };
            after = Some((last.instance.clone(), last.seq));
            for row in rows.iter().filter(|r| ours.contains(&r.instance)) {
                clocks += 1;
                escalated += u64::from(row.escalations);
                breached += u64::from(row.breached_at.is_some());
            }
        }
        report.extra("escalations_recorded", json!(escalated));
        report.extra("breaches_recorded", json!(breached));
        let n = ours.len() as u64;
        if (clocks, escalated, breached) != (n, n, n) {
            self.errors.add(format_args!(
                "{clocks} SLA clocks with {escalated} escalations and {breached} breaches recorded for {n} instances"
            ));
        }
        Ok(())
    }
}

/// Inbox query latencies (ms) and the smallest and largest page returned.
struct InboxTiming {
    latencies: Vec<f64>,
    rows_min: Option<usize>,
    rows_max: Option<usize>,
}

fn department_id(d: usize) -> String {
    format!("dept-{d:03}")
}

fn leader_id(d: usize) -> String {
    format!("tl-{d:03}")
}

/// `departments` departments, each with one team leader holding `team_leader` there.
fn team_leaders(departments: usize) -> Organisation {
    Organisation {
        departments: (0..departments)
            .map(|d| Department {
                id: department_id(d),
                name: format!("Department {d}"),
                parent: None,
                head: Some(leader_id(d)),
            })
            .collect(),
        groups: Vec::new(),
        people: (0..departments)
            .map(|d| {
                let mut person = Person::new(leader_id(d), format!("Team leader {d}"));
                person.department = Some(department_id(d));
                person.email = Some(format!("{}@bench.example", leader_id(d)));
                person.roles = vec![RoleGrant::new("team_leader", Some(department_id(d).as_str()))];
                person
            })
            .collect(),
    }
}

/// A small deterministic generator (SplitMix64), so every run queries the same leaders.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `bound` (0 when `bound` is 0).
    fn below(&mut self, bound: usize) -> usize {
        if bound == 0 { 0 } else { (self.next() % bound as u64) as usize }
    }
}

/// The sizes in MiB of a SQLite store's main file and its write-ahead log.
fn store_files_mb(url: &str) -> Option<(f64, f64)> {
    let path = url.strip_prefix("sqlite://").unwrap_or(url);
    let path = path.split('?').next()?;
    let size = |file: &str| std::fs::metadata(file).map(|m| m.len()).unwrap_or(0) as f64 / 1_048_576.0;
    let db = std::fs::metadata(path).ok()?.len() as f64 / 1_048_576.0;
    Some((db, size(&format!("{path}-wal"))))
}

/// An instance task's start and end (since a common origin) and its outcome.
type Timed = (Duration, Duration, Result<Outcome, baton_engine::EngineError>);

/// Starts an instance and waits for its end.
async fn start_and_wait(engine: &Engine, definition: &str, input: Value) -> Result<Outcome, baton_engine::EngineError> {
    let started = engine.start(definition, input, StartOptions::default()).await?;
    engine.wait(&started.id).await
}

/// Starts `n` instances with at most [`START_CONCURRENCY`] starts in flight; `started` gets
/// each new id as soon as its start is durable.
async fn start_many(
    engine: &Arc<Engine>,
    definition: &'static str,
    n: usize,
    input: impl Fn(usize) -> Value,
    errors: &mut Errors,
    mut started: impl FnMut(InstanceId),
) {
    let mut set = JoinSet::new();
    let mut next = 0;
    loop {
        while next < n && set.len() < START_CONCURRENCY {
            let engine = engine.clone();
            let input = input(next);
            set.spawn(async move { engine.start(definition, input, StartOptions::default()).await });
            next += 1;
        }
        match set.join_next().await {
            Some(Ok(Ok(start))) => started(start.id),
            Some(Ok(Err(err))) => errors.add(format_args!("start: {err}")),
            Some(Err(err)) => errors.add(format_args!("start task: {err}")),
            None => break,
        }
    }
}

fn delta(before: StatsSnapshot, after: StatsSnapshot) -> StatsSnapshot {
    StatsSnapshot {
        commits: after.commits - before.commits,
        steps: after.steps - before.steps,
        events: after.events - before.events,
        activity_completions: after.activity_completions - before.activity_completions,
        timers_fired: after.timers_fired - before.timers_fired,
        stale_completions: after.stale_completions - before.stale_completions,
        incidents: after.incidents - before.incidents,
        replays: after.replays - before.replays,
        sla_breaches: after.sla_breaches - before.sla_breaches,
        task_actions: after.task_actions - before.task_actions,
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1_000.0
}

fn rate(count: usize, seconds: f64) -> Option<f64> {
    (seconds > 0.0).then(|| round3(count as f64 / seconds))
}

fn round3(x: f64) -> f64 {
    (x * 1_000.0).round() / 1_000.0
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// A field of `/proc/self/status` given in kB, as MiB.
fn proc_status_mb(key: &str) -> Option<f64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    text.lines().find_map(|line| {
        let kb: f64 = line.strip_prefix(key)?.trim().strip_suffix("kB")?.trim().parse().ok()?;
        Some(kb / 1_024.0)
    })
}

/// A counter of `/proc/self/io` (bytes this process caused to be written to storage).
fn proc_io_bytes(key: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/io").ok()?;
    text.lines().find_map(|line| line.strip_prefix(key)?.trim().parse().ok())
}

fn rss_mb() -> Option<f64> {
    proc_status_mb("VmRSS:")
}

fn peak_rss_mb() -> Option<f64> {
    proc_status_mb("VmHWM:")
}

/// Resets the peak RSS (`VmHWM`) to the current RSS, so each run reports its own peak.
fn reset_peak_rss() {
    if let Err(err) = std::fs::write("/proc/self/clear_refs", "5") {
        tracing::debug!("cannot reset the peak RSS: {err}");
    }
}

/// One run's figures. The fields every report has come first (null where they do not apply);
/// workload-specific ones follow.
#[derive(Debug)]
struct Report {
    workload: &'static str,
    store: String,
    worker: &'static str,
    synchronous: &'static str,
    run: usize,
    instances: Option<u64>,
    steps: Option<u64>,
    commits: Option<u64>,
    steps_per_commit: Option<f64>,
    steps_per_sec: Option<f64>,
    workflows_per_sec: Option<f64>,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    rss_mb: Option<f64>,
    rss_waiting_mb: Option<f64>,
    peak_rss_mb: Option<f64>,
    completions_per_sec: Option<f64>,
    timer_lag_p99_ms: Option<f64>,
    timer_lag_max_ms: Option<f64>,
    errors: u64,
    seconds: f64,
    extra: Vec<(&'static str, Value)>,
}

impl Report {
    fn new(args: &BenchArgs, run: usize, url: &str) -> Self {
        Self {
            workload: args.workload.name(),
            store: url.to_owned(),
            worker: "in-process",
            synchronous: match args.synchronous {
                SyncMode::Full => "full",
                SyncMode::Normal => "normal",
            },
            run,
            instances: None,
            steps: None,
            commits: None,
            steps_per_commit: None,
            steps_per_sec: None,
            workflows_per_sec: None,
            p50_ms: None,
            p99_ms: None,
            rss_mb: None,
            rss_waiting_mb: None,
            peak_rss_mb: None,
            completions_per_sec: None,
            timer_lag_p99_ms: None,
            timer_lag_max_ms: None,
            errors: 0,
            seconds: 0.0,
            extra: Vec::new(),
        }
    }

    fn extra(&mut self, name: &'static str, value: Value) {
        self.extra.push((name, value));
    }

    /// Steps (activity completions) and commits over a phase of `seconds`.
    fn set_steps(&mut self, delta: StatsSnapshot, seconds: f64) {
        self.steps = Some(delta.activity_completions);
        self.commits = Some(delta.commits);
        self.steps_per_commit =
            (delta.commits > 0).then(|| round3(delta.activity_completions as f64 / delta.commits as f64));
        self.steps_per_sec = rate(usize::try_from(delta.activity_completions).unwrap_or(usize::MAX), seconds);
    }

    fn set_latencies(&mut self, latencies: &mut [f64]) {
        latencies.sort_by(f64::total_cmp);
        self.p50_ms = percentile(latencies, 50.0).map(round3);
        self.p99_ms = percentile(latencies, 99.0).map(round3);
        self.extra("max_ms", json!(latencies.last().copied().map(round3)));
    }

    fn fields(&self) -> Vec<(&'static str, Value)> {
        let mut fields = vec![
            ("workload", json!(self.workload)),
            ("store", json!(self.store)),
            ("worker", json!(self.worker)),
            ("synchronous", json!(self.synchronous)),
            ("version", json!(env!("CARGO_PKG_VERSION"))),
            ("run", json!(self.run)),
            ("instances", json!(self.instances)),
            ("steps", json!(self.steps)),
            ("commits", json!(self.commits)),
            ("steps_per_commit", json!(self.steps_per_commit)),
            ("steps_per_sec", json!(self.steps_per_sec)),
            ("workflows_per_sec", json!(self.workflows_per_sec)),
            ("p50_ms", json!(self.p50_ms)),
            ("p99_ms", json!(self.p99_ms)),
            ("rss_mb", json!(self.rss_mb)),
            ("rss_waiting_mb", json!(self.rss_waiting_mb)),
            ("peak_rss_mb", json!(self.peak_rss_mb)),
            ("completions_per_sec", json!(self.completions_per_sec)),
            ("timer_lag_p99_ms", json!(self.timer_lag_p99_ms)),
            ("timer_lag_max_ms", json!(self.timer_lag_max_ms)),
            ("errors", json!(self.errors)),
            ("seconds", json!(self.seconds)),
        ];
        fields.extend(self.extra.iter().cloned());
        fields
    }

    /// One JSON object on one line, fields in a stable order.
    fn to_json(&self) -> String {
        let body: Vec<String> =
            self.fields().iter().map(|(name, value)| format!("{}:{}", Value::from(*name), value)).collect();
        format!("{{{}}}", body.join(","))
    }

    /// A short table of the fields that apply.
    fn to_table(&self) -> String {
        let mut text = String::new();
        for (name, value) in self.fields() {
            let shown = match value {
                Value::Null => continue,
                Value::String(s) => s,
                other => other.to_string(),
            };
            let _ = writeln!(text, "{name:<28} {shown}");
        }
        text
    }
}
