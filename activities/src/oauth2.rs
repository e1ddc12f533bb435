//! OAuth2 tokens for the `oauth2` authentication scheme: the client credentials and password
//! grants, fetched from the authority's token endpoint and kept in memory until shortly before
//! they expire.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use reqwest::Client;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::auth::{Sensitive, optional_string, required_string};
use crate::http::{describe_transport_error, read_limited};
use crate::problem::{ErrorType, Problem};
use crate::uri::{expand, form_component, form_urlencode};

/// The largest token response read.
const MAX_TOKEN_RESPONSE_BYTES: usize = 64 * 1024;
/// Token requests cached at once; past it, expired entries go, then everything.
const MAX_CACHED_TOKENS: usize = 1024;
/// A token is renewed this long before it expires (or at half its life, if shorter).
const RENEW_BEFORE_EXPIRY: Duration = Duration::from_secs(30);
/// The longest a token is kept, whatever lifetime the authority gives it.
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Grant {
    ClientCredentials,
    Password,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClientAuth {
    SecretBasic,
    SecretPost,
    None,
}

/// One token request, resolved from an `oauth2` policy.
pub(crate) struct OAuth2Request {
    token_url: String,
    grant: Grant,
    client_id: Option<String>,
    client_secret: Option<String>,
    client_auth: ClientAuth,
    json: bool,
    scopes: Vec<String>,
    audiences: Vec<String>,
    username: Option<String>,
    password: Option<String>,
}

impl fmt::Debug for OAuth2Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuth2Request")
            .field("token_url", &self.token_url)
            .field("grant", &self.grant)
            .field("client_auth", &self.client_auth)
            .finish_non_exhaustive()
    }
}

impl OAuth2Request {
    pub fn from_policy(body: &Map<String, Value>, arguments: &Value) -> Result<Self, Problem> {
        let authority = expand(&required_string(body, "authority", "oauth2")?, arguments)?;
        let grant = match required_string(body, "grant", "oauth2")?.as_str() {
            "client_credentials" => Grant::ClientCredentials,
            "password" => Grant::Password,
            other => {
                return Err(Problem::configuration(format!(
                    "the oauth2 grant '{other}' is not supported (client_credentials and password are)"
                )));
            }
        };
        let endpoints = object_field(body, "endpoints")?;
        let token_path = match endpoints.map(|endpoints| optional_string(endpoints, "token", "oauth2")).transpose()? {
            Some(Some(path)) => expand(&path, arguments)?,
            _ => "/oauth2/token".to_owned(),
        };
        let token_url = if token_path.contains("://") {
            token_path
        } else {
            format!("{}/{}", authority.trim_end_matches('/'), token_path.trim_start_matches('/'))
        };
        let client = object_field(body, "client")?;
        let client_field = |field| client.map(|client| optional_string(client, field, "oauth2 client")).transpose();
        let client_auth = match client_field("authentication")?.flatten().as_deref() {
            None | Some("client_secret_post") => ClientAuth::SecretPost,
            Some("client_secret_basic") => ClientAuth::SecretBasic,
            Some("none") => ClientAuth::None,
            Some(other) => {
                return Err(Problem::configuration(format!(
                    "the oauth2 client authentication '{other}' is not supported"
                )));
            }
        };
        let json = match object_field(body, "request")?
            .map(|request| optional_string(request, "encoding", "oauth2 request"))
            .transpose()?
            .flatten()
            .as_deref()
        {
            None | Some("application/x-www-form-urlencoded") => false,
            Some("application/json") => true,
            Some(other) => {
                return Err(Problem::configuration(format!("the oauth2 request encoding '{other}' is not supported")));
            }
        };
        let request = Self {
            token_url,
            grant,
            client_id: client_field("id")?.flatten(),
            client_secret: client_field("secret")?.flatten(),
            client_auth,
            json,
            scopes: string_list(body, "scopes")?,
            audiences: string_list(body, "audiences")?,
            username: optional_string(body, "username", "oauth2")?,
            password: optional_string(body, "password", "oauth2")?,
        };
        if request.client_auth != ClientAuth::None && request.client_id.is_none() {
            return Err(Problem::configuration("the oauth2 authentication needs a client id"));
        }
        if request.grant == Grant::Password && (request.username.is_none() || request.password.is_none()) {
            return Err(Problem::configuration("the oauth2 password grant needs a username and a password"));
        }
        Ok(request)
    }

    /// Everything that makes two requests ask for the same token. Kept in memory only.
    fn cache_key(&self) -> String {
        let parts = [
            self.token_url.as_str(),
            match self.grant {
                Grant::ClientCredentials => "client_credentials",
                Grant::Password => "password",
            },
            self.client_id.as_deref().unwrap_or(""),
            self.client_secret.as_deref().unwrap_or(""),
            &self.scopes.join(" "),
            &self.audiences.join(" "),
            self.username.as_deref().unwrap_or(""),
            self.password.as_deref().unwrap_or(""),
        ];
        parts.join("\u{0}")
    }

    fn fields(&self) -> Vec<(&'static str, String)> {
        let mut fields = vec![(
            "grant_type",
            match self.grant {
                Grant::ClientCredentials => "client_credentials".to_owned(),
                Grant::Password => "password".to_owned(),
            },
        )];
        if self.client_auth != ClientAuth::SecretBasic
            && let Some(id) = &self.client_id
        {
            fields.push(("client_id", id.clone()));
        }
        if self.client_auth == ClientAuth::SecretPost
            && let Some(secret) = &self.client_secret
        {
            fields.push(("client_secret", secret.clone()));
        }
        if !self.scopes.is_empty() {
            fields.push(("scope", self.scopes.join(" ")));
        }
        fields.extend(self.audiences.iter().map(|audience| ("audience", audience.clone())));
        if self.grant == Grant::Password {
            fields.extend(self.username.clone().map(|username| ("username", username)));
            fields.extend(self.password.clone().map(|password| ("password", password)));
        }
        fields
    }

    async fn fetch(&self, client: &Client, sensitive: &mut Sensitive) -> Result<Token, Problem> {
        let fields = self.fields();
        let mut request = client.post(&self.token_url).header(ACCEPT, "application/json");
        if self.json {
            let mut body = Map::new();
            for (name, value) in &fields {
                match body.get_mut(*name) {
                    Some(Value::Array(values)) => values.push(Value::String(value.clone())),
                    Some(previous) => *previous = Value::Array(vec![previous.take(), Value::String(value.clone())]),
                    None => {
                        body.insert((*name).to_owned(), Value::String(value.clone()));
                    }
                }
            }
            request = request.header(CONTENT_TYPE, "application/json").body(Value::Object(body).to_string());
        } else {
            let body = form_urlencode(fields.iter().map(|(name, value)| (*name, value.as_str())));
            request = request.header(CONTENT_TYPE, "application/x-www-form-urlencoded").body(body);
        }
        if self.client_auth == ClientAuth::SecretBasic {
            // RFC 6749 section 2.3.1: both form-encoded before they are joined.
            let id = form_component(self.client_id.as_deref().unwrap_or(""));
            let secret = form_component(self.client_secret.as_deref().unwrap_or(""));
            let credentials = BASE64.encode(format!("{id}:{secret}"));
            sensitive.add(&credentials);
            request = request.header(AUTHORIZATION, format!("Basic {credentials}"));
        }
        let response = request.send().await.map_err(|error| {
            let problem = Problem::authentication(format!(
                "could not reach the token endpoint {}: {}",
                self.token_url,
                describe_transport_error(&error)
            ));
            if error.is_timeout() { Problem { kind: ErrorType::Timeout, status: 408, ..problem } } else { problem }
        })?;
        let status = response.status();
        let body = read_limited(response, MAX_TOKEN_RESPONSE_BYTES).await.map_err(|error| {
            Problem::authentication(format!("the token endpoint {} sent an unusable response: {error}", self.token_url))
        })?;
        let parsed: Option<Value> = serde_json::from_slice(&body).ok();
        if !status.is_success() {
            let code = parsed.as_ref().and_then(|body| body.get("error")).and_then(Value::as_str);
            let reason = code.map(|code| format!(" ({code})")).unwrap_or_default();
            return Err(Problem::authentication(format!(
                "the token endpoint {} answered {status}{reason}",
                self.token_url
            )));
        }
        let parsed = parsed.unwrap_or(Value::Null);
        let Some(access_token) = parsed.get("access_token").and_then(Value::as_str) else {
            return Err(Problem::authentication(format!(
                "the token endpoint {} answered without an access_token",
                self.token_url
            )));
        };
        sensitive.add(access_token);
        match parsed.get("token_type").and_then(Value::as_str) {
            None => {}
            Some(kind) if kind.eq_ignore_ascii_case("bearer") => {}
            Some(kind) => {
                return Err(Problem::authentication(format!("the token type '{kind}' is not supported (bearer is)")));
            }
        }
        let expires_in = match parsed.get("expires_in") {
            Some(Value::Number(seconds)) => seconds.as_u64(),
            Some(Value::String(seconds)) => seconds.parse().ok(),
            _ => None,
        };
        let header = format!("Bearer {access_token}");
        sensitive.add(&header);
        Ok(Token { header, renew_at: renew_at(expires_in) })
    }
}

fn object_field<'a>(body: &'a Map<String, Value>, field: &str) -> Result<Option<&'a Map<String, Value>>, Problem> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => Ok(Some(map)),
        Some(_) => Err(Problem::validation(format!("the oauth2 authentication's '{field}' must be an object"))),
    }
}

fn string_list(body: &Map<String, Value>, field: &str) -> Result<Vec<String>, Problem> {
    let invalid = || Problem::validation(format!("the oauth2 authentication's '{field}' must be a list of strings"));
    match body.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => {
            items.iter().map(|item| item.as_str().map(str::to_owned).ok_or_else(invalid)).collect()
        }
        Some(_) => Err(invalid()),
    }
}

/// When a token that lives `expires_in` seconds must be replaced. A token without a lifetime
/// is used for the call that fetched it only.
fn renew_at(expires_in: Option<u64>) -> Option<Instant> {
    expires_in.map(|seconds| {
        let lifetime = Duration::from_secs(seconds).min(MAX_TOKEN_LIFETIME);
        Instant::now() + lifetime - RENEW_BEFORE_EXPIRY.min(lifetime / 2)
    })
}

#[derive(Clone)]
struct Token {
    /// The whole `Authorization` header value.
    header: String,
    /// `None`: not cached.
    renew_at: Option<Instant>,
}

impl Token {
    fn is_fresh(&self) -> bool {
        self.renew_at.is_some_and(|renew_at| Instant::now() < renew_at)
    }
}

type Slot = Arc<tokio::sync::Mutex<Option<Token>>>;

/// Tokens by request. One slot per request serialises its fetches, so concurrent calls wait
/// for one token rather than each asking for their own.
#[derive(Default)]
pub(crate) struct TokenCache {
    slots: Mutex<HashMap<String, Slot>>,
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.slots.lock().unwrap_or_else(PoisonError::into_inner).len();
        f.debug_struct("TokenCache").field("entries", &count).finish()
    }
}

impl TokenCache {
    fn slot(&self, key: String) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if slots.len() >= MAX_CACHED_TOKENS && !slots.contains_key(&key) {
            slots.retain(|_, slot| slot.try_lock().map_or(true, |token| token.as_ref().is_some_and(Token::is_fresh)));
            if slots.len() >= MAX_CACHED_TOKENS {
                slots.clear();
            }
        }
        slots.entry(key).or_default().clone()
    }

    /// The `Authorization` header for `request`, and whether it came from the cache: a cached
    /// token while it is fresh, else a new one. `renew` forces a new one (the service refused
    /// the cached token).
    ///
    /// # Cancel safety
    /// Cancelling while a token is fetched leaves the slot empty; the next call fetches again.
    pub async fn header(
        &self,
        client: &Client,
        request: &OAuth2Request,
        renew: bool,
        sensitive: &mut Sensitive,
    ) -> Result<(String, bool), Problem> {
        let slot = self.slot(request.cache_key());
        let mut cached = slot.lock().await;
        if let Some(token) = cached.as_ref().filter(|token| !renew && token.is_fresh()) {
            sensitive.add(&token.header);
            if let Some(value) = token.header.strip_prefix("Bearer ") {
                sensitive.add(value);
            }
            return Ok((token.header.clone(), true));
        }
        *cached = None;
        let token = request.fetch(client, sensitive).await?;
        let header = token.header.clone();
        if token.renew_at.is_some() {
            *cached = Some(token);
        }
        Ok((header, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn tokens_are_renewed_before_they_expire() {
        let token = |expires_in| Token { header: "Bearer t".to_owned(), renew_at: renew_at(expires_in) };
        let hour = token(Some(3600));
        let short = token(Some(40));
        let huge = token(Some(u64::MAX));
        assert!(!token(None).is_fresh(), "a token without a lifetime is not kept");
        assert!(hour.is_fresh() && short.is_fresh() && huge.is_fresh());

        tokio::time::advance(Duration::from_secs(20)).await;
        assert!(!short.is_fresh(), "renewed at half its life when that is under 30 s");
        tokio::time::advance(Duration::from_secs(3549)).await;
        assert!(hour.is_fresh());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!hour.is_fresh(), "renewed 30 s before it expires");
        tokio::time::advance(MAX_TOKEN_LIFETIME).await;
        assert!(!huge.is_fresh(), "kept a day at most");
    }
}
