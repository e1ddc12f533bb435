//! Local stand-ins for the two public services the kit's scenarios call: the Swagger Petstore
//! (v2) and httpbin. Each runs on its own loopback port, so a scenario's paths stay exactly as
//! written and the two services cannot clash; only the scheme and host of their base URLs change.
//!
//! Each serves exactly what the scenarios use, shaped like the real service's answers: the
//! same paths, status codes, JSON bodies and headers.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};

use axum::Router;
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Where each stand-in listens.
#[derive(Clone, Copy, Debug)]
pub struct Endpoints {
    pub petstore: SocketAddr,
    pub httpbin: SocketAddr,
}

impl Endpoints {
    /// Points a definition's calls to the two public services at their stand-ins.
    ///
    /// Only the base URLs `https://petstore.swagger.io/` and `https://httpbin.org/` change (the
    /// trailing slash keeps a longer host such as `httpbin.org.example` untouched); paths,
    /// queries and everything else in the definition stay as the scenario wrote them.
    pub fn rewrite(&self, definition: &str) -> String {
        definition
            .replace("https://petstore.swagger.io/", &format!("http://{}/", self.petstore))
            .replace("https://httpbin.org/", &format!("http://{}/", self.httpbin))
    }
}

/// The running stand-ins. They live until [`MockServers::stop`], which ends them at once: the
/// kit has finished with them by then, so there is no request in flight worth draining.
#[derive(Debug)]
pub struct MockServers {
    pub endpoints: Endpoints,
    tasks: Vec<JoinHandle<()>>,
}

impl MockServers {
    pub async fn start() -> io::Result<Self> {
        let petstore = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let httpbin = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let endpoints = Endpoints { petstore: petstore.local_addr()?, httpbin: httpbin.local_addr()? };
        let tasks = vec![serve(petstore, petstore_router(endpoints.petstore)), serve(httpbin, httpbin_router())];
        Ok(Self { endpoints, tasks })
    }

    pub fn stop(self) {
        for task in self.tasks {
            task.abort();
        }
    }
}

fn serve(listener: TcpListener, router: Router) -> JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            eprintln!("ctk mock server stopped: {error}");
        }
    })
}

// --- Swagger Petstore v2 -------------------------------------------------------------------

/// The store's pets. Pet 1 and pet 2 are the ones the scenarios fetch by id; `findByStatus`
/// scenarios ask for `available` pets and read `id`, `name` and `status` off the first.
fn pets() -> Vec<Value> {
    let pet = |id: i64, category: (i64, &str), name: &str, status: &str| {
        json!({
            "id": id,
            "category": { "id": category.0, "name": category.1 },
            "name": name,
            "photoUrls": [format!("https://example.com/photos/{id}.jpg")],
            "tags": [{ "id": id, "name": format!("tag{id}") }],
            "status": status,
        })
    };
    vec![
        pet(1, (1, "Dogs"), "doggie", "available"),
        pet(2, (2, "Cats"), "kitty", "available"),
        pet(3, (1, "Dogs"), "rex", "pending"),
        pet(4, (3, "Birds"), "tweety", "sold"),
    ]
}

fn petstore_router(address: SocketAddr) -> Router {
    Router::new()
        .route("/v2/swagger.json", get(move || async move { axum::Json(swagger_document(address)) }))
        .route("/v2/pet/findByStatus", get(find_pets_by_status))
        .route("/v2/pet/{petId}", get(get_pet_by_id))
        .fallback(|| async { petstore_error(StatusCode::NOT_FOUND, 404, "unknown", "HTTP 404 Not Found") })
}

/// The store's error body, `{code, type, message}` (its `ApiResponse` model).
fn petstore_error(status: StatusCode, code: i64, kind: &str, message: &str) -> Response {
    (status, axum::Json(json!({ "code": code, "type": kind, "message": message }))).into_response()
}

/// `GET /v2/pet/findByStatus?status=available[&status=pending]`: the pets in any of the
/// statuses, given as repeated parameters or comma-separated, as the store accepts both.
async fn find_pets_by_status(Query(query): Query<Vec<(String, String)>>) -> Response {
    let wanted: Vec<&str> = query
        .iter()
        .filter(|(name, _)| name == "status")
        .flat_map(|(_, value)| value.split(','))
        .map(str::trim)
        .collect();
    let found: Vec<Value> = pets()
        .into_iter()
        .filter(|pet| pet["status"].as_str().is_some_and(|status| wanted.contains(&status)))
        .collect();
    axum::Json(found).into_response()
}

/// `GET /v2/pet/{petId}`: the pet, a "Pet not found" 404 for an unknown id, and the 404 the store
/// answers when the id is not a number.
async fn get_pet_by_id(Path(pet_id): Path<String>) -> Response {
    let Ok(id) = pet_id.parse::<i64>() else {
        let message = format!("java.lang.NumberFormatException: For input string: \"{pet_id}\"");
        return petstore_error(StatusCode::NOT_FOUND, 404, "unknown", &message);
    };
    match pets().into_iter().find(|pet| pet["id"] == id) {
        Some(pet) => axum::Json(pet).into_response(),
        None => petstore_error(StatusCode::NOT_FOUND, 1, "error", "Pet not found"),
    }
}

/// The store's Swagger 2.0 document, cut to the operations the scenarios call, with `host` and
/// `schemes` naming this stand-in (the real one names itself the same way).
fn swagger_document(address: SocketAddr) -> Value {
    json!({
        "swagger": "2.0",
        "info": {
            "description": "This is a sample server Petstore server.",
            "version": "1.0.7",
            "title": "Swagger Petstore",
            "license": { "name": "Apache 2.0", "url": "http://www.apache.org/licenses/LICENSE-2.0.html" }
        },
        "host": address.to_string(),
        "basePath": "/v2",
        "tags": [{ "name": "pet", "description": "Everything about your Pets" }],
        "schemes": ["http"],
        "paths": {
            "/pet/findByStatus": {
                "get": {
                    "tags": ["pet"],
                    "summary": "Finds Pets by status",
                    "description": "Multiple status values can be provided with comma separated strings",
                    "operationId": "findPetsByStatus",
                    "produces": ["application/json", "application/xml"],
                    "parameters": [{
                        "name": "status",
                        "in": "query",
                        "description": "Status values that need to be considered for filter",
                        "required": true,
                        "type": "array",
                        "items": {
                            "type": "string",
                            "enum": ["available", "pending", "sold"],
                            "default": "available"
                        },
                        "collectionFormat": "multi"
                    }],
                    "responses": {
                        "200": {
                            "description": "successful operation",
                            "schema": { "type": "array", "items": { "$ref": "#/definitions/Pet" } }
                        },
                        "400": { "description": "Invalid status value" }
                    },
                    "security": [{ "petstore_auth": ["write:pets", "read:pets"] }]
                }
            },
            "/pet/{petId}": {
                "get": {
                    "tags": ["pet"],
                    "summary": "Find pet by ID",
                    "description": "Returns a single pet",
                    "operationId": "getPetById",
                    "produces": ["application/json", "application/xml"],
                    "parameters": [{
                        "name": "petId",
                        "in": "path",
                        "description": "ID of pet to return",
                        "required": true,
                        "type": "integer",
                        "format": "int64"
                    }],
                    "responses": {
                        "200": { "description": "successful operation", "schema": { "$ref": "#/definitions/Pet" } },
                        "400": { "description": "Invalid ID supplied" },
                        "404": { "description": "Pet not found" }
                    },
                    "security": [{ "api_key": [] }]
                }
            }
        },
        "securityDefinitions": {
            "api_key": { "type": "apiKey", "name": "api_key", "in": "header" },
            "petstore_auth": {
                "type": "oauth2",
                "authorizationUrl": format!("http://{address}/oauth/authorize"),
                "flow": "implicit",
                "scopes": { "read:pets": "read your pets", "write:pets": "modify pets in your account" }
            }
        },
        "definitions": {
            "Category": {
                "type": "object",
                "properties": {
                    "id": { "type": "integer", "format": "int64" },
                    "name": { "type": "string" }
                }
            },
            "Tag": {
                "type": "object",
                "properties": {
                    "id": { "type": "integer", "format": "int64" },
                    "name": { "type": "string" }
                }
            },
            "Pet": {
                "type": "object",
                "required": ["name", "photoUrls"],
                "properties": {
                    "id": { "type": "integer", "format": "int64" },
                    "category": { "$ref": "#/definitions/Category" },
                    "name": { "type": "string", "example": "doggie" },
                    "photoUrls": { "type": "array", "items": { "type": "string" } },
                    "tags": { "type": "array", "items": { "$ref": "#/definitions/Tag" } },
                    "status": {
                        "type": "string",
                        "description": "pet status in the store",
                        "enum": ["available", "pending", "sold"]
                    }
                }
            }
        }
    })
}

// --- httpbin -------------------------------------------------------------------------------

fn httpbin_router() -> Router {
    Router::new().route("/basic-auth/{user}/{passwd}", get(basic_auth))
}

/// `GET /basic-auth/{user}/{passwd}`: 200 `{authenticated, user}` when the request's Basic
/// credentials are exactly `user:passwd`, otherwise 401 with a Basic challenge and no body.
async fn basic_auth(Path((user, passwd)): Path<(String, String)>, headers: HeaderMap) -> Response {
    let credentials = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .and_then(|(_, encoded)| BASE64.decode(encoded.trim()).ok())
        .and_then(|decoded| String::from_utf8(decoded).ok());
    if credentials.as_deref() == Some(format!("{user}:{passwd}").as_str()) {
        axum::Json(json!({ "authenticated": true, "user": user })).into_response()
    } else {
        (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Basic realm=\"Fake Realm\"")]).into_response()
    }
}
