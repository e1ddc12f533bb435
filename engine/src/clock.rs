//! Time as a dependency. Everything in the engine that reads time reads it from a [`Clock`].
//!
//! [`SystemClock`] is wall time. [`ManualClock`] is simulated time for development and tests:
//! wall time plus an offset that `advance` moves, or a frozen instant plus that offset. The
//! runtime persists the offset in the store (settings `clock.offset_ms`), so simulated time
//! survives a restart of the process.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use crate::history::time_from_ms;

pub type SleepFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

pub trait Clock: Send + Sync + fmt::Debug + 'static {
    fn now(&self) -> DateTime<Utc>;

    /// Resolves once `now() >= deadline`.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future has no effect.
    fn sleep_until(&self, deadline: DateTime<Utc>) -> SleepFuture;

    /// The manual clock behind this clock, if it is one.
    fn as_manual(&self) -> Option<&ManualClock> {
        None
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn sleep_until(&self, deadline: DateTime<Utc>) -> SleepFuture {
        let wait = (deadline - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        Box::pin(tokio::time::sleep(wait))
    }
}

/// Simulated time: `base + offset`, where `base` is wall time or a frozen instant.
pub struct ManualClock {
    frozen_at_ms: Option<i64>,
    offset_ms: AtomicI64,
    changed: watch::Sender<i64>,
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualClock")
            .field("frozen_at_ms", &self.frozen_at_ms)
            .field("offset_ms", &self.offset_ms.load(Ordering::SeqCst))
            .finish()
    }
}

impl ManualClock {
    /// Wall time shifted by `offset_ms`; time keeps flowing and `advance` jumps ahead.
    pub fn offset(offset_ms: i64) -> Self {
        Self { frozen_at_ms: None, offset_ms: AtomicI64::new(offset_ms), changed: watch::channel(offset_ms).0 }
    }

    /// Time stands still at `at` until advanced: fully deterministic tests.
    pub fn frozen(at: DateTime<Utc>) -> Self {
        Self { frozen_at_ms: Some(at.timestamp_millis()), offset_ms: AtomicI64::new(0), changed: watch::channel(0).0 }
    }

    pub fn offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::SeqCst)
    }

    /// Moves time forward (the caller persists the new offset).
    pub fn advance(&self, by: Duration) -> i64 {
        let by_ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        let offset = self.offset_ms.fetch_add(by_ms, Ordering::SeqCst) + by_ms;
        self.changed.send_replace(offset);
        offset
    }

    /// Sets the offset (used when another process advanced the persisted clock).
    pub fn set_offset_ms(&self, offset_ms: i64) {
        if self.offset_ms.swap(offset_ms, Ordering::SeqCst) != offset_ms {
            self.changed.send_replace(offset_ms);
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        let base = self.frozen_at_ms.unwrap_or_else(|| Utc::now().timestamp_millis());
        time_from_ms(base + self.offset_ms())
    }

    fn sleep_until(&self, deadline: DateTime<Utc>) -> SleepFuture {
        let mut changed = self.changed.subscribe();
        let frozen = self.frozen_at_ms;
        Box::pin(async move {
            loop {
                let offset = *changed.borrow_and_update();
                let base = frozen.unwrap_or_else(|| Utc::now().timestamp_millis());
                let remaining = deadline.timestamp_millis() - (base + offset);
                if remaining <= 0 {
                    return;
                }
                if frozen.is_some() {
                    if changed.changed().await.is_err() {
                        return std::future::pending().await;
                    }
                } else {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(remaining as u64)) => {}
                        res = changed.changed() => if res.is_err() { return std::future::pending().await },
                    }
                }
            }
        })
    }

    fn as_manual(&self) -> Option<&ManualClock> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frozen_clock_moves_only_when_advanced_and_wakes_sleepers() {
        let start = time_from_ms(1_000_000);
        let clock = std::sync::Arc::new(ManualClock::frozen(start));
        assert_eq!(clock.now(), start);
        let sleeper = tokio::spawn(clock.sleep_until(start + chrono::Duration::hours(1)));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        clock.advance(Duration::from_secs(1800));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished(), "half way is not there yet");
        clock.advance(Duration::from_secs(1800));
        tokio::time::timeout(Duration::from_secs(5), sleeper).await.expect("woken").expect("joined");
        assert_eq!(clock.now(), start + chrono::Duration::hours(1));
    }

    #[test]
    fn offset_clock_is_wall_time_shifted() {
        let clock = ManualClock::offset(86_400_000);
        let delta = clock.now() - Utc::now();
        assert!(delta > chrono::Duration::hours(23) && delta < chrono::Duration::hours(25));
    }
}
