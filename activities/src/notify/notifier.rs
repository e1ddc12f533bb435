//! The notifier: sends deliveries that are due (after quiet hours, at digest time, after a
//! failed attempt), groups a recipient's due digest emails into one, and retries with backoff.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use baton_engine::store::{DeliveryQuery, DeliveryRow, DeliveryStatus, DeliveryUpdate, StoreResult};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::NotifyConfig;
use super::channels::{EMAIL, Email, SendError, deliver, idempotency_key, message_id, send_email};
use super::templates::DIGEST_TEMPLATE;

/// Deliveries read per store query.
const BATCH: u32 = 500;
/// The first retry's delay; each further one doubles, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(30);
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// The delay before the next attempt after `attempts` failed ones: 30 s, 1 min, 2 min...,
/// at most 1 h.
pub fn backoff(attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(16);
    FIRST_BACKOFF.saturating_mul(1 << doublings).min(MAX_BACKOFF)
}

/// What one pass of the notifier did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Deliveries sent (each delivery of a digest counts).
    pub sent: usize,
    /// Deliveries that failed and will be tried again.
    pub retried: usize,
    /// Deliveries given up on.
    pub failed: usize,
    /// Digest emails sent.
    pub digests: usize,
}

impl RunReport {
    fn count(&mut self, status: DeliveryStatus) {
        match status {
            DeliveryStatus::Sent => self.sent += 1,
            DeliveryStatus::Pending => self.retried += 1,
            DeliveryStatus::Failed => self.failed += 1,
            DeliveryStatus::Skipped => {}
        }
    }
}

/// Sends due deliveries, once ([`Notifier::run_once`]) or in a loop ([`Notifier::run`]).
#[derive(Clone, Debug)]
pub struct Notifier {
    config: Arc<NotifyConfig>,
}

impl Notifier {
    pub fn new(config: Arc<NotifyConfig>) -> Self {
        Self { config }
    }

    /// Sends every pending delivery due now: one at a time, except a recipient's digest
    /// emails, which go out as one email. Every outcome is written to the delivery log.
    pub async fn run_once(&self) -> StoreResult<RunReport> {
        let config = &self.config;
        let mut report = RunReport::default();
        let mut seen = HashSet::new();
        loop {
            let now = config.clock.now();
            let due = config.store.deliveries_due(now, BATCH).await?;
            let full = due.len() >= BATCH as usize;
            let fresh: Vec<DeliveryRow> = due.into_iter().filter(|row| seen.insert(row.id)).collect();
            if fresh.is_empty() {
                break;
            }
            let mut digests: BTreeMap<String, Vec<DeliveryRow>> = BTreeMap::new();
            for row in fresh {
                if row.digest && row.channel == EMAIL {
                    digests.entry(row.recipient.clone()).or_default().push(row);
                } else if let Some(done) = attempt(config, &row).await? {
                    report.count(done.status);
                }
            }
            for rows in digests.into_values() {
                let statuses = send_digest(config, rows).await?;
                if !statuses.is_empty() {
                    report.digests += 1;
                }
                for status in statuses {
                    report.count(status);
                }
            }
            if !full {
                break;
            }
        }
        Ok(report)
    }

    /// Runs [`Notifier::run_once`] every `poll_interval` of the configured clock until
    /// `cancel` is cancelled. Store errors are logged and the loop goes on.
    pub async fn run(self, cancel: CancellationToken) {
        loop {
            match self.run_once().await {
                Ok(report) if report != RunReport::default() => tracing::debug!(?report, "notifier pass"),
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "the notifier could not read or update the delivery log"),
            }
            let next = self.config.clock.now()
                + chrono::Duration::from_std(self.config.poll_interval).unwrap_or(chrono::Duration::seconds(5));
            tokio::select! {
                () = cancel.cancelled() => return,
                () = self.config.clock.sleep_until(next) => {}
            }
        }
    }
}

/// Whether the delivery is still pending with the attempts `row` read (nobody else sent it
/// since).
async fn still_pending(config: &NotifyConfig, row: &DeliveryRow) -> StoreResult<bool> {
    let query = DeliveryQuery {
        instance: Some(row.instance.clone()),
        recipient: Some(row.recipient.clone()),
        status: Some(DeliveryStatus::Pending),
        before: Some(row.id.saturating_add(1)),
        limit: 1,
    };
    let current = config.store.deliveries(&query).await?;
    Ok(current.first().is_some_and(|now| now.id == row.id && now.attempts == row.attempts))
}

/// One attempt at one delivery, recorded; `None` when this process is already sending it or
/// it is no longer pending.
pub(crate) async fn attempt(config: &NotifyConfig, row: &DeliveryRow) -> StoreResult<Option<DeliveryRow>> {
    let Some(_claim) = config.channels.claim(row.id) else { return Ok(None) };
    if !still_pending(config, row).await? {
        return Ok(None);
    }
    let result = deliver(config, row).await;
    let update = outcome(config, row, &result, config.clock.now());
    config.store.update_delivery(&update).await?;
    Ok(Some(applied(row, &update)))
}

fn applied(row: &DeliveryRow, update: &DeliveryUpdate) -> DeliveryRow {
    DeliveryRow {
        status: update.status,
        attempts: update.attempts,
        not_before: update.not_before,
        last_error: update.last_error.clone(),
        sent_at: update.sent_at,
        ..row.clone()
    }
}

fn outcome(
    config: &NotifyConfig,
    row: &DeliveryRow,
    result: &Result<(), SendError>,
    now: DateTime<Utc>,
) -> DeliveryUpdate {
    let attempts = row.attempts.saturating_add(1);
    let mut update = DeliveryUpdate {
        id: row.id,
        status: DeliveryStatus::Sent,
        attempts,
        not_before: row.not_before,
        last_error: None,
        sent_at: None,
    };
    match result {
        Ok(()) => update.sent_at = Some(now),
        Err(error) => {
            let key = idempotency_key(row);
            match error {
                SendError::Retry(message) if attempts < config.max_attempts.max(1) => {
                    let delay = backoff(attempts);
                    tracing::warn!(delivery = row.id, %key, attempts, error = %message, retry_in = ?delay, "a delivery failed; it will be retried");
                    update.status = DeliveryStatus::Pending;
                    update.not_before = now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::hours(1));
                    update.last_error = Some(message.clone());
                }
                SendError::Retry(message) => {
                    tracing::warn!(delivery = row.id, %key, attempts, error = %message, "a delivery failed for good");
                    update.status = DeliveryStatus::Failed;
                    update.last_error = Some(format!("{message} (gave up after {attempts} attempts)"));
                }
                SendError::Permanent(message) => {
                    tracing::warn!(delivery = row.id, %key, error = %message, "a delivery cannot be sent");
                    update.status = DeliveryStatus::Failed;
                    update.last_error = Some(message.clone());
                }
                SendError::Unconfigured(message) => {
                    if config.channels.first_unconfigured(message) {
                        tracing::warn!(error = %message, "deliveries on this channel fail until it is configured; each is kept in the delivery log as failed");
                    }
                    tracing::debug!(delivery = row.id, %key, error = %message, "a delivery cannot be sent");
                    update.status = DeliveryStatus::Failed;
                    update.last_error = Some(message.clone());
                }
            }
        }
    }
    update
}

fn field<'a>(row: &'a DeliveryRow, name: &str) -> &'a str {
    row.message.get(name).and_then(Value::as_str).unwrap_or_default()
}

/// Sends one recipient's due digest deliveries as one email; returns their new statuses.
async fn send_digest(config: &NotifyConfig, rows: Vec<DeliveryRow>) -> StoreResult<Vec<DeliveryStatus>> {
    let mut claims = Vec::new();
    let mut taken = Vec::new();
    for row in rows {
        if let Some(claim) = config.channels.claim(row.id)
            && still_pending(config, &row).await?
        {
            claims.push(claim);
            taken.push(row);
        }
    }
    let Some(latest) = taken.iter().max_by_key(|row| row.id) else { return Ok(Vec::new()) };
    let (subject, text, html) = digest_body(config, latest, &taken);
    let result = match &config.smtp {
        None => Err(SendError::Unconfigured("no SMTP server is configured for the email channel".into())),
        Some(smtp) => {
            let email = Email {
                to: field(latest, "to"),
                subject: &subject,
                text: &text,
                html: html.as_deref(),
                message_id: &message_id(&format!("digest:{}", idempotency_key(latest))),
            };
            send_email(config, smtp, &email).await
        }
    };
    let now = config.clock.now();
    let mut statuses = Vec::with_capacity(taken.len());
    for row in &taken {
        let update = outcome(config, row, &result, now);
        config.store.update_delivery(&update).await?;
        statuses.push(update.status);
    }
    drop(claims);
    Ok(statuses)
}

/// The digest's subject, text and HTML: the global `digest` template when there is one, else
/// a plain list of the notifications.
fn digest_body(config: &NotifyConfig, latest: &DeliveryRow, rows: &[DeliveryRow]) -> (String, String, Option<String>) {
    let items: Vec<Value> = rows
        .iter()
        .map(|row| {
            json!({
                "subject": field(row, "subject"),
                "text": field(row, "text"),
                "html": row.message.get("html"),
                "link": row.message.get("link"),
                "instance": row.instance.as_str(),
            })
        })
        .collect();
    let recipient = latest.message.get("recipient").cloned().unwrap_or_else(|| json!({ "id": latest.recipient }));
    let locale = recipient.get("locale").and_then(Value::as_str).map(str::to_owned);
    let data = json!({ "recipient": recipient, "count": rows.len(), "items": items });
    match config.templates.render(None, DIGEST_TEMPLATE, locale.as_deref(), &config.default_locale, &data) {
        Ok(Some(rendered)) => return (rendered.subject, rendered.text, rendered.html),
        Ok(None) => {}
        Err(error) => tracing::warn!(%error, "the digest template failed; the plain digest is sent instead"),
    }
    let subject =
        if rows.len() == 1 { field(&rows[0], "subject").to_owned() } else { format!("{} notifications", rows.len()) };
    let mut text = String::new();
    let mut html = String::new();
    let mut any_html = false;
    for (index, row) in rows.iter().enumerate() {
        if index > 0 {
            text.push_str("\n----\n\n");
        }
        text.push_str(field(row, "subject"));
        text.push_str("\n\n");
        text.push_str(field(row, "text"));
        text.push('\n');
        html.push_str(&format!("<h2>{}</h2>\n", handlebars::html_escape(field(row, "subject"))));
        match row.message.get("html").and_then(Value::as_str) {
            Some(body) => {
                any_html = true;
                html.push_str(body);
                html.push('\n');
            }
            None => html.push_str(&format!("<p>{}</p>\n", handlebars::html_escape(field(row, "text")))),
        }
    }
    (subject, text, any_html.then_some(html))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_thirty_seconds_up_to_an_hour() {
        assert_eq!(backoff(1), Duration::from_secs(30));
        assert_eq!(backoff(2), Duration::from_secs(60));
        assert_eq!(backoff(3), Duration::from_secs(120));
        assert_eq!(backoff(8), Duration::from_secs(3600));
        assert_eq!(backoff(u32::MAX), Duration::from_secs(3600));
    }
}
