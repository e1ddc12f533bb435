//! Errors as RFC 7807 problem details, the way the DSL describes them.
//!
//! The spec names its standard error types `https://serverlessworkflow.io/spec/1.0.0/errors/<kind>`,
//! while its conformance kit (try.feature) filters on
//! `https://serverlessworkflow.io/dsl/errors/types/<kind>`. Both spellings of a standard type mean
//! the same error, so [`same_type`] treats them as equal when a `catch` filter is matched. Baton
//! raises the spec's spelling.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

const SPEC_PREFIX: &str = "https://serverlessworkflow.io/spec/1.0.0/errors/";
const KIT_PREFIX: &str = "https://serverlessworkflow.io/dsl/errors/types/";

/// The standard error kinds and their default statuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standard {
    Configuration,
    Validation,
    Expression,
    Authentication,
    Authorization,
    Timeout,
    Communication,
    Runtime,
}

impl Standard {
    pub fn name(self) -> &'static str {
        match self {
            Self::Configuration => "configuration",
            Self::Validation => "validation",
            Self::Expression => "expression",
            Self::Authentication => "authentication",
            Self::Authorization => "authorization",
            Self::Timeout => "timeout",
            Self::Communication => "communication",
            Self::Runtime => "runtime",
        }
    }

    pub fn status(self) -> u16 {
        match self {
            Self::Configuration | Self::Validation | Self::Expression => 400,
            Self::Authentication => 401,
            Self::Authorization => 403,
            Self::Timeout => 408,
            Self::Communication | Self::Runtime => 500,
        }
    }

    pub fn type_uri(self) -> String {
        format!("{SPEC_PREFIX}{}", self.name())
    }
}

/// Whether two error types are the same, counting both spellings of a standard type as one.
pub fn same_type(a: &str, b: &str) -> bool {
    fn canonical(t: &str) -> &str {
        t.strip_prefix(SPEC_PREFIX).or_else(|| t.strip_prefix(KIT_PREFIX)).unwrap_or(t)
    }
    let (ca, cb) = (canonical(a), canonical(b));
    let both_standard = ca.len() != a.len() && cb.len() != b.len();
    if both_standard { ca == cb } else { a == b }
}

/// One error: `type` and `status` always set; `instance` is the JSON pointer of the task that
/// raised it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub status: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Anything else the error carried (an HTTP response's body, say).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Problem {
    pub fn standard(kind: Standard, title: impl Into<String>, detail: impl Into<String>) -> Self {
        let detail = detail.into();
        Self {
            kind: kind.type_uri(),
            status: Value::from(kind.status()),
            title: Some(title.into()),
            detail: (!detail.is_empty()).then_some(detail),
            instance: None,
            extra: Map::new(),
        }
    }

    /// Reads a problem from JSON (a raised error, an activity's failure details), filling in what
    /// is missing from `fallback`.
    pub fn from_value(value: &Value, fallback: Standard) -> Self {
        let mut problem: Problem = serde_json::from_value(value.clone()).unwrap_or_else(|_| {
            Problem::standard(fallback, "Error", value.as_str().map(str::to_owned).unwrap_or_else(|| value.to_string()))
        });
        if problem.status.is_null() {
            problem.status = Value::from(fallback.status());
        }
        problem
    }

    pub fn with_instance(mut self, pointer: &str) -> Self {
        if self.instance.is_none() {
            self.instance = Some(pointer.to_owned());
        }
        self
    }

    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The status as a number, when it is one.
    pub fn status_code(&self) -> Option<i64> {
        self.status.as_i64().or_else(|| self.status.as_str().and_then(|s| s.parse().ok()))
    }

    /// A one-line summary for logs and failure messages.
    pub fn summary(&self) -> String {
        let title = self.title.as_deref().unwrap_or("error");
        match &self.detail {
            Some(detail) => format!("{title}: {detail}"),
            None => title.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_spellings_of_a_standard_type_are_the_same_error() {
        assert!(same_type(
            "https://serverlessworkflow.io/dsl/errors/types/communication",
            "https://serverlessworkflow.io/spec/1.0.0/errors/communication"
        ));
        assert!(!same_type(
            "https://serverlessworkflow.io/dsl/errors/types/communication",
            "https://serverlessworkflow.io/spec/1.0.0/errors/timeout"
        ));
        assert!(same_type("https://example.com/x", "https://example.com/x"));
        assert!(!same_type(
            "https://example.com/communication",
            "https://serverlessworkflow.io/spec/1.0.0/errors/communication"
        ));
    }

    #[test]
    fn a_problem_round_trips_with_extra_fields() {
        let value = serde_json::json!({"type": "t", "status": 404, "title": "Not Found", "response": {"a": 1}});
        let problem = Problem::from_value(&value, Standard::Runtime);
        assert_eq!(problem.status_code(), Some(404));
        assert_eq!(problem.to_value(), value);
    }
}
