//! A small orchestration written in Rust: a list of steps run in order. The benchmarks, the
//! examples and the engine's own tests use it; it exercises every durable primitive.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::activity::ActivityOptions;
use crate::history::{DefinitionInfo, Seq};
use crate::human::HumanTaskSpec;
use crate::orchestration::{Ctx, Fault, Orchestration, Trigger};

/// One step of a [`Program`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Op {
    /// Calls an activity with the instance input and the step index; waits for it.
    Activity {
        name: String,
        #[serde(default)]
        options: ActivityOptions,
    },
    /// Calls several activities at once; waits for all.
    Parallel { names: Vec<String> },
    /// Waits for a duration (durable timer).
    Sleep { ms: u64 },
    /// Waits until the instant (epoch ms) in the input field `field`.
    SleepUntilInput { field: String },
    /// Waits for an event by name; its payload joins the results.
    WaitEvent { name: String },
    /// Waits for an event, or gives up after `ms` (the timer is cancelled if the event wins).
    WaitEventOrTimeout { name: String, ms: u64 },
    /// Runs a child instance of a registered definition with the instance input.
    Child { definition: String },
    /// Emits an outbox message.
    Emit { kind: String },
    /// Calls the activity `name` `times` times in sequence, continuing as new every `every`.
    Loop { name: String, times: u64, every: u64 },
    /// Creates a human task and waits until a person completes it; the completion joins the
    /// results.
    HumanTask { spec: Box<HumanTaskSpec> },
}

/// What a program remembers between triggers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProgramState {
    pub pc: usize,
    pub input: Value,
    pub pending: BTreeSet<Seq>,
    /// The timeout timer of a `WaitEventOrTimeout` in progress.
    pub timeout: Option<Seq>,
    pub results: Vec<Value>,
    /// Iterations done by a `Loop` (carried over continue-as-new in the input).
    pub iteration: u64,
}

/// An orchestration that runs `ops` in order and completes with the list of their results.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Program {
    pub name: String,
    pub version: String,
    pub ops: Vec<Op>,
    /// What an activity failure does: `true` fails the instance, `false` leaves it unhandled
    /// (an incident).
    #[serde(default)]
    pub fail_on_activity_error: bool,
}

impl Program {
    pub fn new(name: impl Into<String>, ops: Vec<Op>) -> Self {
        Self { name: name.into(), version: "1".into(), ops, fail_on_activity_error: false }
    }

    /// `n` sequential calls of the activity `name`.
    pub fn sequential(name: impl Into<String>, activity: &str, n: usize) -> Self {
        let op = Op::Activity { name: activity.into(), options: ActivityOptions::default() };
        Self::new(name, vec![op; n])
    }

    fn advance(&self, state: &mut ProgramState, ctx: &mut Ctx<'_>) {
        while state.pending.is_empty() && state.timeout.is_none() {
            let Some(op) = self.ops.get(state.pc) else {
                ctx.complete(json!({ "results": state.results }));
                return;
            };
            let step = json!({ "input": state.input, "step": state.pc });
            match op {
                Op::Activity { name, options } => {
                    state.pending.insert(ctx.schedule_activity_with(name.clone(), step, options.clone()));
                }
                Op::Parallel { names } => {
                    for name in names {
                        state.pending.insert(ctx.schedule_activity(name.clone(), step.clone()));
                    }
                }
                Op::Sleep { ms } => {
                    state.pending.insert(ctx.sleep(std::time::Duration::from_millis(*ms)));
                }
                Op::SleepUntilInput { field } => {
                    let due = state.input.get(field).and_then(Value::as_i64).unwrap_or(0);
                    state.pending.insert(ctx.start_timer(crate::history::time_from_ms(due)));
                }
                Op::WaitEvent { name } => {
                    state.pending.insert(ctx.wait_event(name.clone()));
                }
                Op::WaitEventOrTimeout { name, ms } => {
                    state.pending.insert(ctx.wait_event(name.clone()));
                    state.timeout = Some(ctx.sleep(std::time::Duration::from_millis(*ms)));
                }
                Op::Child { definition } => {
                    state.pending.insert(ctx.start_child(definition.clone(), state.input.clone()));
                }
                Op::Emit { kind } => {
                    ctx.emit(kind.clone(), step);
                    state.pc += 1;
                    continue;
                }
                Op::HumanTask { spec } => {
                    state.pending.insert(ctx.create_human_task(spec.as_ref().clone()));
                }
                Op::Loop { name, times, every } => {
                    if state.iteration >= *times {
                        state.results.push(json!(state.iteration));
                        state.pc += 1;
                        continue;
                    }
                    if state.iteration > 0
                        && *every > 0
                        && state.iteration.is_multiple_of(*every)
                        && !state.input.get("resumed").is_some_and(|r| r == &json!(state.iteration))
                    {
                        let input = json!({ "resumed": state.iteration, "pc": state.pc, "results": state.results });
                        ctx.continue_as_new(input);
                        return;
                    }
                    state.pending.insert(ctx.schedule_activity(name.clone(), json!({ "iteration": state.iteration })));
                    state.iteration += 1;
                    return;
                }
            }
            return;
        }
    }

    fn settle(&self, state: &mut ProgramState, id: Seq, result: Value) {
        if !state.pending.remove(&id) {
            return;
        }
        // A loop keeps no per-iteration results, so its state stays small however long it runs.
        if matches!(self.ops.get(state.pc), Some(Op::Loop { .. })) {
            return;
        }
        state.results.push(result);
        if state.pending.is_empty() && state.timeout.is_none() {
            state.pc += 1;
        }
    }
}

impl Orchestration for Program {
    type State = ProgramState;

    fn definition(&self) -> DefinitionInfo {
        let encoded = serde_json::to_vec(self).unwrap_or_default();
        DefinitionInfo::new(self.name.clone(), self.version.clone(), hex::encode(Sha256::digest(&encoded)))
    }

    fn on_trigger(&self, state: &mut ProgramState, trigger: Trigger<'_>, ctx: &mut Ctx<'_>) -> Result<(), Fault> {
        match trigger {
            Trigger::Started { input, .. } => {
                *state = ProgramState { input: input.clone(), ..ProgramState::default() };
                if let Some(resumed) = input.get("resumed").and_then(Value::as_u64) {
                    state.iteration = resumed;
                    state.pc = input.get("pc").and_then(Value::as_u64).unwrap_or(0) as usize;
                    state.results = input.get("results").and_then(Value::as_array).cloned().unwrap_or_default();
                }
            }
            Trigger::ActivityCompleted { activity, result } => self.settle(state, activity, result.clone()),
            Trigger::ActivityFailed { activity, failure } => {
                if !self.fail_on_activity_error {
                    return Err(Fault::unhandled(format!("activity {activity} failed: {failure}")));
                }
                ctx.fail(failure.clone());
                return Ok(());
            }
            Trigger::TimerFired { timer } => {
                if state.timeout == Some(timer) {
                    // The wait timed out: stop waiting and record it.
                    state.timeout = None;
                    state.pending.clear();
                    state.results.push(json!("timeout"));
                    state.pc += 1;
                } else {
                    self.settle(state, timer, json!("timer"));
                }
            }
            Trigger::EventReceived { wait, payload, .. } => {
                if let Some(timeout) = state.timeout.take() {
                    ctx.cancel_timer(timeout);
                }
                self.settle(state, wait, payload.clone());
            }
            Trigger::ChildCompleted { child, output } => self.settle(state, child, output.clone()),
            Trigger::ChildFailed { child, failure } => {
                return Err(Fault::unhandled(format!("child {child} failed: {failure}")));
            }
            Trigger::HumanTaskCompleted { task, completion } => self.settle(state, task, completion.to_output()),
            Trigger::HumanTaskUpdated { .. } | Trigger::Suspended | Trigger::Resumed => return Ok(()),
        }
        self.advance(state, ctx);
        Ok(())
    }
}
