//! The interpreter, task by task, on a real engine (SQLite, simulated time). Every run is then
//! replayed from its stored history, which must give the same commands and the same end.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use baton_engine::replay::Replayer;
use baton_engine::store::HistoryStore;
use baton_engine::store::sqlite::{SqliteOptions, SqliteStore};
use baton_engine::{ActivityError, ActivityRegistry, Failure, InstanceId, SecretProvider};
use baton_workflows::interp::Workflow;
use baton_workflows::run::{RunOptions, RunOutcome, RunReport, content_hash, load, run_definition};
use serde_json::{Value, json};

fn definition(name: &str, body: &str) -> String {
    format!("document:\n  dsl: '1.0.3'\n  namespace: test\n  name: {name}\n  version: '1.0.0'\n{body}")
}

async fn run_with(source: &str, options: RunOptions) -> RunReport {
    run_keeping_history(source, options).await.0
}

/// Runs, replays, and gives the stored history's payloads too.
async fn run_keeping_history(source: &str, mut options: RunOptions) -> (RunReport, Vec<String>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("run.db");
    options.db = Some(db.clone());
    let secrets = options.secrets.clone();
    let retention = options.event_retention;
    let report = run_definition(source, "test.yaml", options).await.expect("the run ends");
    // The stored history replays to the same end without nondeterminism.
    let program = Arc::new(load(source, "test.yaml").expect("loads"));
    let mut workflow = Workflow::new(program, content_hash(source));
    if let Some(secrets) = secrets {
        workflow = workflow.with_secrets(secrets);
    }
    if let Some(retention) = retention {
        workflow = workflow.with_event_retention(retention);
    }
    let replayer = Replayer::new().orchestration(workflow);
    let store = SqliteStore::open(db.to_str().expect("utf-8"), SqliteOptions::default()).await.expect("open");
    let replay = replayer.replay(&store, &InstanceId::new(report.instance.clone())).await.expect("replay");
    assert_eq!(replay.error, None, "replay of {}", report.instance);
    assert_eq!(replay.replayed_status, Some(replay.status));
    let history = store.history(&InstanceId::new(report.instance.clone()), 0, u32::MAX).await.expect("history");
    (report, history.into_iter().map(|e| e.payload).collect())
}

async fn run(source: &str, input: Value) -> RunReport {
    run_with(source, RunOptions { input, ..RunOptions::default() }).await
}

fn output(report: &RunReport) -> &Value {
    match &report.outcome {
        RunOutcome::Completed { output } => output,
        RunOutcome::Faulted { error } => panic!("the workflow faulted: {error}"),
    }
}

fn error(report: &RunReport) -> &Value {
    match &report.outcome {
        RunOutcome::Faulted { error } => error,
        RunOutcome::Completed { output } => panic!("the workflow completed: {output}"),
    }
}

fn started(report: &RunReport) -> Vec<&str> {
    report.trace.iter().filter(|e| e.kind == "task.started").map(|e| e.task.as_str()).collect()
}

#[tokio::test]
async fn switch_follows_the_matching_case_and_then_jumps() {
    let source = definition(
        "switch",
        r#"do:
  - decide:
      switch:
        - big: { when: '.n > 10', then: large }
        - default: { then: small }
  - small:
      set: { size: small }
      then: end
  - large:
      set: { size: large }
"#,
    );
    assert_eq!(output(&run(&source, json!({"n": 50})).await), &json!({"size": "large"}));
    let report = run(&source, json!({"n": 1})).await;
    assert_eq!(output(&report), &json!({"size": "small"}));
    assert_eq!(started(&report), ["decide", "small"]);
}

#[tokio::test]
async fn for_binds_each_item_and_index_and_threads_the_output() {
    let source = definition(
        "for",
        r#"do:
  - loop:
      for: { each: color, in: '.colors', at: i }
      do:
        - mark:
            set:
              seen: '${ (.seen // []) + [ { c: $color, i: $i } ] }'
"#,
    );
    let report = run(&source, json!({"colors": ["red", "green"]})).await;
    assert_eq!(output(&report), &json!({"seen": [{"c": "red", "i": 0}, {"c": "green", "i": 1}]}));
}

#[tokio::test]
async fn a_for_over_many_items_yields_and_still_finishes() {
    let source = definition(
        "long-for",
        r#"do:
  - loop:
      for: { in: '[range(0; 2500)]' }
      do:
        - add: { set: { total: '${ .total + $item }' } }
"#,
    );
    let report = run(&source, json!({"total": 0})).await;
    assert_eq!(output(&report), &json!({"total": (0..2500).sum::<i64>()}));
}

#[tokio::test]
async fn data_flows_through_input_output_and_export() {
    let source = definition(
        "data-flow",
        r#"input:
  from: '${ { order: .order } }'
do:
  - pick:
      input: { from: '${ .order }' }
      set: { id: '${ .id }', total: '${ .lines | map(.price) | add }' }
      output: { as: '${ { total: .total } }' }
      export: { as: '${ $context + { orderId: $input.id } }' }
  - report:
      set: { total: '${ .total }', order: '${ $context.orderId }' }
output:
  as: '${ { result: . } }'
"#,
    );
    let input = json!({"order": {"id": "o-1", "lines": [{"price": 2}, {"price": 3}]}, "noise": true});
    assert_eq!(output(&run(&source, input).await), &json!({"result": {"total": 5, "order": "o-1"}}));
}

#[tokio::test]
async fn an_if_that_is_false_skips_the_task_and_keeps_the_input() {
    let source = definition(
        "if",
        r#"do:
  - maybe:
      if: '${ .go }'
      set: { went: true }
  - after:
      set: { before: '${ . }' }
"#,
    );
    let report = run(&source, json!({"go": false})).await;
    assert_eq!(output(&report), &json!({"before": {"go": false}}));
    assert!(report.trace.iter().any(|e| e.kind == "task.skipped" && e.task == "maybe"));
}

#[tokio::test]
async fn raise_faults_the_workflow_with_the_task_pointer() {
    let source = definition(
        "raise",
        r#"use:
  errors:
    notFound:
      type: https://example.com/errors/not-found
      status: 404
      title: Not found
do:
  - first: { set: { a: 1 } }
  - fail:
      raise: { error: notFound }
"#,
    );
    let report = run(&source, json!({})).await;
    let error = error(&report);
    assert_eq!(error["type"], "https://example.com/errors/not-found");
    assert_eq!(error["status"], 404);
    assert_eq!(error["instance"], "/do/1/fail");
}

#[tokio::test]
async fn try_catches_a_matching_error_and_binds_it() {
    let source = definition(
        "try",
        r#"do:
  - attempt:
      try:
        - boom:
            raise:
              error:
                type: https://serverlessworkflow.io/spec/1.0.0/errors/communication
                status: 503
                title: Unavailable
      catch:
        errors:
          with:
            type: https://serverlessworkflow.io/dsl/errors/types/communication
            status: 503
        as: failure
        do:
          - note: { set: { caught: '${ $failure.status }', at: '${ $failure.instance }' } }
"#,
    );
    let report = run(&source, json!({})).await;
    assert_eq!(output(&report), &json!({"caught": 503, "at": "/do/0/attempt/try/0/boom"}));
}

#[tokio::test]
async fn an_error_the_filter_does_not_match_goes_through() {
    let source = definition(
        "try-miss",
        r#"do:
  - attempt:
      try:
        - boom:
            raise:
              error: { type: https://example.com/a, status: 400 }
      catch:
        errors: { with: { status: 503 } }
"#,
    );
    assert_eq!(error(&run(&source, json!({})).await)["status"], 400);
}

fn flaky(failures: u32) -> (ActivityRegistry, Arc<AtomicU32>) {
    let calls = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&calls);
    let mut registry = ActivityRegistry::new();
    registry.register("inventory.reserve", move |_ctx, input: Value| {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            if n <= failures {
                let mut failure = Failure::new("https://serverlessworkflow.io/spec/1.0.0/errors/communication", "busy");
                failure.details = Some(json!({
                    "type": "https://serverlessworkflow.io/spec/1.0.0/errors/communication",
                    "status": 503,
                    "title": "Service Unavailable"
                }));
                Err(ActivityError::Failed(failure))
            } else {
                Ok(json!({"reserved": input["sku"], "attempt": n}))
            }
        }
    });
    (registry, calls)
}

const RETRYING: &str = r#"do:
  - reserve:
      try:
        - call:
            call: inventory.reserve
            with: { sku: '${ .sku }' }
      catch:
        errors: { with: { status: 503 } }
        retry:
          delay: { minutes: 1 }
          backoff: { exponential: {} }
          jitter: { from: { seconds: 1 }, to: { seconds: 5 } }
          limit: { attempt: { count: 3 } }
"#;

#[tokio::test]
async fn try_retries_an_activity_with_backoff_on_simulated_time() {
    let (activities, calls) = flaky(2);
    let source = definition("retry", RETRYING);
    let report =
        run_with(&source, RunOptions { input: json!({"sku": "A-1"}), activities, ..RunOptions::default() }).await;
    assert_eq!(output(&report), &json!({"reserved": "A-1", "attempt": 3}));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(report.trace.iter().filter(|e| e.kind == "task.retried").count(), 2);
}

#[tokio::test]
async fn retries_stop_at_the_limit_and_the_error_faults_the_workflow() {
    let (activities, calls) = flaky(10);
    let source = definition("retry-out", RETRYING);
    let report =
        run_with(&source, RunOptions { input: json!({"sku": "A-1"}), activities, ..RunOptions::default() }).await;
    assert_eq!(error(&report)["status"], 503);
    assert_eq!(calls.load(Ordering::SeqCst), 4, "the first attempt and three retries");
}

#[tokio::test]
async fn wait_is_a_durable_timer_fired_by_simulated_time() {
    let source = definition("wait", "do:\n  - pause: { wait: P7D }\n  - after: { set: { waited: true } }\n");
    assert_eq!(output(&run(&source, json!({})).await), &json!({"waited": true}));
}

#[tokio::test]
async fn a_task_timeout_faults_with_the_timeout_error() {
    let source = definition(
        "timeout",
        r#"do:
  - approval:
      listen: { to: { one: { with: { type: com.example.approved } } } }
      timeout: { after: PT2H }
"#,
    );
    let error = error(&run(&source, json!({})).await).clone();
    assert_eq!(error["type"], "https://serverlessworkflow.io/spec/1.0.0/errors/timeout");
    assert_eq!(error["status"], 408);
    assert_eq!(error["instance"], "/do/0/approval");
}

fn event(id: &str, kind: &str, data: Value) -> Value {
    json!({"specversion": "1.0", "id": id, "source": "https://example.com", "type": kind, "data": data})
}

#[tokio::test]
async fn listen_one_skips_events_that_do_not_match_and_reads_data() {
    let source = definition(
        "listen-one",
        r#"do:
  - await:
      listen:
        to:
          one:
            with:
              type: com.example.temperature
              data: '${ .celsius > 38 }'
"#,
    );
    let events = vec![
        event("e1", "com.example.temperature", json!({"celsius": 37})),
        event("e2", "com.example.temperature", json!({"celsius": 39})),
    ];
    let report = run_with(&source, RunOptions { events, ..RunOptions::default() }).await;
    assert_eq!(output(&report), &json!([{"celsius": 39}]));
}

#[tokio::test]
async fn listen_all_waits_for_each_and_correlates() {
    let source = definition(
        "listen-all",
        r#"do:
  - both:
      listen:
        to:
          all:
            - with: { type: com.example.signed }
              correlate: { doc: { from: '${ .data.doc }', expect: '${ .doc }' } }
            - with: { type: com.example.archived }
        read: envelope
"#,
    );
    let events = vec![
        event("a", "com.example.signed", json!({"doc": "other"})),
        event("b", "com.example.archived", json!({"doc": "D-7"})),
        event("c", "com.example.signed", json!({"doc": "D-7"})),
    ];
    let report = run_with(&source, RunOptions { input: json!({"doc": "D-7"}), events, ..RunOptions::default() }).await;
    let ids: Vec<&str> =
        output(&report).as_array().expect("array").iter().map(|e| e["id"].as_str().unwrap_or("")).collect();
    assert_eq!(ids, ["b", "c"]);
}

#[tokio::test]
async fn listen_any_until_a_condition_then_later_listeners_still_get_their_events() {
    let source = definition(
        "listen-any",
        r#"do:
  - collect:
      listen:
        to:
          any:
            - with: { type: com.example.vote }
          until: '${ length >= 2 }'
  - tally: { set: { votes: '${ map(.v) }' } }
  - last:
      listen: { to: { one: { with: { type: com.example.closed } } } }
      output: { as: '${ .[0] }' }
"#,
    );
    let events = vec![
        event("1", "com.example.vote", json!({"v": "yes"})),
        event("2", "com.example.vote", json!({"v": "no"})),
        event("3", "com.example.closed", json!({"by": "chair"})),
    ];
    let report = run_with(&source, RunOptions { events, ..RunOptions::default() }).await;
    assert_eq!(output(&report), &json!({"by": "chair"}));
}

#[tokio::test]
async fn emit_outputs_the_cloud_event_it_sent() {
    let source = definition(
        "emit",
        r#"do:
  - announce:
      emit:
        event:
          with:
            source: https://baton.example/training
            type: com.example.training.scheduled.v1
            data: { session: '${ .session }' }
"#,
    );
    let report = run(&source, json!({"session": "S-1"})).await;
    let event = output(&report);
    assert_eq!(event["type"], "com.example.training.scheduled.v1");
    assert_eq!(event["data"], json!({"session": "S-1"}));
    assert_eq!(event["specversion"], "1.0");
    assert!(event["id"].as_str().is_some_and(|id| id.starts_with(&report.instance)));
    assert!(event["time"].is_string());
}

#[tokio::test]
async fn fork_gives_branch_outputs_in_declared_order() {
    let source = definition(
        "fork",
        r#"do:
  - both:
      fork:
        branches:
          - slow:
              do:
                - pause: { wait: PT1H }
                - say: { set: { b: slow } }
          - fast: { set: { b: fast } }
"#,
    );
    assert_eq!(output(&run(&source, json!({})).await), &json!([{"b": "slow"}, {"b": "fast"}]));
}

#[tokio::test]
async fn a_competing_fork_takes_the_first_branch_and_cancels_the_rest() {
    let source = definition(
        "compete",
        r#"do:
  - race:
      fork:
        compete: true
        branches:
          - slow:
              do:
                - pause: { wait: P1D }
                - say: { set: { winner: slow } }
          - fast:
              do:
                - pause: { wait: PT1M }
                - say: { set: { winner: fast } }
"#,
    );
    let report = run(&source, json!({})).await;
    assert_eq!(output(&report), &json!({"winner": "fast"}));
    assert!(report.trace.iter().any(|e| e.kind == "task.cancelled" && e.task == "slow"));
}

#[tokio::test]
async fn custom_functions_and_activities_by_name_get_their_arguments() {
    let mut activities = ActivityRegistry::new();
    activities.register("greeter.hello", |_ctx, input: Value| async move {
        Ok(json!({"text": format!("hello {}", input["who"].as_str().unwrap_or("?"))}))
    });
    let source = definition(
        "functions",
        r#"use:
  functions:
    greet:
      call: greeter.hello
      with: { who: '${ .name }' }
do:
  - hi:
      call: greet
      with: { name: '${ .person }' }
"#,
    );
    let report =
        run_with(&source, RunOptions { input: json!({"person": "Ada"}), activities, ..RunOptions::default() }).await;
    assert_eq!(output(&report), &json!({"text": "hello Ada"}));
}

#[tokio::test]
async fn processes_are_refused_by_policy_with_a_clear_error() {
    let source = definition("shell", "do:\n  - sh:\n      run:\n        shell: { command: 'rm -rf /' }\n");
    let report = run(&source, json!({})).await;
    let error = error(&report);
    assert_eq!(error["type"], "https://serverlessworkflow.io/spec/1.0.0/errors/configuration");
    assert!(error["detail"].as_str().is_some_and(|d| d.contains("refused")), "{error}");
}

#[tokio::test]
async fn input_that_breaks_the_schema_faults_with_a_validation_error() {
    let source = definition(
        "schema",
        r#"input:
  schema:
    format: json
    document: { type: object, required: [id], properties: { id: { type: string } } }
do:
  - ok: { set: { id: '${ .id }' } }
"#,
    );
    let report = run(&source, json!({"id": 5})).await;
    assert_eq!(error(&report)["type"], "https://serverlessworkflow.io/spec/1.0.0/errors/validation");
    assert_eq!(output(&run(&source, json!({"id": "x"})).await), &json!({"id": "x"}));
}

#[tokio::test]
async fn a_failing_expression_faults_its_task_with_the_expression_error() {
    let source = definition("expr", "do:\n  - bad: { set: { x: '${ .a + \"text\" }' } }\n");
    let report = run(&source, json!({"a": 1})).await;
    let error = error(&report);
    assert_eq!(error["type"], "https://serverlessworkflow.io/spec/1.0.0/errors/expression");
    assert_eq!(error["status"], 400);
    assert_eq!(error["instance"], "/do/0/bad");
}

#[tokio::test]
async fn then_loops_run_until_their_condition_ends_them() {
    let source = definition(
        "loop",
        r#"do:
  - inc: { set: { n: '${ .n + 1 }' } }
  - check:
      switch:
        - again: { when: '${ .n < 5 }', then: inc }
        - done: { then: exit }
"#,
    );
    assert_eq!(output(&run(&source, json!({"n": 0})).await), &json!({"n": 5}));
}

#[derive(Debug)]
struct OneSecret;

impl SecretProvider for OneSecret {
    fn get(&self, name: &str) -> Option<Value> {
        (name == "api").then(|| json!({"token": "s3cr3t-t0ken"}))
    }
}

#[tokio::test]
async fn secret_values_never_reach_the_output_or_history() {
    let source = definition(
        "secrets",
        r#"use:
  secrets: [api]
do:
  - check:
      set:
        present: '${ $secrets.api.token != null }'
        leaked: '${ $secrets.api.token }'
  - send:
      call: echo
      with: { token: '${ "Bearer " + $secrets.api.token }', present: '${ .present }' }
  - announce:
      emit:
        event:
          with: { source: https://example.com/test, type: com.example.sent, data: { token: '${ $secrets.api.token }' } }
"#,
    );
    let mut activities = ActivityRegistry::new();
    activities.register("echo", |_ctx, input: Value| async move { Ok(input) });
    let options = RunOptions { secrets: Some(Arc::new(OneSecret)), activities, ..RunOptions::default() };
    let (report, history) = run_keeping_history(&source, options).await;
    assert_eq!(output(&report)["data"]["token"], "***");
    assert!(history.iter().any(|p| p.contains(r#""present":true"#)), "the condition on the secret still works");
    assert!(history.iter().any(|p| p.contains("Bearer ***")), "the activity input is in history, masked");
    for payload in &history {
        assert!(!payload.contains("s3cr3t-t0ken"), "a secret in history: {payload}");
    }
}

#[tokio::test]
async fn a_workflow_timeout_ends_a_run_that_waits_too_long() {
    let source = definition("wf-timeout", "timeout: { after: PT1H }\ndo:\n  - nap: { wait: PT3H }\n");
    let report = run(&source, json!({})).await;
    let error = error(&report);
    assert_eq!(error["status"], 408);
    assert_eq!(error["instance"], "/timeout");
    assert!(report.trace.iter().any(|e| e.kind == "task.cancelled" && e.task == "nap"));
}

#[tokio::test]
async fn listen_foreach_processes_each_event_in_order() {
    let source = definition(
        "listen-foreach",
        r##"do:
  - scans:
      listen:
        to:
          any:
            - with: { type: com.example.scanned }
          until: '${ length >= 3 }'
      foreach:
        item: scan
        at: n
        do:
          - stamp: { set: { where: '${ $scan.place }', n: '${ $n }' } }
        output:
          as: '${ .where + "#" + (.n | tostring) }'
"##,
    );
    let events =
        (0..3).map(|i| event(&format!("s{i}"), "com.example.scanned", json!({"place": format!("desk-{i}")}))).collect();
    let report = run_with(&source, RunOptions { events, ..RunOptions::default() }).await;
    assert_eq!(output(&report), &json!(["desk-0#0", "desk-1#1", "desk-2#2"]));
}

#[tokio::test]
async fn a_duplicate_event_id_is_taken_once() {
    let source = definition(
        "dedupe",
        r#"do:
  - two:
      listen:
        to:
          all:
            - with: { type: com.example.a }
            - with: { type: com.example.b }
"#,
    );
    let events = vec![
        event("same", "com.example.a", json!({"n": 1})),
        event("same", "com.example.a", json!({"n": 2})),
        event("other", "com.example.b", json!({"n": 3})),
    ];
    let report = run_with(&source, RunOptions { events, ..RunOptions::default() }).await;
    assert_eq!(output(&report), &json!([{"n": 1}, {"n": 3}]));
}

#[tokio::test]
async fn an_early_event_is_kept_only_for_the_retention() {
    let source = definition(
        "retention",
        r#"do:
  - first: { wait: P1D }
  - then:
      listen: { to: { one: { with: { type: com.example.ready } } } }
      timeout: { after: PT1H }
"#,
    );
    let events = || vec![event("r1", "com.example.ready", json!({"ok": true}))];
    let kept = run_with(&source, RunOptions { events: events(), ..RunOptions::default() }).await;
    assert_eq!(output(&kept), &json!([{"ok": true}]));
    let expired = run_with(
        &source,
        RunOptions {
            events: events(),
            event_retention: Some(std::time::Duration::from_secs(3600)),
            ..RunOptions::default()
        },
    )
    .await;
    assert_eq!(error(&expired)["status"], 408, "the day-old event no longer counts");
}

#[tokio::test]
async fn a_listener_that_faults_leaves_no_wait_behind() {
    let source = definition(
        "listen-fault",
        r#"do:
  - guarded:
      try:
        - both:
            listen: { to: { all: [ { with: { type: com.example.a } }, { with: { type: com.example.b } } ] } }
            foreach:
              do:
                - boom: { raise: { error: { type: https://example.com/boom, status: 500 } } }
      catch: {}
  - later:
      listen: { to: { one: { with: { type: com.example.b } } } }
"#,
    );
    let events = vec![event("1", "com.example.a", json!({"n": 1})), event("2", "com.example.b", json!({"n": 2}))];
    let report = run_with(&source, RunOptions { events, ..RunOptions::default() }).await;
    assert_eq!(output(&report), &json!([{"n": 2}]), "the later listener gets the b event");
}

#[tokio::test]
async fn an_event_that_fails_one_correlation_fixes_no_other() {
    let source = definition(
        "correlate",
        r#"do:
  - match:
      listen:
        to:
          one:
            with: { type: com.example.scan }
            correlate:
              doc: { from: '${ .data.doc }' }
              desk: { from: '${ .data.desk }', expect: front }
"#,
    );
    let events = vec![
        event("1", "com.example.scan", json!({"doc": "D-1", "desk": "back"})),
        event("2", "com.example.scan", json!({"doc": "D-2", "desk": "front"})),
    ];
    let report = run_with(&source, RunOptions { events, ..RunOptions::default() }).await;
    assert_eq!(output(&report), &json!([{"doc": "D-2", "desk": "front"}]));
}

#[tokio::test]
async fn until_all_events_waits_for_every_one_of_them() {
    let source = definition(
        "until-all",
        r#"do:
  - votes:
      listen:
        to:
          any:
            - with: { type: com.example.vote }
          until:
            all:
              - with: { type: com.example.closed.left }
              - with: { type: com.example.closed.right }
"#,
    );
    let events = vec![
        event("1", "com.example.vote", json!({"v": 1})),
        event("2", "com.example.closed.left", json!({})),
        event("3", "com.example.vote", json!({"v": 2})),
        event("4", "com.example.closed.right", json!({})),
    ];
    let report = run_with(&source, RunOptions { events, ..RunOptions::default() }).await;
    assert_eq!(output(&report), &json!([{"v": 1}, {"v": 2}]));
}
