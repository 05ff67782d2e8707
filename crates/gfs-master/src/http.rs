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
use crate::leadership::Leading;
use crate::metrics::MasterMetrics;

#[derive(Clone)]
struct Shared {
    leading: Leading,
    metrics: Arc<MasterMetrics>,
}

/// Serves the status page, metrics and health on `listener` until `shutdown`. A master that
/// does not lead answers the page and the metrics with 503 naming the leader, and `/health`
/// with 200 (it is healthy as a follower).
pub(crate) async fn serve(
    listener: Listener,
    leading: Leading,
    metrics: Arc<MasterMetrics>,
    shutdown: CancellationToken,
) {
    let app = Router::new()
        .route("/", get(page))
        .route("/metrics", get(metrics_page))
        .route("/health", get(health))
        .with_state(Shared { leading, metrics });
    gfs_telemetry::serve_http(listener, app, async move { shutdown.cancelled().await }).await;
}

/// The current term's chunk manager, or the error of a master that does not lead.
fn leader(s: &Shared) -> Result<Arc<ChunkManager>, crate::MasterError> {
    s.leading.chunks().ok_or_else(|| s.leading.not_leader())
}

fn unavailable(e: crate::MasterError) -> Response {
    if !matches!(e, crate::MasterError::NotLeader { .. }) {
        tracing::warn!(error = %e, "status page: no report");
    }
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("the master cannot report: {e}\n"),
    )
        .into_response()
}

async fn page(State(s): State<Shared>) -> Response {
    let chunks = match leader(&s) {
        Ok(c) => c,
        Err(e) => return unavailable(e),
    };
    match chunks.report().await {
        Ok(r) => Html(crate::status_page::render(&r)).into_response(),
        Err(e) => unavailable(e),
    }
}

async fn metrics_page(State(s): State<Shared>) -> Response {
    let chunks = match leader(&s) {
        Ok(c) => c,
        Err(e) => return unavailable(e),
    };
    match chunks.report().await {
        Ok(r) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            s.metrics.render(&r),
        )
            .into_response(),
        Err(e) => unavailable(e),
    }
}

/// 200 while the master serves: cheap (no pass over the namespace), for load balancers that
/// ask every few seconds.
async fn health(State(s): State<Shared>) -> Response {
    match s.leading.chunks() {
        Some(chunks) => {
            let (alive, lost) = chunks.liveness();
            format!("ok: {alive} chunkservers alive, {lost} chunks lost\n").into_response()
        }
        None => format!("ok: a follower: {}\n", s.leading.not_leader()).into_response(),
    }
}
