//! Baton's gRPC API: the messages, services and clients generated from
//! `baton/v1/baton.proto`, and the conversions between `google.protobuf.Value` and JSON.

#[allow(missing_debug_implementations, clippy::all)]
pub mod v1 {
    tonic::include_proto!("baton.v1");
}

/// The compiled descriptors of the API (for reflection, and for tests that list its methods).
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/baton.bin"));

pub mod json {
    //! `google.protobuf.Value` ⇄ JSON.

    use prost_types::value::Kind;
    use prost_types::{ListValue, Struct, Value};

    /// A JSON value as a protobuf Value.
    pub fn to_proto(value: serde_json::Value) -> Value {
        let kind = match value {
            serde_json::Value::Null => Kind::NullValue(0),
            serde_json::Value::Bool(b) => Kind::BoolValue(b),
            serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
            serde_json::Value::String(s) => Kind::StringValue(s),
            serde_json::Value::Array(items) => {
                Kind::ListValue(ListValue { values: items.into_iter().map(to_proto).collect() })
            }
            serde_json::Value::Object(map) => {
                Kind::StructValue(Struct { fields: map.into_iter().map(|(k, v)| (k, to_proto(v))).collect() })
            }
        };
        Value { kind: Some(kind) }
    }

    /// A protobuf Value as JSON; whole numbers come back as integers.
    pub fn from_proto(value: Value) -> serde_json::Value {
        match value.kind {
            None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
            Some(Kind::BoolValue(b)) => serde_json::Value::Bool(b),
            Some(Kind::NumberValue(n)) if n.fract() == 0.0 && n.abs() < 9.0e15 => serde_json::Value::from(n as i64),
            Some(Kind::NumberValue(n)) => serde_json::Number::from_f64(n).map_or(serde_json::Value::Null, Into::into),
            Some(Kind::StringValue(s)) => serde_json::Value::String(s),
            Some(Kind::ListValue(list)) => list.values.into_iter().map(from_proto).collect(),
            Some(Kind::StructValue(s)) => {
                serde_json::Value::Object(s.fields.into_iter().map(|(k, v)| (k, from_proto(v))).collect())
            }
        }
    }

    /// serde for an optional `google.protobuf.Value` field: plain JSON, null when absent.
    pub mod optional {
        use serde::{Deserialize, Deserializer, Serialize, Serializer};

        pub fn serialize<S: Serializer>(value: &Option<prost_types::Value>, serializer: S) -> Result<S::Ok, S::Error> {
            value.clone().map(super::from_proto).unwrap_or_default().serialize(serializer)
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<prost_types::Value>, D::Error> {
            let value = serde_json::Value::deserialize(deserializer)?;
            Ok((!value.is_null()).then(|| super::to_proto(value)))
        }
    }
}
