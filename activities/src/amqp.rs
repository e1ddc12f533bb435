//! The `baton.amqp.publish` activity: publishes a message to a RabbitMQ (AMQP 0-9-1) exchange
//! with publisher confirms, so that the activity completes only once the broker has taken the
//! message.
//!
//! ```yaml
//! - announce:
//!     call: baton.amqp.publish
//!     with:
//!       exchange: training
//!       routingKey: training.scheduled
//!       message: ${ {session: .id, program: .program} }
//! ```
//!
//! The message's `message_id` is the activity's idempotency key (`instance:seq`), the same on
//! every attempt: delivery is at least once, so consumers deduplicate on it. Messages are
//! published `mandatory`: one no queue takes fails the activity (not retried: retrying would
//! not make a route appear) instead of vanishing. A lost connection is opened again on the next
//! attempt; the attempt that lost it is retried.

use std::sync::Arc;

use baton_engine::{ActivityContext, ActivityError, ActivityRegistry};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Mutex;

/// The activity's name: `call: baton.amqp.publish`.
pub const AMQP_PUBLISH_ACTIVITY: &str = "baton.amqp.publish";

/// Where messages go: the broker's URI (`amqp://user:password@host:5672/vhost`, or `amqps://`
/// for TLS).
#[derive(Clone)]
pub struct AmqpConfig {
    pub uri: String,
}

impl std::fmt::Debug for AmqpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URI may hold a password.
        f.debug_struct("AmqpConfig").finish_non_exhaustive()
    }
}

/// What a task asks to publish.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Publish {
    /// The exchange; `""` is the default exchange, which routes by queue name.
    #[serde(default)]
    exchange: String,
    routing_key: String,
    /// JSON (sent as `application/json`) or a string (sent as is, `text/plain` unless
    /// `contentType` says otherwise).
    message: Value,
    #[serde(default)]
    content_type: Option<String>,
    /// String headers.
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
    /// Kept on disk by the broker (delivery mode 2). Default true.
    #[serde(default = "yes")]
    persistent: bool,
}

fn yes() -> bool {
    true
}

/// Publishes for `baton.amqp.publish`: one connection and confirm-mode channel, opened on
/// first use and again after a failure.
pub struct AmqpPublisher {
    config: AmqpConfig,
    open: Mutex<Option<(Connection, Channel)>>,
}

impl std::fmt::Debug for AmqpPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpPublisher").finish_non_exhaustive()
    }
}

impl AmqpPublisher {
    pub fn new(config: AmqpConfig) -> Self {
        Self { config, open: Mutex::new(None) }
    }

    async fn channel(&self, open: &mut Option<(Connection, Channel)>) -> Result<Channel, lapin::Error> {
        if let Some((connection, channel)) = open.as_ref()
            && connection.status().connected()
            && channel.status().connected()
        {
            return Ok(channel.clone());
        }
        let connection = Connection::connect(&self.config.uri, ConnectionProperties::default()).await?;
        let channel = connection.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        *open = Some((connection, channel.clone()));
        Ok(channel)
    }

    /// Publishes the message `input` describes and waits for the broker's confirmation.
    pub async fn publish(&self, ctx: &ActivityContext, input: Value) -> Result<Value, ActivityError> {
        let request: Publish = serde_json::from_value(input)
            .map_err(|err| ActivityError::non_retryable(format!("{AMQP_PUBLISH_ACTIVITY}: {err}")))?;
        let (payload, content_type) = match &request.message {
            Value::String(text) => (text.clone().into_bytes(), "text/plain"),
            other => (other.to_string().into_bytes(), "application/json"),
        };
        let message_id = ctx.idempotency_key();
        let mut headers = FieldTable::default();
        for (name, value) in &request.headers {
            headers.insert(ShortString::from(name.as_str()), AMQPValue::LongString(LongString::from(value.as_str())));
        }
        let properties = BasicProperties::default()
            .with_message_id(ShortString::from(message_id.as_str()))
            .with_content_type(ShortString::from(request.content_type.as_deref().unwrap_or(content_type)))
            .with_delivery_mode(if request.persistent { 2 } else { 1 })
            .with_headers(headers);
        let options = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };

        let mut open = self.open.lock().await;
        let lost = |err: lapin::Error| ActivityError::retryable(format!("the AMQP broker: {err}"));
        let channel = self.channel(&mut open).await.map_err(lost)?;
        let confirmation = async {
            channel
                .basic_publish(
                    ShortString::from(request.exchange.as_str()),
                    ShortString::from(request.routing_key.as_str()),
                    options,
                    &payload,
                    properties,
                )
                .await?
                .await
        }
        .await;
        let confirmation = match confirmation {
            Ok(confirmation) => confirmation,
            Err(err) => {
                // The connection or channel is gone (an unknown exchange closes the channel):
                // the next attempt opens a new one.
                *open = None;
                return Err(lost(err));
            }
        };
        match confirmation {
            Confirmation::Ack(None) => Ok(json!({ "published": true, "messageId": message_id })),
            Confirmation::Ack(Some(returned)) => Err(ActivityError::non_retryable(format!(
                "no queue takes messages from exchange `{}` with routing key `{}` ({})",
                request.exchange, request.routing_key, returned.reply_text
            ))),
            Confirmation::Nack(_) => Err(ActivityError::retryable("the AMQP broker refused the message (nack)")),
            Confirmation::NotRequested => Err(ActivityError::retryable("the AMQP channel is not in confirm mode")),
        }
    }
}

/// Registers `baton.amqp.publish` against the broker `config` names; the connection opens on
/// the first message.
pub fn register_amqp(registry: &mut ActivityRegistry, config: AmqpConfig) {
    let publisher = Arc::new(AmqpPublisher::new(config));
    registry.register(AMQP_PUBLISH_ACTIVITY, move |ctx, input| {
        let publisher = Arc::clone(&publisher);
        async move { publisher.publish(&ctx, input).await }
    });
}
