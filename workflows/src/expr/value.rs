//! The value type jq expressions run on: jaq's JSON value plus the accounting that bounds what an
//! evaluation may build.
//!
//! jaq is generic over its value type, and every value an expression creates goes through the
//! trait methods below: array and object construction, `+ - * / %`, comparisons, iteration,
//! updates. Each method charges fuel for the work it is about to do *before* doing it (so
//! `"x" * 1e12` fails before allocating), and each container carries an upper bound of its
//! nesting depth, checked when a container is built, so that no value can get deep enough for
//! the recursive drop, comparison or printing of it to exhaust the stack.

use std::cell::{Cell, RefCell};
use std::fmt::{self, Write as _};

use jaq_core::box_iter::{BoxIter, box_once};
use jaq_core::path::Opt;
use jaq_core::{Error, Exn, ValR, ValX, val};
use jaq_json::{Map, Num, Rc, Val};
use serde_json::Value;

use super::budget;

/// How many bytes of string data one unit of fuel pays for.
pub(crate) const BYTES_PER_UNIT: usize = 32;

/// Longest rendering of a value inside an error message.
const MESSAGE_VALUE_CHARS: usize = 200;

/// Fuel for creating or copying a string of `len` bytes.
pub(crate) fn str_cost(len: usize) -> u64 {
    1 + (len / BYTES_PER_UNIT) as u64
}

/// A jq value: jaq's JSON value and an upper bound of its nesting depth (0 for scalars).
#[derive(Clone, Debug, Default)]
pub(crate) struct Jv {
    pub(crate) val: Val,
    pub(crate) depth: u32,
}

fn is_container(v: &Val) -> bool {
    matches!(v, Val::Arr(_) | Val::Obj(_))
}

fn is_empty_container(v: &Val) -> bool {
    match v {
        Val::Arr(a) => a.is_empty(),
        Val::Obj(o) => o.is_empty(),
        _ => false,
    }
}

fn container_len(v: &Val) -> usize {
    match v {
        Val::Arr(a) => a.len(),
        Val::Obj(o) => o.len(),
        _ => 0,
    }
}

/// True when cloning-on-write this container would copy it.
fn shared<T>(rc: &Rc<T>) -> bool {
    Rc::strong_count(rc) > 1 || Rc::weak_count(rc) > 0
}

fn unwrap_or_clone<T: Clone>(rc: Rc<T>, len: usize) -> T {
    Rc::try_unwrap(rc).unwrap_or_else(|rc| {
        budget::charge(len as u64);
        (*rc).clone()
    })
}

/// The exact nesting depth of `v`, charging one unit per container visited. Only called on
/// values whose depth bound is at most one past the limit, so the recursion is bounded.
fn exact_depth(v: &Val) -> u32 {
    match v {
        Val::Arr(a) => {
            budget::charge(1);
            1 + a.iter().map(exact_depth).max().unwrap_or(0)
        }
        Val::Obj(o) => {
            budget::charge(1);
            1 + o.values().map(exact_depth).max().unwrap_or(0)
        }
        _ => 0,
    }
}

/// Counts the size of `v` in fuel units (containers 1 each, strings by length), stopping once
/// past `cap`.
pub(crate) fn weight(v: &Val, cap: u64) -> u64 {
    fn go(v: &Val, acc: &mut u64, cap: u64) {
        if *acc > cap {
            return;
        }
        match v {
            Val::TStr(b) | Val::BStr(b) => *acc += str_cost(b.len()),
            Val::Arr(a) => {
                *acc += 1;
                for x in a.iter() {
                    go(x, acc, cap);
                    if *acc > cap {
                        return;
                    }
                }
            }
            Val::Obj(o) => {
                *acc += 1;
                for (k, x) in o.iter() {
                    go(k, acc, cap);
                    go(x, acc, cap);
                    if *acc > cap {
                        return;
                    }
                }
            }
            _ => *acc += 1,
        }
    }
    let mut acc = 0;
    go(v, &mut acc, cap);
    acc
}

/// Charges for comparing `a` with `b`: the size of the smaller one.
fn charge_compare(a: &Val, b: &Val) {
    let cost = match (a, b) {
        (Val::TStr(x) | Val::BStr(x), Val::TStr(y) | Val::BStr(y)) => str_cost(x.len().min(y.len())),
        (Val::Arr(_) | Val::Obj(_), Val::Arr(_) | Val::Obj(_)) => {
            let cap = budget::remaining();
            if cap == u64::MAX {
                return;
            }
            weight(a, cap).min(weight(b, cap))
        }
        _ => 1,
    };
    budget::charge(cost);
}

/// `a == b`, charged like jq's `==`.
pub(crate) fn equal(a: &Val, b: &Val) -> bool {
    charge_compare(a, b);
    a == b
}

impl Jv {
    pub(crate) const NULL: Jv = Jv { val: Val::Null, depth: 0 };

    fn scalar(val: Val) -> Self {
        Self { val, depth: 0 }
    }

    /// A value whose depth is at most `bound` (exact for scalars and empty containers).
    fn bounded(val: Val, bound: u32) -> Self {
        let depth = if !is_container(&val) {
            0
        } else if is_empty_container(&val) {
            1
        } else {
            bound.max(1)
        };
        Self { val, depth }
    }

    /// A child of a container of depth `parent`.
    fn child(val: Val, parent: u32) -> Self {
        Self::bounded(val, parent.saturating_sub(1))
    }

    /// A newly built container whose depth is at most `bound`; unwinds when it is really
    /// deeper than the limit.
    fn built(val: Val, bound: u32) -> Self {
        let mut this = Self::bounded(val, bound);
        if this.depth > budget::max_depth() {
            this.depth = exact_depth(&this.val);
            if this.depth > budget::max_depth() {
                budget::too_deep();
            }
        }
        this
    }

    /// Wraps a value of unknown depth, measuring it (charged); unwinds when it is too deep.
    pub(crate) fn measure(val: Val) -> Self {
        let depth = exact_depth(&val);
        if depth > budget::max_depth() {
            budget::too_deep();
        }
        Self { val, depth }
    }

    /// Wraps a value whose depth has already been measured.
    pub(crate) fn measured(val: Val, depth: u32) -> Self {
        Self { val, depth }
    }

    /// `.[i] |= f` past the end of an array (or on `null`): pads with nulls up to `i` when `f`
    /// gives a value, leaves the value as it is when `f` gives none.
    fn grow<'a, I: Iterator<Item = ValX<'a, Self>>>(self, i: usize, f: impl Fn(Self) -> I) -> ValX<'a, Self> {
        let Some(y) = f(Jv::NULL).next().transpose()? else {
            return Ok(self);
        };
        let mut items = match self.val {
            Val::Arr(a) => {
                let len = a.len();
                unwrap_or_clone(a, len)
            }
            _ => Vec::new(),
        };
        budget::charge((i + 1 - items.len()) as u64);
        items.resize(i, Val::Null);
        items.push(y.val);
        Ok(Jv::built(Val::Arr(Rc::new(items)), self.depth.max(y.depth.saturating_add(1))))
    }

    fn typ(self, typ: &'static str) -> Error<Self> {
        Error::typ(self, typ)
    }
}

/// Renders `d` into at most `cap` characters, with `...` when cut. Formatting stops at the cap,
/// so rendering a huge value costs no more than the cap.
pub(crate) fn capped(d: &impl fmt::Display, cap: usize) -> String {
    struct Capped {
        buf: String,
        left: usize,
        cut: bool,
    }
    impl fmt::Write for Capped {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            for c in s.chars() {
                if self.left == 0 {
                    self.cut = true;
                    return Err(fmt::Error);
                }
                self.buf.push(c);
                self.left -= 1;
            }
            Ok(())
        }
    }
    let mut w = Capped { buf: String::new(), left: cap, cut: false };
    let _ = write!(w, "{d}");
    if w.cut {
        w.buf.push_str("...");
    }
    w.buf
}

/// An error of jaq's own value type as an error of ours (its message, capped).
fn err(e: Error<Val>) -> Error<Jv> {
    Error::str(capped(&e, 2 * MESSAGE_VALUE_CHARS))
}

/// An exception raised inside jaq's value code as one of ours. jaq's value code only raises
/// errors; anything else would be a bug, reported as an error rather than a panic.
fn exn<'a>(e: Exn<'a, Val>) -> Exn<'a, Jv> {
    match e.get_err() {
        Ok(e) => Exn::from(err(e)),
        Err(_) => Exn::from(Error::str("internal error: unexpected control flow in a value update")),
    }
}

/// Runs one of jaq's `map_*` update methods with our closure `$f`: values are unwrapped on the
/// way in, exceptions of ours are kept aside (jaq's exception type cannot carry them) and put
/// back; the result's depth bound grows with what `$f` returned.
macro_rules! map_with {
    ($depth:expr, $child:expr, $f:expr, |$g:ident| $call:expr) => {{
        let (depth, child, f) = ($depth, $child, $f);
        let stash = RefCell::new(None);
        let deepest = Cell::new(0u32);
        let $g = |v: Val| {
            f(Jv::bounded(v, child)).map(|r| match r {
                Ok(j) => {
                    deepest.set(deepest.get().max(j.depth));
                    Ok(j.val)
                }
                Err(e) => {
                    stash.replace(Some(e));
                    Err(Exn::from(Error::new(Val::Null)))
                }
            })
        };
        match $call {
            Ok(v) => Ok(Jv::built(v, depth.max(deepest.get().saturating_add(1)))),
            Err(e) => Err(stash.into_inner().unwrap_or_else(|| exn(e))),
        }
    }};
}

impl jaq_core::ValT for Jv {
    fn from_num(n: &str) -> ValR<Self> {
        budget::charge(str_cost(n.len()));
        Val::from_num(n).map(Jv::scalar).map_err(err)
    }

    fn from_map<I: IntoIterator<Item = (Self, Self)>>(iter: I) -> ValR<Self> {
        let mut map = Map::default();
        let mut depth = 0;
        for (k, v) in iter {
            let Val::TStr(key) = &k.val else {
                return Err(Error::str(format_args!("object keys must be strings, not {k}")));
            };
            budget::charge(str_cost(key.len()));
            depth = depth.max(v.depth);
            map.insert(k.val, v.val);
        }
        Ok(Jv::built(Val::obj(map), depth + 1))
    }

    fn key_values(self) -> BoxIter<'static, ValR<(Self, Self), Self>> {
        let d = self.depth;
        match self.val {
            Val::Arr(a) => {
                let len = a.len();
                Box::new(unwrap_or_clone(a, len).into_iter().enumerate().map(move |(i, x)| {
                    budget::charge(1);
                    Ok((Jv::scalar(Val::from(i)), Jv::child(x, d)))
                }))
            }
            Val::Obj(o) => {
                let len = o.len();
                Box::new(unwrap_or_clone(o, len).into_iter().map(move |(k, x)| {
                    budget::charge(1);
                    Ok((Jv::scalar(k), Jv::child(x, d)))
                }))
            }
            v => box_once(Err(Jv::measured(v, d).typ("iterable (array or object)"))),
        }
    }

    fn values(self) -> Box<dyn Iterator<Item = ValR<Self>>> {
        let d = self.depth;
        match self.val {
            Val::Arr(a) => {
                let len = a.len();
                Box::new(unwrap_or_clone(a, len).into_iter().map(move |x| {
                    budget::charge(1);
                    Ok(Jv::child(x, d))
                }))
            }
            Val::Obj(o) => {
                let len = o.len();
                Box::new(unwrap_or_clone(o, len).into_iter().map(move |(_, x)| {
                    budget::charge(1);
                    Ok(Jv::child(x, d))
                }))
            }
            v => box_once(Err(Jv::measured(v, d).typ("iterable (array or object)"))),
        }
    }

    fn index(self, index: &Self) -> ValR<Self> {
        let d = self.depth;
        let (cost, bound) = match (&self.val, &index.val) {
            // `[1,2,1] | .[[1]]`: the indices of a sub-array, found by comparing windows
            (Val::Arr(x), Val::Arr(y)) => ((x.len() as u64).saturating_mul(y.len().max(1) as u64), 1),
            // slices: `.[{"start": 1}]`
            (Val::TStr(s) | Val::BStr(s), Val::Obj(_)) => (str_cost(s.len()), 0),
            (Val::Arr(a), Val::Obj(_)) => (1 + a.len() as u64, d),
            _ => (1, d.saturating_sub(1)),
        };
        budget::charge(cost);
        self.val.index(&index.val).map(|v| Jv::bounded(v, bound)).map_err(err)
    }

    fn range(self, range: val::Range<&Self>) -> ValR<Self> {
        let d = self.depth;
        budget::charge(match &self.val {
            Val::TStr(s) | Val::BStr(s) => str_cost(s.len()),
            v => 1 + container_len(v) as u64,
        });
        let range = range.start.map(|j| &j.val)..range.end.map(|j| &j.val);
        self.val.range(range).map(|v| Jv::bounded(v, d)).map_err(err)
    }

    fn map_values<'a, I: Iterator<Item = ValX<'a, Self>>>(self, opt: Opt, f: impl Fn(Self) -> I) -> ValX<'a, Self> {
        let d = self.depth;
        budget::charge(1 + container_len(&self.val) as u64);
        map_with!(d, d.saturating_sub(1), f, |g| self.val.map_values(opt, g))
    }

    fn map_index<'a, I: Iterator<Item = ValX<'a, Self>>>(
        self,
        index: &Self,
        opt: Opt,
        f: impl Fn(Self) -> I,
    ) -> ValX<'a, Self> {
        let d = self.depth;
        // jq creates what an update path runs into: `null | .a = 1` is `{"a": 1}`, and
        // `[1] | .[3] = 4` is `[1, null, null, 4]` (jaq fails on both)
        match (&self.val, &index.val) {
            (Val::Null, Val::TStr(_)) => {
                return Jv::measured(Val::obj(Map::default()), 1).map_index(index, opt, f);
            }
            (Val::Null | Val::Arr(_), Val::Num(n)) => {
                let len = container_len(&self.val);
                if let Some(i) = n.as_isize().and_then(|i| usize::try_from(i).ok()).filter(|i| *i >= len) {
                    return self.grow(i, f);
                }
            }
            _ => {}
        }
        let copy = match &self.val {
            Val::Arr(a) if shared(a) => a.len(),
            Val::Obj(o) if shared(o) => o.len(),
            Val::TStr(s) | Val::BStr(s) => s.len() / BYTES_PER_UNIT,
            _ => 0,
        };
        budget::charge(1 + copy as u64);
        // an object index on an array or string is a slice, at the same level
        let child = if matches!(index.val, Val::Obj(_)) { d } else { d.saturating_sub(1) };
        map_with!(d, child, f, |g| self.val.map_index(&index.val, opt, g))
    }

    fn map_range<'a, I: Iterator<Item = ValX<'a, Self>>>(
        self,
        range: val::Range<&Self>,
        opt: Opt,
        f: impl Fn(Self) -> I,
    ) -> ValX<'a, Self> {
        let d = self.depth;
        budget::charge(match &self.val {
            Val::TStr(s) | Val::BStr(s) => str_cost(s.len()),
            v => 1 + container_len(v) as u64,
        });
        let range = range.start.map(|j| &j.val)..range.end.map(|j| &j.val);
        map_with!(d, d, f, |g| self.val.map_range(range, opt, g))
    }

    fn as_bool(&self) -> bool {
        self.val.as_bool()
    }

    fn into_string(self) -> Self {
        let s = self.val.into_string();
        if let Val::TStr(b) = &s {
            budget::charge(str_cost(b.len()));
        }
        Jv::scalar(s)
    }
}

impl jaq_std::ValT for Jv {
    fn into_seq<S: FromIterator<Self>>(self) -> Result<S, Self> {
        let d = self.depth;
        match self.val {
            Val::Arr(a) => {
                let len = a.len();
                budget::charge(1);
                Ok(unwrap_or_clone(a, len).into_iter().map(|x| Jv::child(x, d)).collect())
            }
            v => Err(Jv::measured(v, d)),
        }
    }

    fn is_int(&self) -> bool {
        self.val.is_int()
    }

    fn as_isize(&self) -> Option<isize> {
        self.val.as_isize()
    }

    fn as_f64(&self) -> Option<f64> {
        self.val.as_f64()
    }

    fn is_utf8_str(&self) -> bool {
        self.val.is_utf8_str()
    }

    fn as_bytes(&self) -> Option<&[u8]> {
        self.val.as_bytes()
    }

    fn as_sub_str(&self, sub: &[u8]) -> Self {
        Jv::scalar(self.val.as_sub_str(sub))
    }

    fn from_utf8_bytes(b: impl AsRef<[u8]> + Send + 'static) -> Self {
        budget::charge(str_cost(b.as_ref().len()));
        Jv::scalar(Val::from_utf8_bytes(b))
    }
}

impl fmt::Display for Jv {
    /// A JSON rendering, cut after a few hundred characters: jaq uses this only for messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&capped(&self.val, MESSAGE_VALUE_CHARS))
    }
}

impl PartialEq for Jv {
    fn eq(&self, other: &Self) -> bool {
        charge_compare(&self.val, &other.val);
        self.val == other.val
    }
}

impl Eq for Jv {}

impl PartialOrd for Jv {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Jv {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        charge_compare(&self.val, &other.val);
        self.val.cmp(&other.val)
    }
}

impl From<bool> for Jv {
    fn from(b: bool) -> Self {
        Jv::scalar(Val::from(b))
    }
}

impl From<isize> for Jv {
    fn from(i: isize) -> Self {
        Jv::scalar(Val::from(i))
    }
}

impl From<usize> for Jv {
    fn from(i: usize) -> Self {
        Jv::scalar(Val::from(i))
    }
}

impl From<f64> for Jv {
    fn from(f: f64) -> Self {
        Jv::scalar(Val::from(f))
    }
}

impl From<String> for Jv {
    fn from(s: String) -> Self {
        budget::charge(str_cost(s.len()));
        Jv::scalar(Val::from(s))
    }
}

impl From<val::Range<Jv>> for Jv {
    fn from(r: val::Range<Jv>) -> Self {
        budget::charge(1);
        let depth = [&r.start, &r.end].into_iter().flatten().map(|j| j.depth).max().unwrap_or(0);
        Jv::built(Val::from(r.start.map(|j| j.val)..r.end.map(|j| j.val)), depth + 1)
    }
}

impl FromIterator<Jv> for Jv {
    fn from_iter<T: IntoIterator<Item = Jv>>(iter: T) -> Self {
        let mut depth = 0;
        let items: Vec<Val> = iter
            .into_iter()
            .map(|j| {
                budget::charge(1);
                depth = depth.max(j.depth);
                j.val
            })
            .collect();
        Jv::built(Val::Arr(Rc::new(items)), depth + 1)
    }
}

/// How many times a string is repeated by `s * n`: jq truncates `n` to an integer, and a count
/// of zero or less gives `null`.
fn repeat_count(n: &Num) -> usize {
    match n {
        Num::Int(i) => usize::try_from(*i).unwrap_or(0),
        Num::BigInt(_) => n.as_isize().map_or(usize::MAX, |i| usize::try_from(i).unwrap_or(0)),
        // `as` saturates (and maps NaN to 0)
        Num::Float(f) => *f as usize,
        Num::Dec(_) => jaq_std::ValT::as_f64(&Val::Num(n.clone())).map_or(0, |f| f as usize),
    }
}

impl std::ops::Add for Jv {
    type Output = ValR<Self>;
    fn add(self, rhs: Self) -> ValR<Self> {
        let depth = self.depth.max(rhs.depth);
        budget::charge(match (&self.val, &rhs.val) {
            // a string held only here is appended to in place; any other is copied first
            (Val::TStr(l) | Val::BStr(l), Val::TStr(r) | Val::BStr(r)) => {
                str_cost(if l.is_unique() { r.len() } else { l.len() + r.len() })
            }
            (Val::Arr(l), Val::Arr(r)) => 1 + r.len() as u64 + if shared(l) { l.len() as u64 } else { 0 },
            (Val::Obj(l), Val::Obj(r)) => 1 + r.len() as u64 + if shared(l) { l.len() as u64 } else { 0 },
            _ => 1,
        });
        (self.val + rhs.val).map(|v| Jv::bounded(v, depth)).map_err(err)
    }
}

impl std::ops::Sub for Jv {
    type Output = ValR<Self>;
    fn sub(self, rhs: Self) -> ValR<Self> {
        let depth = self.depth;
        budget::charge(match (&self.val, &rhs.val) {
            (Val::Arr(l), Val::Arr(r)) => 1 + (l.len() + r.len()) as u64,
            _ => 1,
        });
        (self.val - rhs.val).map(|v| Jv::bounded(v, depth)).map_err(err)
    }
}

impl std::ops::Mul for Jv {
    type Output = ValR<Self>;
    fn mul(self, rhs: Self) -> ValR<Self> {
        // jq repeats a string by a fractional count too (`"x" * 1e9`), jaq only by an integer
        if let (Val::TStr(_) | Val::BStr(_), Val::Num(n @ (Num::Float(_) | Num::Dec(_))))
        | (Val::Num(n @ (Num::Float(_) | Num::Dec(_))), Val::TStr(_) | Val::BStr(_)) = (&self.val, &rhs.val)
        {
            let count = repeat_count(n).min(isize::MAX as usize) as isize;
            let string = if matches!(self.val, Val::Num(_)) { rhs } else { self };
            return if count == 0 { Ok(Jv::NULL) } else { string * Jv::from(count) };
        }
        let depth = self.depth.max(rhs.depth);
        budget::charge(match (&self.val, &rhs.val) {
            (Val::TStr(s) | Val::BStr(s), Val::Num(n)) | (Val::Num(n), Val::TStr(s) | Val::BStr(s)) => {
                // charged before `repeat` allocates: `"x" * 1e12` stops here
                str_cost(s.len().saturating_mul(repeat_count(n)))
            }
            (Val::Obj(l), Val::Obj(_)) => {
                let copy = if shared(l) { l.len() as u64 } else { 0 };
                1 + copy + weight(&rhs.val, budget::remaining())
            }
            _ => 1,
        });
        (self.val * rhs.val).map(|v| Jv::bounded(v, depth)).map_err(err)
    }
}

impl std::ops::Div for Jv {
    type Output = ValR<Self>;
    fn div(self, rhs: Self) -> ValR<Self> {
        budget::charge(match (&self.val, &rhs.val) {
            // splitting: the pieces are slices of the string, one array element each
            (Val::TStr(l) | Val::BStr(l), Val::TStr(r) | Val::BStr(r)) => {
                str_cost(l.len()) + (l.len() / r.len().max(1)) as u64
            }
            _ => 1,
        });
        (self.val / rhs.val).map(|v| Jv::bounded(v, 1)).map_err(err)
    }
}

impl std::ops::Rem for Jv {
    type Output = ValR<Self>;
    fn rem(self, rhs: Self) -> ValR<Self> {
        budget::charge(1);
        (self.val % rhs.val).map(Jv::scalar).map_err(err)
    }
}

impl std::ops::Neg for Jv {
    type Output = ValR<Self>;
    fn neg(self) -> ValR<Self> {
        budget::charge(1);
        (-self.val).map(Jv::scalar).map_err(err)
    }
}

// ---- conversions to and from serde_json ----

/// A value nested deeper than the limit while converting from or to JSON.
#[derive(Debug)]
pub(crate) struct TooDeep;

/// Converts a JSON value for evaluation; fails when it is nested deeper than `max_depth`.
pub(crate) fn from_json(v: &Value, max_depth: u32) -> Result<Jv, TooDeep> {
    fn go(v: &Value, left: u32) -> Result<(Val, u32), TooDeep> {
        Ok(match v {
            Value::Null => (Val::Null, 0),
            Value::Bool(b) => (Val::Bool(*b), 0),
            Value::Number(n) => (number(n), 0),
            Value::String(s) => (Val::utf8_str(s.as_bytes().to_vec()), 0),
            Value::Array(items) => {
                let left = left.checked_sub(1).ok_or(TooDeep)?;
                let mut depth = 0;
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    let (x, d) = go(item, left)?;
                    depth = depth.max(d);
                    out.push(x);
                }
                (Val::Arr(Rc::new(out)), depth + 1)
            }
            Value::Object(fields) => {
                let left = left.checked_sub(1).ok_or(TooDeep)?;
                let mut depth = 0;
                let mut map = Map::default();
                map.reserve(fields.len());
                for (k, item) in fields {
                    let (x, d) = go(item, left)?;
                    depth = depth.max(d);
                    map.insert(Val::utf8_str(k.as_bytes().to_vec()), x);
                }
                (Val::obj(map), depth + 1)
            }
        })
    }
    let (val, depth) = go(v, max_depth)?;
    Ok(Jv::measured(val, depth))
}

fn number(n: &serde_json::Number) -> Val {
    if let Some(i) = n.as_i64() {
        isize::try_from(i).map_or_else(|_| Val::Num(Num::from_integral(i)), Val::from)
    } else if let Some(u) = n.as_u64() {
        Val::Num(Num::from_integral(u))
    } else {
        Val::from(n.as_f64().unwrap_or(f64::NAN))
    }
}

/// Why a value could not be returned as JSON.
#[derive(Debug)]
pub(crate) enum Overflow {
    /// It was nested deeper than the limit.
    Depth,
    /// Its JSON text would be larger than what was left of the output allowance.
    Bytes,
}

/// Converts an evaluation result to JSON, counting its approximate JSON size against `left`.
pub(crate) fn to_json(v: &Val, max_depth: u32, left: &mut usize) -> Result<Value, Overflow> {
    fn take(left: &mut usize, n: usize) -> Result<(), Overflow> {
        *left = left.checked_sub(n).ok_or(Overflow::Bytes)?;
        Ok(())
    }
    fn go(v: &Val, depth_left: u32, left: &mut usize) -> Result<Value, Overflow> {
        Ok(match v {
            Val::Null => {
                take(left, 4)?;
                Value::Null
            }
            Val::Bool(b) => {
                take(left, 5)?;
                Value::Bool(*b)
            }
            Val::Num(n) => {
                let n = num_to_json(n);
                take(left, 8)?;
                n
            }
            Val::TStr(b) | Val::BStr(b) => {
                take(left, b.len() + 2)?;
                Value::String(String::from_utf8_lossy(b).into_owned())
            }
            Val::Arr(a) => {
                let depth_left = depth_left.checked_sub(1).ok_or(Overflow::Depth)?;
                take(left, 2)?;
                let mut out = Vec::with_capacity(a.len());
                for x in a.iter() {
                    take(left, 1)?;
                    out.push(go(x, depth_left, left)?);
                }
                Value::Array(out)
            }
            Val::Obj(o) => {
                let depth_left = depth_left.checked_sub(1).ok_or(Overflow::Depth)?;
                take(left, 2)?;
                let mut out = serde_json::Map::with_capacity(o.len());
                for (k, x) in o.iter() {
                    let key = match k {
                        Val::TStr(b) | Val::BStr(b) => String::from_utf8_lossy(b).into_owned(),
                        other => other.to_string(),
                    };
                    take(left, key.len() + 4)?;
                    let x = go(x, depth_left, left)?;
                    out.insert(key, x);
                }
                Value::Object(out)
            }
        })
    }
    go(v, max_depth, left)
}

/// jq's number output: integers stay integers when they fit, NaN is null and infinities are
/// the largest finite doubles.
fn num_to_json(n: &Num) -> Value {
    let float = |f: f64| {
        let f = if f.is_infinite() { f64::MAX.copysign(f) } else { f };
        serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
    };
    match n {
        Num::Int(i) => Value::from(*i as i64),
        Num::Float(f) => float(*f),
        Num::BigInt(_) | Num::Dec(_) => {
            let text = Val::Num(n.clone()).to_string();
            if let Ok(i) = text.parse::<i64>() {
                Value::from(i)
            } else if let Ok(u) = text.parse::<u64>() {
                Value::from(u)
            } else {
                float(text.parse::<f64>().unwrap_or(f64::NAN))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn json_round_trip_keeps_numbers_and_depth() {
        let v = json!({"a": [1, -2, 3.5, 18446744073709551615u64, "x", null, true, {"b": {}}]});
        let jv = from_json(&v, 128).unwrap_or_default();
        assert_eq!(jv.depth, 4);
        let mut left = usize::MAX;
        assert_eq!(to_json(&jv.val, 128, &mut left).ok(), Some(v));
    }

    #[test]
    fn input_deeper_than_the_limit_is_refused() {
        let v = json!([[[[1]]]]);
        assert!(from_json(&v, 4).is_ok());
        assert!(from_json(&v, 3).is_err());
    }

    #[test]
    fn output_size_is_counted() {
        let jv = from_json(&json!(["abcdef", "ghijkl"]), 8).unwrap_or_default();
        let mut left = 10;
        assert!(matches!(to_json(&jv.val, 8, &mut left), Err(Overflow::Bytes)));
    }

    #[test]
    fn special_numbers_follow_jq() {
        assert_eq!(num_to_json(&Num::Float(f64::NAN)), Value::Null);
        assert_eq!(num_to_json(&Num::Float(f64::INFINITY)), json!(f64::MAX));
        assert_eq!(num_to_json(&Num::Dec(Rc::new("1.50".into()))), json!(1.5));
    }

    #[test]
    fn capped_rendering_stops_early() {
        let long = "x".repeat(10_000);
        let s = capped(&long, 10);
        assert_eq!(s, "xxxxxxxxxx...");
    }
}
