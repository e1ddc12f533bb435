//! The web UI: pages rendered on the server (askama templates compiled into the binary, htmx
//! for the parts that change in place), over the same engine calls and the same authorization
//! as the API. docs/web-ui.md says why and how.
//!
//! - **Sessions**: the bearer token the API takes, kept in an `HttpOnly`, `SameSite=Strict`
//!   cookie scoped to `/ui`. `baton dev` lets a person pick who to be on the login page
//!   (tokens of its development identity); any server takes a pasted token.
//! - **CSRF**: every form posts a token derived from the session's token (a keyed hash the
//!   page holds and another site cannot read), and a request whose `Origin` is another site is
//!   refused; the strict cookie would not be sent with it either.
//! - **What a person sees** is what the API would show them: the inbox and the task come from
//!   the engine's own queries with the person's principal.

mod assets;
mod form;
mod oidc;
mod pages;
mod preferences;

use oidc::IdTokenSession;
pub use oidc::{CALLBACK_PATH as OIDC_CALLBACK_PATH, Oidc, OidcConfig};

use std::sync::Arc;

use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use sha2::{Digest, Sha256};

use crate::app::App;
use crate::auth::Caller;

/// The cookie that holds a session's token.
const SESSION_COOKIE: &str = "baton_session";
/// How long a development login lasts.
const DEV_SESSION: std::time::Duration = std::time::Duration::from_secs(12 * 3600);

/// The UI under `/ui`.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/inbox") }))
        .route("/ui/login", get(pages::login_page).post(pages::login))
        .route("/ui/login/oidc", get(oidc::start))
        .route("/ui/login/oidc/callback", get(oidc::callback))
        .route("/ui/logout", post(pages::logout))
        .route("/ui/inbox", get(pages::inbox))
        .route("/ui/inbox/rows", get(pages::inbox_rows))
        .route("/ui/escalations", get(pages::escalations))
        .route("/ui/escalations/rows", get(pages::escalation_rows))
        .route("/ui/definitions", get(pages::definitions))
        .route("/ui/definitions/validate", post(pages::validate))
        .route("/ui/definitions/try", post(pages::try_definition))
        .route("/ui/definitions/{namespace}/{name}", get(pages::definition))
        .route("/ui/definitions/{namespace}/{name}/diagram.svg", get(pages::diagram))
        .route("/ui/documents", get(pages::documents))
        .route("/ui/notifications", get(pages::notifications))
        .route("/ui/notifications/read", post(pages::mark_read))
        .route("/ui/preferences", get(preferences::show).post(preferences::save))
        .route("/ui/instances", get(pages::instances))
        .route("/ui/instances/{id}", get(pages::instance))
        .route("/ui/instances/{id}/{action}", post(pages::change_instance))
        .route("/ui/incidents/{incident}/retry", post(pages::retry_incident))
        .route("/ui/incidents/{incident}/complete", post(pages::complete_incident))
        .route("/ui/bulk", post(pages::bulk_dry_run))
        .route("/ui/bulk/start", post(pages::bulk_start))
        .route("/ui/bulk/{job}", get(pages::bulk))
        .route("/ui/bulk/{job}/progress", get(pages::bulk_progress))
        .route("/ui/tasks/{instance}/{seq}", get(pages::task))
        .route("/ui/tasks/{instance}/{seq}/{action}", post(pages::act))
        .route("/ui/assets/{file}", get(assets::serve))
        .layer(axum::middleware::map_response(secure_headers))
        .with_state(app)
}

/// Headers every page carries: only this server's scripts and styles, never in a frame.
async fn secure_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    response
}

/// A signed-in person: their token (from the session cookie) and who it says they are.
#[derive(Debug)]
pub struct Session {
    pub caller: Caller,
    token: String,
}

impl Session {
    /// The token forms post back: a hash of the session's token, which another site cannot
    /// read or make.
    pub fn csrf(&self) -> String {
        csrf_of(&self.token)
    }
}

fn csrf_of(token: &str) -> String {
    hex::encode(&Sha256::digest(format!("baton-ui-csrf\0{token}"))[..16])
}

/// A cookie's value from the request's `Cookie` headers.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
}

/// Sets (or, with `None`, clears) the session cookie.
fn session_cookie(token: Option<&str>, max_age: std::time::Duration) -> HeaderValue {
    let value = match token {
        Some(token) => {
            format!("{SESSION_COOKIE}={token}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}", max_age.as_secs())
        }
        None => format!("{SESSION_COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0"),
    };
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("baton_session=; Max-Age=0"))
}

/// Whether a posting request comes from another site (its `Origin` names another host).
fn cross_site(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else { return false };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default();
    origin.split_once("://").map(|(_, authority)| authority) != Some(host)
}

/// Where a request without a valid session goes: the login page (htmx follows `HX-Redirect`).
fn to_login(headers: &HeaderMap) -> Response {
    let mut response = if headers.contains_key("hx-request") {
        let mut response = (StatusCode::UNAUTHORIZED, axum::response::Html("")).into_response();
        response.headers_mut().insert("hx-redirect", HeaderValue::from_static("/ui/login"));
        response
    } else {
        Redirect::to("/ui/login").into_response()
    };
    response.headers_mut().insert(header::SET_COOKIE, session_cookie(None, std::time::Duration::ZERO));
    response
}

impl FromRequestParts<Arc<App>> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, Self::Rejection> {
        let token = cookie(&parts.headers, SESSION_COOKIE).filter(|t| !t.is_empty());
        let Some(token) = token else { return Err(to_login(&parts.headers)) };
        // An OpenID Connect sign-in's session is the provider's ID token, checked with the
        // provider's keys, this client as audience and the configured subject claim; a token
        // login's is an API token. The ID token is tried first, so that it is never read as
        // an API token with another subject, not even when it is refused (where the API
        // trusts the same provider, it would otherwise get past the directory's check).
        let from_provider = match &app.options.oidc {
            Some(oidc) => oidc.authenticate(app, &token).await,
            None => IdTokenSession::NotOne,
        };
        let caller = match from_provider {
            IdTokenSession::Person(caller) => Some(caller),
            IdTokenSession::Refused => None,
            IdTokenSession::NotOne => app.auth.authenticate(&token).await.ok(),
        };
        match caller {
            Some(caller) if app.allow(&caller.subject) => Ok(Self { caller, token }),
            Some(_) => Err((StatusCode::TOO_MANY_REQUESTS, "too many requests; slow down").into_response()),
            None => Err(to_login(&parts.headers)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_read_among_others_and_origins_compared_with_the_host() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("theme=dark; baton_session=abc.def"));
        assert_eq!(cookie(&headers, SESSION_COOKIE).as_deref(), Some("abc.def"));
        assert_eq!(cookie(&headers, "missing"), None);

        headers.insert(header::HOST, HeaderValue::from_static("baton.example:8080"));
        assert!(!cross_site(&headers), "no Origin: a same-site form or a non-browser client");
        headers.insert(header::ORIGIN, HeaderValue::from_static("http://baton.example:8080"));
        assert!(!cross_site(&headers));
        headers.insert(header::ORIGIN, HeaderValue::from_static("https://evil.example"));
        assert!(cross_site(&headers));
    }

    #[test]
    fn the_csrf_token_is_the_session_s_own() {
        assert_eq!(csrf_of("a"), csrf_of("a"));
        assert_ne!(csrf_of("a"), csrf_of("b"));
        assert_eq!(csrf_of("a").len(), 32);
    }
}
