//! The master's Prometheus metrics (`gfs_master_*`).
//!
//! RPC counts and latencies (the shared `RpcLayer`), lease grants, bytes copied, the operation
//! log's group-commit time (fed by `MetaStore::on_fsync`), and gauges set from a fresh cluster
//! report at each scrape. The full list is in `docs/operations.md`.

use crate::report::{ClusterReport, ServerCondition};
use gfs_telemetry::{RequestMetrics, encode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

/// Labels of the per-master gauges of a replicated group.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Peer {
    master: String,
}

/// Labels of the per-state server gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct State {
    state: String,
}

/// Every metric the master exports.
#[derive(Debug)]
pub struct MasterMetrics {
    registry: Registry,
    /// gRPC calls served.
    pub rpc: RequestMetrics,
    /// Leases granted.
    pub lease_grants: Counter,
    /// Bytes re-replication copied.
    pub copied_bytes: Counter,
    /// Times this master, elected, could not confirm its leadership or take up the leader's
    /// duties.
    pub lead_failures: Counter,
    /// Duration of each operation-log group commit (write and fsync).
    pub log_fsync: prometheus_client::metrics::histogram::Histogram,
    files: Gauge,
    directories: Gauge,
    chunks: Gauge,
    under_replicated: Gauge,
    lost: Gauge,
    stale: Gauge,
    repair_queue: Gauge,
    copies: Gauge,
    trash: Gauge,
    capacity: Gauge,
    used: Gauge,
    servers: Family<State, Gauge>,
    raft_term: Gauge,
    raft_applied: Gauge,
    raft_leader: Family<Peer, Gauge>,
    raft_lag: Family<Peer, Gauge>,
}

impl Default for MasterMetrics {
    fn default() -> Self {
        let mut r = Registry::with_prefix("gfs_master");
        let rpc = RequestMetrics::register(&mut r, "rpc", "gRPC calls");
        let lease_grants = Counter::default();
        r.register("lease_grants", "Chunk leases granted", lease_grants.clone());
        let copied_bytes = Counter::default();
        r.register_with_unit(
            "replicated",
            "Bytes copied by re-replication and rebalancing",
            Unit::Bytes,
            copied_bytes.clone(),
        );
        let lead_failures = Counter::default();
        r.register(
            "raft_lead_failures",
            "Times this master, elected, could not confirm its leadership or take up the leader's duties",
            lead_failures.clone(),
        );
        let log_fsync = gfs_telemetry::latency_histogram();
        r.register_with_unit(
            "log_fsync_duration",
            "Time of each operation-log group commit (write and fsync)",
            Unit::Seconds,
            log_fsync.clone(),
        );
        let mut gauge = |name: &str, help: &str| {
            let g = Gauge::default();
            r.register(name, help, g.clone());
            g
        };
        let files = gauge("files", "Files in the namespace (trash included)");
        let directories = gauge("directories", "Directories in the namespace");
        let chunks = gauge("chunks", "Chunks in the chunk map");
        let under_replicated = gauge(
            "chunks_under_replicated",
            "Chunks with fewer current replicas than the goal",
        );
        let lost = gauge(
            "chunks_lost",
            "Chunks no live server holds at the current version",
        );
        let stale = gauge("replicas_stale", "Stale replicas on live servers");
        let repair_queue = gauge("repair_queue", "Chunks waiting for a copy");
        let copies = gauge("copies_in_flight", "Chunk copies running");
        let trash = gauge("trash_entries", "Deleted entries waiting in /.trash");
        let capacity = Gauge::default();
        r.register_with_unit(
            "capacity",
            "Capacity of the live chunkservers",
            Unit::Bytes,
            capacity.clone(),
        );
        let used = Gauge::default();
        r.register_with_unit(
            "used",
            "Bytes used on the live chunkservers",
            Unit::Bytes,
            used.clone(),
        );
        let servers = Family::<State, Gauge>::default();
        r.register("chunkservers", "Chunkservers by state", servers.clone());
        let raft_term = Gauge::default();
        r.register(
            "raft_term",
            "The Raft term of the group of masters (0 for a single master)",
            raft_term.clone(),
        );
        let raft_applied = Gauge::default();
        r.register(
            "raft_applied_index",
            "The newest log index the leader applied",
            raft_applied.clone(),
        );
        let raft_leader = Family::<Peer, Gauge>::default();
        r.register(
            "raft_leader",
            "1 for the master that leads the group, 0 for the others",
            raft_leader.clone(),
        );
        let raft_lag = Family::<Peer, Gauge>::default();
        r.register(
            "raft_lag_entries",
            "Log entries the leader holds that a master does not (yet)",
            raft_lag.clone(),
        );
        MasterMetrics {
            registry: r,
            rpc,
            lease_grants,
            copied_bytes,
            lead_failures,
            log_fsync,
            files,
            directories,
            chunks,
            under_replicated,
            lost,
            stale,
            repair_queue,
            copies,
            trash,
            capacity,
            used,
            servers,
            raft_term,
            raft_applied,
            raft_leader,
            raft_lag,
        }
    }
}

impl MasterMetrics {
    /// The metrics in the Prometheus text format, the gauges taken from `report`.
    pub fn render(&self, report: &ClusterReport) -> String {
        let set = |g: &Gauge, v: u64| {
            g.set(i64::try_from(v).unwrap_or(i64::MAX));
        };
        set(&self.files, report.files);
        set(&self.directories, report.directories);
        set(&self.chunks, report.chunks);
        set(&self.under_replicated, report.under_replicated);
        set(&self.lost, report.lost);
        set(&self.stale, report.stale_replicas);
        set(&self.repair_queue, report.repair_queue);
        set(&self.copies, report.copies_in_flight);
        set(&self.trash, report.trash_entries);
        set(&self.capacity, report.capacity_bytes);
        set(&self.used, report.used_bytes);
        self.servers.clear();
        for state in ServerCondition::ALL {
            let n = report.servers.iter().filter(|s| s.state == state).count();
            set(
                &self.servers.get_or_create(&State {
                    state: state.as_str().to_string(),
                }),
                n as u64,
            );
        }
        self.raft_leader.clear();
        self.raft_lag.clear();
        for m in &report.masters {
            let peer = Peer {
                master: m.addr.clone(),
            };
            set(&self.raft_term, m.term);
            set(&self.raft_applied, m.applied_index);
            set(&self.raft_leader.get_or_create(&peer), u64::from(m.leader));
            set(&self.raft_lag.get_or_create(&peer), m.lag);
        }
        encode(&self.registry)
    }
}
