//! Authentication of bearer tokens with real tokens: HS256 with a secret, RS256 and ES256 with
//! keys from a JWKS file or from a JWKS URL served by a local axum server; the refusals (expired,
//! not yet valid, wrong audience or issuer, bad signature, `alg: none`, an algorithm off the
//! allow-list, unknown keys, missing subject, bad grants); and what a caller's grants allow.
//!
//! The keys are in tests/keys (tests only, see its README).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use baton_api::auth::{AuthConfig, AuthError, Authenticator, Caller, Grant, Permission, Scope, parse_algorithm};
use chrono::Utc;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const SECRET: &str = "a development secret of reasonable length";
const JWKS: &str = include_str!("keys/jwks.json");
const JWKS_ROTATED: &str = include_str!("keys/jwks-rotated.json");

fn jwks_file() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys/jwks.json"))
}

fn rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(include_bytes!("keys/rsa-private.pem")).expect("RSA test key")
}

fn rsa_2_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(include_bytes!("keys/rsa-2-private.pem")).expect("second RSA test key")
}

fn ec_key() -> EncodingKey {
    EncodingKey::from_ec_pem(include_bytes!("keys/ec-private.pem")).expect("EC test key")
}

fn now() -> i64 {
    Utc::now().timestamp()
}

/// Valid claims for `sub`, expiring in ten minutes, with `extra` merged in (a `null` removes).
fn claims(sub: &str, extra: Value) -> Value {
    let mut claims = json!({ "sub": sub, "iat": now(), "exp": now() + 600 });
    if let (Some(claims), Value::Object(extra)) = (claims.as_object_mut(), extra) {
        for (name, value) in extra {
            if value.is_null() {
                claims.remove(&name);
            } else {
                claims.insert(name, value);
            }
        }
    }
    claims
}

fn sign(algorithm: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(algorithm);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("the test token signs")
}

fn hs256(claims: &Value) -> String {
    sign(Algorithm::HS256, None, &EncodingKey::from_secret(SECRET.as_bytes()), claims)
}

fn secret_config() -> AuthConfig {
    AuthConfig { hs256_secret: Some(SECRET.to_owned()), ..AuthConfig::default() }
}

fn jwks_config() -> AuthConfig {
    AuthConfig { jwks_file: Some(jwks_file()), ..AuthConfig::default() }
}

async fn authenticator(config: AuthConfig) -> Authenticator {
    Authenticator::new(config).await.expect("the configuration is accepted")
}

async fn refusal(auth: &Authenticator, token: &str) -> AuthError {
    match auth.authenticate(token).await {
        Ok(caller) => panic!("the token was accepted for {}", caller.subject),
        Err(error) => error,
    }
}

fn grants(list: &[&str]) -> Vec<Grant> {
    list.iter().map(|g| Grant::parse(g).expect("a valid grant")).collect()
}

fn caller(list: &[&str]) -> Caller {
    Caller { subject: "someone".to_owned(), grants: grants(list), expires_at: None, event_types: Vec::new() }
}

// --- HS256 -----------------------------------------------------------------------------------

#[tokio::test]
async fn hs256_round_trip_parses_grants() {
    let auth = authenticator(secret_config()).await;
    let issued_at = Utc::now();
    let granted = grants(&["ops:training", "designer", "admin:billing"]);
    let token = auth.issue("u-42", &granted, Duration::from_secs(3600), issued_at).expect("issued");

    let caller = auth.authenticate(&token).await.expect("accepted");
    assert_eq!(caller.subject, "u-42");
    assert_eq!(caller.grants, granted);
    assert_eq!(caller.expires_at.map(|at| at.timestamp()), Some(issued_at.timestamp() + 3600));
    assert!(caller.has(Permission::Ops, Some("training")));
    assert!(!caller.has(Permission::Ops, Some("sales")));

    // Surrounding whitespace is tolerated; the prefix is the transport's business.
    assert!(auth.authenticate(&format!("  {token}\n")).await.is_ok());
}

#[tokio::test]
async fn a_token_without_the_permissions_claim_has_no_platform_permission() {
    let auth = authenticator(secret_config()).await;
    let caller = auth.authenticate(&hs256(&claims("person-7", json!({})))).await.expect("accepted");
    assert_eq!(caller.subject, "person-7");
    assert!(caller.grants.is_empty());
    assert_eq!(caller.scope(&[Permission::Ops]), Scope::Nothing);
}

#[tokio::test]
async fn a_custom_permissions_claim_is_read() {
    let auth = authenticator(AuthConfig { permissions_claim: "roles".to_owned(), ..secret_config() }).await;
    let token = hs256(&claims("svc", json!({ "roles": ["worker"], "baton_permissions": ["admin"] })));
    let caller = auth.authenticate(&token).await.expect("accepted");
    assert_eq!(caller.grants, vec![Grant::everywhere(Permission::Worker)]);
    // And `issue` writes the configured claim.
    let issued = auth.issue("svc", &grants(&["ops"]), Duration::from_secs(60), Utc::now()).expect("issued");
    let caller = auth.authenticate(&issued).await.expect("accepted");
    assert_eq!(caller.grants, grants(&["ops"]));
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let auth = authenticator(secret_config()).await;
    let an_hour_ago = Utc::now() - chrono::Duration::hours(2);
    let token = auth.issue("u-1", &[], Duration::from_secs(3600), an_hour_ago).expect("issued");
    let error = refusal(&auth, &token).await;
    assert_eq!(error, AuthError::Expired);
    assert_eq!(error.code(), "expired");
}

#[tokio::test]
async fn the_leeway_absorbs_clock_skew_on_exp() {
    let auth = authenticator(secret_config()).await; // leeway 30 s by default
    let token = hs256(&claims("u-1", json!({ "exp": now() - 10 })));
    assert!(auth.authenticate(&token).await.is_ok(), "10 s past exp is within the leeway");

    let strict = authenticator(AuthConfig { leeway_secs: 0, ..secret_config() }).await;
    assert_eq!(refusal(&strict, &token).await, AuthError::Expired);
}

#[tokio::test]
async fn exp_is_required() {
    let auth = authenticator(secret_config()).await;
    let error = refusal(&auth, &hs256(&claims("u-1", json!({ "exp": null })))).await;
    assert!(matches!(&error, AuthError::Malformed(why) if why.contains("exp")), "{error:?}");
}

#[tokio::test]
async fn a_token_not_yet_valid_is_refused() {
    let auth = authenticator(secret_config()).await;
    let error = refusal(&auth, &hs256(&claims("u-1", json!({ "nbf": now() + 600 })))).await;
    assert_eq!(error, AuthError::NotYetValid);
    assert_eq!(error.code(), "not-yet-valid");

    // A past nbf, or one within the leeway, is fine.
    assert!(auth.authenticate(&hs256(&claims("u-1", json!({ "nbf": now() - 600 })))).await.is_ok());
    assert!(auth.authenticate(&hs256(&claims("u-1", json!({ "nbf": now() + 10 })))).await.is_ok());
}

#[tokio::test]
async fn the_audience_is_checked_when_configured() {
    let auth =
        authenticator(AuthConfig { audience: vec!["baton".to_owned(), "baton-grpc".to_owned()], ..secret_config() })
            .await;
    for aud in [json!("baton"), json!("baton-grpc"), json!(["other", "baton"])] {
        let token = hs256(&claims("u-1", json!({ "aud": aud })));
        assert!(auth.authenticate(&token).await.is_ok(), "aud {aud} is accepted");
    }
    for aud in [json!("other"), json!(["other", "more"]), Value::Null] {
        let token = hs256(&claims("u-1", json!({ "aud": aud })));
        let error = refusal(&auth, &token).await;
        assert_eq!(error, AuthError::WrongAudience, "aud {aud}");
        assert_eq!(error.code(), "wrong-audience");
    }
    // `issue` writes the audiences.
    let issued = auth.issue("u-1", &[], Duration::from_secs(60), Utc::now()).expect("issued");
    assert!(auth.authenticate(&issued).await.is_ok());

    // Without a configured audience, `aud` is not checked.
    let open = authenticator(secret_config()).await;
    assert!(open.authenticate(&hs256(&claims("u-1", json!({ "aud": "anything" })))).await.is_ok());
}

#[tokio::test]
async fn the_issuer_is_checked_when_configured() {
    let auth = authenticator(AuthConfig { issuer: Some("https://idp.example".to_owned()), ..secret_config() }).await;
    let good = hs256(&claims("u-1", json!({ "iss": "https://idp.example" })));
    assert!(auth.authenticate(&good).await.is_ok());
    for iss in [json!("https://evil.example"), Value::Null] {
        let error = refusal(&auth, &hs256(&claims("u-1", json!({ "iss": iss })))).await;
        assert_eq!(error, AuthError::WrongIssuer, "iss {iss}");
        assert_eq!(error.code(), "wrong-issuer");
    }
    let issued = auth.issue("u-1", &[], Duration::from_secs(60), Utc::now()).expect("issued");
    assert!(auth.authenticate(&issued).await.is_ok());
}

#[tokio::test]
async fn a_token_signed_with_another_secret_is_refused() {
    let auth = authenticator(secret_config()).await;
    let other =
        sign(Algorithm::HS256, None, &EncodingKey::from_secret(b"another secret entirely"), &claims("u-1", json!({})));
    let error = refusal(&auth, &other).await;
    assert_eq!(error, AuthError::BadSignature);
    assert_eq!(error.code(), "bad-signature");

    // A token tampered with after signing: the payload of one, the signature of another.
    let a = hs256(&claims("u-1", json!({ "baton_permissions": ["worker"] })));
    let b = hs256(&claims("u-1", json!({ "baton_permissions": ["admin"] })));
    let a: Vec<&str> = a.split('.').collect();
    let b: Vec<&str> = b.split('.').collect();
    let forged = format!("{}.{}.{}", a[0], b[1], a[2]);
    assert_eq!(refusal(&auth, &forged).await, AuthError::BadSignature);
}

#[tokio::test]
async fn alg_none_is_refused() {
    let auth = authenticator(secret_config()).await;
    let payload = URL_SAFE_NO_PAD.encode(claims("u-1", json!({ "baton_permissions": ["admin"] })).to_string());
    for alg in ["none", "None", "NONE"] {
        let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#));
        let token = format!("{header}.{payload}.");
        let error = refusal(&auth, &token).await;
        assert_eq!(error, AuthError::AlgorithmNotAllowed(alg.to_owned()));
        assert_eq!(error.code(), "algorithm-not-allowed");
    }
}

#[tokio::test]
async fn an_hs256_token_is_refused_when_only_rs256_is_allowed() {
    // The secret is configured and would verify the token, but HS256 is off the allow-list.
    let auth = authenticator(AuthConfig {
        hs256_secret: Some(SECRET.to_owned()),
        jwks_file: Some(jwks_file()),
        algorithms: vec![Algorithm::RS256],
        ..AuthConfig::default()
    })
    .await;
    let error = refusal(&auth, &hs256(&claims("u-1", json!({})))).await;
    assert_eq!(error, AuthError::AlgorithmNotAllowed("HS256".to_owned()));

    // ES256 is not on that list either, though the JWKS has the key.
    let es = sign(Algorithm::ES256, Some("ec-1"), &ec_key(), &claims("u-1", json!({})));
    assert_eq!(refusal(&auth, &es).await, AuthError::AlgorithmNotAllowed("ES256".to_owned()));
    let rs = sign(Algorithm::RS256, Some("rsa-1"), &rsa_key(), &claims("u-1", json!({})));
    assert!(auth.authenticate(&rs).await.is_ok());

    // With keys only, the default allow-list has no HS256: the classic key-confusion token
    // (HS256 "signed" with public key material) is refused before any key is looked at.
    let keys_only = authenticator(jwks_config()).await;
    let confused =
        sign(Algorithm::HS256, Some("rsa-1"), &EncodingKey::from_secret(JWKS.as_bytes()), &claims("u-1", json!({})));
    assert_eq!(refusal(&keys_only, &confused).await, AuthError::AlgorithmNotAllowed("HS256".to_owned()));
}

#[tokio::test]
async fn unknown_algorithm_names_and_garbage_are_refused() {
    let auth = authenticator(secret_config()).await;
    assert_eq!(refusal(&auth, "").await, AuthError::Missing);
    assert_eq!(refusal(&auth, "   ").await.code(), "missing");
    for garbage in ["abc", "a.b", "a.b.c.d", "!!!.e30.", ".e30.sig", "e30..sig"] {
        let error = refusal(&auth, garbage).await;
        assert!(matches!(error, AuthError::Malformed(_)), "{garbage}: {error:?}");
        assert_eq!(error.code(), "malformed");
    }
    let payload = URL_SAFE_NO_PAD.encode(claims("u-1", json!({})).to_string());
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS1024"}"#);
    assert_eq!(
        refusal(&auth, &format!("{header}.{payload}.c2ln")).await,
        AuthError::AlgorithmNotAllowed("HS1024".to_owned())
    );
    let header = URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT"}"#);
    assert!(matches!(refusal(&auth, &format!("{header}.{payload}.c2ln")).await, AuthError::Malformed(_)));
}

// --- subject and grants -------------------------------------------------------------------

#[tokio::test]
async fn the_subject_is_required_and_not_empty() {
    let auth = authenticator(secret_config()).await;
    for sub in [Value::Null, json!(""), json!("   "), json!(42)] {
        let token = hs256(&claims("placeholder", json!({ "sub": sub })));
        let error = refusal(&auth, &token).await;
        assert!(matches!(&error, AuthError::Malformed(why) if why.contains("sub")), "sub {sub}: {error:?}");
    }
}

#[tokio::test]
async fn a_malformed_grant_refuses_the_token() {
    let auth = authenticator(secret_config()).await;
    for permissions in [
        json!(["ops", "superuser"]),
        json!(["ops:"]),
        json!(["Admin"]),
        json!(["ops:training wheels"]),
        json!(["ops", 7]),
        json!("ops"),
        json!({ "ops": true }),
    ] {
        let token = hs256(&claims("u-1", json!({ "baton_permissions": permissions })));
        let error = refusal(&auth, &token).await;
        assert!(matches!(error, AuthError::BadGrant(_)), "{permissions}: {error:?}");
        assert_eq!(error.code(), "bad-grant");
    }
    // An empty list and null are no permission at all.
    for permissions in [json!([]), Value::Null] {
        let token = hs256(&claims("u-1", json!({ "baton_permissions": permissions })));
        assert!(auth.authenticate(&token).await.expect("accepted").grants.is_empty());
    }
}

#[test]
fn grants_parse_and_display() {
    let valid = [
        ("admin", Permission::Admin, None),
        ("designer", Permission::Designer, None),
        ("ops", Permission::Ops, None),
        ("worker", Permission::Worker, None),
        ("ops:training", Permission::Ops, Some("training")),
        ("designer:team-a.v2", Permission::Designer, Some("team-a.v2")),
        ("worker:batch_jobs", Permission::Worker, Some("batch_jobs")),
    ];
    for (text, permission, namespace) in valid {
        let grant = Grant::parse(text).expect("valid");
        assert_eq!(grant, Grant { permission, namespace: namespace.map(str::to_owned) }, "{text}");
        assert_eq!(grant.to_string(), text);
        assert_eq!(text.parse::<Grant>().as_ref(), Ok(&grant));
    }
    for text in ["", "root", "Admin", "OPS", "ops:", ":training", "ops: training", "ops:a:b", "ops:a/b", " ops"] {
        let error = Grant::parse(text).expect_err(text);
        assert!(matches!(error, AuthError::BadGrant(_)), "{text}: {error:?}");
    }
    assert_eq!(Grant::in_namespace(Permission::Ops, "x").to_string(), "ops:x");
    assert_eq!(Grant::everywhere(Permission::Admin).to_string(), "admin");
    assert_eq!(serde_json::to_value(Permission::Designer).expect("serializes"), json!("designer"));
    assert_eq!(serde_json::from_value::<Permission>(json!("worker")).expect("deserializes"), Permission::Worker);
}

// --- RS256 and ES256 from a JWKS file --------------------------------------------------------

#[tokio::test]
async fn rs256_and_es256_verify_with_the_jwks_file_by_kid() {
    let auth = authenticator(jwks_config()).await;
    let body = claims("svc-a", json!({ "baton_permissions": ["worker:payments"] }));

    let rs = sign(Algorithm::RS256, Some("rsa-1"), &rsa_key(), &body);
    let caller = auth.authenticate(&rs).await.expect("RS256 accepted");
    assert_eq!(caller.subject, "svc-a");
    assert_eq!(caller.grants, grants(&["worker:payments"]));

    let es = sign(Algorithm::ES256, Some("ec-1"), &ec_key(), &body);
    assert_eq!(auth.authenticate(&es).await.expect("ES256 accepted").subject, "svc-a");

    // Without a kid, the one key of the right type is used.
    assert!(auth.authenticate(&sign(Algorithm::RS256, None, &rsa_key(), &body)).await.is_ok());
    assert!(auth.authenticate(&sign(Algorithm::ES256, None, &ec_key(), &body)).await.is_ok());

    // Signed by a key the JWKS does not hold, under a known kid: the signature fails.
    let impostor = sign(Algorithm::RS256, Some("rsa-1"), &rsa_2_key(), &body);
    assert_eq!(refusal(&auth, &impostor).await, AuthError::BadSignature);

    // Claims are checked with keys as with the secret.
    let expired = sign(Algorithm::ES256, Some("ec-1"), &ec_key(), &claims("svc-a", json!({ "exp": now() - 600 })));
    assert_eq!(refusal(&auth, &expired).await, AuthError::Expired);
}

#[tokio::test]
async fn an_unknown_or_mismatched_kid_is_refused() {
    let auth = authenticator(jwks_config()).await;
    let body = claims("svc-a", json!({}));

    let error = refusal(&auth, &sign(Algorithm::RS256, Some("rsa-9"), &rsa_key(), &body)).await;
    assert!(matches!(&error, AuthError::UnknownKey(why) if why.contains("rsa-9")), "{error:?}");
    assert_eq!(error.code(), "unknown-key");

    // The EC key's id on an RS256 token: that key cannot verify RS256.
    let error = refusal(&auth, &sign(Algorithm::RS256, Some("ec-1"), &rsa_key(), &body)).await;
    assert!(matches!(error, AuthError::UnknownKey(_)), "{error:?}");
}

#[tokio::test]
async fn without_a_kid_two_candidate_keys_are_ambiguous() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, JWKS_ROTATED).expect("written");
    let auth = authenticator(AuthConfig { jwks_file: Some(path), ..AuthConfig::default() }).await;
    let body = claims("svc-a", json!({}));
    let error = refusal(&auth, &sign(Algorithm::RS256, None, &rsa_key(), &body)).await;
    assert!(matches!(error, AuthError::UnknownKey(_)), "{error:?}");
    // With the kid, both RSA keys work; and the lone EC key still needs none.
    assert!(auth.authenticate(&sign(Algorithm::RS256, Some("rsa-2"), &rsa_2_key(), &body)).await.is_ok());
    assert!(auth.authenticate(&sign(Algorithm::ES256, None, &ec_key(), &body)).await.is_ok());
}

// --- JWKS from a URL ---------------------------------------------------------------------------

/// A local JWKS server: the set it serves can be changed, and it counts the fetches.
struct JwksServer {
    url: String,
    body: Arc<Mutex<String>>,
    fetches: Arc<AtomicUsize>,
}

impl JwksServer {
    async fn start(initial: &str) -> Self {
        let body = Arc::new(Mutex::new(initial.to_owned()));
        let fetches = Arc::new(AtomicUsize::new(0));
        let app = Router::new()
            .route(
                "/.well-known/jwks.json",
                get({
                    let body = Arc::clone(&body);
                    let fetches = Arc::clone(&fetches);
                    move || async move {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        let text = body.lock().expect("not poisoned").clone();
                        ([(header::CONTENT_TYPE, "application/json")], text)
                    }
                }),
            )
            .route("/broken", get(|| async { StatusCode::INTERNAL_SERVER_ERROR }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bound");
        let addr: SocketAddr = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url: format!("http://{addr}/.well-known/jwks.json"), body, fetches }
    }

    fn serve(&self, text: &str) {
        *self.body.lock().expect("not poisoned") = text.to_owned();
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

#[tokio::test]
async fn jwks_from_a_url_is_refetched_when_a_new_kid_appears() {
    let server = JwksServer::start(JWKS).await;
    let auth = authenticator(AuthConfig { jwks_url: Some(server.url.clone()), ..AuthConfig::default() }).await;
    assert_eq!(server.fetches(), 1, "fetched at start");

    let body = claims("svc-a", json!({ "baton_permissions": ["ops"] }));
    let rs = sign(Algorithm::RS256, Some("rsa-1"), &rsa_key(), &body);
    assert!(auth.authenticate(&rs).await.is_ok());
    assert!(auth.authenticate(&sign(Algorithm::ES256, Some("ec-1"), &ec_key(), &body)).await.is_ok());
    assert_eq!(server.fetches(), 1, "known keys need no fetch");

    // The identity provider rotates a key in; a token names it; the set is refetched.
    server.serve(JWKS_ROTATED);
    let rotated = sign(Algorithm::RS256, Some("rsa-2"), &rsa_2_key(), &body);
    let caller = auth.authenticate(&rotated).await.expect("the new key is fetched");
    assert_eq!(caller.grants, grants(&["ops"]));
    assert_eq!(server.fetches(), 2);
    assert!(auth.authenticate(&rotated).await.is_ok());
    assert!(auth.authenticate(&rs).await.is_ok());
    assert_eq!(server.fetches(), 2, "the refreshed set is kept");

    // Another unknown kid within the minute: no new fetch, refused.
    let unknown = sign(Algorithm::RS256, Some("rsa-3"), &rsa_key(), &body);
    assert!(matches!(refusal(&auth, &unknown).await, AuthError::UnknownKey(_)));
    assert!(matches!(refusal(&auth, &unknown).await, AuthError::UnknownKey(_)));
    assert_eq!(server.fetches(), 2, "refetches are at most once a minute");

    // Clones share the key set.
    let clone = auth.clone();
    assert!(clone.authenticate(&rotated).await.is_ok());
    assert_eq!(server.fetches(), 2);
}

#[tokio::test]
async fn a_jwks_url_that_fails_at_start_refuses_the_configuration() {
    let server = JwksServer::start(JWKS).await;
    let broken = server.url.replace("/.well-known/jwks.json", "/broken");
    let error =
        Authenticator::new(AuthConfig { jwks_url: Some(broken), ..AuthConfig::default() }).await.expect_err("refused");
    assert!(matches!(error, AuthError::Config(_)), "{error:?}");

    server.serve(r#"{"keys": []}"#);
    let error = Authenticator::new(AuthConfig { jwks_url: Some(server.url.clone()), ..AuthConfig::default() })
        .await
        .expect_err("refused");
    assert!(matches!(error, AuthError::Config(_)), "{error:?}");
}

// --- configuration ---------------------------------------------------------------------------

#[tokio::test]
async fn unusable_configurations_are_refused() {
    let refused = |config: AuthConfig| async move {
        let error = Authenticator::new(config).await.expect_err("refused");
        assert_eq!(error.code(), "config", "{error:?}");
    };
    // No key at all.
    refused(AuthConfig::default()).await;
    // An empty secret.
    refused(AuthConfig { hs256_secret: Some(String::new()), ..AuthConfig::default() }).await;
    // An allow-list with no algorithm that has a key.
    refused(AuthConfig { algorithms: vec![Algorithm::RS256], ..secret_config() }).await;
    refused(AuthConfig { algorithms: vec![Algorithm::HS256, Algorithm::ES384], ..jwks_config() }).await;
    // A JWKS file that cannot be read, or holds no usable key.
    refused(AuthConfig { jwks_file: Some(PathBuf::from("/nonexistent/jwks.json")), ..AuthConfig::default() }).await;
    let dir = tempfile::tempdir().expect("temporary directory");
    let empty = dir.path().join("empty.json");
    std::fs::write(&empty, r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#).expect("written");
    refused(AuthConfig { jwks_file: Some(empty), ..AuthConfig::default() }).await;

    // `none` cannot even be named in the allow-list.
    assert_eq!(parse_algorithm("none"), Err(AuthError::AlgorithmNotAllowed("none".to_owned())));
    assert_eq!(parse_algorithm("None").map_err(|e| e.code()), Err("algorithm-not-allowed"));
    assert_eq!(parse_algorithm("RS256"), Ok(Algorithm::RS256));
    assert_eq!(parse_algorithm("ES256"), Ok(Algorithm::ES256));
    assert_eq!(parse_algorithm("XS999").map_err(|e| e.code()), Err("config"));

    // An allow-list with one usable algorithm is enough.
    assert!(
        Authenticator::new(AuthConfig { algorithms: vec![Algorithm::HS256, Algorithm::RS256], ..secret_config() })
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn issuing_needs_the_secret() {
    let auth = authenticator(jwks_config()).await;
    let error = auth.issue("u-1", &[], Duration::from_secs(60), Utc::now()).expect_err("no secret");
    assert_eq!(error.code(), "config");

    let auth = authenticator(secret_config()).await;
    assert!(auth.issue("", &[], Duration::from_secs(60), Utc::now()).is_err(), "an empty subject");
}

#[tokio::test]
async fn debug_shows_no_secret() {
    let config = AuthConfig { jwks_url: None, issuer: Some("https://idp.example".to_owned()), ..secret_config() };
    assert!(!format!("{config:?}").contains(SECRET));
    let auth = authenticator(config).await;
    let shown = format!("{auth:?}");
    assert!(!shown.contains(SECRET), "{shown}");
    assert!(shown.contains("https://idp.example"), "{shown}");
}

#[test]
fn error_codes_are_stable_and_distinct() {
    let errors = [
        (AuthError::Missing, "missing"),
        (AuthError::Malformed(String::new()), "malformed"),
        (AuthError::Expired, "expired"),
        (AuthError::NotYetValid, "not-yet-valid"),
        (AuthError::WrongAudience, "wrong-audience"),
        (AuthError::WrongIssuer, "wrong-issuer"),
        (AuthError::BadSignature, "bad-signature"),
        (AuthError::AlgorithmNotAllowed(String::new()), "algorithm-not-allowed"),
        (AuthError::UnknownKey(String::new()), "unknown-key"),
        (AuthError::BadGrant(String::new()), "bad-grant"),
        (AuthError::Config(String::new()), "config"),
    ];
    for (error, code) in &errors {
        assert_eq!(error.code(), *code);
    }
    let mut codes: Vec<&str> = errors.iter().map(|(error, _)| error.code()).collect();
    codes.sort_unstable();
    codes.dedup();
    assert_eq!(codes.len(), errors.len());
}

// --- what grants allow ---------------------------------------------------------------------------

#[test]
fn has_follows_the_grants() {
    use Permission::{Admin, Designer, Ops, Worker};
    let cases: &[(&[&str], Permission, Option<&str>, bool)] = &[
        (&[], Ops, None, false),
        (&[], Admin, Some("training"), false),
        (&["ops"], Ops, Some("training"), true),
        (&["ops"], Ops, None, true),
        (&["ops:training"], Ops, Some("training"), true),
        (&["ops:training"], Ops, Some("billing"), false),
        (&["ops:training"], Ops, None, true),
        (&["ops:training"], Designer, Some("training"), false),
        (&["ops:training"], Designer, None, false),
        (&["ops:training"], Admin, Some("training"), false),
        (&["admin"], Worker, Some("payments"), true),
        (&["admin"], Designer, None, true),
        (&["admin:training"], Ops, Some("training"), true),
        (&["admin:training"], Ops, Some("billing"), false),
        (&["admin:training"], Admin, None, true),
        (&["admin:training"], Ops, None, true),
        (&["worker"], Admin, None, false),
        (&["worker"], Ops, None, false),
        (&["designer:a", "ops:b"], Ops, Some("a"), false),
        (&["designer:a", "ops:b"], Designer, Some("a"), true),
        (&["designer:a", "ops:b"], Ops, Some("b"), true),
        (&["designer:a", "ops"], Ops, Some("a"), true),
    ];
    for (list, permission, namespace, expected) in cases {
        assert_eq!(caller(list).has(*permission, *namespace), *expected, "{list:?} has {permission} in {namespace:?}");
    }
}

#[test]
fn scope_lists_the_namespaces() {
    use Permission::{Designer, Ops, Worker};
    let only = |list: &[&str]| Scope::Only(list.iter().map(|s| (*s).to_owned()).collect());
    let cases: Vec<(&[&str], &[Permission], Scope)> = vec![
        (&[], &[Ops], Scope::Nothing),
        (&["ops"], &[Ops], Scope::All),
        (&["ops:b", "ops:a", "ops:a"], &[Ops], only(&["a", "b"])),
        (&["designer:a", "ops:b"], &[Ops], only(&["b"])),
        (&["designer:a", "ops:b"], &[Ops, Designer], only(&["a", "b"])),
        (&["admin:c", "ops:b"], &[Ops], only(&["b", "c"])),
        (&["admin"], &[Worker], Scope::All),
        (&["worker"], &[Ops], Scope::Nothing),
        (&["ops:a", "designer"], &[Ops, Designer], Scope::All),
        (&["ops:a", "designer"], &[Ops], only(&["a"])),
        (&["ops:a"], &[], Scope::Nothing),
        (&["admin:x"], &[], only(&["x"])),
    ];
    for (list, permissions, expected) in cases {
        assert_eq!(caller(list).scope(permissions), expected, "{list:?} for {permissions:?}");
    }
    assert!(Scope::All.includes("any"));
    assert!(only(&["a", "b"]).includes("b"));
    assert!(!only(&["a", "b"]).includes("c"));
    assert!(!Scope::Nothing.includes("a"));
}
