//! The Serverless Workflow conformance test kit (CTK), run against Baton's interpreter.
//!
//! Every scenario in `features/` (copied verbatim from the specification, see its README) runs
//! through [`run_definition`], the same entry point `baton run` uses. Scenarios that call the
//! Swagger Petstore or httpbin reach local stand-ins (`mock.rs`) instead of the internet.
//!
//! `cargo test -p baton-workflows --test ctk` runs it; libtest's usual arguments work too
//! (see [`Selection`]). A step with no definition here fails its scenario, and the process exits
//! non-zero when any scenario fails.

mod mock;

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::Duration;

use baton_engine::ActivityRegistry;
use baton_workflows::parse::{ParseLimits, parse};
use baton_workflows::run::{RunOptions, RunOutcome, RunReport, run_definition};
use cucumber::gherkin::{Feature, Rule, Scenario, Step};
use cucumber::writer::Stats as _;
use cucumber::{World as _, given, then, when};
use serde_json::{Map, Value};

use crate::mock::{Endpoints, MockServers};

/// Where the stand-ins listen, set once before the first scenario starts.
static MOCK: OnceLock<Endpoints> = OnceLock::new();

/// The longest a single run may take. The scenarios need well under a second each; the bound
/// only turns a hung run into a failed scenario instead of a hung `cargo test`.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// The standard error kinds of the DSL reference ("Standard error types").
const STANDARD_ERROR_KINDS: [&str; 8] = [
    "configuration",
    "validation",
    "expression",
    "authentication",
    "authorization",
    "timeout",
    "communication",
    "runtime",
];

/// One scenario's state; cucumber builds a fresh one for each scenario.
#[derive(Debug, cucumber::World)]
#[world(init = Self::new)]
struct Ctk {
    mock: Endpoints,
    /// `<feature file>: <scenario name>`, the definition's name in diagnostics.
    scenario: String,
    /// The definition as it will run (its public service URLs already pointed at the stand-ins).
    definition: Option<String>,
    input: Option<Value>,
    report: Option<RunReport>,
}

impl Ctk {
    fn new() -> Self {
        let mock = *MOCK.get().expect("the mock servers start before any scenario");
        Self { mock, scenario: String::new(), definition: None, input: None, report: None }
    }

    fn report(&self) -> &RunReport {
        self.report.as_ref().expect("no run to check: the scenario has no `When the workflow is executed` step")
    }

    /// The workflow's output; fails the step when the workflow did not complete.
    fn output(&self) -> &Value {
        match &self.report().outcome {
            RunOutcome::Completed { output } => output,
            RunOutcome::Faulted { .. } => panic!("expected the workflow to complete, but it faulted\n{}", self.dump()),
        }
    }

    /// The RFC 7807 problem the workflow faulted with; fails the step when it completed.
    fn error(&self) -> &Value {
        match &self.report().outcome {
            RunOutcome::Faulted { error } => error,
            RunOutcome::Completed { .. } => panic!("expected the workflow to fault, but it completed\n{}", self.dump()),
        }
    }

    /// The names of the tasks in the order they started, one entry per `task.started` event.
    ///
    /// The ordering steps read only these: "A should run first" means the first task to start
    /// was A, "A should run last" that the last task to start was A, and "A should run after B"
    /// that A's first start came after B's first start ("before" the reverse). A composite task
    /// starts before its subtasks, so with nesting "last" names the innermost task started last,
    /// not the task that completed last.
    fn started(&self) -> Vec<&str> {
        self.report()
            .trace
            .iter()
            .filter(|event| event.kind == "task.started")
            .map(|event| event.task.as_str())
            .collect()
    }

    fn first_start(&self, task: &str) -> usize {
        self.started()
            .iter()
            .position(|name| *name == task)
            .unwrap_or_else(|| panic!("task '{task}' never started\n{}", self.dump()))
    }

    /// The run's outcome and trace, for failure messages.
    fn dump(&self) -> String {
        match &self.report {
            Some(report) => serde_json::to_string_pretty(report).unwrap_or_else(|error| error.to_string()),
            None => "(no run)".into(),
        }
    }
}

// --- Arrange -------------------------------------------------------------------------------

#[given(regex = r"^a workflow with definition:$")]
fn definition(world: &mut Ctk, step: &Step) {
    world.definition = Some(world.mock.rewrite(&docstring(step)));
}

#[given(regex = r"^given the workflow input is:$")]
fn input(world: &mut Ctk, step: &Step) {
    world.input = Some(yaml_value(&docstring(step)));
}

// --- Act -----------------------------------------------------------------------------------

#[when(regex = r"^the workflow is executed$")]
async fn execute(world: &mut Ctk) {
    let definition = world.definition.as_deref().expect("no definition: the scenario has no `Given a workflow` step");
    // The built-ins behind `call: http` and `call: openapi`, with their default settings.
    let mut activities = ActivityRegistry::new();
    baton_activities::register(&mut activities, baton_activities::HttpConfig::default());
    let options = RunOptions {
        // A scenario without an input step starts the workflow with an empty object.
        input: world.input.clone().unwrap_or_else(|| Value::Object(Map::new())),
        activities,
        ..RunOptions::default()
    };
    let run = Box::pin(run_definition(definition, &world.scenario, options));
    match tokio::time::timeout(RUN_TIMEOUT, run).await {
        Ok(Ok(report)) => world.report = Some(report),
        Ok(Err(error)) => panic!("the workflow could not run: {error}"),
        Err(_) => panic!("the workflow did not finish within {RUN_TIMEOUT:?}"),
    }
}

// --- Assert: outcome -----------------------------------------------------------------------

#[then(regex = r"^the workflow should complete$")]
fn completes(world: &mut Ctk) {
    world.output();
}

#[then(regex = r"^the workflow should complete with output:$")]
fn completes_with(world: &mut Ctk, step: &Step) {
    let expected = yaml_value(&docstring(step));
    let output = world.output();
    assert!(
        json_eq(output, &expected),
        "workflow output differs\nexpected: {expected}\n  actual: {output}\n{}",
        world.dump()
    );
}

#[then(regex = r"^the workflow should fault$")]
fn faults(world: &mut Ctk) {
    world.error();
}

/// Every field the scenario names must be in the problem with an equal value; fields it does
/// not name are not checked.
#[then(regex = r"^the workflow should fault with error:$")]
fn faults_with(world: &mut Ctk, step: &Step) {
    let expected = yaml_value(&docstring(step));
    let Value::Object(expected) = expected else { panic!("the expected error must be a mapping, found {expected}") };
    let error = world.error();
    for (field, want) in &expected {
        let got = error.get(field).unwrap_or_else(|| panic!("the error has no '{field}'\n{}", world.dump()));
        let equal = match (field.as_str(), want, got) {
            ("type", Value::String(want), Value::String(got)) => {
                canonical_error_type(want) == canonical_error_type(got)
            }
            _ => json_eq(got, want),
        };
        assert!(equal, "error field '{field}' differs\nexpected: {want}\n  actual: {got}\n{}", world.dump());
    }
}

/// The kit and the DSL reference spell the standard error types two ways: try.feature filters on
/// `https://serverlessworkflow.io/dsl/errors/types/<kind>`, while the reference defines
/// `https://serverlessworkflow.io/spec/1.0.0/errors/<kind>`. They name the same eight types, so an
/// expected `type` in either spelling matches the other; any other type must match exactly.
fn canonical_error_type(kind: &str) -> Cow<'_, str> {
    const KIT: &str = "https://serverlessworkflow.io/dsl/errors/types/";
    const REFERENCE: &str = "https://serverlessworkflow.io/spec/1.0.0/errors/";
    match kind.strip_prefix(KIT) {
        Some(name) if STANDARD_ERROR_KINDS.contains(&name) => Cow::Owned(format!("{REFERENCE}{name}")),
        _ => Cow::Borrowed(kind),
    }
}

// --- Assert: output ------------------------------------------------------------------------

/// `the workflow output should have properties 'a', 'b.c'`: each dotted path leads to a value.
#[then(regex = r"^the workflow output should have properties (.+)$")]
fn has_properties(world: &mut Ctk, list: String) {
    let output = world.output();
    for path in quoted_list(&list) {
        assert!(lookup(output, path).is_some(), "the output has no '{path}'\noutput: {output}");
    }
}

#[then(regex = r"^the workflow output should have a '([^']*)' property with value:$")]
fn has_property_with_value(world: &mut Ctk, path: String, step: &Step) {
    let expected = yaml_value(&docstring(step));
    let output = world.output();
    let actual = lookup(output, &path).unwrap_or_else(|| panic!("the output has no '{path}'\noutput: {output}"));
    assert!(json_eq(actual, &expected), "'{path}' differs\nexpected: {expected}\n  actual: {actual}");
}

#[then(regex = r"^the workflow output should have a '([^']*)' property containing (\d+) items$")]
fn has_property_with_items(world: &mut Ctk, path: String, count: usize) {
    let output = world.output();
    let actual = lookup(output, &path).unwrap_or_else(|| panic!("the output has no '{path}'\noutput: {output}"));
    let Value::Array(items) = actual else { panic!("'{path}' is not a sequence: {actual}") };
    assert_eq!(items.len(), count, "'{path}' has {} items, expected {count}: {actual}", items.len());
}

// --- Assert: task order (see `Ctk::started`) -----------------------------------------------

#[then(regex = r"^(\S+) should run first$")]
fn runs_first(world: &mut Ctk, task: String) {
    let started = world.started();
    assert_eq!(started.first().copied(), Some(task.as_str()), "tasks started in this order: {started:?}");
}

#[then(regex = r"^(\S+) should run last$")]
fn runs_last(world: &mut Ctk, task: String) {
    let started = world.started();
    assert_eq!(started.last().copied(), Some(task.as_str()), "tasks started in this order: {started:?}");
}

#[then(regex = r"^(\S+) should run after (\S+)$")]
fn runs_after(world: &mut Ctk, later: String, earlier: String) {
    let (later_at, earlier_at) = (world.first_start(&later), world.first_start(&earlier));
    assert!(later_at > earlier_at, "{later} did not start after {earlier}; started: {:?}", world.started());
}

#[then(regex = r"^(\S+) should run before (\S+)$")]
fn runs_before(world: &mut Ctk, earlier: String, later: String) {
    let (earlier_at, later_at) = (world.first_start(&earlier), world.first_start(&later));
    assert!(earlier_at < later_at, "{earlier} did not start before {later}; started: {:?}", world.started());
}

// --- Values --------------------------------------------------------------------------------

/// A step's docstring as the scenario wrote it. The Gherkin parser keeps the delimiter line's
/// media type (`yaml` in `"""yaml`) as the first line and the block's indentation, so both go.
fn docstring(step: &Step) -> String {
    let raw = step.docstring.as_deref().unwrap_or_else(|| panic!("step '{}' needs a docstring", step.value));
    let body = raw.split_once('\n').map_or("", |(_media_type, body)| body);
    let indent = body
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| line.len() - line.trim_start().len())
        .min()
        .unwrap_or(0);
    let mut text = String::with_capacity(body.len());
    for line in body.lines() {
        text.push_str(line.get(indent..).unwrap_or("").trim_end());
        text.push('\n');
    }
    text
}

/// A YAML document (a docstring) as the JSON value it denotes, read by the parser definitions
/// go through.
fn yaml_value(text: &str) -> Value {
    match parse("docstring", text.as_bytes(), &ParseLimits::default()) {
        Ok(parsed) => parsed.value,
        Err(diagnostics) => {
            let rendered: String = diagnostics.iter().map(|diagnostic| diagnostic.render(text)).collect();
            panic!("invalid YAML:\n{rendered}\n{text}")
        }
    }
}

/// JSON equality, with numbers compared by value: JSON has one number type, so `1` from the
/// scenario's YAML equals `1.0` from a jq filter.
fn json_eq(left: &Value, right: &Value) -> bool {
    match (left, right) {
        (Value::Number(left), Value::Number(right)) => match (left.as_i64(), right.as_i64()) {
            (Some(left), Some(right)) => left == right,
            _ => match (left.as_u64(), right.as_u64()) {
                (Some(left), Some(right)) => left == right,
                _ => left.as_f64().zip(right.as_f64()).is_some_and(|(left, right)| left == right),
            },
        },
        (Value::Array(left), Value::Array(right)) => {
            left.len() == right.len() && left.iter().zip(right).all(|(left, right)| json_eq(left, right))
        }
        (Value::Object(left), Value::Object(right)) => {
            left.len() == right.len()
                && left.iter().all(|(key, value)| right.get(key).is_some_and(|other| json_eq(value, other)))
        }
        _ => left == right,
    }
}

/// The value at a dotted path (`content.id`); a segment indexes a sequence when it is a number.
fn lookup<'v>(value: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.').try_fold(value, |value, segment| match value {
        Value::Object(fields) => fields.get(segment),
        Value::Array(items) => segment.parse::<usize>().ok().and_then(|index| items.get(index)),
        _ => None,
    })
}

/// `'a', 'b.c'` as `["a", "b.c"]`.
fn quoted_list(list: &str) -> Vec<&str> {
    list.split(',')
        .map(|item| {
            let item = item.trim();
            item.strip_prefix('\'')
                .and_then(|item| item.strip_suffix('\''))
                .unwrap_or_else(|| panic!("expected a single-quoted property path, found `{item}`"))
        })
        .collect()
}

// --- Runner --------------------------------------------------------------------------------

/// Which scenarios to run, from the arguments `cargo test` hands every test binary.
///
/// Free arguments are libtest's name filters, matched against `<feature>: <scenario>` (whole
/// name with `--exact`), and `--skip NAME` leaves matching scenarios out. `--list` and
/// `--ignored` run nothing (the kit has no ignored scenarios); libtest's other options
/// (`--nocapture`, `--test-threads N`...) are accepted and have no effect here.
#[derive(Debug, Default)]
struct Selection {
    filters: Vec<String>,
    skips: Vec<String>,
    exact: bool,
    nothing: bool,
}

impl Selection {
    fn from_args(mut args: impl Iterator<Item = String>) -> Self {
        let mut selection = Self::default();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--exact" => selection.exact = true,
                "--list" | "--ignored" => selection.nothing = true,
                "--skip" => selection.skips.extend(args.next()),
                "--test-threads" | "--color" | "--format" | "--logfile" | "-Z" | "--shuffle-seed" => {
                    args.next();
                }
                _ if arg.starts_with('-') => {}
                _ => selection.filters.push(arg),
            }
        }
        selection
    }

    fn includes(&self, name: &str) -> bool {
        let matches = |pattern: &String| if self.exact { name == pattern } else { name.contains(pattern.as_str()) };
        !self.nothing
            && (self.filters.is_empty() || self.filters.iter().any(matches))
            && !self.skips.iter().any(|skip| name.contains(skip.as_str()))
    }
}

fn scenario_name(feature: &Feature, scenario: &Scenario) -> String {
    format!("{}: {}", feature.name, scenario.name)
}

/// Names the scenario's definition after its feature file, for the run's diagnostics.
fn remember_scenario<'a>(
    feature: &'a Feature,
    _rule: Option<&'a Rule>,
    scenario: &'a Scenario,
    world: &'a mut Ctk,
) -> Pin<Box<dyn Future<Output = ()> + 'a>> {
    let file = feature.path.as_ref().and_then(|path| path.file_name()).map(|name| name.to_string_lossy());
    world.scenario = format!("{}: {}", file.as_deref().unwrap_or("features"), scenario.name);
    Box::pin(std::future::ready(()))
}

#[tokio::main]
async fn main() -> ExitCode {
    let selection = Selection::from_args(std::env::args().skip(1));
    if selection.nothing {
        return ExitCode::SUCCESS;
    }
    let mock = match MockServers::start().await {
        Ok(mock) => mock,
        Err(error) => {
            eprintln!("ctk: cannot start the mock servers: {error}");
            return ExitCode::FAILURE;
        }
    };
    MOCK.set(mock.endpoints).expect("the mock servers start once");

    let features = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ctk/features");
    let filtered = !selection.filters.is_empty() || !selection.skips.is_empty();
    let writer = Ctk::cucumber()
        .fail_on_skipped()
        .before(remember_scenario)
        .with_default_cli()
        .filter_run(features, move |feature, _, scenario| selection.includes(&scenario_name(feature, scenario)))
        .await;
    mock.stop();

    let ran = writer.passed_steps() + writer.skipped_steps() + writer.failed_steps();
    if writer.execution_has_failed() {
        eprintln!(
            "ctk: {} failed steps, {} parsing errors, {} hook errors",
            writer.failed_steps(),
            writer.parsing_errors(),
            writer.hook_errors()
        );
        ExitCode::FAILURE
    } else if ran == 0 && !filtered {
        eprintln!("ctk: no scenario ran from {features}");
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
