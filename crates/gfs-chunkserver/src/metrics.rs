//! The chunkserver's Prometheus metrics (`gfs_chunkserver_*`).
//!
//! Data-plane and RPC counts and latencies, bytes written, read and received by copies, the
//! group commit's fsync-round time (fed by `ChunkStore::on_fsync`), and counters and gauges
//! read from the store and the coordinator at each scrape. The full list is in
//! `docs/operations.md`.

use std::sync::Arc;

use gfs_replication::Coordinator;
use gfs_storage::ChunkStore;
use gfs_telemetry::{RequestMetrics, encode, latency_histogram};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// Every metric a chunkserver exports.
#[derive(Debug)]
pub struct ChunkserverMetrics {
    registry: Registry,
    /// Data-plane requests (append, append_at, read).
    pub data: RequestMetrics,
    /// gRPC calls (replication and control planes).
    pub rpc: RequestMetrics,
    /// Bytes clients appended through this server as primary.
    pub written: Counter,
    /// Bytes served to clients.
    pub read: Counter,
    /// Bytes received by re-replication copies and catch-ups.
    pub replicated: Counter,
    /// Duration of each group commit's fsync round.
    pub fsync: Histogram,
    /// Duration of each stage of the appends acknowledged here as primary.
    pub append_stages: Family<Stage, Histogram>,
    /// Data-plane requests refused for their chunk token.
    pub refused: Counter,
}

impl ChunkserverMetrics {
    /// The metrics of the server over `store` and `coordinator` (read at each scrape).
    pub fn new(store: Arc<ChunkStore>, coordinator: Arc<Coordinator>) -> ChunkserverMetrics {
        let mut r = Registry::with_prefix("gfs_chunkserver");
        let data = RequestMetrics::register(&mut r, "data", "data-plane requests");
        let rpc = RequestMetrics::register(&mut r, "rpc", "gRPC calls");
        let mut bytes = |name: &str, help: &str| {
            let c = Counter::default();
            r.register_with_unit(name, help, Unit::Bytes, c.clone());
            c
        };
        let written = bytes(
            "written",
            "Bytes clients appended through this server as primary",
        );
        let read = bytes("read", "Bytes served to clients");
        let replicated = bytes(
            "replicated",
            "Bytes received by re-replication copies and catch-ups",
        );
        let refused = Counter::default();
        r.register(
            "token_refused",
            "Data-plane requests refused for their chunk token (missing, forged, expired, another chunk's)",
            refused.clone(),
        );
        let fsync = latency_histogram();
        r.register_with_unit(
            "fsync_duration",
            "Time of each group commit's fsync round",
            Unit::Seconds,
            fsync.clone(),
        );
        let append_stages = Family::<Stage, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        r.register_with_unit(
            "append_stage_duration",
            "Time of each stage of an append acknowledged here as primary: assign, prepare, commit_here, commit_remote (beside commit_here), total",
            Unit::Seconds,
            append_stages.clone(),
        );
        r.register_collector(Box::new(StoreCollector { store, coordinator }));
        ChunkserverMetrics {
            registry: r,
            data,
            rpc,
            written,
            read,
            replicated,
            fsync,
            append_stages,
            refused,
        }
    }

    /// What notes the stages of each append acknowledged here as primary (for
    /// `Coordinator::set_stage_listener`; it holds the histograms only, not the metrics, which
    /// hold the coordinator).
    pub fn stage_listener(&self) -> gfs_replication::StageListener {
        let family = self.append_stages.clone();
        Arc::new(move |s: &gfs_replication::AppendStages| {
            let took = [s.assign, s.prepare, s.commit_here, s.commit_remote, s.total];
            for (stage, d) in APPEND_STAGES.into_iter().zip(took) {
                family
                    .get_or_create(&Stage { stage })
                    .observe(d.as_secs_f64());
            }
        })
    }

    /// The metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        encode(&self.registry)
    }
}

/// The stages of an append, in order (`gfs_replication::AppendStages`).
const APPEND_STAGES: [&str; 5] = ["assign", "prepare", "commit_here", "commit_remote", "total"];

/// The label of an append stage's histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Stage {
    /// One of `assign`, `prepare`, `commit_here`, `commit_remote`, `total`.
    pub stage: &'static str,
}

/// Reads the store's and the coordinator's counters at each scrape.
struct StoreCollector {
    store: Arc<ChunkStore>,
    coordinator: Arc<Coordinator>,
}

impl std::fmt::Debug for StoreCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreCollector")
    }
}

impl Collector for StoreCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let s = self.store.stats();
        let chunks = self.store.list();
        let used: u64 = chunks.iter().map(|c| c.committed_len).sum();
        let counter = |enc: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: u64| {
            let c = ConstCounter::new(v);
            c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)
        };
        counter(&mut enc, "commits", "Appends made durable", s.commits)?;
        counter(
            &mut enc,
            "fsync_rounds",
            "Group-commit fsync rounds",
            s.batches,
        )?;
        counter(&mut enc, "fsyncs", "Individual fsync calls", s.fsyncs)?;
        counter(
            &mut enc,
            "checksum_failures",
            "Blocks that failed their CRC32C on read or scrub",
            s.checksum_failures,
        )?;
        counter(
            &mut enc,
            "restored_blocks",
            "Bad blocks restored in place from a peer's copy that matched their CRC32C",
            s.restored_blocks,
        )?;
        let gauge = |enc: &mut DescriptorEncoder<'_>,
                     name: &str,
                     help: &str,
                     unit: Option<&Unit>,
                     v: u64| {
            let g = ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX));
            g.encode(enc.encode_descriptor(name, help, unit, g.metric_type())?)
        };
        gauge(
            &mut enc,
            "staged",
            "Bytes staged in memory, waiting for COMMIT",
            Some(&Unit::Bytes),
            s.staged_bytes,
        )?;
        gauge(
            &mut enc,
            "chunks",
            "Replicas held",
            None,
            chunks.len() as u64,
        )?;
        gauge(
            &mut enc,
            "used",
            "Committed bytes held",
            Some(&Unit::Bytes),
            used,
        )?;
        gauge(
            &mut enc,
            "leases",
            "Chunks this server is primary of",
            None,
            self.coordinator.leases().len() as u64,
        )?;
        gauge(
            &mut enc,
            "lagging_replicas",
            "Secondaries seen lagging, not yet cleared by the master",
            None,
            self.coordinator.lagging().len() as u64,
        )?;
        Ok(())
    }
}
