//! Authentication policies: basic, bearer, OAuth2 client credentials, named policies, secret
//! references, and secrets kept out of outputs and errors.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use baton_activities::ErrorType;
use serde_json::{Value, json};

use crate::mock::{API_TOKEN, CLIENT_ID, CLIENT_SECRET};
use crate::{assert_problem, failure, setup};

/// Every secret value the test provider holds.
const SECRET_VALUES: [&str; 5] = [API_TOKEN, CLIENT_SECRET, "key-material-8910", "pa55word-secret", "issued-token-"];

fn assert_no_secret(text: &str) {
    for secret in SECRET_VALUES {
        assert!(!text.contains(secret), "'{secret}' leaked into {text}");
    }
}

#[tokio::test]
async fn basic_authentication_as_written() {
    let (mock, http) = setup().await;
    // The conformance scenario: credentials evaluated from the input, in the URI and the policy.
    let output = http
        .call_http(json!({
            "method": "get",
            "endpoint": {
                "uri": mock.url("/basic-auth/{username}/{password}"),
                "authentication": { "basic": { "username": "serverless-workflow", "password": "conformance-test" } },
            },
            "arguments": { "username": "serverless-workflow", "password": "conformance-test" },
        }))
        .await
        .expect("authenticated");
    assert_eq!(output, json!({ "authenticated": true, "user": "serverless-workflow" }));

    let refused = failure(
        http.call_http(json!({
            "method": "get",
            "endpoint": {
                "uri": mock.url("/basic-auth/serverless-workflow/conformance-test"),
                "authentication": { "basic": { "username": "serverless-workflow", "password": "wrong" } },
            },
        }))
        .await,
    );
    assert_problem(&refused, ErrorType::Communication, 401);
}

#[tokio::test]
async fn basic_authentication_from_a_named_policy_using_a_secret() {
    let (mock, http) = setup().await;
    let output = http
        .call_http(json!({
            "method": "get",
            "endpoint": {
                "uri": mock.url("/basic-auth/serverless-workflow/pa55word-secret"),
                "authentication": { "use": "petstoreBasic" },
            },
            "authentications": { "petstoreBasic": { "basic": { "use": "petstoreBasic" } } },
            "output": "response",
        }))
        .await
        .expect("authenticated");
    assert_eq!(output["statusCode"], 200);
    assert_eq!(output["request"]["headers"]["Authorization"], "<redacted>");
    // The credentials are in the URI the service wanted: they are scrubbed there too.
    assert_no_secret(&output.to_string());
    assert!(output["request"]["uri"].as_str().expect("a uri").ends_with("/basic-auth/<redacted>/<redacted>"));
}

#[tokio::test]
async fn bearer_token_from_a_secret_reference_is_redacted_everywhere() {
    let (mock, http) = setup().await;
    for output in ["content", "response", "raw"] {
        let result = http
            .call_http(json!({
                "method": "get",
                "endpoint": { "uri": mock.url("/bearer"), "authentication": { "bearer": { "token": "${ $secrets.api.token }" } } },
                "output": output,
            }))
            .await
            .expect("authenticated");
        assert_no_secret(&result.to_string());
        if output == "raw" {
            let body = BASE64.decode(result.as_str().expect("base64")).expect("decodes");
            assert_no_secret(&String::from_utf8_lossy(&body));
        }
        if output == "content" {
            // The service echoes the token, as httpbin's /bearer does.
            assert_eq!(result, json!({ "authenticated": true, "token": "<redacted>" }));
        }
    }
    // The policy may also name the secret as a whole: `bearer: { use: api }`.
    let output = http
        .call_http(json!({
            "method": "get",
            "endpoint": { "uri": mock.url("/bearer"), "authentication": { "bearer": { "use": "api" } } },
        }))
        .await
        .expect("authenticated");
    assert_eq!(output["authenticated"], true);
}

#[tokio::test]
async fn secret_headers_are_resolved_and_redacted() {
    let (mock, http) = setup().await;
    let output = http
        .call_http(json!({
            "method": "get",
            "endpoint": mock.url("/echo"),
            "headers": { "X-Api-Key": "${ $secrets.apiKey }", "Authorization": "Custom inline" },
            "output": "response",
        }))
        .await
        .expect("succeeds");
    assert_eq!(output["request"]["headers"], json!({ "X-Api-Key": "<redacted>", "Authorization": "<redacted>" }));
    // The service saw the value; the echo of it in the content is scrubbed.
    assert_eq!(output["content"]["headers"]["x-api-key"], "<redacted>");
    assert_no_secret(&output.to_string());
}

fn oauth2_policy(mock: &crate::Mock, client_authentication: &str) -> Value {
    json!({
        "oauth2": {
            "authority": mock.url(""),
            "grant": "client_credentials",
            "client": { "id": CLIENT_ID, "secret": "${ $secrets.oauthClient.secret }", "authentication": client_authentication },
            "scopes": ["api", "read"],
            "audiences": ["runtime"],
            "endpoints": { "token": "/oauth2/token" },
        }
    })
}

#[tokio::test]
async fn oauth2_client_credentials_tokens_are_fetched_once_and_reused() {
    for client_authentication in ["client_secret_basic", "client_secret_post"] {
        let (mock, http) = setup().await;
        for _ in 0..2 {
            let output = http
                .call_http(json!({
                    "method": "get",
                    "endpoint": { "uri": mock.url("/protected"), "authentication": oauth2_policy(&mock, client_authentication) },
                    "output": "response",
                }))
                .await
                .expect("authorized");
            assert_eq!(output["content"], json!({ "access": "granted" }));
            assert_eq!(output["request"]["headers"]["Authorization"], "<redacted>");
            assert_no_secret(&output.to_string());
        }
        assert_eq!(mock.tokens_issued(), 1, "{client_authentication}: one token for two calls");
    }
}

#[tokio::test]
async fn oauth2_policy_by_name_with_the_client_from_a_secret() {
    let (mock, http) = setup().await;
    let scheme = json!({
        "authority": mock.url("/"),
        "grant": "client_credentials",
        "client": { "id": "${ $secrets.oauthClient.id }", "secret": "${ $secrets.oauthClient.secret }" },
        "scopes": ["api", "read"],
    });
    let output = http
        .call_http(json!({
            "method": "get",
            "endpoint": { "uri": mock.url("/protected"), "authentication": { "use": "idp" } },
            "authentications": { "idp": { "oauth2": scheme } },
        }))
        .await
        .expect("authorized");
    assert_eq!(output["access"], "granted");
}

#[tokio::test]
async fn a_refused_token_is_renewed_once() {
    let (mock, http) = setup().await;
    let call = || {
        http.call_http(json!({
            "method": "get",
            "endpoint": { "uri": mock.url("/protected"), "authentication": oauth2_policy(&mock, "client_secret_post") },
        }))
    };
    call().await.expect("authorized");
    mock.revoke_tokens();
    call().await.expect("authorized with a new token");
    assert_eq!(mock.tokens_issued(), 2);
}

#[tokio::test]
async fn a_service_refusing_every_token_fails_the_call() {
    let (mock, http) = setup().await;
    // `/bearer` accepts only its own static token, never an issued one.
    let call = || {
        http.call_http(json!({
            "method": "get",
            "endpoint": { "uri": mock.url("/bearer"), "authentication": oauth2_policy(&mock, "client_secret_post") },
        }))
    };
    assert_problem(&failure(call().await), ErrorType::Communication, 401);
    assert_eq!(mock.tokens_issued(), 1, "a token just issued is not replaced");
    assert_problem(&failure(call().await), ErrorType::Communication, 401);
    assert_eq!(mock.tokens_issued(), 2, "a cached token is replaced once");
}

#[tokio::test]
async fn oauth2_failures_are_authentication_problems() {
    let (mock, http) = setup().await;
    let mut policy = oauth2_policy(&mock, "client_secret_post");
    policy["oauth2"]["client"]["secret"] = json!("wrong-secret");
    let failed = failure(
        http.call_http(
            json!({ "method": "get", "endpoint": { "uri": mock.url("/protected"), "authentication": policy } }),
        )
        .await,
    );
    assert_problem(&failed, ErrorType::Authentication, 401);
    let detail = failed.details.as_ref().expect("details")["detail"].as_str().expect("text").to_owned();
    assert!(detail.contains("invalid_client"), "{detail}");
    assert!(!detail.contains("wrong-secret"), "{detail}");
}

#[tokio::test]
async fn policies_that_cannot_be_resolved() {
    let (mock, http) = setup().await;
    let call = |authentication: Value, authentications: Value| {
        http.call_http(json!({
            "method": "get",
            "endpoint": { "uri": mock.url("/echo"), "authentication": authentication },
            "authentications": authentications,
        }))
    };

    let failed = failure(call(json!({ "bearer": { "token": "${ .user.token }" } }), Value::Null).await);
    assert_problem(&failed, ErrorType::Expression, 400);
    assert_eq!(
        failed.details.as_ref().expect("details")["detail"],
        "only $secrets references are resolved in authentication"
    );

    let failed = failure(call(json!({ "bearer": { "token": "${ $secrets.nope.token }" } }), Value::Null).await);
    assert_problem(&failed, ErrorType::Configuration, 400);

    let failed = failure(call(json!({ "bearer": { "token": "${ $secrets.api.missing }" } }), Value::Null).await);
    assert_problem(&failed, ErrorType::Configuration, 400);
    assert_no_secret(&format!("{failed:?}"));

    let failed = failure(call(json!({ "use": "unknown" }), json!({})).await);
    assert_problem(&failed, ErrorType::Configuration, 400);

    let failed =
        failure(call(json!({ "use": "a" }), json!({ "a": { "use": "b" }, "b": { "bearer": { "token": "t" } } })).await);
    assert_problem(&failed, ErrorType::Configuration, 400);

    let failed = failure(call(json!({ "digest": { "username": "u", "password": "p" } }), Value::Null).await);
    assert_problem(&failed, ErrorType::Configuration, 400);

    let failed = failure(call(json!({ "basic": { "username": "u" } }), Value::Null).await);
    assert_problem(&failed, ErrorType::Configuration, 400);
}
