//! gfs-telemetry: what every gRPC server of gfs-rs shares for operators: a tower layer giving
//! each RPC a tracing span and Prometheus metrics, the operators' HTTP server, and the text
//! exposition of a metrics registry.
//!
//! It uses no gfs crate and knows no gfs message: any tonic server can install [`RpcLayer`].
//! (It lived in gfs-proto, which is now generated code only, so that every crate needing the
//! protobuf types no longer pulls an HTTP server in.)
//!
//! - [`RpcLayer`]: both gRPC servers install it (`Server::builder().layer(..)`). It opens an
//!   `rpc` span (field `method`, "Service/Method") around each call and counts the call in a
//!   [`RequestMetrics`]: `<prefix>_requests_total{op,outcome}` and
//!   `<prefix>_duration_seconds{op}`; a reply with a non-zero `grpc-status` header (a unary
//!   error) counts as `outcome="error"`.
//! - [`serve_http`]: the status page, `/metrics` and `/health` (axum routers) over hyper
//!   HTTP/1.1, one listener per server, stopped with the server. It is not `axum::serve`,
//!   which sets no header-read timeout, so a silent client could hold a connection forever.
//! - [`encode`]: a registry in the Prometheus text format. Each server has a registry of its
//!   own (no global recorder), so servers sharing a process, as in the tests, do not mix.

use std::task::{Context, Poll};
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use tracing::Instrument;

/// Latency buckets (seconds) for request histograms: 100 µs to about 26 s, ×4 apart.
pub fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 4.0, 10))
}

/// Labels of a request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpOutcome {
    /// The operation ("Master/AppendChunk", "append").
    pub op: String,
    /// "ok" or "error".
    pub outcome: &'static str,
}

/// Labels of a latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Op {
    /// The operation.
    pub op: String,
}

/// Request counts by operation and outcome, and latency by operation.
#[derive(Clone, Debug)]
pub struct RequestMetrics {
    requests: Family<OpOutcome, Counter>,
    duration: Family<Op, Histogram>,
}

impl RequestMetrics {
    /// Registers `<prefix>_requests_total` and `<prefix>_duration_seconds` in `registry`.
    pub fn register(registry: &mut Registry, prefix: &str, what: &str) -> RequestMetrics {
        let requests = Family::<OpOutcome, Counter>::default();
        registry.register(
            format!("{prefix}_requests"),
            format!("{what} served, by operation and outcome"),
            requests.clone(),
        );
        let duration =
            Family::<Op, Histogram>::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register_with_unit(
            format!("{prefix}_duration"),
            format!("Time to serve {what}, by operation"),
            Unit::Seconds,
            duration.clone(),
        );
        RequestMetrics { requests, duration }
    }

    /// Counts one request of `op` that took `took` seconds.
    pub fn observe(&self, op: &str, ok: bool, took: f64) {
        self.requests
            .get_or_create(&OpOutcome {
                op: op.to_string(),
                outcome: if ok { "ok" } else { "error" },
            })
            .inc();
        self.duration
            .get_or_create(&Op { op: op.to_string() })
            .observe(took);
    }
}

/// A tower layer for a tonic server: one `rpc` span per call (field `method`), and the call
/// counted and timed in `metrics` (op "Service/Method"; a non-zero grpc-status is an error).
#[derive(Clone, Debug)]
pub struct RpcLayer {
    metrics: RequestMetrics,
}

impl RpcLayer {
    /// A layer recording into `metrics`.
    pub fn new(metrics: RequestMetrics) -> RpcLayer {
        RpcLayer { metrics }
    }
}

impl<S> tower::Layer<S> for RpcLayer {
    type Service = RpcService<S>;

    fn layer(&self, inner: S) -> RpcService<S> {
        RpcService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service [`RpcLayer`] wraps around each tonic service.
#[derive(Clone, Debug)]
pub struct RpcService<S> {
    inner: S,
    metrics: RequestMetrics,
}

impl<S, B, R> tower::Service<http::Request<B>> for RpcService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        // "/gfs.v1.Master/AppendChunk" -> "Master/AppendChunk".
        let path = req.uri().path();
        let op = path
            .rsplit_once('.')
            .map_or(path, |(_, m)| m)
            .trim_start_matches('/')
            .to_string();
        let span = tracing::info_span!("rpc", method = %op);
        let metrics = self.metrics.clone();
        let started = Instant::now();
        let fut = self.inner.call(req);
        Box::pin(
            async move {
                let res = fut.await;
                let ok = match &res {
                    // Errors of unary calls come back as a trailers-only response.
                    Ok(r) => r.headers().get("grpc-status").is_none_or(|s| s == "0"),
                    Err(_) => false,
                };
                metrics.observe(&op, ok, started.elapsed().as_secs_f64());
                res
            }
            .instrument(span),
        )
    }
}

/// Most operator HTTP connections served at once; more wait to be accepted.
pub const MAX_HTTP_CONNECTIONS: usize = 64;
/// A client must send its request headers within this long.
pub const HTTP_HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// A connection is closed after this long, whatever it is doing.
pub const HTTP_CONNECTION_LIFETIME: std::time::Duration = std::time::Duration::from_secs(60);

/// Serves `app` (a status page, `/metrics`, `/health`) on `listener` until `shutdown`
/// resolves, over HTTP/1.1: at most [`MAX_HTTP_CONNECTIONS`] at once, headers within
/// [`HTTP_HEADER_TIMEOUT`], each connection closed after [`HTTP_CONNECTION_LIFETIME`].
pub async fn serve_http(
    listener: impl Into<gfs_host::Listener>,
    app: axum::Router,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut listener = listener.into();
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_HTTP_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = std::sync::Arc::clone(&slots).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            () = &mut shutdown => return,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting an HTTP connection");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HTTP_HEADER_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            match tokio::time::timeout(HTTP_CONNECTION_LIFETIME, conn).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "HTTP connection ended"),
                Err(_) => {
                    tracing::debug!(%peer, "HTTP connection closed at the end of its lifetime")
                }
            }
        });
    }
}

/// The registry in the Prometheus text format.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, registry) {
        tracing::error!(error = %e, "encoding metrics");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_and_timed_by_operation() {
        let mut r = Registry::with_prefix("gfs_test");
        let m = RequestMetrics::register(&mut r, "rpc", "gRPC calls");
        m.observe("Master/Stat", true, 0.002);
        m.observe("Master/Stat", false, 0.2);
        let text = encode(&r);
        assert!(
            text.contains(r#"gfs_test_rpc_requests_total{op="Master/Stat",outcome="ok"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"gfs_test_rpc_requests_total{op="Master/Stat",outcome="error"} 1"#)
        );
        assert!(text.contains(r#"gfs_test_rpc_duration_seconds_count{op="Master/Stat"} 2"#));
    }
}
