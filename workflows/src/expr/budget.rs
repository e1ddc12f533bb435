//! The deterministic evaluation budget.
//!
//! jaq gives no hook that can fail a running evaluation: the one place every evaluation step
//! passes through is the lookup of the compiled program (`HasLut::lut`), and it cannot return an
//! error. So a step that runs out of fuel, goes past the stack allowance or builds a value nested
//! too deep *unwinds* with a [`Stop`] payload (`resume_unwind`, which skips the panic hook) and
//! [`run`] catches it. jq's `try` cannot catch an unwind, so a budget can never be swallowed by the
//! expression it limits. The state is thread-local because jaq's callbacks carry no user data.

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};

#[cfg(panic = "abort")]
compile_error!(
    "baton-workflows stops runaway jq expressions by unwinding; build with panic = \"unwind\" \
     (with panic = \"abort\" an expression past its budget would abort the process)"
);

/// Why an evaluation stopped before its end.
#[derive(Debug)]
pub(crate) enum Stop {
    /// The fuel ran out.
    Fuel,
    /// The evaluation used more stack than its allowance.
    Stack,
    /// A value would have been nested deeper than the depth limit.
    Depth,
    /// Something inside jaq panicked; the message of the panic.
    Panic(String),
}

/// What one evaluation may use.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Allowance {
    pub fuel: u64,
    pub stack_bytes: usize,
    pub max_depth: u32,
}

struct State {
    active: Cell<bool>,
    fuel: Cell<u64>,
    base: Cell<usize>,
    stack_bytes: Cell<usize>,
    max_depth: Cell<u32>,
}

thread_local! {
    static STATE: State = const {
        State {
            active: Cell::new(false),
            fuel: Cell::new(0),
            base: Cell::new(0),
            stack_bytes: Cell::new(0),
            max_depth: Cell::new(u32::MAX),
        }
    };
}

/// The address of a local: how deep the stack is right now (it grows down on every platform
/// Baton runs on; the distance is taken without assuming a direction).
#[inline(never)]
fn stack_address() -> usize {
    let marker = 0u8;
    std::hint::black_box(&marker) as *const u8 as usize
}

fn stop(reason: Stop) -> ! {
    panic::resume_unwind(Box::new(reason))
}

/// Takes `units` of fuel; unwinds with [`Stop::Fuel`] when there is not enough left. Outside an
/// evaluation (conversions done by Baton itself) nothing is charged.
pub(crate) fn charge(units: u64) {
    STATE.with(|s| {
        if !s.active.get() {
            return;
        }
        let fuel = s.fuel.get();
        if fuel < units {
            s.fuel.set(0);
            stop(Stop::Fuel);
        }
        s.fuel.set(fuel - units);
    });
}

/// One evaluation step: one unit of fuel, and a check of the stack allowance.
pub(crate) fn step() {
    STATE.with(|s| {
        if !s.active.get() {
            return;
        }
        let fuel = s.fuel.get();
        if fuel == 0 {
            stop(Stop::Fuel);
        }
        s.fuel.set(fuel - 1);
        if s.base.get().abs_diff(stack_address()) > s.stack_bytes.get() {
            stop(Stop::Stack);
        }
    });
}

/// Fuel left to the running evaluation (`u64::MAX` outside one).
pub(crate) fn remaining() -> u64 {
    STATE.with(|s| if s.active.get() { s.fuel.get() } else { u64::MAX })
}

/// The depth limit of the running evaluation (`u32::MAX` outside one).
pub(crate) fn max_depth() -> u32 {
    STATE.with(|s| if s.active.get() { s.max_depth.get() } else { u32::MAX })
}

/// Unwinds with [`Stop::Depth`].
pub(crate) fn too_deep() -> ! {
    stop(Stop::Depth)
}

/// Runs `f` under `allowance`. Returns what `f` returned and the fuel it used, or why it
/// stopped. Evaluations may nest (the previous state is restored afterwards).
pub(crate) fn run<T>(allowance: Allowance, f: impl FnOnce() -> T) -> (Result<T, Stop>, u64) {
    let saved = STATE.with(|s| {
        let saved = (s.active.get(), s.fuel.get(), s.base.get(), s.stack_bytes.get(), s.max_depth.get());
        s.active.set(true);
        s.fuel.set(allowance.fuel);
        s.base.set(stack_address());
        s.stack_bytes.set(allowance.stack_bytes);
        s.max_depth.set(allowance.max_depth);
        saved
    });
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    let used = STATE.with(|s| {
        let used = allowance.fuel - s.fuel.get();
        let (active, fuel, base, stack_bytes, max_depth) = saved;
        s.active.set(active);
        s.fuel.set(fuel);
        s.base.set(base);
        s.stack_bytes.set(stack_bytes);
        s.max_depth.set(max_depth);
        used
    });
    let result = result.map_err(|payload| match payload.downcast::<Stop>() {
        Ok(stop) => *stop,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            Stop::Panic(message)
        }
    });
    (result, used)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowance(fuel: u64) -> Allowance {
        Allowance { fuel, stack_bytes: 1 << 20, max_depth: 8 }
    }

    #[test]
    fn fuel_runs_out_and_state_is_restored() {
        let (result, used) = run(allowance(10), || {
            for _ in 0..100 {
                step();
            }
        });
        assert!(matches!(result, Err(Stop::Fuel)));
        assert_eq!(used, 10);
        assert_eq!(remaining(), u64::MAX);
        charge(1_000_000); // inactive: no effect
    }

    #[test]
    fn nested_runs_keep_their_own_fuel() {
        let (outer, used) = run(allowance(100), || {
            charge(5);
            let (inner, inner_used) = run(allowance(3), || charge(4));
            assert!(matches!(inner, Err(Stop::Fuel)));
            assert_eq!(inner_used, 3);
            remaining()
        });
        assert_eq!(outer.ok(), Some(95));
        assert_eq!(used, 5);
    }

    #[test]
    fn deep_recursion_stops_at_the_allowance() {
        fn down(n: u64) -> u64 {
            step();
            let pad = std::hint::black_box([n; 16]);
            if n == 0 { 0 } else { down(n - 1) + pad[3] }
        }
        let small = Allowance { fuel: u64::MAX, stack_bytes: 64 * 1024, max_depth: 8 };
        let (result, _) = run(small, || down(1_000_000));
        assert!(matches!(result, Err(Stop::Stack)));
    }

    #[test]
    fn other_panics_become_a_message() {
        let (result, _) = run(allowance(10), || -> u8 { std::panic::resume_unwind(Box::new("boom")) });
        assert!(matches!(result, Err(Stop::Panic(m)) if m == "boom"));
    }
}
