//! Pictures of a compiled definition: a Mermaid flowchart ([`mermaid`]) for documentation and
//! reviews, and a self-contained SVG ([`svg`]) for places that cannot run Mermaid.
//!
//! Both draw one graph, built once from the [`Program`]: a start, an end, one vertex per task,
//! and the flow the interpreter follows. A task goes to the next task of its list unless `then`
//! says otherwise; `exit` goes to whatever follows the enclosing list, `end` to the end. A
//! composite task (`do`, `for`, `fork`, `try`, `listen` with a `foreach` body) becomes a frame
//! around its lists, entered through a small head vertex, so a jump to it lands on its head and
//! a loop's body returns to it. Labels show what is written literally; runtime expressions
//! appear shortened, and values only known at run time not at all.
//!
//! The SVG is laid out by hand, deterministically: one row per vertex in document order, nested
//! lists indented inside their frame, an edge to the row just below drawn straight down, every
//! other edge (jumps, loops, catches) routed in a lane on the right.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::time::Duration;

use serde_json::Value;

use crate::model::{
    Call, Filter, Foreach, Kind, ListId, Listen, Node, Program, Run, Sla, Strategy, Then, Try, Until, WaitFor,
};

/// A Mermaid `flowchart TD` of the definition.
pub fn mermaid(program: &Program) -> String {
    Diagram::of(program).mermaid()
}

/// A self-contained SVG of the definition: no scripts, no external resources.
pub fn svg(program: &Program) -> String {
    Diagram::of(program).svg()
}

// ---- the graph -------------------------------------------------------------------------------

const START: usize = 0;
const END: usize = 1;

/// The longest a label line gets before it is shortened.
const LINE_MAX: usize = 48;

/// What starts the line of a task's SLA.
const CLOCK: &str = "⏱ ";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    Terminal,
    Task,
    Human,
    Decision,
    /// A composite's head, or a fork's join.
    Control,
}

#[derive(Debug)]
struct Vertex {
    /// `[A-Za-z0-9_]` only: derived from the task's JSON pointer.
    id: String,
    /// Plain text, one entry per line; each output escapes it its own way.
    lines: Vec<String>,
    shape: Shape,
    sla: bool,
}

#[derive(Debug)]
enum Item {
    Vertex(usize),
    Frame(Frame),
}

#[derive(Debug)]
struct Frame {
    id: String,
    title: String,
    /// A catch handler or an escalation: off the main path, drawn dashed.
    side: bool,
    items: Vec<Item>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stroke {
    Solid,
    Dashed,
}

#[derive(Debug)]
struct Edge {
    from: usize,
    to: usize,
    label: String,
    stroke: Stroke,
}

#[derive(Debug)]
struct Diagram {
    /// `namespace/name@version`.
    title: String,
    vertices: Vec<Vertex>,
    /// What is drawn, top to bottom.
    items: Vec<Item>,
    edges: Vec<Edge>,
}

impl Diagram {
    fn of(program: &Program) -> Self {
        let document = &program.document;
        let title = clean(&format!("{}/{}@{}", document.namespace, document.name, document.version));
        let mut builder = Builder { program, vertices: Vec::new(), edges: Vec::new(), bases: BTreeSet::new() };
        let mut start = vec!["start".to_owned()];
        if let Some(sla) = &program.sla {
            start.push(sla_line(sla, program.definition.get("sla")));
        }
        builder.add("wf_start".to_owned(), start, Shape::Terminal, program.sla.is_some());
        builder.add("wf_end".to_owned(), vec!["end".to_owned()], Shape::Terminal, false);

        let root = builder.scope(program.root, Some(END), false);
        builder.edge(START, root.entry(), "", Stroke::Solid);
        let mut items = vec![Item::Vertex(START)];
        items.extend(builder.fill(&root));
        if let Some(sla) = &program.sla {
            let base = builder.base("/sla");
            items.extend(builder.escalations(sla, START, &base));
        }
        items.push(Item::Vertex(END));
        Diagram { title, vertices: builder.vertices, items, edges: builder.edges }
    }
}

struct Builder<'p> {
    program: &'p Program,
    vertices: Vec<Vertex>,
    edges: Vec<Edge>,
    /// The id stems handed out so far, so each is used once.
    bases: BTreeSet<String>,
}

/// One task list being drawn: its tasks, their head vertices, and where they go when done.
struct Scope<'p> {
    tasks: Vec<&'p Node>,
    heads: Vec<usize>,
    bases: Vec<String>,
    /// What follows the list: the enclosing task's successor, a loop's head, a fork's join;
    /// `None` for an escalation rung, which leads nowhere.
    after: Option<usize>,
    /// Fork branches run side by side: each goes to `after` when done.
    parallel: bool,
}

impl Scope<'_> {
    fn entry(&self) -> Option<usize> {
        self.heads.first().copied().or(self.after)
    }

    /// Where the task at `index` goes after `then`, as the interpreter reads it.
    fn target(&self, index: usize, then: &Then) -> Option<usize> {
        match then {
            Then::Continue if self.parallel => self.after,
            Then::Continue => self.heads.get(index + 1).copied().or(self.after),
            Then::Exit => self.after,
            Then::End => Some(END),
            Then::Goto(name) => {
                self.tasks.iter().position(|task| task.name == *name).and_then(|at| self.heads.get(at).copied())
            }
        }
    }
}

impl<'p> Builder<'p> {
    fn add(&mut self, id: String, lines: Vec<String>, shape: Shape, sla: bool) -> usize {
        self.vertices.push(Vertex { id, lines, shape, sla });
        self.vertices.len() - 1
    }

    fn edge(&mut self, from: usize, to: Option<usize>, label: &str, stroke: Stroke) {
        if let Some(to) = to {
            self.edges.push(Edge { from, to, label: label.to_owned(), stroke });
        }
    }

    /// An id stem from a JSON pointer: `/do/0/get-pet` gives `_do_0_get_pet`. Two pointers that
    /// sanitize alike get distinct stems, numbered in document order.
    fn base(&mut self, pointer: &str) -> String {
        let stem: String = pointer.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
        let mut base = stem.clone();
        let mut n = 2;
        while self.bases.contains(&base) {
            base = format!("{stem}_{n}");
            n += 1;
        }
        self.bases.insert(base.clone());
        base
    }

    /// Creates the head vertices of a list's tasks; [`Builder::fill`] draws the tasks.
    fn scope(&mut self, list: ListId, after: Option<usize>, parallel: bool) -> Scope<'p> {
        let program = self.program;
        let tasks: Vec<&'p Node> = program
            .lists
            .get(list as usize)
            .map(|list| list.entries.iter().filter_map(|&id| program.nodes.get(id as usize)).collect())
            .unwrap_or_default();
        let mut heads = Vec::with_capacity(tasks.len());
        let mut bases = Vec::with_capacity(tasks.len());
        for node in &tasks {
            let base = self.base(&node.reference);
            let (lines, shape) = describe(node);
            heads.push(self.add(format!("t{base}"), lines, shape, node.sla.is_some()));
            bases.push(base);
        }
        Scope { tasks, heads, bases, after, parallel }
    }

    fn fill(&mut self, scope: &Scope<'p>) -> Vec<Item> {
        let mut items = Vec::new();
        for index in 0..scope.tasks.len() {
            let mut task = self.task(scope, index);
            // Each fork branch gets a frame of its own, composite or not.
            if scope.parallel && !matches!(task.as_slice(), [Item::Frame(_)]) {
                let id = format!("b{}", scope.bases.get(index).map_or("", String::as_str));
                task = vec![Item::Frame(Frame { id, title: "branch".to_owned(), side: false, items: task })];
            }
            items.extend(task);
        }
        items
    }

    /// The task at `index` and its edges: its own item, then its escalation frames.
    fn task(&mut self, scope: &Scope<'p>, index: usize) -> Vec<Item> {
        let (Some(&node), Some(&head), Some(base)) =
            (scope.tasks.get(index), scope.heads.get(index), scope.bases.get(index))
        else {
            return Vec::new();
        };
        let next = scope.target(index, &node.then);
        let frame = |kind: &str, items: Vec<Item>| {
            Item::Frame(Frame {
                id: format!("s{base}"), title: format!("{} · {kind}", name(node)), side: false, items
            })
        };
        let item = match &node.kind {
            Kind::Switch(cases) => {
                let mut default = false;
                for (i, case) in cases.iter().enumerate() {
                    let label = match &case.when {
                        None => {
                            default = true;
                            short(&case.name)
                        }
                        Some(_) => {
                            let when = node
                                .definition
                                .pointer(&format!("/switch/{i}/{}/when", pointer_token(&case.name)))
                                .and_then(Value::as_str)
                                .map(expression)
                                .unwrap_or_default();
                            short(&format!("{}: {when}", case.name))
                        }
                    };
                    self.edge(head, scope.target(index, &case.then), &label, Stroke::Solid);
                }
                if !default {
                    self.edge(head, next, "no match", Stroke::Solid);
                }
                Item::Vertex(head)
            }
            Kind::Do(body) => {
                let body = self.scope(*body, next, false);
                self.edge(head, body.entry(), "", Stroke::Solid);
                frame("do", self.with_head(head, &body))
            }
            Kind::For(for_) => {
                let body = self.scope(for_.body, Some(head), false);
                self.edge(head, body.entry(), "each", Stroke::Solid);
                self.edge(head, next, "done", Stroke::Solid);
                frame("for", self.with_head(head, &body))
            }
            Kind::Listen(Listen { foreach: Some(Foreach { body: Some(body), .. }), .. }) => {
                let body = self.scope(*body, Some(head), false);
                self.edge(head, body.entry(), "each event", Stroke::Solid);
                self.edge(head, next, "done", Stroke::Solid);
                frame("listen", self.with_head(head, &body))
            }
            Kind::Fork { branches, compete } => {
                let join = if *compete { "first wins" } else { "join" };
                let join = self.add(format!("j{base}"), vec![join.to_owned()], Shape::Control, false);
                let branches = self.scope(*branches, Some(join), true);
                if branches.heads.is_empty() {
                    self.edge(head, Some(join), "", Stroke::Solid);
                }
                for &branch in &branches.heads {
                    self.edge(head, Some(branch), "", Stroke::Solid);
                }
                let mut items = self.with_head(head, &branches);
                items.push(Item::Vertex(join));
                self.edge(join, next, "", Stroke::Solid);
                frame("fork", items)
            }
            Kind::Try(try_) => {
                let body = self.scope(try_.body, next, false);
                self.edge(head, body.entry(), "", Stroke::Solid);
                let mut items = self.with_head(head, &body);
                let label = catch_label(node, try_);
                match try_.handler {
                    Some(handler) => {
                        let handler = self.scope(handler, next, false);
                        self.edge(head, handler.entry(), &label, Stroke::Dashed);
                        let handler = self.fill(&handler);
                        let id = format!("c{base}");
                        items.push(Item::Frame(Frame { id, title: "catch".to_owned(), side: true, items: handler }));
                    }
                    None => self.edge(head, next, &label, Stroke::Dashed),
                }
                frame("try", items)
            }
            _ => {
                self.edge(head, next, "", Stroke::Solid);
                Item::Vertex(head)
            }
        };
        let mut items = vec![item];
        if let Some(sla) = &node.sla {
            items.extend(self.escalations(sla, head, base));
        }
        items
    }

    fn with_head(&mut self, head: usize, body: &Scope<'p>) -> Vec<Item> {
        let mut items = vec![Item::Vertex(head)];
        items.extend(self.fill(body));
        items
    }

    /// An SLA's escalation rungs: frames reached by a dashed edge from what the SLA covers.
    fn escalations(&mut self, sla: &Sla, from: usize, base: &str) -> Vec<Item> {
        let mut items = Vec::new();
        for (i, rung) in sla.escalate.iter().enumerate() {
            let at = threshold(&rung.after);
            let body = self.scope(rung.body, None, false);
            self.edge(from, body.entry(), &format!("SLA {at}"), Stroke::Dashed);
            let title = format!("escalation at {at}");
            items.push(Item::Frame(Frame { id: format!("e{i}{base}"), title, side: true, items: self.fill(&body) }));
        }
        items
    }
}

// ---- labels ----------------------------------------------------------------------------------

/// A vertex's lines and shape. A composite's head shows what it does; its frame shows its name.
fn describe(node: &Node) -> (Vec<String>, Shape) {
    let definition = &node.definition;
    let text = |pointer: &str| definition.pointer(pointer).and_then(Value::as_str);
    let mut shape = Shape::Task;
    let mut lines = Vec::new();
    match &node.kind {
        Kind::Do(_) => {
            shape = Shape::Control;
            lines.push("do".to_owned());
        }
        Kind::For(for_) => {
            shape = Shape::Control;
            let over = text("/for/in").map(expression).unwrap_or_default();
            lines.push(short(&format!("for each {} in {over}", for_.each)));
            if let Some(condition) = text("/while") {
                lines.push(short(&format!("while {}", expression(condition))));
            }
        }
        Kind::Fork { compete, .. } => {
            shape = Shape::Control;
            lines.push(if *compete { "fork, first branch wins" } else { "fork" }.to_owned());
        }
        Kind::Try(_) => {
            shape = Shape::Control;
            lines.push("try".to_owned());
        }
        Kind::Switch(_) => {
            shape = Shape::Decision;
            lines.push(name(node));
            lines.push("switch".to_owned());
        }
        kind => {
            lines.push(name(node));
            if matches!(kind, Kind::Call(Call::HumanTask { .. })) {
                shape = Shape::Human;
            }
            lines.extend(what(node));
        }
    }
    if let Some(condition) = text("/if") {
        lines.push(short(&format!("if {}", expression(condition))));
    }
    if let Some(timeout) = node.timeout {
        lines.push(format!("timeout {}", iso(timeout)));
    }
    if let Some(sla) = &node.sla {
        lines.push(sla_line(sla, definition.get("sla")));
    }
    (lines, shape)
}

/// What a leaf task does, from what is written.
fn what(node: &Node) -> Vec<String> {
    let definition = &node.definition;
    let text = |pointer: &str| definition.pointer(pointer).and_then(Value::as_str);
    let literal = |pointer: &str| text(pointer).filter(|t| !is_expression(t));
    let mut lines = Vec::new();
    match &node.kind {
        Kind::Call(call) => {
            let function = text("/call").unwrap_or_default();
            lines.push(short(&format!("call {function}")));
            match call {
                Call::HumanTask { .. } => {
                    if let Some(title) = literal("/with/title") {
                        lines.push(short(&format!("\"{title}\"")));
                    }
                    if let Some(outcomes) = literals(definition.pointer("/with/outcomes")) {
                        lines.push(short(&format!("outcomes: {}", outcomes.join(" / "))));
                    }
                    if let Some(assign) = definition.pointer("/with/assign").and_then(Value::as_object) {
                        let parts: Vec<String> = assign
                            .iter()
                            .map(|(key, value)| match value {
                                Value::String(s) => format!("{key} {}", expression(s)),
                                other => format!("{key} {}", literals(Some(other)).unwrap_or_default().join(", ")),
                            })
                            .collect();
                        lines.push(short(&format!("assign: {}", parts.join(", "))));
                    }
                }
                Call::Activity { name, .. } if name == "http" => {
                    let method = literal("/with/method").unwrap_or_default().to_uppercase();
                    let endpoint = literal("/with/endpoint").or_else(|| literal("/with/endpoint/uri"));
                    if let Some(endpoint) = endpoint {
                        lines.push(short(format!("{method} {endpoint}").trim()));
                    } else if !method.is_empty() {
                        lines.push(method);
                    }
                }
                Call::Activity { name, .. } if name == "openapi" => {
                    lines.extend(literal("/with/operationId").map(short));
                }
                _ => {}
            }
        }
        Kind::Emit { .. } => match literal("/emit/event/with/type") {
            Some(event) => lines.push(short(&format!("emit {event}"))),
            None => lines.push("emit".to_owned()),
        },
        Kind::Listen(listen) => {
            lines.push(short(&strategy(&listen.strategy)));
            if let Strategy::Any { until: Some(until), .. } = &listen.strategy {
                lines.push(match until {
                    Until::Expr(_) => {
                        short(&format!("until {}", text("/listen/to/until").map(expression).unwrap_or_default()))
                    }
                    Until::Events(events) => short(&format!("until {}", strategy(events))),
                });
            }
        }
        Kind::Raise(_) => {
            let error = text("/raise/error")
                .or_else(|| literal("/raise/error/title"))
                .or_else(|| literal("/raise/error/type").map(|t| t.rsplit('/').next().unwrap_or(t)));
            lines.push(short(&format!("raise {}", error.unwrap_or_default())).trim_end().to_owned());
        }
        Kind::Run(Run::Workflow { definition: target, .. }) => lines.push(short(&format!("run workflow {target}"))),
        Kind::Run(Run::Refused(_)) => lines.extend(run_kind(definition)),
        Kind::Set(_) => match definition.get("set") {
            Some(Value::Object(fields)) => {
                let keys: Vec<&str> = fields.keys().map(String::as_str).collect();
                lines.push(short(&format!("set {}", keys.join(", "))));
            }
            Some(Value::String(s)) => lines.push(short(&format!("set {}", expression(s)))),
            _ => lines.push("set".to_owned()),
        },
        Kind::Wait(wait) => lines.push(match wait {
            WaitFor::Fixed(duration) => format!("wait {}", iso(*duration)),
            WaitFor::Expr(_) => short(&format!("wait {}", text("/wait").map(expression).unwrap_or_default())),
        }),
        Kind::Do(_) | Kind::For(_) | Kind::Fork { .. } | Kind::Switch(_) | Kind::Try(_) => {}
    }
    // `run: shell` allowed by the administrator compiles to an activity: say what was written.
    if definition.get("run").is_some() && !matches!(node.kind, Kind::Run(_)) {
        lines = run_kind(definition);
    }
    lines
}

/// `run container` and the like, with the image or command when literal.
fn run_kind(definition: &Value) -> Vec<String> {
    let Some(run) = definition.get("run") else { return Vec::new() };
    let kind = ["container", "shell", "script", "workflow"].into_iter().find(|k| run.get(k).is_some());
    let kind = kind.unwrap_or("process");
    let mut lines = vec![format!("run {kind}")];
    let detail = ["image", "command", "language"]
        .into_iter()
        .find_map(|key| run.get(kind).and_then(|spec| spec.get(key)).and_then(Value::as_str));
    lines.extend(detail.filter(|d| !is_expression(d)).map(short));
    lines
}

fn strategy(strategy: &Strategy) -> String {
    let types = |filters: &[Filter]| {
        let types: Vec<&str> = filters.iter().map(|f| f.event_type.as_deref().unwrap_or("…")).collect();
        if types.is_empty() { "any event".to_owned() } else { types.join(", ") }
    };
    match strategy {
        Strategy::One(filter) => format!("listen to one: {}", types(std::slice::from_ref(filter))),
        Strategy::All(filters) => format!("listen to all: {}", types(filters)),
        Strategy::Any { filters, .. } => format!("listen to any: {}", types(filters)),
    }
}

fn catch_label(node: &Node, try_: &Try) -> String {
    let mut parts = vec!["catch".to_owned()];
    if let Some(kind) = node.definition.pointer("/catch/errors/with/type").and_then(Value::as_str) {
        parts.push(kind.rsplit('/').next().unwrap_or(kind).to_owned());
    }
    if let Some(status) = node.definition.pointer("/catch/errors/with/status") {
        parts.push(format!("status {status}"));
    }
    if let Some(retry) = &try_.retry {
        parts.push(match retry.max_attempts {
            Some(n) => format!("retry up to {n}"),
            None => "retry".to_owned(),
        });
    }
    short(&parts.join(" · "))
}

fn sla_line(sla: &Sla, written: Option<&Value>) -> String {
    let within = match &sla.within {
        WaitFor::Fixed(duration) => iso(*duration),
        WaitFor::Expr(_) => {
            written.and_then(|s| s.get("within")).and_then(Value::as_str).map(expression).unwrap_or_default()
        }
    };
    let calendar = sla.calendar.as_deref().map(|c| format!(" · {c}")).unwrap_or_default();
    short(&format!("{CLOCK}SLA {within}{calendar}"))
}

fn threshold(threshold: &baton_sla::Threshold) -> String {
    match threshold {
        baton_sla::Threshold::Percent(p) => format!("{p}%"),
        baton_sla::Threshold::After(duration) => iso(*duration),
    }
}

/// A duration in ISO 8601, as definitions write them.
fn iso(duration: Duration) -> String {
    let total = duration.as_secs();
    let (days, hours, minutes, seconds) = (total / 86_400, total % 86_400 / 3_600, total % 3_600 / 60, total % 60);
    let millis = duration.subsec_millis();
    let mut out = "P".to_owned();
    if days > 0 {
        let _ = write!(out, "{days}D");
    }
    if hours + minutes + seconds + u64::from(millis) > 0 || days == 0 {
        out.push('T');
        if hours > 0 {
            let _ = write!(out, "{hours}H");
        }
        if minutes > 0 {
            let _ = write!(out, "{minutes}M");
        }
        if millis > 0 {
            let fraction = format!("{millis:03}");
            let _ = write!(out, "{seconds}.{}S", fraction.trim_end_matches('0'));
        } else if seconds > 0 || hours + minutes == 0 {
            let _ = write!(out, "{seconds}S");
        }
    }
    out
}

fn name(node: &Node) -> String {
    short(&node.name)
}

/// A list of literal strings (or scalars), as written.
fn literals(value: Option<&Value>) -> Option<Vec<String>> {
    let items = value?.as_array()?;
    Some(
        items
            .iter()
            .map(|item| match item {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect(),
    )
}

fn is_expression(text: &str) -> bool {
    crate::expr::strip(text).is_some()
}

/// An expression field without its `${ }`.
fn expression(text: &str) -> String {
    crate::expr::strip(text).unwrap_or(text).trim().to_owned()
}

/// A JSON pointer token for a case name.
fn pointer_token(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

/// Whitespace collapsed, control characters (and the two XML never allows) replaced.
fn clean(text: &str) -> String {
    let text: String = text
        .chars()
        .map(|c| match c {
            '\u{FFFE}' | '\u{FFFF}' => '\u{FFFD}',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect();
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// [`clean`], then cut to [`LINE_MAX`] characters.
fn short(text: &str) -> String {
    let text = clean(text);
    if text.chars().count() <= LINE_MAX {
        return text;
    }
    let mut cut: String = text.chars().take(LINE_MAX - 1).collect();
    cut.push('…');
    cut
}

// ---- Mermaid ---------------------------------------------------------------------------------

impl Diagram {
    fn mermaid(&self) -> String {
        let mut out = String::from("flowchart TD\n");
        let _ = writeln!(out, "  %% {}", self.title);
        let mut dashed = Vec::new();
        self.mermaid_items(&mut out, &self.items, 1, &mut dashed);
        for edge in &self.edges {
            let (Some(from), Some(to)) = (self.vertices.get(edge.from), self.vertices.get(edge.to)) else { continue };
            let arrow = match edge.stroke {
                Stroke::Solid => "-->",
                Stroke::Dashed => "-.->",
            };
            if edge.label.is_empty() {
                let _ = writeln!(out, "  {} {arrow} {}", from.id, to.id);
            } else {
                let _ = writeln!(out, "  {} {arrow}|\"{}\"| {}", from.id, mermaid_text(&edge.label), to.id);
            }
        }
        out.push_str("  classDef terminal fill:#1f2937,stroke:#1f2937,color:#ffffff\n");
        out.push_str("  classDef human fill:#fff4e0,stroke:#b45309\n");
        out.push_str("  classDef control fill:#e5e7eb,stroke:#6b7280\n");
        out.push_str("  classDef sla stroke:#c2410c,stroke-width:2px\n");
        let ids = |keep: &dyn Fn(&Vertex) -> bool| {
            self.vertices.iter().filter(|v| keep(v)).map(|v| v.id.as_str()).collect::<Vec<_>>().join(",")
        };
        for (class, members) in [
            ("terminal", ids(&|v| v.shape == Shape::Terminal)),
            ("human", ids(&|v| v.shape == Shape::Human)),
            ("control", ids(&|v| v.shape == Shape::Control)),
            ("sla", ids(&|v| v.sla)),
        ] {
            if !members.is_empty() {
                let _ = writeln!(out, "  class {members} {class}");
            }
        }
        for id in dashed {
            let _ = writeln!(out, "  style {id} stroke-dasharray: 5 5");
        }
        out
    }

    fn mermaid_items<'a>(&'a self, out: &mut String, items: &'a [Item], depth: usize, dashed: &mut Vec<&'a str>) {
        let indent = "  ".repeat(depth);
        for item in items {
            match item {
                Item::Vertex(index) => {
                    let Some(vertex) = self.vertices.get(*index) else { continue };
                    let (open, close) = match vertex.shape {
                        Shape::Terminal => ("((", "))"),
                        Shape::Task => ("[", "]"),
                        Shape::Human => ("([", "])"),
                        Shape::Decision => ("{", "}"),
                        Shape::Control => ("[[", "]]"),
                    };
                    let label: Vec<String> = vertex.lines.iter().map(|line| mermaid_text(line)).collect();
                    let _ = writeln!(out, "{indent}{}{open}\"{}\"{close}", vertex.id, label.join("<br/>"));
                }
                Item::Frame(frame) => {
                    let _ = writeln!(out, "{indent}subgraph {} [\"{}\"]", frame.id, mermaid_text(&frame.title));
                    self.mermaid_items(out, &frame.items, depth + 1, dashed);
                    let _ = writeln!(out, "{indent}end");
                    if frame.side {
                        dashed.push(&frame.id);
                    }
                }
            }
        }
    }
}

/// Text for inside a quoted Mermaid label: what Mermaid would read as syntax, markup or an
/// entity becomes an entity code (`#quot;`, `#35;`...).
fn mermaid_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in clean(text).chars() {
        match c {
            '"' => out.push_str("#quot;"),
            '#' => out.push_str("#35;"),
            '&' => out.push_str("#amp;"),
            '<' => out.push_str("#lt;"),
            '>' => out.push_str("#gt;"),
            '%' | '[' | ']' | '{' | '}' | '(' | ')' | '|' | '`' | ';' => {
                let _ = write!(out, "#{};", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

// ---- SVG -------------------------------------------------------------------------------------

/// Layout in pixels. Text is monospace, so a character's width is known.
const FONT: i64 = 12;
/// A character's advance at [`FONT`], in tenths of a pixel.
const CHAR_TENTHS: i64 = 72;
const LINE: i64 = 15;
const PAD_X: i64 = 10;
const PAD_Y: i64 = 8;
/// Between one row and the next.
const GAP: i64 = 30;
/// How far a nested list moves right.
const INDENT: i64 = 28;
const FRAME_HEAD: i64 = 24;
const FRAME_PAD: i64 = 10;
/// How far a frame's border reaches beyond the frame it holds.
const FRAME_STEP: i64 = 12;
/// Between two edge lanes.
const LANE: i64 = 14;
const MARGIN: i64 = 16;
const INK: &str = "#475569";

impl Diagram {
    fn svg(&self) -> String {
        let layout = Layout::of(self);
        let routes = Routes::of(self, &layout);
        let mut extent = routes.right;
        let mut frames = String::new();
        for placed in &layout.frames {
            extent = extent.max(frame_svg(&mut frames, placed, &layout));
        }
        let (mut lines, mut labels) = (String::new(), String::new());
        for (index, edge) in self.edges.iter().enumerate() {
            extent = extent.max(routes.draw(&mut lines, &mut labels, self, &layout, index, edge));
        }
        let mut shapes = String::new();
        for &vertex in &layout.order {
            if let (Some(v), Some(Some(rect))) = (self.vertices.get(vertex), layout.boxes.get(vertex)) {
                vertex_svg(&mut shapes, v, rect);
            }
        }

        let (width, height) = (extent + MARGIN, layout.bottom + MARGIN);
        let mut out = String::new();
        let size = format!(r#"width="{width}" height="{height}" viewBox="0 0 {width} {height}""#);
        let font = format!(r#"font-family="monospace" font-size="{FONT}""#);
        let _ = writeln!(out, r#"<svg xmlns="http://www.w3.org/2000/svg" {size} {font}>"#);
        let _ = writeln!(out, "<title>{}</title>", xml(&self.title));
        let arrow = r#"viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" markerHeight="8" orient="auto""#;
        let _ = writeln!(
            out,
            r#"<defs><marker id="baton-arrow" {arrow}><path d="M0,0 L10,5 L0,10 z" fill="{INK}"/></marker></defs>"#
        );
        let _ = writeln!(out, r##"<rect width="{width}" height="{height}" fill="#ffffff"/>"##);
        for part in [frames, lines, shapes, labels] {
            out.push_str(&part);
        }
        out.push_str("</svg>\n");
        out
    }
}

fn text_width(text: &str) -> i64 {
    // Wide characters (CJK, emoji) take two cells.
    let cells: i64 = text.chars().map(|c| if u32::from(c) >= 0x1100 { 2 } else { 1 }).sum();
    cells * CHAR_TENTHS / 10
}

#[derive(Clone, Copy, Debug, Default)]
struct Rect {
    x: i64,
    y: i64,
    w: i64,
    h: i64,
}

impl Rect {
    fn cx(&self) -> i64 {
        self.x + self.w / 2
    }

    fn bottom(&self) -> i64 {
        self.y + self.h
    }
}

#[derive(Debug)]
struct FrameBox<'a> {
    frame: &'a Frame,
    depth: i64,
    top: i64,
    bottom: i64,
}

/// Where everything goes: rows top to bottom in document order, each vertex centred on its
/// depth's axis so that a straight run stays straight, frames around nested lists.
#[derive(Debug, Default)]
struct Layout<'a> {
    /// Per vertex: its box, once placed, and its depth.
    boxes: Vec<Option<Rect>>,
    depths: Vec<i64>,
    /// Per vertex: its row.
    rows: Vec<Option<usize>>,
    /// The placed vertices, top to bottom.
    order: Vec<usize>,
    frames: Vec<FrameBox<'a>>,
    max_depth: i64,
    /// Where the next row goes while placing; then the bottom of the last.
    y: i64,
    bottom: i64,
    /// The right border of the innermost frames.
    inner_right: i64,
}

impl<'a> Layout<'a> {
    fn of(diagram: &'a Diagram) -> Self {
        let count = diagram.vertices.len();
        let mut layout = Layout {
            boxes: vec![None; count],
            depths: vec![0; count],
            rows: vec![None; count],
            y: MARGIN,
            ..Default::default()
        };
        layout.place(diagram, &diagram.items, 0);
        layout.bottom = layout.y - GAP;
        let widest = layout.boxes.iter().flatten().map(|r| r.w).max().unwrap_or(0);
        for (rect, depth) in layout.boxes.iter_mut().zip(&layout.depths) {
            if let Some(rect) = rect {
                rect.x = MARGIN + depth * INDENT + (widest - rect.w) / 2;
            }
        }
        layout.inner_right = MARGIN + layout.max_depth * INDENT + widest + FRAME_STEP;
        layout
    }

    fn place(&mut self, diagram: &Diagram, items: &'a [Item], depth: i64) {
        self.max_depth = self.max_depth.max(depth);
        for item in items {
            match item {
                Item::Vertex(index) => {
                    let Some(vertex) = diagram.vertices.get(*index) else { continue };
                    let (w, h) = size(vertex);
                    if let (Some(rect), Some(at), Some(row)) =
                        (self.boxes.get_mut(*index), self.depths.get_mut(*index), self.rows.get_mut(*index))
                    {
                        *rect = Some(Rect { x: 0, y: self.y, w, h });
                        *at = depth;
                        *row = Some(self.order.len());
                    }
                    self.order.push(*index);
                    self.y += h + GAP;
                }
                Item::Frame(frame) => {
                    let at = self.frames.len();
                    let top = self.y;
                    self.frames.push(FrameBox { frame, depth, top, bottom: top });
                    self.y += FRAME_HEAD;
                    self.place(diagram, &frame.items, depth + 1);
                    let bottom = (self.y - GAP + FRAME_PAD).max(top + FRAME_HEAD + FRAME_PAD);
                    if let Some(placed) = self.frames.get_mut(at) {
                        placed.bottom = bottom;
                    }
                    self.y = bottom + GAP;
                }
            }
        }
    }

    fn rect(&self, vertex: usize) -> Option<Rect> {
        self.boxes.get(vertex).copied().flatten()
    }

    /// The right border of a frame at `depth`: each frame reaches beyond those it holds.
    fn frame_right(&self, depth: i64) -> i64 {
        self.inner_right + FRAME_STEP * (self.max_depth - 1 - depth).max(0)
    }
}

/// A vertex's width and height.
fn size(vertex: &Vertex) -> (i64, i64) {
    let lines = svg_lines(vertex);
    let text_w = lines.iter().map(|l| text_width(l)).max().unwrap_or(0);
    let text_h = LINE * lines.len() as i64;
    let (w, h) = match vertex.shape {
        Shape::Terminal => ((text_w + 2 * PAD_X + 16).max(64), text_h + 2 * PAD_Y),
        Shape::Decision => {
            // Wide enough that the text fits inside the diamond at its top and bottom lines.
            let h = text_h + 2 * PAD_Y + 16;
            (text_w * h / (h - text_h) + 2 * PAD_X, h)
        }
        Shape::Task | Shape::Human | Shape::Control => (text_w + 2 * PAD_X, text_h + 2 * PAD_Y),
    };
    // Even, so that a vertex centred on its column's axis has its centre exactly on it.
    (w + w % 2, h)
}

/// The lines as the SVG shows them: the clock glyph, which not every font has, gives way to a
/// drawn badge (see [`vertex_svg`]).
fn svg_lines(vertex: &Vertex) -> Vec<String> {
    vertex.lines.iter().map(|line| line.strip_prefix(CLOCK).unwrap_or(line).to_owned()).collect()
}

#[derive(Clone, Copy, Debug)]
enum Route {
    /// Straight down to the next row.
    Down,
    /// Out of the source's right side, down or up a lane, into the target's right side.
    Lane(i64),
}

/// How each edge is drawn. The first edge from a vertex to the one in the next row goes
/// straight down; every other edge takes a lane on the right, lanes reused where their spans do
/// not overlap, and meets its vertices at ports spread along their right side.
#[derive(Debug)]
struct Routes {
    routes: Vec<Option<Route>>,
    /// Per vertex, the edges using a port on its right side, in edge order (a self-loop twice).
    ports: Vec<Vec<usize>>,
    /// The x of the first lane's left neighbour: the outermost frame's right border.
    lanes_from: i64,
    /// The rightmost lane.
    right: i64,
}

impl Routes {
    fn of(diagram: &Diagram, layout: &Layout<'_>) -> Self {
        let mut straight = BTreeSet::new();
        let mut lanes: Vec<Vec<(i64, i64)>> = Vec::new();
        let mut routes = Vec::with_capacity(diagram.edges.len());
        let mut ports = vec![Vec::new(); diagram.vertices.len()];
        for (index, edge) in diagram.edges.iter().enumerate() {
            let row = |v: usize| layout.rows.get(v).copied().flatten();
            let (Some(from), Some(to), Some(a), Some(b)) =
                (row(edge.from), row(edge.to), layout.rect(edge.from), layout.rect(edge.to))
            else {
                routes.push(None);
                continue;
            };
            if to == from + 1 && straight.insert((edge.from, edge.to)) {
                routes.push(Some(Route::Down));
                continue;
            }
            let (low, high) = (a.y.min(b.y), a.bottom().max(b.bottom()));
            let lane = match lanes.iter().position(|taken| taken.iter().all(|&(l, h)| high < l || low > h)) {
                Some(lane) => lane,
                None => {
                    lanes.push(Vec::new());
                    lanes.len() - 1
                }
            };
            if let Some(taken) = lanes.get_mut(lane) {
                taken.push((low, high));
            }
            routes.push(Some(Route::Lane(lane as i64)));
            for vertex in [edge.from, edge.to] {
                if let Some(list) = ports.get_mut(vertex) {
                    list.push(index);
                }
            }
        }
        let lanes_from = layout.frame_right(0);
        Routes { routes, ports, lanes_from, right: lanes_from + LANE * lanes.len() as i64 }
    }

    /// The height of the `nth` port of `edge` on `vertex` (a self-loop has two).
    fn port_y(&self, rect: &Rect, vertex: usize, edge: usize, nth: usize) -> i64 {
        let list = self.ports.get(vertex).map_or(&[][..], Vec::as_slice);
        let k = list.iter().enumerate().filter(|(_, e)| **e == edge).map(|(k, _)| k).nth(nth).unwrap_or(0);
        rect.y + rect.h * (k as i64 + 1) / (list.len() as i64 + 1)
    }

    /// Draws one edge and its label; returns how far right they reach.
    fn draw(
        &self,
        lines: &mut String,
        labels: &mut String,
        diagram: &Diagram,
        layout: &Layout<'_>,
        index: usize,
        edge: &Edge,
    ) -> i64 {
        let (Some(Some(route)), Some(from), Some(to)) =
            (self.routes.get(index), layout.rect(edge.from), layout.rect(edge.to))
        else {
            return 0;
        };
        let shape = |v: usize| diagram.vertices.get(v).map_or(Shape::Task, |v| v.shape);
        let (points, label_x, label_y) = match *route {
            Route::Down => {
                let (sx, sy, tx, ty) = (from.cx(), from.bottom(), to.cx(), to.y);
                let points = if sx == tx {
                    format!("{sx},{sy} {tx},{ty}")
                } else {
                    let jog = sy + 12;
                    format!("{sx},{sy} {sx},{jog} {tx},{jog} {tx},{ty}")
                };
                (points, sx.max(tx) + 6, sy + 24)
            }
            Route::Lane(lane) => {
                let x = self.lanes_from + LANE * (lane + 1);
                let sy = self.port_y(&from, edge.from, index, 0);
                let ty = self.port_y(&to, edge.to, index, usize::from(edge.from == edge.to));
                let sx = right_side(&from, shape(edge.from), sy);
                let tx = right_side(&to, shape(edge.to), ty);
                (format!("{sx},{sy} {x},{sy} {x},{ty} {tx},{ty}"), sx + 4, sy - 4)
            }
        };
        let dash = if edge.stroke == Stroke::Dashed { r#" stroke-dasharray="6 4""# } else { "" };
        let _ = writeln!(
            lines,
            r#"<polyline points="{points}" fill="none" stroke="{INK}" stroke-width="1.5"{dash} marker-end="url(#baton-arrow)"/>"#
        );
        if edge.label.is_empty() {
            return 0;
        }
        let _ = writeln!(
            labels,
            r##"<text x="{label_x}" y="{label_y}" font-size="11" fill="#1e3a8a" stroke="#ffffff" stroke-width="3" paint-order="stroke">{}</text>"##,
            xml(&edge.label)
        );
        label_x + text_width(&edge.label)
    }
}

/// Where a line meets a vertex's right side at height `y`.
fn right_side(rect: &Rect, shape: Shape, y: i64) -> i64 {
    match shape {
        Shape::Decision if rect.h > 0 => {
            let dy = (y - (rect.y + rect.h / 2)).abs();
            rect.cx() + (rect.w / 2 - rect.w * dy / rect.h).max(0)
        }
        _ => rect.x + rect.w,
    }
}

/// Draws a frame and its title; returns how far right they reach.
fn frame_svg(out: &mut String, placed: &FrameBox<'_>, layout: &Layout<'_>) -> i64 {
    let x = MARGIN + placed.depth * INDENT + INDENT / 2;
    let right = layout.frame_right(placed.depth);
    let (top, height) = (placed.top, placed.bottom - placed.top);
    let dash = if placed.frame.side { r#" stroke-dasharray="6 4""# } else { "" };
    let _ = writeln!(
        out,
        r##"<rect x="{x}" y="{top}" width="{}" height="{height}" rx="6" fill="#64748b" fill-opacity="0.06" stroke="#94a3b8"{dash}/>"##,
        right - x
    );
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" font-weight="bold" fill="{INK}">{}</text>"#,
        x + 8,
        top + 16,
        xml(&placed.frame.title)
    );
    right.max(x + 8 + text_width(&placed.frame.title))
}

fn vertex_svg(out: &mut String, vertex: &Vertex, rect: &Rect) {
    let Rect { x, y, w, h } = *rect;
    let (fill, stroke, ink, rx) = match vertex.shape {
        Shape::Terminal => ("#1f2937", "#1f2937", "#ffffff", h.min(40) / 2),
        Shape::Task => ("#f8fafc", "#334155", "#0f172a", 4),
        // People's work: rounded, warm, and badged with a person.
        Shape::Human => ("#fff4e0", "#b45309", "#0f172a", 14),
        Shape::Control => ("#e5e7eb", "#6b7280", "#374151", 2),
        Shape::Decision => ("#eef2ff", "#4338ca", "#0f172a", 0),
    };
    let (stroke, stroke_width) = if vertex.sla { ("#c2410c", "2.5") } else { (stroke, "1.5") };
    let paint = format!(r#"fill="{fill}" stroke="{stroke}" stroke-width="{stroke_width}""#);
    if vertex.shape == Shape::Decision {
        let (cx, cy, right, bottom) = (x + w / 2, y + h / 2, x + w, y + h);
        let _ = writeln!(out, r#"<polygon points="{cx},{y} {right},{cy} {cx},{bottom} {x},{cy}" {paint}/>"#);
    } else {
        let _ = writeln!(out, r#"<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="{rx}" {paint}/>"#);
    }
    let lines = svg_lines(vertex);
    let first = y + (h - LINE * lines.len() as i64) / 2 + 11;
    for (i, line) in lines.iter().enumerate() {
        let bold = if i == 0 && vertex.shape != Shape::Control { r#" font-weight="bold""# } else { "" };
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="middle" fill="{ink}"{bold}>{}</text>"#,
            x + w / 2,
            first + LINE * i as i64,
            xml(line)
        );
    }
    // Badges on the corners, drawn rather than typed so that every renderer shows them.
    if vertex.shape == Shape::Human {
        let (head, shoulders) = (y - 3, (x - 4, y + 5));
        out.push_str("<g><title>human task</title>");
        let _ =
            write!(out, r##"<circle cx="{x}" cy="{y}" r="9" fill="#fff4e0" stroke="#b45309" stroke-width="1.5"/>"##);
        let _ = write!(out, r##"<circle cx="{x}" cy="{head}" r="2.5" fill="#b45309"/>"##);
        let _ = write!(out, r##"<path d="M{},{} a4,4 0 0 1 8,0 z" fill="#b45309"/>"##, shoulders.0, shoulders.1);
        out.push_str("</g>\n");
    }
    if vertex.sla {
        let (cx, cy) = (x + w, y);
        out.push_str("<g><title>SLA</title>");
        let _ =
            write!(out, r##"<circle cx="{cx}" cy="{cy}" r="9" fill="#ffffff" stroke="#c2410c" stroke-width="1.5"/>"##);
        let hands = format!("M{cx},{} L{cx},{cy} L{},{cy}", cy - 6, cx + 4);
        let _ = write!(out, r##"<path d="{hands}" fill="none" stroke="#c2410c" stroke-width="1.5"/>"##);
        out.push_str("</g>\n");
    }
}

/// Text for XML content or a quoted attribute.
fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in clean(text).chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}
