//! What the API tests share: a real server on a loopback port over a SQLite store, a real
//! HTTP client, real tokens, and the directory of the personas.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use baton_api::auth::{AuthConfig, Authenticator, Grant};
use baton_api::ui::{OIDC_CALLBACK_PATH, Oidc, OidcConfig};
use baton_api::{ApiOptions, App};
use baton_engine::directory::{Department, Organisation, Person};
use baton_engine::human::RoleGrant;
use baton_engine::remote::RemoteQueue;
use baton_engine::store::sqlite::{SqliteOptions, SqliteStore};
use baton_engine::{ActivityRegistry, Clock, ClockMode, Engine, EngineOptions, ManualClock, Store};
use reqwest::StatusCode;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub const SECRET: &str = "test-secret-of-at-least-32-bytes!!";
/// The audience the test server checks.
pub const AUDIENCE: &str = "baton-tests";

pub const APPROVAL: &str = r#"document:
  dsl: '1.0.3'
  namespace: training
  name: approval
  version: '1.0.0'
do:
  - review:
      call: humanTask
      with:
        title: ${ "Approve \(.title)" }
        assign: { role: team_leader, department: '${ .department }' }
        outcomes: [approve, reject]
        form:
          type: object
          required: [comment]
          properties: { comment: { type: string, minLength: 3 } }
      sla:
        within: PT8H
  - done:
      set:
        outcome: ${ .outcome }
        by: ${ .completedBy }
"#;

/// APPROVAL with the department's managers as supervisors (they may reassign its task).
pub fn supervised_approval() -> String {
    APPROVAL.replace(
        "        outcomes: [approve, reject]\n",
        "        outcomes: [approve, reject]\n        supervisors: { role: manager, department: '${ .department }' }\n",
    )
}

pub const SIGNAL: &str = r#"document:
  dsl: '1.0.3'
  namespace: ops
  name: signal
  version: '1.0.0'
do:
  - wait:
      listen: { to: { one: { with: { type: com.example.approved } } } }
"#;

pub struct Server {
    pub base: String,
    /// The gRPC API's address (`http://127.0.0.1:port`).
    pub grpc: String,
    pub client: reqwest::Client,
    pub auth: Authenticator,
    pub engine: Arc<Engine>,
    cancel: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Server {
    pub async fn start(manual_clock: bool) -> Self {
        Self::start_with(manual_clock, None, None).await
    }

    /// A server whose web UI signs people in through the OpenID provider at `issuer`, as the
    /// client `baton-ui` with the secret `ui-secret`.
    pub async fn start_oidc(issuer: &str) -> Self {
        Self::start_with(false, None, Some((issuer, "sub"))).await
    }

    /// As [`Server::start_oidc`], the person named by another claim of the ID token (the
    /// `email` scope asked for too).
    pub async fn start_oidc_named_by(issuer: &str, subject_claim: &str) -> Self {
        Self::start_with(false, None, Some((issuer, subject_claim))).await
    }

    /// A server whose web UI signs people in as `baton dev` does: anyone in the directory, or
    /// one of `accounts`.
    pub async fn start_dev(manual_clock: bool, accounts: &[(&str, &str)]) -> Self {
        let accounts = accounts.iter().map(|(s, g)| ((*s).to_owned(), vec![Grant::parse(g).unwrap()])).collect();
        Self::start_with(manual_clock, Some(accounts), None).await
    }

    async fn start_with(
        manual_clock: bool,
        dev_login: Option<Vec<(String, Vec<Grant>)>>,
        oidc: Option<(&str, &str)>,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("baton.db");
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(path.to_str().unwrap(), SqliteOptions::default()).await.unwrap());
        store.import(&organisation()).await.unwrap();
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::offset(0));
        let mode = if manual_clock { ClockMode::Manual } else { ClockMode::System };
        // Activities without a handler go to remote workers, as in `baton server`.
        let remote = RemoteQueue::new();
        let mut activities = ActivityRegistry::new();
        remote.install(&mut activities);
        let engine = Engine::builder()
            .store(store)
            .activities(activities)
            .clock(clock)
            .options(EngineOptions { clock: mode, ..EngineOptions::default() })
            .build()
            .await
            .unwrap();
        let engine = Arc::new(engine);
        let auth = Authenticator::new(AuthConfig {
            hs256_secret: Some(SECRET.into()),
            audience: vec![AUDIENCE.into()],
            ..AuthConfig::default()
        })
        .await
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let oidc = match oidc {
            Some((issuer, subject_claim)) => {
                let config = OidcConfig {
                    issuer: issuer.to_owned(),
                    client_id: "baton-ui".into(),
                    client_secret: Some("ui-secret".into()),
                    redirect_url: format!("{base}{OIDC_CALLBACK_PATH}"),
                    scopes: vec!["openid".into(), "profile".into(), "email".into()],
                    subject_claim: subject_claim.into(),
                    permissions_claim: "baton_permissions".into(),
                    label: "Test ID".into(),
                };
                Some(Arc::new(Oidc::discover(config).await.unwrap()))
            }
            None => None,
        };
        // The tests call faster than people do; the limit has its own test.
        let options = ApiOptions {
            manual_clock,
            rate_per_second: 1e6,
            rate_burst: 1e6,
            remote_workers: Some(remote),
            scheduler: Some(Arc::new(baton_workflows::schedule::Scheduler::new(Arc::clone(&engine)))),
            dev_login,
            oidc,
            ..ApiOptions::default()
        };
        let app = App::new(Arc::clone(&engine), auth.clone(), options).await.unwrap();
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        let grpc_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc = format!("http://{}", grpc_listener.local_addr().unwrap());
        let stop_grpc = cancel.clone();
        let grpc_app = Arc::clone(&app);
        tokio::spawn(async move {
            baton_api::server::serve_grpc(grpc_app, grpc_listener, async move { stop_grpc.cancelled().await }).await
        });
        tokio::spawn(baton_api::server::serve(app, listener, async move { stop.cancelled().await }));
        Self { base, grpc, client: reqwest::Client::new(), auth, engine, cancel, _dir: dir }
    }

    pub fn token(&self, subject: &str, grants: &[&str]) -> String {
        let grants: Vec<Grant> = grants.iter().map(|g| Grant::parse(g).unwrap()).collect();
        self.auth.issue(subject, &grants, Duration::from_secs(600), chrono::Utc::now()).unwrap()
    }

    pub async fn call(&self, method: &str, path: &str, as_: Option<&str>, body: Option<Value>) -> (StatusCode, Value) {
        let url = format!("{}{path}", self.base);
        let mut request = self.client.request(method.parse().unwrap(), url);
        if let Some(subject) = as_ {
            request = request.bearer_auth(self.token_for(subject));
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// The platform permissions of the test's personas.
    /// A token of a worker account allowed to raise events of `types` (exact, or `prefix*`).
    pub fn worker_token(&self, subject: &str, types: &[&str]) -> String {
        let types = serde_json::Value::from(types.iter().map(|t| (*t).to_owned()).collect::<Vec<_>>());
        let extra = serde_json::Map::from_iter([(baton_api::auth::EVENT_TYPES_CLAIM.to_owned(), types)]);
        let grants = [Grant::parse("worker").unwrap()];
        self.auth.issue_with(subject, &grants, &extra, Duration::from_secs(600), chrono::Utc::now()).unwrap()
    }

    /// A channel to the gRPC API.
    pub async fn channel(&self) -> tonic::transport::Channel {
        tonic::transport::Channel::from_shared(self.grpc.clone()).unwrap().connect().await.unwrap()
    }

    /// `message` with `subject`'s bearer token in its metadata.
    pub fn grpc_request<T>(&self, subject: &str, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        let bearer = format!("Bearer {}", self.token_for(subject));
        request.metadata_mut().insert("authorization", bearer.parse().unwrap());
        request
    }

    pub fn token_for(&self, subject: &str) -> String {
        match subject {
            "root" => self.token(subject, &["admin"]),
            "dora" => self.token(subject, &["designer"]),
            "otto" => self.token(subject, &["ops:training"]),
            "oscar" => self.token(subject, &["ops:elsewhere"]),
            "wendy" => self.token(subject, &["worker"]),
            other => self.token(other, &[]),
        }
    }

    pub async fn deploy(&self, source: &str, as_: &str) -> (StatusCode, Value) {
        let response = self
            .client
            .post(format!("{}/api/v1/definitions?file=approval.yaml", self.base))
            .bearer_auth(self.token_for(as_))
            .header("content-type", "application/yaml")
            .body(source.to_owned())
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap())
    }

    /// Starts `training/approval` (deployed by the test) for `title` in `department`, as ops,
    /// and waits until its task is in the inbox; answers the instance id.
    pub async fn start_approval(&self, title: &str, department: &str) -> String {
        let start = serde_json::json!({ "definition": "training/approval", "input": { "title": title, "department": department } });
        let (status, started) = self.call("POST", "/api/v1/instances", Some("otto"), Some(start)).await;
        assert_eq!(status, StatusCode::CREATED, "{started}");
        let id = started["id"].as_str().unwrap().to_owned();
        self.wait_for_task(&id, "root").await;
        id
    }

    pub async fn wait_for_task(&self, instance: &str, as_: &str) -> Value {
        for _ in 0..200 {
            let (_, inbox) = self.call("GET", &format!("/api/v1/tasks?instance={instance}"), Some(as_), None).await;
            if let Some(task) = inbox["items"].as_array().and_then(|items| items.first()) {
                return task.clone();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no task of {instance} reached {as_}'s inbox");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

pub fn organisation() -> Organisation {
    let person = |id: &str, department: &str, roles: Vec<RoleGrant>| {
        let mut p = Person::new(id, id.to_uppercase());
        p.department = Some(department.into());
        p.email = Some(format!("{id}@example.com"));
        p.roles = roles;
        p
    };
    Organisation {
        departments: ["assembly", "paint"]
            .map(|id| Department { id: id.into(), name: id.to_uppercase(), parent: None, head: None })
            .into(),
        groups: vec![],
        people: vec![
            person("tom", "assembly", vec![RoleGrant::new("team_leader", Some("assembly"))]),
            person("tina", "paint", vec![RoleGrant::new("team_leader", Some("paint"))]),
            person("olga", "assembly", vec![RoleGrant::new("operator", Some("assembly"))]),
            person("mia", "assembly", vec![RoleGrant::new("manager", Some("assembly"))]),
            person("pat", "assembly", vec![RoleGrant::new("team_leader", Some("assembly"))]),
            person("sam", "assembly", vec![RoleGrant::new("team_leader", Some("assembly"))]),
            person("dan", "assembly", vec![RoleGrant::new("operator", Some("assembly"))]),
        ],
    }
}

/// Whether `python3 ARGS` succeeds (a tool the test drives is installed). When it does not, the
/// test is skipped with `reason`, or fails under `BATON_REQUIRE_SERVICES=1`, as CI runs it.
pub async fn python_available(args: &[&str], reason: &str) -> bool {
    let probe = tokio::process::Command::new("python3")
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await;
    if probe.is_ok_and(|status| status.success()) {
        return true;
    }
    let required = std::env::var("BATON_REQUIRE_SERVICES").is_ok_and(|v| v == "1");
    assert!(!required, "BATON_REQUIRE_SERVICES=1 but {reason}");
    eprintln!("skipped: {reason}");
    false
}

/// Counts pages after a moment, with a typo (`.pages` is a number and `"x"` a string): each
/// instance stops at `count` with an incident.
pub const BROKEN: &str = r#"document:
  dsl: '1.0.3'
  namespace: training
  name: broken
  version: '1.0.0'
  metadata:
    baton:
      onError: incident
do:
  - moment:
      wait: PT0S
  - count:
      set:
        pages: ${ .pages + "x" }
"#;

/// A small OpenID provider for the tests: oidc-provider-mock from PyPI (its sign-in page asks
/// who to be), on a free port, stopped on drop. Its issuer is `http://localhost:PORT`: another
/// site than the server's `127.0.0.1`, as a real provider is.
pub struct OidcProvider {
    child: std::process::Child,
    pub issuer: String,
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl OidcProvider {
    /// Starts one, or says why not (skipped, or failing under `BATON_REQUIRE_SERVICES=1`).
    pub async fn start() -> Option<Self> {
        let reason = "oidc-provider-mock is not installed (pip install oidc-provider-mock==0.3.4)";
        if !python_available(&["-c", "import oidc_provider_mock"], reason).await {
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).unwrap().port();
        let child = std::process::Command::new("python3")
            .args(["-m", "oidc_provider_mock", "--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--require-nonce", "true"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut provider = Self { child, issuer: format!("http://localhost:{port}") };
        for _ in 0..400 {
            assert!(provider.child.try_wait().unwrap().is_none(), "the OpenID provider exited at once");
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Some(provider);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the OpenID provider did not listen within 20 s");
    }

    /// Gives the person `sub` these claims in the ID tokens the provider issues.
    pub async fn set_user(&self, sub: &str, claims: Value) {
        let url = format!("{}/users/{sub}", self.issuer);
        let response = reqwest::Client::new().put(url).json(&claims).send().await.unwrap();
        assert!(response.status().is_success(), "{}", response.status());
    }
}
