//! Problems found in a definition, with where they are, and how they are shown.
//!
//! Every problem has a stable code (`BATON-L001`...) listed in [`CODES`], each with a page in
//! `docs/errors/`. [`Diagnostic::render`] prints one the way rustc does: the message, the
//! file and position, the source line with a caret under the span, and what was expected.
//! It is written by hand rather than with a reporting crate such as miette: one small function
//! covers what the command line needs, where miette would bring a trait object model, byte
//! spans to convert from our character columns, and a sizeable dependency tree.

use serde::Serialize;

use crate::parse::Span;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

impl Severity {
    fn label(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warning => "warning",
        }
    }
}

/// One problem in one file. `line` and `column` are 1-based and count characters; `end_line`
/// and `end_column` mark the character just after the offending text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// A stable code with a page in docs/errors/ (`BATON-L001`...).
    pub code: &'static str,
    pub severity: Severity,
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub end_line: usize,
    pub end_column: usize,
    /// The JSON pointer of the offending node (`/do/0/getPet/call`); empty for the document.
    pub pointer: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
}

impl Diagnostic {
    /// An error at `span`.
    pub fn error(code: &'static str, file: &str, span: Span, pointer: &str, message: impl Into<String>) -> Self {
        Self::new(code, Severity::Error, file, span, pointer, message.into())
    }

    /// A warning at `span`.
    pub fn warning(code: &'static str, file: &str, span: Span, pointer: &str, message: impl Into<String>) -> Self {
        Self::new(code, Severity::Warning, file, span, pointer, message.into())
    }

    fn new(code: &'static str, severity: Severity, file: &str, span: Span, pointer: &str, message: String) -> Self {
        Self {
            code,
            severity,
            file: file.to_owned(),
            line: span.line,
            column: span.column,
            end_line: span.end_line,
            end_column: span.end_column,
            pointer: pointer.to_owned(),
            message,
            expected: None,
        }
    }

    /// Says what was expected instead (shown as `= expected: ...`).
    #[must_use]
    pub fn with_expected(mut self, expected: impl Into<String>) -> Self {
        self.expected = Some(expected.into());
        self
    }

    /// The span the diagnostic points at.
    pub fn span(&self) -> Span {
        Span { line: self.line, column: self.column, end_line: self.end_line, end_column: self.end_column }
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// The diagnostic as a human reads it, rustc style:
    ///
    /// ```text
    /// error[BATON-L021]: `then: publsh` names no task of this list
    ///   --> flow.yaml:12:13
    ///    |
    /// 12 |       then: publsh
    ///    |             ^^^^^^
    ///    = expected: one of review, publish, or continue, exit, end
    /// ```
    ///
    /// `source_text` is the file's text; without it (or past its end) the source lines are left out.
    pub fn render(&self, source_text: &str) -> String {
        let mut out = format!("{}[{}]: {}\n", self.severity.label(), self.code, self.message);
        let number = self.line.to_string();
        let gutter = " ".repeat(number.len());
        out.push_str(&format!("{gutter}--> {}:{}:{}\n", self.file, self.line, self.column));
        if let Some(text) = self.line.checked_sub(1).and_then(|index| source_text.lines().nth(index)) {
            // Tabs become one space so the caret lines up by character count.
            let chars: Vec<char> =
                text.trim_end_matches('\r').chars().map(|c| if c == '\t' { ' ' } else { c }).collect();
            let width = chars.len();
            let start = self.column.saturating_sub(1).min(width);
            let end = if self.end_line == self.line { self.end_column.saturating_sub(1) } else { width };
            let end = end.clamp(start, width);
            // A long line shows a window around the span.
            let from = if width > WINDOW && start > WINDOW / 2 { start - WINDOW / 2 } else { 0 };
            let to = width.min(from + WINDOW);
            let mut shown: String = chars[from..to].iter().collect();
            let mut indent = start - from;
            if from > 0 {
                shown.insert(0, '…');
                indent += 1;
            }
            if to < width {
                shown.push('…');
            }
            let carets = end.min(to).saturating_sub(start).max(1);
            out.push_str(&format!("{gutter} |\n{number} | {shown}\n"));
            out.push_str(&format!("{gutter} | {}{}\n", " ".repeat(indent), "^".repeat(carets)));
        }
        if let Some(expected) = &self.expected {
            out.push_str(&format!("{gutter} = expected: {expected}\n"));
        }
        out
    }
}

/// The most characters of a source line [`Diagnostic::render`] shows.
const WINDOW: usize = 120;

/// Every diagnostic code with its title. Each code has a page `docs/errors/<code>.md`; codes are
/// never reused for another meaning.
pub const CODES: &[(&str, &str)] = &[
    (codes::YAML_SYNTAX, "YAML syntax error"),
    (codes::NOT_UTF8, "Not UTF-8"),
    (codes::TOO_LARGE, "Document too large"),
    (codes::TOO_DEEP, "Document nested too deeply"),
    (codes::ALIAS_BUDGET, "Aliases expand too much"),
    (codes::DUPLICATE_KEY, "Duplicate mapping key"),
    (codes::NON_STRING_KEY, "Mapping key is not a string"),
    (codes::UNSUPPORTED_YAML, "Unsupported YAML construct"),
    (codes::SCHEMA, "Does not match the schema"),
    (codes::TASK_KIND, "Not a task"),
    (codes::DSL_VERSION, "Unsupported DSL version"),
    (codes::EXTENSION, "Baton extension in a portable definition"),
    (codes::DUPLICATE_TASK, "Duplicate task name"),
    (codes::THEN_TARGET, "Unknown flow target"),
    (codes::UNREACHABLE, "Unreachable task"),
    (codes::DURATION, "Invalid duration"),
    (codes::CRON, "Invalid cron expression"),
    (codes::EXPRESSION, "Invalid runtime expression"),
    (codes::DATA_SCHEMA, "Invalid data schema"),
    (codes::UNKNOWN_FUNCTION, "Unknown function"),
    (codes::ACTIVITY_INPUT, "Activity input does not match its schema"),
    (codes::UNKNOWN_REFERENCE, "Unknown reusable component"),
    (codes::DEFAULT_CASE, "Several default cases"),
    (codes::MANIFEST, "Invalid activity manifest"),
    (codes::CALENDAR, "Business calendar problem"),
    (codes::SCHEDULE, "Unsupported schedule"),
];

/// The codes by name, so code reads `codes::DUPLICATE_TASK` rather than a bare string.
pub mod codes {
    /// The text is not well-formed YAML (or JSON).
    pub const YAML_SYNTAX: &str = "BATON-L001";
    /// The bytes are not UTF-8.
    pub const NOT_UTF8: &str = "BATON-L002";
    /// The file, or the number of nodes in it, exceeds the parse limits.
    pub const TOO_LARGE: &str = "BATON-L003";
    /// Mappings and sequences nest deeper than the parse limit.
    pub const TOO_DEEP: &str = "BATON-L004";
    /// Aliases (`*name`, `<<: *name`) expand to more nodes than the budget allows.
    pub const ALIAS_BUDGET: &str = "BATON-L005";
    /// A mapping names the same key twice.
    pub const DUPLICATE_KEY: &str = "BATON-L006";
    /// A mapping key is a number, boolean, null, mapping or sequence.
    pub const NON_STRING_KEY: &str = "BATON-L007";
    /// Custom tags, several documents in one file, values JSON cannot hold.
    pub const UNSUPPORTED_YAML: &str = "BATON-L008";
    /// The document does not match the workflow schema.
    pub const SCHEMA: &str = "BATON-L009";
    /// A task entry has no task kind (call, do, ...) or more than one.
    pub const TASK_KIND: &str = "BATON-L010";
    /// `document.dsl` names a version Baton does not run.
    pub const DSL_VERSION: &str = "BATON-L011";
    /// `--strict-spec`: the definition uses something only Baton understands.
    pub const EXTENSION: &str = "BATON-L012";
    /// Two tasks of one list share a name.
    pub const DUPLICATE_TASK: &str = "BATON-L013";
    /// `then:` names no task of its list.
    pub const THEN_TARGET: &str = "BATON-L014";
    /// No path from the first task of a list reaches this task.
    pub const UNREACHABLE: &str = "BATON-L015";
    /// A duration is neither ISO 8601, an inline object, nor an expression.
    pub const DURATION: &str = "BATON-L016";
    /// `schedule.cron` is not a cron expression.
    pub const CRON: &str = "BATON-L017";
    /// A runtime expression (`${ ... }`) does not compile.
    pub const EXPRESSION: &str = "BATON-L018";
    /// An `input`/`output`/`export` schema is not a usable JSON Schema.
    pub const DATA_SCHEMA: &str = "BATON-L019";
    /// `call:` names neither a protocol, a declared function, a catalog entry, a built-in nor a
    /// known activity.
    pub const UNKNOWN_FUNCTION: &str = "BATON-L020";
    /// A call's `with` does not match the input schema of the activity it calls.
    pub const ACTIVITY_INPUT: &str = "BATON-L021";
    /// A name that should refer to an entry of `use` (timeout, retry, error, authentication,
    /// catalog) refers to none.
    pub const UNKNOWN_REFERENCE: &str = "BATON-L022";
    /// A switch has more than one case without `when`.
    pub const DEFAULT_CASE: &str = "BATON-L023";
    /// The activity manifest given with `--activities` cannot be used.
    pub const MANIFEST: &str = "BATON-L024";
    /// A calendar under `use.calendars` is invalid, or an `sla` names a calendar the
    /// definition does not declare (a warning: it may be one the engine shares).
    pub const CALENDAR: &str = "BATON-L025";
    /// A schedule Baton cannot run: an unknown time zone, a period of zero, or `schedule.on`
    /// with `all`.
    pub const SCHEDULE: &str = "BATON-L026";
}

/// The title of a code, if it is one of [`CODES`].
pub fn title(code: &str) -> Option<&'static str> {
    CODES.iter().find(|(c, _)| *c == code).map(|(_, title)| *title)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(line: usize, column: usize, end_column: usize) -> Span {
        Span { line, column, end_line: line, end_column }
    }

    #[test]
    fn renders_like_rustc_with_a_caret_under_the_span() {
        let text = "do:\n  - a:\n      then: publsh\n";
        let diagnostic =
            Diagnostic::error(codes::THEN_TARGET, "flow.yaml", span(3, 13, 19), "/do/0/a/then", "no task `publsh`")
                .with_expected("one of a");
        assert_eq!(
            diagnostic.render(text),
            "error[BATON-L014]: no task `publsh`\n --> flow.yaml:3:13\n  |\n3 |       then: publsh\n  |             ^^^^^^\n  = expected: one of a\n"
        );
    }

    #[test]
    fn renders_without_source_past_the_end() {
        let diagnostic = Diagnostic::warning(codes::UNREACHABLE, "f.yaml", span(9, 1, 2), "", "m");
        assert_eq!(diagnostic.render("one line"), "warning[BATON-L015]: m\n --> f.yaml:9:1\n");
    }

    #[test]
    fn a_long_line_shows_a_window_around_the_span() {
        let text = format!("{}X{}", "a".repeat(500), "b".repeat(500));
        let rendered = Diagnostic::error(codes::YAML_SYNTAX, "f", span(1, 501, 502), "", "m").render(&text);
        let lines: Vec<&str> = rendered.lines().collect();
        assert_eq!(lines[3].chars().count(), "1 | ".len() + 122);
        let caret = lines[4].find('^').expect("a caret");
        assert_eq!(lines[3].chars().nth(lines[4][..caret].chars().count()), Some('X'));
    }

    #[test]
    fn codes_are_unique_and_numbered_in_order() {
        for (index, (code, title)) in CODES.iter().enumerate() {
            assert_eq!(*code, format!("BATON-L{:03}", index + 1), "{title}");
        }
    }

    #[test]
    fn serializes_the_fields_editors_read() {
        let diagnostic = Diagnostic::error(codes::SCHEMA, "f.yaml", span(1, 2, 3), "/do", "m");
        let json = serde_json::to_value(&diagnostic).expect("serializes");
        assert_eq!(json["code"], "BATON-L009");
        assert_eq!(json["severity"], "error");
        assert_eq!(json["line"], 1);
        assert_eq!(json["column"], 2);
        assert_eq!(json["pointer"], "/do");
        assert!(json.get("expected").is_none());
    }
}
