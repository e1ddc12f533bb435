//! The CloudEvents 1.0 HTTP binding, both modes and batches. Our own small reading of the
//! spec: the official SDK's axum binding does not build with axum 0.8 (see
//! docs/architecture.md).

use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use serde_json::{Map, Value};

use crate::problem::{ApiResult, Problem};

/// A CloudEvent, with the attributes the engine uses apart.
#[derive(Clone, Debug, PartialEq)]
pub struct CloudEvent {
    pub id: String,
    /// The `type` attribute.
    pub kind: String,
    pub source: String,
    /// Every attribute and `data`, as structured mode writes them.
    pub attributes: Map<String, Value>,
}

impl CloudEvent {
    /// The event as structured-mode JSON: what a workflow's `listen` sees.
    pub fn into_json(self) -> Value {
        Value::Object(self.attributes)
    }

    fn from_structured(value: Value) -> ApiResult<Self> {
        let Value::Object(attributes) = value else {
            return Err(Problem::bad_request("a structured CloudEvent is a JSON object"));
        };
        let text = |name: &str| -> ApiResult<String> {
            match attributes.get(name) {
                Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
                _ => Err(Problem::bad_request(format!("the CloudEvent has no `{name}` (a non-empty string)"))),
            }
        };
        if text("specversion")? != "1.0" {
            return Err(Problem::bad_request("only CloudEvents specversion 1.0 is understood"));
        }
        Ok(Self { id: text("id")?, kind: text("type")?, source: text("source")?, attributes })
    }
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// The events of an HTTP request: a batch, one structured event, or one binary event.
pub fn from_http(headers: &HeaderMap, body: &[u8]) -> ApiResult<Vec<CloudEvent>> {
    let media = content_type(headers);
    let json = || -> ApiResult<Value> {
        serde_json::from_slice(body).map_err(|e| Problem::bad_request(format!("the body is not JSON: {e}")))
    };
    match media.as_str() {
        "application/cloudevents-batch+json" => match json()? {
            Value::Array(items) => items.into_iter().map(CloudEvent::from_structured).collect(),
            _ => Err(Problem::bad_request("a CloudEvents batch is a JSON array")),
        },
        "application/cloudevents+json" => Ok(vec![CloudEvent::from_structured(json()?)?]),
        _ if headers.contains_key("ce-specversion") => Ok(vec![binary(headers, &media, body)?]),
        _ => Err(Problem::bad_request(
            "send a CloudEvent: structured (Content-Type: application/cloudevents+json), binary (ce-specversion, ce-id, ce-type and ce-source headers) or a batch (application/cloudevents-batch+json)",
        )),
    }
}

fn binary(headers: &HeaderMap, media: &str, body: &[u8]) -> ApiResult<CloudEvent> {
    let mut attributes = Map::new();
    for (name, value) in headers {
        let Some(attribute) = name.as_str().strip_prefix("ce-") else { continue };
        let value = value.to_str().map_err(|_| Problem::bad_request(format!("header {name} is not text")))?;
        let value = percent_decode(value);
        attributes.insert(attribute.to_owned(), Value::String(value));
    }
    if !media.is_empty() {
        attributes.insert("datacontenttype".into(), Value::String(media.to_owned()));
    }
    if !body.is_empty() {
        let data = if media.is_empty() || media == "application/json" || media.ends_with("+json") {
            serde_json::from_slice(body)
                .map_err(|e| Problem::bad_request(format!("the event data is not JSON: {e}")))?
        } else {
            match std::str::from_utf8(body) {
                Ok(text) => Value::String(text.to_owned()),
                Err(_) => {
                    use base64::Engine as _;
                    attributes.insert(
                        "data_base64".into(),
                        Value::String(base64::engine::general_purpose::STANDARD.encode(body)),
                    );
                    return CloudEvent::from_structured(Value::Object(attributes));
                }
            }
        };
        attributes.insert("data".into(), data);
    }
    CloudEvent::from_structured(Value::Object(attributes))
}

/// Header values are percent-encoded where they hold characters outside printable ASCII.
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = value.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| value.to_owned())
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use serde_json::json;

    use super::*;

    #[test]
    fn structured_binary_and_batch_give_the_same_event() {
        let mut structured = HeaderMap::new();
        structured.insert(CONTENT_TYPE, HeaderValue::from_static("application/cloudevents+json; charset=utf-8"));
        let event = json!({"specversion": "1.0", "id": "e1", "type": "approved", "source": "/hr", "datacontenttype": "application/json", "data": {"ok": true}});
        let one = from_http(&structured, event.to_string().as_bytes()).expect("structured");

        let mut binary = HeaderMap::new();
        binary.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, value) in [("ce-specversion", "1.0"), ("ce-id", "e1"), ("ce-type", "approved"), ("ce-source", "/hr")]
        {
            binary.insert(name, HeaderValue::from_static(value));
        }
        let two = from_http(&binary, br#"{"ok": true}"#).expect("binary");
        assert_eq!(one, two);

        let mut batch = HeaderMap::new();
        batch.insert(CONTENT_TYPE, HeaderValue::from_static("application/cloudevents-batch+json"));
        let three = from_http(&batch, json!([event, event]).to_string().as_bytes()).expect("batch");
        assert_eq!(three.len(), 2);
        assert_eq!(three[0], one[0]);
    }

    #[test]
    fn an_event_without_its_required_attributes_is_refused() {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/cloudevents+json"));
        let problem =
            from_http(&headers, br#"{"specversion": "1.0", "type": "t", "source": "/s"}"#).expect_err("no id");
        assert!(problem.detail.contains("`id`"), "{}", problem.detail);
        let problem = from_http(&HeaderMap::new(), b"{}").expect_err("not a CloudEvent");
        assert!(problem.detail.contains("structured"), "{}", problem.detail);
    }

    #[test]
    fn percent_encoded_header_values_are_decoded() {
        assert_eq!(percent_decode("caf%C3%A9"), "café");
        assert_eq!(percent_decode("100%"), "100%");
    }
}
