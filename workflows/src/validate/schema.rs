//! The workflow schemas, Baton's extensions to them, and checking a definition against one.
//!
//! `schema/workflow-1.0.3.json` is the official schema; `schema/baton-workflow.json` is
//! generated from it and `schema/baton-extensions.yaml` by [`generate`] (a test keeps the
//! committed files equal to what the generator gives).
//!
//! The official schema makes a task a `oneOf` of twelve kinds, so a mistake in one task gives
//! "not valid under any of the given schemas" for the whole task. Here the document is checked
//! with every task made opaque (`$defs/task` becomes `{type: object}`), and each task on its
//! own against the subschema of its kind, picked by its discriminating key (`call`, `do`...;
//! for `call`, by the protocol or function name). Each error then names the property at fault.
//! Inside a task, the remaining `oneOf`s (durations, endpoints, authentication...) are narrowed
//! to the one alternative of the value's type before reporting.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::LazyLock;

use jsonschema::error::ValidationErrorKind;
use jsonschema::{Registry, ValidationError, Validator};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::Context;
use super::tasks::{Kind, Tasks};
use super::values::duration_problem;
use crate::diagnostic::{Diagnostic, codes};
use crate::parse::escape;

/// The official Serverless Workflow 1.0.3 schema, as JSON.
pub const OFFICIAL_SCHEMA: &str = include_str!("../../schema/workflow-1.0.3.json");
/// Baton's published schema: the official one with [`EXTENSIONS`] applied.
pub const BATON_SCHEMA: &str = include_str!("../../schema/baton-workflow.json");
/// Baton's refinements and extensions of the official schema (YAML).
pub const EXTENSIONS: &str = include_str!("../../schema/baton-extensions.yaml");

/// The task kinds, by their discriminating key.
pub const TASK_KINDS: &[&str] =
    &["call", "do", "emit", "for", "fork", "listen", "raise", "run", "set", "switch", "try", "wait"];

/// Which schema a definition is checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    /// Baton's schema: the official one, refined and extended.
    Baton,
    /// The official schema alone (`--strict-spec`).
    Official,
}

/// `baton-extensions.yaml`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtensionSet {
    #[serde(rename = "$id")]
    pub id: String,
    pub title: String,
    pub description: String,
    pub refinements: Vec<Refinement>,
    pub extensions: Vec<Extension>,
}

/// A correction or narrowing of the official schema.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Refinement {
    /// A JSON pointer into the schema.
    pub at: String,
    pub why: String,
    /// Keywords set on the schema object at `at`.
    pub set: Map<String, Value>,
}

/// One thing Baton adds to the language.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Extension {
    /// The property or function name.
    pub name: String,
    pub site: Site,
    pub summary: String,
    /// The schema of the property (for `function`: of its `with`).
    pub schema: Value,
}

/// Where an extension sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Site {
    /// A top-level property of the workflow.
    Root,
    /// A kind of reusable component under `use`.
    Use,
    /// A property that every task accepts.
    Task,
    /// A built-in function called with `call: <name>`.
    Function,
}

impl Site {
    /// How a diagnostic names the site.
    pub fn describe(self, name: &str) -> String {
        match self {
            Self::Root => format!("the top-level property `{name}`"),
            Self::Use => format!("the reusable component kind `use.{name}`"),
            Self::Task => format!("the task property `{name}`"),
            Self::Function => format!("the built-in function `call: {name}`"),
        }
    }
}

static EXTENSION_SET: LazyLock<Result<ExtensionSet, String>> = LazyLock::new(|| {
    let parsed = crate::parse::parse("baton-extensions.yaml", EXTENSIONS.as_bytes(), &Default::default())
        .map_err(|problems| format!("{problems:?}"))?;
    serde_json::from_value(parsed.value).map_err(|err| err.to_string())
});

/// Baton's refinements and extensions, read from [`EXTENSIONS`].
///
/// # Errors
/// When the embedded file is malformed (a test guards against it).
pub fn extension_set() -> Result<&'static ExtensionSet, String> {
    EXTENSION_SET.as_ref().map_err(Clone::clone)
}

/// Baton's schema: `official` with the refinements and extensions of `set` applied.
///
/// # Errors
/// When an entry does not fit the official schema (a pointer through a non-object, a property
/// that already exists, no custom-function branch to take a function name from).
pub fn generate(official: &Value, set: &ExtensionSet) -> Result<Value, String> {
    let mut schema = official.clone();
    let root = schema.as_object_mut().ok_or("the official schema is not an object")?;
    root.insert("$id".into(), Value::String(set.id.clone()));
    root.insert("title".into(), Value::String(set.title.clone()));
    root.insert("description".into(), Value::String(set.description.clone()));
    for refinement in &set.refinements {
        let target = object_at(&mut schema, &refinement.at)?;
        for (keyword, value) in &refinement.set {
            target.insert(keyword.clone(), value.clone());
        }
    }
    for extension in &set.extensions {
        let properties = match extension.site {
            Site::Root => "/properties",
            Site::Use => "/properties/use/properties",
            Site::Task => "/$defs/taskBase/properties",
            Site::Function => {
                add_function(&mut schema, extension)?;
                continue;
            }
        };
        let target = object_at(&mut schema, properties)?;
        if target.contains_key(&extension.name) {
            return Err(format!("`{}` already exists at {properties}", extension.name));
        }
        let mut property = extension.schema.clone();
        if let Some(object) = property.as_object_mut() {
            object.entry("description").or_insert_with(|| Value::String(extension.summary.clone()));
        }
        target.insert(extension.name.clone(), property);
    }
    Ok(schema)
}

fn add_function(schema: &mut Value, extension: &Extension) -> Result<(), String> {
    let branches = schema
        .pointer_mut("/$defs/callTask/oneOf")
        .and_then(Value::as_array_mut)
        .ok_or("no /$defs/callTask/oneOf in the official schema")?;
    let function = branches
        .iter_mut()
        .find(|branch| branch["title"] == "CallFunction")
        .and_then(|branch| branch.pointer_mut("/allOf/1/properties/call/not/enum"))
        .and_then(Value::as_array_mut)
        .ok_or("no CallFunction branch to take the name from")?;
    function.push(Value::String(extension.name.clone()));
    branches.push(json!({
        "title": format!("Call {}", extension.name),
        "description": extension.summary,
        "type": "object",
        "unevaluatedProperties": false,
        "required": ["call"],
        "allOf": [
            { "$ref": "#/$defs/taskBase" },
            { "properties": { "call": { "type": "string", "const": extension.name }, "with": extension.schema } }
        ]
    }));
    Ok(())
}

/// The object at `pointer`, creating missing objects on the way.
fn object_at<'v>(schema: &'v mut Value, pointer: &str) -> Result<&'v mut Map<String, Value>, String> {
    let mut node = schema;
    if !pointer.is_empty() {
        for segment in pointer.strip_prefix('/').ok_or_else(|| format!("`{pointer}` is not a JSON pointer"))?.split('/')
        {
            let segment = crate::parse::unescape(segment);
            node = match node {
                Value::Object(map) => map.entry(segment).or_insert_with(|| Value::Object(Map::new())),
                Value::Array(items) => segment
                    .parse::<usize>()
                    .ok()
                    .and_then(|index| items.get_mut(index))
                    .ok_or_else(|| format!("`{pointer}` runs past an array"))?,
                _ => return Err(format!("`{pointer}` runs through a value that is not an object")),
            };
        }
    }
    node.as_object_mut().ok_or_else(|| format!("`{pointer}` is not an object"))
}

/// Validators compiled once per flavour.
struct Compiled {
    /// The schema the validators were built from (tasks opaque), to look keywords up in.
    schema: Value,
    root: Validator,
    kinds: HashMap<&'static str, Validator>,
    /// `call` branches by the name they take (`http`...), then the custom-function branch.
    calls: Vec<(String, Validator)>,
    function: Validator,
}

static BATON: LazyLock<Result<Compiled, String>> = LazyLock::new(|| compile(BATON_SCHEMA, Flavour::Baton));
static OFFICIAL: LazyLock<Result<Compiled, String>> = LazyLock::new(|| compile(OFFICIAL_SCHEMA, Flavour::Official));

/// The name of the format that checks ISO 8601 durations against what Baton can wait for.
const DURATION_FORMAT: &str = "baton-duration";

fn compile(text: &str, flavour: Flavour) -> Result<Compiled, String> {
    let mut schema: Value = serde_json::from_str(text).map_err(|err| err.to_string())?;
    let id = schema["$id"].as_str().ok_or("the schema has no $id")?.to_owned();
    *object_at(&mut schema, "/$defs/task")? = Map::from_iter([("type".to_owned(), json!("object"))]);
    if flavour == Flavour::Baton {
        object_at(&mut schema, "/$defs/duration/oneOf/2")?.insert("format".into(), json!(DURATION_FORMAT));
    }
    let registry = Registry::new()
        .add(id.as_str(), schema.clone())
        .and_then(|registry| registry.prepare())
        .map_err(|err| err.to_string())?;
    let build = |fragment: &str| {
        jsonschema::options()
            .with_registry(&registry)
            .should_validate_formats(true)
            .with_format(DURATION_FORMAT, |text: &str| duration_problem(text).is_none())
            .build(&json!({ "$ref": format!("{id}#{fragment}") }))
            .map_err(|err| format!("{fragment}: {err}"))
    };
    let mut kinds = HashMap::new();
    for kind in TASK_KINDS.iter().filter(|kind| **kind != "call") {
        kinds.insert(*kind, build(&format!("/$defs/{kind}Task"))?);
    }
    let mut calls = Vec::new();
    let mut function = None;
    let branches = schema.pointer("/$defs/callTask/oneOf").and_then(Value::as_array).ok_or("no callTask")?;
    for (index, branch) in branches.iter().enumerate() {
        let validator = build(&format!("/$defs/callTask/oneOf/{index}"))?;
        match branch.pointer("/allOf/1/properties/call/const").and_then(Value::as_str) {
            Some(name) => calls.push((name.to_owned(), validator)),
            None => function = Some(validator),
        }
    }
    let function = function.ok_or("no custom-function branch in callTask")?;
    Ok(Compiled { root: build("")?, kinds, calls, function, schema })
}

/// Checks `document` and each of its `tasks` against the schema of `flavour`.
pub(super) fn check(cx: &mut Context<'_>, flavour: Flavour, document: &Value, tasks: &Tasks<'_>) {
    let compiled = match flavour {
        Flavour::Baton => &*BATON,
        Flavour::Official => &*OFFICIAL,
    };
    let compiled = match compiled {
        Ok(compiled) => compiled,
        Err(err) => {
            let span = cx.span("");
            cx.push(Diagnostic::error(
                codes::SCHEMA,
                cx.file,
                span,
                "",
                format!("the workflow schema does not compile: {err}"),
            ));
            return;
        }
    };
    let mut reporter = Reporter { cx, schema: &compiled.schema, durations: HashSet::new() };
    for error in compiled.root.iter_errors(document) {
        reporter.report("", &error);
    }
    for task in &tasks.all {
        if !task.value.is_object() {
            continue; // the document's check reports it
        }
        let validator = match task.kind() {
            Kind::None => {
                reporter.no_kind(task.name, &task.pointer, task.value);
                continue;
            }
            Kind::Many(kinds) => {
                let span = reporter.cx.label(&task.pointer);
                let message =
                    format!("`{}` has several task kinds ({}); a task does one thing", task.name, kinds.join(", "));
                let diagnostic = Diagnostic::error(codes::TASK_KIND, reporter.cx.file, span, &task.pointer, message)
                    .with_expected("one of call, do, emit, for, fork, listen, raise, run, set, switch, try, wait; split it into several tasks");
                reporter.cx.push(diagnostic);
                continue;
            }
            Kind::One("call") => {
                let name = task.value.get("call").and_then(Value::as_str).unwrap_or_default();
                compiled.calls.iter().find(|(call, _)| call == name).map_or(&compiled.function, |(_, v)| v)
            }
            Kind::One(kind) => match compiled.kinds.get(kind) {
                Some(validator) => validator,
                None => continue,
            },
        };
        for error in validator.iter_errors(task.value) {
            reporter.report(&task.pointer, &error);
        }
    }
}

struct Reporter<'r, 'a> {
    cx: &'r mut Context<'a>,
    schema: &'r Value,
    /// Durations already reported (several alternatives may fail on one).
    durations: HashSet<String>,
}

impl Reporter<'_, '_> {
    fn report(&mut self, base: &str, error: &ValidationError<'_>) {
        let pointer = format!("{base}{}", error.instance_path().as_str());
        let location = keyword_location(error);
        if location.starts_with("/$defs/duration/") {
            self.duration(base, &pointer, error);
            return;
        }
        let node = parent(&location).and_then(|parent| self.schema.pointer(parent)).unwrap_or(&Value::Null);
        let instance = error.instance();
        match error.kind() {
            ValidationErrorKind::OneOfNotValid { context } | ValidationErrorKind::AnyOf { context } => {
                match best_alternative(error, context) {
                    Some(branch) => {
                        for inner in branch {
                            self.report(base, inner);
                        }
                    }
                    None => {
                        let alternatives = self.schema.pointer(&location).map(|a| self.describe_alternatives(a));
                        let wrong_type = context.iter().all(|branch| {
                            branch.iter().any(|e| {
                                e.instance_path() == error.instance_path()
                                    && matches!(e.kind(), ValidationErrorKind::Type { .. })
                            })
                        });
                        let message = match (&alternatives, wrong_type) {
                            (Some(alternatives), true) => {
                                format!("expected {}, found {}", alternatives.join(" or "), describe_value(instance))
                            }
                            _ => format!("{} matches none of the forms allowed here", excerpt(instance)),
                        };
                        let mut diagnostic = self.error(codes::SCHEMA, &pointer, message);
                        if let Some(alternatives) = alternatives {
                            diagnostic = diagnostic.with_expected(format!("one of: {}", alternatives.join("; ")));
                        }
                        self.cx.push(diagnostic);
                    }
                }
            }
            ValidationErrorKind::Type { .. } => {
                let expected = self.schema.pointer(&location).map_or_else(|| "another type".to_owned(), type_names);
                let message = format!("expected {expected}, found {}", describe_value(instance));
                let diagnostic = self.error(codes::SCHEMA, &pointer, message);
                let diagnostic = match description(node) {
                    Some(text) => diagnostic.with_expected(format!("{expected}: {text}")),
                    None => diagnostic,
                };
                self.cx.push(diagnostic);
            }
            ValidationErrorKind::Required { property } => {
                let name = property.as_str().unwrap_or_default();
                let span = self.cx.label(&pointer);
                let message = format!("missing the required property `{name}`");
                let mut diagnostic = Diagnostic::error(codes::SCHEMA, self.cx.file, span, &pointer, message);
                if let Some(text) = find_property(self.schema, node, name, 0).and_then(description) {
                    diagnostic = diagnostic.with_expected(format!("`{name}`: {text}"));
                }
                self.cx.push(diagnostic);
            }
            ValidationErrorKind::UnevaluatedProperties { unexpected }
            | ValidationErrorKind::AdditionalProperties { unexpected } => {
                self.unknown_properties(node, &pointer, unexpected);
            }
            ValidationErrorKind::Enum { options }
                if options.as_array().is_some_and(|o| o.iter().all(Value::is_string)) && !instance.is_string() =>
            {
                // The value's type is wrong too: the type error says it.
            }
            ValidationErrorKind::Enum { options } => {
                let allowed =
                    options.as_array().map(|o| o.iter().map(short).collect::<Vec<_>>().join(", ")).unwrap_or_default();
                let message = format!("{} is not one of the allowed values", excerpt(instance));
                let diagnostic =
                    self.error(codes::SCHEMA, &pointer, message).with_expected(format!("one of {allowed}"));
                self.cx.push(diagnostic);
            }
            ValidationErrorKind::Constant { expected_value } => {
                let message = format!("expected {}, found {}", short(expected_value), excerpt(instance));
                let diagnostic = self.error(codes::SCHEMA, &pointer, message);
                self.cx.push(diagnostic);
            }
            ValidationErrorKind::Pattern { pattern } => {
                let (message, expected) = if location.starts_with("/$defs/runtimeExpression/") {
                    (
                        format!("expected a runtime expression, found {}", excerpt(instance)),
                        "a string of the form `${ ... }`".to_owned(),
                    )
                } else {
                    let what = title(node).map_or_else(|| "value".to_owned(), words);
                    (format!("{} is not a valid {what}", excerpt(instance)), format!("text matching {pattern}"))
                };
                let diagnostic = self.error(codes::SCHEMA, &pointer, message).with_expected(expected);
                self.cx.push(diagnostic);
            }
            ValidationErrorKind::MinProperties { .. } | ValidationErrorKind::MaxProperties { .. }
                if matches!(title(node), Some("TaskItem" | "SwitchItem" | "ExtensionItem")) =>
            {
                let count = instance.as_object().map_or(0, Map::len);
                let message = format!("each entry of this list is one `name: {{...}}` pair; this one has {count} keys");
                let diagnostic =
                    self.error(codes::SCHEMA, &pointer, message).with_expected("- taskName: { call: ... }");
                self.cx.push(diagnostic);
            }
            ValidationErrorKind::Format { format } => {
                let message = format!("{} is not a valid {format}", excerpt(instance));
                let diagnostic = self.error(codes::SCHEMA, &pointer, message);
                self.cx.push(diagnostic);
            }
            ValidationErrorKind::FalseSchema => {
                let message = "this property is not allowed here".to_owned();
                let span = self.cx.label(&pointer);
                self.cx.push(Diagnostic::error(codes::SCHEMA, self.cx.file, span, &pointer, message));
            }
            _ => {
                let message = error.to_string();
                let diagnostic = self.error(codes::SCHEMA, &pointer, message);
                self.cx.push(diagnostic);
            }
        }
    }

    fn error(&self, code: &'static str, pointer: &str, message: String) -> Diagnostic {
        Diagnostic::error(code, self.cx.file, self.cx.span(pointer), pointer, message)
    }

    /// Reports the properties a schema node does not know (those another branch knows are left
    /// to that branch's own error).
    fn unknown_properties(&mut self, node: &Value, pointer: &str, unexpected: &[String]) {
        let mut known = BTreeSet::new();
        known_properties(self.schema, node, &mut known, 0);
        for name in unexpected.iter().filter(|name| !known.contains(name.as_str())) {
            self.unknown_property(pointer, name, &known);
        }
    }

    fn unknown_property(&mut self, pointer: &str, name: &str, known: &BTreeSet<&str>) {
        let at = format!("{pointer}/{}", escape(name));
        let span = self.cx.label(&at);
        let mut message = format!("unknown property `{name}`");
        if let Some(close) = closest(name, known.iter().copied()) {
            message.push_str(&format!("; did you mean `{close}`?"));
        }
        let mut diagnostic = Diagnostic::error(codes::SCHEMA, self.cx.file, span, &at, message);
        if !known.is_empty() {
            let list: Vec<&str> = known.iter().copied().collect();
            diagnostic = diagnostic.with_expected(format!("one of {}", list.join(", ")));
        }
        self.cx.push(diagnostic);
    }

    fn no_kind(&mut self, name: &str, pointer: &str, task: &Value) {
        let span = self.cx.label(pointer);
        let mut message = format!("`{name}` is not a task: it has none of the task kinds");
        let keys = task.as_object().map(|o| o.keys().map(String::as_str).collect::<Vec<_>>()).unwrap_or_default();
        if let Some((key, kind)) =
            keys.iter().find_map(|key| closest(key, TASK_KINDS.iter().copied()).map(|kind| (key, kind)))
        {
            message.push_str(&format!("; did you mean `{kind}` instead of `{key}`?"));
        }
        let diagnostic = Diagnostic::error(codes::TASK_KIND, self.cx.file, span, pointer, message)
            .with_expected("one of call, do, emit, for, fork, listen, raise, run, set, switch, try, wait");
        self.cx.push(diagnostic);
    }

    /// A value that should be a duration is not one.
    fn duration(&mut self, base: &str, pointer: &str, error: &ValidationError<'_>) {
        let instance = error.instance();
        if instance.is_object() {
            // The inline form: report the object's own problems (unknown unit, not an integer).
            let inline = match error.kind() {
                ValidationErrorKind::OneOfNotValid { context } => context.first().map(Vec::as_slice),
                _ => None,
            };
            match inline {
                Some(errors) => errors.iter().for_each(|inner| self.report_plain(base, inner)),
                None => self.report_plain(base, error),
            }
            return;
        }
        if !self.durations.insert(pointer.to_owned()) {
            return;
        }
        let message = match instance.as_str() {
            Some(text) => match duration_problem(text) {
                Some(problem) => format!("`{text}` is not a duration Baton can use: {problem}"),
                None => format!("`{text}` is not a duration"),
            },
            None => format!("expected a duration, found {}", describe_value(instance)),
        };
        let diagnostic = self.error(codes::DURATION, pointer, message).with_expected(
            "an ISO 8601 duration (PT30S, PT1H30M, P2D), an object { days, hours, minutes, seconds, milliseconds }, or an expression ${ ... }",
        );
        self.cx.push(diagnostic);
    }

    /// Reports an error inside an inline duration object as a plain schema error.
    fn report_plain(&mut self, base: &str, error: &ValidationError<'_>) {
        let pointer = format!("{base}{}", error.instance_path().as_str());
        let location = keyword_location(error);
        let node = parent(&location).and_then(|parent| self.schema.pointer(parent)).unwrap_or(&Value::Null);
        match error.kind() {
            ValidationErrorKind::UnevaluatedProperties { unexpected }
            | ValidationErrorKind::AdditionalProperties { unexpected } => {
                self.unknown_properties(node, &pointer, unexpected);
            }
            ValidationErrorKind::Type { .. } => {
                let expected = self.schema.pointer(&location).map_or_else(|| "another type".to_owned(), type_names);
                let message = format!("expected {expected}, found {}", describe_value(error.instance()));
                let diagnostic = self.error(codes::DURATION, &pointer, message);
                self.cx.push(diagnostic);
            }
            _ => {
                let diagnostic = self.error(codes::DURATION, &pointer, error.to_string());
                self.cx.push(diagnostic);
            }
        }
    }

    fn describe_alternatives(&self, alternatives: &Value) -> Vec<String> {
        alternatives
            .as_array()
            .map(|branches| {
                branches
                    .iter()
                    .map(|branch| {
                        let target = resolve(self.schema, branch);
                        let name = title(branch).or_else(|| title(target)).map(words);
                        let kind = branch.get("type").or_else(|| target.get("type")).map(type_names);
                        match (name, kind) {
                            (Some(name), Some(kind)) => format!("{name} ({kind})"),
                            (Some(name), None) => name,
                            (None, Some(kind)) => kind,
                            (None, None) => "another form".to_owned(),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The alternative of a failed `oneOf`/`anyOf` that the value was most likely meant to match:
/// the only one of the value's type, else the only one whose required properties and constants
/// it has, else the one whose errors go deepest into the value.
fn best_alternative<'e>(
    error: &ValidationError<'_>,
    context: &'e [Vec<ValidationError<'static>>],
) -> Option<&'e [ValidationError<'static>]> {
    let here = error.instance_path();
    let at_here = |branch: &Vec<ValidationError<'static>>, shallow: fn(&ValidationErrorKind) -> bool| {
        branch.iter().any(|e| e.instance_path() == here && shallow(e.kind()))
    };
    let typed: Vec<&Vec<ValidationError<'static>>> = context
        .iter()
        .filter(|b| !b.is_empty() && !at_here(b, |k| matches!(k, ValidationErrorKind::Type { .. })))
        .collect();
    if typed.len() == 1 {
        return typed.first().map(|b| b.as_slice());
    }
    let shaped: Vec<&Vec<ValidationError<'static>>> = typed
        .iter()
        .copied()
        .filter(|b| {
            !at_here(b, |k| {
                matches!(
                    k,
                    ValidationErrorKind::Required { .. }
                        | ValidationErrorKind::Constant { .. }
                        | ValidationErrorKind::Enum { .. }
                        | ValidationErrorKind::FalseSchema
                        | ValidationErrorKind::Not { .. }
                )
            })
        })
        .collect();
    if shaped.len() == 1 {
        return shaped.first().map(|b| b.as_slice());
    }
    let pool = if shaped.is_empty() { typed } else { shaped };
    let depth = |b: &Vec<ValidationError<'static>>| {
        b.iter().map(|e| e.instance_path().as_str().matches('/').count()).max().unwrap_or(0)
    };
    let own = here.as_str().matches('/').count();
    let deepest = pool.iter().map(|b| depth(b)).max()?;
    let mut best = pool.iter().filter(|b| depth(b) == deepest);
    match (best.next(), best.next()) {
        (Some(branch), None) if deepest > own => Some(branch.as_slice()),
        _ => None,
    }
}

/// The keyword's location as a JSON pointer into the schema document.
fn keyword_location(error: &ValidationError<'_>) -> String {
    let Some(uri) = error.absolute_keyword_location() else { return error.schema_path().as_str().to_owned() };
    let fragment = uri.as_str().split_once('#').map_or("", |(_, fragment)| fragment);
    percent_decode(fragment)
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let decoded = (bytes[index] == b'%')
            .then(|| text.get(index + 1..index + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match decoded {
            Some(byte) => {
                out.push(byte);
                index += 3;
            }
            None => {
                out.push(bytes[index]);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parent(location: &str) -> Option<&str> {
    location.rfind('/').map(|slash| &location[..slash])
}

/// Follows a local `$ref` (`#/$defs/x`), once.
fn resolve<'s>(schema: &'s Value, node: &'s Value) -> &'s Value {
    node.get("$ref")
        .and_then(Value::as_str)
        .and_then(|reference| reference.strip_prefix('#'))
        .and_then(|pointer| schema.pointer(pointer))
        .unwrap_or(node)
}

/// The names of the properties a schema object defines, through `allOf`/`oneOf`/`anyOf`,
/// `$ref` and `if/then/else`.
fn known_properties<'s>(schema: &'s Value, node: &'s Value, out: &mut BTreeSet<&'s str>, depth: usize) {
    if depth > 16 {
        return;
    }
    let node = resolve(schema, node);
    if let Some(properties) = node.get("properties").and_then(Value::as_object) {
        out.extend(properties.keys().map(String::as_str));
    }
    for keyword in ["allOf", "oneOf", "anyOf"] {
        for branch in node.get(keyword).and_then(Value::as_array).into_iter().flatten() {
            known_properties(schema, branch, out, depth + 1);
        }
    }
    for keyword in ["then", "else"] {
        if let Some(branch) = node.get(keyword) {
            known_properties(schema, branch, out, depth + 1);
        }
    }
}

/// The schema of one property of a schema object (see [`known_properties`]).
fn find_property<'s>(schema: &'s Value, node: &'s Value, name: &str, depth: usize) -> Option<&'s Value> {
    if depth > 16 {
        return None;
    }
    let node = resolve(schema, node);
    if let Some(property) = node.get("properties").and_then(|p| p.get(name)) {
        return Some(property);
    }
    ["allOf", "oneOf", "anyOf"]
        .iter()
        .flat_map(|keyword| node.get(*keyword).and_then(Value::as_array).into_iter().flatten())
        .find_map(|branch| find_property(schema, branch, name, depth + 1))
}

fn title(node: &Value) -> Option<&str> {
    node.get("title").and_then(Value::as_str)
}

fn description(node: &Value) -> Option<&str> {
    node.get("description").and_then(Value::as_str).map(str::trim)
}

/// `EndpointConfiguration` → `endpoint configuration`.
fn words(title: &str) -> String {
    let mut out = String::new();
    let mut previous_lower = false;
    for c in title.chars() {
        if c.is_uppercase() && previous_lower {
            out.push(' ');
        }
        previous_lower = c.is_lowercase() || c.is_ascii_digit();
        out.extend(c.to_lowercase());
    }
    out
}

/// `"string"` → `a string`; `["string", "null"]` → `a string or null`.
fn type_names(types: &Value) -> String {
    let one = |name: &str| match name {
        "object" => "an object (mapping)".to_owned(),
        "array" => "a list".to_owned(),
        "integer" => "an integer".to_owned(),
        "null" => "null".to_owned(),
        other => format!("a {other}"),
    };
    match types {
        Value::String(name) => one(name),
        Value::Array(names) => names.iter().filter_map(Value::as_str).map(one).collect::<Vec<_>>().join(" or "),
        _ => "another type".to_owned(),
    }
}

fn describe_value(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {}", short(&Value::String(s.clone()))),
        Value::Array(_) => "a list".to_owned(),
        Value::Object(_) => "an object (mapping)".to_owned(),
    }
}

/// A value as it reads in a message: `` `text` `` for strings and scalars, a kind for the rest.
fn excerpt(value: &Value) -> String {
    match value {
        Value::Array(_) => "this list".to_owned(),
        Value::Object(_) => "this object".to_owned(),
        Value::String(text) => format!("`{}`", clip(text)),
        other => format!("`{other}`"),
    }
}

fn short(value: &Value) -> String {
    match value {
        Value::String(text) => format!("`{}`", clip(text)),
        other => clip(&other.to_string()),
    }
}

fn clip(text: &str) -> String {
    const MAX: usize = 60;
    if text.chars().count() <= MAX {
        text.to_owned()
    } else {
        format!("{}…", text.chars().take(MAX).collect::<String>())
    }
}

/// The candidate closest to `word` by edit distance, if close enough to be a likely typo.
pub(super) fn closest<'c>(word: &str, candidates: impl Iterator<Item = &'c str>) -> Option<&'c str> {
    let limit = if word.chars().count() <= 4 { 1 } else { 2 };
    candidates
        .map(|candidate| (edit_distance(word, candidate), candidate))
        .filter(|(distance, candidate)| *distance <= limit && *candidate != word)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(previous + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_read_as_words() {
        assert_eq!(words("EndpointConfiguration"), "endpoint configuration");
        assert_eq!(words("OAuth2Token"), "oauth2 token");
    }

    #[test]
    fn typos_find_their_word() {
        assert_eq!(closest("endpont", ["endpoint", "method"].into_iter()), Some("endpoint"));
        assert_eq!(closest("cal", TASK_KINDS.iter().copied()), Some("call"));
        assert_eq!(closest("zzzzzz", TASK_KINDS.iter().copied()), None);
    }

    #[test]
    fn pointers_are_percent_decoded() {
        assert_eq!(percent_decode("/$defs/a%20b"), "/$defs/a b");
        assert_eq!(percent_decode("100%"), "100%");
    }
}
