//! Serving the API: the router with its layers (request ids, tracing, panics as problems,
//! body limits, timeouts) on a listener, until a shutdown signal.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, Request};
use axum::response::IntoResponse;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::app::App;
use crate::problem::Problem;

/// The largest request body taken (a definition, a batch of events).
pub const MAX_BODY_BYTES: usize = 4 << 20;
/// A request that takes longer is answered 408 (the engine's work goes on).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The router with every layer the server runs it with.
pub fn service(app: Arc<App>) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    crate::routes::router(Arc::clone(&app))
        .merge(crate::ui::router(app))
        .layer(CatchPanicLayer::custom(|_| Problem::internal("a handler panicked").into_response()))
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .layer(TimeoutLayer::with_status_code(axum::http::StatusCode::REQUEST_TIMEOUT, REQUEST_TIMEOUT))
        .layer(axum::middleware::map_response(crate::problem::problems_only))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
            let id = request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
            tracing::info_span!("http", method = %request.method(), path = %request.uri().path(), request_id = %id)
        }))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
}

/// Serves the API on `listener` until `shutdown` completes; requests in flight finish first.
pub async fn serve(
    app: Arc<App>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let streams = app.shutdown.clone();
    let service = service(app).into_make_service_with_connect_info::<SocketAddr>();
    let shutdown = async move {
        shutdown.await;
        // Live streams never finish by themselves: end them so the server can drain.
        streams.cancel();
    };
    axum::serve(listener, service).with_graceful_shutdown(shutdown).await
}

/// Serves the gRPC API (`baton/v1/baton.proto`) on `listener` until `shutdown` completes.
pub async fn serve_grpc(
    app: Arc<App>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let streams = app.shutdown.clone();
    let shutdown = async move {
        shutdown.await;
        streams.cancel();
    };
    tonic::transport::Server::builder()
        .add_routes(crate::grpc::GrpcApi::new(app).routes())
        .serve_with_incoming_shutdown(tonic::transport::server::TcpIncoming::from(listener), shutdown)
        .await
}
