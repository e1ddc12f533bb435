//! `run: shell` end to end: refused by default, run by the `baton.process` activity when the
//! administrator allows processes.

use std::sync::Arc;

use baton_activities::{ProcessPolicy, register_processes};
use baton_engine::store::memory::MemoryStore;
use baton_engine::{ActivityRegistry, Engine, InstanceStatus, Outcome, StartOptions};
use baton_workflows::interp::Workflow;
use baton_workflows::model::{CompileOptions, Program};
use baton_workflows::validate::{ValidateOptions, check};
use serde_json::{Value, json};

const GREET: &str = r#"document:
  dsl: '1.0.3'
  namespace: test
  name: greet
  version: '1.0.0'
do:
  - greet:
      run:
        shell:
          command: 'echo "$GREETING" "$1"'
          arguments: ['${ .name }']
          environment:
            GREETING: hello
"#;

fn parsed() -> Value {
    let (parsed, diagnostics) = check("greet.yaml", GREET.as_bytes(), &ValidateOptions::default());
    parsed.unwrap_or_else(|| panic!("the definition parses: {diagnostics:?}")).value
}

async fn run(program: Program) -> Outcome {
    let mut registry = ActivityRegistry::new();
    register_processes(&mut registry, ProcessPolicy { shell: true, ..ProcessPolicy::default() });
    let workflow = Workflow::new(Arc::new(program), "h");
    let key = workflow.definition_key();
    let engine = Engine::builder()
        .store(Arc::new(MemoryStore::new()))
        .orchestration(workflow)
        .activities(registry)
        .build()
        .await
        .expect("the engine starts");
    let started = engine.start(&key, json!({ "name": "Ada" }), StartOptions::default()).await.expect("starts");
    let outcome = engine.wait(&started.id).await.expect("the run ends");
    engine.shutdown().await;
    outcome
}

#[tokio::test]
async fn shell_runs_when_processes_are_allowed() {
    let program = Program::compile_with(parsed(), &CompileOptions { processes: true }).expect("compiles");
    let outcome = run(program).await;
    assert_eq!(outcome.status, InstanceStatus::Completed, "{:?}", outcome.result);
    assert_eq!(outcome.result, Some(json!("hello Ada")));
}

#[tokio::test]
async fn shell_is_refused_by_default() {
    let program = Program::compile(parsed()).expect("compiles");
    let outcome = run(program).await;
    assert_eq!(outcome.status, InstanceStatus::Faulted, "{:?}", outcome.result);
    let result = outcome.result.expect("a faulted run has its error");
    let error = result.get("details").unwrap_or(&result);
    assert_eq!(error["type"], "https://serverlessworkflow.io/spec/1.0.0/errors/configuration", "{result}");
    let detail = error["detail"].as_str().expect("a detail");
    assert!(detail.contains("refused"), "{detail}");
}
