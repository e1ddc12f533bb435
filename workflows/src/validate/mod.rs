//! Checking a definition before it runs, and saying precisely what is wrong.
//!
//! [`check`] parses and validates in one call; [`validate`] takes an already [`Parsed`]
//! document. Every problem is reported at once, sorted by position, each with a stable code
//! (see [`crate::diagnostic::CODES`]):
//!
//! 1. the schema: Baton's (the official 1.0.3 schema refined and extended, see
//!    [`schema`]), or with `strict_spec` the official one alone, each extension used being
//!    named; each task is checked against the schema of its own kind;
//! 2. the flow: unique task names per list, `then:` targets, unreachable tasks, switch
//!    default cases;
//! 3. values: the DSL version, durations Baton can wait for, cron expressions, jq expressions
//!    (with the position of the error inside the expression), data schemas, references to
//!    `use` entries, and the functions `call:` names (against an [`ActivityManifest`] if given).
//!
//! What the runtime refuses by policy rather than by meaning (shell, script and container
//! `run` tasks, protocols this build does not call) is valid here.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::Value;

use crate::diagnostic::{Diagnostic, codes};
use crate::parse::{ParseLimits, Parsed, Span, escape, parse};

mod flow;
pub mod schema;
mod tasks;
mod values;

pub use schema::{Extension, ExtensionSet, Flavour, Site};
pub use values::{DSL_VERSIONS, duration_problem};

/// The function names the DSL defines as protocols.
pub const PROTOCOLS: &[&str] = &["http", "grpc", "openapi", "asyncapi", "a2a", "mcp"];

/// Functions Baton provides under a name of its own (`call: humanTask`). Each one also has a
/// `function` entry in `schema/baton-extensions.yaml` giving the schema of its `with`.
pub const BUILTIN_FUNCTIONS: &[&str] = &["humanTask", "notify", "reassignTask"];

/// Activities `baton server` and `baton dev` always register (`baton.amqp.publish` once
/// `[amqp]` is configured): a call to one of them is known without a manifest.
pub const SERVER_ACTIVITIES: &[&str] =
    &["baton.notify", "baton.directory.managerOf", "baton.directory.people", "baton.amqp.publish"];

/// How strictly to check.
#[derive(Clone, Debug, Default)]
pub struct ValidateOptions {
    /// Every `call:` must name something known: an unknown function is an error, not a warning.
    pub strict: bool,
    /// Check against the official Serverless Workflow schema alone, and report each Baton
    /// extension used as an error: for definitions meant to run on other runtimes too.
    pub strict_spec: bool,
    /// The activities the definition may call by name. Given, an unknown function is an error,
    /// and each call's `with` is checked against its activity's input schema.
    pub activities: Option<ActivityManifest>,
    /// Bounds on the file [`check`] reads.
    pub limits: ParseLimits,
    /// The names of the business calendars the engine shares: an `sla` may name them without
    /// declaring them in `use.calendars`.
    pub shared_calendars: Vec<String>,
}

/// Parses `bytes` (YAML or JSON, named `file` in diagnostics) and validates the definition.
/// The parsed document comes back when the text could be read, whatever its problems.
pub fn check(file: &str, bytes: &[u8], options: &ValidateOptions) -> (Option<Parsed>, Vec<Diagnostic>) {
    match parse(file, bytes, &options.limits) {
        Ok(parsed) => {
            let diagnostics = validate(&parsed, file, options);
            (Some(parsed), diagnostics)
        }
        Err(diagnostics) => (None, diagnostics),
    }
}

/// Every problem of a parsed definition, sorted by position.
pub fn validate(parsed: &Parsed, file: &str, options: &ValidateOptions) -> Vec<Diagnostic> {
    let mut cx = Context { file, parsed, options, out: Vec::new() };
    let document = &parsed.value;
    if !document.is_object() {
        let message = match document {
            Value::Null => "the document is empty".to_owned(),
            _ => {
                "a workflow definition is a mapping with `document:` and `do:`, not a single value or a list".to_owned()
            }
        };
        let span = cx.span("");
        cx.push(
            Diagnostic::error(codes::SCHEMA, file, span, "", message)
                .with_expected("document: { dsl: '1.0.3', namespace: ..., name: ..., version: ... } and do: [ ... ]"),
        );
        return cx.out;
    }
    let tasks = tasks::collect(document);
    if options.strict_spec {
        let portable = extensions_used(&mut cx, document, &tasks);
        let portable_tasks = tasks::collect(&portable);
        schema::check(&mut cx, Flavour::Official, &portable, &portable_tasks);
    } else {
        schema::check(&mut cx, Flavour::Baton, document, &tasks);
    }
    let from_schema = cx.out.len();
    values::dsl_version(&mut cx, document);
    flow::check(&mut cx, &tasks);
    values::schedule(&mut cx, document);
    values::expressions(&mut cx, document, &tasks);
    values::data_schemas(&mut cx, document, &tasks);
    values::references(&mut cx, document, &tasks);
    values::calendars(&mut cx, document, &tasks, &options.shared_calendars);
    values::functions(&mut cx, document, &tasks);
    cx.finish(from_schema)
}

/// With `strict_spec`: reports each Baton extension `document` uses, and gives the document
/// without them, for the official schema to judge the rest.
fn extensions_used(cx: &mut Context<'_>, document: &Value, tasks: &tasks::Tasks<'_>) -> Value {
    let mut portable = document.clone();
    let set = match schema::extension_set() {
        Ok(set) => set,
        Err(_) => return portable,
    };
    for extension in &set.extensions {
        let mut found: Vec<(String, String)> = Vec::new(); // (pointer of the holder, pointer to report)
        match extension.site {
            Site::Root => found.push((String::new(), format!("/{}", escape(&extension.name)))),
            Site::Use => found.push(("/use".to_owned(), format!("/use/{}", escape(&extension.name)))),
            Site::Task => {
                for task in &tasks.all {
                    found.push((task.pointer.clone(), format!("{}/{}", task.pointer, escape(&extension.name))));
                }
            }
            Site::Function => {
                for (task, name) in tasks.calls() {
                    if name == extension.name {
                        let pointer = format!("{}/call", task.pointer);
                        let message = format!(
                            "{} is a Baton extension: {}",
                            extension.site.describe(&extension.name),
                            extension.summary
                        );
                        let span = cx.span(&pointer);
                        cx.push(Diagnostic::error(codes::EXTENSION, cx.file, span, &pointer, message));
                    }
                }
                continue;
            }
        }
        for (holder, pointer) in found {
            if document.pointer(&pointer).is_none() {
                continue;
            }
            let message =
                format!("{} is a Baton extension: {}", extension.site.describe(&extension.name), extension.summary);
            let span = cx.label(&pointer);
            cx.push(
                Diagnostic::error(codes::EXTENSION, cx.file, span, &pointer, message)
                    .with_expected("only Serverless Workflow 1.0 constructs (or leave out --strict-spec)"),
            );
            if let Some(fields) = portable.pointer_mut(&holder).and_then(Value::as_object_mut) {
                fields.remove(&extension.name);
            }
        }
    }
    portable
}

/// What the checks share: where to report, and how to find a node's span.
pub(crate) struct Context<'a> {
    file: &'a str,
    parsed: &'a Parsed,
    options: &'a ValidateOptions,
    out: Vec<Diagnostic>,
}

impl Context<'_> {
    /// Where to point for the node at `pointer`: its value, or for a mapping or list its key
    /// (the start of a block collection is on the next line); the closest ancestor when the
    /// node does not exist.
    fn span(&self, pointer: &str) -> Span {
        if let Some(Value::Array(_) | Value::Object(_)) = self.parsed.value.pointer(pointer)
            && let Some(key) = self.parsed.spans.key(pointer)
        {
            return key;
        }
        self.parsed.spans.nearest(pointer)
    }

    /// The key naming the node (a task's name), else as [`Context::span`].
    fn label(&self, pointer: &str) -> Span {
        self.parsed.spans.key(pointer).unwrap_or_else(|| self.span(pointer))
    }

    fn push(&mut self, diagnostic: Diagnostic) {
        self.out.push(diagnostic);
    }

    /// Drops the schema's complaints about values a more specific check judged (the first
    /// `from_schema` diagnostics come from the schema), then sorts by position.
    fn finish(self, from_schema: usize) -> Vec<Diagnostic> {
        const ABOUT_A_VALUE: &[&str] =
            &[codes::DSL_VERSION, codes::CRON, codes::EXPRESSION, codes::DATA_SCHEMA, codes::UNKNOWN_REFERENCE];
        let specific: HashSet<String> = self.out[from_schema..]
            .iter()
            .filter(|d| ABOUT_A_VALUE.contains(&d.code))
            .map(|d| d.pointer.clone())
            .collect();
        let mut seen = HashSet::new();
        let mut out: Vec<Diagnostic> = self
            .out
            .into_iter()
            .enumerate()
            .filter(|(index, d)| *index >= from_schema || d.code != codes::SCHEMA || !specific.contains(&d.pointer))
            .map(|(_, d)| d)
            .filter(|d| seen.insert((d.code, d.line, d.column, d.message.clone())))
            .collect();
        out.sort_by(|a, b| (a.line, a.column, a.severity, a.code).cmp(&(b.line, b.column, b.severity, b.code)));
        out
    }
}

/// The activities a definition may call by name, read from a manifest file:
///
/// ```yaml
/// activities:
///   - name: training.schedule
///     description: Books a training session.   # optional
///     input: { type: object, required: [course] }   # optional JSON Schema of `with`
///     output: { type: object }                      # optional JSON Schema of the result
/// ```
#[derive(Clone, Debug, Default)]
pub struct ActivityManifest {
    pub activities: Vec<Activity>,
}

/// One activity of an [`ActivityManifest`].
#[derive(Clone, Debug)]
pub struct Activity {
    pub name: String,
    pub description: Option<String>,
    pub input: Option<Value>,
    pub output: Option<Value>,
    input_validator: Option<Arc<jsonschema::Validator>>,
}

impl Activity {
    /// An activity; its input schema is compiled here.
    ///
    /// # Errors
    /// The input schema's compile error.
    pub fn new(
        name: impl Into<String>,
        description: Option<String>,
        input: Option<Value>,
        output: Option<Value>,
    ) -> Result<Self, String> {
        let input_validator = match &input {
            Some(schema) => Some(Arc::new(jsonschema::options().build(schema).map_err(|err| err.to_string())?)),
            None => None,
        };
        Ok(Self { name: name.into(), description, input, output, input_validator })
    }

    fn input_validator(&self) -> Option<&jsonschema::Validator> {
        self.input_validator.as_deref()
    }
}

impl ActivityManifest {
    /// The activity named `name`.
    pub fn get(&self, name: &str) -> Option<&Activity> {
        self.activities.iter().find(|activity| activity.name == name)
    }

    /// Reads a manifest (YAML or JSON) named `file` in diagnostics.
    ///
    /// # Errors
    /// Every problem: unreadable text, a wrong shape, an unknown field, a name given twice, an
    /// input or output schema that does not compile.
    pub fn parse(file: &str, bytes: &[u8]) -> Result<Self, Vec<Diagnostic>> {
        let parsed = parse(file, bytes, &ParseLimits::default())?;
        let mut problems = Vec::new();
        let spans = &parsed.spans;
        let mut problem = |pointer: &str, message: String, expected: &str| {
            let span = spans.key(pointer).or_else(|| spans.value(pointer)).unwrap_or_else(|| spans.nearest(pointer));
            problems.push(Diagnostic::error(codes::MANIFEST, file, span, pointer, message).with_expected(expected));
        };
        let shape = "activities: [ { name: ..., description?: ..., input?: <JSON Schema>, output?: <JSON Schema> } ]";
        let Some(items) = parsed.value.get("activities").and_then(Value::as_array) else {
            problem("", "an activity manifest is a mapping with an `activities:` list".to_owned(), shape);
            return Err(problems);
        };
        if let Some(fields) = parsed.value.as_object() {
            for key in fields.keys().filter(|key| *key != "activities") {
                problem(&format!("/{}", escape(key)), format!("unknown field `{key}`"), shape);
            }
        }
        let mut activities = Vec::new();
        let mut names: HashMap<String, usize> = HashMap::new();
        for (index, item) in items.iter().enumerate() {
            let at = format!("/activities/{index}");
            let Some(fields) = item.as_object() else {
                problem(&at, "each activity is a mapping with at least `name`".to_owned(), shape);
                continue;
            };
            for key in fields.keys().filter(|key| !matches!(key.as_str(), "name" | "description" | "input" | "output"))
            {
                problem(
                    &format!("{at}/{}", escape(key)),
                    format!("unknown field `{key}`"),
                    "name, description, input, output",
                );
            }
            let Some(name) = fields.get("name").and_then(Value::as_str).filter(|name| !name.is_empty()) else {
                problem(&at, "the activity has no `name`".to_owned(), "name: the name `call:` uses");
                continue;
            };
            if let Some(first) = names.insert(name.to_owned(), index) {
                problem(
                    &format!("{at}/name"),
                    format!("the activity `{name}` is listed twice (also entry {first})"),
                    "each name once",
                );
            }
            let description = fields.get("description").and_then(Value::as_str).map(str::to_owned);
            for part in ["input", "output"] {
                if let Some(schema) = fields.get(part)
                    && let Err(err) = jsonschema::options().build(schema)
                {
                    let pointer = format!("{at}/{part}{}", err.instance_path().as_str());
                    problem(
                        &pointer,
                        format!("the {part} schema of `{name}` is not a valid JSON Schema: {err}"),
                        "a JSON Schema",
                    );
                }
            }
            match Activity::new(name, description, fields.get("input").cloned(), fields.get("output").cloned()) {
                Ok(activity) => activities.push(activity),
                Err(_) => continue, // reported above
            }
        }
        if problems.is_empty() { Ok(Self { activities }) } else { Err(problems) }
    }
}
