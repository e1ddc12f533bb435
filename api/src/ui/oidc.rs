//! Signing in to the web UI through an OpenID Connect provider: the authorization code flow
//! with PKCE (docs/web-ui.md, "Signing in").
//!
//! 1. `GET /ui/login/oidc` makes a `state`, a `nonce` and a PKCE verifier, keeps them in a
//!    short-lived cookie scoped to the callback (`SameSite=Lax`: the provider sends the person
//!    back with a top-level navigation from its own site, which a strict cookie would not
//!    survive) and sends the browser to the provider's authorization endpoint.
//! 2. The provider signs the person in and sends the browser to `GET /ui/login/oidc/callback`
//!    with a code and the state. The state must be the cookie's; the code is exchanged at the
//!    token endpoint, server to server, with the verifier (and the client secret, when the
//!    client has one).
//! 3. The ID token is checked as an API token is (the provider's keys from its JWKS, `iss`,
//!    `aud` naming this client, `exp`), and its `nonce` must be the cookie's. It becomes the
//!    session: the same `HttpOnly`, `SameSite=Strict` cookie a token login sets, for as long as
//!    the ID token lasts. Each request checks it again, so nothing is kept on the server and
//!    any node of a cluster takes the session.
//!
//! The provider is found by OpenID Connect discovery (`/.well-known/openid-configuration`
//! under the issuer) when the server starts; a provider that cannot be reached then stops
//! the start with its reason rather than failing the first person who signs in.

use std::sync::Arc;
use std::time::Duration;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::pages::{login_form, page};
use super::{cookie, session_cookie};
use crate::app::App;
use crate::auth::{AuthConfig, Authenticator, parse_algorithm};

/// The cookie that carries a sign-in's state, nonce and PKCE verifier to the callback.
const FLOW_COOKIE: &str = "baton_oidc";
/// Where the provider sends the browser back; the configured redirect URL must end with it.
pub const CALLBACK_PATH: &str = "/ui/login/oidc/callback";
/// How long a person has to sign in at the provider.
const FLOW_TTL: Duration = Duration::from_secs(600);
/// How long a call to the provider (discovery, the token exchange) may take.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);
/// The signing algorithms an ID token may use, whatever the provider offers.
const ALGORITHMS: [&str; 7] = ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"];

/// The `[oidc]` settings: the provider and this server's client registration there.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The provider's issuer URL (`https://id.example.com/realms/plant`); discovery reads
    /// `/.well-known/openid-configuration` under it.
    pub issuer: String,
    /// This server's client id at the provider.
    pub client_id: String,
    /// The client's secret, for a confidential client (sent with HTTP basic authentication);
    /// none for a public client, which PKCE protects alone.
    #[serde(default)]
    pub client_secret: Option<String>,
    /// The callback URL registered at the provider: this server's public address followed by
    /// `/ui/login/oidc/callback`.
    pub redirect_url: String,
    /// The scopes asked for; `openid` is always among them.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// The ID token claim that names the person in Baton's directory (`sub`,
    /// `preferred_username`, `email`...).
    #[serde(default = "default_subject_claim")]
    pub subject_claim: String,
    /// The claim holding platform permissions, as for API tokens.
    #[serde(default = "default_permissions_claim")]
    pub permissions_claim: String,
    /// The provider's name on the login page's button.
    #[serde(default = "default_label")]
    pub label: String,
}

fn default_scopes() -> Vec<String> {
    vec!["openid".into(), "profile".into(), "email".into()]
}

fn default_subject_claim() -> String {
    "sub".into()
}

fn default_permissions_claim() -> String {
    AuthConfig::default().permissions_claim
}

fn default_label() -> String {
    "your organisation's account".into()
}

impl std::fmt::Debug for OidcConfig {
    /// Everything but the client secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcConfig")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "set"))
            .field("redirect_url", &self.redirect_url)
            .field("scopes", &self.scopes)
            .field("subject_claim", &self.subject_claim)
            .field("permissions_claim", &self.permissions_claim)
            .field("label", &self.label)
            .finish()
    }
}

/// The provider, found by discovery, and the checks its ID tokens pass.
pub struct Oidc {
    config: OidcConfig,
    authorization_endpoint: String,
    token_endpoint: String,
    /// Checks ID tokens: the provider's keys, its issuer, this client as audience.
    verifier: Authenticator,
    http: reqwest::Client,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oidc")
            .field("config", &self.config)
            .field("authorization_endpoint", &self.authorization_endpoint)
            .field("token_endpoint", &self.token_endpoint)
            .finish_non_exhaustive()
    }
}

/// The part of a discovery document a sign-in needs.
#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    #[serde(default)]
    id_token_signing_alg_values_supported: Vec<String>,
}

impl Oidc {
    /// Reads the provider's discovery document and its keys, and checks the settings.
    pub async fn discover(mut config: OidcConfig) -> Result<Self, String> {
        let redirect = reqwest::Url::parse(&config.redirect_url)
            .map_err(|e| format!("oidc.redirect_url {:?} is not a URL: {e}", config.redirect_url))?;
        if redirect.path() != CALLBACK_PATH {
            return Err(format!(
                "oidc.redirect_url must be this server's public address followed by {CALLBACK_PATH}, not {:?}",
                config.redirect_url
            ));
        }
        if config.client_id.is_empty() {
            return Err("oidc.client_id is empty".into());
        }
        if !config.scopes.iter().any(|scope| scope == "openid") {
            config.scopes.insert(0, "openid".into());
        }
        let http = reqwest::Client::builder()
            .timeout(PROVIDER_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot make an HTTP client: {e}"))?;
        let url = format!("{}/.well-known/openid-configuration", config.issuer.trim_end_matches('/'));
        let discovery: Discovery = match http.get(&url).send().await.and_then(reqwest::Response::error_for_status) {
            Ok(response) => response.json().await.map_err(|e| format!("{url} is not a discovery document: {e}"))?,
            Err(e) => return Err(format!("the OpenID provider's discovery document {url} cannot be read: {e}")),
        };
        if discovery.issuer.trim_end_matches('/') != config.issuer.trim_end_matches('/') {
            return Err(format!(
                "the provider at {url} calls itself {:?}, not the configured issuer {:?}",
                discovery.issuer, config.issuer
            ));
        }
        let offered = &discovery.id_token_signing_alg_values_supported;
        let algorithms = ALGORITHMS
            .iter()
            .filter(|name| offered.is_empty() || offered.iter().any(|o| o == *name))
            .map(|name| parse_algorithm(name))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        if algorithms.is_empty() {
            return Err(format!("the provider signs ID tokens only with {offered:?}, which Baton does not take"));
        }
        let verifier = Authenticator::new(AuthConfig {
            jwks_url: Some(discovery.jwks_uri.clone()),
            issuer: Some(discovery.issuer.clone()),
            audience: vec![config.client_id.clone()],
            algorithms,
            permissions_claim: config.permissions_claim.clone(),
            subject_claim: config.subject_claim.clone(),
            ..AuthConfig::default()
        })
        .await
        .map_err(|e| format!("the provider's keys ({}): {e}", discovery.jwks_uri))?;
        Ok(Self {
            config,
            authorization_endpoint: discovery.authorization_endpoint,
            token_endpoint: discovery.token_endpoint,
            verifier,
            http,
        })
    }

    /// The provider's name, for the login page.
    pub fn label(&self) -> &str {
        &self.config.label
    }

    /// What a session cookie gives as this provider's ID token. The directory is asked again
    /// on each request: a token the callback would refuse (a person Baton does not know) gives
    /// no session when it is put in the cookie by hand, and a person removed from the
    /// directory loses theirs at once.
    pub async fn authenticate(&self, app: &App, token: &str) -> IdTokenSession {
        let Ok((caller, claims)) = self.verifier.verify(token).await else { return IdTokenSession::NotOne };
        if self.trusted_subject(&claims).is_err() || admitted(app, &caller).await.is_err() {
            return IdTokenSession::Refused;
        }
        IdTokenSession::Person(caller)
    }

    /// Whether the claim that names the person can be trusted: an `email` only when the
    /// provider verified it (a person may often change their address at the provider).
    fn trusted_subject(&self, claims: &serde_json::Map<String, Value>) -> Result<(), String> {
        if self.config.subject_claim == "email" && claims.get("email_verified") != Some(&Value::Bool(true)) {
            return Err("the provider has not verified the email address that names you (`email_verified`)".into());
        }
        Ok(())
    }

    /// Whether cookies of the sign-in should be sent over HTTPS only.
    fn secure(&self) -> bool {
        self.config.redirect_url.starts_with("https:")
    }
}

/// A session cookie read as the provider's ID token.
#[derive(Debug)]
pub enum IdTokenSession {
    /// Not an ID token of this provider for this client (a token login's API token, say).
    NotOne,
    /// The provider's ID token, for somebody the callback would have refused: no session, and
    /// not to be read as an API token either.
    Refused,
    Person(crate::auth::Caller),
}

/// Whether Baton lets a person the provider signed in use the web UI: its directory knows
/// them, or the provider's token grants them permissions of its own.
async fn admitted(app: &App, caller: &crate::auth::Caller) -> Result<(), String> {
    if !caller.grants.is_empty() {
        return Ok(());
    }
    match app.engine.store().person(&caller.subject).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(format!(
            "you signed in as {:?}, whom Baton's directory does not know: ask an administrator to add you",
            caller.subject
        )),
        Err(e) => Err(format!("Baton's directory could not be read: {e}")),
    }
}

/// 32 random bytes, URL-safe: two version 4 UUIDs (122 random bits each, from the operating
/// system's generator).
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    bytes[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    bytes[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A sign-in under way: what the callback must find again.
struct Flow {
    state: String,
    nonce: String,
    verifier: String,
}

impl Flow {
    fn new() -> Self {
        Self { state: random_token(), nonce: random_token(), verifier: random_token() }
    }

    fn cookie_value(&self) -> String {
        format!("{}.{}.{}", self.state, self.nonce, self.verifier)
    }

    fn from_cookie(value: &str) -> Option<Self> {
        let mut parts = value.split('.');
        let (state, nonce, verifier) = (parts.next()?, parts.next()?, parts.next()?);
        (parts.next().is_none() && ![state, nonce, verifier].iter().any(|p| p.is_empty())).then(|| Self {
            state: state.to_owned(),
            nonce: nonce.to_owned(),
            verifier: verifier.to_owned(),
        })
    }

    /// The PKCE challenge (S256) of the verifier.
    fn challenge(&self) -> String {
        URL_SAFE_NO_PAD.encode(Sha256::digest(self.verifier.as_bytes()))
    }
}

fn flow_cookie(value: Option<&str>, secure: bool) -> HeaderValue {
    let (value, age) = match value {
        Some(value) => (value, FLOW_TTL.as_secs()),
        None => ("", 0),
    };
    let secure = if secure { "; Secure" } else { "" };
    let cookie = format!("{FLOW_COOKIE}={value}; Path=/ui/login/oidc; HttpOnly; SameSite=Lax; Max-Age={age}{secure}");
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static("baton_oidc=; Max-Age=0"))
}

/// `GET /ui/login/oidc`: to the provider's sign-in.
pub async fn start(State(app): State<Arc<App>>) -> Response {
    let Some(oidc) = &app.options.oidc else {
        return login_form(&app, StatusCode::NOT_FOUND, Some("this server has no OpenID provider".into())).await;
    };
    let flow = Flow::new();
    let mut url = match reqwest::Url::parse(&oidc.authorization_endpoint) {
        Ok(url) => url,
        Err(e) => return login_form(&app, StatusCode::BAD_GATEWAY, Some(format!("the provider's address: {e}"))).await,
    };
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &oidc.config.client_id)
        .append_pair("redirect_uri", &oidc.config.redirect_url)
        .append_pair("scope", &oidc.config.scopes.join(" "))
        .append_pair("state", &flow.state)
        .append_pair("nonce", &flow.nonce)
        .append_pair("code_challenge", &flow.challenge())
        .append_pair("code_challenge_method", "S256");
    let mut response = Redirect::to(url.as_str()).into_response();
    response.headers_mut().insert(header::SET_COOKIE, flow_cookie(Some(&flow.cookie_value()), oidc.secure()));
    response
}

/// What the provider sends back: a code and the state, or an error.
#[derive(Debug, Deserialize)]
pub struct Callback {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

#[derive(Template)]
#[template(path = "ui/signed_in.html")]
struct SignedIn {
    who: Option<String>,
    csrf: String,
}

/// `GET /ui/login/oidc/callback`: the code exchanged, the ID token checked, the session set.
pub async fn callback(State(app): State<Arc<App>>, headers: HeaderMap, Query(back): Query<Callback>) -> Response {
    let Some(oidc) = app.options.oidc.clone() else {
        return login_form(&app, StatusCode::NOT_FOUND, Some("this server has no OpenID provider".into())).await;
    };
    let refuse = |status: StatusCode, message: String| {
        let app = Arc::clone(&app);
        let secure = oidc.secure();
        async move {
            tracing::info!(%message, "an OpenID Connect sign-in was refused");
            let mut response = login_form(&app, status, Some(message)).await;
            response.headers_mut().append(header::SET_COOKIE, flow_cookie(None, secure));
            response
        }
    };
    if let Some(error) = back.error {
        // The provider's words, as far as a line: anyone can make a link to this page.
        let why = back.error_description.map(|d| format!(": {}", d.chars().take(200).collect::<String>()));
        let error: String = error.chars().take(60).collect();
        let message = format!("the provider did not sign you in ({error}{})", why.unwrap_or_default());
        return refuse(StatusCode::UNAUTHORIZED, message).await;
    }
    let Some(flow) = cookie(&headers, FLOW_COOKIE).as_deref().and_then(Flow::from_cookie) else {
        let message = "this sign-in was not started here or took longer than 10 minutes: sign in again";
        return refuse(StatusCode::BAD_REQUEST, message.into()).await;
    };
    if back.state.as_deref() != Some(flow.state.as_str()) {
        return refuse(StatusCode::BAD_REQUEST, "the sign-in's state does not match: sign in again".into()).await;
    }
    let Some(code) = back.code.filter(|c| !c.is_empty()) else {
        return refuse(StatusCode::BAD_REQUEST, "the provider sent no authorization code".into()).await;
    };
    let id_token = match exchange(&oidc, &code, &flow).await {
        Ok(token) => token,
        Err(message) => return refuse(StatusCode::BAD_GATEWAY, message).await,
    };
    let (caller, claims) = match oidc.verifier.verify(&id_token).await {
        Ok(verified) => verified,
        Err(e) => return refuse(StatusCode::UNAUTHORIZED, format!("the provider's ID token is refused: {e}")).await,
    };
    if let Err(message) = oidc.trusted_subject(&claims) {
        return refuse(StatusCode::UNAUTHORIZED, message).await;
    }
    if claims.get("nonce").and_then(Value::as_str) != Some(flow.nonce.as_str()) {
        return refuse(StatusCode::UNAUTHORIZED, "the ID token's nonce is not this sign-in's".into()).await;
    }
    let several = matches!(claims.get("aud"), Some(Value::Array(audiences)) if audiences.len() > 1);
    let azp = claims.get("azp").and_then(Value::as_str);
    if (several || azp.is_some()) && azp != Some(oidc.config.client_id.as_str()) {
        return refuse(StatusCode::UNAUTHORIZED, "the ID token was issued to another party (`azp`)".into()).await;
    }
    if let Err(message) = admitted(&app, &caller).await {
        return refuse(StatusCode::FORBIDDEN, message).await;
    }
    let lasts =
        caller.expires_at.map(|at| (at - Utc::now()).to_std().unwrap_or_default()).unwrap_or(Duration::from_secs(300));
    tracing::info!(subject = %caller.subject, "signed in through OpenID Connect");
    // The session cookie is strict: the browser does not send it on this navigation, which
    // another site started, nor on a redirect from it. The page goes on to the inbox itself,
    // a navigation of this site's own.
    let mut response = page(StatusCode::OK, &SignedIn { who: Some(caller.subject.clone()), csrf: String::new() });
    let headers = response.headers_mut();
    let mut session = session_cookie(Some(&id_token), lasts);
    if oidc.secure() {
        // Behind HTTPS (the registered redirect URL says so), the session travels over TLS only.
        let text = format!("{}; Secure", session.to_str().unwrap_or_default());
        session = HeaderValue::from_str(&text).unwrap_or(session);
    }
    headers.append(header::SET_COOKIE, session);
    headers.append(header::SET_COOKIE, flow_cookie(None, oidc.secure()));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The token endpoint's answer.
#[derive(Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    id_token: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

/// Exchanges the code for the ID token at the provider's token endpoint.
async fn exchange(oidc: &Oidc, code: &str, flow: &Flow) -> Result<String, String> {
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", oidc.config.redirect_url.as_str()),
        ("client_id", oidc.config.client_id.as_str()),
        ("code_verifier", flow.verifier.as_str()),
    ];
    let mut request = oidc.http.post(&oidc.token_endpoint).form(&form);
    if let Some(secret) = &oidc.config.client_secret {
        request = request.basic_auth(&oidc.config.client_id, Some(secret));
    }
    let response = request.send().await.map_err(|e| format!("the provider's token endpoint cannot be reached: {e}"))?;
    let status = response.status();
    let answer: TokenAnswer =
        response.json().await.map_err(|e| format!("the provider's token endpoint answered {status}: {e}"))?;
    match (answer.id_token, answer.error) {
        (Some(token), None) if status.is_success() => Ok(token),
        (_, Some(error)) => {
            let why = answer.error_description.map(|d| format!(": {d}")).unwrap_or_default();
            Err(format!("the provider refused the sign-in's code ({error}{why})"))
        }
        _ => Err(format!("the provider's token endpoint answered {status} without an ID token")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flow_survives_its_cookie_and_its_challenge_is_the_verifier_s_hash() {
        let flow = Flow::new();
        let again = Flow::from_cookie(&flow.cookie_value()).expect("read back");
        assert_eq!((again.state, again.nonce, again.verifier.clone()), (flow.state.clone(), flow.nonce, flow.verifier));
        assert_ne!(Flow::new().state, flow.state, "each sign-in has its own state");
        assert_eq!(random_token().len(), 43);
        // RFC 7636, appendix B.
        let known = Flow {
            state: String::new(),
            nonce: String::new(),
            verifier: "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".into(),
        };
        assert_eq!(known.challenge(), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
        assert!(Flow::from_cookie("a.b").is_none());
        assert!(Flow::from_cookie("a..c").is_none());
        assert!(Flow::from_cookie("a.b.c.d").is_none());
    }
}
