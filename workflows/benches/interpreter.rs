//! Interpreter cost per step, expressions pre-compiled: a `set`, a `switch` and a `call` of an
//! activity, driven through `on_trigger` without the engine (no store, no commit). The figure
//! to compare with the issue's target (<= 20 us per step) is the time per run divided by 3.

use std::sync::Arc;

use baton_engine::{Ctx, InstanceId, Orchestration, Trigger};
use baton_workflows::interp::{State, Workflow};
use baton_workflows::model::Program;
use chrono::{TimeZone, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;

const DEFINITION: &str = r#"{
  "document": {"dsl": "1.0.3", "namespace": "bench", "name": "step", "version": "1.0.0"},
  "do": [
    {"price": {"set": {"sku": "${ .sku }", "total": "${ .qty * .unit }", "express": "${ .express // false }"}}},
    {"route": {"switch": [
      {"big": {"when": "${ .total > 1000 }", "then": "reserve"}},
      {"default": {"then": "reserve"}}
    ]}},
    {"reserve": {"call": "inventory.reserve", "with": {"sku": "${ .sku }", "total": "${ .total }"}}}
  ]
}"#;

fn bench(c: &mut Criterion) {
    let program = Program::compile(serde_json::from_str(DEFINITION).expect("json")).expect("compiles");
    let workflow = Workflow::new(Arc::new(program), "bench");
    let instance = InstanceId::new("bench-1");
    let now = Utc.with_ymd_and_hms(2026, 11, 2, 9, 0, 0).single().expect("time");
    let input = json!({"sku": "A-1", "qty": 12, "unit": 99.5});
    let result = json!({"reserved": true});
    c.bench_function("set + switch + call (3 steps)", |b| {
        b.iter(|| {
            let mut state = State::default();
            let mut ctx = Ctx::new(&instance, now, 1);
            workflow
                .on_trigger(&mut state, Trigger::Started { input: &input, started_by: None }, &mut ctx)
                .expect("starts");
            let commands = ctx.into_commands();
            assert_eq!(commands.len(), 1, "the call is scheduled");
            let mut ctx = Ctx::new(&instance, now, 2);
            workflow
                .on_trigger(&mut state, Trigger::ActivityCompleted { activity: 1, result: &result }, &mut ctx)
                .expect("completes");
            ctx.into_commands()
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
