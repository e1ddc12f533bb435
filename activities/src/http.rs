//! The built-in `http` activity: one HTTP request, described by the DSL's `call: http`.
//!
//! # Input
//!
//! The interpreter evaluates the task's `with` (every runtime expression except `$secrets`
//! references, which must not reach history) and schedules the activity with:
//!
//! ```json
//! {
//!   "method": "get",
//!   "endpoint": "https://example.com/pets/{petId}",
//!   "headers": { "Accept": "application/json" },
//!   "query": { "limit": 10 },
//!   "body": { "name": "Milou" },
//!   "output": "content",
//!   "redirect": false,
//!   "timeoutMs": 5000,
//!   "arguments": { "petId": 1 },
//!   "authentications": { "petstore": { "bearer": { "token": "${ $secrets.petstore.token }" } } }
//! }
//! ```
//!
//! - `method` (required): any HTTP method but `CONNECT`, in any case.
//! - `endpoint` (required): a URI template, or `{ "uri": <template>, "authentication": <policy> }`.
//!   The template is expanded with the top-level fields of `arguments` (the task's input): RFC
//!   6570 `{var}` (percent-encoded) and `{+var}` (reserved characters kept), `{x,y}` joined with
//!   commas, names verbatim (`{pet.id}` is the key `pet.id`), missing or null variables empty,
//!   array or object variables an `expression` error, other operators (`{?x}`, `{#x}`...) a
//!   `validation` error. The result must be an absolute `http` or `https` URI.
//! - `headers`: name to value; numbers and booleans are written as text, an array gives the
//!   header once per item, null leaves it out. A value that is a whole
//!   `${ $secrets.<name>(.<field>)* }` reference is resolved here and redacted in outputs.
//! - `query`: name to value, appended to the URI's query: scalars as text, arrays as the
//!   parameter once per item, objects as JSON text, null left out.
//! - `body`: a string is sent as it is (`text/plain; charset=utf-8` unless a `Content-Type`
//!   header says otherwise); any other value is sent as JSON (`application/json` by default), or
//!   form-encoded when the `Content-Type` header is `application/x-www-form-urlencoded` and the
//!   value is an object. Null or absent: no body.
//! - `output`: `content` (default), `response` or `raw`; see below.
//! - `redirect`: `false` (default) accepts only 2xx statuses and never follows a redirect (a
//!   3xx is an error); `true` follows up to [`HttpConfig::max_redirects`] redirects and accepts
//!   200–399.
//! - `timeoutMs`: the whole call's time limit (authentication, redirects and body included);
//!   [`HttpConfig::timeout`] when absent, never more than [`HttpConfig::max_timeout`].
//! - `arguments`: values for the URI templates (of the endpoint and of an OAuth2 authority).
//! - `authentications`: the workflow's `use.authentications`, as written, for `{ "use": name }`.
//!
//! An authentication policy is one of `{ "basic": { "username", "password" } }`,
//! `{ "bearer": { "token" } }`, `{ "oauth2": { "authority", "grant", "client": { "id",
//! "secret", "authentication" }, "scopes", "audiences", "endpoints": { "token" } } }` (grants
//! `client_credentials` and `password`; client authentication `client_secret_post` (default),
//! `client_secret_basic` or `none`), or `{ "use": <named authentication> }` (the name alone is
//! accepted too). A scheme's body may be `{ "use": <secret> }`, the secret being an object with
//! the scheme's fields, and any string field may be a `${ $secrets... }` reference; any other
//! `${ }` expression there is an `expression` error.
//!
//! # Output
//!
//! - `content`: the body, parsed as JSON when the response says it is JSON (or says nothing
//!   and it parses), else the text, else (not UTF-8) its base64; an empty body is `null`.
//! - `response`: `{ "request": { "method", "uri", "headers" }, "statusCode", "headers",
//!   "content" }`, for the last request made (after redirects); the request's `Authorization`
//!   and secret-valued headers read `<redacted>`; header names are lower case.
//! - `raw`: the body in base64 (standard alphabet, padded); `null` when empty.
//!
//! Every value resolved from a secret, every `Authorization` value and every OAuth2 token is
//! replaced by `<redacted>` wherever it appears in the output or in an error.
//!
//! # Errors
//!
//! Failures are [`ActivityError::Failed`] with the DSL's error types (see [`ErrorType`]) and
//! `details` `{ "type", "status", "title", "detail" }`: `communication` with the response's
//! status for a status outside the accepted range, 503 when the service cannot be reached,
//! 502 for a response too large or cut short; `timeout` (408); `authentication` (401) when an
//! OAuth2 token cannot be obtained; `validation`, `expression` and `configuration` (400) for a
//! call that cannot be made as written.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use baton_engine::{ActivityError, ActivityRegistry, SecretProvider};
use reqwest::header::{
    AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, COOKIE, HeaderMap, HeaderName, HeaderValue, LOCATION,
    PROXY_AUTHORIZATION,
};
use reqwest::redirect::Policy;
use reqwest::{Client, Method, Response, StatusCode, Url};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use crate::auth::{REDACTED, Resolver, Scheme, Sensitive, secret_reference};
use crate::oauth2::TokenCache;
use crate::openapi::DocumentCache;
use crate::problem::{ErrorType, Problem};
use crate::uri::{expand, form_urlencode, scalar_text};

/// How much of an error response's body is quoted in the error's detail.
const ERROR_EXCERPT_BYTES: usize = 512;

/// Settings of the http and openapi activities. The doc comments are the user documentation.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// A call's time limit when its input gives none (`timeoutMs`). Default 30 s.
    pub timeout: Duration,
    /// The longest time limit a call may ask for. Default 5 min.
    pub max_timeout: Duration,
    /// The limit on opening a connection (TCP and TLS). Default 10 s.
    pub connect_timeout: Duration,
    /// The largest response body read; a larger one fails the call rather than being kept in
    /// memory (and in history). Also the limit on an OpenAPI document. Default 16 MiB.
    pub max_response_bytes: usize,
    /// Redirects followed when a call sets `redirect: true`. Default 10.
    pub max_redirects: usize,
    /// The `User-Agent` header of every request. Default `baton/<version>`.
    pub user_agent: String,
    /// Where `$secrets` references in authentication policies and headers are resolved.
    /// Default: no secrets.
    pub secrets: Arc<dyn SecretProvider>,
}

impl HttpConfig {
    /// The defaults, with secrets from `secrets`.
    pub fn new(secrets: Arc<dyn SecretProvider>) -> Self {
        Self {
            timeout: Duration::from_secs(30),
            max_timeout: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(10),
            max_response_bytes: 16 * 1024 * 1024,
            max_redirects: 10,
            user_agent: concat!("baton/", env!("CARGO_PKG_VERSION")).to_owned(),
            secrets,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self::new(Arc::new(NoSecrets))
    }
}

/// A [`SecretProvider`] without secrets.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoSecrets;

impl SecretProvider for NoSecrets {
    fn get(&self, _name: &str) -> Option<Value> {
        None
    }
}

/// Registers the `http` and `openapi` activities, sharing one client, one OAuth2 token cache
/// and one OpenAPI document cache.
pub fn register(registry: &mut ActivityRegistry, config: HttpConfig) {
    HttpActivities::new(config).register(registry);
}

/// The http and openapi activities, callable directly (tests, other activities) or through an
/// [`ActivityRegistry`]. Cheap to clone.
#[derive(Clone, Debug)]
pub struct HttpActivities {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: HttpConfig,
    /// The error text when the client could not be built; every call then fails with it.
    client: Result<Client, String>,
    tokens: TokenCache,
    documents: DocumentCache,
}

impl HttpActivities {
    pub fn new(config: HttpConfig) -> Self {
        // Redirects are never followed by the client: a call that allows them follows them
        // itself, so that it decides what each hop carries.
        let client = Client::builder()
            .redirect(Policy::none())
            .connect_timeout(config.connect_timeout)
            .user_agent(config.user_agent.clone())
            .build()
            .map_err(|error| describe_transport_error(&error));
        if let Err(error) = &client {
            tracing::error!(error = %error, "the HTTP client could not be built; http and openapi calls will fail");
        }
        Self {
            inner: Arc::new(Inner {
                config,
                client,
                tokens: TokenCache::default(),
                documents: DocumentCache::default(),
            }),
        }
    }

    /// Registers `http` and `openapi` in `registry`.
    pub fn register(&self, registry: &mut ActivityRegistry) {
        let http = self.clone();
        registry.register("http", move |_ctx, input| {
            let http = http.clone();
            async move { http.call_http(input).await }
        });
        let openapi = self.clone();
        registry.register("openapi", move |_ctx, input| {
            let openapi = openapi.clone();
            async move { openapi.call_openapi(input).await }
        });
    }

    pub fn config(&self) -> &HttpConfig {
        &self.inner.config
    }

    /// Runs the `http` activity on `input` (see the module documentation).
    pub async fn call_http(&self, input: Value) -> Result<Value, ActivityError> {
        let mut sensitive = Sensitive::default();
        let result = self.http(input, &mut sensitive).await;
        finish(result, &sensitive)
    }

    async fn http(&self, input: Value, sensitive: &mut Sensitive) -> Result<Value, Problem> {
        let input: HttpInput = parse_input(input)?;
        let (template, authentication) = input.endpoint.into_parts();
        let mut url = parse_url(&expand(&template, &input.options.arguments)?)?;
        append_query(&mut url, input.query.as_ref());
        let mut headers = header_list(input.headers.as_ref())?;
        let body = match input.body {
            None | Some(Value::Null) => None,
            Some(body) => Some(encode_body(&body, &mut headers)?),
        };
        let request = Request {
            method: parse_method(&input.method)?,
            url,
            headers,
            body,
            authentication,
            redirect: input.options.redirect.unwrap_or(false),
        };
        let context = CallContext {
            authentications: input.options.authentications.as_ref(),
            arguments: &input.options.arguments,
        };
        let timeout = self.timeout(input.options.timeout_ms);
        let description = format!("{} {}", request.method, request.url);
        let received = with_timeout(timeout, &description, self.send(request, &context, sensitive)).await?;
        Ok(render(received, input.options.output.unwrap_or_default(), sensitive))
    }

    pub(crate) fn timeout(&self, timeout_ms: Option<u64>) -> Duration {
        let config = &self.inner.config;
        timeout_ms.map_or(config.timeout, Duration::from_millis).min(config.max_timeout)
    }

    pub(crate) fn documents(&self) -> &DocumentCache {
        &self.inner.documents
    }

    fn client(&self) -> Result<&Client, Problem> {
        self.inner.client.as_ref().map_err(|error| {
            Problem::new(
                ErrorType::Runtime,
                "HTTP client unavailable",
                format!("the HTTP client could not be built: {error}"),
            )
        })
    }

    /// Performs `request`: authenticates it, follows redirects if it allows them, and reads the
    /// final response's body within the size limit. A status outside the accepted range is an
    /// error.
    ///
    /// # Cancel safety
    /// Dropping the future abandons the request; nothing is left half-done but an OAuth2 token
    /// fetch, which the next call repeats.
    pub(crate) async fn send(
        &self,
        request: Request,
        context: &CallContext<'_>,
        sensitive: &mut Sensitive,
    ) -> Result<Received, Problem> {
        let client = self.client()?;
        let config = &self.inner.config;
        let secrets = config.secrets.as_ref();
        let scheme = match &request.authentication {
            None => None,
            Some(policy) => {
                Resolver { secrets, named: context.authentications, sensitive, arguments: context.arguments }
                    .policy(policy)?
            }
        };

        let mut headers = HeaderMap::new();
        let mut shown = Vec::new();
        let mut secret_headers = HashSet::new();
        for (name, value) in request.headers {
            let (value, secret) = match secret_reference(secrets, &value, sensitive) {
                Some(resolved) => (resolved?, true),
                None => (value, false),
            };
            let header_name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| Problem::validation(format!("'{name}' is not a valid header name")))?;
            let mut header_value = HeaderValue::from_str(&value).map_err(|_| {
                Problem::validation(format!("the value of the header '{name}' is not valid in a header"))
            })?;
            let redacted = secret || header_name == AUTHORIZATION || header_name == PROXY_AUTHORIZATION;
            header_value.set_sensitive(redacted);
            if redacted {
                sensitive.add(&value);
            }
            if secret {
                secret_headers.insert(header_name.clone());
            }
            shown.push((name, if redacted { REDACTED.to_owned() } else { value }));
            headers.append(header_name, header_value);
        }
        // Only a token from the cache is worth replacing when the service refuses it.
        let mut cached_token = false;
        let mut authorization = match &scheme {
            None => None,
            Some(Scheme::OAuth2(oauth2)) => {
                let (header, cached) = self.inner.tokens.header(client, oauth2, false, sensitive).await?;
                cached_token = cached;
                Some(header)
            }
            Some(other) => other.static_header(sensitive),
        };
        if authorization.is_some() {
            headers.remove(AUTHORIZATION);
            shown.retain(|(name, _)| !name.eq_ignore_ascii_case(AUTHORIZATION.as_str()));
            shown.push(("Authorization".to_owned(), REDACTED.to_owned()));
        }

        let origin = request.url.origin();
        let (mut method, mut url, mut body) = (request.method, request.url, request.body);
        let mut redirects = 0;
        loop {
            let same_origin = url.origin() == origin;
            let mut hop_headers = headers.clone();
            if same_origin {
                if let Some(authorization) = &authorization {
                    let mut value = HeaderValue::from_str(authorization)
                        .map_err(|_| Problem::configuration("the credentials are not valid in a header"))?;
                    value.set_sensitive(true);
                    hop_headers.insert(AUTHORIZATION, value);
                }
            } else {
                // Credentials are for the origin the call names, not for wherever it redirects.
                for name in [AUTHORIZATION, PROXY_AUTHORIZATION, COOKIE].iter().chain(&secret_headers) {
                    hop_headers.remove(name);
                }
            }
            let mut builder = client.request(method.clone(), url.clone()).headers(hop_headers);
            if let Some(body) = &body {
                builder = builder.body(body.clone());
            }
            let response = builder.send().await.map_err(|error| transport_problem(&error, &method, &url))?;
            let status = response.status();
            tracing::debug!(
                http.method = %method,
                http.host = url.host_str().unwrap_or_default(),
                http.path = url.path(),
                http.status = status.as_u16(),
                "http response"
            );

            if let (StatusCode::UNAUTHORIZED, true, true, Some(Scheme::OAuth2(oauth2))) =
                (status, cached_token, same_origin, &scheme)
            {
                // The cached token may have been revoked: get a new one and try once more.
                cached_token = false;
                authorization = Some(self.inner.tokens.header(client, oauth2, true, sensitive).await?.0);
                continue;
            }

            if request.redirect
                && status.is_redirection()
                && let Some(location) = response.headers().get(LOCATION)
            {
                redirects += 1;
                if redirects > config.max_redirects {
                    return Err(Problem::communication(
                        status.as_u16(),
                        "Too many redirects",
                        format!("{method} {url} redirected more than {} times", config.max_redirects),
                    ));
                }
                let next = location
                    .to_str()
                    .ok()
                    .and_then(|location| url.join(location).ok())
                    .filter(|next| matches!(next.scheme(), "http" | "https"))
                    .ok_or_else(|| {
                        Problem::communication(
                            502,
                            "Invalid redirect",
                            format!("{method} {url} redirected to an unusable location"),
                        )
                    })?;
                let see_other = status == StatusCode::SEE_OTHER && method != Method::HEAD;
                let post_moved =
                    matches!(status, StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND) && method == Method::POST;
                if see_other || post_moved {
                    method = Method::GET;
                    body = None;
                    headers.remove(CONTENT_TYPE);
                    headers.remove(CONTENT_LENGTH);
                    shown.retain(|(name, _)| !name.eq_ignore_ascii_case(CONTENT_TYPE.as_str()));
                }
                url = next;
                continue;
            }

            let accepted = status.is_success() || (request.redirect && status.is_redirection());
            if !accepted {
                let excerpt = read_prefix(response, ERROR_EXCERPT_BYTES).await;
                return Err(status_problem(status, &method, &url, &excerpt));
            }
            let response_headers = response.headers().clone();
            let body = read_limited(response, config.max_response_bytes).await.map_err(|error| match error {
                BodyError::TooLarge(limit) => Problem::communication(
                    502,
                    "Response too large",
                    format!("the response to {method} {url} is larger than the limit of {limit} bytes"),
                ),
                BodyError::Transport(error) => Problem::communication(
                    502,
                    "Response cut short",
                    format!("the response to {method} {url} could not be read: {}", describe_transport_error(&error)),
                ),
            })?;
            return Ok(Received { method, url, sent_headers: shown, status, headers: response_headers, body });
        }
    }
}

/// Runs `future` within `timeout`; running out is a `timeout` error.
pub(crate) async fn with_timeout<T>(
    timeout: Duration,
    description: &str,
    future: impl Future<Output = Result<T, Problem>>,
) -> Result<T, Problem> {
    match tokio::time::timeout(timeout, future).await {
        Ok(result) => result,
        Err(_) => Err(Problem::new(
            ErrorType::Timeout,
            "Request timed out",
            format!("{description} did not complete within {} ms", timeout.as_millis()),
        )),
    }
}

/// The end of every call: a scrubbed output, or a scrubbed failure.
pub(crate) fn finish(result: Result<Value, Problem>, sensitive: &Sensitive) -> Result<Value, ActivityError> {
    match result {
        Ok(mut output) => {
            sensitive.scrub_value(&mut output);
            Ok(output)
        }
        Err(problem) => Err(problem.into_activity_error(sensitive)),
    }
}

pub(crate) fn parse_input<T: DeserializeOwned>(input: Value) -> Result<T, Problem> {
    serde_json::from_value(input).map_err(|error| Problem::validation(format!("the call's input is invalid: {error}")))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HttpInput {
    method: String,
    endpoint: Endpoint,
    #[serde(default)]
    headers: Option<Map<String, Value>>,
    #[serde(default)]
    query: Option<Map<String, Value>>,
    #[serde(default)]
    body: Option<Value>,
    #[serde(flatten)]
    options: CallOptions,
}

/// What `http` and `openapi` calls share: how to give the answer, redirects, the deadline, the
/// URI template's values and the workflow's named authentications.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CallOptions {
    #[serde(default)]
    pub output: Option<OutputMode>,
    #[serde(default)]
    pub redirect: Option<bool>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub arguments: Value,
    #[serde(default)]
    pub authentications: Option<Map<String, Value>>,
}

/// An endpoint as the DSL writes it: a URI template, or an object with one.
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum Endpoint {
    Uri(String),
    Object {
        uri: String,
        #[serde(default)]
        authentication: Option<Value>,
    },
}

impl Endpoint {
    pub fn into_parts(self) -> (String, Option<Value>) {
        match self {
            Self::Uri(uri) => (uri, None),
            Self::Object { uri, authentication } => (uri, authentication.filter(|policy| !policy.is_null())),
        }
    }
}

/// What a call returns.
#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum OutputMode {
    #[default]
    Content,
    Response,
    Raw,
}

/// The names a call's input may refer to.
pub(crate) struct CallContext<'a> {
    pub authentications: Option<&'a Map<String, Value>>,
    pub arguments: &'a Value,
}

/// A request ready to send, but for its authentication.
pub(crate) struct Request {
    pub method: Method,
    pub url: Url,
    /// Values may be `$secrets` references, resolved when sent.
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    pub authentication: Option<Value>,
    pub redirect: bool,
}

/// A response in the accepted range, its body read.
pub(crate) struct Received {
    method: Method,
    url: Url,
    /// The headers the call set, as shown in `response` output (credentials redacted).
    sent_headers: Vec<(String, String)>,
    status: StatusCode,
    headers: HeaderMap,
    pub body: Vec<u8>,
}

pub(crate) fn parse_method(method: &str) -> Result<Method, Problem> {
    let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .map_err(|_| Problem::validation(format!("'{method}' is not an HTTP method")))?;
    if method == Method::CONNECT {
        return Err(Problem::validation("the CONNECT method is not supported"));
    }
    Ok(method)
}

pub(crate) fn parse_url(text: &str) -> Result<Url, Problem> {
    let url = Url::parse(text).map_err(|error| Problem::validation(format!("'{text}' is not a valid URI: {error}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(Problem::validation(format!("'{text}' is not an absolute http or https URI")));
    }
    Ok(url)
}

fn append_query(url: &mut Url, query: Option<&Map<String, Value>>) {
    let Some(query) = query.filter(|query| !query.is_empty()) else { return };
    let mut pairs = url.query_pairs_mut();
    for (name, value) in query {
        match value {
            Value::Null => {}
            Value::Array(items) => {
                for item in items {
                    pairs.append_pair(name, &scalar_text(item).unwrap_or_else(|| item.to_string()));
                }
            }
            _ => {
                pairs.append_pair(name, &scalar_text(value).unwrap_or_else(|| value.to_string()));
            }
        }
    }
}

fn header_list(headers: Option<&Map<String, Value>>) -> Result<Vec<(String, String)>, Problem> {
    let mut list = Vec::new();
    for (name, value) in headers.into_iter().flatten() {
        let items = match value {
            Value::Array(items) => items.as_slice(),
            other => std::slice::from_ref(other),
        };
        for item in items {
            match item {
                Value::Null => {}
                Value::Array(_) | Value::Object(_) => {
                    return Err(Problem::validation(format!(
                        "the header '{name}' must be a string, a number or a boolean"
                    )));
                }
                scalar => list.push((name.clone(), scalar_text(scalar).unwrap_or_default())),
            }
        }
    }
    Ok(list)
}

fn header_value<'a>(headers: &'a [(String, String)], name: &HeaderName) -> Option<&'a str> {
    headers.iter().find(|(key, _)| key.eq_ignore_ascii_case(name.as_str())).map(|(_, value)| value.as_str())
}

/// The media type of a `Content-Type` value, lower case, without parameters.
pub(crate) fn essence(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase()
}

pub(crate) fn is_json(media_type: &str) -> bool {
    media_type == "application/json" || media_type == "text/json" || media_type.ends_with("+json")
}

pub(crate) const FORM: &str = "application/x-www-form-urlencoded";

/// The bytes of `body`, adding a `Content-Type` header when `headers` has none.
pub(crate) fn encode_body(body: &Value, headers: &mut Vec<(String, String)>) -> Result<Vec<u8>, Problem> {
    let content_type = header_value(headers, &CONTENT_TYPE).map(essence);
    let (bytes, default_type) = match (body, content_type.as_deref()) {
        (Value::String(text), _) => (text.clone().into_bytes(), "text/plain; charset=utf-8"),
        (Value::Object(map), Some(FORM)) => (form_body(map).into_bytes(), FORM),
        (other, _) => (
            serde_json::to_vec(other)
                .map_err(|error| Problem::validation(format!("the body cannot be encoded: {error}")))?,
            "application/json",
        ),
    };
    if content_type.is_none() {
        headers.push(("Content-Type".to_owned(), default_type.to_owned()));
    }
    Ok(bytes)
}

/// An object as a form: scalars as text, arrays as the field once per item, objects as JSON.
fn form_body(map: &Map<String, Value>) -> String {
    let mut pairs = Vec::new();
    for (name, value) in map {
        match value {
            Value::Null => {}
            Value::Array(items) => {
                pairs.extend(
                    items.iter().map(|item| (name.as_str(), scalar_text(item).unwrap_or_else(|| item.to_string()))),
                );
            }
            other => pairs.push((name.as_str(), scalar_text(other).unwrap_or_else(|| other.to_string()))),
        }
    }
    form_urlencode(pairs.iter().map(|(name, value)| (*name, value.as_str())))
}

/// A response body, as `content` output shows it.
fn decode_content(headers: &HeaderMap, body: &[u8]) -> Value {
    if body.is_empty() {
        return Value::Null;
    }
    let media_type = headers.get(CONTENT_TYPE).and_then(|value| value.to_str().ok()).map(essence);
    if media_type.as_deref().is_none_or(is_json)
        && let Ok(value) = serde_json::from_slice(body)
    {
        return value;
    }
    match std::str::from_utf8(body) {
        Ok(text) => Value::String(text.to_owned()),
        Err(_) => Value::String(BASE64.encode(body)),
    }
}

fn header_map_json(headers: &HeaderMap) -> Value {
    let mut map = Map::new();
    for name in headers.keys() {
        let values: Vec<String> =
            headers.get_all(name).iter().map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned()).collect();
        map.insert(name.as_str().to_owned(), Value::String(values.join(", ")));
    }
    Value::Object(map)
}

/// The call's output in `mode`. The caller scrubs it.
pub(crate) fn render(received: Received, mode: OutputMode, sensitive: &Sensitive) -> Value {
    match mode {
        OutputMode::Content => decode_content(&received.headers, &received.body),
        OutputMode::Raw if received.body.is_empty() => Value::Null,
        OutputMode::Raw => Value::String(BASE64.encode(sensitive.scrub_bytes(received.body))),
        OutputMode::Response => {
            let sent: Map<String, Value> =
                received.sent_headers.into_iter().map(|(name, value)| (name, Value::String(value))).collect();
            json!({
                "request": {
                    "method": received.method.as_str().to_ascii_lowercase(),
                    "uri": received.url.as_str(),
                    "headers": sent,
                },
                "statusCode": received.status.as_u16(),
                "headers": header_map_json(&received.headers),
                "content": decode_content(&received.headers, &received.body),
            })
        }
    }
}

fn status_problem(status: StatusCode, method: &Method, url: &Url, excerpt: &[u8]) -> Problem {
    let title = match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => format!("HTTP status {}", status.as_u16()),
    };
    let mut detail = format!("{method} {url} answered {title}");
    if status.is_redirection() {
        detail.push_str(" (redirects are followed only when the call sets redirect: true)");
    }
    let excerpt = String::from_utf8_lossy(excerpt);
    let excerpt = excerpt.trim();
    if !excerpt.is_empty() {
        detail.push_str(": ");
        detail.push_str(excerpt);
    }
    Problem::communication(status.as_u16(), title, detail)
}

fn transport_problem(error: &reqwest::Error, method: &Method, url: &Url) -> Problem {
    let cause = describe_transport_error(error);
    if error.is_timeout() {
        Problem::new(ErrorType::Timeout, "Request timed out", format!("{method} {url} timed out: {cause}"))
    } else if error.is_connect() {
        Problem::communication(503, "Service unavailable", format!("{method} {url}: could not connect: {cause}"))
    } else {
        Problem::communication(503, "Request failed", format!("{method} {url} failed: {cause}"))
    }
}

/// A transport error's causes, innermost last, without repeating the URL.
pub(crate) fn describe_transport_error(error: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.iter().any(|part| part.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    if parts.is_empty() { error.to_string() } else { parts.join(": ") }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    #[error("the body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("{}", describe_transport_error(.0))]
    Transport(reqwest::Error),
}

/// Reads a body of at most `limit` bytes, chunk by chunk: a larger one is refused as soon as
/// it shows, never buffered whole.
pub(crate) async fn read_limited(mut response: Response, limit: usize) -> Result<Vec<u8>, BodyError> {
    if response.content_length().is_some_and(|length| length > limit as u64) {
        return Err(BodyError::TooLarge(limit));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Transport)? {
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The first `limit` bytes of a body, for an error's detail; whatever could be read.
async fn read_prefix(mut response: Response, limit: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < limit {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk[..chunk.len().min(limit - body.len())]),
            Ok(None) | Err(_) => break,
        }
    }
    // Do not cut a character in two.
    while std::str::from_utf8(&body).is_err_and(|error| error.error_len().is_none()) {
        body.pop();
    }
    body
}
