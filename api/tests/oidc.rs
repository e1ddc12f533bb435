//! Signing in to the web UI through an OpenID provider (authorization code flow with PKCE),
//! against a real provider the test runs (oidc-provider-mock from PyPI; skipped without it
//! unless `BATON_REQUIRE_SERVICES=1`). Each request here is what the browser would send, its
//! cookies carried by hand, so that each refusal can be seen.

#![allow(clippy::unwrap_used)]

mod support;

use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::json;
use support::{OidcProvider, Server};

/// A client that follows no redirect, as each step is looked at.
fn client() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// The value a response's `Set-Cookie` gives `name`, and the whole header.
fn set_cookie(response: &reqwest::Response, name: &str) -> Option<(String, String)> {
    response.headers().get_all(SET_COOKIE).iter().filter_map(|v| v.to_str().ok()).find_map(|header| {
        let (pair, _) = header.split_once(';').unwrap_or((header, ""));
        let (key, value) = pair.split_once('=')?;
        (key == name).then(|| (value.to_owned(), header.to_owned()))
    })
}

fn query(url: &str, key: &str) -> Option<String> {
    let url = reqwest::Url::parse(url).unwrap();
    url.query_pairs().find(|(k, _)| k == key).map(|(_, v)| v.into_owned())
}

/// A sign-in started at Baton: the provider's authorization URL and the flow cookie.
async fn begin(s: &Server) -> (String, String) {
    let response = client().get(format!("{}/ui/login/oidc", s.base)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let location = response.headers()[LOCATION].to_str().unwrap().to_owned();
    let (flow, header) = set_cookie(&response, "baton_oidc").expect("the flow's cookie");
    assert!(header.contains("HttpOnly") && header.contains("SameSite=Lax"), "{header}");
    (location, flow)
}

/// The person `sub` signs in at the provider: the callback URL it sends the browser to.
async fn authorize(authorization: &str, sub: &str) -> String {
    let response = client().post(authorization).form(&[("sub", sub)]).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FOUND, "{}", response.text().await.unwrap());
    response.headers()[LOCATION].to_str().unwrap().to_owned()
}

/// The browser back at Baton's callback, with the flow's cookie (or none).
async fn callback(url: &str, flow: Option<&str>) -> reqwest::Response {
    let mut request = client().get(url);
    if let Some(flow) = flow {
        request = request.header(COOKIE, format!("baton_oidc={flow}"));
    }
    request.send().await.unwrap()
}

/// What Baton's callback would do with `back`, done by hand: the code exchanged at the
/// provider's token endpoint with the flow cookie's PKCE verifier, for the ID token.
async fn id_token_by_hand(issuer: &str, s: &Server, back: &str, flow: &str) -> String {
    let discovery: serde_json::Value =
        client().get(format!("{issuer}/.well-known/openid-configuration")).send().await.unwrap().json().await.unwrap();
    let verifier = flow.rsplit('.').next().unwrap();
    let redirect = format!("{}/ui/login/oidc/callback", s.base);
    let form = [
        ("grant_type", "authorization_code"),
        ("code", &query(back, "code").unwrap()),
        ("redirect_uri", &redirect),
        ("client_id", "baton-ui"),
        ("code_verifier", verifier),
    ];
    let answer: serde_json::Value = client()
        .post(discovery["token_endpoint"].as_str().unwrap())
        .basic_auth("baton-ui", Some("ui-secret"))
        .form(&form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["id_token"].as_str().unwrap_or_else(|| panic!("no ID token: {answer}")).to_owned()
}

async fn page(s: &Server, path: &str, session: &str) -> (StatusCode, String) {
    let response = client()
        .get(format!("{}{path}", s.base))
        .header(COOKIE, format!("baton_session={session}"))
        .send()
        .await
        .unwrap();
    (response.status(), response.text().await.unwrap())
}

#[tokio::test]
async fn a_team_leader_signs_in_through_the_provider_and_reaches_their_inbox() {
    let Some(provider) = OidcProvider::start().await else { return };
    provider.set_user("tom", json!({ "name": "Tom Claes" })).await;
    let s = Server::start_oidc(&provider.issuer).await;

    let login = client().get(format!("{}/ui/login", s.base)).send().await.unwrap().text().await.unwrap();
    assert!(login.contains(r#"href="/ui/login/oidc""#) && login.contains("Sign in with Test ID"), "{login}");

    let (authorization, flow) = begin(&s).await;
    assert!(authorization.starts_with(&format!("{}/", provider.issuer)), "{authorization}");
    assert_eq!(query(&authorization, "client_id").as_deref(), Some("baton-ui"));
    assert_eq!(query(&authorization, "code_challenge_method").as_deref(), Some("S256"));
    assert_eq!(query(&authorization, "response_type").as_deref(), Some("code"));
    let state = query(&authorization, "state").unwrap();
    assert!(flow.starts_with(&format!("{state}.")), "the cookie carries the state");
    assert!(query(&authorization, "nonce").is_some_and(|n| flow.contains(&n)));

    let back = authorize(&authorization, "tom").await;
    assert!(back.starts_with(&format!("{}/ui/login/oidc/callback?", s.base)), "{back}");
    let response = callback(&back, Some(&flow)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let (session, header) = set_cookie(&response, "baton_session").expect("a session");
    assert!(header.contains("HttpOnly") && header.contains("SameSite=Strict"), "{header}");
    let (cleared, _) = set_cookie(&response, "baton_oidc").expect("the flow's cookie cleared");
    assert!(cleared.is_empty());
    let body = response.text().await.unwrap();
    assert!(body.contains(r#"http-equiv="refresh" content="0; url=/ui/inbox""#), "{body}");

    // The session is the provider's ID token, checked again on each page.
    let (status, inbox) = page(&s, "/ui/inbox", &session).await;
    assert_eq!(status, StatusCode::OK);
    assert!(inbox.contains("Signed in as <strong>tom</strong>"), "{inbox}");
    let mut forged = session.clone();
    let middle = forged.find('.').unwrap() + 3;
    forged.replace_range(middle..=middle, if &forged[middle..=middle] == "A" { "B" } else { "A" });
    let (status, _) = page(&s, "/ui/inbox", &forged).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "a token whose claims were changed is no session");

    // The code was spent: the same callback again is refused by the provider.
    let again = callback(&back, Some(&flow)).await;
    assert_eq!(again.status(), StatusCode::BAD_GATEWAY);
    assert!(set_cookie(&again, "baton_session").is_none());
    assert!(again.text().await.unwrap().contains("refused the sign-in"));
}

#[tokio::test]
async fn a_sign_in_is_refused_with_another_state_without_its_cookie_when_denied_or_for_a_stranger() {
    let Some(provider) = OidcProvider::start().await else { return };
    provider.set_user("otto", json!({ "baton_permissions": ["ops"] })).await;
    let s = Server::start_oidc(&provider.issuer).await;

    // Another sign-in's cookie: the state does not match.
    let (authorization, _) = begin(&s).await;
    let (_, other_flow) = begin(&s).await;
    let back = authorize(&authorization, "tom").await;
    let response = callback(&back, Some(&other_flow)).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(set_cookie(&response, "baton_session").is_none());
    assert!(response.text().await.unwrap().contains("state does not match"));

    // No cookie at all: a callback another site made the browser open.
    let (authorization, _) = begin(&s).await;
    let back = authorize(&authorization, "tom").await;
    let response = callback(&back, None).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(set_cookie(&response, "baton_session").is_none());

    // The person refuses at the provider.
    let (authorization, flow) = begin(&s).await;
    let denied = client().post(&authorization).form(&[("action", "deny")]).send().await.unwrap();
    let back = denied.headers()[LOCATION].to_str().unwrap().to_owned();
    assert_eq!(query(&back, "error").as_deref(), Some("access_denied"));
    let response = callback(&back, Some(&flow)).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.text().await.unwrap().contains("did not sign you in (access_denied"));

    // Somebody the directory does not know and who holds no permission.
    let (authorization, flow) = begin(&s).await;
    let response = callback(&authorize(&authorization, "zed").await, Some(&flow)).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(set_cookie(&response, "baton_session").is_none());
    assert!(response.text().await.unwrap().contains("does not know"));
    // Their ID token, got from the provider by hand and put in the cookie, is no session either.
    let (authorization, flow) = begin(&s).await;
    let back = authorize(&authorization, "zed").await;
    let token = id_token_by_hand(&provider.issuer, &s, &back, &flow).await;
    assert_eq!(page(&s, "/ui/inbox", &token).await.0, StatusCode::SEE_OTHER);

    // An ops engineer outside the directory, with the permission in the ID token's claim.
    let (authorization, flow) = begin(&s).await;
    let response = callback(&authorize(&authorization, "otto").await, Some(&flow)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let (session, _) = set_cookie(&response, "baton_session").unwrap();
    let (status, instances) = page(&s, "/ui/instances", &session).await;
    assert_eq!(status, StatusCode::OK, "{instances}");
    assert!(instances.contains("Signed in as <strong>otto</strong>"));
}

#[tokio::test]
async fn a_person_named_by_their_email_signs_in_only_with_an_address_the_provider_verified() {
    let Some(provider) = OidcProvider::start().await else { return };
    provider.set_user("u-1", json!({ "email": "tom", "email_verified": false })).await;
    provider.set_user("u-2", json!({ "email": "tom", "email_verified": true })).await;
    let s = Server::start_oidc_named_by(&provider.issuer, "email").await;

    let (authorization, flow) = begin(&s).await;
    let response = callback(&authorize(&authorization, "u-1").await, Some(&flow)).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(set_cookie(&response, "baton_session").is_none());
    assert!(response.text().await.unwrap().contains("has not verified"));

    let (authorization, flow) = begin(&s).await;
    let response = callback(&authorize(&authorization, "u-2").await, Some(&flow)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let (session, _) = set_cookie(&response, "baton_session").unwrap();
    let (status, inbox) = page(&s, "/ui/inbox", &session).await;
    assert_eq!(status, StatusCode::OK);
    assert!(inbox.contains("Signed in as <strong>tom</strong>"), "the email names tom: {inbox}");
}

#[tokio::test]
async fn a_server_without_a_provider_offers_no_such_sign_in() {
    let s = Server::start(false).await;
    let login = client().get(format!("{}/ui/login", s.base)).send().await.unwrap().text().await.unwrap();
    assert!(!login.contains("/ui/login/oidc"));
    let response = client().get(format!("{}/ui/login/oidc", s.base)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}
