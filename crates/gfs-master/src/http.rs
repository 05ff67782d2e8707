//! The master's HTTP side: the status page (`/`), `/metrics` (Prometheus) and `/health`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use gfs_host::Listener;
use tokio_util::sync::CancellationToken;

use crate::chunks::ChunkManager;

/// Serves the status page, metrics and health on `listener` until `shutdown`.
pub async fn serve(listener: Listener, chunks: Arc<ChunkManager>, shutdown: CancellationToken) {
    let app = Router::new()
        .route("/", get(page))
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .with_state(chunks);
    gfs_telemetry::serve_http(listener, app, async move { shutdown.cancelled().await }).await;
}

fn unavailable(e: crate::MasterError) -> Response {
    tracing::warn!(error = %e, "status page: no report");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("the master cannot report: {e}\n"),
    )
        .into_response()
}

async fn page(State(chunks): State<Arc<ChunkManager>>) -> Response {
    match chunks.report().await {
        Ok(r) => Html(crate::status_page::render(&r)).into_response(),
        Err(e) => unavailable(e),
    }
}

async fn metrics(State(chunks): State<Arc<ChunkManager>>) -> Response {
    match chunks.report().await {
        Ok(r) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            chunks.metrics().render(&r),
        )
            .into_response(),
        Err(e) => unavailable(e),
    }
}

/// 200 while the master serves: cheap (no pass over the namespace), for load balancers that
/// ask every few seconds.
async fn health(State(chunks): State<Arc<ChunkManager>>) -> Response {
    let (alive, lost) = chunks.liveness();
    format!("ok: {alive} chunkservers alive, {lost} chunks lost\n").into_response()
}
