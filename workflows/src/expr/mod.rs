//! jq runtime expressions (`${ ... }`), compiled once per definition version and evaluated by
//! the interpreter under a deterministic budget.
//!
//! docs/expressions.md is the user-facing description: which arguments (`$context`, `$input`,
//! ...) exist where, strict and loose mode, the output rule, the refused builtins, the limits and
//! secret masking. In short:
//!
//! - [`Expr::compile`] parses and compiles one jq program against jaq's library minus
//!   everything that does I/O, reads the clock or the host, or stops the process ([`builtins`]
//!   lists what is left). A refused builtin is a compile error ([`ExprErrorKind::Refused`]).
//! - [`Expr::eval`] runs it on a JSON input with named [`Vars`]. Every evaluation step and every
//!   byte of data it builds takes fuel from a fixed allowance ([`Limits::fuel`]); running out is
//!   [`ExprErrorKind::Budget`]. The count is deterministic: the same expression on the same data
//!   always stops at the same point, on any machine, so a replayed workflow reaches the same
//!   outcome. Output count, output size, value depth and recursion depth are bounded too
//!   ([`ExprErrorKind::Limit`]). Nothing reads the clock.
//! - [`Template`] is a JSON value whose `${ }` strings are expressions; [`mask`] hides secret
//!   values in anything bound for history or logs.

mod budget;
mod library;
mod mask;
mod template;
mod value;

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use jaq_core::load::lex::{StrPart, Tok, Token};
use jaq_core::load::{Arena, File, Lexer, Loader};
use jaq_core::{Compiler, compile::Undefined};
use jaq_json::Val;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use mask::{MIN_SECRET_CHARS, mask, mask_text};
pub use template::{Mode, Template, TemplateError};

use budget::{Allowance, Stop};
use library::{Context, Data, LutRef};
use value::{Jv, Overflow, capped};

/// What kind of failure an [`ExprError`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExprErrorKind {
    /// The source does not parse, or calls a filter or variable that does not exist.
    Syntax,
    /// The source uses a builtin that Baton refuses (`env`, `now`, `input`, `import`...).
    Refused,
    /// The evaluation raised a jq error (`error(...)`, `null | .[0] + "a"`...).
    Runtime,
    /// The evaluation ran out of fuel ([`Limits::fuel`]).
    Budget,
    /// A size limit was exceeded: source length, output count or size, value nesting, or
    /// recursion depth.
    Limit,
}

impl ExprErrorKind {
    /// A stable lower-case name, for logs and problem details.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Syntax => "syntax",
            Self::Refused => "refused",
            Self::Runtime => "runtime",
            Self::Budget => "budget",
            Self::Limit => "limit",
        }
    }
}

impl fmt::Display for ExprErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error a failed compile or evaluation gives. Messages of evaluations whose [`Vars`] hold
/// `secrets` have the secret values masked.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ExprError {
    /// What kind of failure this is.
    pub kind: ExprErrorKind,
    /// What went wrong, for the author (jq's own message for runtime errors).
    pub message: String,
    /// For compile errors: the character offset of the problem inside the expression's source
    /// (the text inside `${ }`).
    pub offset: Option<usize>,
}

impl ExprError {
    fn new(kind: ExprErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), offset: None }
    }

    fn at(mut self, offset: Option<usize>) -> Self {
        self.offset = offset;
        self
    }
}

/// What an evaluation may use. The defaults suit workflow data of a few megabytes; every field
/// is deterministic except [`Limits::max_stack_bytes`] (see its note).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Longest expression source, in characters (checked when compiling).
    pub max_source_chars: usize,
    /// Most values one evaluation may output.
    pub max_outputs: usize,
    /// Largest total size of the outputs, in bytes of (approximate) JSON text.
    pub max_output_bytes: usize,
    /// Deepest nesting of any value, as input, while evaluating, or as output. 128 is also the
    /// nesting serde_json reads back by default.
    pub max_depth: u32,
    /// Fuel of one evaluation: one unit per evaluation step and per array element or object
    /// entry built, and one per 32 bytes of string built; comparisons cost the size of what they
    /// compare. Running out is [`ExprErrorKind::Budget`].
    pub fuel: u64,
    /// Stack an evaluation may use for jq recursion, in bytes. Evaluations start on the
    /// calling thread with a small allowance (256 KiB) and move to a thread of their own with
    /// this much stack when they recurse deeper; going past it is [`ExprErrorKind::Limit`]. The
    /// bytes one level of recursion takes depend on the build, so this limit, unlike the
    /// others, may stop an expression at a slightly different depth after an upgrade.
    pub max_stack_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_source_chars: 8 * 1024,
            max_outputs: 10_000,
            max_output_bytes: 16 * 1024 * 1024,
            max_depth: 128,
            fuel: 1_000_000,
            max_stack_bytes: 16 * 1024 * 1024,
        }
    }
}

/// Stack an evaluation may use on the calling thread before it moves to a thread of its own.
const INLINE_STACK_BYTES: usize = 256 * 1024;
/// Stack beyond the allowance for what runs past the last check: recursion over values (at
/// most [`Limits::max_depth`] deep), dropping them, converting outputs.
const STACK_MARGIN_BYTES: usize = 4 * 1024 * 1024;
/// Stack of the thread that parses and compiles: jaq's parser recurses once per nesting level
/// of the source, and compiling is rare enough to always get a thread of its own.
const COMPILE_STACK_BYTES: usize = 64 * 1024 * 1024;
/// Longest jq error message kept.
const MAX_MESSAGE_CHARS: usize = 1000;

/// Named values an expression reads as `$name` (`context`, `input`, `task`...). Names are
/// given without `$` (a leading `$` is ignored). A variable the expression may use but that is
/// not given evaluates to `null`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Vars {
    vars: Vec<(String, Value)>,
}

fn bare(name: &str) -> &str {
    name.strip_prefix('$').unwrap_or(name)
}

impl Vars {
    /// No variables.
    pub fn new() -> Self {
        Self::default()
    }

    /// These variables and `name` set to `value`.
    #[must_use]
    pub fn with(mut self, name: &str, value: Value) -> Self {
        self.set(name, value);
        self
    }

    /// Sets `name` to `value`, replacing any earlier value.
    pub fn set(&mut self, name: &str, value: Value) {
        let name = bare(name).to_owned();
        match self.vars.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => *v = value,
            None => self.vars.push((name, value)),
        }
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&Value> {
        let name = bare(name);
        self.vars.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// The variables, in the order they were first set.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.vars.iter().map(|(n, v)| (n.as_str(), v))
    }
}

/// `"${ .a }"` → `Some(" .a ")`: the source of a string that is a runtime expression, with
/// whitespace allowed around `${ }`; otherwise `None`.
pub fn strip(s: &str) -> Option<&str> {
    s.trim().strip_prefix("${")?.strip_suffix('}')
}

/// Checks one expression (without `${ }`): syntax, refused builtins and undefined filters.
/// Any `$variable` is accepted (except refused ones such as `$ENV`).
pub fn check_syntax(source: &str) -> Result<(), ExprError> {
    check_length(source, &Limits::default())?;
    on_compile_thread(|| {
        let tokens = lex(source)?;
        let scanned = scan(source, &tokens)?;
        let names: Vec<&str> = scanned.vars.iter().filter(|v| library::refusal(v).is_none()).map(|v| bare(v)).collect();
        compile_tokens(source, &names, &scanned).map(drop)
    })
}

/// Every builtin filter an expression may call, as `(name, arity)`, sorted. Definitions and
/// native filters alike; the refused ones are absent.
pub fn builtins() -> Vec<(String, usize)> {
    library::builtins()
}

/// A compiled expression: cheap to clone and to share between threads.
#[derive(Clone)]
pub struct Expr {
    inner: Arc<Compiled>,
}

struct Compiled {
    source: String,
    filter: jaq_core::Filter<Data>,
    /// The variables the source mentions, in the order jaq expects their values.
    names: Vec<String>,
}

impl fmt::Debug for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Expr").field("source", &self.inner.source).finish_non_exhaustive()
    }
}

impl Expr {
    /// Compiles `source` (without `${ }`), where `names` are the variables it may read, without
    /// `$` (`["context", "input", ...]`), under the default [`Limits`].
    pub fn compile(source: &str, names: &[&str]) -> Result<Expr, ExprError> {
        Self::compile_with(source, names, &Limits::default())
    }

    /// [`Expr::compile`] with the source length limit of `limits`.
    pub fn compile_with(source: &str, names: &[&str], limits: &Limits) -> Result<Expr, ExprError> {
        check_length(source, limits)?;
        let given: Vec<&str> = names.iter().map(|n| bare(n)).collect();
        // only the variables the source mentions are declared to jaq (and converted for each
        // evaluation): a variable the source never names cannot be read
        let names: Vec<&str> = given.iter().copied().filter(|n| mentions(source, n)).collect();
        let filter = on_compile_thread(|| {
            let tokens = lex(source)?;
            let scanned = scan(source, &tokens)?;
            compile_tokens(source, &names, &scanned).map_err(|e| with_known(e, &given))
        })?;
        let names = names.into_iter().map(str::to_owned).collect();
        Ok(Expr { inner: Arc::new(Compiled { source: source.to_owned(), filter, names }) })
    }

    /// Compiles a field that holds only an expression (`if`, `when`, `for.in`, `while`,
    /// `input.from`, `output.as`, `export.as`...). In [`Mode::Strict`] the string must be
    /// `${ ... }`; in [`Mode::Loose`] a bare string is an expression too. Error offsets are
    /// relative to the expression's source (inside `${ }` when present).
    pub fn compile_field(s: &str, mode: Mode, names: &[&str]) -> Result<Expr, ExprError> {
        match (strip(s), mode) {
            (Some(source), _) => Self::compile(source, names),
            (None, Mode::Loose) => Self::compile(s, names),
            (None, Mode::Strict) => Err(ExprError::new(
                ExprErrorKind::Syntax,
                "expected a runtime expression written as `${ ... }` (the workflow evaluates in strict mode)",
            )),
        }
    }

    /// The source the expression was compiled from (without `${ }`).
    pub fn source(&self) -> &str {
        &self.inner.source
    }

    /// Whether the source mentions `$name` (name given without `$`).
    pub fn uses(&self, name: &str) -> bool {
        mentions(&self.inner.source, bare(name))
    }

    /// Evaluates the expression on `input`.
    ///
    /// The output rule (the DSL does not say how a jq stream becomes one value): no output is
    /// `null`, one output is that value, several outputs are an array of them in order.
    pub fn eval(&self, input: &Value, vars: &Vars, limits: &Limits) -> Result<Value, ExprError> {
        let mut env = Env::new(vars, limits);
        let result = env.input(input).and_then(|input| self.eval_in(input, &mut env));
        result.map_err(|e| env.mask(e))
    }

    /// Evaluates the expression as a condition: the output rule of [`Expr::eval`], then jq
    /// truthiness (`false` and `null` are false, everything else is true).
    pub fn eval_bool(&self, input: &Value, vars: &Vars, limits: &Limits) -> Result<bool, ExprError> {
        self.eval(input, vars, limits).map(|v| !matches!(v, Value::Null | Value::Bool(false)))
    }

    /// Evaluates with an already converted input and the conversions cached in `env`.
    fn eval_in(&self, input: Jv, env: &mut Env<'_>) -> Result<Value, ExprError> {
        let c = &self.inner;
        let mut globals = Vec::with_capacity(c.names.len());
        for name in &c.names {
            globals.push(env.var(name)?);
        }
        let limits = env.limits;
        let inline = Allowance {
            fuel: limits.fuel,
            stack_bytes: limits.max_stack_bytes.min(INLINE_STACK_BYTES),
            max_depth: limits.max_depth,
        };
        let outcome = match self.run(&input, &globals, limits, inline, env.output_left) {
            Err(Stop::Stack) if limits.max_stack_bytes > INLINE_STACK_BYTES => {
                self.run_deep(&input, &globals, limits, env.output_left)?
            }
            outcome => outcome,
        };
        let (outputs, left) = match outcome {
            Ok(Ok(done)) => done,
            Ok(Err(failure)) => return Err(failure.into_error(limits)),
            Err(stop) => return Err(stop_error(stop, limits)),
        };
        env.output_left = left;
        let mut outputs = outputs;
        Ok(match outputs.len() {
            0 => Value::Null,
            1 => outputs.pop().unwrap_or_default(),
            _ => Value::Array(outputs),
        })
    }

    /// Runs again on a thread with [`Limits::max_stack_bytes`] of stack, for an evaluation that
    /// recursed past the inline allowance.
    fn run_deep(&self, input: &Jv, globals: &[Jv], limits: &Limits, left: usize) -> Result<RunOutcome, ExprError> {
        let allowance =
            Allowance { fuel: limits.fuel, stack_bytes: limits.max_stack_bytes, max_depth: limits.max_depth };
        std::thread::scope(|scope| {
            let thread = std::thread::Builder::new()
                .name("baton-jq".into())
                .stack_size(limits.max_stack_bytes.saturating_add(STACK_MARGIN_BYTES))
                .spawn_scoped(scope, || self.run(input, globals, limits, allowance, left))
                .map_err(|e| {
                    ExprError::new(ExprErrorKind::Limit, format!("could not start a thread for a deep evaluation: {e}"))
                })?;
            thread.join().map_err(|_| ExprError::new(ExprErrorKind::Runtime, "the evaluation thread failed"))
        })
    }

    /// One run under `allowance`: the outputs as JSON and what is left of the output size
    /// allowance, or why it failed.
    fn run(&self, input: &Jv, globals: &[Jv], limits: &Limits, allowance: Allowance, left: usize) -> RunOutcome {
        let filter = &self.inner.filter;
        let (outcome, _fuel_used) = budget::run(allowance, || {
            let ctx = Context::new(LutRef(&filter.lut), jaq_core::Vars::new(globals.iter().cloned()));
            let mut outputs = Vec::new();
            let mut left = left;
            for item in filter.id.run((ctx, input.clone())) {
                let item = match item {
                    Ok(item) => item,
                    Err(exn) => {
                        return Err(match exn.get_err() {
                            Ok(error) => Failure::Jq(error),
                            Err(_) => Failure::Internal,
                        });
                    }
                };
                if outputs.len() == limits.max_outputs {
                    return Err(Failure::TooMany);
                }
                outputs.push(value::to_json(&item.val, limits.max_depth, &mut left).map_err(Failure::Output)?);
            }
            Ok((outputs, left))
        });
        outcome
    }
}

type RunOutcome = Result<Result<(Vec<Value>, usize), Failure>, Stop>;

/// Why a run that did not stop on its budget failed.
enum Failure {
    /// jq raised an error.
    Jq(jaq_core::Error<Jv>),
    /// jq's evaluator returned control flow at the top (a bug).
    Internal,
    TooMany,
    Output(Overflow),
}

impl Failure {
    fn into_error(self, limits: &Limits) -> ExprError {
        use ExprErrorKind::{Limit, Runtime};
        match self {
            Failure::Jq(error) => ExprError::new(Runtime, jq_message(error)),
            Failure::Internal => {
                ExprError::new(Runtime, "internal error: unexpected control flow out of the expression")
            }
            Failure::TooMany => {
                ExprError::new(Limit, format!("the expression output more than {} values", limits.max_outputs))
            }
            Failure::Output(Overflow::Bytes) => ExprError::new(
                Limit,
                format!("the expression's output is larger than {} bytes", limits.max_output_bytes),
            ),
            Failure::Output(Overflow::Depth) => ExprError::new(
                Limit,
                format!("the expression's output is nested deeper than {} levels", limits.max_depth),
            ),
        }
    }
}

/// jq's message for an error: a string error is its text, anything else its JSON.
fn jq_message(error: jaq_core::Error<Jv>) -> String {
    let value = error.into_val();
    match &value.val {
        Val::TStr(text) => capped(&String::from_utf8_lossy(text), MAX_MESSAGE_CHARS),
        _ => format!("{value} (not a string)"),
    }
}

fn stop_error(stop: Stop, limits: &Limits) -> ExprError {
    use ExprErrorKind::{Budget, Limit, Runtime};
    match stop {
        Stop::Fuel => ExprError::new(
            Budget,
            format!(
                "the expression ran past its budget of {} fuel units (evaluation steps and data built); \
                 it may not terminate, or it needs a larger budget",
                limits.fuel
            ),
        ),
        Stop::Stack => ExprError::new(
            Limit,
            format!("the expression recursed deeper than its stack allowance of {} bytes", limits.max_stack_bytes),
        ),
        Stop::Depth => ExprError::new(
            Limit,
            format!("the expression built a value nested deeper than {} levels", limits.max_depth),
        ),
        Stop::Panic(message) => ExprError::new(Runtime, format!("internal error in the jq evaluator: {message}")),
    }
}

/// The conversions of one evaluation (or of all expressions of one template): the input and
/// each variable are converted at most once, and only when an expression uses them.
pub(crate) struct Env<'v> {
    vars: &'v Vars,
    limits: &'v Limits,
    cache: Vec<(&'v str, Jv)>,
    /// What is left of [`Limits::max_output_bytes`].
    output_left: usize,
}

impl<'v> Env<'v> {
    pub(crate) fn new(vars: &'v Vars, limits: &'v Limits) -> Self {
        Self { vars, limits, cache: Vec::new(), output_left: limits.max_output_bytes }
    }

    fn too_deep(&self, what: &str) -> ExprError {
        ExprError::new(ExprErrorKind::Limit, format!("{what} is nested deeper than {} levels", self.limits.max_depth))
    }

    pub(crate) fn input(&self, input: &Value) -> Result<Jv, ExprError> {
        value::from_json(input, self.limits.max_depth).map_err(|_| self.too_deep("the input"))
    }

    fn var(&mut self, name: &str) -> Result<Jv, ExprError> {
        if let Some((_, jv)) = self.cache.iter().find(|(n, _)| *n == name) {
            return Ok(jv.clone());
        }
        let Some((stored, value)) = self.vars.vars.iter().find(|(n, _)| n == name) else {
            return Ok(Jv::NULL);
        };
        let jv = value::from_json(value, self.limits.max_depth).map_err(|_| self.too_deep(&format!("${name}")))?;
        self.cache.push((stored.as_str(), jv.clone()));
        Ok(jv)
    }

    /// Hides secret values in an error built while `$secrets` was given.
    pub(crate) fn mask(&self, mut error: ExprError) -> ExprError {
        if let Some(secrets) = self.vars.get("secrets") {
            error.message = mask_text(&error.message, secrets);
        }
        error
    }
}

/// Whether `source` mentions `$name` as a whole word.
fn mentions(source: &str, name: &str) -> bool {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    source.match_indices('$').any(|(i, _)| {
        let rest = &source[i + 1..];
        rest.strip_prefix(name).is_some_and(|after| !after.starts_with(ident))
    })
}

// ---- compiling ----

fn check_length(source: &str, limits: &Limits) -> Result<(), ExprError> {
    let chars = source.chars().count();
    if chars > limits.max_source_chars {
        return Err(ExprError::new(
            ExprErrorKind::Limit,
            format!("the expression is {chars} characters long; the limit is {}", limits.max_source_chars),
        ));
    }
    Ok(())
}

/// Runs `f` on a thread with a large stack: jaq's lexer, parser and compiler recurse once per
/// nesting level of the source.
fn on_compile_thread<T: Send>(f: impl FnOnce() -> Result<T, ExprError> + Send) -> Result<T, ExprError> {
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name("baton-jq-compile".into())
            .stack_size(COMPILE_STACK_BYTES)
            .spawn_scoped(scope, f)
            .map_err(|e| {
                ExprError::new(ExprErrorKind::Limit, format!("could not start the jq compiler thread: {e}"))
            })?;
        thread.join().unwrap_or_else(|_| Err(ExprError::new(ExprErrorKind::Syntax, "the jq compiler failed")))
    })
}

/// The character offset of `part` (a slice of `source`) inside `source`.
fn offset_of(source: &str, part: &str) -> Option<usize> {
    let start = (part.as_ptr() as usize).checked_sub(source.as_ptr() as usize)?;
    (start <= source.len() && source.is_char_boundary(start)).then(|| source[..start].chars().count())
}

/// A short quote of what starts at `rest`.
fn near(rest: &str) -> String {
    let quote: String = rest.chars().take(12).collect();
    if quote.is_empty() { "the end of the expression".to_owned() } else { format!("`{quote}`") }
}

fn lex(source: &str) -> Result<Vec<Token<&str>>, ExprError> {
    Lexer::new(source).lex().map_err(|errors| {
        let (expect, rest) = &errors[0];
        ExprError::new(ExprErrorKind::Syntax, format!("syntax error: expected {} near {}", expect.as_str(), near(rest)))
            .at(offset_of(source, rest))
    })
}

/// What the tokens of an expression mention.
struct Scanned<'s> {
    /// Identifiers and `@formats`, to select the library definitions the expression can reach.
    words: HashSet<&'s str>,
    /// `$variables`, with their `$`.
    vars: Vec<&'s str>,
}

fn scan<'s>(source: &'s str, tokens: &[Token<&'s str>]) -> Result<Scanned<'s>, ExprError> {
    // module directives come first, each ended by `;`
    let mut statement_start = true;
    for Token(text, tok) in tokens {
        if statement_start && matches!(tok, Tok::Word) && matches!(*text, "import" | "include") {
            let why = library::refusal(text).unwrap_or_default();
            return Err(ExprError::new(
                ExprErrorKind::Refused,
                format!("`{text}` is not allowed in Baton expressions: {why}"),
            )
            .at(offset_of(source, text)));
        }
        statement_start = matches!(tok, Tok::Sym) && *text == ";";
    }
    fn walk<'s>(tokens: &[Token<&'s str>], out: &mut Scanned<'s>) {
        for Token(text, tok) in tokens {
            match tok {
                Tok::Word | Tok::Fmt => {
                    out.words.insert(text);
                }
                Tok::Var => {
                    if !out.vars.contains(text) {
                        out.vars.push(text);
                    }
                }
                Tok::Str(parts) => {
                    for part in parts {
                        if let StrPart::Term(t) = part {
                            walk(std::slice::from_ref(t), out);
                        }
                    }
                }
                Tok::Block(inner) => walk(inner, out),
                Tok::Num | Tok::Sym => {}
            }
        }
    }
    let mut out = Scanned { words: HashSet::new(), vars: Vec::new() };
    walk(tokens, &mut out);
    Ok(out)
}

fn compile_tokens(source: &str, names: &[&str], scanned: &Scanned<'_>) -> Result<jaq_core::Filter<Data>, ExprError> {
    let arena = Arena::default();
    let loader = Loader::new(library::PRELUDE.select(&scanned.words));
    let modules = loader.load(&arena, File { code: source, path: () }).map_err(|errors| {
        let Some((_, error)) = errors.into_iter().next() else {
            return ExprError::new(ExprErrorKind::Syntax, "syntax error");
        };
        load_error(source, error)
    })?;
    let globals: Vec<&str> = names.iter().map(|n| &**arena.alloc(format!("${n}"))).collect();
    Compiler::default()
        .with_funs(library::natives())
        .with_global_vars(globals.iter().copied())
        .compile(modules)
        .map_err(|errors| {
            let first = errors.into_iter().flat_map(|(_, undefined)| undefined).next();
            match first {
                Some((name, undefined)) => undefined_error(source, name, &undefined),
                None => ExprError::new(ExprErrorKind::Syntax, "the expression does not compile"),
            }
        })
}

/// An undefined-variable error that also lists the variables the expression may read.
fn with_known(mut error: ExprError, known: &[&str]) -> ExprError {
    if error.kind == ExprErrorKind::Syntax && error.message.starts_with("undefined variable") {
        let known: Vec<String> = known.iter().map(|n| format!("${n}")).collect();
        let list = if known.is_empty() { "none".to_owned() } else { known.join(", ") };
        error.message = format!("{}; the variables here are: {list}", error.message);
    }
    error
}

fn load_error(source: &str, error: jaq_core::load::Error<&str>) -> ExprError {
    use jaq_core::load::Error;
    match error {
        Error::Io(paths) => {
            let path = paths.first().map_or("", |(p, _)| *p);
            ExprError::new(
                ExprErrorKind::Refused,
                "`import` and `include` are not allowed in Baton expressions: an expression cannot load modules or files",
            )
            .at(offset_of(source, path))
        }
        Error::Lex(errors) => {
            let Some((expect, rest)) = errors.first() else {
                return ExprError::new(ExprErrorKind::Syntax, "syntax error");
            };
            ExprError::new(
                ExprErrorKind::Syntax,
                format!("syntax error: expected {} near {}", expect.as_str(), near(rest)),
            )
            .at(offset_of(source, rest))
        }
        Error::Parse(errors) => {
            let Some((expect, found)) = errors.into_iter().next() else {
                return ExprError::new(ExprErrorKind::Syntax, "syntax error");
            };
            let quote = if found.is_empty() { "the end of the expression".to_owned() } else { format!("`{found}`") };
            ExprError::new(ExprErrorKind::Syntax, format!("syntax error: expected {}, found {quote}", expect.as_str()))
                .at(offset_of(source, found))
        }
    }
}

fn undefined_error(source: &str, name: &str, undefined: &Undefined) -> ExprError {
    let offset = offset_of(source, name);
    let refusable = matches!(undefined, Undefined::Filter(_) | Undefined::Var);
    if refusable && let Some(why) = library::refusal(name) {
        return ExprError::new(ExprErrorKind::Refused, format!("`{name}` is not allowed in Baton expressions: {why}"))
            .at(offset);
    }
    let message = match undefined {
        Undefined::Filter(arity) => format!("undefined filter `{name}/{arity}`"),
        Undefined::Var => format!("undefined variable `{name}`"),
        other => format!("undefined {} `{name}`", other.as_str()),
    };
    ExprError::new(ExprErrorKind::Syntax, message).at(offset)
}

#[cfg(test)]
mod tests;
