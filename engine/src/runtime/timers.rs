//! The in-memory window of durable timers.
//!
//! Timers are rows in the store, indexed by due time; millions may wait there. The runtime holds
//! only those due within the next window in memory, refreshes the window from the store as time
//! moves, and adds timers armed by new steps when they fall inside it. Cancelled timers are not
//! removed here: when one comes due, the instance no longer has it and the fire is ignored.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

use crate::history::{InstanceId, Seq};
use crate::store::{StoreResult, TimerRow, TimerStore};

#[derive(Debug, Default)]
pub(crate) struct TimerWindow {
    due: BTreeSet<(i64, InstanceId, Seq)>,
    /// Every timer due before this instant (ms) is in `due`, unless the last load was truncated.
    end_ms: i64,
    truncated: bool,
}

impl TimerWindow {
    /// Loads the timers due within `window` of `now`.
    pub async fn refresh(
        &mut self,
        store: &dyn TimerStore,
        now: DateTime<Utc>,
        window: std::time::Duration,
        limit: u32,
    ) -> StoreResult<()> {
        let window = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::seconds(60));
        let until = now + window;
        let rows = store.timers_due_before(until, limit).await?;
        self.truncated = rows.len() as u32 >= limit;
        self.end_ms = match (self.truncated, rows.last()) {
            (true, Some(last)) => last.due_at.timestamp_millis(),
            _ => until.timestamp_millis(),
        };
        for row in rows {
            self.due.insert((row.due_at.timestamp_millis(), row.instance, row.seq));
        }
        Ok(())
    }

    /// True when the window should be reloaded: half of it has passed, or a truncated load has
    /// been worked off.
    pub fn needs_refresh(&self, now: DateTime<Utc>, window: std::time::Duration) -> bool {
        let half = i64::try_from(window.as_millis() / 2).unwrap_or(i64::MAX);
        now.timestamp_millis() + half >= self.end_ms || (self.truncated && self.due.is_empty())
    }

    /// Adds a newly armed timer if it falls inside the window (later ones are loaded in time).
    pub fn arm(&mut self, row: &TimerRow) {
        let due = row.due_at.timestamp_millis();
        if due < self.end_ms {
            self.due.insert((due, row.instance.clone(), row.seq));
        }
    }

    /// Removes and returns every timer due at or before `now`, at most `limit`.
    pub fn take_due(&mut self, now: DateTime<Utc>, limit: usize) -> Vec<(InstanceId, Seq)> {
        let now_ms = now.timestamp_millis();
        let mut fired = Vec::new();
        while fired.len() < limit {
            match self.due.first() {
                Some((due, _, _)) if *due <= now_ms => {
                    if let Some((_, id, seq)) = self.due.pop_first() {
                        fired.push((id, seq));
                    }
                }
                _ => break,
            }
        }
        fired
    }

    /// The earliest due time in the window.
    pub fn next_due_ms(&self) -> Option<i64> {
        self.due.first().map(|(due, _, _)| *due)
    }

    /// When the window must be refreshed at the latest.
    pub fn refresh_at_ms(&self, window: std::time::Duration) -> i64 {
        self.end_ms - i64::try_from(window.as_millis() / 2).unwrap_or(0)
    }

    pub fn len(&self) -> usize {
        self.due.len()
    }
}
