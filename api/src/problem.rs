//! RFC 7807 problem details: every error of the HTTP API is one of these, with a stable `type`
//! a client can match on. gRPC maps the same kinds to status codes.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use baton_engine::EngineError;
use baton_engine::human::TaskRefusal;
use baton_engine::store::StoreError;
use baton_workflows::diagnostic::Diagnostic;
use serde::Serialize;

use crate::auth::AuthError;

/// The stable problem types. The `type` member is `urn:baton:problem:<slug>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// No usable credentials (401).
    Unauthenticated,
    /// Authenticated, but the policy refuses the operation (403).
    Forbidden,
    /// The resource does not exist, or the caller may not know it exists (404).
    NotFound,
    /// The request is malformed or fails validation (400).
    BadRequest,
    /// A definition does not validate; `errors` gives each problem with its position (422).
    InvalidDefinition,
    /// The request conflicts with the resource's state: an immutable version with another
    /// text, an instance id taken, an ended instance (409).
    Conflict,
    /// The task refused the action (a rule of the task, not of the platform) (409).
    TaskRefused,
    /// The form of a task does not accept the data; `errors` lists every problem (422).
    InvalidTaskData,
    /// The caller sent too many requests (429).
    RateLimited,
    /// The route exists, not with this method (405).
    MethodNotAllowed,
    /// The request took longer than the server allows (408).
    Timeout,
    /// The body is larger than the server takes (413).
    TooLarge,
    /// The body's media type is not one the operation takes (415).
    UnsupportedMediaType,
    /// A remote worker's lease is over: completed, timed out, or its instance was cancelled
    /// (410). The worker stops its work.
    LeaseGone,
    /// The instance cannot move to the version asked; `detail` says why (409).
    MigrationRefused,
    /// A person's data cannot be erased while instances not ended hold it (409).
    ErasureRefused,
    /// The orchestration failed on the request's input before anything was recorded: a
    /// start whose first step fails under `onError: incident` (422). Nothing is stored.
    OrchestrationFault,
    /// A try of a definition cannot go on to its end with what it was given: it waits for a
    /// human task's answer or an event, or an incident stopped it (422).
    TryStuck,
    /// The engine cannot take the request now (shutting down, store unreachable) (503).
    Unavailable,
    /// An unexpected failure; the details are in the server's log (500).
    Internal,
}

impl Kind {
    pub fn slug(self) -> &'static str {
        match self {
            Self::Unauthenticated => "unauthenticated",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not-found",
            Self::BadRequest => "bad-request",
            Self::InvalidDefinition => "invalid-definition",
            Self::Conflict => "conflict",
            Self::TaskRefused => "task-refused",
            Self::InvalidTaskData => "invalid-task-data",
            Self::RateLimited => "rate-limited",
            Self::MethodNotAllowed => "method-not-allowed",
            Self::Timeout => "timeout",
            Self::TooLarge => "too-large",
            Self::UnsupportedMediaType => "unsupported-media-type",
            Self::LeaseGone => "lease-gone",
            Self::MigrationRefused => "migration-refused",
            Self::ErasureRefused => "erasure-refused",
            Self::OrchestrationFault => "orchestration-fault",
            Self::TryStuck => "try-stuck",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::InvalidDefinition | Self::InvalidTaskData | Self::OrchestrationFault | Self::TryStuck => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Self::Conflict | Self::TaskRefused | Self::MigrationRefused | Self::ErasureRefused => StatusCode::CONFLICT,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Timeout => StatusCode::REQUEST_TIMEOUT,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::LeaseGone => StatusCode::GONE,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn title(self) -> &'static str {
        match self {
            Self::Unauthenticated => "Authentication required",
            Self::Forbidden => "Not allowed",
            Self::NotFound => "Not found",
            Self::BadRequest => "Bad request",
            Self::InvalidDefinition => "The definition is not valid",
            Self::Conflict => "Conflict",
            Self::TaskRefused => "The task refused the action",
            Self::InvalidTaskData => "The data does not fit the task's form",
            Self::RateLimited => "Too many requests",
            Self::MethodNotAllowed => "Method not allowed",
            Self::Timeout => "Request timeout",
            Self::TooLarge => "Request body too large",
            Self::UnsupportedMediaType => "Unsupported media type",
            Self::LeaseGone => "The lease is over",
            Self::MigrationRefused => "The instance cannot move to that version",
            Self::ErasureRefused => "Instances still running hold the person's data",
            Self::OrchestrationFault => "The workflow failed on this input",
            Self::TryStuck => "The try cannot go on to its end",
            Self::Unavailable => "Unavailable",
            Self::Internal => "Internal error",
        }
    }

    /// The problem's `type` URI.
    pub fn uri(self) -> String {
        format!("urn:baton:problem:{}", self.slug())
    }
}

/// One problem of a definition or a form, with its position when it has one.
#[derive(Clone, Debug, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FieldError {
    /// A stable code (`BATON-L001`...) when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    pub message: String,
    /// The JSON pointer of the offending node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pointer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
}

impl From<&Diagnostic> for FieldError {
    fn from(d: &Diagnostic) -> Self {
        Self {
            code: Some(d.code.to_owned()),
            message: d.message.clone(),
            pointer: Some(d.pointer.clone()),
            line: Some(d.line),
            column: Some(d.column),
            expected: d.expected.clone(),
        }
    }
}

/// An RFC 7807 problem, as the API answers it.
#[derive(Clone, Debug)]
pub struct Problem {
    kind: Kind,
    pub detail: String,
    /// The engine's error code (`BATON-E012`...) or the token's refusal (`expired`...).
    pub code: Option<String>,
    pub errors: Vec<FieldError>,
}

/// The problem's JSON body (`application/problem+json`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Problem)]
pub struct ProblemBody<'a> {
    /// A stable URI: `urn:baton:problem:<slug>`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: &'a str,
    pub status: u16,
    pub detail: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'a str>,
    #[serde(skip_serializing_if = "<[FieldError]>::is_empty")]
    pub errors: &'a [FieldError],
}

impl Problem {
    pub fn new(kind: Kind, detail: impl Into<String>) -> Self {
        Self { kind, detail: detail.into(), code: None, errors: Vec::new() }
    }

    pub fn with_code(mut self, code: &str) -> Self {
        self.code = Some(code.to_owned());
        self
    }

    pub fn with_errors(mut self, errors: Vec<FieldError>) -> Self {
        self.errors = errors;
        self
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The JSON body.
    pub fn body(&self) -> ProblemBody<'_> {
        ProblemBody {
            kind: self.kind.uri(),
            title: self.kind.title(),
            status: self.kind.status().as_u16(),
            detail: &self.detail,
            code: self.code.as_deref(),
            errors: &self.errors,
        }
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(Kind::NotFound, what)
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(Kind::BadRequest, detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(Kind::Forbidden, detail)
    }

    /// An unexpected failure: logged in full, reported without internals.
    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "internal error");
        Self::new(Kind::Internal, "the server failed to answer; its log has the details")
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.kind().status();
        let mut response = (status, axum::Json(self.body())).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if self.kind() == Kind::Unauthenticated {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<AuthError> for Problem {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::Config(_) => Problem::internal(&error),
            _ => Problem::new(Kind::Unauthenticated, format!("the bearer token was refused: {error}"))
                .with_code(error.code()),
        }
    }
}

impl From<StoreError> for Problem {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Conflict(detail) => Problem::new(Kind::Conflict, detail),
            StoreError::Unavailable(detail) => Problem::new(Kind::Unavailable, detail),
            other => Problem::internal(other),
        }
    }
}

impl From<EngineError> for Problem {
    fn from(error: EngineError) -> Self {
        let code = error.code();
        let problem = match &error {
            EngineError::DefinitionNotFound(_)
            | EngineError::InstanceNotFound(_)
            | EngineError::IncidentNotFound(_)
            | EngineError::TaskNotFound { .. } => Problem::new(Kind::NotFound, error.to_string()),
            EngineError::InstanceExists(_)
            | EngineError::DefinitionConflict(_)
            | EngineError::InstanceEnded { .. }
            | EngineError::InstanceFaulted { .. }
            | EngineError::InstanceSuspended(_)
            | EngineError::ClockNotManual => Problem::new(Kind::Conflict, error.to_string()),
            EngineError::InvalidArgument(_) => Problem::new(Kind::BadRequest, error.to_string()),
            EngineError::MigrationRefused { .. } => Problem::new(Kind::MigrationRefused, error.to_string()),
            EngineError::ErasureRefused { .. } => Problem::new(Kind::ErasureRefused, error.to_string()),
            EngineError::TaskRefused { refusal, .. } => match refusal {
                TaskRefusal::NotFound | TaskRefusal::Forbidden { .. } => {
                    Problem::new(Kind::NotFound, "the task does not exist, or you may not see it")
                }
                TaskRefusal::InvalidData(problems) => Problem::new(Kind::InvalidTaskData, error.to_string())
                    .with_errors(
                        problems
                            .iter()
                            .map(|message| FieldError {
                                code: None,
                                message: message.clone(),
                                pointer: None,
                                line: None,
                                column: None,
                                expected: None,
                            })
                            .collect(),
                    ),
                _ => Problem::new(Kind::TaskRefused, error.to_string()),
            },
            EngineError::ShuttingDown => Problem::new(Kind::Unavailable, error.to_string()),
            // The workflow's own failure on the request's input, not the server's: a step
            // that fails while an instance's input is handled becomes an incident instead.
            EngineError::Step(baton_engine::StepError::Fault(_)) => {
                Problem::new(Kind::OrchestrationFault, format!("{error}; nothing was recorded"))
            }
            EngineError::Store(StoreError::Conflict(detail)) => Problem::new(Kind::Conflict, detail.clone()),
            EngineError::Store(StoreError::Unavailable(detail)) => Problem::new(Kind::Unavailable, detail.clone()),
            _ => return Problem::internal(&error).with_code(code),
        };
        problem.with_code(code)
    }
}

impl Kind {
    /// The kind of a bare error status (one a layer answered without a problem body).
    pub fn of_status(status: StatusCode) -> Self {
        match status {
            StatusCode::UNAUTHORIZED => Self::Unauthenticated,
            StatusCode::FORBIDDEN => Self::Forbidden,
            StatusCode::NOT_FOUND => Self::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => Self::MethodNotAllowed,
            StatusCode::REQUEST_TIMEOUT => Self::Timeout,
            StatusCode::CONFLICT => Self::Conflict,
            StatusCode::PAYLOAD_TOO_LARGE => Self::TooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::UnsupportedMediaType,
            StatusCode::UNPROCESSABLE_ENTITY | StatusCode::BAD_REQUEST => Self::BadRequest,
            StatusCode::TOO_MANY_REQUESTS => Self::RateLimited,
            StatusCode::SERVICE_UNAVAILABLE => Self::Unavailable,
            StatusCode::GONE => Self::LeaseGone,
            status if status.is_server_error() => Self::Internal,
            _ => Self::BadRequest,
        }
    }
}

/// Answers every error as a problem: a status some layer or extractor answered bare (405,
/// 408, 413...) gets a problem body of its kind.
pub async fn problems_only(response: Response) -> Response {
    let status = response.status();
    let content_type = response.headers().get(header::CONTENT_TYPE).map(|v| v.as_bytes()).unwrap_or_default();
    // Problems stay as they are, and so do the web UI's pages, which say what went wrong in HTML.
    let is_problem = content_type.starts_with(b"application/problem+json") || content_type.starts_with(b"text/html");
    if is_problem || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let detail = status.canonical_reason().unwrap_or("the request failed").to_lowercase();
    Problem::new(Kind::of_status(status), detail).into_response()
}

/// The API's result type.
pub type ApiResult<T> = Result<T, Problem>;
