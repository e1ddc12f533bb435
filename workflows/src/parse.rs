//! Reading a definition: YAML 1.2 (core schema) or JSON into a [`serde_json::Value`], plus a
//! [`SpanIndex`] from JSON pointers (`/do/0/getPet/call`) to where each node sits in the text.
//!
//! ```
//! use baton_workflows::parse::{parse, ParseLimits};
//!
//! let parsed = parse("flow.yaml", b"do:\n  - greet:\n      set: { hello: world }\n", &ParseLimits::default())
//!     .expect("valid YAML");
//! assert_eq!(parsed.value["do"][0]["greet"]["set"]["hello"], "world");
//! let name = parsed.spans.key("/do/0/greet").expect("a task name has a key span");
//! assert_eq!((name.line, name.column), (2, 5));
//! ```
//!
//! JSON is read by the same parser, YAML 1.2 being a superset of it.
//!
//! The tree is built here from saphyr-parser's event stream rather than by saphyr's loader,
//! because the loader copies an anchor for every alias without limit: a few hundred bytes of
//! nested aliases ("billion laughs") expand to billions of nodes. Here each alias, anchor and
//! merge key (`<<`) is charged to a budget *before* anything is copied, the nesting depth and
//! the node count are bounded, and the byte size is checked before parsing starts, so memory
//! stays proportional to the limits whatever the input. Nothing here recurses on the input's
//! structure, and no input makes it panic.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use saphyr_parser::{Event, Parser, ScalarStyle, ScanError, Tag};
use serde::Serialize;
use serde_json::{Map, Number, Value};

use crate::diagnostic::{Diagnostic, codes};

/// Where a node sits in the source. Lines and columns are 1-based and count characters (not
/// bytes); `end_line`/`end_column` is the position just after the node's last character.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Span {
    pub line: usize,
    pub column: usize,
    pub end_line: usize,
    pub end_column: usize,
}

impl Span {
    /// An empty span at one position.
    pub fn at(line: usize, column: usize) -> Self {
        Self { line, column, end_line: line, end_column: column }
    }

    fn from_yaml(span: saphyr_parser::Span) -> Self {
        Self {
            line: span.start.line(),
            column: span.start.col() + 1,
            end_line: span.end.line(),
            end_column: span.end.col() + 1,
        }
    }

    fn through(self, end: Self) -> Self {
        Self { end_line: end.end_line, end_column: end.end_column, ..self }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct NodeSpans {
    /// The mapping key that names the node, when its parent is a mapping.
    key: Option<Span>,
    value: Span,
}

/// Where every node of a parsed document is, by JSON pointer (RFC 6901: `~0` for `~`, `~1` for
/// `/`; the empty pointer is the whole document).
#[derive(Clone, Debug, Default)]
pub struct SpanIndex {
    nodes: HashMap<String, NodeSpans>,
}

impl SpanIndex {
    /// The span of the node's value.
    pub fn value(&self, pointer: &str) -> Option<Span> {
        self.nodes.get(pointer).map(|node| node.value)
    }

    /// The span of the mapping key that names the node (a task's name, a property's name).
    pub fn key(&self, pointer: &str) -> Option<Span> {
        self.nodes.get(pointer).and_then(|node| node.key)
    }

    /// The key span if the node has one, else its value span: where to point when the node as
    /// a whole is at fault.
    pub fn label(&self, pointer: &str) -> Option<Span> {
        self.nodes.get(pointer).map(|node| node.key.unwrap_or(node.value))
    }

    /// The value span of the node or of its closest ancestor that has one (a missing property
    /// points at the mapping that lacks it); the document start when none has.
    pub fn nearest(&self, pointer: &str) -> Span {
        let mut pointer = pointer;
        loop {
            if let Some(span) = self.value(pointer) {
                return span;
            }
            match pointer.rfind('/') {
                Some(slash) => pointer = &pointer[..slash],
                None => return Span::at(1, 1),
            }
        }
    }

    /// How many nodes have a span.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Every pointer that has a span.
    pub fn pointers(&self) -> impl Iterator<Item = &str> {
        self.nodes.keys().map(String::as_str)
    }
}

/// A parsed document: its value, where each node is, and the text it came from.
#[derive(Clone, Debug)]
pub struct Parsed {
    pub value: Value,
    pub spans: SpanIndex,
    pub text: String,
}

/// Bounds on what [`parse`] accepts. Inputs beyond them are rejected with a diagnostic, never
/// partly read.
#[derive(Clone, Debug)]
pub struct ParseLimits {
    /// The largest file, in bytes (4 MiB).
    pub max_bytes: usize,
    /// The deepest nesting of mappings and sequences (128).
    pub max_depth: usize,
    /// The most nodes the document may hold, aliases expanded (200,000).
    pub max_nodes: usize,
    /// The most nodes all aliases together may copy (10,000).
    pub max_alias_nodes: usize,
}

impl Default for ParseLimits {
    fn default() -> Self {
        Self { max_bytes: 4 << 20, max_depth: 128, max_nodes: 200_000, max_alias_nodes: 10_000 }
    }
}

/// Parses YAML or JSON `bytes` (named `file` in diagnostics) into a value and its spans.
///
/// # Errors
/// Every problem found: not UTF-8, a syntax error, a limit exceeded (these stop the parse at
/// once), duplicate keys and non-string keys (all of them are reported).
pub fn parse(file: &str, bytes: &[u8], limits: &ParseLimits) -> Result<Parsed, Vec<Diagnostic>> {
    if bytes.len() > limits.max_bytes {
        let message = format!("the file is {} bytes, more than the {} bytes allowed", bytes.len(), limits.max_bytes);
        return Err(vec![Diagnostic::error(codes::TOO_LARGE, file, Span::at(1, 1), "", message)]);
    }
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(err) => return Err(vec![not_utf8(file, bytes, err)]),
    };
    let mut builder = Builder::new(file, limits);
    match builder.run(text) {
        Ok(value) if builder.problems.is_empty() => Ok(Parsed {
            value,
            spans: SpanIndex { nodes: builder.entries.into_iter().collect() },
            text: text.to_owned(),
        }),
        Ok(_) => Err(builder.problems),
        Err(fatal) => {
            let mut problems = builder.problems;
            problems.push(*fatal);
            Err(problems)
        }
    }
}

fn not_utf8(file: &str, bytes: &[u8], err: std::str::Utf8Error) -> Diagnostic {
    let valid = &bytes[..err.valid_up_to()];
    let prefix = std::str::from_utf8(valid).unwrap_or_default();
    let line = prefix.matches('\n').count() + 1;
    let column = prefix.rsplit('\n').next().map_or(0, |last| last.chars().count()) + 1;
    let byte = bytes.get(err.valid_up_to()).copied().unwrap_or_default();
    let span = Span { line, column, end_line: line, end_column: column + 1 };
    Diagnostic::error(
        codes::NOT_UTF8,
        file,
        span,
        "",
        format!("the file is not UTF-8: byte 0x{byte:02X} starts no character"),
    )
    .with_expected("UTF-8 text (save the file as UTF-8)")
}

type Fatal = Box<Diagnostic>;

/// A copy of an anchored node, kept for its aliases.
struct Anchored {
    value: Value,
    nodes: usize,
    height: usize,
    /// The spans of the node and its descendants, by pointer relative to the node.
    spans: Vec<(String, NodeSpans)>,
}

struct Frame {
    pointer: String,
    key: Option<Span>,
    start: Span,
    anchor: usize,
    /// Where this node's descendants' spans start in `Builder::entries`.
    spans_from: usize,
    /// Nodes in this subtree so far, this one included.
    nodes: usize,
    /// The height of the tallest child subtree.
    height: usize,
    body: Body,
}

enum Body {
    Sequence(Vec<Value>),
    Mapping(Mapping),
}

#[derive(Default)]
struct Mapping {
    map: Map<String, Value>,
    /// Keys written out in this mapping, with where (for duplicate reports).
    explicit: HashMap<String, Span>,
    /// Keys that came from a merge (`<<`); an explicit key overrides them.
    merged: HashSet<String>,
    pending: Option<PendingKey>,
}

struct PendingKey {
    name: String,
    span: Span,
    /// The key is `<<`: its value is merged into the mapping.
    merge: bool,
    /// The key is a duplicate: its value is dropped (the duplicate is already reported).
    skip: bool,
}

/// Where the next node goes.
enum Slot {
    Root,
    Key,
    Value { pointer: String, key: Option<Span> },
}

struct Builder<'a> {
    file: &'a str,
    limits: &'a ParseLimits,
    frames: Vec<Frame>,
    root: Option<Value>,
    documents: usize,
    anchors: HashMap<usize, Anchored>,
    nodes: usize,
    alias_nodes: usize,
    entries: Vec<(String, NodeSpans)>,
    problems: Vec<Diagnostic>,
}

impl<'a> Builder<'a> {
    fn new(file: &'a str, limits: &'a ParseLimits) -> Self {
        Self {
            file,
            limits,
            frames: Vec::new(),
            root: None,
            documents: 0,
            anchors: HashMap::new(),
            nodes: 0,
            alias_nodes: 0,
            entries: Vec::new(),
            problems: Vec::new(),
        }
    }

    fn run(&mut self, text: &str) -> Result<Value, Fatal> {
        let mut parser = Parser::new_from_str(text);
        while let Some(next) = parser.next_event() {
            let (event, span) = next.map_err(|err| self.syntax(&err))?;
            let span = Span::from_yaml(span);
            match event {
                Event::Nothing | Event::StreamStart | Event::DocumentEnd => {}
                Event::StreamEnd => break,
                Event::DocumentStart(_) => {
                    if self.documents > 0 {
                        return Err(self.fatal(
                            codes::UNSUPPORTED_YAML,
                            span,
                            "the file holds more than one YAML document (`---`); a definition is one document",
                        ));
                    }
                    self.documents += 1;
                }
                Event::Scalar(text, style, anchor, tag) => self.scalar(text, style, anchor, tag, span)?,
                Event::Alias(id) => self.alias(id, span)?,
                Event::SequenceStart(anchor, tag) => self.open(Body::Sequence(Vec::new()), anchor, tag, span)?,
                Event::MappingStart(anchor, tag) => self.open(Body::Mapping(Mapping::default()), anchor, tag, span)?,
                Event::SequenceEnd | Event::MappingEnd => self.close(span)?,
            }
        }
        Ok(self.root.take().unwrap_or(Value::Null))
    }

    fn syntax(&self, err: &ScanError) -> Fatal {
        let marker = err.marker();
        let span = Span::at(marker.line().max(1), marker.col() + 1);
        if err.info().contains("recursion limit") {
            // The scanner's own bound on flow nesting (`[[[[...`), reached while looking ahead.
            let message = format!("mappings and sequences nest deeper than {} levels", self.limits.max_depth);
            return Box::new(Diagnostic::error(codes::TOO_DEEP, self.file, span, "", message));
        }
        Box::new(Diagnostic::error(
            codes::YAML_SYNTAX,
            self.file,
            span,
            "",
            format!("YAML syntax error: {}", err.info()),
        ))
    }

    fn fatal(&self, code: &'static str, span: Span, message: impl Into<String>) -> Fatal {
        Box::new(Diagnostic::error(code, self.file, span, &self.pointer_here(), message))
    }

    /// The pointer of the node being built (for fatal errors).
    fn pointer_here(&self) -> String {
        self.frames.last().map(|frame| frame.pointer.clone()).unwrap_or_default()
    }

    fn slot(&self) -> Slot {
        match self.frames.last() {
            None => Slot::Root,
            Some(Frame { pointer, body: Body::Sequence(items), .. }) => {
                Slot::Value { pointer: format!("{pointer}/{}", items.len()), key: None }
            }
            Some(Frame { pointer, body: Body::Mapping(mapping), .. }) => match &mapping.pending {
                None => Slot::Key,
                Some(key) => Slot::Value { pointer: format!("{pointer}/{}", escape(&key.name)), key: Some(key.span) },
            },
        }
    }

    fn count(&mut self, nodes: usize, span: Span) -> Result<(), Fatal> {
        self.nodes = self.nodes.saturating_add(nodes);
        if self.nodes > self.limits.max_nodes {
            let message = format!("the document holds more than {} nodes", self.limits.max_nodes);
            return Err(self.fatal(codes::TOO_LARGE, span, message));
        }
        Ok(())
    }

    fn open(&mut self, body: Body, anchor: usize, tag: Option<Cow<'_, Tag>>, span: Span) -> Result<(), Fatal> {
        let is_mapping = matches!(body, Body::Mapping(_));
        let (pointer, key) = match self.slot() {
            Slot::Key => {
                let what = if is_mapping { "a mapping" } else { "a sequence" };
                return Err(self.fatal(
                    codes::NON_STRING_KEY,
                    span,
                    format!("a mapping key must be a string, not {what}"),
                ));
            }
            Slot::Root => (String::new(), None),
            Slot::Value { pointer, key } => (pointer, key),
        };
        if let Some(tag) = tag {
            let expected = if is_mapping { "map" } else { "seq" };
            if !(tag.is_yaml_core_schema() && tag.suffix == expected || tag.handle == "!" && tag.suffix.is_empty()) {
                return Err(self.fatal(codes::UNSUPPORTED_YAML, span, format!("the tag `{tag}` is not supported")));
            }
        }
        if self.frames.len() >= self.limits.max_depth {
            let message = format!("mappings and sequences nest deeper than {} levels", self.limits.max_depth);
            return Err(self.fatal(codes::TOO_DEEP, span, message));
        }
        self.count(1, span)?;
        let spans_from = self.entries.len();
        self.frames.push(Frame { pointer, key, start: span, anchor, spans_from, nodes: 1, height: 0, body });
        Ok(())
    }

    fn close(&mut self, end: Span) -> Result<(), Fatal> {
        let Some(frame) = self.frames.pop() else { return Ok(()) };
        let value = match frame.body {
            Body::Sequence(items) => Value::Array(items),
            Body::Mapping(mapping) => Value::Object(mapping.map),
        };
        let span = frame.start.through(end);
        let node = Node { value, nodes: frame.nodes, height: frame.height + 1 };
        self.finish(node, NodeSpans { key: frame.key, value: span }, frame.pointer, frame.anchor, frame.spans_from)
    }

    fn scalar(
        &mut self,
        text: Cow<'_, str>,
        style: ScalarStyle,
        anchor: usize,
        tag: Option<Cow<'_, Tag>>,
        span: Span,
    ) -> Result<(), Fatal> {
        self.count(1, span)?;
        let value = match resolve(&text, style, tag.as_deref()) {
            Ok(value) => value,
            Err(message) => return Err(self.fatal(codes::UNSUPPORTED_YAML, span, message)),
        };
        match self.slot() {
            Slot::Key => {
                let name = match value {
                    Value::String(name) => name,
                    other => {
                        let kind = match other {
                            Value::Null => "null",
                            Value::Bool(_) => "a boolean",
                            _ => "a number",
                        };
                        self.problems.push(
                            Diagnostic::error(
                                codes::NON_STRING_KEY,
                                self.file,
                                span,
                                &self.pointer_here(),
                                format!("the mapping key `{text}` is {kind}, not a string"),
                            )
                            .with_expected(format!("a string key; quote it ('{text}') if a string is meant")),
                        );
                        text.into_owned()
                    }
                };
                if anchor > 0 {
                    let spans = vec![(String::new(), NodeSpans { key: None, value: span })];
                    let value = Value::String(name.clone());
                    self.anchors.insert(anchor, Anchored { value, nodes: 1, height: 0, spans });
                }
                let merge = name == "<<" && style == ScalarStyle::Plain && tag.is_none();
                self.set_key(name, span, merge);
                Ok(())
            }
            Slot::Root => {
                let node = Node { value, nodes: 1, height: 0 };
                self.finish(node, NodeSpans { key: None, value: span }, String::new(), anchor, self.entries.len())
            }
            Slot::Value { pointer, key } => {
                let node = Node { value, nodes: 1, height: 0 };
                self.finish(node, NodeSpans { key, value: span }, pointer, anchor, self.entries.len())
            }
        }
    }

    fn set_key(&mut self, name: String, span: Span, merge: bool) {
        let file = self.file;
        let Some(Frame { pointer, body: Body::Mapping(mapping), .. }) = self.frames.last_mut() else { return };
        let mut skip = false;
        if let Some(first) = mapping.explicit.get(&name) {
            let message = format!("the key `{name}` appears twice in this mapping (first on line {})", first.line);
            let at = format!("{pointer}/{}", escape(&name));
            self.problems.push(
                Diagnostic::error(codes::DUPLICATE_KEY, file, span, &at, message)
                    .with_expected("each key once per mapping"),
            );
            skip = true;
        } else {
            mapping.explicit.insert(name.clone(), span);
            if mapping.merged.remove(&name) {
                mapping.map.remove(&name);
            }
        }
        mapping.pending = Some(PendingKey { name, span, merge, skip });
    }

    fn alias(&mut self, id: usize, span: Span) -> Result<(), Fatal> {
        let Some(anchored) = self.anchors.get(&id) else {
            return Err(self.fatal(
                codes::UNSUPPORTED_YAML,
                span,
                "this alias refers to the node that contains it (a recursive structure)",
            ));
        };
        let (nodes, height) = (anchored.nodes, anchored.height);
        self.alias_nodes = self.alias_nodes.saturating_add(nodes);
        if self.alias_nodes > self.limits.max_alias_nodes {
            let message =
                format!("aliases expand to more than {} nodes (a YAML alias bomb?)", self.limits.max_alias_nodes);
            let diagnostic = Diagnostic::error(codes::ALIAS_BUDGET, self.file, span, &self.pointer_here(), message)
                .with_expected("fewer or smaller aliases; write the repeated parts out");
            return Err(Box::new(diagnostic));
        }
        self.count(nodes, span)?;
        if self.frames.len() + height > self.limits.max_depth {
            let message = format!("mappings and sequences nest deeper than {} levels", self.limits.max_depth);
            return Err(self.fatal(codes::TOO_DEEP, span, message));
        }
        let (pointer, key) = match self.slot() {
            Slot::Key => {
                let Some(Anchored { value: Value::String(name), .. }) = self.anchors.get(&id) else {
                    return Err(self.fatal(codes::NON_STRING_KEY, span, "a mapping key must be a string"));
                };
                let name = name.clone();
                self.set_key(name, span, false);
                return Ok(());
            }
            Slot::Root => (String::new(), None),
            Slot::Value { pointer, key } => (pointer, key),
        };
        let spans_from = self.entries.len();
        let Some(anchored) = self.anchors.get(&id) else { return Ok(()) };
        for (suffix, spans) in &anchored.spans {
            if !suffix.is_empty() {
                self.entries.push((format!("{pointer}{suffix}"), *spans));
            }
        }
        let node = Node { value: anchored.value.clone(), nodes, height };
        self.finish(node, NodeSpans { key, value: span }, pointer, 0, spans_from)
    }

    /// Records a complete node's span and anchor, and puts it in its parent.
    fn finish(
        &mut self,
        node: Node,
        spans: NodeSpans,
        pointer: String,
        anchor: usize,
        spans_from: usize,
    ) -> Result<(), Fatal> {
        self.entries.push((pointer.clone(), spans));
        if anchor > 0 {
            // The copy kept for aliases costs as much as the node.
            self.count(node.nodes, spans.value)?;
            let relative = self.entries[spans_from..]
                .iter()
                .map(|(p, s)| (p.get(pointer.len()..).unwrap_or_default().to_owned(), *s))
                .collect();
            let anchored =
                Anchored { value: node.value.clone(), nodes: node.nodes, height: node.height, spans: relative };
            self.anchors.insert(anchor, anchored);
        }
        let file = self.file;
        let Some(parent) = self.frames.last_mut() else {
            self.root = Some(node.value);
            return Ok(());
        };
        parent.nodes = parent.nodes.saturating_add(node.nodes);
        parent.height = parent.height.max(node.height);
        let mapping = match &mut parent.body {
            Body::Sequence(items) => {
                items.push(node.value);
                return Ok(());
            }
            Body::Mapping(mapping) => mapping,
        };
        let Some(key) = mapping.pending.take() else { return Ok(()) };
        if key.skip {
            return Ok(());
        }
        if !key.merge {
            mapping.map.insert(key.name, node.value);
            return Ok(());
        }
        // `<<: *base` or `<<: [*a, *b]`: keys not written out come from the merged mappings,
        // the earlier mapping winning. Their spans move from `.../<</k` to `.../k`.
        let listed = node.value.is_array();
        let sources = match node.value {
            Value::Object(map) => vec![map],
            Value::Array(items) if items.iter().all(Value::is_object) => items
                .into_iter()
                .filter_map(|item| if let Value::Object(map) = item { Some(map) } else { None })
                .collect(),
            _ => {
                return Err(Box::new(Diagnostic::error(
                    codes::UNSUPPORTED_YAML,
                    file,
                    spans.value,
                    &pointer,
                    "a merge key (`<<`) takes a mapping or a list of mappings",
                )));
            }
        };
        let mut taken: HashMap<String, usize> = HashMap::new();
        for (index, source) in sources.into_iter().enumerate() {
            for (name, value) in source {
                if mapping.map.contains_key(&name) {
                    continue;
                }
                taken.insert(name.clone(), index);
                mapping.merged.insert(name.clone());
                mapping.map.insert(name, value);
            }
        }
        let parent_pointer = parent.pointer.clone();
        let moved: Vec<(String, NodeSpans)> = self.entries.split_off(spans_from);
        for (entry, spans) in moved {
            let Some(rest) = entry.strip_prefix(&pointer) else { continue };
            let (index, rest) = if !listed {
                (0, rest)
            } else {
                let rest = rest.strip_prefix('/').unwrap_or(rest);
                let (index, rest) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
                (index.parse().unwrap_or(usize::MAX), rest)
            };
            let Some(name) = rest.strip_prefix('/') else { continue };
            let name = name.split('/').next().unwrap_or_default();
            if taken.get(&unescape(name)) == Some(&index) {
                self.entries.push((format!("{parent_pointer}{rest}"), spans));
            }
        }
        Ok(())
    }
}

struct Node {
    value: Value,
    nodes: usize,
    height: usize,
}

/// Escapes one pointer segment (RFC 6901).
pub fn escape(segment: &str) -> Cow<'_, str> {
    if segment.contains(['~', '/']) {
        Cow::Owned(segment.replace('~', "~0").replace('/', "~1"))
    } else {
        Cow::Borrowed(segment)
    }
}

/// Undoes [`escape`].
pub fn unescape(segment: &str) -> String {
    segment.replace("~1", "/").replace("~0", "~")
}

/// The value of a scalar under the YAML 1.2 core schema: plain scalars may be null, booleans
/// or numbers; quoted ones are strings; `!!str`, `!!int`... force a type.
fn resolve(text: &str, style: ScalarStyle, tag: Option<&Tag>) -> Result<Value, String> {
    let Some(tag) = tag else {
        return Ok(if style == ScalarStyle::Plain { resolve_plain(text)? } else { Value::String(text.to_owned()) });
    };
    if tag.handle == "!" && tag.suffix.is_empty() {
        return Ok(Value::String(text.to_owned()));
    }
    if !tag.is_yaml_core_schema() {
        return Err(format!("the tag `{tag}` is not supported"));
    }
    let resolved = match tag.suffix.as_str() {
        "str" => return Ok(Value::String(text.to_owned())),
        "null" | "bool" | "int" | "float" => resolve_plain(text)?,
        _ => return Err(format!("the tag `!!{}` is not supported", tag.suffix)),
    };
    let fits = match tag.suffix.as_str() {
        "null" => resolved.is_null(),
        "bool" => resolved.is_boolean(),
        "int" => resolved.is_i64() || resolved.is_u64(),
        _ => resolved.is_number(),
    };
    if fits { Ok(resolved) } else { Err(format!("`{text}` is not a valid `!!{}`", tag.suffix)) }
}

fn resolve_plain(text: &str) -> Result<Value, String> {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Ok(Value::Null),
        "true" | "True" | "TRUE" => return Ok(Value::Bool(true)),
        "false" | "False" | "FALSE" => return Ok(Value::Bool(false)),
        _ => {}
    }
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    if matches!(unsigned, ".inf" | ".Inf" | ".INF") || matches!(text, ".nan" | ".NaN" | ".NAN") {
        return Err(format!("`{text}` is a YAML number JSON cannot hold; quote it if a string is meant"));
    }
    let out_of_range = || format!("the number `{text}` is out of range; quote it if a string is meant");
    if let Some(digits) = text.strip_prefix("0o")
        && !digits.is_empty()
        && digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
    {
        return u64::from_str_radix(digits, 8).map(Value::from).map_err(|_| out_of_range());
    }
    if let Some(digits) = text.strip_prefix("0x")
        && !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return u64::from_str_radix(digits, 16).map(Value::from).map_err(|_| out_of_range());
    }
    if !unsigned.is_empty() && unsigned.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(number) = text.parse::<i64>() {
            return Ok(Value::from(number));
        }
        if let Ok(number) = text.parse::<u64>() {
            return Ok(Value::from(number));
        }
        return Err(out_of_range());
    }
    if is_float(unsigned) {
        return match text.parse::<f64>().ok().and_then(Number::from_f64) {
            Some(number) => Ok(Value::Number(number)),
            None => Err(out_of_range()),
        };
    }
    Ok(Value::String(text.to_owned()))
}

/// `(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`, the core schema's float without sign.
fn is_float(text: &str) -> bool {
    let digits = |s: &str| s.bytes().take_while(u8::is_ascii_digit).count();
    let integral = digits(text);
    let mut rest = &text[integral..];
    let mut fraction = 0;
    if let Some(after) = rest.strip_prefix('.') {
        fraction = digits(after);
        rest = &after[fraction..];
    } else if integral == 0 {
        return false;
    }
    if integral == 0 && fraction == 0 {
        return false;
    }
    if let Some(exponent) = rest.strip_prefix(['e', 'E']) {
        let exponent = exponent.strip_prefix(['-', '+']).unwrap_or(exponent);
        return !exponent.is_empty() && digits(exponent) == exponent.len();
    }
    rest.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(text: &str) -> Parsed {
        match parse("t.yaml", text.as_bytes(), &ParseLimits::default()) {
            Ok(parsed) => parsed,
            Err(problems) => panic!("{text:?} does not parse: {problems:?}"),
        }
    }

    fn fails(text: &str) -> Vec<Diagnostic> {
        parse("t.yaml", text.as_bytes(), &ParseLimits::default()).expect_err("must fail")
    }

    #[test]
    fn core_schema_scalars() {
        let parsed =
            ok("a: ~\nb: True\nc: 0x1F\nd: 0o17\ne: -12\nf: 1.5e3\ng: .5\nh: '12'\ni: 1.0.3\nj: on\nk:\nl: !!str 5\n");
        assert_eq!(
            parsed.value,
            json!({"a": null, "b": true, "c": 31, "d": 15, "e": -12, "f": 1500.0, "g": 0.5, "h": "12",
                   "i": "1.0.3", "j": "on", "k": null, "l": "5"})
        );
    }

    #[test]
    fn spans_count_characters_and_keys_have_their_own() {
        let parsed = ok("title: \"héllo wörld\"\ndo:\n  - ünïcode: { set: 1 }\n");
        let key = parsed.spans.key("/do/0/ünïcode").expect("key span");
        assert_eq!((key.line, key.column, key.end_column), (3, 5, 12));
        let value = parsed.spans.value("/do/0/ünïcode/set").expect("value span");
        assert_eq!((value.line, value.column), (3, 21));
    }

    #[test]
    fn nearest_walks_up_to_a_known_ancestor() {
        let parsed = ok("a:\n  b: 1\n");
        assert_eq!(parsed.spans.nearest("/a/b/c/d").line, 2);
        assert_eq!(parsed.spans.nearest("/zzz"), parsed.spans.value("").expect("root"));
    }

    #[test]
    fn merge_keys_merge_and_explicit_keys_win() {
        let parsed = ok("base: &b { x: 1, y: 2 }\nother: &o { z: 3 }\nm:\n  <<: [*b, *o]\n  y: 9\nn: { <<: [*o] }\n");
        assert_eq!(parsed.value["m"], json!({"x": 1, "y": 9, "z": 3}));
        assert_eq!(parsed.spans.value("/n/z").expect("merged from a one-item list").line, 2);
        assert_eq!(parsed.spans.value("/m/x").expect("merged span").line, 1);
        assert_eq!(parsed.spans.value("/m/y").expect("explicit span").line, 5);
        assert!(parsed.spans.value("/m/<<").is_none());
    }

    #[test]
    fn aliases_copy_the_anchored_spans() {
        let parsed = ok("a: &x\n  k: v\nb: *x\n");
        assert_eq!(parsed.value["b"], json!({"k": "v"}));
        assert_eq!(parsed.spans.value("/b").expect("alias").line, 3);
        assert_eq!(parsed.spans.value("/b/k").expect("copied").line, 2);
    }

    #[test]
    fn duplicate_keys_are_all_reported() {
        let problems = fails("a: 1\nb: 2\na: 3\nc:\n  d: 1\n  d: 2\n");
        let found: Vec<_> = problems.iter().map(|p| (p.code, p.line, p.pointer.as_str())).collect();
        assert_eq!(found, [(codes::DUPLICATE_KEY, 3, "/a"), (codes::DUPLICATE_KEY, 6, "/c/d")]);
    }

    #[test]
    fn non_string_keys_are_refused() {
        let problems = fails("200: ok\n");
        assert_eq!(problems[0].code, codes::NON_STRING_KEY);
        let problems = fails("? [a, b]\n: c\n");
        assert_eq!(problems[0].code, codes::NON_STRING_KEY);
    }

    #[test]
    fn custom_tags_and_several_documents_are_refused() {
        assert_eq!(fails("a: !secret x\n")[0].code, codes::UNSUPPORTED_YAML);
        assert_eq!(fails("a: 1\n---\nb: 2\n")[0].code, codes::UNSUPPORTED_YAML);
        assert_eq!(fails("a: .inf\n")[0].code, codes::UNSUPPORTED_YAML);
        assert_eq!(fails("a: !!int x\n")[0].code, codes::UNSUPPORTED_YAML);
    }

    #[test]
    fn recursive_alias_is_refused() {
        let problems = fails("a: &x [1, *x]\n");
        assert_eq!(problems[0].code, codes::UNSUPPORTED_YAML);
    }

    #[test]
    fn json_is_yaml() {
        let parsed = ok("{\"document\": {\"dsl\": \"1.0.3\"}, \"do\": [{\"a\": {\"set\": {\"x\": [1, 2.5, null]}}}]}");
        assert_eq!(parsed.value["do"][0]["a"]["set"]["x"], json!([1, 2.5, null]));
    }

    #[test]
    fn a_byte_order_mark_and_crlf_line_ends_are_read() {
        let parsed = ok("\u{feff}a: 1\r\nb:\r\n  c: x\r\n");
        assert_eq!(parsed.value, json!({"a": 1, "b": {"c": "x"}}));
        let c = parsed.spans.value("/b/c").expect("span");
        assert_eq!((c.line, c.column), (3, 6));
    }

    #[test]
    fn empty_input_is_null() {
        assert_eq!(ok("").value, Value::Null);
        assert_eq!(ok("# only a comment\n").value, Value::Null);
    }
}
