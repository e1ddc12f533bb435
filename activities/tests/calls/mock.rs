//! A local service standing in for petstore, httpbin and an OAuth2 authority.

use std::collections::{BTreeMap, HashSet};
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};
use tokio::net::TcpListener;

pub const CLIENT_ID: &str = "workflow-runtime";
pub const CLIENT_SECRET: &str = "client-secret-0123";
pub const API_TOKEN: &str = "api-token-4567";
pub const BIG_BODY: usize = 4096;

#[derive(Debug, Default)]
pub struct MockState {
    pub port: AtomicUsize,
    pub tokens_issued: AtomicUsize,
    pub documents_served: AtomicUsize,
    valid_tokens: Mutex<HashSet<String>>,
}

#[derive(Debug)]
pub struct Mock {
    pub state: Arc<MockState>,
    pub port: u16,
}

impl Mock {
    pub async fn start() -> Self {
        let state = Arc::new(MockState::default());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds a local port");
        let port = listener.local_addr().expect("has an address").port();
        state.port.store(usize::from(port), Ordering::SeqCst);
        let app = router(state.clone());
        tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serves");
        });
        Self { state, port }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn tokens_issued(&self) -> usize {
        self.state.tokens_issued.load(Ordering::SeqCst)
    }

    pub fn documents_served(&self) -> usize {
        self.state.documents_served.load(Ordering::SeqCst)
    }

    /// Forgets every token issued, as an authority revoking them would.
    pub fn revoke_tokens(&self) {
        self.state.valid_tokens.lock().expect("lock").clear();
    }
}

fn router(state: Arc<MockState>) -> Router {
    Router::new()
        .route("/echo", any(echo))
        .route("/echo/{*rest}", any(echo))
        .route("/text", get(|| async { ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "hello") }))
        .route("/empty", any(|| async { StatusCode::NO_CONTENT }))
        .route(
            "/bytes",
            get(|| async { ([(header::CONTENT_TYPE, "application/octet-stream")], vec![0xFF_u8, 0x00, 0xFE]) }),
        )
        .route("/status/{code}", any(status))
        .route("/redirect/{count}", get(redirect))
        .route("/see-other", post(|| async { (StatusCode::SEE_OTHER, [(header::LOCATION, "/echo")]) }))
        .route("/cross-origin", get(cross_origin))
        .route("/hang", get(|| async { std::future::pending::<&'static str>().await }))
        .route("/big", get(|| async { "x".repeat(BIG_BODY) }))
        .route("/big-stream", get(big_stream))
        .route("/basic-auth/{user}/{password}", get(basic_auth))
        .route("/bearer", get(bearer))
        .route("/oauth2/token", post(token))
        .route("/protected", get(protected))
        .route("/v2/swagger.json", get(swagger))
        .route("/v2/pet/findByStatus", get(find_by_status))
        .route("/v2/pet/{id}", get(pet))
        .route("/v2/pet", post(echo))
        .route("/v3/openapi.yaml", get(openapi3))
        .route("/v3/pets/{id}", get(pet))
        .route("/v3/pets", any(echo))
        .with_state(state)
}

fn headers_json(headers: &HeaderMap) -> Value {
    let mut map = BTreeMap::new();
    for (name, value) in headers {
        let entry: &mut Vec<String> = map.entry(name.as_str().to_owned()).or_default();
        entry.push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    json!(map.into_iter().map(|(name, values)| (name, values.join(", "))).collect::<BTreeMap<_, _>>())
}

async fn echo(method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> impl IntoResponse {
    axum::Json(json!({
        "method": method.as_str(),
        "path": uri.path(),
        "query": uri.query(),
        "headers": headers_json(&headers),
        "body": String::from_utf8_lossy(&body),
    }))
}

async fn status(Path(code): Path<u16>) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::IM_A_TEAPOT);
    (status, [(header::CONTENT_TYPE, "application/problem+json")], r#"{"title":"failure body"}"#).into_response()
}

/// `count` redirects, then the pet; `loop` forever.
async fn redirect(Path(count): Path<String>) -> Response {
    let location = match count.as_str() {
        "loop" => "/redirect/loop".to_owned(),
        "0" => "/v2/pet/1".to_owned(),
        n => format!("/redirect/{}", n.parse::<u32>().unwrap_or(1).saturating_sub(1)),
    };
    (StatusCode::FOUND, [(header::LOCATION, location)]).into_response()
}

/// Redirects to the same service under another origin (`localhost` rather than `127.0.0.1`).
async fn cross_origin(State(state): State<Arc<MockState>>) -> Response {
    let location = format!("http://localhost:{}/echo", state.port.load(Ordering::SeqCst));
    (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, location)]).into_response()
}

async fn big_stream() -> Response {
    let chunks = (0..BIG_BODY / 512).map(|_| Ok::<_, Infallible>(Bytes::from(vec![b'y'; 512])));
    Body::from_stream(futures_util::stream::iter(chunks)).into_response()
}

fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION).and_then(|value| value.to_str().ok())
}

async fn basic_auth(Path((user, password)): Path<(String, String)>, headers: HeaderMap) -> Response {
    let expected = format!("Basic {}", BASE64.encode(format!("{user}:{password}")));
    if authorization(&headers) == Some(expected.as_str()) {
        axum::Json(json!({ "authenticated": true, "user": user })).into_response()
    } else {
        StatusCode::UNAUTHORIZED.into_response()
    }
}

/// Like httpbin's: echoes the token it accepted.
async fn bearer(headers: HeaderMap) -> Response {
    match authorization(&headers).and_then(|value| value.strip_prefix("Bearer ")) {
        Some(API_TOKEN) => axum::Json(json!({ "authenticated": true, "token": API_TOKEN })).into_response(),
        _ => StatusCode::UNAUTHORIZED.into_response(),
    }
}

fn form_fields(body: &[u8]) -> BTreeMap<String, String> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.replace('+', " ").replace("%20", " ")))
        .collect()
}

/// Client credentials, with the client authenticated by Basic or in the form.
async fn token(State(state): State<Arc<MockState>>, headers: HeaderMap, body: Bytes) -> Response {
    let fields = form_fields(&body);
    let basic = format!("Basic {}", BASE64.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}")));
    let client_ok = authorization(&headers) == Some(basic.as_str())
        || (fields.get("client_id").map(String::as_str) == Some(CLIENT_ID)
            && fields.get("client_secret").map(String::as_str) == Some(CLIENT_SECRET));
    let grant_ok = fields.get("grant_type").map(String::as_str) == Some("client_credentials");
    let scope_ok = fields.get("scope").map(String::as_str) == Some("api read");
    if !(client_ok && grant_ok && scope_ok) {
        return (StatusCode::UNAUTHORIZED, axum::Json(json!({ "error": "invalid_client" }))).into_response();
    }
    let issued = state.tokens_issued.fetch_add(1, Ordering::SeqCst) + 1;
    let token = format!("issued-token-{issued}");
    state.valid_tokens.lock().expect("lock").insert(token.clone());
    axum::Json(json!({ "access_token": token, "token_type": "Bearer", "expires_in": 3600 })).into_response()
}

async fn protected(State(state): State<Arc<MockState>>, headers: HeaderMap) -> Response {
    let token = authorization(&headers).and_then(|value| value.strip_prefix("Bearer ")).unwrap_or_default();
    if state.valid_tokens.lock().expect("lock").contains(token) {
        axum::Json(json!({ "access": "granted" })).into_response()
    } else {
        StatusCode::UNAUTHORIZED.into_response()
    }
}

fn a_pet(id: &str) -> Value {
    json!({ "id": id.parse::<i64>().unwrap_or(0), "name": "Milou", "status": "available" })
}

async fn pet(Path(id): Path<String>, headers: HeaderMap) -> Response {
    if id == "404" {
        return (StatusCode::NOT_FOUND, axum::Json(json!({ "message": "Pet not found" }))).into_response();
    }
    let mut pet = a_pet(&id);
    pet["accept"] = headers_json(&headers)["accept"].clone();
    axum::Json(pet).into_response()
}

async fn find_by_status(uri: Uri) -> impl IntoResponse {
    let statuses: Vec<String> = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.strip_prefix("status="))
        .map(str::to_owned)
        .collect();
    axum::Json(
        statuses.iter().enumerate().map(|(id, status)| json!({ "id": id, "status": status })).collect::<Vec<_>>(),
    )
}

/// A petstore-like Swagger 2.0 document: the real one lists https first and its own host.
async fn swagger(State(state): State<Arc<MockState>>) -> impl IntoResponse {
    state.documents_served.fetch_add(1, Ordering::SeqCst);
    let host = format!("127.0.0.1:{}", state.port.load(Ordering::SeqCst));
    axum::Json(json!({
        "swagger": "2.0",
        "host": host,
        "basePath": "/v2",
        "schemes": ["https", "http"],
        "paths": {
            "/pet": {
                "post": {
                    "operationId": "addPet",
                    "consumes": ["application/json", "application/xml"],
                    "produces": ["application/xml", "application/json"],
                    "parameters": [
                        { "in": "body", "name": "body", "required": true, "schema": { "$ref": "#/definitions/Pet" } },
                        { "$ref": "#/parameters/requestId" }
                    ]
                }
            },
            "/pet/findByStatus": {
                "get": {
                    "operationId": "findPetsByStatus",
                    "produces": ["application/xml", "application/json"],
                    "parameters": [{
                        "name": "status", "in": "query", "required": true, "type": "array",
                        "items": { "type": "string" }, "collectionFormat": "multi"
                    }]
                }
            },
            "/pet/{petId}": {
                "parameters": [{ "name": "petId", "in": "path", "required": true, "type": "integer" }],
                "get": { "operationId": "getPetById", "produces": ["application/xml", "application/json"] }
            }
        },
        "parameters": { "requestId": { "name": "X-Request-Id", "in": "header", "type": "string" } },
        "definitions": { "Pet": { "type": "object" } }
    }))
}

/// An OpenAPI 3 document in YAML with a relative server.
async fn openapi3(State(state): State<Arc<MockState>>) -> impl IntoResponse {
    state.documents_served.fetch_add(1, Ordering::SeqCst);
    let document = r##"
openapi: 3.0.3
info: { title: pets, version: "1" }
servers:
  - url: /{base}
    variables:
      base: { default: v3 }
paths:
  /pets/{id}:
    get:
      operationId: showPet
      parameters:
        - { name: id, in: path, required: true, schema: { type: string } }
      responses:
        200:
          description: a pet
          content:
            application/json: { schema: { type: object } }
  /pets:
    get:
      operationId: listPets
      parameters:
        - { name: limit, in: query, schema: { type: integer } }
        - { name: tags, in: query, explode: false, schema: { type: array, items: { type: string } } }
        - { $ref: "#/components/parameters/trace" }
      responses:
        default:
          description: the request, echoed
          content:
            application/json: {}
    post:
      operationId: createPet
      requestBody:
        required: true
        content:
          application/json: { schema: { type: object } }
      responses:
        201: { description: created }
components:
  parameters:
    trace: { name: X-Trace, in: header, required: true, schema: { type: string } }
"##;
    ([(header::CONTENT_TYPE, "application/yaml")], document)
}
