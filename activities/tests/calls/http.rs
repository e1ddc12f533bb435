//! `call: http`: methods, templates, headers, query, bodies, output modes, redirects, errors
//! and limits.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use baton_activities::ErrorType;
use serde_json::{Value, json};

use crate::mock::BIG_BODY;
use crate::{assert_problem, failure, setup, setup_with};

/// The `&`-separated pairs of a query or form, sorted: map order is not the point.
fn sorted_pairs(text: &Value) -> Vec<String> {
    let mut pairs: Vec<String> = text.as_str().unwrap_or_default().split('&').map(str::to_owned).collect();
    pairs.sort();
    pairs
}

#[tokio::test]
async fn every_method_reaches_the_service() {
    let (mock, http) = setup().await;
    for method in ["get", "post", "put", "patch", "delete", "options", "GET", "Post"] {
        let output =
            http.call_http(json!({ "method": method, "endpoint": mock.url("/echo") })).await.expect("succeeds");
        assert_eq!(output["method"], method.to_ascii_uppercase());
    }
    let output = http
        .call_http(json!({ "method": "head", "endpoint": mock.url("/echo"), "output": "response" }))
        .await
        .expect("succeeds");
    assert_eq!(output["statusCode"], 200);
    assert_eq!(output["request"]["method"], "head");
    assert_eq!(output["content"], Value::Null);
}

#[tokio::test]
async fn uri_templates_take_the_arguments() {
    let (mock, http) = setup().await;
    // As in the conformance scenarios: `{petId}` from the task's input.
    let output = http
        .call_http(json!({
            "method": "get",
            "endpoint": { "uri": format!("{}/v2/pet/{{petId}}", mock.url("")) },
            "arguments": { "petId": 1 },
        }))
        .await
        .expect("succeeds");
    assert_eq!(output["id"], 1);
    assert_eq!(output["name"], "Milou");

    let output = http
        .call_http(json!({
            "method": "get",
            "endpoint": format!("{}/echo/{{name}}/{{+rest}}?status={{status}}", mock.url("")),
            "arguments": { "name": "a b/c", "rest": "x/y", "status": "available" },
        }))
        .await
        .expect("succeeds");
    assert_eq!(output["path"], "/echo/a%20b%2Fc/x/y");
    assert_eq!(output["query"], "status=available");
}

#[tokio::test]
async fn headers_and_query_are_sent() {
    let (mock, http) = setup().await;
    let output = http
        .call_http(json!({
            "method": "get",
            "endpoint": mock.url("/echo?fixed=1"),
            "headers": { "X-One": "one", "X-Num": 2, "X-Flag": true, "X-Multi": ["a", "b"], "X-None": null },
            "query": { "q": "x y&z", "n": 3, "list": [1, 2], "skip": null },
        }))
        .await
        .expect("succeeds");
    let headers = &output["headers"];
    assert_eq!(headers["x-one"], "one");
    assert_eq!(headers["x-num"], "2");
    assert_eq!(headers["x-flag"], "true");
    assert_eq!(headers["x-multi"], "a, b");
    assert_eq!(headers["x-none"], Value::Null);
    assert!(headers["user-agent"].as_str().expect("a user agent").starts_with("baton/"));
    assert_eq!(sorted_pairs(&output["query"]), ["fixed=1", "list=1", "list=2", "n=3", "q=x+y%26z"]);
}

#[tokio::test]
async fn bodies_are_encoded_by_type() {
    let (mock, http) = setup().await;
    let call = |body: Value, headers: Value| {
        http.call_http(json!({ "method": "post", "endpoint": mock.url("/echo"), "body": body, "headers": headers }))
    };

    let output = call(json!({ "name": "Milou", "tags": [1] }), Value::Null).await.expect("succeeds");
    assert_eq!(output["headers"]["content-type"], "application/json");
    assert_eq!(
        serde_json::from_str::<Value>(output["body"].as_str().expect("text")).ok(),
        Some(json!({ "name": "Milou", "tags": [1] }))
    );

    let output = call(json!("plain text"), Value::Null).await.expect("succeeds");
    assert_eq!(output["headers"]["content-type"], "text/plain; charset=utf-8");
    assert_eq!(output["body"], "plain text");

    let output = call(
        json!({ "a": "b c", "n": 1, "list": ["x", "y"] }),
        json!({ "Content-Type": "application/x-www-form-urlencoded" }),
    )
    .await
    .expect("succeeds");
    assert_eq!(sorted_pairs(&output["body"]), ["a=b+c", "list=x", "list=y", "n=1"]);

    let output = call(Value::Null, Value::Null).await.expect("succeeds");
    assert_eq!(output["body"], "");
    assert_eq!(output["headers"]["content-type"], Value::Null);
}

#[tokio::test]
async fn content_output_parses_json_and_keeps_text() {
    let (mock, http) = setup().await;
    let get = |path: &str| http.call_http(json!({ "method": "get", "endpoint": mock.url(path) }));
    assert_eq!(get("/v2/pet/7").await.expect("json")["id"], 7);
    assert_eq!(get("/text").await.expect("text"), json!("hello"));
    assert_eq!(get("/empty").await.expect("empty"), Value::Null);
    assert_eq!(get("/bytes").await.expect("bytes"), json!(BASE64.encode([0xFF_u8, 0x00, 0xFE])));
}

#[tokio::test]
async fn response_output_describes_the_exchange() {
    let (mock, http) = setup().await;
    let output = http
        .call_http(json!({
            "method": "get",
            "endpoint": mock.url("/v2/pet/{petId}"),
            "arguments": { "petId": 1 },
            "headers": { "Accept": "application/json" },
            "output": "response",
        }))
        .await
        .expect("succeeds");
    assert_eq!(
        output["request"],
        json!({ "method": "get", "uri": mock.url("/v2/pet/1"), "headers": { "Accept": "application/json" } })
    );
    assert_eq!(output["statusCode"], 200);
    assert_eq!(output["headers"]["content-type"], "application/json");
    assert_eq!(output["content"]["id"], 1);
    assert_eq!(output["content"]["status"], "available");
}

#[tokio::test]
async fn raw_output_is_base64() {
    let (mock, http) = setup().await;
    let raw = |path: &str| http.call_http(json!({ "method": "get", "endpoint": mock.url(path), "output": "raw" }));
    assert_eq!(raw("/text").await.expect("succeeds"), json!(BASE64.encode("hello")));
    assert_eq!(raw("/bytes").await.expect("succeeds"), json!(BASE64.encode([0xFF_u8, 0x00, 0xFE])));
    assert_eq!(raw("/empty").await.expect("succeeds"), Value::Null);
}

#[tokio::test]
async fn redirects_are_errors_unless_allowed() {
    let (mock, http) = setup().await;
    let call = |path: &str, redirect: bool| {
        http.call_http(json!({ "method": "get", "endpoint": mock.url(path), "redirect": redirect }))
    };

    let refused = failure(call("/redirect/0", false).await);
    assert_problem(&refused, ErrorType::Communication, 302);

    assert_eq!(call("/redirect/2", true).await.expect("followed")["id"], 1);

    let looping = failure(call("/redirect/loop", true).await);
    assert_problem(&looping, ErrorType::Communication, 302);
    assert_eq!(looping.message, "Too many redirects");

    // A 3xx without a location is a success when redirects are allowed.
    let output = http
        .call_http(
            json!({ "method": "get", "endpoint": mock.url("/status/304"), "redirect": true, "output": "response" }),
        )
        .await
        .expect("accepted");
    assert_eq!(output["statusCode"], 304);

    // 303 after a POST: the next request is a GET without the body.
    let output = http
        .call_http(json!({
            "method": "post", "endpoint": mock.url("/see-other"), "body": { "a": 1 }, "redirect": true, "output": "response",
        }))
        .await
        .expect("followed");
    assert_eq!(output["content"]["method"], "GET");
    assert_eq!(output["content"]["body"], "");
    assert_eq!(output["request"]["method"], "get");
    assert_eq!(output["request"]["uri"], mock.url("/echo"));
}

#[tokio::test]
async fn credentials_stay_with_their_origin() {
    let (mock, http) = setup().await;
    let output = http
        .call_http(json!({
            "method": "get",
            "endpoint": { "uri": mock.url("/cross-origin"), "authentication": { "bearer": { "token": "${ $secrets.api.token }" } } },
            "headers": { "X-Api-Key": "${ $secrets.apiKey }", "X-Plain": "kept" },
            "redirect": true,
        }))
        .await
        .expect("followed");
    let headers = &output["headers"];
    assert_eq!(headers["host"], format!("localhost:{}", mock.port));
    assert_eq!(headers["authorization"], Value::Null);
    assert_eq!(headers["x-api-key"], Value::Null);
    assert_eq!(headers["x-plain"], "kept");
}

#[tokio::test]
async fn error_statuses_become_communication_problems() {
    let (mock, http) = setup().await;
    for status in [400_u16, 401, 404, 409, 500, 503] {
        let failed = failure(
            http.call_http(json!({ "method": "post", "endpoint": mock.url(&format!("/status/{status}")), "body": {} }))
                .await,
        );
        assert_problem(&failed, ErrorType::Communication, status);
        let detail = failed.details.as_ref().expect("details")["detail"].as_str().expect("text").to_owned();
        assert!(detail.contains(&format!("POST {}", mock.url(&format!("/status/{status}")))), "{detail}");
        assert!(detail.contains("failure body"), "{detail}");
    }
    let missing = failure(http.call_http(json!({ "method": "get", "endpoint": mock.url("/v2/pet/404") })).await);
    assert_eq!(missing.message, "404 Not Found");
}

#[tokio::test]
async fn a_slow_service_times_out() {
    let (mock, http) = setup().await;
    let failed =
        failure(http.call_http(json!({ "method": "get", "endpoint": mock.url("/hang"), "timeoutMs": 200 })).await);
    assert_problem(&failed, ErrorType::Timeout, 408);
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let (mock, http) = setup_with(|config| config.max_response_bytes = BIG_BODY - 1).await;
    for path in ["/big", "/big-stream"] {
        let failed = failure(http.call_http(json!({ "method": "get", "endpoint": mock.url(path) })).await);
        assert_problem(&failed, ErrorType::Communication, 502);
        assert_eq!(failed.message, "Response too large");
    }
    let (mock, http) = setup_with(|config| config.max_response_bytes = BIG_BODY).await;
    for path in ["/big", "/big-stream"] {
        let output = http.call_http(json!({ "method": "get", "endpoint": mock.url(path) })).await.expect("fits");
        assert_eq!(output.as_str().map(str::len), Some(BIG_BODY));
    }
}

#[tokio::test]
async fn an_unreachable_service_is_unavailable() {
    let (_mock, http) = setup().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let port = listener.local_addr().expect("address").port();
    drop(listener);
    let failed =
        failure(http.call_http(json!({ "method": "get", "endpoint": format!("http://127.0.0.1:{port}/") })).await);
    assert_problem(&failed, ErrorType::Communication, 503);
}

#[tokio::test]
async fn invalid_calls_are_validation_errors() {
    let (mock, http) = setup().await;
    let cases = [
        (json!({ "method": "not a method", "endpoint": mock.url("/echo") }), ErrorType::Validation),
        (json!({ "method": "connect", "endpoint": mock.url("/echo") }), ErrorType::Validation),
        (json!({ "method": "get", "endpoint": "not a uri" }), ErrorType::Validation),
        (json!({ "method": "get", "endpoint": "ftp://example.com/file" }), ErrorType::Validation),
        (json!({ "method": "get", "endpoint": mock.url("/echo/{id") }), ErrorType::Validation),
        (json!({ "method": "get", "endpoint": mock.url("/echo{?q}") }), ErrorType::Validation),
        (json!({ "method": "get" }), ErrorType::Validation),
        (json!({ "method": "get", "endpoint": mock.url("/echo"), "output": "xml" }), ErrorType::Validation),
        (
            json!({ "method": "get", "endpoint": mock.url("/echo"), "headers": { "bad header": "x" } }),
            ErrorType::Validation,
        ),
        (
            json!({ "method": "get", "endpoint": mock.url("/echo"), "headers": { "X": { "a": 1 } } }),
            ErrorType::Validation,
        ),
        (
            json!({ "method": "get", "endpoint": mock.url("/echo/{id}"), "arguments": { "id": [1, 2] } }),
            ErrorType::Expression,
        ),
        (json!("not an object"), ErrorType::Validation),
    ];
    for (input, kind) in cases {
        let failed = failure(http.call_http(input.clone()).await);
        assert_problem(&failed, kind, 400);
    }
}
