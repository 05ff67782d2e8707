//! What the master tells operators, in its own types: the cluster report (the status page, the
//! `/metrics` gauges, `gfs admin report`) and fsck. The `wire` module turns them into the replies
//! of the `Admin` service, and cuts an fsck reply to a page there.

use std::time::Duration;

use crate::chunks::ChunkHealth;
use crate::events::Event;

/// The cluster at one moment: totals, every registered chunkserver, recent events.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterReport {
    /// When it was made, in milliseconds since the Unix epoch.
    pub generated_unix_ms: u64,
    /// Disk capacity of the live servers.
    pub capacity_bytes: u64,
    /// Disk used on the live servers.
    pub used_bytes: u64,
    /// Files in the namespace.
    pub files: u64,
    /// Directories, the root not counted.
    pub directories: u64,
    /// Chunks in the namespace.
    pub chunks: u64,
    /// Chunks with fewer current replicas than the goal (lost ones included).
    pub under_replicated: u64,
    /// Chunks no live server holds at the current version.
    pub lost: u64,
    /// Stale replicas on live servers.
    pub stale_replicas: u64,
    /// Chunks waiting for a copy.
    pub repair_queue: u64,
    /// Copies running now.
    pub copies_in_flight: u64,
    /// Entries in the trash waiting for their retention to end.
    pub trash_entries: u64,
    /// Replicas each chunk should have.
    pub replication_goal: u32,
    /// Every registered chunkserver.
    pub servers: Vec<ServerReport>,
    /// Recent events, newest first.
    pub events: Vec<Event>,
    /// Time since the master started.
    pub master_uptime: Duration,
    /// The master started less than a dead-server timeout ago: servers may not have reported
    /// yet, so replica counts can look low and re-replication waits.
    pub warming_up: bool,
    /// The gRPC planes serve without TLS (`insecure = true`): open to whoever reaches them.
    pub insecure: bool,
    /// Every master of a replicated group, as the leader sees it (empty for a single master).
    pub masters: Vec<MasterStatus>,
}

/// One master of a replicated group, as the leader sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MasterStatus {
    /// Its number in the group.
    pub id: u64,
    /// Its gRPC address.
    pub addr: String,
    /// Whether it leads.
    pub leader: bool,
    /// The leader's term.
    pub term: u64,
    /// The newest log index the leader knows it holds (the leader's own newest for itself).
    pub matched_index: u64,
    /// Entries the leader holds that it does not (yet).
    pub lag: u64,
    /// The newest log index the leader applied (committed on a majority).
    pub applied_index: u64,
}

/// How one chunkserver stands, as operators see it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ServerCondition {
    /// Heartbeating and serving.
    #[default]
    Alive,
    /// Silent past the dead-server timeout.
    Dead,
    /// It reported its data directory lost.
    DiskLost,
    /// Being drained: some of its chunks still have no copy elsewhere.
    Draining,
    /// Drained: every chunk it holds has its copies elsewhere.
    Drained,
}

impl ServerCondition {
    /// Every condition, in the order reports list them.
    pub const ALL: [ServerCondition; 5] = [
        ServerCondition::Alive,
        ServerCondition::Dead,
        ServerCondition::DiskLost,
        ServerCondition::Draining,
        ServerCondition::Drained,
    ];

    /// Its name in reports and metrics ("alive", "dead", "disk lost", "draining", "drained").
    pub fn as_str(self) -> &'static str {
        match self {
            ServerCondition::Alive => "alive",
            ServerCondition::Dead => "dead",
            ServerCondition::DiskLost => "disk lost",
            ServerCondition::Draining => "draining",
            ServerCondition::Drained => "drained",
        }
    }
}

/// One chunkserver in a [`ClusterReport`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerReport {
    /// Its id.
    pub id: String,
    /// Its data-plane address.
    pub data_addr: String,
    /// Its replication-plane address.
    pub repl_addr: String,
    /// Its rack ("" when racks are not used).
    pub rack: String,
    /// How it stands.
    pub state: ServerCondition,
    /// Time since its last heartbeat.
    pub since_heartbeat: Duration,
    /// Replicas it reported.
    pub chunks: u64,
    /// Disk capacity it reported.
    pub capacity_bytes: u64,
    /// Disk used, as it reported.
    pub used_bytes: u64,
    /// Copies running into it now.
    pub copies_in: u32,
    /// Copies running out of it now.
    pub copies_out: u32,
    /// Bytes copied into it since the master started.
    pub copied_in_bytes: u64,
    /// Bytes copied out of it since the master started.
    pub copied_out_bytes: u64,
}

/// Every file at or under a path, and the unhealthy ones with their bad chunks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FsckReport {
    /// Files checked.
    pub files: u64,
    /// Chunks checked.
    pub chunks: u64,
    /// Replicas each chunk should have.
    pub replication_goal: u32,
    /// The unhealthy files, in namespace order.
    pub unhealthy: Vec<FileHealth>,
}

/// A file with chunks short of the goal, lost, or with stale or corrupt replicas.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileHealth {
    /// Its path.
    pub path: String,
    /// Its unhealthy chunks, in file order.
    pub chunks: Vec<ChunkHealth>,
}
