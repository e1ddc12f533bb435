//! The jq library an expression can call: jaq's core and standard definitions and native
//! filters, minus everything that does I/O, reads the clock or the host, or stops the process.
//!
//! The library is built once. Each compiled expression only carries the definitions it reaches
//! from its own source (jaq would otherwise compile the whole standard library, about 110 KB,
//! into every expression).

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use jaq_core::load::lex::StrPart;
use jaq_core::load::parse::{BinaryOp, Def, Pattern, Term};
use jaq_core::native::{Filter, Fun, bome, unary, v};
use jaq_core::path::Part;
use jaq_core::{Ctx, DataT, Error, RunPtr, ValR, ValXs, data::HasLut};
use jaq_json::Val;
use jaq_std::ValT as _;

use super::budget;
use super::value::{BYTES_PER_UNIT, Jv, capped, equal, str_cost, weight};

/// The data type of Baton's evaluations: values are [`Jv`], and every lookup of the compiled
/// program, which jaq does once per evaluation step, takes one unit of fuel.
pub(crate) struct Data;

impl DataT for Data {
    type V<'a> = Jv;
    type Data<'a> = LutRef<'a>;
}

/// The compiled program, as jaq's evaluator sees it.
#[derive(Clone)]
pub(crate) struct LutRef<'a>(pub(crate) &'a jaq_core::Lut<Data>);

impl<'a> HasLut<'a, Data> for LutRef<'a> {
    fn lut(&self) -> &'a jaq_core::Lut<Data> {
        budget::step();
        self.0
    }
}

/// The evaluation context of one run.
pub(crate) type Context<'a> = Ctx<'a, Data>;

/// Builtins refused at compile time, each with the reason given to the author.
pub(crate) const REFUSED: &[(&str, &str)] = &[
    ("env", "it would read the engine's environment"),
    ("$ENV", "it would read the engine's environment"),
    (
        "now",
        "it reads the clock, and a replayed workflow must compute the same values; \
         use $workflow.startedAt or $task.startedAt",
    ),
    ("localtime", "it depends on the engine host's time zone; use gmtime"),
    ("strflocaltime", "it depends on the engine host's time zone; use strftime"),
    ("halt", "it would stop the engine's process"),
    ("halt_error", "it would stop the engine's process; use error"),
    ("input", "an expression has exactly one input, `.`"),
    ("inputs", "an expression has exactly one input, `.`"),
    ("input_line_number", "an expression has exactly one input, `.`"),
    ("debug", "an expression cannot write to the engine's logs"),
    ("stderr", "an expression cannot write to the engine's logs"),
    ("import", "an expression cannot load modules or files"),
    ("include", "an expression cannot load modules or files"),
    ("get_search_list", "an expression cannot load modules or files"),
    ("modulemeta", "an expression cannot load modules or files"),
    ("get_prog_origin", "an expression cannot read the engine's files"),
    ("get_jq_origin", "an expression cannot read the engine's files"),
];

/// Why `name` (a filter name, or a variable with its `$`) is refused, if it is.
pub(crate) fn refusal(name: &str) -> Option<&'static str> {
    REFUSED.iter().find(|(n, _)| *n == name).map(|(_, why)| *why)
}

/// Native filters of jaq-std that are left out (see [`REFUSED`]).
const LEFT_OUT_NATIVES: &[&str] = &["env", "now", "halt", "debug_empty", "stderr_empty", "localtime", "strflocaltime"];

/// Definitions of jaq-std that are left out: they call the natives above.
const LEFT_OUT_DEFS: &[&str] = &["debug", "stderr", "halt", "halt_error"];

/// Regex natives of jaq-std, renamed so that only the definitions below can reach them: a match
/// costs time in proportion to the input times the pattern, and is charged for that first.
const REGEX_NATIVES: &[(&str, &str)] =
    &[("matches", "!matches"), ("split_matches", "!split_matches"), ("split_", "!split_")];

/// `def matches($re; $flags): !regex_cost($re) | !matches($re; $flags);` and so on.
fn regex_defs() -> impl Iterator<Item = Def<&'static str>> {
    REGEX_NATIVES.iter().map(|&(name, native)| Def {
        name,
        args: vec!["$re", "$flags"],
        body: Term::BinOp(
            Box::new(Term::Call("!regex_cost", vec![Term::Var("$re")])),
            BinaryOp::Pipe(None),
            Box::new(Term::Call(native, vec![Term::Var("$re"), Term::Var("$flags")])),
        ),
    })
}

/// Definitions Baton adds: jq builtins that jaq lacks and that are harmless here.
const EXTRA_DEFS: &str = "def input_filename: null;";

/// The library's definitions in order (a definition may call the ones before it).
pub(crate) struct Prelude {
    defs: Vec<Def<&'static str>>,
    /// For each definition, the names its body calls.
    calls: Vec<Vec<&'static str>>,
    by_name: HashMap<&'static str, Vec<usize>>,
}

pub(crate) static PRELUDE: LazyLock<Prelude> = LazyLock::new(|| {
    let extra = jaq_core::load::parse(EXTRA_DEFS, |p| p.defs()).unwrap_or_default();
    let defs: Vec<_> = jaq_core::defs()
        .chain(regex_defs())
        .chain(jaq_std::defs().filter(|d| !LEFT_OUT_DEFS.contains(&d.name)))
        .chain(jaq_json::defs())
        .chain(extra)
        .collect();
    let calls = defs
        .iter()
        .map(|d| {
            let mut out = Vec::new();
            term_calls(&d.body, &mut out);
            out
        })
        .collect();
    let mut by_name: HashMap<_, Vec<_>> = HashMap::new();
    for (i, d) in defs.iter().enumerate() {
        by_name.entry(d.name).or_default().push(i);
    }
    Prelude { defs, calls, by_name }
});

impl Prelude {
    /// The definitions reachable from `words` (every identifier of an expression), in order.
    pub(crate) fn select(&self, words: &HashSet<&str>) -> Vec<Def<&'static str>> {
        let mut needed: HashSet<&str> = HashSet::new();
        let mut todo: Vec<&str> = words.iter().copied().collect();
        while let Some(word) = todo.pop() {
            if !needed.insert(word) {
                continue;
            }
            for &i in self.by_name.get(word).into_iter().flatten() {
                todo.extend(self.calls[i].iter().copied().filter(|c| !needed.contains(c)));
            }
        }
        self.defs.iter().filter(|d| needed.contains(d.name)).cloned().collect()
    }

    fn signatures(&self) -> impl Iterator<Item = (&'static str, usize)> + '_ {
        self.defs.iter().map(|d| (d.name, d.args.len()))
    }
}

/// Collects the names a term calls (filters and `@format`s).
fn term_calls<'s>(t: &Term<&'s str>, out: &mut Vec<&'s str>) {
    match t {
        Term::Id | Term::Recurse | Term::Num(_) | Term::Var(_) | Term::Break(_) => {}
        Term::Str(fmt, parts) => {
            out.extend(fmt);
            for part in parts {
                if let StrPart::Term(t) = part {
                    term_calls(t, out);
                }
            }
        }
        Term::Arr(t) => t.iter().for_each(|t| term_calls(t, out)),
        Term::Obj(entries) => {
            for (k, v) in entries {
                term_calls(k, out);
                v.iter().for_each(|v| term_calls(v, out));
            }
        }
        Term::Neg(t) | Term::Label(_, t) => term_calls(t, out),
        Term::BinOp(l, op, r) => {
            term_calls(l, out);
            if let BinaryOp::Pipe(Some(p)) = op {
                pattern_calls(p, out);
            }
            term_calls(r, out);
        }
        Term::Fold(_, xs, p, args) => {
            term_calls(xs, out);
            pattern_calls(p, out);
            args.iter().for_each(|t| term_calls(t, out));
        }
        Term::TryCatch(t, c) => {
            term_calls(t, out);
            c.iter().for_each(|c| term_calls(c, out));
        }
        Term::IfThenElse(branches, otherwise) => {
            for (cond, then) in branches {
                term_calls(cond, out);
                term_calls(then, out);
            }
            otherwise.iter().for_each(|t| term_calls(t, out));
        }
        Term::Def(defs, t) => {
            defs.iter().for_each(|d| term_calls(&d.body, out));
            term_calls(t, out);
        }
        Term::Call(name, args) => {
            out.push(name);
            args.iter().for_each(|t| term_calls(t, out));
        }
        Term::Path(t, path) => {
            term_calls(t, out);
            for (part, _) in &path.0 {
                match part {
                    Part::Index(i) => term_calls(i, out),
                    Part::Range(from, to) => {
                        from.iter().chain(to).for_each(|t| term_calls(t, out));
                    }
                }
            }
        }
    }
}

fn pattern_calls<'s>(p: &Pattern<&'s str>, out: &mut Vec<&'s str>) {
    match p {
        Pattern::Var(_) => {}
        Pattern::Arr(ps) => ps.iter().for_each(|p| pattern_calls(p, out)),
        Pattern::Obj(entries) => {
            for (k, p) in entries {
                term_calls(k, out);
                pattern_calls(p, out);
            }
        }
    }
}

/// The native filters, built for each compilation (jaq's compiler consumes them).
pub(crate) fn natives() -> impl Iterator<Item = Fun<Data>> {
    let rename = |(name, arity, f): Fun<Data>| {
        let name = REGEX_NATIVES.iter().find(|(n, _)| *n == name).map_or(name, |(_, renamed)| renamed);
        (name, arity, f)
    };
    jaq_core::funs::<Data>()
        .chain(jaq_std::funs::<Data>().filter(|(name, _, _)| !LEFT_OUT_NATIVES.contains(name)).map(rename))
        .chain(json_natives().into_vec().into_iter().map(jaq_core::native::run::<Data>))
}

/// Every builtin an expression may call, as `(name, arity)`, sorted.
pub(crate) fn builtins() -> Vec<(String, usize)> {
    let natives = natives().map(|(name, arity, _)| (name, arity.len()));
    let mut all: Vec<(String, usize)> = PRELUDE
        .signatures()
        .chain(natives)
        .filter(|(name, _)| !name.starts_with('!'))
        .map(|(name, arity)| (name.to_owned(), arity))
        .collect();
    all.sort();
    all.dedup();
    all
}

// ---- natives replacing jaq-json's (which are tied to jaq's own value type) ----

fn json_natives() -> Box<[Filter<RunPtr<Data>>]> {
    Box::new([
        ("length", v(0), |cv| bome(length(cv.1))),
        ("tojson", v(0), |cv| bome(Ok(Jv::from(cv.1.val.to_string())))),
        ("fromjson", v(0), |cv| fromjson(cv.1)),
        ("contains", v(1), |cv| unary(cv, |x, y| Ok(Jv::from(contains(&x.val, &y.val))))),
        ("has", v(1), |cv| unary(cv, has)),
        ("indices", v(1), |cv| unary(cv, indices)),
        ("bsearch", v(1), |cv| unary(cv, bsearch)),
        ("!regex_cost", v(1), |cv| unary(cv, regex_cost)),
    ])
}

fn text_of(b: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(b)
}

fn length(v: Jv) -> ValR<Jv> {
    match &v.val {
        Val::Null => Ok(Jv::from(0usize)),
        Val::Bool(_) => Err(Error::str(format_args!("{v} has no length"))),
        Val::Num(_) if v.val < Val::from(0isize) => -v,
        Val::Num(_) => Ok(v),
        Val::TStr(s) => {
            budget::charge(str_cost(s.len()));
            Ok(Jv::from(text_of(s).chars().count()))
        }
        Val::BStr(b) => Ok(Jv::from(b.len())),
        Val::Arr(a) => Ok(Jv::from(a.len())),
        Val::Obj(o) => Ok(Jv::from(o.len())),
    }
}

/// The deepest `[`/`{` nesting of JSON text, strings skipped.
fn json_nesting(text: &[u8]) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &c in text {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                in_string = false;
            }
            continue;
        }
        match c {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

fn fromjson<'a>(v: Jv) -> ValXs<'a, Jv> {
    let Val::TStr(text) = &v.val else {
        return bome(Err(Error::typ(v, "string")));
    };
    // the parser recurses once per level: refuse what would be too deep before parsing
    if json_nesting(text) > budget::max_depth() as usize {
        budget::too_deep();
    }
    budget::charge(2 * str_cost(text.len()));
    let mut out = Vec::new();
    for parsed in jaq_json::read::parse_many(text) {
        match parsed {
            Ok(val) => out.push(Ok(Jv::measure(val))),
            Err(e) => {
                let input = capped(&v, 100);
                out.push(Err(Error::str(format_args!("cannot parse {input} as JSON: {e}")).into()));
                break;
            }
        }
    }
    Box::new(out.into_iter())
}

/// Where `needle` first occurs in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    match (std::str::from_utf8(hay), std::str::from_utf8(needle)) {
        (Ok(h), Ok(n)) => h.find(n),
        _ => {
            budget::charge((hay.len() as u64).saturating_mul(needle.len() as u64) / BYTES_PER_UNIT as u64);
            hay.windows(needle.len()).position(|w| w == needle)
        }
    }
}

/// jq's `contains`: substrings, sub-arrays (any order) and sub-objects, recursively.
fn contains(a: &Val, b: &Val) -> bool {
    budget::charge(1);
    match (a, b) {
        (Val::TStr(l) | Val::BStr(l), Val::TStr(r) | Val::BStr(r)) => {
            budget::charge(str_cost(l.len()));
            find(l, r).is_some()
        }
        (Val::Arr(l), Val::Arr(r)) => r.iter().all(|r| l.iter().any(|l| contains(l, r))),
        (Val::Obj(l), Val::Obj(r)) => r.iter().all(|(k, r)| l.get(k).is_some_and(|l| contains(l, r))),
        _ => equal(a, b),
    }
}

fn has(v: Jv, key: Jv) -> ValR<Jv> {
    match (&v.val, &key.val) {
        (Val::Obj(o), Val::TStr(k)) => {
            budget::charge(str_cost(k.len()));
            Ok(Jv::from(o.contains_key(&key.val)))
        }
        (Val::Arr(a), Val::Num(_)) => {
            let i = key.val.as_isize();
            Ok(Jv::from(i.is_some_and(|i| usize::try_from(i).is_ok_and(|i| i < a.len()))))
        }
        _ => Err(Error::str(format_args!("cannot check whether {v} has a key {key}"))),
    }
}

fn indices(x: Jv, y: Jv) -> ValR<Jv> {
    let at: Vec<usize> = match (&x.val, &y.val) {
        (Val::TStr(_) | Val::BStr(_), Val::TStr(n) | Val::BStr(n)) if n.is_empty() => Vec::new(),
        (Val::TStr(h), Val::TStr(n)) => {
            budget::charge(1 + (h.len() as u64).saturating_mul(n.len() as u64) / BYTES_PER_UNIT as u64);
            let (h, n) = (text_of(h), text_of(n));
            h.char_indices()
                .enumerate()
                .filter(|(_, (start, _))| h[*start..].starts_with(&*n))
                .map(|(i, _)| i)
                .collect()
        }
        (Val::BStr(h), Val::BStr(n)) => {
            budget::charge(1 + (h.len() as u64).saturating_mul(n.len() as u64) / BYTES_PER_UNIT as u64);
            h.windows(n.len()).enumerate().filter(|(_, w)| *w == &n[..]).map(|(i, _)| i).collect()
        }
        (Val::Arr(_), Val::Arr(n)) if n.is_empty() => Vec::new(),
        (Val::Arr(h), Val::Arr(n)) => {
            budget::charge(1 + (h.len() as u64).saturating_mul(n.len() as u64));
            h.windows(n.len()).enumerate().filter(|(_, w)| *w == &n[..]).map(|(i, _)| i).collect()
        }
        (Val::Arr(h), n) => {
            budget::charge((1 + h.len() as u64).saturating_mul(weight(n, budget::remaining())));
            h.iter().enumerate().filter(|(_, e)| *e == n).map(|(i, _)| i).collect()
        }
        _ => return Err(Error::str(format_args!("cannot index {x} with {y}"))),
    };
    Ok(at.into_iter().map(Jv::from).collect())
}

fn bsearch(a: Jv, x: Jv) -> ValR<Jv> {
    let Val::Arr(items) = &a.val else {
        return Err(Error::typ(a, "array"));
    };
    let steps = 1 + u64::from(usize::BITS - items.len().leading_zeros());
    budget::charge(steps.saturating_mul(weight(&x.val, budget::remaining())));
    let at = match items.binary_search(&x.val) {
        Ok(i) => i as isize,
        Err(i) => -1 - i as isize,
    };
    Ok(Jv::from(at))
}

/// Charges for a regex match of `$re` on the input (time grows with input times pattern),
/// and passes the input on.
fn regex_cost(input: Jv, re: Jv) -> ValR<Jv> {
    let n = input.val.as_bytes().map_or(0, <[u8]>::len) as u64;
    let m = re.val.as_bytes().map_or(0, <[u8]>::len) as u64;
    budget::charge(1 + n.saturating_mul(1 + m) / BYTES_PER_UNIT as u64);
    Ok(input)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_skips_strings() {
        assert_eq!(json_nesting(br#"{"a": [1, "[[[", {"b": "\"{"}]}"#), 3);
    }

    #[test]
    fn left_out_builtins_are_not_listed() {
        let all = builtins();
        for name in ["env", "now", "halt", "halt_error", "debug", "stderr", "input", "inputs", "localtime"] {
            assert!(!all.iter().any(|(n, _)| n == name), "{name} must not be a builtin");
        }
        for name in ["map", "select", "test", "tojson", "fromjson", "gmtime", "mktime", "getpath", "ltrimstr"] {
            assert!(all.iter().any(|(n, _)| n == name), "{name} must be a builtin");
        }
    }

    #[test]
    fn selection_follows_calls() {
        let words: HashSet<&str> = ["map"].into_iter().collect();
        let selected = PRELUDE.select(&words);
        assert!(selected.iter().any(|d| d.name == "map"));
        assert!(selected.len() < 10, "only what `map` needs: {}", selected.len());
        let words: HashSet<&str> = ["test"].into_iter().collect();
        let names: Vec<_> = PRELUDE.select(&words).iter().map(|d| d.name).collect();
        assert!(names.contains(&"matches") && names.contains(&"any"), "{names:?}");
    }
}
