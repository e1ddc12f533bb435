//! The gRPC transport: every method of `baton/v1/baton.proto` is an operation of the HTTP API,
//! run through the same router in process.
//!
//! A call becomes the HTTP request of its operation ([`ROUTES`]): the path parameters and the
//! query or JSON body come from the request message's fields (their camelCase names, as the
//! HTTP API spells them), the bearer token from the `authorization` metadata. The router's
//! layers, the policy table, the handlers, the limits and the rate limit are the HTTP ones, so
//! the two transports cannot drift apart. The answer's JSON comes back in the method's reply;
//! a problem becomes a status (its detail as the message) with the problem itself, as JSON, in
//! the `baton-problem-bin` trailer. The cost is one JSON encoding per call, small against a
//! store commit. The live stream is the one method served directly, from the same change feed
//! and filter as the server-sent events.

use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::FromRequestParts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use baton_proto::json::to_proto;
use baton_proto::v1;
use futures_util::{Stream, StreamExt};
use serde::Serialize;
use serde_json::Value;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Request, Response, Status};
use tower::ServiceExt;

use crate::app::{App, Auth};
use crate::problem::Problem;
use crate::routes::stream::{Viewer, changes};

/// How a method's request travels as HTTP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Carry {
    /// The fields left after the path parameters as the query string.
    Query,
    /// The fields left as a JSON body.
    Json,
    /// `source` as a YAML body, `file` in the query (definitions).
    Source,
    /// `event` as a structured CloudEvent.
    CloudEvent,
    /// Nothing beyond the path.
    Nothing,
}

/// One method of the proto and the HTTP operation it is.
#[derive(Clone, Copy, Debug)]
pub struct Route {
    /// `Service/Method`.
    pub rpc: &'static str,
    /// The OpenAPI operationId, and the policy table's row.
    pub operation: &'static str,
    pub method: &'static str,
    pub path: &'static str,
    pub carry: Carry,
}

const fn route(
    rpc: &'static str,
    operation: &'static str,
    method: &'static str,
    path: &'static str,
    carry: Carry,
) -> Route {
    Route { rpc, operation, method, path, carry }
}

use Carry::{CloudEvent, Json, Nothing, Query, Source};

/// Every method of the gRPC API, in the order of the proto.
pub const ROUTES: &[Route] = &[
    route("Definitions/ListDefinitions", "listDefinitions", "GET", "/api/v1/definitions", Query),
    route("Definitions/GetDefinition", "getDefinition", "GET", "/api/v1/definitions/{namespace}/{name}", Query),
    route(
        "Definitions/GetDefinitionDiagram",
        "getDefinitionDiagram",
        "GET",
        "/api/v1/definitions/{namespace}/{name}/diagram",
        Query,
    ),
    route("Definitions/DeployDefinition", "deployDefinition", "POST", "/api/v1/definitions", Source),
    route("Definitions/ValidateDefinition", "validateDefinition", "POST", "/api/v1/definitions/validate", Source),
    route("Definitions/TryDefinition", "tryDefinition", "POST", "/api/v1/definitions/try", Json),
    route("Instances/StartInstance", "startInstance", "POST", "/api/v1/instances", Json),
    route("Instances/ListInstances", "listInstances", "GET", "/api/v1/instances", Query),
    route("Instances/GetInstance", "getInstance", "GET", "/api/v1/instances/{id}", Query),
    route("Instances/GetInstanceHistory", "getInstanceHistory", "GET", "/api/v1/instances/{id}/history", Query),
    route("Instances/RaiseEvent", "raiseEvent", "POST", "/api/v1/instances/{id}/events", CloudEvent),
    route("Instances/PublishEvents", "publishEvents", "POST", "/api/v1/events", CloudEvent),
    route("Instances/SuspendInstance", "suspendInstance", "POST", "/api/v1/instances/{id}/suspend", Json),
    route("Instances/ResumeInstance", "resumeInstance", "POST", "/api/v1/instances/{id}/resume", Json),
    route("Instances/TerminateInstance", "terminateInstance", "POST", "/api/v1/instances/{id}/terminate", Json),
    route("Instances/ListIncidents", "listIncidents", "GET", "/api/v1/incidents", Query),
    route("Instances/RetryIncident", "retryIncident", "POST", "/api/v1/incidents/{incident}/retry", Json),
    route("Instances/CompleteIncident", "completeIncident", "POST", "/api/v1/incidents/{incident}/complete", Json),
    route("Instances/MigrateInstance", "migrateInstance", "POST", "/api/v1/instances/{id}/migrate", Json),
    route("Instances/PurgeInstances", "purgeInstances", "POST", "/api/v1/admin/purge", Json),
    route("Instances/StartBulk", "startBulk", "POST", "/api/v1/bulk", Json),
    route("Instances/GetBulk", "getBulk", "GET", "/api/v1/bulk/{job}", Query),
    route("Tasks/ListTasks", "listTasks", "GET", "/api/v1/tasks", Query),
    route("Tasks/GetTask", "getTask", "GET", "/api/v1/tasks/{instance}/{seq}", Query),
    route("Tasks/ClaimTask", "claimTask", "POST", "/api/v1/tasks/{instance}/{seq}/claim", Nothing),
    route("Tasks/UnclaimTask", "unclaimTask", "POST", "/api/v1/tasks/{instance}/{seq}/unclaim", Nothing),
    route("Tasks/DelegateTask", "delegateTask", "POST", "/api/v1/tasks/{instance}/{seq}/delegate", Json),
    route("Tasks/ReassignTask", "reassignTask", "POST", "/api/v1/tasks/{instance}/{seq}/reassign", Json),
    route("Tasks/CommentTask", "commentTask", "POST", "/api/v1/tasks/{instance}/{seq}/comment", Json),
    route("Tasks/CompleteTask", "completeTask", "POST", "/api/v1/tasks/{instance}/{seq}/complete", Json),
    route("Organisation/ListSlas", "listSlas", "GET", "/api/v1/slas", Query),
    route("Organisation/GetSlaCompliance", "getSlaCompliance", "GET", "/api/v1/slas/compliance", Query),
    route("Organisation/ListDocuments", "listDocuments", "GET", "/api/v1/documents", Query),
    route("Organisation/ListTrainingProgress", "listTrainingProgress", "GET", "/api/v1/training/progress", Query),
    route("Organisation/ListCertifications", "listCertifications", "GET", "/api/v1/training/certifications", Query),
    route("Organisation/ListPeople", "listPeople", "GET", "/api/v1/people", Query),
    route("Organisation/GetPerson", "getPerson", "GET", "/api/v1/people/{id}", Query),
    route("Organisation/ListNotifications", "listNotifications", "GET", "/api/v1/notifications", Query),
    route("Organisation/MarkNotificationsRead", "markNotificationsRead", "POST", "/api/v1/notifications/read", Json),
    route("Organisation/AdvanceClock", "advanceClock", "POST", "/api/v1/admin/clock/advance", Json),
    route("Organisation/ErasePerson", "erasePerson", "POST", "/api/v1/people/{id}/erase", Json),
    route("Organisation/SetPreferences", "setPreferences", "PUT", "/api/v1/people/{id}/preferences", Json),
    route("Live/Watch", "streamChanges", "GET", "/api/v1/stream", Query),
    route("Workers/PollActivityTask", "pollActivityTask", "POST", "/api/v1/workers/poll", Json),
    route(
        "Workers/HeartbeatActivityTask",
        "heartbeatActivityTask",
        "POST",
        "/api/v1/workers/leases/{token}/heartbeat",
        Nothing,
    ),
    route(
        "Workers/CompleteActivityTask",
        "completeActivityTask",
        "POST",
        "/api/v1/workers/leases/{token}/complete",
        Json,
    ),
    route("Workers/FailActivityTask", "failActivityTask", "POST", "/api/v1/workers/leases/{token}/fail", Json),
    route("Workers/ListActivityQueues", "listActivityQueues", "GET", "/api/v1/workers/queues", Query),
];

/// The route of `rpc` (`Service/Method`).
pub fn route_of(rpc: &str) -> Option<&'static Route> {
    ROUTES.iter().find(|r| r.rpc == rpc)
}

/// The gRPC services over an [`App`].
#[derive(Clone)]
pub struct GrpcApi {
    app: Arc<App>,
    http: Router,
}

impl std::fmt::Debug for GrpcApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcApi").field("app", &self.app).finish_non_exhaustive()
    }
}

impl GrpcApi {
    pub fn new(app: Arc<App>) -> Self {
        let http = crate::server::service(Arc::clone(&app));
        Self { app, http }
    }

    /// Every service, ready to serve.
    pub fn routes(self) -> tonic::service::Routes {
        use v1::definitions_server::DefinitionsServer;
        use v1::instances_server::InstancesServer;
        use v1::live_server::LiveServer;
        use v1::organisation_server::OrganisationServer;
        use v1::tasks_server::TasksServer;
        use v1::workers_server::WorkersServer;
        let routes = tonic::service::Routes::new(DefinitionsServer::new(self.clone()))
            .add_service(InstancesServer::new(self.clone()))
            .add_service(TasksServer::new(self.clone()))
            .add_service(OrganisationServer::new(self.clone()))
            .add_service(LiveServer::new(self.clone()))
            .add_service(WorkersServer::new(self));
        // Server reflection, so that grpcurl and other tools need no copy of the proto.
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(baton_proto::FILE_DESCRIPTOR_SET)
            .build_v1();
        match reflection {
            Ok(reflection) => routes.add_service(reflection),
            Err(error) => {
                tracing::error!(%error, "the gRPC reflection service could not be built");
                routes
            }
        }
    }

    /// Runs `rpc` as its HTTP operation; the answer's status, media type and body.
    async fn forward<T: Serialize>(&self, rpc: &str, request: Request<T>) -> Result<Answer, Status> {
        let route = route_of(rpc).ok_or_else(|| Status::unimplemented(format!("{rpc} has no route")))?;
        let (metadata, _, message) = request.into_parts();
        let mut fields = match serde_json::to_value(&message) {
            Ok(Value::Object(fields)) => fields,
            _ => return Err(Status::internal("the request message is not an object")),
        };
        // Proto3 cannot tell "absent" from "empty": empty strings, nulls and a zero limit are
        // not given.
        fields.retain(|key, value| !(value.is_null() || *value == "" || (key == "limit" && *value == 0)));
        let mut path = String::new();
        for (i, part) in route.path.split('{').enumerate() {
            if i == 0 {
                path.push_str(part);
                continue;
            }
            let (name, rest) = part.split_once('}').unwrap_or((part, ""));
            let value = fields.remove(name).unwrap_or_default();
            let text = match value {
                Value::String(text) => text,
                Value::Null => String::new(),
                other => other.to_string(),
            };
            if text.is_empty() {
                return Err(Status::invalid_argument(format!("`{name}` is required")));
            }
            path.push_str(
                &percent_encoding::utf8_percent_encode(&text, percent_encoding::NON_ALPHANUMERIC).to_string(),
            );
            path.push_str(rest);
        }
        let (query, content_type, body) = match route.carry {
            Carry::Query => (query_string(&fields), None, Bytes::new()),
            Carry::Nothing => (String::new(), None, Bytes::new()),
            Carry::Json => (String::new(), Some("application/json"), Bytes::from(Value::Object(fields).to_string())),
            Carry::Source => {
                let source = fields.remove("source").and_then(|s| s.as_str().map(str::to_owned)).unwrap_or_default();
                (query_string(&fields), Some("application/yaml"), Bytes::from(source))
            }
            Carry::CloudEvent => {
                let event = fields.remove("event").unwrap_or_default();
                (String::new(), Some("application/cloudevents+json"), Bytes::from(event.to_string()))
            }
        };
        let uri = if query.is_empty() { path } else { format!("{path}?{query}") };
        let mut http = axum::http::Request::builder()
            .method(Method::from_bytes(route.method.as_bytes()).unwrap_or(Method::GET))
            .uri(uri);
        if let Some(content_type) = content_type {
            http = http.header(header::CONTENT_TYPE, content_type);
        }
        for name in ["authorization", "x-request-id"] {
            if let Some(value) = metadata.get(name).and_then(|v| v.to_str().ok()) {
                http = http.header(name, value);
            }
        }
        let http = http.body(axum::body::Body::from(body)).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let Ok(response) = self.http.clone().oneshot(http).await;
        let status = response.status();
        let content_type =
            response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let body = axum::body::to_bytes(response.into_body(), crate::server::MAX_BODY_BYTES * 4)
            .await
            .map_err(|e| Status::internal(format!("cannot read the answer: {e}")))?;
        if !status.is_success() {
            return Err(problem_status(status, &body));
        }
        Ok(Answer { status, content_type, body })
    }

    async fn unary<T: Serialize, R: FromAnswer>(&self, rpc: &str, request: Request<T>) -> Result<Response<R>, Status> {
        let answer = self.forward(rpc, request).await?;
        R::from_answer(answer).map(Response::new)
    }
}

fn query_string(fields: &serde_json::Map<String, Value>) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (key, value) in fields {
        match value {
            Value::String(text) => query.append_pair(key, text),
            Value::Array(items) => {
                for item in items {
                    query.append_pair(key, &item.as_str().map_or_else(|| item.to_string(), str::to_owned));
                }
                &mut query
            }
            other => query.append_pair(key, &other.to_string()),
        };
    }
    query.finish()
}

/// A successful HTTP answer.
struct Answer {
    status: StatusCode,
    content_type: String,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Result<Value, Status> {
        if self.body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&self.body).map_err(|e| Status::internal(format!("the answer is not JSON: {e}")))
    }
}

/// A reply message made from an HTTP answer.
trait FromAnswer: Sized {
    fn from_answer(answer: Answer) -> Result<Self, Status>;
}

impl FromAnswer for v1::Json {
    fn from_answer(answer: Answer) -> Result<Self, Status> {
        Ok(Self { value: Some(to_proto(answer.json()?)) })
    }
}

impl FromAnswer for v1::Empty {
    fn from_answer(_: Answer) -> Result<Self, Status> {
        Ok(Self {})
    }
}

impl FromAnswer for v1::Diagram {
    fn from_answer(answer: Answer) -> Result<Self, Status> {
        Ok(Self { content_type: answer.content_type, text: String::from_utf8_lossy(&answer.body).into_owned() })
    }
}

impl FromAnswer for v1::PollActivityTaskResponse {
    fn from_answer(answer: Answer) -> Result<Self, Status> {
        if answer.status == StatusCode::NO_CONTENT {
            return Ok(Self { lease: None });
        }
        let lease = serde_json::from_value(answer.json()?).map_err(|e| Status::internal(format!("a lease: {e}")))?;
        Ok(Self { lease: Some(lease) })
    }
}

/// The status of a problem answer, with the problem in the `baton-problem-bin` trailer.
fn problem_status(status: StatusCode, body: &[u8]) -> Status {
    let problem: Value = serde_json::from_slice(body).unwrap_or_default();
    let detail = problem["detail"].as_str().or(problem["title"].as_str()).unwrap_or("the request failed").to_owned();
    let mut metadata = MetadataMap::new();
    metadata.insert_bin("baton-problem-bin", MetadataValue::from_bytes(body));
    if let Some(kind) = problem["type"].as_str().and_then(|t| MetadataValue::try_from(t).ok()) {
        metadata.insert("baton-problem-type", kind);
    }
    Status::with_metadata(code_of(status), detail, metadata)
}

/// The gRPC code of an HTTP status.
pub fn code_of(status: StatusCode) -> Code {
    match status {
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY | StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            Code::InvalidArgument
        }
        StatusCode::UNAUTHORIZED => Code::Unauthenticated,
        StatusCode::FORBIDDEN => Code::PermissionDenied,
        StatusCode::NOT_FOUND | StatusCode::GONE => Code::NotFound,
        StatusCode::CONFLICT => Code::FailedPrecondition,
        StatusCode::TOO_MANY_REQUESTS | StatusCode::PAYLOAD_TOO_LARGE => Code::ResourceExhausted,
        StatusCode::REQUEST_TIMEOUT => Code::DeadlineExceeded,
        StatusCode::METHOD_NOT_ALLOWED => Code::Unimplemented,
        StatusCode::SERVICE_UNAVAILABLE => Code::Unavailable,
        _ => Code::Internal,
    }
}

/// The problem a status carries, if it came from the API.
pub fn problem_of(status: &Status) -> Option<Value> {
    let bytes = status.metadata().get_bin("baton-problem-bin")?.to_bytes().ok()?;
    serde_json::from_slice(&bytes).ok()
}

macro_rules! forwarded {
    ($service:ident :: $trait:ident { $($method:ident($request:ident) -> $reply:ident = $rpc:literal;)* }) => {
        #[tonic::async_trait]
        impl v1::$service::$trait for GrpcApi {
            $(
                async fn $method(&self, request: Request<v1::$request>) -> Result<Response<v1::$reply>, Status> {
                    self.unary($rpc, request).await
                }
            )*
        }
    };
}

forwarded!(definitions_server::Definitions {
    list_definitions(ListDefinitionsRequest) -> Json = "Definitions/ListDefinitions";
    get_definition(GetDefinitionRequest) -> Json = "Definitions/GetDefinition";
    get_definition_diagram(GetDefinitionDiagramRequest) -> Diagram = "Definitions/GetDefinitionDiagram";
    deploy_definition(DefinitionSource) -> Json = "Definitions/DeployDefinition";
    validate_definition(DefinitionSource) -> Json = "Definitions/ValidateDefinition";
    try_definition(TryDefinitionRequest) -> Json = "Definitions/TryDefinition";
});

forwarded!(instances_server::Instances {
    start_instance(StartInstanceRequest) -> Json = "Instances/StartInstance";
    list_instances(ListInstancesRequest) -> Json = "Instances/ListInstances";
    get_instance(InstanceRef) -> Json = "Instances/GetInstance";
    get_instance_history(GetInstanceHistoryRequest) -> Json = "Instances/GetInstanceHistory";
    raise_event(RaiseEventRequest) -> Json = "Instances/RaiseEvent";
    suspend_instance(LifecycleRequest) -> Json = "Instances/SuspendInstance";
    resume_instance(LifecycleRequest) -> Json = "Instances/ResumeInstance";
    terminate_instance(LifecycleRequest) -> Json = "Instances/TerminateInstance";
    list_incidents(ListIncidentsRequest) -> Json = "Instances/ListIncidents";
    retry_incident(RetryIncidentRequest) -> Json = "Instances/RetryIncident";
    complete_incident(CompleteIncidentRequest) -> Json = "Instances/CompleteIncident";
    migrate_instance(MigrateInstanceRequest) -> Json = "Instances/MigrateInstance";
    purge_instances(PurgeInstancesRequest) -> Json = "Instances/PurgeInstances";
    publish_events(PublishEventsRequest) -> Json = "Instances/PublishEvents";
    start_bulk(StartBulkRequest) -> Json = "Instances/StartBulk";
    get_bulk(GetBulkRequest) -> Json = "Instances/GetBulk";
});

forwarded!(tasks_server::Tasks {
    list_tasks(ListTasksRequest) -> Json = "Tasks/ListTasks";
    get_task(TaskRef) -> Json = "Tasks/GetTask";
    claim_task(TaskRef) -> Json = "Tasks/ClaimTask";
    unclaim_task(TaskRef) -> Json = "Tasks/UnclaimTask";
    delegate_task(DelegateTaskRequest) -> Json = "Tasks/DelegateTask";
    reassign_task(ReassignTaskRequest) -> Json = "Tasks/ReassignTask";
    comment_task(CommentTaskRequest) -> Json = "Tasks/CommentTask";
    complete_task(CompleteTaskRequest) -> Json = "Tasks/CompleteTask";
});

forwarded!(organisation_server::Organisation {
    list_slas(ListSlasRequest) -> Json = "Organisation/ListSlas";
    list_people(ListPeopleRequest) -> Json = "Organisation/ListPeople";
    get_person(PersonRef) -> Json = "Organisation/GetPerson";
    list_notifications(ListNotificationsRequest) -> Json = "Organisation/ListNotifications";
    mark_notifications_read(MarkNotificationsReadRequest) -> Json = "Organisation/MarkNotificationsRead";
    advance_clock(AdvanceClockRequest) -> Json = "Organisation/AdvanceClock";
    erase_person(ErasePersonRequest) -> Json = "Organisation/ErasePerson";
    set_preferences(SetPreferencesRequest) -> Json = "Organisation/SetPreferences";
    get_sla_compliance(SlaComplianceRequest) -> Json = "Organisation/GetSlaCompliance";
    list_documents(ListDocumentsRequest) -> Json = "Organisation/ListDocuments";
    list_training_progress(ListTrainingProgressRequest) -> Json = "Organisation/ListTrainingProgress";
    list_certifications(ListCertificationsRequest) -> Json = "Organisation/ListCertifications";
});

forwarded!(workers_server::Workers {
    poll_activity_task(PollActivityTaskRequest) -> PollActivityTaskResponse = "Workers/PollActivityTask";
    heartbeat_activity_task(LeaseRef) -> Empty = "Workers/HeartbeatActivityTask";
    complete_activity_task(CompleteActivityTaskRequest) -> Empty = "Workers/CompleteActivityTask";
    fail_activity_task(FailActivityTaskRequest) -> Empty = "Workers/FailActivityTask";
    list_activity_queues(Empty) -> Json = "Workers/ListActivityQueues";
});

type ChangeStream = Pin<Box<dyn Stream<Item = Result<v1::Change, Status>> + Send>>;

#[tonic::async_trait]
impl v1::live_server::Live for GrpcApi {
    type WatchStream = ChangeStream;

    async fn watch(&self, request: Request<v1::WatchRequest>) -> Result<Response<ChangeStream>, Status> {
        let mut parts = axum::http::Request::new(()).into_parts().0;
        if let Some(token) = request.metadata().get("authorization").and_then(|v| v.to_str().ok()) {
            let value = HeaderValue::from_str(token).map_err(|_| Status::unauthenticated("a malformed token"))?;
            parts.headers.insert(header::AUTHORIZATION, value);
        }
        let instance = Some(request.into_inner().instance).filter(|i| !i.is_empty());
        let viewer = async {
            let auth = Auth::from_request_parts(&mut parts, &self.app).await?;
            Viewer::new(&self.app, &auth, instance).await
        };
        let viewer = viewer.await.map_err(|problem: Problem| {
            problem_status(problem.kind().status(), &serde_json::to_vec(&problem.body()).unwrap_or_default())
        })?;
        let changes = changes(&self.app, viewer)
            .map(|(kind, data)| Ok(v1::Change { kind: kind.to_owned(), data: Some(to_proto(data)) }));
        Ok(Response::new(Box::pin(changes)))
    }
}
