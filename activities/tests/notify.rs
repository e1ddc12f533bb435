//! The `baton.notify` activity and the notifier against a real SMTP server (aiosmtpd writing a
//! Maildir) and a local webhook receiver, on a memory store and simulated time.

#[path = "support/smtp_sink.rs"]
mod smtp_sink;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use baton_activities::notify::{IDEMPOTENCY_HEADER, SIGNATURE_HEADER, notify};
use baton_activities::{
    NOTIFY_ACTIVITY, Notifier, NotifyConfig, RunReport, SmtpConfig, WebhookConfig, register_notify,
};
use baton_engine::directory::{Directory, Person};
use baton_engine::human::RoleGrant;
use baton_engine::store::memory::MemoryStore;
use baton_engine::store::{DeliveryQuery, DeliveryRow, DeliveryStatus, NotificationStore};
use baton_engine::{ActivityContext, ActivityError, ActivityRegistry, Clock, InstanceId, ManualClock};
use baton_sla::Calendars;
use chrono::{DateTime, TimeZone, Utc};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use smtp_sink::SmtpSink;

const SECRET: &str = "hook-secret";

/// Monday 2026-06-01, 10:00 UTC.
fn monday(hour: u32, minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 1, hour, minute, 0).single().expect("a valid time")
}

fn templates() -> Value {
    json!({
        "due": {
            "channels": ["inApp", "email"],
            "en": {
                "subject": "Task {{task.title}} is due",
                "text": "Hello {{recipient.name}}, {{task.title}} is due.",
                "html": "<p>Hello {{recipient.name}}, <b>{{task.title}}</b> is due.</p>"
            },
            "fr": { "subject": "Tache {{task.title}} bientot due", "text": "Bonjour {{recipient.name}}" },
            "nl": { "subject": "Taak {{task.title}} vervalt", "text": "Hallo {{recipient.name}}" }
        }
    })
}

fn person(id: &str, locale: &str) -> Person {
    let mut p = Person::new(id, id.to_uppercase());
    p.email = Some(format!("{id}@example.com"));
    p.phone = Some(format!("+3247000{}", id.len()));
    p.locale = Some(locale.to_owned());
    p
}

struct Env {
    store: Arc<MemoryStore>,
    clock: Arc<ManualClock>,
    config: Arc<NotifyConfig>,
}

impl Env {
    async fn new(people: Vec<Person>, configure: impl FnOnce(&mut NotifyConfig)) -> Self {
        let store = Arc::new(MemoryStore::new());
        for p in &people {
            store.put_person(p).await.expect("a person is stored");
        }
        let clock = Arc::new(ManualClock::frozen(monday(10, 0)));
        let mut config = NotifyConfig::new(store.clone(), clock.clone());
        config.add_global_templates(&templates()).expect("valid templates");
        config.calendars = Calendars::from_value(&json!({
            "office": { "timezone": "UTC", "hours": { "mon-fri": ["09:00-17:00"] } }
        }))
        .expect("valid calendars");
        configure(&mut config);
        Self { store, clock, config: Arc::new(config) }
    }

    fn ctx(&self, seq: u64) -> ActivityContext {
        let clock: Arc<dyn Clock> = self.clock.clone();
        ActivityContext::new(InstanceId::new("i-1"), seq, 1, NOTIFY_ACTIVITY, clock)
    }

    async fn notify(&self, seq: u64, input: Value) -> Result<Value, ActivityError> {
        notify(&self.config, &self.ctx(seq), &input).await
    }

    async fn run_once(&self) -> RunReport {
        Notifier::new(self.config.clone()).run_once().await.expect("the notifier runs")
    }

    async fn log(&self) -> Vec<DeliveryRow> {
        self.store.deliveries(&DeliveryQuery::default()).await.expect("the delivery log")
    }

    fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }
}

fn smtp(sink: &SmtpSink) -> SmtpConfig {
    SmtpConfig { tls: false, ..SmtpConfig::new("127.0.0.1", sink.port, "Baton <baton@example.com>") }
}

fn due(to: Value, channels: Value) -> Value {
    json!({ "template": "due", "to": to, "channels": channels, "data": { "task": { "title": "Welds" } }, "link": "/tasks/i-1/4" })
}

fn failure(result: Result<Value, ActivityError>) -> baton_engine::Failure {
    match result {
        Err(ActivityError::Failed(failure)) => failure,
        other => panic!("expected a failure, got {other:?}"),
    }
}

fn header<'a>(message: &'a str, name: &str) -> &'a str {
    message
        .lines()
        .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(": ")))
        .unwrap_or_else(|| panic!("no {name} header in {message}"))
}

#[tokio::test]
async fn locales_fall_back_from_region_to_language_to_the_default() {
    let Some(sink) = SmtpSink::start() else { return };
    let env = Env::new(vec![person("ana", "fr-BE"), person("bob", "nl"), person("cy", "de")], |c| {
        c.smtp = Some(smtp(&sink));
    })
    .await;
    let out = env.notify(1, due(json!(["ana", "bob", { "user": "cy" }]), json!(["email"]))).await.expect("sent");
    assert_eq!(out["sent"], 3, "{out}");
    let mut by_recipient: Vec<(String, String)> =
        sink.messages().iter().map(|m| (header(m, "To").to_owned(), header(m, "Subject").to_owned())).collect();
    by_recipient.sort();
    assert_eq!(
        by_recipient,
        vec![
            ("ana@example.com".to_owned(), "Tache Welds bientot due".to_owned()),
            ("bob@example.com".to_owned(), "Taak Welds vervalt".to_owned()),
            ("cy@example.com".to_owned(), "Task Welds is due".to_owned()),
        ]
    );
    let ana = sink.messages().into_iter().find(|m| header(m, "To") == "ana@example.com").expect("ana's email");
    assert!(ana.contains("Bonjour ANA"), "{ana}");
    assert!(!ana.contains("text/html"), "the fr template has no html body: {ana}");
}

#[tokio::test]
async fn html_bodies_are_escaped_and_nothing_else_is() {
    let Some(sink) = SmtpSink::start() else { return };
    let env = Env::new(vec![person("cy", "en")], |c| c.smtp = Some(smtp(&sink))).await;
    let mut input = due(json!("cy"), json!(["inApp", "email"]));
    input["data"]["task"]["title"] = json!("A & <b>");
    let out = env.notify(1, input).await.expect("sent");
    assert_eq!(out["sent"], 2, "{out}");
    let messages = sink.messages();
    assert_eq!(messages.len(), 1);
    let email = &messages[0];
    assert_eq!(header(email, "Subject"), "Task A & <b> is due");
    assert!(email.contains("multipart/alternative"), "{email}");
    assert!(email.contains("Hello CY, A & <b> is due."), "the text part is not escaped: {email}");
    assert!(email.contains("<p>Hello CY, <b>A &amp; &lt;b&gt;</b> is due.</p>"), "the html part is: {email}");
    let inbox = env.store.in_app("cy", false, None, 10).await.expect("the inbox");
    assert_eq!(inbox[0].subject, "Task A & <b> is due");
    assert_eq!(inbox[0].body, "Hello CY, A & <b> is due.");
}

#[tokio::test]
async fn a_missing_variable_fails_the_call_and_names_it() {
    let env = Env::new(vec![person("ana", "fr")], |_| {}).await;
    let input = json!({ "template": "due", "to": "ana", "channels": ["inApp"], "data": { "task": {} } });
    let failed = failure(env.notify(1, input).await);
    assert_eq!(failed.kind, "https://serverlessworkflow.io/spec/1.0.0/errors/expression");
    let detail = failed.details.expect("details")["detail"].as_str().expect("a detail").to_owned();
    assert!(detail.contains("task.title") && detail.contains("'due'") && detail.contains("'fr'"), "{detail}");
    assert!(env.log().await.is_empty(), "nothing was recorded");
}

#[tokio::test]
async fn unknown_templates_and_nobody_to_tell_are_failures() {
    let env = Env::new(vec![person("ana", "en")], |_| {}).await;
    let failed = failure(env.notify(1, json!({ "template": "nope", "to": "ana", "definition": "hr/x@1" })).await);
    assert_eq!(failed.kind, "https://serverlessworkflow.io/spec/1.0.0/errors/configuration");
    assert!(failed.details.expect("details")["detail"].as_str().expect("detail").contains("nope"));

    let failed = failure(env.notify(2, due(json!([{ "group": "ghosts" }, "zed"]), json!(["inApp"]))).await);
    assert_eq!(failed.kind, "https://serverlessworkflow.io/spec/1.0.0/errors/validation");
    let detail = failed.details.expect("details")["detail"].as_str().expect("detail").to_owned();
    assert!(detail.contains("no recipient") && detail.contains("ghosts") && detail.contains("zed"), "{detail}");

    let failed = failure(env.notify(3, due(json!("ana"), json!(["fax"]))).await);
    assert_eq!(failed.kind, "https://serverlessworkflow.io/spec/1.0.0/errors/validation");
}

#[tokio::test]
async fn recipients_resolve_through_the_directory_once_each_and_only_the_active() {
    let mut ana = person("ana", "en");
    ana.department = Some("assembly".into());
    let mut boss = person("boss", "en");
    boss.roles = vec![RoleGrant::new("manager", Some("assembly"))];
    ana.manager = Some("boss".into());
    let mut rev = person("rev", "en");
    rev.groups = vec!["reviewers".into()];
    let mut gone = person("gone", "en");
    gone.groups = vec!["reviewers".into()];
    gone.active = false;
    let mut paint = person("pat", "en");
    paint.department = Some("paint".into());
    let env = Env::new(vec![ana, boss, rev, gone, paint], |_| {}).await;
    let to = json!([{ "user": "ana" }, { "role": "manager", "department": "assembly" }, { "department": "paint" },
        { "group": "reviewers" }, { "managerOf": "ana" }, "ana"]);
    let out = env.notify(1, due(to, json!(["inApp"]))).await.expect("sent");
    let recipients: Vec<&str> = out["deliveries"]
        .as_array()
        .expect("deliveries")
        .iter()
        .map(|d| d["recipient"].as_str().expect("id"))
        .collect();
    assert_eq!(recipients, ["ana", "boss", "pat", "rev"]);
    assert_eq!(out["sent"], 4);
}

#[tokio::test]
async fn quiet_hours_hold_email_but_not_in_app_until_working_time() {
    let Some(sink) = SmtpSink::start() else { return };
    let mut ana = person("ana", "en");
    ana.preferences.quiet_hours = Some("office".into());
    let env = Env::new(vec![ana], |c| c.smtp = Some(smtp(&sink))).await;
    // Monday 20:00: after office hours.
    env.advance(Duration::from_secs(10 * 3600));
    let out = env.notify(1, due(json!("ana"), json!(["inApp", "email"]))).await.expect("recorded");
    assert_eq!((out["sent"].as_u64(), out["pending"].as_u64()), (Some(1), Some(1)), "{out}");
    let email = &out["deliveries"][1];
    assert_eq!(email["channel"], "email");
    assert_eq!(email["notBefore"], json!(Utc.with_ymd_and_hms(2026, 6, 2, 9, 0, 0).single().expect("a time")));
    assert_eq!(env.store.in_app("ana", true, None, 10).await.expect("inbox").len(), 1, "in-app is not held");
    assert!(sink.messages().is_empty());

    env.advance(Duration::from_secs(12 * 3600)); // Tuesday 08:00: still quiet.
    assert_eq!(env.run_once().await, RunReport::default());
    assert!(sink.messages().is_empty());
    env.advance(Duration::from_secs(3600)); // 09:00
    let report = env.run_once().await;
    assert_eq!((report.sent, report.digests), (1, 0), "{report:?}");
    assert_eq!(sink.messages().len(), 1);
    let log = env.log().await;
    let row = log.iter().find(|r| r.channel == "email").expect("the email delivery");
    assert_eq!((row.status, row.attempts), (DeliveryStatus::Sent, 1));
}

#[tokio::test]
async fn a_digest_sends_two_notifications_as_one_email() {
    let Some(sink) = SmtpSink::start() else { return };
    let mut ana = person("ana", "en");
    ana.preferences.digest = Some("17:30".into());
    let env = Env::new(vec![ana], |c| c.smtp = Some(smtp(&sink))).await;
    let first = env.notify(1, due(json!("ana"), json!(["email"]))).await.expect("recorded");
    assert_eq!(first["pending"], 1, "{first}");
    assert_eq!(first["deliveries"][0]["digest"], true);
    let mut second = due(json!("ana"), json!(["email"]));
    second["data"]["task"]["title"] = json!("Paint");
    env.notify(2, second).await.expect("recorded");
    assert_eq!(env.run_once().await, RunReport::default(), "not digest time yet");
    assert!(sink.messages().is_empty());

    env.advance(Duration::from_secs(7 * 3600 + 1800)); // 17:30 UTC
    let report = env.run_once().await;
    assert_eq!((report.sent, report.digests), (2, 1), "{report:?}");
    let messages = sink.messages();
    assert_eq!(messages.len(), 1, "one digest email");
    let digest = &messages[0];
    assert_eq!(header(digest, "Subject"), "2 notifications");
    assert!(digest.contains("Task Welds is due") && digest.contains("Task Paint is due"), "{digest}");
    assert!(env.log().await.iter().all(|r| r.status == DeliveryStatus::Sent));
    assert_eq!(env.run_once().await, RunReport::default(), "nothing is sent twice");
}

#[tokio::test]
async fn a_channel_turned_off_or_without_an_address_is_skipped_with_a_reason() {
    let mut ana = person("ana", "en");
    ana.preferences.channels.insert("email".into(), false);
    let mut bob = person("bob", "en");
    bob.phone = None;
    let env = Env::new(vec![ana, bob], |_| {}).await;
    let out = env.notify(1, due(json!(["ana", "bob"]), json!(["inApp", "email", "sms"]))).await.expect("recorded");
    assert_eq!(out["skipped"], 2, "{out}");
    let reasons: Vec<(&str, &str, &str)> = out["deliveries"]
        .as_array()
        .expect("deliveries")
        .iter()
        .filter(|d| d["status"] == "skipped")
        .map(|d| {
            (d["recipient"].as_str().expect("r"), d["channel"].as_str().expect("c"), d["reason"].as_str().expect("why"))
        })
        .collect();
    assert_eq!(
        reasons,
        [("ana", "email", "ana turned the email channel off"), ("bob", "sms", "bob has no phone number")]
    );
    // bob's email and ana's SMS have nowhere to go: no SMTP server, no SMS provider. Each is
    // failed with the reason (the log says it once per channel).
    assert_eq!(out["failed"], 2, "{out}");
    let failed: Vec<(&str, &str)> = out["deliveries"]
        .as_array()
        .expect("deliveries")
        .iter()
        .filter(|d| d["status"] == "failed")
        .map(|d| (d["channel"].as_str().expect("c"), d["reason"].as_str().expect("why")))
        .collect();
    assert_eq!(
        failed,
        [
            ("sms", "no SMS provider is configured for the sms channel"),
            ("email", "no SMTP server is configured for the email channel")
        ]
    );
    assert_eq!(out["sent"], 2, "both in-app notifications");
}

#[tokio::test]
async fn the_same_call_twice_sends_one_email() {
    let Some(sink) = SmtpSink::start() else { return };
    let env = Env::new(vec![person("ana", "en")], |c| c.smtp = Some(smtp(&sink))).await;
    let first = env.notify(7, due(json!("ana"), json!(["inApp", "email"]))).await.expect("sent");
    let again = env.notify(7, due(json!("ana"), json!(["inApp", "email"]))).await.expect("replayed");
    assert_eq!(first["deliveries"][1]["id"], again["deliveries"][1]["id"]);
    assert_eq!(again["deliveries"][1]["status"], "sent");
    assert_eq!(sink.messages().len(), 1, "one email");
    assert_eq!(env.store.in_app("ana", false, None, 10).await.expect("inbox").len(), 1, "one in-app notification");
    assert_eq!(env.log().await.len(), 2);
    // Another notify task (another seq) is another notification.
    env.notify(8, due(json!("ana"), json!(["email"]))).await.expect("sent");
    assert_eq!(sink.messages().len(), 2);
}

#[tokio::test]
async fn registering_the_activity() {
    let env = Env::new(vec![], |_| {}).await;
    let mut registry = ActivityRegistry::new();
    register_notify(&mut registry, env.config.clone());
    assert!(registry.contains("baton.notify"));
}

/// A webhook receiver: records each request and answers with the planned statuses (200 once
/// the plan is exhausted).
#[derive(Clone, Default)]
struct Receiver {
    requests: Arc<Mutex<Vec<(String, HeaderMap, Bytes)>>>,
    plan: Arc<Mutex<VecDeque<u16>>>,
}

impl Receiver {
    async fn serve(plan: &[u16]) -> (Self, String) {
        let receiver = Self { plan: Arc::new(Mutex::new(plan.iter().copied().collect())), ..Self::default() };
        async fn record(
            State((receiver, path)): State<(Receiver, &'static str)>,
            headers: HeaderMap,
            body: Bytes,
        ) -> StatusCode {
            receiver.requests.lock().expect("lock").push((path.to_owned(), headers, body));
            let status = receiver.plan.lock().expect("lock").pop_front().unwrap_or(200);
            StatusCode::from_u16(status).expect("a status")
        }
        let app = Router::new()
            .route("/hook", post(record).with_state((receiver.clone(), "hook")))
            .route("/sms", post(record).with_state((receiver.clone(), "sms")));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let base = format!("http://{}", listener.local_addr().expect("an address"));
        tokio::spawn(async move { axum::serve(listener, app).await.expect("serves") });
        (receiver, base)
    }

    fn requests(&self) -> Vec<(String, HeaderMap, Value)> {
        self.requests
            .lock()
            .expect("lock")
            .iter()
            .map(|(path, headers, body)| {
                let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(SECRET.as_bytes()).expect("a key");
                mac.update(body);
                let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
                assert_eq!(headers[SIGNATURE_HEADER].to_str().expect("ascii"), expected, "the signature checks");
                (path.clone(), headers.clone(), serde_json::from_slice(body).expect("a JSON body"))
            })
            .collect()
    }
}

#[tokio::test]
async fn a_failing_webhook_is_retried_with_backoff_until_it_answers() {
    let (receiver, base) = Receiver::serve(&[500, 500]).await;
    let env = Env::new(vec![person("ana", "en")], |c| {
        c.webhook = Some(WebhookConfig::new(format!("{base}/hook"), SECRET));
        c.sms = Some(WebhookConfig::new(format!("{base}/sms"), SECRET));
    })
    .await;
    let out = env.notify(3, due(json!("ana"), json!(["webhook"]))).await.expect("recorded");
    assert_eq!(out["pending"], 1, "the first attempt failed: {out}");
    assert_eq!(out["deliveries"][0]["reason"], json!(format!("{base}/hook answered 500 Internal Server Error")));
    assert_eq!(env.run_once().await, RunReport::default(), "not before the backoff");

    env.advance(Duration::from_secs(29));
    assert_eq!(env.run_once().await, RunReport::default());
    env.advance(Duration::from_secs(1));
    assert_eq!(env.run_once().await.retried, 1, "the second attempt failed too");
    env.advance(Duration::from_secs(59));
    assert_eq!(env.run_once().await, RunReport::default(), "the backoff doubled");
    env.advance(Duration::from_secs(1));
    assert_eq!(env.run_once().await.sent, 1);

    let requests = receiver.requests();
    assert_eq!(requests.len(), 3);
    for (path, headers, body) in &requests {
        assert_eq!(path, "hook");
        assert_eq!(headers[IDEMPOTENCY_HEADER], "i-1:3:ana:webhook");
        assert_eq!(body["recipient"]["id"], "ana");
        assert_eq!(body["subject"], "Task Welds is due");
        assert_eq!(body["text"], "Hello ANA, Welds is due.");
        assert_eq!(body["template"], "due");
        assert_eq!(body["instance"], "i-1");
        assert_eq!(body["link"], "/tasks/i-1/4");
        assert_eq!(body["deliveryId"], out["deliveries"][0]["id"]);
    }
    let row = env.log().await.pop().expect("the delivery");
    assert_eq!((row.status, row.attempts, row.last_error), (DeliveryStatus::Sent, 3, None));

    // SMS goes to the provider's gateway, signed the same way.
    let out = env.notify(4, due(json!("ana"), json!(["sms"]))).await.expect("sent");
    assert_eq!(out["sent"], 1, "{out}");
    let (path, headers, body) = receiver.requests().pop().expect("the SMS request");
    assert_eq!(path, "sms");
    assert_eq!(headers[IDEMPOTENCY_HEADER], "i-1:4:ana:sms");
    assert_eq!(body, json!({ "to": "+32470003", "text": "Hello ANA, Welds is due." }));
}

#[tokio::test]
async fn a_delivery_fails_for_good_after_its_attempts() {
    let (receiver, base) = Receiver::serve(&[503, 503, 503, 503]).await;
    let env = Env::new(vec![person("ana", "en")], |c| {
        c.webhook = Some(WebhookConfig::new(format!("{base}/hook"), SECRET));
        c.max_attempts = 3;
    })
    .await;
    env.notify(1, due(json!("ana"), json!(["webhook"]))).await.expect("recorded");
    env.advance(Duration::from_secs(30));
    assert_eq!(env.run_once().await.retried, 1);
    env.advance(Duration::from_secs(60));
    assert_eq!(env.run_once().await.failed, 1);
    env.advance(Duration::from_secs(3600));
    assert_eq!(env.run_once().await, RunReport::default(), "a failed delivery is not tried again");
    assert_eq!(receiver.requests().len(), 3);
    let row = env.log().await.pop().expect("the delivery");
    assert_eq!((row.status, row.attempts), (DeliveryStatus::Failed, 3));
    let error = row.last_error.expect("the reason");
    assert!(error.contains("503") && error.contains("gave up after 3 attempts"), "{error}");

    // A client error is not retried.
    let (_, base) = Receiver::serve(&[400]).await;
    let env =
        Env::new(vec![person("ana", "en")], |c| c.webhook = Some(WebhookConfig::new(format!("{base}/hook"), SECRET)))
            .await;
    let out = env.notify(1, due(json!("ana"), json!(["webhook"]))).await.expect("recorded");
    assert_eq!(out["failed"], 1, "{out}");
}

#[tokio::test]
async fn in_app_notifications_are_listed_and_marked_read() {
    let env = Env::new(vec![person("ana", "en"), person("bob", "en")], |_| {}).await;
    env.notify(1, due(json!(["ana", "bob"]), json!(["inApp"]))).await.expect("sent");
    let mut second = due(json!("ana"), json!(["inApp"]));
    second["data"]["task"]["title"] = json!("Paint");
    second["link"] = Value::Null;
    env.notify(2, second).await.expect("sent");

    let inbox = env.store.in_app("ana", true, None, 10).await.expect("the inbox");
    let subjects: Vec<&str> = inbox.iter().map(|n| n.subject.as_str()).collect();
    assert_eq!(subjects, ["Task Paint is due", "Task Welds is due"], "newest first");
    assert_eq!(inbox[1].link.as_deref(), Some("/tasks/i-1/4"));
    assert_eq!(inbox[0].link, None);
    assert_eq!(inbox[1].body, "Hello ANA, Welds is due.");

    let read = env.store.mark_read("ana", &[inbox[1].id], env.clock.now()).await.expect("marked");
    assert_eq!(read, 1);
    assert_eq!(env.store.mark_read("bob", &[inbox[0].id], env.clock.now()).await.expect("not bob's"), 0);
    let unread = env.store.in_app("ana", true, None, 10).await.expect("the inbox");
    assert_eq!(unread.iter().map(|n| n.subject.as_str()).collect::<Vec<_>>(), ["Task Paint is due"]);
    assert_eq!(env.store.in_app("ana", false, None, 10).await.expect("all").len(), 2);
    assert_eq!(env.store.in_app("bob", false, None, 10).await.expect("bob's").len(), 1);
}

#[tokio::test]
async fn definition_templates_come_before_global_ones() {
    let env = Env::new(vec![person("ana", "en")], |_| {}).await;
    env.config
        .add_definition_templates(
            "hr/onboarding@1",
            &json!({ "due": { "en": { "subject": "Own {{task.title}}", "text": "t" } } }),
        )
        .expect("valid");
    let mut input = due(json!("ana"), json!(["inApp"]));
    input["definition"] = json!("hr/onboarding@1");
    env.notify(1, input).await.expect("sent");
    env.notify(2, due(json!("ana"), json!(["inApp"]))).await.expect("sent");
    let inbox = env.store.in_app("ana", false, None, 10).await.expect("the inbox");
    let subjects: Vec<&str> = inbox.iter().map(|n| n.subject.as_str()).collect();
    assert_eq!(subjects, ["Task Welds is due", "Own Welds"]);
}
