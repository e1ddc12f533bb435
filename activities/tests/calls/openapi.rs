//! `call: openapi` with a petstore-like Swagger 2.0 document and an OpenAPI 3 YAML document.

use baton_activities::ErrorType;
use serde_json::{Value, json};

use crate::{assert_problem, failure, setup};

#[tokio::test]
async fn swagger_operations_by_id() {
    let (mock, http) = setup().await;
    let document = json!({ "endpoint": mock.url("/v2/swagger.json") });

    // As in the conformance scenario; the query parameter is `collectionFormat: multi`.
    let output = http
        .call_openapi(json!({
            "document": document,
            "operationId": "findPetsByStatus",
            "parameters": { "status": ["available", "sold"] },
        }))
        .await
        .expect("succeeds");
    assert_eq!(output, json!([{ "id": 0, "status": "available" }, { "id": 1, "status": "sold" }]));

    let output = http
        .call_openapi(json!({
            "document": document,
            "operationId": "getPetById",
            "parameters": { "petId": 1 },
            "output": "response",
        }))
        .await
        .expect("succeeds");
    assert_eq!(output["request"]["method"], "get");
    assert_eq!(output["request"]["uri"], mock.url("/v2/pet/1"));
    assert_eq!(output["request"]["headers"]["accept"], "application/json");
    assert_eq!(output["statusCode"], 200);
    assert_eq!(output["content"]["id"], 1);
    assert_eq!(output["content"]["name"], "Milou");

    let output = http
        .call_openapi(json!({
            "document": document,
            "operationId": "addPet",
            "parameters": { "body": { "name": "Rex" }, "X-Request-Id": "r-1" },
        }))
        .await
        .expect("succeeds");
    assert_eq!(output["method"], "POST");
    assert_eq!(output["path"], "/v2/pet");
    assert_eq!(output["headers"]["content-type"], "application/json");
    assert_eq!(output["headers"]["x-request-id"], "r-1");
    assert_eq!(output["body"], r#"{"name":"Rex"}"#);

    assert_eq!(mock.documents_served(), 1, "the document is fetched once");
}

#[tokio::test]
async fn swagger_errors() {
    let (mock, http) = setup().await;
    let document = json!({ "endpoint": { "uri": mock.url("/v2/swagger.json") } });
    let call = |operation: &str, parameters: Value| {
        http.call_openapi(json!({ "document": document, "operationId": operation, "parameters": parameters }))
    };

    let unknown = failure(call("deletePetForever", json!({})).await);
    assert_problem(&unknown, ErrorType::Validation, 400);
    assert!(
        unknown.details.as_ref().expect("details")["detail"].as_str().expect("text").contains("'deletePetForever'")
    );

    let missing = failure(call("getPetById", json!({})).await);
    assert_problem(&missing, ErrorType::Validation, 400);

    let not_found = failure(call("getPetById", json!({ "petId": 404 })).await);
    assert_problem(&not_found, ErrorType::Communication, 404);

    let no_document = failure(
        http.call_openapi(json!({ "document": { "endpoint": mock.url("/v2/none.json") }, "operationId": "x" })).await,
    );
    assert_problem(&no_document, ErrorType::Communication, 404);
}

#[tokio::test]
async fn openapi3_yaml_with_a_relative_server() {
    let (mock, http) = setup().await;
    let document = json!({ "endpoint": mock.url("/v3/openapi.yaml") });

    let output = http
        .call_openapi(json!({ "document": document, "operationId": "showPet", "parameters": { "id": "12" } }))
        .await
        .expect("succeeds");
    assert_eq!(output["id"], 12);
    assert_eq!(output["accept"], "application/json");

    let output = http
        .call_openapi(json!({
            "document": document,
            "operationId": "listPets",
            "parameters": { "limit": 5, "tags": ["a", "b"], "X-Trace": "t-1" },
        }))
        .await
        .expect("succeeds");
    assert_eq!(output["path"], "/v3/pets");
    assert_eq!(output["query"], "limit=5&tags=a%2Cb");
    assert_eq!(output["headers"]["x-trace"], "t-1");

    // The request body: the parameters the operation does not declare.
    let output = http
        .call_openapi(json!({
            "document": document,
            "operationId": "createPet",
            "parameters": { "name": "Rex", "tag": "dog" },
        }))
        .await
        .expect("succeeds");
    assert_eq!(output["method"], "POST");
    assert_eq!(output["headers"]["content-type"], "application/json");
    assert_eq!(
        serde_json::from_str::<Value>(output["body"].as_str().expect("text")).ok(),
        Some(json!({ "name": "Rex", "tag": "dog" }))
    );

    let missing_header = failure(http.call_openapi(json!({ "document": document, "operationId": "listPets" })).await);
    assert_problem(&missing_header, ErrorType::Validation, 400);

    let missing_body = failure(http.call_openapi(json!({ "document": document, "operationId": "createPet" })).await);
    assert_problem(&missing_body, ErrorType::Validation, 400);

    assert_eq!(mock.documents_served(), 1, "the document is fetched once");
}

#[tokio::test]
async fn openapi_calls_are_authenticated() {
    let (mock, http) = setup().await;
    // The document of a protected service: the operation's authentication is the call's.
    let output = http
        .call_openapi(json!({
            "document": { "endpoint": mock.url("/v3/openapi.yaml") },
            "operationId": "listPets",
            "parameters": { "X-Trace": "t" },
            "authentication": "petstore",
            "authentications": { "petstore": { "bearer": { "token": "${ $secrets.api.token }" } } },
            "output": "response",
        }))
        .await
        .expect("succeeds");
    assert_eq!(output["request"]["headers"]["Authorization"], "<redacted>");
    assert_eq!(output["content"]["headers"]["authorization"], "<redacted>");
}
