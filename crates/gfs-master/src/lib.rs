//! gfs-master: the master's metadata.
//!
//! - [`path`]: validated absolute paths.
//! - [`Namespace`]: directories, files and the chunk map, as a state machine of [`record::Op`]s.
//! - [`MetaStore`]: the namespace behind a group-committed, checksummed operation log with
//!   checkpoints; a mutation is answered only once durable, and reads never see state a crash
//!   could take back.
//!
//! - [`Registry`]: chunkserver membership and chunk locations from heartbeats (never persisted),
//!   with dead-server detection on a clock the caller passes in.
//! - [`MasterService`] / [`ControlService`]: the `Master` (clients) and `MasterControl`
//!   (chunkservers) gRPC services.
//!
//! - [`locks`]: the paper's namespace locks (read-lock ancestors, lock the leaf), so
//!   operations on unrelated paths never wait on each other.
//! - [`ChunkManager`]: chunk allocation, leases and versions; [`Master`]: the whole server.

mod admin;
mod chunks;
mod control_client;
mod error;
pub mod events;
mod http;
mod leadership;
pub mod locks;
mod metastore;
mod metrics;
mod namespace;
pub mod path;
pub mod raft;
pub mod record;
mod registry;
pub mod report;
mod server;
mod service;
pub mod status_page;
pub mod tokens;
pub mod trash;
pub mod wire;

pub use chunks::{
    ChunkConfig, ChunkCopy, ChunkHealth, ChunkManager, ChunkserverControl, ControlError, Fenced,
    GET_CHUNKS_PAGE, HeldLease, LeaseDecision, LeaseGrant, lease_decision,
};
pub use control_client::TonicControl;
pub use error::{MasterError, Result};
pub use metastore::{MetaConfig, MetaStore};
pub use metrics::MasterMetrics;
pub use namespace::{ChunkMeta, Namespace, Node, Stat};
pub use registry::{
    ChunkMap, ChunkSet, Heard, HolderCount, Piece, Registry, Replica, ReplicaCounts, ServerInfo,
    ServerState, Want,
};
pub use server::{Master, MasterConfig, RaftSettings, StartError};
pub use service::{AdminService, ControlService, MasterService, status};
