//! gfs-chunkserver: one chunkserver, wired from its parts.
//!
//! - the chunk store ([`gfs_storage`]),
//! - the primary-side coordinator and the replication-plane participant ([`gfs_replication`]),
//! - the client TCP data plane ([`gfs_dataplane`]) served by [`DataHandler`],
//! - the control plane ([`Control`]) the master (or `gfs-tester`) drives.
//!
//! [`ChunkServer::start`] binds both listeners (port 0 picks free ones) and serves until its
//! shutdown token is cancelled; [`ChunkServer::stop`] drains and checkpoints the store.
//!
//! The chunk size and the quorum are cluster-wide: the master's values win. A server whose
//! configuration disagrees with the master it registers with refuses to serve and stops with
//! [`ChunkserverError::ClusterMismatch`] (see the `cluster` module).

mod cluster;
mod config;
mod control;
mod error;
mod handler;
mod http;
mod metrics;
mod restore;
mod server;
mod throttle;

pub use cluster::ClusterValues;
pub use config::{ChunkserverConfig, ReplicationSection, StorageSection};
pub use control::Control;
pub use error::{ChunkserverError, Result};
pub use handler::{DataHandler, replication_to_data, storage_to_data};
pub use metrics::ChunkserverMetrics;
pub use server::ChunkServer;
pub use throttle::Throttle;
