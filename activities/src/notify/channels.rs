//! The channels a delivery goes out on: the in-app inbox, email over SMTP, a signed webhook,
//! and SMS through a provider's webhook. One attempt each; the caller records the outcome.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use baton_engine::store::{DeliveryRow, InAppNotification};
use hmac::{Hmac, Mac};
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde_json::{Value, json};
use sha2::Sha256;

use super::{NotifyConfig, SmtpConfig, WebhookConfig};

/// The in-app inbox (stored, never delayed).
pub const IN_APP: &str = "inApp";
pub const EMAIL: &str = "email";
pub const WEBHOOK: &str = "webhook";
pub const SMS: &str = "sms";
/// Every channel, by the name templates, inputs and preferences use.
pub const CHANNELS: [&str; 4] = [IN_APP, EMAIL, WEBHOOK, SMS];

/// The header carrying the HMAC-SHA256 of a webhook's body: `sha256=<hex>`.
pub const SIGNATURE_HEADER: &str = "X-Baton-Signature";
/// The header carrying a delivery's idempotency key: `<instance>:<seq>:<recipient>:<channel>`.
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

/// Why an attempt failed: worth trying again later, or not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SendError {
    Retry(String),
    Permanent(String),
    /// The channel has no configuration on this server: each delivery fails at once, and the
    /// log says so once rather than for every delivery.
    Unconfigured(String),
}

/// Connections and in-flight bookkeeping shared by the activity and the notifier of one
/// configuration. Built lazily, in the async runtime that first sends.
#[derive(Default)]
pub(crate) struct Channels {
    smtp: OnceLock<Result<AsyncSmtpTransport<Tokio1Executor>, String>>,
    http: OnceLock<Result<reqwest::Client, String>>,
    inflight: Mutex<HashSet<i64>>,
    /// The unconfigured channels' messages already logged.
    unconfigured: Mutex<HashSet<String>>,
}

impl fmt::Debug for Channels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner).len();
        f.debug_struct("Channels").field("inflight", &inflight).finish_non_exhaustive()
    }
}

/// A delivery being sent by this process; released on drop.
pub(crate) struct Claim<'a> {
    channels: &'a Channels,
    id: i64,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.channels.inflight.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.id);
    }
}

impl Channels {
    /// Whether this unconfigured channel's failure is the first this process sees.
    pub(crate) fn first_unconfigured(&self, message: &str) -> bool {
        self.unconfigured.lock().unwrap_or_else(PoisonError::into_inner).insert(message.to_owned())
    }

    /// Claims a delivery for sending; `None` when this process is already sending it.
    pub(crate) fn claim(&self, id: i64) -> Option<Claim<'_>> {
        let fresh = self.inflight.lock().unwrap_or_else(PoisonError::into_inner).insert(id);
        fresh.then_some(Claim { channels: self, id })
    }

    fn smtp(&self, config: &SmtpConfig) -> Result<&AsyncSmtpTransport<Tokio1Executor>, SendError> {
        self.smtp.get_or_init(|| build_smtp(config)).as_ref().map_err(|error| SendError::Permanent(error.clone()))
    }

    fn http(&self, timeout: Duration) -> Result<&reqwest::Client, SendError> {
        self.http
            .get_or_init(|| {
                reqwest::Client::builder()
                    .timeout(timeout)
                    .connect_timeout(timeout)
                    .redirect(reqwest::redirect::Policy::none())
                    .user_agent(concat!("baton/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(|error| format!("the HTTP client could not be built: {error}"))
            })
            .as_ref()
            .map_err(|error| SendError::Permanent(error.clone()))
    }
}

fn build_smtp(config: &SmtpConfig) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
    let builder = if !config.tls {
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host)
    } else if config.port == 465 {
        AsyncSmtpTransport::<Tokio1Executor>::relay(&config.host)
            .map_err(|error| format!("SMTP over TLS to {}: {error}", config.host))?
    } else {
        AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&config.host)
            .map_err(|error| format!("SMTP with STARTTLS to {}: {error}", config.host))?
    };
    let mut builder = builder.port(config.port).timeout(Some(config.timeout));
    if let Some(username) = &config.username {
        builder = builder.credentials(Credentials::new(username.clone(), config.password.clone().unwrap_or_default()));
    }
    Ok(builder.build())
}

/// The key a receiver deduplicates by: `<instance>:<seq>:<recipient>:<channel>`.
pub fn idempotency_key(row: &DeliveryRow) -> String {
    format!("{}:{}:{}:{}", row.instance, row.seq, row.recipient, row.channel)
}

/// `sha256=<hex HMAC-SHA256 of body under secret>`, as in the signature header.
pub fn signature(secret: &str, body: &[u8]) -> String {
    // HMAC takes a key of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable!());
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn text(message: &Value, field: &str) -> String {
    message.get(field).and_then(Value::as_str).unwrap_or_default().to_owned()
}

/// One attempt at one delivery.
pub(crate) async fn deliver(config: &NotifyConfig, row: &DeliveryRow) -> Result<(), SendError> {
    match row.channel.as_str() {
        IN_APP => {
            let notification = InAppNotification {
                id: 0,
                user: row.recipient.clone(),
                delivery: row.id,
                subject: text(&row.message, "subject"),
                body: text(&row.message, "text"),
                link: row.message.get("link").and_then(Value::as_str).map(str::to_owned),
                created_at: config.clock.now(),
                read_at: None,
            };
            config.store.put_in_app(&notification).await.map_err(|error| SendError::Retry(error.to_string()))
        }
        EMAIL => {
            let Some(smtp) = &config.smtp else {
                return Err(SendError::Unconfigured("no SMTP server is configured for the email channel".into()));
            };
            let html = row.message.get("html").and_then(Value::as_str);
            let email = Email {
                to: &text(&row.message, "to"),
                subject: &text(&row.message, "subject"),
                text: &text(&row.message, "text"),
                html,
                message_id: &message_id(&idempotency_key(row)),
            };
            send_email(config, smtp, &email).await
        }
        WEBHOOK => {
            let Some(webhook) = &config.webhook else {
                return Err(SendError::Unconfigured("no webhook is configured for the webhook channel".into()));
            };
            let body = json!({
                "recipient": row.message.get("recipient").cloned().unwrap_or_else(|| json!({ "id": row.recipient })),
                "subject": row.message.get("subject"),
                "text": row.message.get("text"),
                "html": row.message.get("html"),
                "link": row.message.get("link"),
                "instance": row.instance.as_str(),
                "definition": row.message.get("definition"),
                "template": row.message.get("template"),
                "locale": row.message.get("locale"),
                "deliveryId": row.id,
            });
            post_signed(config, webhook, &body, &idempotency_key(row)).await
        }
        SMS => {
            let Some(sms) = &config.sms else {
                return Err(SendError::Unconfigured("no SMS provider is configured for the sms channel".into()));
            };
            let body = json!({ "to": text(&row.message, "to"), "text": text(&row.message, "text") });
            post_signed(config, sms, &body, &idempotency_key(row)).await
        }
        other => Err(SendError::Permanent(format!("unknown channel '{other}'"))),
    }
}

/// A deterministic Message-ID, so a receiver can spot a message sent twice.
pub(crate) fn message_id(key: &str) -> String {
    let local: String =
        key.chars().map(|c| if c.is_ascii_alphanumeric() || "-._".contains(c) { c } else { '.' }).collect();
    format!("<{local}@baton.notify>")
}

pub(crate) struct Email<'a> {
    pub to: &'a str,
    pub subject: &'a str,
    pub text: &'a str,
    pub html: Option<&'a str>,
    pub message_id: &'a str,
}

pub(crate) async fn send_email(config: &NotifyConfig, smtp: &SmtpConfig, email: &Email<'_>) -> Result<(), SendError> {
    let from: Mailbox =
        smtp.from.parse().map_err(|error| SendError::Permanent(format!("the sender {:?}: {error}", smtp.from)))?;
    let to: Mailbox =
        email.to.parse().map_err(|error| SendError::Permanent(format!("the address {:?}: {error}", email.to)))?;
    let builder = Message::builder()
        .from(from)
        .to(to)
        .subject(email.subject)
        .message_id(Some(email.message_id.to_owned()))
        .date(config.clock.now().into());
    let message = match email.html {
        Some(html) => builder.multipart(MultiPart::alternative_plain_html(email.text.to_owned(), html.to_owned())),
        None => builder.header(ContentType::TEXT_PLAIN).body(email.text.to_owned()),
    }
    .map_err(|error| SendError::Permanent(format!("the message cannot be built: {error}")))?;
    let transport = config.channels.smtp(smtp)?;
    match transport.send(message).await {
        Ok(_) => Ok(()),
        Err(error) if error.is_permanent() => Err(SendError::Permanent(format!("the SMTP server refused: {error}"))),
        Err(error) => Err(SendError::Retry(format!("SMTP: {error}"))),
    }
}

async fn post_signed(
    config: &NotifyConfig,
    target: &WebhookConfig,
    body: &Value,
    idempotency_key: &str,
) -> Result<(), SendError> {
    let bytes = serde_json::to_vec(body).map_err(|error| SendError::Permanent(error.to_string()))?;
    let client = config.channels.http(config.http_timeout)?;
    let response = client
        .post(&target.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(SIGNATURE_HEADER, signature(&target.secret, &bytes))
        .header(IDEMPOTENCY_HEADER, idempotency_key)
        .body(bytes)
        .send()
        .await
        .map_err(|error| {
            if error.is_builder() {
                SendError::Permanent(format!("the request to {} cannot be made: {}", target.url, without_url(&error)))
            } else {
                SendError::Retry(format!("{} could not be reached: {}", target.url, without_url(&error)))
            }
        })?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let message = format!("{} answered {status}", target.url);
    // Another request cannot help a request the receiver rejects as such.
    if status.is_client_error() && status != reqwest::StatusCode::REQUEST_TIMEOUT && status.as_u16() != 429 {
        Err(SendError::Permanent(message))
    } else {
        Err(SendError::Retry(message))
    }
}

fn without_url(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    if let Some(url) = error.url() {
        text = text.replace(&format!(" for url ({url})"), "");
    }
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        text.push_str(&format!(": {inner}"));
        source = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_the_hex_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn message_ids_are_valid_and_stable() {
        assert_eq!(message_id("i-1:4:ana@x:email"), "<i-1.4.ana.x.email@baton.notify>");
    }
}
