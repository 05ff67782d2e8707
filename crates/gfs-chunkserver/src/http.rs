//! The chunkserver's HTTP side: `/metrics` (Prometheus) and `/health`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use gfs_storage::ChunkStore;
use tokio_util::sync::CancellationToken;

use crate::metrics::ChunkserverMetrics;

#[derive(Clone)]
struct Served {
    metrics: Arc<ChunkserverMetrics>,
    store: Arc<ChunkStore>,
}

/// Serves `/metrics` and `/health` on `listener` until `shutdown`.
pub async fn serve(
    listener: gfs_host::Listener,
    metrics: Arc<ChunkserverMetrics>,
    store: Arc<ChunkStore>,
    shutdown: CancellationToken,
) {
    let app = Router::new()
        .route("/metrics", get(render))
        .route("/health", get(health))
        .with_state(Served { metrics, store });
    gfs_telemetry::serve_http(listener, app, async move { shutdown.cancelled().await }).await;
}

async fn render(State(s): State<Served>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.render(),
    )
        .into_response()
}

/// 200 while the store is usable; 503 once its disk is lost.
async fn health(State(s): State<Served>) -> Response {
    match s.store.check_disk() {
        Ok(()) => format!("ok: {} chunks\n", s.store.list().len()).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("unhealthy: {e}\n")).into_response(),
    }
}
