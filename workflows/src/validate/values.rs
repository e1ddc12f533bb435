//! Checks on values the schema cannot judge: the DSL version, durations Baton can wait for,
//! cron expressions, runtime expressions, data schemas, names of reusable components, and the
//! functions `call:` names.

use std::collections::HashSet;

use baton_sla::schedule::ScheduleError;
use croner::parser::{CronParser, Seconds};
use serde_json::Value;

use super::tasks::{Kind, Task, Tasks};
use super::{BUILTIN_FUNCTIONS, Context, PROTOCOLS, SERVER_ACTIVITIES};
use crate::diagnostic::{Diagnostic, codes};
use crate::expr::ExprErrorKind;
use crate::parse::escape;

/// The DSL versions Baton runs.
pub const DSL_VERSIONS: &[&str] = &["1.0.0", "1.0.1", "1.0.2", "1.0.3"];

pub(super) fn dsl_version(cx: &mut Context<'_>, document: &Value) {
    let Some(version) = document.pointer("/document/dsl").and_then(Value::as_str) else { return };
    if DSL_VERSIONS.contains(&version) {
        return;
    }
    let span = cx.span("/document/dsl");
    let message = format!("this definition is written for DSL {version}; Baton runs DSL 1.0.0 to 1.0.3");
    cx.push(
        Diagnostic::error(codes::DSL_VERSION, cx.file, span, "/document/dsl", message)
            .with_expected("`dsl: '1.0.3'` (or 1.0.0, 1.0.1, 1.0.2)"),
    );
}

/// Why `text` is not an ISO 8601 duration Baton can wait for; `None` when it is one, or when it
/// is a runtime expression (checked as such).
///
/// Beyond the DSL's pattern, Baton needs a fixed length: no years or months (`P1M` has none),
/// and a fraction only on the last unit, which must be hours, minutes or seconds (`PT1.5H`).
pub fn duration_problem(text: &str) -> Option<String> {
    if crate::expr::strip(text).is_some() {
        return None;
    }
    let Some(rest) = text.strip_prefix('P') else {
        return Some("an ISO 8601 duration starts with `P` (PT30S, PT1H30M, P2D)".to_owned());
    };
    let (date, time) = match rest.split_once('T') {
        Some((date, time)) => (date, Some(time)),
        None => (rest, None),
    };
    let mut parts: Vec<(char, bool)> = Vec::new(); // (unit, has a fraction)
    if let Err(problem) = units(date, &['Y', 'M', 'W', 'D'], &mut parts) {
        return Some(problem);
    }
    if let Some(time) = time {
        if time.is_empty() {
            return Some("`T` must be followed by hours, minutes or seconds (PT1H)".to_owned());
        }
        let before = parts.len();
        if let Err(problem) = units(time, &['H', 'M', 'S'], &mut parts) {
            return Some(problem);
        }
        // Lower-case to tell minutes from months below.
        for part in &mut parts[before..] {
            part.0 = part.0.to_ascii_lowercase();
        }
    }
    if parts.is_empty() {
        return Some("`P` alone is no duration: give at least one amount (PT0S, P1D)".to_owned());
    }
    if parts.iter().any(|(unit, _)| matches!(unit, 'Y' | 'M')) {
        return Some("years and months have no fixed length; use days or weeks (P30D, P4W)".to_owned());
    }
    let last = parts.len() - 1;
    for (index, (unit, fraction)) in parts.iter().enumerate() {
        if *fraction && (index != last || !matches!(unit, 'h' | 'm' | 's')) {
            return Some(
                "only the last unit may have a fraction, and only hours, minutes or seconds (PT1.5H, PT0.25S)"
                    .to_owned(),
            );
        }
    }
    None
}

/// Reads `12D`, `1.5H`... in `order`, appending `(unit, fraction)` to `parts`.
fn units(mut text: &str, order: &[char], parts: &mut Vec<(char, bool)>) -> Result<(), String> {
    let mut allowed = order;
    while !text.is_empty() {
        let digits = text.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            let found = text.chars().next().unwrap_or_default();
            return Err(format!("expected a number before `{found}`"));
        }
        let mut length = digits;
        let mut fraction = false;
        if let Some(after) = text[digits..].strip_prefix(['.', ',']) {
            let decimals = after.bytes().take_while(u8::is_ascii_digit).count();
            if decimals == 0 {
                return Err("a decimal point must be followed by digits (PT1.5H)".to_owned());
            }
            length += 1 + decimals;
            fraction = true;
        }
        let Some(unit) = text[length..].chars().next() else {
            return Err(format!("the number `{}` has no unit", &text[..length]));
        };
        let Some(position) = allowed.iter().position(|u| *u == unit) else {
            return Err(if order.contains(&unit) {
                format!(
                    "the unit `{unit}` is repeated or out of order (the order is {})",
                    order.iter().collect::<String>()
                )
            } else if order.contains(&'D') && matches!(unit, 'H' | 'S') {
                format!("hours, minutes and seconds come after `T` (PT{}{unit})", &text[..length])
            } else {
                format!("`{unit}` is not a unit here (use {})", order.iter().collect::<String>())
            });
        };
        parts.push((unit, fraction));
        allowed = &allowed[position + 1..];
        text = &text[length + unit.len_utf8()..];
    }
    Ok(())
}

/// `schedule`: a cron pattern that parses, a time zone the time zone database knows, a period
/// longer than zero, and no `on.all` (an instance from a set of correlated events), which Baton
/// does not start from.
pub(super) fn schedule(cx: &mut Context<'_>, document: &Value) {
    cron(cx, document);
    let unsupported = |cx: &mut Context<'_>, pointer: &str, message: String, expected: &str| {
        let span = cx.span(pointer);
        cx.push(Diagnostic::error(codes::SCHEDULE, cx.file, span, pointer, message).with_expected(expected));
    };
    match crate::schedule::schedule_in(document) {
        Err(error @ ScheduleError::Zone(_)) => unsupported(
            cx,
            "/document/metadata/baton/schedule/timezone",
            error.to_string(),
            "an IANA time zone name, e.g. Europe/Brussels or UTC",
        ),
        Err(error @ ScheduleError::ZeroPeriod) => {
            unsupported(cx, "/schedule/every", error.to_string(), "a duration longer than zero, e.g. PT1H")
        }
        // A cron pattern that does not parse is reported above.
        Err(ScheduleError::Cron { .. }) | Ok(_) => {}
    }
    if document.pointer("/schedule/on/all").is_some() {
        unsupported(
            cx,
            "/schedule/on/all",
            "`schedule.on` with `all` (an instance from a set of correlated events) is not supported".to_owned(),
            "`one` (one kind of event) or `any` (any of several)",
        );
    }
}

fn cron(cx: &mut Context<'_>, document: &Value) {
    let Some(pattern) = document.pointer("/schedule/cron").and_then(Value::as_str) else { return };
    let parser = CronParser::builder().seconds(Seconds::Optional).build();
    if let Err(err) = parser.parse(pattern) {
        let span = cx.span("/schedule/cron");
        let message = format!("`{pattern}` is not a cron expression: {err}");
        cx.push(
            Diagnostic::error(codes::CRON, cx.file, span, "/schedule/cron", message)
                .with_expected("five fields (minute hour day-of-month month day-of-week), optionally a leading seconds field, e.g. '0 0 * * *'"),
        );
    }
}

/// The places whose value is a runtime expression even without `${ }` (Baton compiles them as
/// jq in both modes), relative to a task.
const TASK_EXPRESSION_FIELDS: &[&str] = &[
    "/if",
    "/for/in",
    "/while",
    "/catch/when",
    "/catch/exceptWhen",
    "/catch/retry/when",
    "/catch/retry/exceptWhen",
    "/listen/to/until",
];
/// The same for transforms (only when a string).
const TRANSFORMS: &[&str] = &["/input/from", "/output/as", "/export/as"];

pub(super) fn expressions(cx: &mut Context<'_>, document: &Value, tasks: &Tasks<'_>) {
    let loose = document.pointer("/evaluate/mode").and_then(Value::as_str) == Some("loose");
    let mut fields: HashSet<String> = HashSet::new();
    for path in TRANSFORMS {
        fields.insert((*path).to_owned());
    }
    for task in &tasks.all {
        for path in TASK_EXPRESSION_FIELDS.iter().chain(TRANSFORMS) {
            fields.insert(format!("{}{path}", task.pointer));
        }
        if task.kind() == Kind::One("switch") {
            for (index, item) in task.value.get("switch").and_then(Value::as_array).into_iter().flatten().enumerate() {
                for name in item.as_object().into_iter().flat_map(|case| case.keys()) {
                    fields.insert(format!("{}/switch/{index}/{}/when", task.pointer, escape(name)));
                }
            }
        }
    }
    for (name, _) in document.pointer("/use/retries").and_then(Value::as_object).into_iter().flatten() {
        for key in ["when", "exceptWhen"] {
            fields.insert(format!("/use/retries/{}/{key}", escape(name)));
        }
    }
    for (index, item) in document.pointer("/use/extensions").and_then(Value::as_array).into_iter().flatten().enumerate()
    {
        for name in item.as_object().into_iter().flat_map(|entry| entry.keys()) {
            fields.insert(format!("/use/extensions/{index}/{}/when", escape(name)));
        }
    }
    let task_pointers: HashSet<&str> = tasks.all.iter().map(|task| task.pointer.as_str()).collect();
    let mut pointer = String::new();
    walk_strings(document, &mut pointer, &task_pointers, &mut |pointer, text| {
        let field = fields.contains(pointer);
        let source = match crate::expr::strip(text) {
            Some(source) => source,
            None if field => text,
            None => return,
        };
        if let Err(error) = crate::expr::check_syntax(source) {
            // In loose mode a `${ }` string that does not parse stands for its own text.
            let lenient = loose && !field && error.kind == ExprErrorKind::Syntax;
            let span = expression_span(cx, pointer, text, source, error.offset);
            let message = format!("runtime expression: {}", error.message);
            let diagnostic = if lenient {
                Diagnostic::warning(
                    codes::EXPRESSION,
                    cx.file,
                    span,
                    pointer,
                    format!("{message} (in loose mode it stands for its own text)"),
                )
            } else {
                Diagnostic::error(codes::EXPRESSION, cx.file, span, pointer, message)
            };
            cx.push(diagnostic.with_expected("a jq expression, e.g. ${ .order.id }"));
        }
    });
}

/// Where in the file the expression's error is: the exact character when the string is written
/// on one line as it reads (plain, or quoted without escapes), else the whole string.
fn expression_span(
    cx: &Context<'_>,
    pointer: &str,
    text: &str,
    source: &str,
    offset: Option<usize>,
) -> crate::parse::Span {
    let span = cx.span(pointer);
    let Some(offset) = offset else { return span };
    if span.line != span.end_line {
        return span;
    }
    let Some(line) = cx.parsed.text.lines().nth(span.line - 1) else { return span };
    let written: String =
        line.chars().skip(span.column - 1).take(span.end_column.saturating_sub(span.column)).collect();
    // A quoted scalar's span may run past its closing quote; compare from the opening quote.
    let (body, quote) = match written.chars().next() {
        Some(q @ ('\'' | '"')) => (written.get(1..).unwrap_or_default(), Some(q)),
        _ => (written.as_str(), None),
    };
    let Some(rest) = body.strip_prefix(text) else { return span };
    if quote.is_some_and(|q| !rest.starts_with(q)) || quote.is_none() && !rest.is_empty() {
        return span;
    }
    let quote = usize::from(quote.is_some());
    // `source` is a slice of `text`: its character position there.
    let before = (source.as_ptr() as usize).saturating_sub(text.as_ptr() as usize);
    let Some(prefix) = text.get(..before) else { return span };
    let column = span.column + quote + prefix.chars().count() + offset;
    crate::parse::Span { line: span.line, column, end_line: span.line, end_column: column + 1 }
}

/// Calls `f` with every string of `value` that the runtime may evaluate: not object keys, not
/// the `document` block, the `metadata` of a task (whose pointer is in `tasks`), or the body of
/// a data schema.
fn walk_strings(value: &Value, pointer: &mut String, tasks: &HashSet<&str>, f: &mut impl FnMut(&str, &str)) {
    match value {
        Value::String(text) => f(pointer, text),
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                let length = pointer.len();
                pointer.push_str(&format!("/{index}"));
                walk_strings(item, pointer, tasks, f);
                pointer.truncate(length);
            }
        }
        Value::Object(fields) => {
            for (key, item) in fields {
                let skipped = (pointer.is_empty() && key == "document")
                    || (key == "metadata" && tasks.contains(pointer.as_str()))
                    || (key == "document" && pointer.ends_with("/schema"));
                if skipped {
                    continue;
                }
                let length = pointer.len();
                pointer.push('/');
                pointer.push_str(&escape(key));
                walk_strings(item, pointer, tasks, f);
                pointer.truncate(length);
            }
        }
        _ => {}
    }
}

/// `input`/`output`/`export` schemas: inline JSON Schemas must compile; other formats and
/// external resources are refused when the definition is loaded.
pub(super) fn data_schemas(cx: &mut Context<'_>, document: &Value, tasks: &Tasks<'_>) {
    let mut places: Vec<String> = vec!["/input/schema".into(), "/output/schema".into()];
    for task in &tasks.all {
        for part in
            ["/input/schema", "/output/schema", "/export/schema", "/foreach/output/schema", "/foreach/export/schema"]
        {
            places.push(format!("{}{part}", task.pointer));
        }
        if task.value.get("call").and_then(Value::as_str) == Some("asyncapi") {
            for part in ["output", "export"] {
                places.push(format!("{}/with/subscription/foreach/{part}/schema", task.pointer));
            }
        }
    }
    for place in places {
        let Some(schema) = document.pointer(&place) else { continue };
        if let Some(format) = schema.get("format").and_then(Value::as_str)
            && !format.starts_with("json")
        {
            let at = format!("{place}/format");
            let span = cx.span(&at);
            let message = format!("the schema format `{format}` is not supported");
            cx.push(
                Diagnostic::error(codes::DATA_SCHEMA, cx.file, span, &at, message)
                    .with_expected("`format: json` (JSON Schema)"),
            );
            continue;
        }
        if schema.get("resource").is_some() {
            let at = format!("{place}/resource");
            let span = cx.label(&at);
            let message = "external schema resources are not fetched, so this schema cannot be checked and the definition will not load";
            cx.push(
                Diagnostic::warning(codes::DATA_SCHEMA, cx.file, span, &at, message)
                    .with_expected("the schema inline, under `document`"),
            );
        }
        let Some(body) = schema.get("document") else { continue };
        if let Err(err) = jsonschema::options().build(body) {
            let at = format!("{place}/document{}", err.instance_path().as_str());
            let span = cx.span(&at);
            let message = match (at.ends_with("/type"), document.pointer(&at).and_then(Value::as_str)) {
                (true, Some(name)) => format!(
                    "not a valid JSON Schema: `{name}` is not a type (array, boolean, integer, null, number, object, string)"
                ),
                _ => format!("not a valid JSON Schema: {err}"),
            };
            cx.push(
                Diagnostic::error(codes::DATA_SCHEMA, cx.file, span, &at, message)
                    .with_expected("a JSON Schema (draft 2020-12 unless `$schema` says otherwise)"),
            );
        }
    }
}

/// Names that must refer to an entry of `use`: timeouts, retry policies, errors,
/// authentication policies, secrets, catalogs.
pub(super) fn references(cx: &mut Context<'_>, document: &Value, tasks: &Tasks<'_>) {
    let declared =
        |kind: &str, name: &str| document.pointer(&format!("/use/{kind}")).and_then(|v| v.get(name)).is_some();
    let secrets: HashSet<&str> = document
        .pointer("/use/secrets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let mut refs: Vec<(String, &str, &str)> = Vec::new(); // (pointer, kind of use, name)
    if let Some(name) = document.get("timeout").and_then(Value::as_str) {
        refs.push(("/timeout".into(), "timeouts", name));
    }
    for task in &tasks.all {
        let mut add = |path: &str, kind: &'static str| {
            if let Some(name) = task.value.pointer(path).and_then(Value::as_str) {
                refs.push((format!("{}{path}", task.pointer), kind, name));
            }
        };
        add("/timeout", "timeouts");
        add("/catch/retry", "retries");
        add("/raise/error", "errors");
    }
    for (pointer, kind, name) in refs {
        if !declared(kind, name) {
            unknown_reference(cx, &pointer, kind, name);
        }
    }
    // Authentication policies: `authentication: { use: name }` names one of use.authentications;
    // a scheme's `use` (`bearer: { use: name }`) names one of use.secrets.
    let mut policies: Vec<(String, &Value)> = Vec::new();
    for (name, policy) in document.pointer("/use/authentications").and_then(Value::as_object).into_iter().flatten() {
        policies.push((format!("/use/authentications/{}", escape(name)), policy));
    }
    let mut places: Vec<(String, &Value)> = Vec::new();
    for (name, catalog) in document.pointer("/use/catalogs").and_then(Value::as_object).into_iter().flatten() {
        places.push((format!("/use/catalogs/{}", escape(name)), catalog));
    }
    for task in &tasks.all {
        if let (Kind::One("call"), Some(call)) = (task.kind(), task.value.get("call").and_then(Value::as_str))
            && PROTOCOLS.contains(&call)
            && let Some(with) = task.value.get("with")
        {
            places.push((format!("{}/with", task.pointer), with));
        }
    }
    for (pointer, value) in places {
        find_authentications(value, &pointer, &mut policies);
    }
    for (pointer, policy) in policies {
        if let Some(name) = policy.get("use").and_then(Value::as_str)
            && policy.as_object().is_some_and(|p| p.len() == 1)
        {
            if !declared("authentications", name) {
                unknown_reference(cx, &format!("{pointer}/use"), "authentications", name);
            }
            continue;
        }
        for scheme in ["basic", "bearer", "digest", "oauth2", "oidc"] {
            if let Some(secret) = policy.get(scheme).and_then(|s| s.get("use")).and_then(Value::as_str)
                && !secrets.contains(secret)
            {
                unknown_reference(cx, &format!("{pointer}/{scheme}/use"), "secrets", secret);
            }
        }
    }
}

fn find_authentications<'v>(value: &'v Value, pointer: &str, out: &mut Vec<(String, &'v Value)>) {
    match value {
        Value::Object(fields) => {
            for (key, item) in fields {
                let here = format!("{pointer}/{}", escape(key));
                if key == "authentication" && item.is_object() {
                    out.push((here.clone(), item));
                }
                find_authentications(item, &here, out);
            }
        }
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                find_authentications(item, &format!("{pointer}/{index}"), out);
            }
        }
        _ => {}
    }
}

/// Business calendars: those a definition declares must be valid; those an `sla` names should
/// be declared (else they must be among the engine's shared calendars, a warning).
pub(super) fn calendars(cx: &mut Context<'_>, document: &Value, tasks: &Tasks<'_>, shared: &[String]) {
    let declared = document.pointer("/use/calendars").and_then(Value::as_object);
    for (name, calendar) in declared.into_iter().flatten() {
        if let Err(error) = baton_sla::Calendar::from_value(calendar) {
            let pointer = format!("/use/calendars/{}", escape(name));
            let span = cx.span(&pointer);
            let diagnostic = Diagnostic::error(codes::CALENDAR, cx.file, span, &pointer, error.to_string())
                .with_expected("timezone, hours per weekday (HH:MM-HH:MM), holidays (docs/calendars.md)");
            cx.push(diagnostic);
        }
    }
    let mut slas: Vec<(String, &Value)> = document.get("sla").map(|sla| ("/sla".to_owned(), sla)).into_iter().collect();
    slas.extend(tasks.all.iter().filter_map(|t| t.value.get("sla").map(|sla| (format!("{}/sla", t.pointer), sla))));
    for (pointer, sla) in slas {
        let Some(name) = sla.get("calendar").and_then(Value::as_str) else { continue };
        if declared.is_some_and(|d| d.contains_key(name)) || shared.iter().any(|s| s == name) {
            continue;
        }
        let pointer = format!("{pointer}/calendar");
        let span = cx.span(&pointer);
        let message = format!("calendar `{name}` is not declared in `use.calendars`");
        let diagnostic = Diagnostic::warning(codes::CALENDAR, cx.file, span, &pointer, message)
            .with_expected(format!("an entry `{name}:` under `use.calendars`, or a calendar the engine shares"));
        cx.push(diagnostic);
    }
}

fn unknown_reference(cx: &mut Context<'_>, pointer: &str, kind: &str, name: &str) {
    let span = cx.span(pointer);
    let what = match kind {
        "timeouts" => "timeout",
        "retries" => "retry policy",
        "errors" => "error",
        "authentications" => "authentication policy",
        "secrets" => "secret",
        _ => "catalog",
    };
    let message = format!("no {what} named `{name}` in `use.{kind}`");
    let expected = if kind == "secrets" {
        format!("`{name}` listed under `use.secrets`")
    } else {
        format!("an entry `{name}:` under `use.{kind}`, or the {what} written inline")
    };
    cx.push(Diagnostic::error(codes::UNKNOWN_REFERENCE, cx.file, span, pointer, message).with_expected(expected));
}

/// What a `call:` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Callee {
    Protocol,
    Function,
    Catalog,
    Uri,
    Builtin,
    Activity,
    Unknown,
}

pub(super) fn callee(document: &Value, name: &str, activities: Option<&super::ActivityManifest>) -> Callee {
    if PROTOCOLS.contains(&name) {
        Callee::Protocol
    } else if document.pointer("/use/functions").and_then(|f| f.get(name)).is_some() {
        Callee::Function
    } else if is_catalog_reference(name) {
        Callee::Catalog
    } else if is_uri(name) {
        Callee::Uri
    } else if BUILTIN_FUNCTIONS.contains(&name) {
        Callee::Builtin
    } else if activities.is_some_and(|manifest| manifest.get(name).is_some()) {
        Callee::Activity
    } else {
        Callee::Unknown
    }
}

/// `name:version@catalog`.
fn is_catalog_reference(name: &str) -> bool {
    name.rsplit_once('@').is_some_and(|(function, catalog)| {
        !catalog.is_empty() && function.split_once(':').is_some_and(|(f, v)| !f.is_empty() && !v.is_empty())
    })
}

/// `scheme://...`: the address of a function definition.
fn is_uri(name: &str) -> bool {
    name.split_once("://").is_some_and(|(scheme, rest)| {
        !rest.is_empty()
            && scheme.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && scheme.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    })
}

pub(super) fn functions(cx: &mut Context<'_>, document: &Value, tasks: &Tasks<'_>) {
    let manifest = cx.options.activities.as_ref();
    for (task, name) in tasks.calls() {
        let pointer = format!("{}/call", task.pointer);
        match callee(document, name, manifest) {
            Callee::Catalog => {
                let catalog = name.rsplit_once('@').map_or("", |(_, catalog)| catalog);
                let declared = document.pointer("/use/catalogs").and_then(|c| c.get(catalog)).is_some();
                if catalog != "default" && !declared {
                    unknown_reference(cx, &pointer, "catalogs", catalog);
                }
            }
            Callee::Activity => activity_input(cx, task, name),
            // The server's own activities are known, except to a portable definition.
            Callee::Unknown if SERVER_ACTIVITIES.contains(&name) && !cx.options.strict_spec => {}
            Callee::Unknown => unknown_function(cx, &pointer, name),
            Callee::Protocol | Callee::Function | Callee::Uri | Callee::Builtin => {}
        }
    }
}

fn unknown_function(cx: &mut Context<'_>, pointer: &str, name: &str) {
    let span = cx.span(pointer);
    if cx.options.strict_spec {
        let message = format!(
            "`call: {name}` calls an activity by name, a Baton extension: portable definitions call protocols (http, grpc, openapi, asyncapi, a2a, mcp), `use.functions` entries or catalog functions"
        );
        let diagnostic = Diagnostic::error(codes::EXTENSION, cx.file, span, pointer, message)
            .with_expected("a function declared under `use.functions`, or `name:version@catalog`");
        cx.push(diagnostic);
        return;
    }
    let manifest = cx.options.activities.as_ref();
    let mut message = format!("`call: {name}` names no protocol, `use.functions` entry, catalog function or built-in");
    let expected = match manifest {
        Some(manifest) => {
            message.push_str(", and no activity of the manifest");
            let names: Vec<&str> = manifest.activities.iter().map(|a| a.name.as_str()).collect();
            if let Some(close) = super::schema::closest(name, names.iter().copied()) {
                message.push_str(&format!("; did you mean `{close}`?"));
            }
            format!("an activity of the manifest ({}) or a function of `use.functions`", names.join(", "))
        }
        None => {
            message.push_str("; it runs only if an activity is registered under this name");
            "a function of `use.functions`, or an activity name (check them with --activities MANIFEST)".to_owned()
        }
    };
    let diagnostic = if manifest.is_some() || cx.options.strict {
        Diagnostic::error(codes::UNKNOWN_FUNCTION, cx.file, span, pointer, message)
    } else {
        Diagnostic::warning(codes::UNKNOWN_FUNCTION, cx.file, span, pointer, message)
    };
    cx.push(diagnostic.with_expected(expected));
}

/// A call's `with` against the manifest's input schema, when `with` holds no expression (its
/// value is then known before the run).
fn activity_input(cx: &mut Context<'_>, task: &Task<'_>, name: &str) {
    let Some(activity) = cx.options.activities.as_ref().and_then(|m| m.get(name)) else { return };
    let Some(validator) = activity.input_validator() else { return };
    let empty = Value::Object(Default::default());
    let with = task.value.get("with").unwrap_or(&empty);
    if has_expression(with) {
        return;
    }
    let base = format!("{}/with", task.pointer);
    let problems: Vec<(String, String)> = validator
        .iter_errors(with)
        .map(|error| (format!("{base}{}", error.instance_path().as_str()), error.to_string()))
        .collect();
    for (pointer, message) in problems {
        let span = if pointer == base { cx.label(&pointer) } else { cx.span(&pointer) };
        let message = format!("the input of activity `{name}`: {message}");
        let expected = match &activity.description {
            Some(description) => format!("input matching the manifest's schema for `{name}` ({description})"),
            None => format!("input matching the manifest's schema for `{name}`"),
        };
        cx.push(Diagnostic::error(codes::ACTIVITY_INPUT, cx.file, span, &pointer, message).with_expected(expected));
    }
}

fn has_expression(value: &Value) -> bool {
    match value {
        Value::String(text) => crate::expr::strip(text).is_some(),
        Value::Array(items) => items.iter().any(has_expression),
        Value::Object(fields) => fields.values().any(has_expression),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_baton_can_wait_for() {
        for ok in ["PT30S", "PT1H30M", "P2D", "P1W", "P1DT2H", "PT1.5H", "PT0.25S", "P2DT1H0.5M", "${ .delay }"] {
            assert_eq!(duration_problem(ok), None, "{ok}");
        }
        for (bad, why) in [
            ("1 hour", "starts with `P`"),
            ("P", "`P` alone"),
            ("PT", "`T` must be followed"),
            ("P1M", "no fixed length"),
            ("P1Y", "no fixed length"),
            ("PT1.5H30M", "only the last unit"),
            ("P1.5D", "only the last unit"),
            ("PT1H2H", "repeated or out of order"),
            ("PT5", "has no unit"),
            ("P2H", "come after `T`"),
            ("PTM", "expected a number"),
            ("PT1X", "not a unit"),
        ] {
            let problem = duration_problem(bad).unwrap_or_else(|| panic!("{bad} accepted"));
            assert!(problem.contains(why), "{bad}: {problem}");
        }
    }

    #[test]
    fn catalog_references_and_uris() {
        assert!(is_catalog_reference("log:1.0.0@default"));
        assert!(!is_catalog_reference("training.schedule"));
        assert!(!is_catalog_reference("a@b"));
        assert!(is_uri("https://example.com/functions/log.yaml"));
        assert!(!is_uri("training.schedule"));
    }
}
