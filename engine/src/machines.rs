//! One state machine per durable primitive, each with its transition table.
//!
//! A primitive is born from a command event (its id is that event's seq) and ends with the
//! event that completes it; finished primitives are dropped from the instance state, so state
//! stays small however long the history grows. An event that does not fit the table is a typed
//! [`Unexpected`] error (on replay: nondeterminism or a corrupt history), never a panic.

use serde::{Deserialize, Serialize};

use crate::history::Seq;

/// An event arrived for a primitive in a state that does not accept it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{primitive} {id}: {event} is not expected in state {state}")]
pub struct Unexpected {
    pub primitive: &'static str,
    pub id: Seq,
    pub event: &'static str,
    pub state: &'static str,
}

/// What a transition does to the primitive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next<S> {
    /// The primitive lives on in this state.
    Stay(S),
    /// The primitive is finished and leaves the instance state.
    Done,
}

fn unexpected<S>(
    primitive: &'static str,
    id: Seq,
    event: &'static str,
    state: &'static str,
) -> Result<Next<S>, Unexpected> {
    Err(Unexpected { primitive, id, event, state })
}

/// Activity.
///
/// | state      | event      | next | the orchestration is told |
/// |------------|------------|------|---------------------------|
/// | (none)     | Scheduled  | Scheduled | — (a task is dispatched) |
/// | Scheduled  | Completed  | done | ActivityCompleted |
/// | Scheduled  | Failed     | done | ActivityFailed |
/// | Scheduled  | Cancelled  | done | — (run ended) |
/// | (none)     | Completed/Failed | error | |
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ActivityState {
    Scheduled { name: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActivityEvent {
    Completed,
    Failed,
    Cancelled,
}

impl ActivityState {
    pub fn on(state: Option<&Self>, id: Seq, event: ActivityEvent) -> Result<Next<Self>, Unexpected> {
        use ActivityEvent::*;
        match (state, event) {
            (Some(Self::Scheduled { .. }), Completed | Failed | Cancelled) => Ok(Next::Done),
            (None, Completed) => unexpected("activity", id, "ActivityCompleted", "absent"),
            (None, Failed) => unexpected("activity", id, "ActivityFailed", "absent"),
            (None, Cancelled) => unexpected("activity", id, "ActivityCancelled", "absent"),
        }
    }
}

/// Timer.
///
/// | state   | event     | next | the orchestration is told |
/// |---------|-----------|------|---------------------------|
/// | (none)  | Started   | Pending | — (a timer row is armed) |
/// | Pending | Fired     | done | TimerFired |
/// | Pending | Cancelled | done | — |
/// | (none)  | Fired/Cancelled | error | |
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum TimerState {
    Pending { fire_at_ms: i64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerEvent {
    Fired,
    Cancelled,
}

impl TimerState {
    pub fn on(state: Option<&Self>, id: Seq, event: TimerEvent) -> Result<Next<Self>, Unexpected> {
        match (state, event) {
            (Some(Self::Pending { .. }), TimerEvent::Fired | TimerEvent::Cancelled) => Ok(Next::Done),
            (None, TimerEvent::Fired) => unexpected("timer", id, "TimerFired", "absent"),
            (None, TimerEvent::Cancelled) => unexpected("timer", id, "TimerCancelled", "absent"),
        }
    }
}

/// Event wait. Events that arrive before anyone waits are buffered by the instance; a new
/// wait takes the oldest buffered event of its name at once.
///
/// | state   | event              | next | the orchestration is told |
/// |---------|--------------------|------|---------------------------|
/// | (none)  | WaitStarted, none buffered | Waiting | — |
/// | (none)  | WaitStarted, one buffered  | done | EventReceived |
/// | Waiting | EventReceived (same name)  | done | EventReceived |
/// | Waiting | Cancelled                  | done | — |
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum WaitState {
    Waiting { name: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitEvent {
    Received,
    Cancelled,
}

impl WaitState {
    pub fn on(state: Option<&Self>, id: Seq, event: WaitEvent) -> Result<Next<Self>, Unexpected> {
        match (state, event) {
            (Some(Self::Waiting { .. }), WaitEvent::Received | WaitEvent::Cancelled) => Ok(Next::Done),
            (None, WaitEvent::Received) => unexpected("wait", id, "EventReceived", "absent"),
            (None, WaitEvent::Cancelled) => unexpected("wait", id, "WaitCancelled", "absent"),
        }
    }
}

/// Child instance.
///
/// | state   | event     | next | the orchestration is told |
/// |---------|-----------|------|---------------------------|
/// | (none)  | Started   | Running | — (the child starts in the same commit) |
/// | Running | Completed | done | ChildCompleted |
/// | Running | Failed    | done | ChildFailed |
/// | (none)  | Completed/Failed | error | |
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ChildState {
    Running { instance: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildEvent {
    Completed,
    Failed,
}

impl ChildState {
    pub fn on(state: Option<&Self>, id: Seq, event: ChildEvent) -> Result<Next<Self>, Unexpected> {
        match (state, event) {
            (Some(Self::Running { .. }), ChildEvent::Completed | ChildEvent::Failed) => Ok(Next::Done),
            (None, ChildEvent::Completed) => unexpected("child", id, "ChildCompleted", "absent"),
            (None, ChildEvent::Failed) => unexpected("child", id, "ChildFailed", "absent"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_of_unknown_primitives_are_typed_errors() {
        assert!(ActivityState::on(None, 3, ActivityEvent::Completed).is_err());
        assert!(TimerState::on(None, 3, TimerEvent::Fired).is_err());
        assert!(WaitState::on(None, 3, WaitEvent::Received).is_err());
        assert!(ChildState::on(None, 3, ChildEvent::Failed).is_err());
    }

    #[test]
    fn live_primitives_finish() {
        let activity = ActivityState::Scheduled { name: "a".into() };
        assert_eq!(ActivityState::on(Some(&activity), 1, ActivityEvent::Failed), Ok(Next::Done));
        let timer = TimerState::Pending { fire_at_ms: 0 };
        assert_eq!(TimerState::on(Some(&timer), 1, TimerEvent::Cancelled), Ok(Next::Done));
    }
}
