//! `baton.amqp.publish` against a real RabbitMQ (BATON_AMQP_URL, default the local broker
//! with guest/guest): a confirmed message reaches a bound queue with the activity's idempotency
//! key as its message id; an unroutable one fails without a retry; an unknown exchange fails
//! for a retry and the next message goes through a new channel.
//!
//! Without a broker the test is skipped with a note, unless `BATON_REQUIRE_SERVICES=1`.

use std::sync::Arc;

use baton_activities::{AMQP_PUBLISH_ACTIVITY, AmqpConfig, AmqpPublisher};
use baton_engine::{ActivityContext, ActivityError, Clock, InstanceId, SystemClock};
use lapin::options::{BasicGetOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties};
use serde_json::{Value, json};

fn uri() -> String {
    std::env::var("BATON_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

async fn broker() -> Option<Connection> {
    match Connection::connect(&uri(), ConnectionProperties::default()).await {
        Ok(connection) => Some(connection),
        Err(err) if std::env::var("BATON_REQUIRE_SERVICES").is_ok_and(|v| v == "1") => {
            panic!("RabbitMQ is required (BATON_REQUIRE_SERVICES=1) but does not answer at {}: {err}", uri())
        }
        Err(err) => {
            eprintln!("skipped: no RabbitMQ at {} ({err}); set BATON_REQUIRE_SERVICES=1 to fail instead", uri());
            None
        }
    }
}

fn ctx(seq: u64, attempt: u32) -> ActivityContext {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    ActivityContext::new(InstanceId::new("amqp-test"), seq, attempt, AMQP_PUBLISH_ACTIVITY, clock)
}

#[tokio::test]
async fn a_confirmed_message_reaches_its_queue_and_an_unroutable_one_fails_for_good() {
    let Some(connection) = broker().await else { return };
    let channel = connection.create_channel().await.expect("a channel");
    let queue = format!("baton-test-{}", std::process::id());
    let declare = QueueDeclareOptions { auto_delete: true, ..QueueDeclareOptions::default() };
    channel.queue_declare(queue.as_str().into(), declare, FieldTable::default()).await.expect("declared");
    channel
        .queue_bind(
            queue.as_str().into(),
            "amq.topic".into(),
            "training.#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bound");

    let publisher = AmqpPublisher::new(AmqpConfig { uri: uri() });
    let message = json!({ "session": "s-7", "program": "forklift" });
    let published = publisher
        .publish(
            &ctx(4, 1),
            json!({
                "exchange": "amq.topic",
                "routingKey": "training.scheduled",
                "message": message,
                "headers": { "source": "baton" },
            }),
        )
        .await
        .expect("confirmed");
    assert_eq!(published, json!({ "published": true, "messageId": "amqp-test:4" }));
    let got = channel
        .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .expect("get")
        .expect("the message is in the queue");
    let body: Value = serde_json::from_slice(&got.delivery.data).expect("JSON");
    assert_eq!(body, message);
    let properties = &got.delivery.properties;
    assert_eq!(
        properties.message_id().as_ref().map(|id| id.as_str()),
        Some("amqp-test:4"),
        "consumers deduplicate on it"
    );
    assert_eq!(properties.content_type().as_ref().map(|t| t.as_str()), Some("application/json"));
    assert_eq!(properties.delivery_mode(), &Some(2), "persistent");
    let source = properties.headers().as_ref().and_then(|h| h.inner().get("source").cloned());
    assert!(matches!(&source, Some(AMQPValue::LongString(s)) if s.to_string() == "baton"), "{source:?}");

    // No queue is bound for this key: the broker returns it, and a retry would not help.
    let unroutable = publisher
        .publish(&ctx(5, 1), json!({ "exchange": "amq.topic", "routingKey": "payroll.closed", "message": "x" }))
        .await
        .expect_err("unroutable");
    assert!(
        matches!(&unroutable, ActivityError::NonRetryable(message) if message.contains("payroll.closed")),
        "{unroutable:?}"
    );

    // An exchange that does not exist closes the channel: retryable, and the next publish
    // opens a new one.
    let missing = publisher
        .publish(&ctx(6, 1), json!({ "exchange": "no-such-exchange", "routingKey": "k", "message": {} }))
        .await
        .expect_err("no exchange");
    assert!(matches!(missing, ActivityError::Retryable(_)), "{missing:?}");
    publisher
        .publish(&ctx(7, 1), json!({ "exchange": "", "routingKey": queue, "message": "plain text" }))
        .await
        .expect("a new channel after the failure");
    let got =
        channel.basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true }).await.expect("get").expect("there");
    assert_eq!(got.delivery.data, b"plain text");
    assert_eq!(got.delivery.properties.content_type().as_ref().map(|t| t.as_str()), Some("text/plain"));

    let bad = publisher.publish(&ctx(8, 1), json!({ "routingKey": "k" })).await.expect_err("no message");
    assert!(matches!(bad, ActivityError::NonRetryable(_)), "{bad:?}");
    channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await.expect("deleted");
}
