//! How the http and openapi activities report failures: as the DSL's errors (RFC 7807 problems
//! with a standard type URI and a status), carried to the orchestration by
//! [`ActivityError::Failed`].

use baton_engine::{ActivityError, Failure};
use serde_json::json;

use crate::auth::Sensitive;

/// The DSL's standard error types that these activities raise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorType {
    /// The call names something that is not there: an unknown named authentication, a missing
    /// secret, an unsupported authentication scheme, an unusable OpenAPI document.
    Configuration,
    /// The call's input is malformed: a bad method, URI, header or parameter.
    Validation,
    /// A value cannot be substituted: a URI template variable that is not a scalar, a `${ }`
    /// expression other than a `$secrets` reference inside an authentication policy.
    Expression,
    /// An OAuth2 token could not be obtained.
    Authentication,
    /// The call did not finish within its timeout.
    Timeout,
    /// The service could not be reached, answered with a status outside the accepted range, or
    /// sent a response that cannot be used (too large, cut short).
    Communication,
    /// The activity itself could not run (its HTTP client failed to initialise).
    Runtime,
}

impl ErrorType {
    /// The type URI, as the DSL's reference defines it.
    pub fn uri(self) -> &'static str {
        match self {
            Self::Configuration => "https://serverlessworkflow.io/spec/1.0.0/errors/configuration",
            Self::Validation => "https://serverlessworkflow.io/spec/1.0.0/errors/validation",
            Self::Expression => "https://serverlessworkflow.io/spec/1.0.0/errors/expression",
            Self::Authentication => "https://serverlessworkflow.io/spec/1.0.0/errors/authentication",
            Self::Timeout => "https://serverlessworkflow.io/spec/1.0.0/errors/timeout",
            Self::Communication => "https://serverlessworkflow.io/spec/1.0.0/errors/communication",
            Self::Runtime => "https://serverlessworkflow.io/spec/1.0.0/errors/runtime",
        }
    }

    /// The status the DSL gives this type when nothing more precise is known.
    pub fn default_status(self) -> u16 {
        match self {
            Self::Configuration | Self::Validation | Self::Expression => 400,
            Self::Authentication => 401,
            Self::Timeout => 408,
            Self::Communication | Self::Runtime => 500,
        }
    }
}

/// One failure of a call, before it becomes an [`ActivityError`].
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{title}: {detail}")]
pub(crate) struct Problem {
    pub kind: ErrorType,
    pub status: u16,
    pub title: String,
    pub detail: String,
}

impl Problem {
    pub fn new(kind: ErrorType, title: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { kind, status: kind.default_status(), title: title.into(), detail: detail.into() }
    }

    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    pub fn validation(detail: impl Into<String>) -> Self {
        Self::new(ErrorType::Validation, "Invalid call", detail)
    }

    pub fn configuration(detail: impl Into<String>) -> Self {
        Self::new(ErrorType::Configuration, "Invalid configuration", detail)
    }

    pub fn expression(detail: impl Into<String>) -> Self {
        Self::new(ErrorType::Expression, "Invalid expression", detail)
    }

    pub fn authentication(detail: impl Into<String>) -> Self {
        Self::new(ErrorType::Authentication, "Authentication failed", detail)
    }

    pub fn communication(status: u16, title: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(ErrorType::Communication, title, detail).with_status(status)
    }

    /// The failure handed to the orchestration, with every sensitive value scrubbed from its
    /// text: the detail may quote a response body or an error message from the network stack.
    pub fn into_activity_error(self, sensitive: &Sensitive) -> ActivityError {
        let title = sensitive.scrub_str(&self.title);
        let detail = sensitive.scrub_str(&self.detail);
        let uri = self.kind.uri();
        ActivityError::Failed(Failure {
            kind: uri.to_owned(),
            message: title.clone(),
            details: Some(json!({ "type": uri, "status": self.status, "title": title, "detail": detail })),
        })
    }
}
