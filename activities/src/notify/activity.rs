//! The `baton.notify` activity: render, record every delivery, send what is due now.

use baton_engine::directory::Person;
use baton_engine::store::{DeliveryRow, DeliveryStatus, NewDelivery};
use baton_engine::{ActivityContext, ActivityError};
use serde_json::{Map, Value, json};

use super::channels::{CHANNELS, EMAIL, IN_APP, SMS};
use super::notifier::attempt;
use super::preferences::timing;
use super::recipients;
use super::{NotifyConfig, Rendered};
use crate::auth::Sensitive;
use crate::problem::Problem;

/// Channels used when neither the call nor the template names any.
const DEFAULT_CHANNELS: [&str; 2] = [IN_APP, EMAIL];

fn failed(problem: Problem) -> ActivityError {
    problem.into_activity_error(&Sensitive::default())
}

fn store_error(error: baton_engine::StoreError) -> ActivityError {
    ActivityError::Retryable(format!("the notification store: {error}"))
}

struct Input {
    definition: Option<String>,
    template: String,
    targets: Vec<recipients::Target>,
    channels: Option<Vec<String>>,
    data: Map<String, Value>,
    link: Option<String>,
}

fn read_input(input: &Value) -> Result<Input, Problem> {
    let Value::Object(fields) = input else {
        return Err(Problem::validation(format!("the notify input must be a mapping, found {input}")));
    };
    const KNOWN: [&str; 6] = ["definition", "template", "to", "channels", "data", "link"];
    if let Some(unknown) = fields.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(Problem::validation(format!("unknown field {unknown:?}, expected one of {}", KNOWN.join(", "))));
    }
    let string = |key: &str| -> Result<Option<String>, Problem> {
        match fields.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(Problem::validation(format!("{key}: expected a string, found {other}"))),
        }
    };
    let template = string("template")?.ok_or_else(|| Problem::validation("template: missing"))?;
    let targets = match fields.get("to") {
        None | Some(Value::Null) => return Err(Problem::validation("to: missing; name at least one recipient")),
        Some(to) => recipients::parse(to).map_err(Problem::validation)?,
    };
    let channels = match fields.get("channels") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => {
            let mut channels = Vec::new();
            for item in items {
                match item.as_str() {
                    Some(c) if CHANNELS.contains(&c) => {
                        if !channels.iter().any(|known| known == c) {
                            channels.push(c.to_owned());
                        }
                    }
                    _ => {
                        return Err(Problem::validation(format!(
                            "channels: unknown channel {item}, expected {}",
                            CHANNELS.join(", ")
                        )));
                    }
                }
            }
            Some(channels)
        }
        Some(other) => return Err(Problem::validation(format!("channels: expected a list, found {other}"))),
    };
    let data = match fields.get("data") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(data)) => data.clone(),
        Some(other) => return Err(Problem::validation(format!("data: expected a mapping, found {other}"))),
    };
    Ok(Input { definition: string("definition")?, template, targets, channels, data, link: string("link")? })
}

/// What the template sees of a recipient.
fn recipient_value(person: &Person) -> Value {
    json!({ "id": person.id, "name": person.name, "email": person.email, "locale": person.locale })
}

/// Runs the notify activity: see the module documentation for its input and output.
pub async fn notify(config: &NotifyConfig, ctx: &ActivityContext, input: &Value) -> Result<Value, ActivityError> {
    let input = read_input(input).map_err(failed)?;
    let definition = input.definition.as_deref();
    if !config.templates.contains(definition, &input.template) {
        let scope = definition.map_or(String::new(), |d| format!(" of {d} nor"));
        return Err(failed(Problem::configuration(format!(
            "there is no template '{}'{scope} among the global templates",
            input.template
        ))));
    }
    let channels: Vec<String> = input
        .channels
        .clone()
        .or_else(|| config.templates.channels(definition, &input.template))
        .unwrap_or_else(|| DEFAULT_CHANNELS.iter().map(|c| (*c).to_owned()).collect());

    let (people, unresolved) =
        match recipients::resolve(config.store.as_ref(), &input.targets).await.map_err(store_error)? {
            Ok(found) => found,
            Err(message) => return Err(failed(Problem::validation(message))),
        };
    if people.is_empty() {
        return Err(failed(Problem::validation(format!(
            "no recipient: {} named no active person in the directory",
            unresolved.join(", ")
        ))));
    }
    if !unresolved.is_empty() {
        tracing::warn!(instance = %ctx.instance, seq = ctx.seq, unresolved = ?unresolved, "some recipients named nobody");
    }

    let now = config.clock.now();
    let mut deliveries = Vec::with_capacity(people.len() * channels.len());
    for person in &people {
        let mut data = input.data.clone();
        data.insert("recipient".into(), recipient_value(person));
        data.insert("instance".into(), json!(ctx.instance.as_str()));
        let rendered = config
            .templates
            .render(definition, &input.template, person.locale.as_deref(), &config.default_locale, &Value::Object(data))
            .map_err(|error| failed(Problem::expression(error.to_string())))?
            .ok_or_else(|| {
                failed(Problem::configuration(format!("the template '{}' was removed meanwhile", input.template)))
            })?;
        for channel in &channels {
            deliveries.push(delivery(config, ctx, &input, person, channel, &rendered, now));
        }
    }
    let rows = config.store.enqueue_deliveries(&deliveries).await.map_err(store_error)?;

    let mut report = Vec::with_capacity(rows.len());
    let mut counts = [0u64; 4];
    for row in rows {
        let status = if row.status == DeliveryStatus::Pending && !row.digest && row.not_before <= now {
            match attempt(config, &row).await.map_err(store_error)? {
                Some(outcome) => outcome,
                None => row.clone(),
            }
        } else {
            row
        };
        counts[match status.status {
            DeliveryStatus::Sent => 0,
            DeliveryStatus::Pending => 1,
            DeliveryStatus::Skipped => 2,
            DeliveryStatus::Failed => 3,
        }] += 1;
        report.push(summary(&status));
    }
    let mut output = json!({
        "deliveries": report,
        "sent": counts[0],
        "pending": counts[1],
        "skipped": counts[2],
        "failed": counts[3],
    });
    if !unresolved.is_empty() {
        output["unresolved"] = json!(unresolved);
    }
    Ok(output)
}

fn summary(row: &DeliveryRow) -> Value {
    let mut out = json!({
        "id": row.id,
        "recipient": row.recipient,
        "channel": row.channel,
        "status": row.status.as_str(),
    });
    if let Some(reason) = &row.last_error {
        out["reason"] = json!(reason);
    }
    if row.status == DeliveryStatus::Pending {
        out["notBefore"] = json!(row.not_before);
        if row.digest {
            out["digest"] = json!(true);
        }
    }
    out
}

fn delivery(
    config: &NotifyConfig,
    ctx: &ActivityContext,
    input: &Input,
    person: &Person,
    channel: &str,
    rendered: &Rendered,
    now: chrono::DateTime<chrono::Utc>,
) -> NewDelivery {
    let mut message = json!({
        "template": input.template,
        "definition": input.definition,
        "locale": rendered.locale,
        "subject": rendered.subject,
        "text": rendered.text,
        "recipient": recipient_value(person),
    });
    if let Some(html) = &rendered.html {
        message["html"] = json!(html);
    }
    if let Some(link) = &input.link {
        message["link"] = json!(link);
    }
    let address = match channel {
        EMAIL => person.email.as_deref().filter(|a| !a.trim().is_empty()),
        SMS => person.phone.as_deref().filter(|a| !a.trim().is_empty()),
        _ => None,
    };
    if let Some(address) = address {
        message["to"] = json!(address);
    }
    let skipped = if !person.preferences.channel_on(channel) {
        Some(format!("{} turned the {channel} channel off", person.id))
    } else if channel == EMAIL && address.is_none() {
        Some(format!("{} has no email address", person.id))
    } else if channel == SMS && address.is_none() {
        Some(format!("{} has no phone number", person.id))
    } else {
        None
    };
    let timing = timing(&config.calendars, person, channel, now);
    NewDelivery {
        instance: ctx.instance.clone(),
        seq: ctx.seq,
        recipient: person.id.clone(),
        channel: channel.to_owned(),
        status: if skipped.is_some() { DeliveryStatus::Skipped } else { DeliveryStatus::Pending },
        message,
        not_before: if skipped.is_some() { now } else { timing.not_before },
        digest: skipped.is_none() && timing.digest,
        last_error: skipped,
        created_at: now,
    }
}
