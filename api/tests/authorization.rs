//! The authorization matrix: every operation of the served OpenAPI document and every method of
//! the gRPC proto, called by every persona, over real HTTP and real gRPC. The expected outcome of each cell is derived from the policy table
//! (`baton_api::policy::TABLE`, docs/authorization.md) and the personas' relation to the
//! objects, never from recorded behaviour. An operation without a row fails the test.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use baton_api::auth::{AuthConfig, Authenticator, Grant, Permission};
use baton_api::grpc::{Carry, Route, problem_of, route_of};
use baton_api::policy::{self, Rule};
use baton_proto::v1;
use baton_proto::v1::live_client::LiveClient;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{APPROVAL, AUDIENCE, SECRET, Server};
use tonic::transport::Channel;

/// How a persona presents itself.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Credential {
    Anonymous,
    Valid,
    Expired,
    WrongAudience,
    AlgNone,
}

/// What a persona is to the fixture's task: offered to team leaders of assembly, claimed by
/// pat, reassigned by pat to tom, delegated by tom to dan.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Relation {
    Assignee,
    Delegate,
    PreviousAssignee,
    SameRoleSameDepartment,
    SameRoleOtherDepartment,
    OtherRole,
    /// Manages the task's department (the SLA dashboard's rows).
    DepartmentManager,
    /// No relation: a platform account.
    None,
}

#[derive(Clone, Copy, Debug)]
struct Persona {
    subject: &'static str,
    credential: Credential,
    grants: &'static [&'static str],
    relation: Relation,
}

const fn persona(subject: &'static str, grants: &'static [&'static str], relation: Relation) -> Persona {
    Persona { subject, credential: Credential::Valid, grants, relation }
}

const fn bad(subject: &'static str, credential: Credential) -> Persona {
    Persona { subject, credential, grants: &["admin"], relation: Relation::None }
}

const PERSONAS: &[Persona] = &[
    persona("tom", &[], Relation::Assignee),
    persona("dan", &[], Relation::Delegate),
    persona("pat", &[], Relation::PreviousAssignee),
    persona("sam", &[], Relation::SameRoleSameDepartment),
    persona("tina", &[], Relation::SameRoleOtherDepartment),
    persona("olga", &[], Relation::OtherRole),
    persona("mia", &[], Relation::DepartmentManager),
    persona("root", &["admin"], Relation::None),
    persona("otto", &["ops:training"], Relation::None),
    persona("oscar", &["ops:elsewhere"], Relation::None),
    persona("dora", &["designer"], Relation::None),
    persona("wendy", &["worker"], Relation::None),
    bad("anonymous", Credential::Anonymous),
    bad("root", Credential::Expired),
    bad("root", Credential::WrongAudience),
    bad("root", Credential::AlgNone),
];

/// The outcome classes a cell is checked against.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Outcome {
    /// 401.
    Unauthenticated,
    /// 403.
    Forbidden,
    /// 404 for an object the caller may not see.
    Hidden,
    /// Past authorization: any answer but 401, 403 (and 404 where the object is visible).
    Allowed,
}

/// The namespace of every object of the fixture.
const NAMESPACE: &str = "training";

fn grants(p: &Persona) -> Vec<Grant> {
    p.grants.iter().map(|g| Grant::parse(g).unwrap()).collect()
}

fn holds(p: &Persona, permissions: &[Permission], namespace: Option<&str>) -> bool {
    grants(p).iter().any(|g| {
        (g.permission == Permission::Admin || permissions.contains(&g.permission))
            && (namespace.is_none() || g.namespace.is_none() || g.namespace.as_deref() == namespace)
    })
}

/// A grant of one of `permissions` (or admin) in every namespace.
fn holds_everywhere(p: &Persona, permissions: &[Permission]) -> bool {
    grants(p)
        .iter()
        .any(|g| (g.permission == Permission::Admin || permissions.contains(&g.permission)) && g.namespace.is_none())
}

/// Task operations and the instance operations decided on the task's instance.
fn sees_task(p: &Persona) -> bool {
    matches!(p.relation, Relation::Assignee | Relation::Delegate) || holds(p, &[], None)
}

/// The operation's object lives in the fixture's namespace (None: the operation lists or has
/// no namespaced object).
fn namespace_of(operation: &str) -> Option<&'static str> {
    match operation {
        "listDefinitions" | "listInstances" | "listIncidents" | "listSlas" | "retryIncident" | "completeIncident"
        | "startBulk" | "getBulk" => None,
        _ => Some(NAMESPACE),
    }
}

/// The expected outcome, from the policy table.
fn expected(operation: &str, p: &Persona) -> Outcome {
    let rule = policy::rule(operation).unwrap_or_else(|| panic!("{operation} has no row in the policy table"));
    if rule == Rule::Public {
        return Outcome::Allowed;
    }
    if p.credential != Credential::Valid {
        return Outcome::Unauthenticated;
    }
    let namespace = namespace_of(operation);
    match rule {
        Rule::Public => Outcome::Allowed,
        Rule::Platform(permissions) if holds(p, permissions, namespace) => Outcome::Allowed,
        Rule::Platform(_) => Outcome::Forbidden,
        // The personas' tokens list no event types: a worker raises none.
        Rule::PlatformOrTypedWorker(permissions) if holds(p, permissions, namespace) => Outcome::Allowed,
        Rule::PlatformOrTypedWorker(_) => Outcome::Forbidden,
        // The fixture's definition lets no directory role start it.
        Rule::PlatformOrStarter(permissions) if holds(p, permissions, namespace) => Outcome::Allowed,
        Rule::PlatformOrStarter(_) => Outcome::Forbidden,
        // As above, a worker publishes no event type.
        Rule::Unscoped(permissions) | Rule::UnscopedOrTypedWorker(permissions) => {
            if holds_everywhere(p, permissions) {
                Outcome::Allowed
            } else {
                Outcome::Forbidden
            }
        }
        Rule::PlatformOrInvolved(permissions) if holds(p, permissions, namespace) => Outcome::Allowed,
        // A person lists the instances they started (none, here): an answer, never a refusal.
        Rule::PlatformOrInvolved(_) if operation == "listInstances" => Outcome::Allowed,
        Rule::PlatformOrInvolved(_) if operation == "listSlas" => {
            if p.relation == Relation::DepartmentManager {
                Outcome::Allowed
            } else {
                Outcome::Forbidden
            }
        }
        Rule::PlatformOrInvolved(_) => {
            if sees_task(p) {
                Outcome::Allowed
            } else {
                Outcome::Hidden
            }
        }
        // Tom's own preferences (the people operations' path names tom); an administrator's
        // for anyone.
        Rule::Person if operation == "setPreferences" => {
            if p.subject == "tom" || holds_everywhere(p, &[]) {
                Outcome::Allowed
            } else {
                Outcome::Forbidden
            }
        }
        Rule::Person if operation.ends_with("Task") => {
            if sees_task(p) {
                Outcome::Allowed
            } else {
                Outcome::Hidden
            }
        }
        Rule::Person => Outcome::Allowed,
        // Read models span namespaces: a platform permission counts only when granted in every
        // namespace; a manager sees their department's rows; anyone sees their own rows of a
        // read model about people.
        Rule::UnscopedOrPerson(permissions) => {
            let about_people = matches!(operation, "listTrainingProgress" | "listCertifications");
            if holds_everywhere(p, permissions) || p.relation == Relation::DepartmentManager || about_people {
                Outcome::Allowed
            } else {
                Outcome::Forbidden
            }
        }
        Rule::ManualClockAdmin => {
            if holds(p, &[], None) {
                Outcome::Allowed
            } else {
                Outcome::Forbidden
            }
        }
    }
}

fn classify(status: StatusCode, rule: Rule) -> Outcome {
    match status {
        StatusCode::UNAUTHORIZED => Outcome::Unauthenticated,
        StatusCode::FORBIDDEN => Outcome::Forbidden,
        // A platform permission that passes may still find no object (a missing incident).
        StatusCode::NOT_FOUND if !matches!(rule, Rule::Platform(_)) => Outcome::Hidden,
        _ => Outcome::Allowed,
    }
}

/// The instance and its task, in the state the relations describe.
struct Fixture {
    instance: String,
    task: String,
}

async fn fixture(s: &Server) -> Fixture {
    let start = json!({"definition": "training/approval", "input": {"title": "Forklift", "department": "assembly"}});
    let (status, started) = s.call("POST", "/api/v1/instances", Some("otto"), Some(start)).await;
    assert_eq!(status, StatusCode::CREATED, "{started}");
    let instance = started["id"].as_str().unwrap().to_owned();
    let task = s.wait_for_task(&instance, "pat").await["reference"].as_str().unwrap().replace(':', "/");
    for (who, action, body) in [
        ("pat", "claim", None),
        ("pat", "reassign", Some(json!({"to": {"users": ["tom"]}}))),
        ("tom", "delegate", Some(json!({"to": "dan"}))),
    ] {
        let (status, answer) = s.call("POST", &format!("/api/v1/tasks/{task}/{action}"), Some(who), body).await;
        assert_eq!(status, StatusCode::OK, "{who} {action}: {answer}");
    }
    Fixture { instance, task }
}

fn token(s: &Server, p: &Persona, wrong_audience: &Authenticator) -> Option<String> {
    let now = chrono::Utc::now();
    let ttl = Duration::from_secs(600);
    match p.credential {
        Credential::Anonymous => None,
        Credential::Valid => Some(s.auth.issue(p.subject, &grants(p), ttl, now).unwrap()),
        Credential::Expired => {
            Some(s.auth.issue(p.subject, &grants(p), ttl, now - chrono::Duration::hours(3)).unwrap())
        }
        Credential::WrongAudience => Some(wrong_audience.issue(p.subject, &grants(p), ttl, now).unwrap()),
        Credential::AlgNone => {
            let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
            let claims = json!({"sub": p.subject, "aud": AUDIENCE, "exp": now.timestamp() + 600, "baton_permissions": ["admin"]});
            Some(format!("{header}.{}.", URL_SAFE_NO_PAD.encode(claims.to_string())))
        }
    }
}

/// A valid body for each operation that takes one, so that a refusal is never a 400.
fn body(operation: &str) -> Option<(&'static str, String)> {
    let json = |v: Value| Some(("application/json", v.to_string()));
    match operation {
        "deployDefinition" | "validateDefinition" => Some(("application/yaml", APPROVAL.to_owned())),
        "tryDefinition" => json(json!({
            "source": "document: {dsl: '1.0.3', namespace: training, name: tried, version: '1.0.0'}\ndo:\n  - done:\n      set: { ok: true }\n",
            "input": {},
        })),
        "startInstance" => {
            json(json!({"definition": "training/approval", "input": {"title": "x", "department": "assembly"}}))
        }
        "raiseEvent" | "publishEvents" => Some((
            "application/cloudevents+json",
            json!({"specversion": "1.0", "id": "m-1", "type": "com.example.nothing", "source": "/matrix"}).to_string(),
        )),
        "suspendInstance" | "resumeInstance" | "terminateInstance" => json(json!({"reason": "matrix"})),
        "delegateTask" => json(json!({"to": "sam"})),
        "reassignTask" => json(json!({"to": {"users": ["sam"]}})),
        "commentTask" => json(json!({"text": "a comment"})),
        "completeTask" => json(json!({"outcome": "approve", "data": {"comment": "fine by me"}})),
        "markNotificationsRead" => json(json!({"ids": [1]})),
        "advanceClock" => json(json!({"by": "PT1M"})),
        "completeIncident" => json(json!({"reason": "matrix", "result": null})),
        "migrateInstance" => json(json!({"to": "0.0.0", "reason": "matrix", "dryRun": true})),
        "purgeInstances" => json(json!({"definition": "training/approval", "olderThan": "P1D", "dryRun": true})),
        "erasePerson" => json(json!({"reason": "matrix", "dryRun": true})),
        "setPreferences" => json(json!({"channels": {"email": false}})),
        "startBulk" => json(json!({"action": "suspend", "filter": {"tag": "none"}, "dryRun": true})),
        "pollActivityTask" => json(json!({"activities": ["matrix-nothing"], "waitMs": 0})),
        "completeActivityTask" => json(json!({"result": {"done": true}})),
        "failActivityTask" => json(json!({"message": "matrix"})),
        _ => None,
    }
}

/// An authenticator with the server's secret and another audience: its tokens are refused.
async fn wrong_audience() -> Authenticator {
    Authenticator::new(AuthConfig {
        hs256_secret: Some(SECRET.into()),
        audience: vec!["someone-else".into()],
        ..AuthConfig::default()
    })
    .await
    .unwrap()
}

/// The cells of a matrix, and those that differ from the policy table.
#[derive(Default)]
struct Tally {
    cells: usize,
    failures: Vec<String>,
}

impl Tally {
    /// One answer: never a 5xx, and the outcome the policy table gives `operation` for `p`.
    fn record(&mut self, called: &str, operation: &str, rule: Rule, p: &Persona, status: StatusCode, text: &str) {
        assert!(status.as_u16() < 500, "{called} as {} ({:?}): {status} {text}", p.subject, p.credential);
        let want = expected(operation, p);
        let got = classify(status, rule);
        self.cells += 1;
        if got != want {
            self.failures.push(format!(
                "{called} as {} ({:?}, {:?}): expected {want:?}, got {status} {text}",
                p.subject, p.credential, p.relation
            ));
        }
    }

    fn check(self, transport: &str) {
        assert!(
            self.failures.is_empty(),
            "{} of {} {transport} cells differ from the policy table:\n{}",
            self.failures.len(),
            self.cells,
            self.failures.join("\n")
        );
    }
}

fn path(template: &str, f: &Fixture) -> String {
    let (instance, seq) = f.task.split_once('/').unwrap();
    template
        .replace("{namespace}", NAMESPACE)
        .replace("{name}", "approval")
        .replace("{incident}", "999999")
        .replace("{job}", "no-such-job")
        .replace("{token}", "no-such-lease")
        .replace("{instance}", instance)
        .replace("{seq}", seq)
        .replace("{id}", if template.starts_with("/api/v1/people") { "tom" } else { &f.instance })
}

#[tokio::test]
async fn every_operation_answers_every_persona_as_the_policy_table_says() {
    let s = Server::start(true).await;
    let (status, _) = s.deploy(APPROVAL, "dora").await;
    assert_eq!(status, StatusCode::CREATED);
    let wrong_audience = wrong_audience().await;
    let (_, document) = s.call("GET", "/api/v1/openapi.json", None, None).await;
    let mut operations: Vec<(String, String, String)> = Vec::new();
    for (template, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let id = operation["operationId"].as_str().unwrap().to_owned();
            operations.push((method.to_uppercase(), template.clone(), id));
        }
    }
    assert!(operations.len() >= 30, "the document lists {} operations", operations.len());

    let shared = fixture(&s).await;
    let mut tally = Tally::default();
    for (method, template, operation) in &operations {
        let rule =
            policy::rule(operation).unwrap_or_else(|| panic!("{method} {template} ({operation}) has no policy row"));
        for p in PERSONAS {
            // A change gets a fixture of its own, so that no cell sees another's effect.
            let own;
            let f = if method == "GET" {
                &shared
            } else {
                own = fixture(&s).await;
                &own
            };
            let url = format!("{}{}", s.base, path(template, f));
            let mut request = s.client.request(method.parse().unwrap(), url);
            if let Some(token) = token(&s, p, &wrong_audience) {
                request = request.bearer_auth(token);
            }
            if let Some((content_type, text)) = body(operation) {
                request = request.header("content-type", content_type).body(text);
            }
            let response = request.send().await.unwrap();
            let status = response.status();
            // A live stream never ends: its status is the answer.
            let streaming = response
                .headers()
                .get("content-type")
                .is_some_and(|v| v.to_str().unwrap_or_default().starts_with("text/event-stream"));
            let text = if streaming { String::new() } else { response.text().await.unwrap() };
            tally.record(operation, operation, rule, p, status, &text);
        }
    }
    tally.check("HTTP");
}

#[tokio::test]
async fn lists_hold_only_the_namespaces_a_caller_operates() {
    let s = Server::start(false).await;
    s.deploy(APPROVAL, "dora").await;
    let f = fixture(&s).await;
    let (_, mine) = s.call("GET", "/api/v1/instances", Some("otto"), None).await;
    assert!(mine["items"].as_array().unwrap().iter().any(|i| i["id"] == f.instance.as_str()));
    let (_, theirs) = s.call("GET", "/api/v1/instances", Some("oscar"), None).await;
    assert_eq!(theirs["items"], json!([]), "oscar operates another namespace");
    let (_, definitions) = s.call("GET", "/api/v1/definitions", Some("oscar"), None).await;
    assert_eq!(definitions["items"], json!([]));
    let (_, slas) = s.call("GET", "/api/v1/slas", Some("otto"), None).await;
    assert!(slas["items"].as_array().unwrap().iter().any(|r| r["instance"] == f.instance.as_str()), "{slas}");
    let (_, slas) = s.call("GET", "/api/v1/slas", Some("oscar"), None).await;
    assert_eq!(slas["items"], json!([]), "nor does he see its SLA clocks");
    let (_, slas) = s.call("GET", "/api/v1/slas", Some("mia"), None).await;
    assert!(
        slas["items"].as_array().unwrap().iter().any(|r| r["instance"] == f.instance.as_str()),
        "mia manages assembly: {slas}"
    );
    let (_, inbox) = s.call("GET", "/api/v1/tasks", Some("pat"), None).await;
    assert_eq!(inbox["items"], json!([]), "after the reassignment pat's inbox is empty");
    let (_, inbox) = s.call("GET", "/api/v1/tasks", Some("dan"), None).await;
    assert_eq!(inbox["items"].as_array().unwrap().len(), 1, "the delegate sees the task");
}

/// The request message of a gRPC method for the fixture, as JSON: its path parameters and the
/// body the HTTP operation takes (the proto's field names are the HTTP API's).
fn grpc_request(route: &Route, f: &Fixture) -> Value {
    let (instance, seq) = f.task.split_once('/').unwrap();
    let mut fields = serde_json::Map::new();
    for part in route.path.split('{').skip(1) {
        let name = part.split('}').next().unwrap();
        let value = match name {
            "namespace" => json!(NAMESPACE),
            "name" => json!("approval"),
            "incident" => json!(999_999),
            "job" => json!("no-such-job"),
            "token" => json!("no-such-lease"),
            "instance" => json!(instance),
            "seq" => json!(seq.parse::<u64>().unwrap()),
            "id" if route.path.starts_with("/api/v1/people") => json!("tom"),
            "id" => json!(f.instance),
            other => panic!("no fixture value for {{{other}}}"),
        };
        fields.insert(name.to_owned(), value);
    }
    if let Some((_, text)) = body(route.operation) {
        match route.carry {
            Carry::Json => fields.extend(serde_json::from_str::<serde_json::Map<String, Value>>(&text).unwrap()),
            Carry::Source => {
                fields.insert("source".into(), json!(text));
                fields.insert("file".into(), json!("approval.yaml"));
            }
            Carry::CloudEvent => {
                fields.insert("event".into(), serde_json::from_str(&text).unwrap());
            }
            Carry::Query | Carry::Nothing => {}
        }
    }
    Value::Object(fields)
}

async fn unary<Req, Res>(
    channel: Channel,
    rpc: &str,
    message: Value,
    token: Option<String>,
) -> Result<(), tonic::Status>
where
    Req: prost::Message + serde::de::DeserializeOwned + Send + Sync + 'static,
    Res: prost::Message + Default + Send + Sync + 'static,
{
    let message: Req = serde_json::from_value(message.clone()).unwrap_or_else(|e| panic!("{rpc}: {e}: {message}"));
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = axum::http::uri::PathAndQuery::try_from(format!("/baton.v1.{rpc}")).unwrap();
    let codec = tonic_prost::ProstCodec::<Req, Res>::default();
    grpc.unary(with_token(message, token), path, codec).await.map(|_| ())
}

fn with_token<T>(message: T, token: Option<String>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

macro_rules! dispatch {
    ($($rpc:literal => $request:ident -> $reply:ident,)*) => {
        /// Calls `rpc` with `message`; the stream of `Live/Watch` is opened, not read.
        async fn call_grpc(channel: Channel, rpc: &str, message: Value, token: Option<String>) -> Result<(), tonic::Status> {
            match rpc {
                $($rpc => unary::<v1::$request, v1::$reply>(channel, rpc, message, token).await,)*
                "Live/Watch" => {
                    let message: v1::WatchRequest = serde_json::from_value(message).unwrap();
                    LiveClient::new(channel).watch(with_token(message, token)).await.map(|_| ())
                }
                other => panic!("the matrix does not call {other}: add it"),
            }
        }
    };
}

dispatch! {
    "Definitions/ListDefinitions" => ListDefinitionsRequest -> Json,
    "Definitions/GetDefinition" => GetDefinitionRequest -> Json,
    "Definitions/GetDefinitionDiagram" => GetDefinitionDiagramRequest -> Diagram,
    "Definitions/DeployDefinition" => DefinitionSource -> Json,
    "Definitions/ValidateDefinition" => DefinitionSource -> Json,
    "Definitions/TryDefinition" => TryDefinitionRequest -> Json,
    "Instances/StartInstance" => StartInstanceRequest -> Json,
    "Instances/ListInstances" => ListInstancesRequest -> Json,
    "Instances/GetInstance" => InstanceRef -> Json,
    "Instances/GetInstanceHistory" => GetInstanceHistoryRequest -> Json,
    "Instances/RaiseEvent" => RaiseEventRequest -> Json,
    "Instances/SuspendInstance" => LifecycleRequest -> Json,
    "Instances/ResumeInstance" => LifecycleRequest -> Json,
    "Instances/TerminateInstance" => LifecycleRequest -> Json,
    "Instances/ListIncidents" => ListIncidentsRequest -> Json,
    "Instances/RetryIncident" => RetryIncidentRequest -> Json,
    "Instances/CompleteIncident" => CompleteIncidentRequest -> Json,
    "Instances/MigrateInstance" => MigrateInstanceRequest -> Json,
    "Instances/PurgeInstances" => PurgeInstancesRequest -> Json,
    "Instances/PublishEvents" => PublishEventsRequest -> Json,
    "Organisation/ErasePerson" => ErasePersonRequest -> Json,
    "Organisation/SetPreferences" => SetPreferencesRequest -> Json,
    "Instances/StartBulk" => StartBulkRequest -> Json,
    "Instances/GetBulk" => GetBulkRequest -> Json,
    "Tasks/ListTasks" => ListTasksRequest -> Json,
    "Tasks/GetTask" => TaskRef -> Json,
    "Tasks/ClaimTask" => TaskRef -> Json,
    "Tasks/UnclaimTask" => TaskRef -> Json,
    "Tasks/DelegateTask" => DelegateTaskRequest -> Json,
    "Tasks/ReassignTask" => ReassignTaskRequest -> Json,
    "Tasks/CommentTask" => CommentTaskRequest -> Json,
    "Tasks/CompleteTask" => CompleteTaskRequest -> Json,
    "Organisation/ListSlas" => ListSlasRequest -> Json,
    "Organisation/GetSlaCompliance" => SlaComplianceRequest -> Json,
    "Organisation/ListDocuments" => ListDocumentsRequest -> Json,
    "Organisation/ListTrainingProgress" => ListTrainingProgressRequest -> Json,
    "Organisation/ListCertifications" => ListCertificationsRequest -> Json,
    "Organisation/ListPeople" => ListPeopleRequest -> Json,
    "Organisation/GetPerson" => PersonRef -> Json,
    "Organisation/ListNotifications" => ListNotificationsRequest -> Json,
    "Organisation/MarkNotificationsRead" => MarkNotificationsReadRequest -> Json,
    "Organisation/AdvanceClock" => AdvanceClockRequest -> Json,
    "Workers/PollActivityTask" => PollActivityTaskRequest -> PollActivityTaskResponse,
    "Workers/HeartbeatActivityTask" => LeaseRef -> Empty,
    "Workers/CompleteActivityTask" => CompleteActivityTaskRequest -> Empty,
    "Workers/FailActivityTask" => FailActivityTaskRequest -> Empty,
    "Workers/ListActivityQueues" => Empty -> Json,
}

/// Every method of the proto, as `Service/Method`.
fn proto_methods() -> Vec<String> {
    let set = <prost_types::FileDescriptorSet as prost::Message>::decode(baton_proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut methods = Vec::new();
    for file in set.file.iter().filter(|f| f.package() == "baton.v1") {
        for service in &file.service {
            for method in &service.method {
                methods.push(format!("{}/{}", service.name(), method.name()));
            }
        }
    }
    methods
}

#[tokio::test]
async fn every_grpc_method_answers_every_persona_as_the_policy_table_says() {
    let s = Server::start(true).await;
    let (status, _) = s.deploy(APPROVAL, "dora").await;
    assert_eq!(status, StatusCode::CREATED);
    let wrong_audience = wrong_audience().await;
    let methods = proto_methods();
    assert!(methods.len() >= 30, "the proto has {} methods", methods.len());
    let channel = s.channel().await;
    let shared = fixture(&s).await;
    let mut tally = Tally::default();
    for rpc in &methods {
        let route = route_of(rpc).unwrap_or_else(|| panic!("{rpc} has no route to an operation"));
        let rule =
            policy::rule(route.operation).unwrap_or_else(|| panic!("{rpc} ({}) has no policy row", route.operation));
        for p in PERSONAS {
            let own;
            let f = if route.method == "GET" {
                &shared
            } else {
                own = fixture(&s).await;
                &own
            };
            let outcome = call_grpc(channel.clone(), rpc, grpc_request(route, f), token(&s, p, &wrong_audience)).await;
            let (status, text) = match &outcome {
                Ok(()) => (StatusCode::OK, String::new()),
                Err(status) => {
                    let problem =
                        problem_of(status).unwrap_or_else(|| panic!("{rpc}: a status without a problem: {status:?}"));
                    (StatusCode::from_u16(problem["status"].as_u64().unwrap() as u16).unwrap(), problem.to_string())
                }
            };
            tally.record(rpc, route.operation, rule, p, status, &text);
        }
    }
    tally.check("gRPC");
}
