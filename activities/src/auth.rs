//! Authentication policies as written in a definition, resolved at the moment of the call.
//!
//! A policy reaches the activity unevaluated where it names secrets: activity inputs are
//! stored in history, and secret values must never be. So the activity itself resolves
//! `${ $secrets.<name>(.<field>)* }` references and `{ use: <secret> }` scheme bodies through
//! the [`SecretProvider`], and remembers every value it resolved in a [`Sensitive`] set that
//! is scrubbed from the call's output and errors.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use baton_engine::SecretProvider;
use serde_json::{Map, Value};

use crate::oauth2::OAuth2Request;
use crate::problem::Problem;

/// What replaces a sensitive value in outputs and errors.
pub(crate) const REDACTED: &str = "<redacted>";

/// Values shorter than this are not scrubbed: too short to be secret, and too likely to
/// collide with ordinary data (`"1"`, `"yes"`).
const MIN_SCRUBBED_LEN: usize = 4;

/// Nesting allowed inside one authentication policy.
const MAX_POLICY_DEPTH: usize = 16;

/// Values that must not leave the activity: everything resolved from a secret, the
/// `Authorization` header values and the OAuth2 tokens obtained.
#[derive(Default)]
pub(crate) struct Sensitive {
    values: Vec<String>,
}

impl fmt::Debug for Sensitive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sensitive").field("values", &self.values.len()).finish()
    }
}

impl Sensitive {
    pub fn add(&mut self, value: &str) {
        if value.len() >= MIN_SCRUBBED_LEN && !self.values.iter().any(|known| known == value) {
            self.values.push(value.to_owned());
            // Longest first, so that a secret containing another is replaced whole.
            self.values.sort_by_key(|known| std::cmp::Reverse(known.len()));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub fn scrub_str(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for value in &self.values {
            if text.contains(value.as_str()) {
                text = text.replace(value.as_str(), REDACTED);
            }
        }
        text
    }

    /// Scrubs every string and object key of `value` in place.
    pub fn scrub_value(&self, value: &mut Value) {
        if self.is_empty() {
            return;
        }
        let mut stack = vec![value];
        while let Some(value) = stack.pop() {
            match value {
                Value::String(text) => {
                    if self.values.iter().any(|known| text.contains(known.as_str())) {
                        *text = self.scrub_str(text);
                    }
                }
                Value::Array(items) => stack.extend(items.iter_mut()),
                Value::Object(map) => {
                    if map.keys().any(|key| self.values.iter().any(|known| key.contains(known.as_str()))) {
                        *map =
                            std::mem::take(map).into_iter().map(|(key, item)| (self.scrub_str(&key), item)).collect();
                    }
                    stack.extend(map.values_mut());
                }
                Value::Null | Value::Bool(_) | Value::Number(_) => {}
            }
        }
    }

    pub fn scrub_bytes(&self, bytes: Vec<u8>) -> Vec<u8> {
        let mut bytes = bytes;
        for value in &self.values {
            let needle = value.as_bytes();
            if !bytes.windows(needle.len()).any(|window| window == needle) {
                continue;
            }
            let mut out = Vec::with_capacity(bytes.len());
            let mut index = 0;
            while index < bytes.len() {
                if bytes[index..].starts_with(needle) {
                    out.extend_from_slice(REDACTED.as_bytes());
                    index += needle.len();
                } else {
                    out.push(bytes[index]);
                    index += 1;
                }
            }
            bytes = out;
        }
        bytes
    }
}

/// A resolved authentication scheme.
pub(crate) enum Scheme {
    Basic { username: String, password: String },
    Bearer { token: String },
    OAuth2(OAuth2Request),
}

impl Scheme {
    /// The `Authorization` header for the schemes that need no round trip.
    pub fn static_header(&self, sensitive: &mut Sensitive) -> Option<String> {
        let header = match self {
            Self::Basic { username, password } => {
                let credentials = BASE64.encode(format!("{username}:{password}"));
                sensitive.add(&credentials);
                format!("Basic {credentials}")
            }
            Self::Bearer { token } => {
                sensitive.add(token);
                format!("Bearer {token}")
            }
            Self::OAuth2(_) => return None,
        };
        sensitive.add(&header);
        Some(header)
    }
}

/// A string field of a policy: a literal, a `$secrets` reference, or another expression.
#[derive(Debug, PartialEq)]
enum Field<'a> {
    Literal(&'a str),
    Secret(Vec<String>),
    OtherExpression,
}

/// Reads `${ $secrets.a.b }`, `${ $secrets["a"].b }` and `${ $secrets."a" }`.
fn classify(text: &str) -> Field<'_> {
    let trimmed = text.trim();
    let Some(inner) = trimmed.strip_prefix("${").and_then(|inner| inner.strip_suffix('}')) else {
        return Field::Literal(text);
    };
    let Some(mut rest) = inner.trim().strip_prefix("$secrets") else {
        return Field::OtherExpression;
    };
    let mut path = Vec::new();
    while !rest.is_empty() {
        let segment;
        let bracket = rest.starts_with("[\"");
        if let Some(after) = rest.strip_prefix(".\"").or_else(|| rest.strip_prefix("[\"")) {
            let Some(end) = after.find('"') else { return Field::OtherExpression };
            segment = &after[..end];
            rest = &after[end + 1..];
            if bracket {
                let Some(after_bracket) = rest.strip_prefix(']') else { return Field::OtherExpression };
                rest = after_bracket;
            }
        } else if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-')).unwrap_or(after.len());
            segment = &after[..end];
            rest = &after[end..];
        } else {
            return Field::OtherExpression;
        }
        if segment.is_empty() {
            return Field::OtherExpression;
        }
        path.push(segment.to_owned());
    }
    if path.is_empty() { Field::OtherExpression } else { Field::Secret(path) }
}

/// Resolves a `$secrets` reference if `text` is one; `None` for any other text.
pub(crate) fn secret_reference(
    secrets: &dyn SecretProvider,
    text: &str,
    sensitive: &mut Sensitive,
) -> Option<Result<String, Problem>> {
    match classify(text) {
        Field::Secret(path) => Some(lookup(secrets, &path, sensitive).and_then(|value| {
            scalar_string(&value).ok_or_else(|| {
                Problem::configuration(format!("the secret reference $secrets.{} is not a string", path.join(".")))
            })
        })),
        Field::Literal(_) | Field::OtherExpression => None,
    }
}

fn scalar_string(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

/// The secret at `path` (its name, then fields), with every string in it marked sensitive.
fn lookup(secrets: &dyn SecretProvider, path: &[String], sensitive: &mut Sensitive) -> Result<Value, Problem> {
    let Some((name, fields)) = path.split_first() else {
        return Err(Problem::configuration("an empty secret reference"));
    };
    let secret =
        secrets.get(name).ok_or_else(|| Problem::configuration(format!("the secret '{name}' is not available")))?;
    let mut value = &secret;
    for (depth, field) in fields.iter().enumerate() {
        value = value.get(field).ok_or_else(|| {
            Problem::configuration(format!("the secret '{name}' has no field '{}'", fields[..=depth].join(".")))
        })?;
    }
    mark(value, sensitive, 0);
    Ok(value.clone())
}

/// Marks the strings of a value that came from a secret, except the fields that say how to
/// authenticate rather than with what (a grant type would otherwise be scrubbed from outputs).
fn mark(value: &Value, sensitive: &mut Sensitive, depth: usize) {
    const STRUCTURAL: [&str; 8] =
        ["grant", "authentication", "encoding", "scopes", "audiences", "authority", "endpoints", "issuers"];
    if depth > MAX_POLICY_DEPTH {
        return;
    }
    match value {
        Value::String(text) => sensitive.add(text),
        Value::Number(number) => sensitive.add(&number.to_string()),
        Value::Array(items) => items.iter().for_each(|item| mark(item, sensitive, depth + 1)),
        Value::Object(map) => {
            for (key, item) in map {
                if !STRUCTURAL.contains(&key.as_str()) {
                    mark(item, sensitive, depth + 1);
                }
            }
        }
        Value::Null | Value::Bool(_) => {}
    }
}

/// Resolves policies against the secrets and the workflow's named authentications.
pub(crate) struct Resolver<'a> {
    pub secrets: &'a dyn SecretProvider,
    /// The workflow's `use.authentications`, as written.
    pub named: Option<&'a Map<String, Value>>,
    pub sensitive: &'a mut Sensitive,
    /// Values for the URI templates of the policy (the OAuth2 authority).
    pub arguments: &'a Value,
}

impl Resolver<'_> {
    /// `None` for no authentication (an absent or null policy).
    pub fn policy(&mut self, policy: &Value) -> Result<Option<Scheme>, Problem> {
        match policy {
            Value::Null => Ok(None),
            Value::String(name) => self.named_policy(name).map(Some),
            Value::Object(map) => {
                if let Some(name) = map.get("use") {
                    let Value::String(name) = name else {
                        return Err(Problem::validation("an authentication's 'use' must be a string"));
                    };
                    return self.named_policy(name).map(Some);
                }
                self.scheme(map).map(Some)
            }
            _ => Err(Problem::validation("an authentication policy must be an object or the name of one")),
        }
    }

    fn named_policy(&mut self, name: &str) -> Result<Scheme, Problem> {
        let policy = self
            .named
            .and_then(|named| named.get(name))
            .ok_or_else(|| Problem::configuration(format!("no authentication named '{name}' is defined")))?;
        match policy {
            Value::Object(map) if !map.contains_key("use") => self.scheme(map),
            _ => Err(Problem::configuration(format!(
                "the authentication named '{name}' must define a scheme (basic, bearer or oauth2), not refer to another"
            ))),
        }
    }

    fn scheme(&mut self, map: &Map<String, Value>) -> Result<Scheme, Problem> {
        const KNOWN: [&str; 6] = ["basic", "bearer", "oauth2", "oidc", "digest", "certificate"];
        let mut schemes = map.keys().filter(|key| KNOWN.contains(&key.as_str()));
        let (Some(name), None) = (schemes.next(), schemes.next()) else {
            return Err(Problem::validation("an authentication policy must define exactly one scheme"));
        };
        let body = self.body(&map[name.as_str()])?;
        match name.as_str() {
            "basic" => Ok(Scheme::Basic {
                username: required_string(&body, "username", "basic")?,
                password: required_string(&body, "password", "basic")?,
            }),
            "bearer" => Ok(Scheme::Bearer { token: required_string(&body, "token", "bearer")? }),
            "oauth2" => OAuth2Request::from_policy(&body, self.arguments).map(Scheme::OAuth2),
            other => Err(Problem::configuration(format!("the '{other}' authentication scheme is not supported"))),
        }
    }

    /// A scheme's body with its secret references replaced by their values.
    fn body(&mut self, body: &Value) -> Result<Map<String, Value>, Problem> {
        let resolved = match body {
            Value::Object(map) => match map.get("use") {
                Some(Value::String(secret)) => lookup(self.secrets, std::slice::from_ref(secret), self.sensitive)?,
                Some(_) => return Err(Problem::validation("a scheme's 'use' must name a secret")),
                None => self.resolve(body, 0)?,
            },
            Value::String(_) => self.resolve(body, 0)?,
            _ => return Err(Problem::validation("an authentication scheme must be an object")),
        };
        match resolved {
            Value::Object(map) => Ok(map),
            _ => Err(Problem::configuration("an authentication scheme's secret must be an object")),
        }
    }

    fn resolve(&mut self, value: &Value, depth: usize) -> Result<Value, Problem> {
        if depth > MAX_POLICY_DEPTH {
            return Err(Problem::validation("the authentication policy is nested too deeply"));
        }
        Ok(match value {
            Value::String(text) => match classify(text) {
                Field::Literal(_) => value.clone(),
                Field::Secret(path) => lookup(self.secrets, &path, self.sensitive)?,
                Field::OtherExpression => {
                    return Err(Problem::expression("only $secrets references are resolved in authentication"));
                }
            },
            Value::Array(items) => {
                Value::Array(items.iter().map(|item| self.resolve(item, depth + 1)).collect::<Result<_, _>>()?)
            }
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(key, item)| Ok((key.clone(), self.resolve(item, depth + 1)?)))
                    .collect::<Result<_, Problem>>()?,
            ),
            Value::Null | Value::Bool(_) | Value::Number(_) => value.clone(),
        })
    }
}

pub(crate) fn required_string(body: &Map<String, Value>, field: &str, scheme: &str) -> Result<String, Problem> {
    optional_string(body, field, scheme)?
        .ok_or_else(|| Problem::configuration(format!("the {scheme} authentication needs a '{field}'")))
}

pub(crate) fn optional_string(body: &Map<String, Value>, field: &str, scheme: &str) -> Result<Option<String>, Problem> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => scalar_string(value)
            .map(Some)
            .ok_or_else(|| Problem::validation(format!("the {scheme} authentication's '{field}' must be a string"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_references_are_recognised() {
        let secret = |path: &[&str]| Field::Secret(path.iter().map(|s| (*s).to_owned()).collect());
        assert_eq!(classify("${ $secrets.api }"), secret(&["api"]));
        assert_eq!(classify("${$secrets.creds.password}"), secret(&["creds", "password"]));
        assert_eq!(classify("${ $secrets[\"my key\"].token }"), secret(&["my key", "token"]));
        assert_eq!(classify("${ $secrets.\"a\" }"), secret(&["a"]));
        assert_eq!(classify("plain"), Field::Literal("plain"));
        assert_eq!(classify("${ .user.token }"), Field::OtherExpression);
        assert_eq!(classify("${ $secrets }"), Field::OtherExpression);
        assert_eq!(classify("${ $secrets.a | ascii_downcase }"), Field::OtherExpression);
    }

    #[test]
    fn scrubbing_replaces_longest_first_everywhere() {
        let mut sensitive = Sensitive::default();
        sensitive.add("abc");
        sensitive.add("token-1");
        sensitive.add("token-123");
        let mut value = serde_json::json!({ "a": ["x token-123 y", "token-1"], "token-1": "abc" });
        sensitive.scrub_value(&mut value);
        assert_eq!(value, serde_json::json!({ "a": ["x <redacted> y", "<redacted>"], "<redacted>": "abc" }));
        assert_eq!(sensitive.scrub_bytes(b"--token-123--".to_vec()), b"--<redacted>--".to_vec());
    }
}
