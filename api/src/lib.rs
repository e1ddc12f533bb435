//! Baton's server side: the HTTP/JSON API (with its OpenAPI document), authentication of
//! bearer tokens, and the one policy module that decides every operation.
//!
//! The durable core ([`baton_engine`]) knows nothing of HTTP; this crate maps its operations
//! and errors onto routes and RFC 7807 problems (docs/api.md).

pub mod app;
pub mod auth;
pub mod cloudevents;
pub mod grpc;
pub mod metrics;
pub mod policy;
pub mod problem;
pub mod routes;
pub mod server;
pub mod ui;

pub use app::{ApiOptions, App};
pub use routes::{ApiDoc, router};
