//! Hiding secret values in what is bound for history, logs and error messages.

use serde_json::Value;

/// What stands in for a secret.
const MASK: &str = "***";

/// Secret values shorter than this are not masked: masking `"a"` or `"true"` everywhere would
/// destroy unrelated data and tell an observer little anyway.
pub const MIN_SECRET_CHARS: usize = 4;

/// The texts to hide: every string leaf of `secrets` (and number leaves, as written) of at
/// least [`MIN_SECRET_CHARS`] characters, also as they appear escaped inside JSON text; longest
/// first so that a secret containing another is hidden whole.
fn needles(secrets: &Value) -> Vec<String> {
    fn leaves(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) => out.push(s.clone()),
            Value::Number(n) => out.push(n.to_string()),
            Value::Array(items) => items.iter().for_each(|v| leaves(v, out)),
            Value::Object(fields) => fields.values().for_each(|v| leaves(v, out)),
            Value::Null | Value::Bool(_) => {}
        }
    }
    let mut raw = Vec::new();
    leaves(secrets, &mut raw);
    let mut out = Vec::new();
    for s in raw.into_iter().filter(|s| s.chars().count() >= MIN_SECRET_CHARS) {
        let quoted = Value::String(s.clone()).to_string();
        let escaped = &quoted[1..quoted.len() - 1];
        if escaped != s {
            out.push(escaped.to_owned());
        }
        out.push(s);
    }
    out.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    out.dedup();
    out
}

fn mask_with(text: &str, needles: &[String]) -> Option<String> {
    let mut out: Option<String> = None;
    for needle in needles {
        let current = out.as_deref().unwrap_or(text);
        if current.contains(needle.as_str()) {
            out = Some(current.replace(needle.as_str(), MASK));
        }
    }
    out
}

/// `text` with every occurrence of a secret value of `secrets` replaced by `***`.
pub fn mask_text(text: &str, secrets: &Value) -> String {
    mask_with(text, &needles(secrets)).unwrap_or_else(|| text.to_owned())
}

/// `value` with every occurrence of a secret value of `secrets` (the leaves of the secrets
/// object, at least [`MIN_SECRET_CHARS`] long) replaced by `***` inside strings and object keys;
/// a number equal to a numeric secret becomes `"***"`.
pub fn mask(value: &Value, secrets: &Value) -> Value {
    let needles = needles(secrets);
    if needles.is_empty() {
        return value.clone();
    }
    fn go(v: &Value, needles: &[String]) -> Value {
        match v {
            Value::String(s) => Value::String(mask_with(s, needles).unwrap_or_else(|| s.clone())),
            Value::Number(n) if needles.iter().any(|x| *x == n.to_string()) => Value::String(MASK.to_owned()),
            Value::Array(items) => Value::Array(items.iter().map(|v| go(v, needles)).collect()),
            Value::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, v)| (mask_with(k, needles).unwrap_or_else(|| k.clone()), go(v, needles)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
    go(value, &needles)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn masks_equal_and_contained_values_keys_and_numbers() {
        let secrets = json!({"api": {"token": "s3cr3t-token", "pin": 123456}, "short": "abc"});
        let value = json!({
            "auth": "Bearer s3cr3t-token",
            "token": "s3cr3t-token",
            "s3cr3t-token": 1,
            "pin": 123456,
            "other": "abc is short and stays",
        });
        assert_eq!(
            mask(&value, &secrets),
            json!({"auth": "Bearer ***", "token": "***", "***": 1, "pin": "***", "other": "abc is short and stays"})
        );
    }

    #[test]
    fn masks_json_escaped_forms_in_text() {
        let secrets = json!({"pw": "a\"b\\c-d"});
        let text = format!("cannot index {} with 1", json!("a\"b\\c-d"));
        assert_eq!(mask_text(&text, &secrets), "cannot index \"***\" with 1");
    }

    #[test]
    fn longer_secret_first() {
        let secrets = json!(["abcd", "abcdefgh"]);
        assert_eq!(mask_text("xxabcdefghxx abcd", &secrets), "xx***xx ***");
    }
}
