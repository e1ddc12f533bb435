//! Crash-test failpoints, compiled in only with the `failpoints` feature.
//!
//! `BATON_FAILPOINTS=step.before_commit=20` lets the named point pass 20 times and aborts the
//! process (SIGABRT) on the 21st; several points are separated by `;`. Points in the engine:
//! `step.before_commit` (the step's events are built, not committed) and `step.after_commit`
//! (committed, nothing dispatched yet).
//!
//! Written here rather than taken from the `fail` crate: that crate brings a second major version
//! of `rand` into the tree for what is a counter and an abort.

#[cfg(feature = "failpoints")]
mod enabled {
    use std::collections::HashMap;
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn points() -> &'static HashMap<String, (u64, AtomicU64)> {
        static POINTS: OnceLock<HashMap<String, (u64, AtomicU64)>> = OnceLock::new();
        POINTS.get_or_init(|| {
            std::env::var("BATON_FAILPOINTS")
                .unwrap_or_default()
                .split(';')
                .filter_map(|spec| {
                    let (name, passes) = spec.trim().split_once('=')?;
                    Some((name.to_owned(), (passes.parse().ok()?, AtomicU64::new(0))))
                })
                .collect()
        })
    }

    pub fn hit(name: &str) {
        if let Some((passes, count)) = points().get(name)
            && count.fetch_add(1, Ordering::SeqCst) >= *passes
        {
            tracing::error!(failpoint = name, "failpoint reached: aborting");
            std::process::abort();
        }
    }
}

/// Aborts the process here if the failpoint `name` is armed and its passes are used up.
#[cfg(feature = "failpoints")]
pub(crate) fn hit(name: &str) {
    enabled::hit(name);
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub(crate) fn hit(_name: &str) {}
