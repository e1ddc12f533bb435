//! Notifications: the `baton.notify` activity, its channels, templates and the notifier that
//! sends what waits (quiet hours, digests, retries). See docs/notifications.md.
//!
//! # Input
//!
//! ```json
//! {
//!   "definition": "hr/onboarding@1",
//!   "template": "task-due-soon",
//!   "to": [{ "user": "ana" }, { "role": "manager", "department": "assembly" }, { "department": "paint" },
//!          { "group": "reviewers" }, { "managerOf": "ana" }],
//!   "channels": ["inApp", "email", "webhook", "sms"],
//!   "data": { "task": { "title": "Check the welds" } },
//!   "link": "/tasks/i-1/4"
//! }
//! ```
//!
//! - `template` (required): a template of the definition (`definition`), else a global one.
//! - `to` (required): a recipient, or a list of them: a user id as a string, `{user}`, `{role}`
//!   (with `department`: only grants in that department), `{department}` (its members),
//!   `{group}`, `{managerOf: user}`. Resolved through the directory; deduplicated; people no
//!   longer active are left out.
//! - `channels`: the call's channels; else the template's; else `inApp` and `email`.
//! - `data`: the template variables, with `recipient` (`id`, `name`, `email`, `locale`) and
//!   `instance` added.
//! - `link`: where an in-app notification points.
//!
//! # Output
//!
//! `{"deliveries": [{"id", "recipient", "channel", "status", "reason"?, "notBefore"?}],
//! "sent": n, "pending": n, "skipped": n, "failed": n}`.
//!
//! Every (recipient, channel) pair is one delivery in the store's delivery log, keyed by
//! `(instance, seq, recipient, channel)`: calling the activity again for the same task (a
//! retry, a replay) finds the deliveries already there and sends nothing twice.

use std::sync::Arc;
use std::time::Duration;

use baton_engine::{ActivityRegistry, Clock, Store};
use baton_sla::Calendars;
use serde_json::Value;

mod activity;
pub(crate) mod channels;
mod notifier;
mod preferences;
mod recipients;
pub mod templates;

pub use activity::notify;
pub use channels::{
    CHANNELS, EMAIL, IDEMPOTENCY_HEADER, IN_APP, SIGNATURE_HEADER, SMS, WEBHOOK, idempotency_key, signature,
};
pub use notifier::{Notifier, RunReport, backoff};
pub use templates::{DIGEST_TEMPLATE, Rendered, TemplateError, Templates};

/// The name the notify activity is registered under.
pub const NOTIFY_ACTIVITY: &str = "baton.notify";

/// An SMTP server to send email through.
#[derive(Clone)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    /// The sender, `Baton <baton@example.com>` or a bare address.
    pub from: String,
    /// `true`: TLS from the first byte on port 465, STARTTLS (required) on any other port.
    /// `false`: plain SMTP, for a relay on the same host or a local mail catcher.
    pub tls: bool,
    pub username: Option<String>,
    pub password: Option<String>,
    /// The limit on each SMTP command, connecting included.
    pub timeout: Duration,
}

impl SmtpConfig {
    /// A server with TLS, no credentials and a 30 s timeout.
    pub fn new(host: impl Into<String>, port: u16, from: impl Into<String>) -> Self {
        Self {
            host: host.into(),
            port,
            from: from.into(),
            tls: true,
            username: None,
            password: None,
            timeout: Duration::from_secs(30),
        }
    }
}

impl std::fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("from", &self.from)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A receiver of signed POST requests (the webhook channel, or an SMS provider's gateway).
#[derive(Clone)]
pub struct WebhookConfig {
    pub url: String,
    /// The key of the HMAC-SHA256 signature in `X-Baton-Signature`.
    pub secret: String,
}

impl WebhookConfig {
    pub fn new(url: impl Into<String>, secret: impl Into<String>) -> Self {
        Self { url: url.into(), secret: secret.into() }
    }
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig").field("url", &self.url).field("secret", &"<redacted>").finish()
    }
}

/// Everything the notify activity and the notifier need. Build it with [`NotifyConfig::new`],
/// set the public fields, then share it in an `Arc` between [`register_notify`] and
/// [`Notifier::new`] (they then share connections and know what the other is sending).
#[derive(Debug)]
pub struct NotifyConfig {
    /// The delivery log, the in-app inbox and the directory.
    pub store: Arc<dyn Store>,
    /// What "now" is: quiet hours, digests and retries are computed from it.
    pub clock: Arc<dyn Clock>,
    /// Global templates, and definitions' own (added when a definition is deployed).
    pub templates: Templates,
    /// The calendars that people's quiet hours name.
    pub calendars: Calendars,
    /// The email channel's server; without one, email deliveries fail.
    pub smtp: Option<SmtpConfig>,
    /// The webhook channel's receiver; without one, webhook deliveries fail.
    pub webhook: Option<WebhookConfig>,
    /// The SMS provider's gateway; without one, SMS deliveries fail.
    pub sms: Option<WebhookConfig>,
    /// The locale used when a person's own (and its language) has no template. Default `en`.
    pub default_locale: String,
    /// Attempts per delivery before it is failed. Default 5.
    pub max_attempts: u32,
    /// How often [`Notifier::run`] looks for due deliveries. Default 5 s.
    pub poll_interval: Duration,
    /// The limit on a webhook or SMS request. Default 10 s.
    pub http_timeout: Duration,
    channels: channels::Channels,
}

impl NotifyConfig {
    /// No channel configured but in-app, no templates, no calendars, the defaults above.
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            clock,
            templates: Templates::new(),
            calendars: Calendars::new(),
            smtp: None,
            webhook: None,
            sms: None,
            default_locale: "en".to_owned(),
            max_attempts: 5,
            poll_interval: Duration::from_secs(5),
            http_timeout: Duration::from_secs(10),
            channels: channels::Channels::default(),
        }
    }

    /// Sets the templates of a definition (its `use.templates`, as a value), keyed
    /// `ns/name@version`; called when the definition is deployed.
    pub fn add_definition_templates(&self, definition_key: &str, templates: &Value) -> Result<(), TemplateError> {
        self.templates.insert_definition(definition_key, templates)
    }

    /// Adds global templates.
    pub fn add_global_templates(&self, templates: &Value) -> Result<(), TemplateError> {
        self.templates.insert_global(templates)
    }
}

/// Registers the `baton.notify` activity.
pub fn register_notify(registry: &mut ActivityRegistry, config: Arc<NotifyConfig>) {
    registry.register(NOTIFY_ACTIVITY, move |ctx, input| {
        let config = Arc::clone(&config);
        async move { notify(&config, &ctx, &input).await }
    });
}
