//! `baton bench w4`: people at work through the HTTP API.
//!
//! The process that runs `baton bench w4` is the server: an engine on a fresh SQLite file (the
//! system clock), the API on a loopback port, a directory of team leaders (20 per department,
//! each holding `team_leader` in their own department), and one definition with a human task
//! for the team leaders of the request's department, deployed through the API's deploy path.
//! The load comes from a second process, the same binary run as `baton bench w4-load`, which
//! gets its plan (address, signing secret, sizes) on stdin and reports on stdout, one JSON
//! object per line. When `taskset` is there and the machine has two cores or more, the server
//! is pinned to core 0 and the load generator to core 1, so neither takes the other's core.
//!
//! Two phases:
//! - **closed loop**: each simulated user thinks 1-5 s (uniform, fixed seed), lists their
//!   inbox (`GET /api/v1/tasks?limit=20`) and, when it shows a task nobody owns, opens it,
//!   claims it and completes it with data that fits its form. Meanwhile instances are started
//!   at a fixed 50/s, spread over the departments, so the inboxes fill. After a warm-up, every
//!   request of the measured window is timed. Contention is counted apart from errors: a task
//!   a colleague claimed first leaves everyone else's view, so opening or claiming it answers
//!   404 (checked at the end against the claims that succeeded: a 404 on a task nobody claimed
//!   is an error), and a 409 on a claim or a completion. Any other answer than the expected
//!   one, and any transport error, is an error.
//! - **open-loop ramp**: requests of a fixed mix (6 in 10 inbox lists; one open, claim,
//!   completion and start each) are sent on a fixed schedule at rising rates, whatever the
//!   answers; each request's latency runs from its scheduled instant, so a server that falls
//!   behind cannot slow the generator down. The ramp stops at the first rate whose p99 passes
//!   100 ms: the saturation point.
//!
//! A benchmark measures, it does not assert: missed targets and errors are reported, and the
//! exit status is a success once the run finished.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use baton_api::auth::{AuthConfig, Authenticator, Grant};
use baton_api::{ApiOptions, App};
use baton_engine::directory::{Department, Organisation, Person};
use baton_engine::human::RoleGrant;
use baton_engine::store::sqlite::{SqliteOptions, SqliteStore, Synchronous};
use baton_engine::{Actor, Engine, EngineOptions, Store};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{
    BenchArgs, Report, SplitMix, SyncMode, peak_rss_mb, percentile, reset_peak_rss, round3, rss_mb, store_location,
};

/// The definition every instance runs, as deployed.
const DEFINITION: &str = "bench/w4";
const W4_YAML: &str = r#"document:
  dsl: '1.0.3'
  namespace: bench
  name: w4
  version: '1.0.0'
do:
  - review:
      call: humanTask
      with:
        title: '${ "Review request \(.request) of \(.department)" }'
        assign: { role: team_leader, department: '${ .department }' }
        outcomes: [approve, reject]
        form:
          type: object
          required: [comment]
          properties: { comment: { type: string, minLength: 3 } }
      sla:
        within: PT8H
  - done:
      set:
        outcome: ${ .outcome }
        by: ${ .completedBy }
"#;
/// The data every completion sends: it fits the form.
const COMPLETION: &str = r#"{"outcome":"approve","data":{"comment":"looks fine"}}"#;

/// The simulated users (team leaders), and the departments they are spread over.
const USERS: usize = 500;
const DEPARTMENTS: usize = 25;
/// Instances started per second during the closed loop, and the accounts that start them
/// (several, so none of them meets the API's per-user rate limit).
const STARTS_PER_SEC: f64 = 50.0;
const INTAKE_ACCOUNTS: usize = 100;
/// A user's think time before each round, uniform in this range.
const THINK_MS: (u64, u64) = (1_000, 5_000);
/// The page an inbox list asks for.
const INBOX_LIMIT: u32 = 20;
/// The closed loop's unmeasured start (users and starts get going).
const WARMUP: Duration = Duration::from_secs(10);
/// The targets of the closed loop.
const INBOX_P99_TARGET_MS: f64 = 50.0;
const COMPLETE_P99_TARGET_MS: f64 = 100.0;
/// The ramp: request rates tried, in order, until one's p99 passes the saturation latency.
const RAMP_RATES: [f64; 18] = [
    100.0, 200.0, 300.0, 400.0, 500.0, 600.0, 800.0, 1_000.0, 1_250.0, 1_500.0, 2_000.0, 2_500.0, 3_000.0, 4_000.0,
    5_000.0, 6_000.0, 8_000.0, 10_000.0,
];
const SATURATION_P99_MS: f64 = 100.0;
/// Each ramp step: an unmeasured second at the new rate, then the measured seconds, then a
/// pause once every answer is in.
const STEP_WARMUP: Duration = Duration::from_secs(1);
const STEP_MEASURE: Duration = Duration::from_secs(5);
const STEP_PAUSE: Duration = Duration::from_secs(1);
/// The ramp's mix, slot by slot.
const MIX: [Op; 10] =
    [Op::Inbox, Op::Start, Op::Inbox, Op::Open, Op::Inbox, Op::Claim, Op::Inbox, Op::Complete, Op::Inbox, Op::Inbox];
/// Requests in flight at most during the ramp; a slot beyond it is dropped (and the step has
/// saturated).
const MAX_IN_FLIGHT: usize = 4_096;
/// The client gives up on a request after this long (the server answers 408 at 30 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(35);
/// The audience of the bench's tokens.
const AUDIENCE: &str = "baton-bench";
/// The first errors of the load generator are logged in full; the rest only counted.
const LOGGED_ERRORS: u64 = 5;

/// The operations timed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Inbox,
    Open,
    Claim,
    Complete,
    Start,
}

const OPS: [Op; 5] = [Op::Inbox, Op::Open, Op::Claim, Op::Complete, Op::Start];

impl Op {
    fn index(self) -> usize {
        self as usize
    }

    fn name(self) -> &'static str {
        match self {
            Op::Inbox => "inbox",
            Op::Open => "open",
            Op::Claim => "claim",
            Op::Complete => "complete",
            Op::Start => "start",
        }
    }

    /// The report's field names for this operation: count, per second, p50, p95, p99, max.
    fn fields(self) -> [&'static str; 6] {
        match self {
            Op::Inbox => {
                ["inbox_count", "inbox_per_sec", "inbox_p50_ms", "inbox_p95_ms", "inbox_p99_ms", "inbox_max_ms"]
            }
            Op::Open => ["open_count", "open_per_sec", "open_p50_ms", "open_p95_ms", "open_p99_ms", "open_max_ms"],
            Op::Claim => {
                ["claim_count", "claim_per_sec", "claim_p50_ms", "claim_p95_ms", "claim_p99_ms", "claim_max_ms"]
            }
            Op::Complete => [
                "complete_count",
                "complete_per_sec",
                "complete_p50_ms",
                "complete_p95_ms",
                "complete_p99_ms",
                "complete_max_ms",
            ],
            Op::Start => {
                ["start_count", "start_per_sec", "start_p50_ms", "start_p95_ms", "start_p99_ms", "start_max_ms"]
            }
        }
    }

    /// Whether a status is this operation's expected answer.
    fn expected(self, status: StatusCode) -> bool {
        match self {
            Op::Start => status == StatusCode::CREATED || status == StatusCode::OK,
            _ => status == StatusCode::OK,
        }
    }
}

fn department_id(d: usize) -> String {
    format!("w4-dept-{d:02}")
}

fn user_id(u: usize) -> String {
    format!("w4-user-{u:03}")
}

fn intake_id(i: usize) -> String {
    format!("w4-intake-{i:03}")
}

/// The directory: `users` team leaders spread over `departments`, each with `team_leader` in
/// their own department (user `u` is in department `u % departments`).
fn organisation(users: usize, departments: usize) -> Organisation {
    Organisation {
        departments: (0..departments)
            .map(|d| Department { id: department_id(d), name: format!("Department {d}"), parent: None, head: None })
            .collect(),
        groups: Vec::new(),
        people: (0..users)
            .map(|u| {
                let department = department_id(u % departments);
                let mut person = Person::new(user_id(u), format!("Team leader {u}"));
                person.email = Some(format!("{}@bench.example", user_id(u)));
                person.roles = vec![RoleGrant::new("team_leader", Some(department.as_str()))];
                person.department = Some(department);
                person
            })
            .collect(),
    }
}

/// What the server tells the load generator (on its stdin).
#[derive(Debug, Serialize, Deserialize)]
struct Plan {
    base: String,
    secret: String,
    users: usize,
    departments: usize,
    warmup_ms: u64,
    seconds: u64,
    starts_per_sec: f64,
    seed: u64,
}

/// One operation's figures over a window.
#[derive(Debug, Default, Serialize, Deserialize)]
struct OpFigures {
    count: usize,
    per_sec: Option<f64>,
    p50_ms: Option<f64>,
    p95_ms: Option<f64>,
    p99_ms: Option<f64>,
    max_ms: Option<f64>,
}

impl OpFigures {
    fn of(samples: &mut [f64], seconds: f64) -> Self {
        samples.sort_by(f64::total_cmp);
        Self {
            count: samples.len(),
            per_sec: (seconds > 0.0).then(|| round3(samples.len() as f64 / seconds)),
            p50_ms: percentile(samples, 50.0).map(round3),
            p95_ms: percentile(samples, 95.0).map(round3),
            p99_ms: percentile(samples, 99.0).map(round3),
            max_ms: samples.last().copied().map(round3),
        }
    }
}

/// The closed loop's figures, as the load generator reports them.
#[derive(Debug, Default, Serialize, Deserialize)]
struct ClosedFigures {
    seconds: f64,
    ops: BTreeMap<String, OpFigures>,
    requests_per_sec: Option<f64>,
    errors: u64,
    warmup_errors: u64,
    errors_by: BTreeMap<String, u64>,
    /// Contention: a task a colleague claimed first is gone from everyone else's view, so
    /// opening or claiming it answers 404 (checked afterwards: the colleague's claim succeeded);
    /// a 409 on a claim or a completion is counted too.
    taken_on_open: u64,
    taken_on_claim: u64,
    claim_conflicts: u64,
    complete_conflicts: u64,
    empty_inboxes: u64,
    tasks_completed: u64,
    starts: u64,
    start_lag_max_ms: Option<f64>,
    cpus: Option<String>,
}

impl ClosedFigures {
    fn contention(&self) -> u64 {
        self.taken_on_open + self.taken_on_claim + self.claim_conflicts + self.complete_conflicts
    }
}

/// One step of the ramp.
#[derive(Debug, Default, Serialize, Deserialize)]
struct RampStep {
    rate: f64,
    /// Requests scheduled in the measured seconds, and those sent (the rest were dropped
    /// because too many were in flight).
    scheduled: u64,
    sent: u64,
    dropped: u64,
    /// Expected answers, contention (a task a colleague took first), errors.
    ok: u64,
    conflicts: u64,
    errors: u64,
    errors_by: BTreeMap<String, u64>,
    /// Answers (any status) that arrived within the measured seconds, per second: what the
    /// server got through, whatever the rate asked of it.
    answered_per_sec: f64,
    /// Latency from each request's scheduled instant to its answer, every operation.
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    max_ms: Option<f64>,
    inbox_p99_ms: Option<f64>,
    /// Claims, completions and starts: the requests that commit.
    write_p99_ms: Option<f64>,
    /// How late the generator sent requests after their scheduled instant.
    send_lag_p99_ms: Option<f64>,
    /// Operations actually sent, by name (an open, claim or completion with no task at hand
    /// becomes an inbox list).
    mix: BTreeMap<String, u64>,
    passed: bool,
}

/// The ramp's figures.
#[derive(Debug, Default, Serialize, Deserialize)]
struct RampFigures {
    steps: Vec<RampStep>,
    saturation_rps: Option<f64>,
    highest_passing_rps: Option<f64>,
}

/// A line the load generator writes on stdout.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
enum Line {
    /// The closed loop's warm-up is over: the measured window begins.
    Measuring,
    Closed {
        figures: ClosedFigures,
    },
    RampStarting,
    Ramp {
        figures: RampFigures,
    },
}

// ---------------------------------------------------------------------------------------------
// The server side: `baton bench w4`.

pub(super) async fn run(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.runs >= 1, "--runs must be at least 1");
    anyhow::ensure!(args.seconds >= 1, "--seconds must be at least 1");
    for run in 1..=args.runs {
        let (report, text) = Box::pin(run_once(args, run)).await?;
        if args.json {
            crate::write_out(&report.to_json())?;
        } else {
            crate::write_out(&report.to_table())?;
            crate::write_out(&text)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Where the two processes run: `Some((server, load))` cores when pinning is possible.
fn pinning() -> Option<(usize, usize)> {
    let cores = std::thread::available_parallelism().map(usize::from).unwrap_or(1);
    let taskset = std::process::Command::new("taskset")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    (cores >= 2 && taskset).then_some((0, 1))
}

/// Pins every thread of this process to `core` (threads started later inherit it).
fn pin_self(core: usize) -> anyhow::Result<()> {
    let status = std::process::Command::new("taskset")
        .args(["-a", "-c", "-p", &core.to_string(), &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status()
        .context("running taskset")?;
    anyhow::ensure!(status.success(), "taskset could not pin the server to core {core}");
    Ok(())
}

/// The CPUs this process may run on, as the kernel says.
fn allowed_cpus() -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    text.lines().find_map(|line| Some(line.strip_prefix("Cpus_allowed_list:")?.trim().to_owned()))
}

/// A secret for this run's tokens: fresh every run, never on a command line.
fn fresh_secret() -> String {
    format!("w4-{}-{}", uuid::Uuid::now_v7().simple(), uuid::Uuid::now_v7().simple())
}

/// The engine's counters and the process's memory at a moment of the run.
#[derive(Debug, Clone, Copy)]
struct Mark {
    stats: baton_engine::StatsSnapshot,
    peak_mb: Option<f64>,
}

async fn run_once(args: &BenchArgs, run: usize) -> anyhow::Result<(Report, String)> {
    let began = std::time::Instant::now();
    let cores = pinning();
    if let Some((server, _)) = cores {
        pin_self(server)?;
    } else {
        tracing::warn!("bench w4: taskset or a second core is missing; server and load generator run unpinned");
    }
    reset_peak_rss();
    let users = args.instances.unwrap_or(USERS);
    anyhow::ensure!(users >= 1, "--instances (users) must be at least 1");
    let departments = DEPARTMENTS.min(users);

    let (url, temporary, _temp) = store_location(args)?;
    let synchronous = match args.synchronous {
        SyncMode::Full => Synchronous::Full,
        SyncMode::Normal => Synchronous::Normal,
    };
    let sqlite = Arc::new(
        SqliteStore::open(&url, SqliteOptions { synchronous, ..SqliteOptions::default() })
            .await
            .with_context(|| format!("cannot open the store {url}"))?,
    );
    let store: Arc<dyn Store> = sqlite.clone();
    store.import(&organisation(users, departments)).await.context("importing the directory")?;
    let mut options = EngineOptions::default();
    if let Some(capacity) = args.cache_capacity {
        options.cache_capacity = capacity;
    }
    let cache_capacity = options.cache_capacity;
    let engine =
        Arc::new(Engine::builder().store(store).options(options).build().await.context("cannot start the engine")?);
    let secret = fresh_secret();
    let auth = Authenticator::new(AuthConfig {
        hs256_secret: Some(secret.clone()),
        audience: vec![AUDIENCE.to_owned()],
        ..AuthConfig::default()
    })
    .await
    .context("the bench's authentication settings")?;
    let app = App::new(Arc::clone(&engine), auth, ApiOptions::default()).await?;
    app.deploy(W4_YAML, "w4.yaml", Actor::User { id: "bench".into() })
        .await
        .map_err(|problem| anyhow::anyhow!("deploying the w4 definition: {problem:?}"))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("listening on a loopback port")?;
    let base = format!("http://{}", listener.local_addr()?);
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    let server = tokio::spawn(baton_api::server::serve(app, listener, async move { stop.cancelled().await }));

    let plan = Plan {
        base,
        secret,
        users,
        departments,
        warmup_ms: u64::try_from(WARMUP.as_millis())?,
        seconds: args.seconds,
        starts_per_sec: STARTS_PER_SEC,
        seed: 0x5eed_0004,
    };
    let outcome = tokio::time::timeout(
        Duration::from_secs(args.timeout_secs),
        drive_load(&plan, cores.map(|(_, load)| load), &engine),
    )
    .await;
    cancel.cancel();
    let _ = server.await;
    let rss_end = rss_mb().map(round3);
    engine.shutdown().await;
    let store_mb = super::store_files_mb(&url).map(|(db, wal)| round3(db + wal));
    sqlite.close().await;
    let driven = match outcome {
        Ok(driven) => driven.context("w4: the load generator")?,
        Err(_) => anyhow::bail!("w4 run {run} did not finish within {} s", args.timeout_secs),
    };

    let mut report = Report::new(args, run, &url);
    let closed = &driven.closed;
    report.errors = closed.errors;
    report.rss_mb = rss_end;
    report.peak_rss_mb = [driven.warmup_peak_mb, driven.closed_mark.peak_mb, driven.ramp_peak_mb]
        .into_iter()
        .flatten()
        .reduce(f64::max)
        .map(round3);
    let stats = super::delta(driven.measuring.stats, driven.closed_mark.stats);
    report.commits = Some(stats.commits);
    report.instances = Some(closed.starts);
    report.completions_per_sec = (closed.seconds > 0.0).then(|| round3(closed.tasks_completed as f64 / closed.seconds));
    report.extra("server", json!("in-process API on 127.0.0.1, HTTP/1.1"));
    report.extra("server_cpus", json!(allowed_cpus()));
    report.extra("load_cpus", json!(closed.cpus));
    report.extra("pinned", json!(cores.is_some()));
    let runtime = match args.runtime {
        super::RuntimeKind::MultiThread => "multi-thread",
        super::RuntimeKind::CurrentThread => "current-thread",
    };
    report.extra("runtime", json!(runtime));
    report.extra("store_temporary", json!(temporary));
    report.extra("cache_capacity", json!(cache_capacity));
    report.extra("users", json!(users));
    report.extra("departments", json!(departments));
    report.extra("starts_per_sec_target", json!(STARTS_PER_SEC));
    report.extra("warmup_seconds", json!(WARMUP.as_secs()));
    report.extra("measure_seconds", json!(round3(closed.seconds)));
    report.extra("requests_per_sec", json!(closed.requests_per_sec));
    for op in OPS {
        let figures = closed.ops.get(op.name());
        let [count, per_sec, p50, p95, p99, max] = op.fields();
        report.extra(count, json!(figures.map(|f| f.count)));
        report.extra(per_sec, json!(figures.and_then(|f| f.per_sec)));
        report.extra(p50, json!(figures.and_then(|f| f.p50_ms)));
        report.extra(p95, json!(figures.and_then(|f| f.p95_ms)));
        report.extra(p99, json!(figures.and_then(|f| f.p99_ms)));
        report.extra(max, json!(figures.and_then(|f| f.max_ms)));
    }
    report.extra("tasks_completed", json!(closed.tasks_completed));
    report.extra("contention", json!(closed.contention()));
    report.extra("taken_on_open", json!(closed.taken_on_open));
    report.extra("taken_on_claim", json!(closed.taken_on_claim));
    report.extra("claim_conflicts", json!(closed.claim_conflicts));
    report.extra("complete_conflicts", json!(closed.complete_conflicts));
    report.extra("empty_inboxes", json!(closed.empty_inboxes));
    report.extra("errors_by", json!(closed.errors_by));
    report.extra("warmup_errors", json!(closed.warmup_errors));
    report.extra("start_lag_max_ms", json!(closed.start_lag_max_ms));
    report.extra("task_actions", json!(stats.task_actions));
    report.extra("engine_events", json!(stats.events));
    report.extra("incidents", json!(stats.incidents));
    report.extra("peak_rss_measured_mb", json!(driven.closed_mark.peak_mb.map(round3)));
    report.extra("peak_rss_ramp_mb", json!(driven.ramp_peak_mb.map(round3)));
    report.extra("store_mb", json!(store_mb));
    let inbox_p99 = closed.ops.get(Op::Inbox.name()).and_then(|f| f.p99_ms);
    let complete_p99 = closed.ops.get(Op::Complete.name()).and_then(|f| f.p99_ms);
    let inbox_met = inbox_p99.is_some_and(|p| p <= INBOX_P99_TARGET_MS);
    let complete_met = complete_p99.is_some_and(|p| p <= COMPLETE_P99_TARGET_MS);
    let errors_met = closed.errors == 0;
    report.extra("target_inbox_p99_ms", json!(INBOX_P99_TARGET_MS));
    report.extra("target_inbox_p99_met", json!(inbox_met));
    report.extra("target_complete_p99_ms", json!(COMPLETE_P99_TARGET_MS));
    report.extra("target_complete_p99_met", json!(complete_met));
    report.extra("target_errors_met", json!(errors_met));
    let ramp = &driven.ramp;
    report.extra("saturation_p99_ms", json!(SATURATION_P99_MS));
    report.extra("saturation_rps", json!(ramp.saturation_rps));
    report.extra("highest_passing_rps", json!(ramp.highest_passing_rps));
    if args.json {
        // The text report shows the ramp as a table instead.
        report.extra("ramp", serde_json::to_value(&ramp.steps)?);
    }
    report.seconds = round3(began.elapsed().as_secs_f64());

    let text = summary(closed, ramp, [(inbox_p99, inbox_met), (complete_p99, complete_met)], errors_met);
    Ok((report, text))
}

/// What the load generator reported, and the server's marks taken as it went.
struct Driven {
    warmup_peak_mb: Option<f64>,
    measuring: Mark,
    closed_mark: Mark,
    closed: ClosedFigures,
    ramp_peak_mb: Option<f64>,
    ramp: RampFigures,
}

/// Starts the load generator (pinned to `core` when given), hands it the plan, and follows its
/// lines, marking the engine's counters and the memory peak at each phase.
async fn drive_load(plan: &Plan, core: Option<usize>, engine: &Engine) -> anyhow::Result<Driven> {
    let exe = std::env::current_exe().context("finding this executable")?;
    let mut command = match core {
        Some(core) => {
            let mut command = tokio::process::Command::new("taskset");
            command.arg("-c").arg(core.to_string()).arg(&exe);
            command
        }
        None => tokio::process::Command::new(&exe),
    };
    command.args(["bench", "w4-load"]).stdin(Stdio::piped()).stdout(Stdio::piped()).kill_on_drop(true);
    let mut child = command.spawn().context("starting the load generator")?;
    let mut stdin = child.stdin.take().context("the load generator's stdin")?;
    stdin.write_all(&serde_json::to_vec(plan)?).await?;
    drop(stdin);
    let stdout = child.stdout.take().context("the load generator's stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let mark = |peak_mb| Mark { stats: engine.stats(), peak_mb };
    let (mut warmup_peak_mb, mut measuring, mut closed_mark, mut closed, mut ramp_peak_mb, mut ramp) =
        (None, None, None, None, None, None);
    while let Some(line) = lines.next_line().await? {
        let line: Line =
            serde_json::from_str(&line).with_context(|| format!("a line of the load generator: {line}"))?;
        match line {
            Line::Measuring => {
                warmup_peak_mb = peak_rss_mb();
                reset_peak_rss();
                measuring = Some(mark(None));
            }
            Line::Closed { figures } => {
                closed_mark = Some(mark(peak_rss_mb()));
                closed = Some(figures);
            }
            Line::RampStarting => reset_peak_rss(),
            Line::Ramp { figures } => {
                ramp_peak_mb = peak_rss_mb();
                ramp = Some(figures);
            }
        }
    }
    let status = child.wait().await?;
    anyhow::ensure!(status.success(), "the load generator ended with {status}");
    Ok(Driven {
        warmup_peak_mb,
        measuring: measuring.context("the load generator never started measuring")?,
        closed_mark: closed_mark.context("the load generator did not report the closed loop")?,
        closed: closed.context("no closed-loop figures")?,
        ramp_peak_mb,
        ramp: ramp.context("no ramp figures")?,
    })
}

/// The human part of the text report: per operation, the targets, and the ramp.
fn summary(closed: &ClosedFigures, ramp: &RampFigures, p99s: [(Option<f64>, bool); 2], errors_met: bool) -> String {
    let show = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
    let mut text = String::new();
    let _ = writeln!(text, "\nclosed loop, {:.0} s measured", closed.seconds);
    let _ = writeln!(
        text,
        "{:<10} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "op", "count", "per s", "p50 ms", "p95 ms", "p99 ms", "max ms"
    );
    for op in OPS {
        if let Some(f) = closed.ops.get(op.name()) {
            let _ = writeln!(
                text,
                "{:<10} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
                op.name(),
                f.count,
                show(f.per_sec),
                show(f.p50_ms),
                show(f.p95_ms),
                show(f.p99_ms),
                show(f.max_ms)
            );
        }
    }
    let _ = writeln!(
        text,
        "tasks completed {} ({:.1}/s); contention {} (taken by a colleague: {} on open, {} on claim; 409s: {} on claim, {} on complete); empty inboxes {}",
        closed.tasks_completed,
        closed.tasks_completed as f64 / closed.seconds.max(1e-9),
        closed.contention(),
        closed.taken_on_open,
        closed.taken_on_claim,
        closed.claim_conflicts,
        closed.complete_conflicts,
        closed.empty_inboxes
    );
    let verdict = |met: bool| if met { "met" } else { "MISSED" };
    let [(inbox, inbox_met), (complete, complete_met)] = p99s;
    let _ = writeln!(text, "\ntargets");
    let _ = writeln!(text, "  p99 inbox list <= {INBOX_P99_TARGET_MS} ms: {} ms, {}", show(inbox), verdict(inbox_met));
    let _ = writeln!(
        text,
        "  p99 complete <= {COMPLETE_P99_TARGET_MS} ms: {} ms, {}",
        show(complete),
        verdict(complete_met)
    );
    let _ = writeln!(text, "  errors 0: {}, {}", closed.errors, verdict(errors_met));
    let _ = writeln!(
        text,
        "\nopen-loop ramp (latency from the scheduled instant; mix 60% inbox, 10% each open, claim, complete, start)"
    );
    let _ = writeln!(
        text,
        "{:>8} {:>10} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>9}",
        "rate/s",
        "answered/s",
        "errors",
        "taken",
        "p50 ms",
        "p99 ms",
        "inbox p99",
        "write p99",
        "max ms",
        "dropped",
        "lag p99"
    );
    for s in &ramp.steps {
        let _ = writeln!(
            text,
            "{:>8} {:>10.0} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>9}{}",
            s.rate,
            s.answered_per_sec,
            s.errors,
            s.conflicts,
            show(s.p50_ms),
            show(s.p99_ms),
            show(s.inbox_p99_ms),
            show(s.write_p99_ms),
            show(s.max_ms),
            s.dropped,
            show(s.send_lag_p99_ms),
            if s.passed { "" } else { "  <- p99 over 100 ms" }
        );
    }
    for s in ramp.steps.iter().filter(|s| !s.errors_by.is_empty()) {
        let _ = writeln!(text, "errors at {} req/s: {}", s.rate, json!(s.errors_by));
    }
    match ramp.saturation_rps {
        Some(rate) => {
            let _ = writeln!(
                text,
                "saturation point: {rate} req/s (highest rate with p99 <= {SATURATION_P99_MS} ms: {})",
                ramp.highest_passing_rps.map_or_else(|| "none".to_owned(), |r| r.to_string())
            );
        }
        None => {
            let _ = writeln!(text, "saturation point: not reached up to {} req/s", RAMP_RATES[RAMP_RATES.len() - 1]);
        }
    }
    text
}

// ---------------------------------------------------------------------------------------------
// The load generator: `baton bench w4-load`, its plan on stdin.

pub(super) async fn load() -> anyhow::Result<ExitCode> {
    // Read once, before any load runs: blocking is harmless here.
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).context("reading the plan on stdin")?;
    let plan: Plan = serde_json::from_str(&text).context("the plan on stdin")?;
    let generator = Arc::new(Generator::new(&plan).await?);
    let mut closed = Box::pin(generator.clone().closed_loop(&plan)).await;
    closed.cpus = allowed_cpus();
    emit(&Line::Closed { figures: closed })?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    emit(&Line::RampStarting)?;
    let ramp = Box::pin(generator.ramp(plan.seed)).await;
    emit(&Line::Ramp { figures: ramp })?;
    Ok(ExitCode::SUCCESS)
}

fn emit(line: &Line) -> anyhow::Result<()> {
    crate::write_out(&serde_json::to_string(line)?)
}

/// An inbox page, as much of it as the users read.
#[derive(Debug, Deserialize)]
struct InboxPage {
    items: Vec<InboxItem>,
}

#[derive(Debug, Deserialize)]
struct InboxItem {
    reference: String,
    task: TaskView,
}

#[derive(Debug, Deserialize)]
struct TaskView {
    #[serde(default)]
    assignee: Option<String>,
}

/// An answer: its status (none on a transport error), its latency, and what was read of it.
struct Reply {
    status: Option<StatusCode>,
    took_ms: f64,
    /// The unowned tasks of an inbox page (their `instance/seq` paths).
    unowned: Vec<String>,
    error: Option<String>,
}

impl Reply {
    fn ok(&self, op: Op) -> bool {
        self.status.is_some_and(|s| op.expected(s)) && self.error.is_none()
    }

    fn conflict(&self, op: Op) -> bool {
        matches!(op, Op::Claim | Op::Complete) && self.status == Some(StatusCode::CONFLICT)
    }

    /// A task gone from the caller's view: a colleague may have claimed it (checked later).
    fn gone(&self, op: Op) -> bool {
        matches!(op, Op::Open | Op::Claim) && self.status == Some(StatusCode::NOT_FOUND)
    }

    fn describe(&self) -> String {
        match (&self.status, &self.error) {
            (_, Some(error)) => error.clone(),
            (Some(status), None) => status.as_u16().to_string(),
            (None, None) => "no answer".to_owned(),
        }
    }
}

/// The closed loop's counts, per user (merged at the end).
#[derive(Debug, Default)]
struct Tally {
    samples: [Vec<f64>; 5],
    errors: u64,
    warmup_errors: u64,
    errors_by: BTreeMap<String, u64>,
    claim_conflicts: u64,
    complete_conflicts: u64,
    /// Opens and claims answered 404, with their task and whether measured: contention if a
    /// colleague's claim of the task succeeded, errors otherwise.
    gone: Vec<(Op, String, bool)>,
    empty_inboxes: u64,
    tasks_completed: u64,
    starts: u64,
    start_lag_max_ms: f64,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        for (mine, theirs) in self.samples.iter_mut().zip(other.samples) {
            mine.extend(theirs);
        }
        self.errors += other.errors;
        self.warmup_errors += other.warmup_errors;
        for (key, count) in other.errors_by {
            *self.errors_by.entry(key).or_default() += count;
        }
        self.claim_conflicts += other.claim_conflicts;
        self.complete_conflicts += other.complete_conflicts;
        self.gone.extend(other.gone);
        self.empty_inboxes += other.empty_inboxes;
        self.tasks_completed += other.tasks_completed;
        self.starts += other.starts;
        self.start_lag_max_ms = self.start_lag_max_ms.max(other.start_lag_max_ms);
    }

    /// Counts a reply of `op` (about `task`): its latency when measured; its error, if any.
    /// Returns whether it was the expected answer.
    fn record(&mut self, op: Op, reply: &Reply, measured: bool, task: Option<&str>) -> bool {
        if measured && reply.status.is_some() {
            self.samples[op.index()].push(reply.took_ms);
        }
        if reply.ok(op) {
            return true;
        }
        if reply.gone(op)
            && let Some(task) = task
        {
            self.gone.push((op, task.to_owned(), measured));
            return false;
        }
        if reply.conflict(op) {
            if measured {
                match op {
                    Op::Claim => self.claim_conflicts += 1,
                    _ => self.complete_conflicts += 1,
                }
            }
            return false;
        }
        self.error(op, &reply.describe(), measured);
        false
    }

    fn error(&mut self, op: Op, what: &str, measured: bool) {
        if measured {
            self.errors += 1;
            *self.errors_by.entry(format!("{} {what}", op.name())).or_default() += 1;
        } else {
            self.warmup_errors += 1;
        }
        log_error(op, what);
    }
}

static LOGGED: AtomicU64 = AtomicU64::new(0);

fn log_error(op: Op, what: &str) {
    let logged = LOGGED.fetch_add(1, Ordering::Relaxed);
    if logged < LOGGED_ERRORS {
        tracing::error!("bench w4: {} answered {what}", op.name());
    } else if logged == LOGGED_ERRORS {
        tracing::error!("bench w4: more errors follow; they are only counted");
    }
}

/// Tasks seen during the ramp: unowned ones per department (from inbox pages), and those
/// claimed and not yet completed, with who claimed them.
#[derive(Debug, Default)]
struct Pools {
    unowned: Vec<VecDeque<String>>,
    seen: HashSet<String>,
    claimed: VecDeque<(usize, String)>,
}

/// One ramp request's outcome.
struct Slot {
    op: Op,
    measured: bool,
    /// From the scheduled instant to the answer (or the failure).
    latency_ms: f64,
    lag_ms: f64,
    ok: bool,
    conflict: bool,
    /// An open or claim answered 404: its task (contention if a colleague claimed it).
    gone: Option<String>,
    /// What went wrong, when neither expected nor contention.
    failure: Option<String>,
    /// Whether an answer came (any status), and when the request ended.
    answered: bool,
    done: Instant,
}

struct Generator {
    client: reqwest::Client,
    base: String,
    users: usize,
    departments: usize,
    user_tokens: Vec<String>,
    intake_tokens: Vec<String>,
    pools: Mutex<Pools>,
    /// Every task a simulated user claimed (a 404 on another's open or claim of it is
    /// contention).
    claimed: Mutex<HashSet<String>>,
    in_flight: AtomicUsize,
}

impl Generator {
    async fn new(plan: &Plan) -> anyhow::Result<Self> {
        let auth = Authenticator::new(AuthConfig {
            hs256_secret: Some(plan.secret.clone()),
            audience: vec![AUDIENCE.to_owned()],
            ..AuthConfig::default()
        })
        .await?;
        let ttl = Duration::from_secs(6 * 3_600);
        let now = chrono::Utc::now();
        let user_tokens =
            (0..plan.users).map(|u| auth.issue(&user_id(u), &[], ttl, now)).collect::<Result<Vec<_>, _>>()?;
        let intake = [Grant::parse("ops:bench")?];
        let intake_tokens = (0..INTAKE_ACCOUNTS)
            .map(|i| auth.issue(&intake_id(i), &intake, ttl, now))
            .collect::<Result<Vec<_>, _>>()?;
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(300))
            .build()
            .context("the HTTP client")?;
        Ok(Self {
            client,
            base: plan.base.clone(),
            users: plan.users,
            departments: plan.departments,
            user_tokens,
            intake_tokens,
            pools: Mutex::new(Pools {
                unowned: (0..plan.departments).map(|_| VecDeque::new()).collect(),
                ..Pools::default()
            }),
            claimed: Mutex::new(HashSet::new()),
            in_flight: AtomicUsize::new(0),
        })
    }

    fn claimed(&self, task: &str) {
        if let Ok(mut claimed) = self.claimed.lock() {
            claimed.insert(task.to_owned());
        }
    }

    fn was_claimed(&self, task: &str) -> bool {
        self.claimed.lock().is_ok_and(|claimed| claimed.contains(task))
    }

    fn token(&self, user: usize) -> &str {
        self.user_tokens.get(user).map_or("", String::as_str)
    }

    /// Sends one request of `op`; `task` is the `instance/seq` path of the task it is about.
    async fn send(&self, op: Op, token: &str, task: Option<&str>, start_input: Option<Value>) -> Reply {
        let task = task.unwrap_or_default();
        let (method, path) = match op {
            Op::Inbox => (Method::GET, format!("/api/v1/tasks?limit={INBOX_LIMIT}")),
            Op::Open => (Method::GET, format!("/api/v1/tasks/{task}")),
            Op::Claim => (Method::POST, format!("/api/v1/tasks/{task}/claim")),
            Op::Complete => (Method::POST, format!("/api/v1/tasks/{task}/complete")),
            Op::Start => (Method::POST, "/api/v1/instances".to_owned()),
        };
        let mut request = self.client.request(method, format!("{}{path}", self.base)).bearer_auth(token);
        match op {
            Op::Complete => request = request.header("content-type", "application/json").body(COMPLETION),
            Op::Start => {
                let body = json!({ "definition": DEFINITION, "input": start_input.unwrap_or(Value::Null) });
                request = request.json(&body);
            }
            _ => {}
        }
        let began = Instant::now();
        let mut reply = Reply { status: None, took_ms: 0.0, unowned: Vec::new(), error: None };
        match request.send().await {
            Ok(response) => {
                let status = response.status();
                let body = response.bytes().await;
                reply.took_ms = ms(began.elapsed());
                reply.status = Some(status);
                match body {
                    Err(err) => reply.error = Some(format!("{status}, body: {err}")),
                    Ok(body) if status == StatusCode::OK && op == Op::Inbox => {
                        match serde_json::from_slice::<InboxPage>(&body) {
                            Ok(page) => {
                                reply.unowned = page
                                    .items
                                    .into_iter()
                                    .filter(|item| item.task.assignee.is_none())
                                    .map(|item| item.reference.replacen(':', "/", 1))
                                    .collect();
                            }
                            Err(err) => reply.error = Some(format!("an inbox page that does not parse: {err}")),
                        }
                    }
                    Ok(_) => {}
                }
            }
            Err(err) => {
                reply.took_ms = ms(began.elapsed());
                reply.error = Some(format!("transport: {err}"));
            }
        }
        reply
    }

    /// The closed loop: every user in their own task, the starts on their schedule.
    async fn closed_loop(self: Arc<Self>, plan: &Plan) -> ClosedFigures {
        let origin = Instant::now();
        let measure_from = origin + Duration::from_millis(plan.warmup_ms);
        let end = measure_from + Duration::from_secs(plan.seconds);
        let mut users = JoinSet::new();
        for u in 0..plan.users {
            let generator = self.clone();
            let seed = plan.seed ^ (u as u64).wrapping_mul(0x9e37_79b9);
            users.spawn(async move { generator.user(u, seed, measure_from, end).await });
        }
        let starter = tokio::spawn(self.clone().starter(plan.starts_per_sec, origin, measure_from, end));
        tokio::time::sleep_until(measure_from).await;
        if let Err(err) = emit(&Line::Measuring) {
            tracing::error!("bench w4: {err:#}");
        }
        let mut tally = Tally::default();
        while let Some(joined) = users.join_next().await {
            match joined {
                Ok(user) => tally.merge(user),
                Err(err) => {
                    tally.errors += 1;
                    tracing::error!("bench w4: a user task failed: {err}");
                }
            }
        }
        match starter.await {
            Ok(starts) => tally.merge(starts),
            Err(err) => {
                tally.errors += 1;
                tracing::error!("bench w4: the starter failed: {err}");
            }
        }
        let (mut taken_on_open, mut taken_on_claim) = (0, 0);
        for (op, task, measured) in std::mem::take(&mut tally.gone) {
            if !self.was_claimed(&task) {
                tally.error(op, "404 on a task nobody claimed", measured);
            } else if measured && op == Op::Open {
                taken_on_open += 1;
            } else if measured {
                taken_on_claim += 1;
            }
        }
        let seconds = plan.seconds as f64;
        let mut ops = BTreeMap::new();
        let mut answered = 0;
        for op in OPS {
            let figures = OpFigures::of(&mut tally.samples[op.index()], seconds);
            answered += figures.count;
            ops.insert(op.name().to_owned(), figures);
        }
        ClosedFigures {
            seconds,
            ops,
            requests_per_sec: Some(round3(answered as f64 / seconds)),
            errors: tally.errors,
            warmup_errors: tally.warmup_errors,
            errors_by: tally.errors_by,
            taken_on_open,
            taken_on_claim,
            claim_conflicts: tally.claim_conflicts,
            complete_conflicts: tally.complete_conflicts,
            empty_inboxes: tally.empty_inboxes,
            tasks_completed: tally.tasks_completed,
            starts: tally.starts,
            start_lag_max_ms: Some(round3(tally.start_lag_max_ms)),
            cpus: None,
        }
    }

    /// One user: think, list the inbox, and work on an unowned task if the page shows one.
    async fn user(&self, u: usize, seed: u64, measure_from: Instant, end: Instant) -> Tally {
        let mut rng = SplitMix(seed);
        let mut tally = Tally::default();
        let token = self.token(u);
        loop {
            let think = THINK_MS.0 + rng.below(usize::try_from(THINK_MS.1 - THINK_MS.0 + 1).unwrap_or(1)) as u64;
            let wake = Instant::now() + Duration::from_millis(think);
            if wake >= end {
                break;
            }
            tokio::time::sleep_until(wake).await;
            let measured = wake >= measure_from;
            let inbox = self.send(Op::Inbox, token, None, None).await;
            if !tally.record(Op::Inbox, &inbox, measured, None) {
                continue;
            }
            if inbox.unowned.is_empty() {
                tally.empty_inboxes += u64::from(measured);
                continue;
            }
            let task = &inbox.unowned[rng.below(inbox.unowned.len())];
            let opened = self.send(Op::Open, token, Some(task), None).await;
            if !tally.record(Op::Open, &opened, measured, Some(task)) {
                continue;
            }
            let claimed = self.send(Op::Claim, token, Some(task), None).await;
            if !tally.record(Op::Claim, &claimed, measured, Some(task)) {
                continue;
            }
            self.claimed(task);
            let completed = self.send(Op::Complete, token, Some(task), None).await;
            if tally.record(Op::Complete, &completed, measured, Some(task)) {
                tally.tasks_completed += u64::from(measured);
            }
        }
        tally
    }

    /// Starts at a fixed rate from `origin` to `end`, each in its own task (a slow answer does
    /// not hold the next start back).
    async fn starter(self: Arc<Self>, per_sec: f64, origin: Instant, measure_from: Instant, end: Instant) -> Tally {
        let mut set = JoinSet::new();
        let mut tally = Tally::default();
        for k in 0_u64.. {
            let due = origin + Duration::from_secs_f64(k as f64 / per_sec);
            if due >= end {
                break;
            }
            tokio::time::sleep_until(due).await;
            let generator = self.clone();
            let measured = due >= measure_from;
            set.spawn(async move {
                let lag_ms = ms(Instant::now().saturating_duration_since(due));
                let k = usize::try_from(k).unwrap_or_default();
                let input = json!({ "department": department_id(k % generator.departments), "request": k });
                let token = generator.intake_tokens.get(k % INTAKE_ACCOUNTS).map_or("", String::as_str);
                let reply = generator.send(Op::Start, token, None, Some(input)).await;
                (measured, lag_ms, reply)
            });
        }
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok((measured, lag_ms, reply)) => {
                    if tally.record(Op::Start, &reply, measured, None) && measured {
                        tally.starts += 1;
                    }
                    if measured {
                        tally.start_lag_max_ms = tally.start_lag_max_ms.max(lag_ms);
                    }
                }
                Err(err) => {
                    tally.errors += 1;
                    tracing::error!("bench w4: a start task failed: {err}");
                }
            }
        }
        tally
    }

    /// The open-loop ramp: each rate in turn until one's p99 passes the saturation latency.
    async fn ramp(self: Arc<Self>, seed: u64) -> RampFigures {
        let mut figures = RampFigures::default();
        for (i, rate) in RAMP_RATES.into_iter().enumerate() {
            let step = self.clone().ramp_step(rate, seed.wrapping_add(i as u64)).await;
            let passed = step.passed;
            figures.steps.push(step);
            if passed {
                figures.highest_passing_rps = Some(rate);
            } else {
                figures.saturation_rps = Some(rate);
                break;
            }
            tokio::time::sleep(STEP_PAUSE).await;
        }
        figures
    }

    /// One rate: requests of the mix on a fixed schedule, whatever the answers.
    async fn ramp_step(self: Arc<Self>, rate: f64, seed: u64) -> RampStep {
        let total = (rate * (STEP_WARMUP + STEP_MEASURE).as_secs_f64()).round() as u64;
        let first_measured = (rate * STEP_WARMUP.as_secs_f64()).round() as u64;
        let origin = Instant::now() + Duration::from_millis(10);
        let mut set = JoinSet::new();
        let mut step = RampStep { rate, ..RampStep::default() };
        let mut next = 0_u64;
        while next < total {
            tokio::time::sleep_until(origin + Duration::from_secs_f64(next as f64 / rate)).await;
            let now = Instant::now();
            while next < total {
                let due = origin + Duration::from_secs_f64(next as f64 / rate);
                if due > now {
                    break;
                }
                let measured = next >= first_measured;
                step.scheduled += u64::from(measured);
                if self.in_flight.load(Ordering::Relaxed) >= MAX_IN_FLIGHT {
                    step.dropped += u64::from(measured);
                } else {
                    step.sent += u64::from(measured);
                    self.in_flight.fetch_add(1, Ordering::Relaxed);
                    let generator = self.clone();
                    let slot = next;
                    set.spawn(async move {
                        let done = generator.slot(slot, seed, due, measured).await;
                        generator.in_flight.fetch_sub(1, Ordering::Relaxed);
                        done
                    });
                }
                next += 1;
            }
        }
        let (mut all, mut inbox, mut writes, mut lags) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let window = (origin + STEP_WARMUP, origin + STEP_WARMUP + STEP_MEASURE);
        let mut answered_in_window = 0_u64;
        let drained = tokio::time::timeout(REQUEST_TIMEOUT + Duration::from_secs(5), async {
            while let Some(joined) = set.join_next().await {
                let Ok(slot) = joined else {
                    step.errors += 1;
                    continue;
                };
                answered_in_window += u64::from(slot.answered && slot.done >= window.0 && slot.done < window.1);
                if !slot.measured {
                    continue;
                }
                // Every request of the step has answered: a colleague's claim is in by now.
                let conflict = slot.conflict || slot.gone.as_deref().is_some_and(|task| self.was_claimed(task));
                if !slot.ok && !conflict {
                    let what = slot.failure.as_deref().unwrap_or("404 on a task nobody claimed");
                    log_error(slot.op, what);
                    *step.errors_by.entry(format!("{} {what}", slot.op.name())).or_default() += 1;
                }
                *step.mix.entry(slot.op.name().to_owned()).or_default() += 1;
                step.ok += u64::from(slot.ok);
                step.conflicts += u64::from(conflict);
                step.errors += u64::from(!slot.ok && !conflict);
                all.push(slot.latency_ms);
                lags.push(slot.lag_ms);
                match slot.op {
                    Op::Inbox => inbox.push(slot.latency_ms),
                    Op::Claim | Op::Complete | Op::Start => writes.push(slot.latency_ms),
                    Op::Open => {}
                }
            }
        })
        .await;
        if drained.is_err() {
            // Whatever is still in flight never answered: errors, and slower than anything.
            let unanswered = set.len() as u64;
            step.errors += unanswered;
            step.errors_by.insert("no answer before the client's timeout".to_owned(), unanswered);
            set.abort_all();
            all.extend(std::iter::repeat_n(f64::INFINITY, usize::try_from(unanswered).unwrap_or_default()));
        }
        // A dropped request is slower than any answer.
        all.extend(std::iter::repeat_n(f64::INFINITY, usize::try_from(step.dropped).unwrap_or_default()));
        step.answered_per_sec = round3(answered_in_window as f64 / STEP_MEASURE.as_secs_f64());
        let sorted = |v: &mut Vec<f64>| v.sort_by(f64::total_cmp);
        for v in [&mut all, &mut inbox, &mut writes, &mut lags] {
            sorted(v);
        }
        let finite = |v: Option<f64>| v.filter(|v| v.is_finite()).map(round3);
        step.p50_ms = finite(percentile(&all, 50.0));
        step.p99_ms = finite(percentile(&all, 99.0));
        step.max_ms = finite(all.last().copied());
        step.inbox_p99_ms = finite(percentile(&inbox, 99.0));
        step.write_p99_ms = finite(percentile(&writes, 99.0));
        step.send_lag_p99_ms = finite(percentile(&lags, 99.0));
        step.passed = step.dropped == 0
            && drained.is_ok()
            && percentile(&all, 99.0).is_some_and(|p99| p99.is_finite() && p99 <= SATURATION_P99_MS);
        step
    }

    /// One scheduled request of the ramp: the mix says what; a task it needs comes from the
    /// pools (an inbox list stands in when none is at hand).
    async fn slot(&self, slot: u64, seed: u64, due: Instant, measured: bool) -> Slot {
        let lag_ms = ms(Instant::now().saturating_duration_since(due));
        let mut rng = SplitMix(seed ^ slot.wrapping_mul(0x2545_f491_4f6c_dd1d));
        let planned = MIX[usize::try_from(slot % MIX.len() as u64).unwrap_or_default()];
        let user = rng.below(self.users);
        let (op, user, task) = match planned {
            Op::Open => match self.unowned_task(&mut rng, false) {
                Some((department, task)) => (Op::Open, self.user_in(department, &mut rng), Some(task)),
                None => (Op::Inbox, user, None),
            },
            Op::Claim => match self.unowned_task(&mut rng, true) {
                Some((department, task)) => (Op::Claim, self.user_in(department, &mut rng), Some(task)),
                None => (Op::Inbox, user, None),
            },
            Op::Complete => match self.pools.lock().ok().and_then(|mut pools| pools.claimed.pop_front()) {
                Some((owner, task)) => (Op::Complete, owner, Some(task)),
                None => (Op::Inbox, user, None),
            },
            other => (other, user, None),
        };
        let reply = match op {
            Op::Start => {
                let department = department_id(rng.below(self.departments));
                let token = self.intake_tokens.get(rng.below(INTAKE_ACCOUNTS)).map_or("", String::as_str);
                let input = json!({ "department": department, "request": format!("ramp-{seed}-{slot}") });
                self.send(Op::Start, token, None, Some(input)).await
            }
            _ => self.send(op, self.token(user), task.as_deref(), None).await,
        };
        let ok = reply.ok(op);
        let conflict = reply.conflict(op);
        if let Ok(mut pools) = self.pools.lock() {
            match op {
                Op::Inbox if ok => {
                    let department = user % self.departments;
                    for task in reply.unowned.iter() {
                        if pools.seen.insert(task.clone())
                            && let Some(queue) = pools.unowned.get_mut(department)
                        {
                            queue.push_back(task.clone());
                        }
                    }
                }
                Op::Claim if ok => {
                    if let Some(task) = &task {
                        pools.claimed.push_back((user, task.clone()));
                    }
                }
                _ => {}
            }
        }
        if ok
            && op == Op::Claim
            && let Some(task) = &task
        {
            self.claimed(task);
        }
        let gone = if reply.gone(op) { task } else { None };
        let failure = (!ok && !conflict && gone.is_none()).then(|| reply.describe());
        let done = Instant::now();
        let latency_ms = ms(done.saturating_duration_since(due));
        let answered = reply.status.is_some();
        Slot { op, measured, latency_ms, lag_ms, ok, conflict, gone, failure, answered, done }
    }

    /// An unowned task seen in some department's inbox, starting from a random department;
    /// `take` removes it (a claim), otherwise it stays (an open).
    fn unowned_task(&self, rng: &mut SplitMix, take: bool) -> Option<(usize, String)> {
        let mut pools = self.pools.lock().ok()?;
        let first = rng.below(self.departments);
        (0..self.departments).map(|i| (first + i) % self.departments).find_map(|d| {
            let queue = pools.unowned.get_mut(d)?;
            let task = if take { queue.pop_front() } else { queue.front().cloned() }?;
            Some((d, task))
        })
    }

    /// A random user of department `d`.
    fn user_in(&self, d: usize, rng: &mut SplitMix) -> usize {
        let per_department = self.users.div_ceil(self.departments);
        let u = d + self.departments * rng.below(per_department);
        if u < self.users { u } else { d }
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1_000.0
}
