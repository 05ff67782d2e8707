//! gfs-master: the master's metadata.
//!
//! - [`path`]: validated absolute paths.
//! - [`Namespace`]: directories, files and the chunk map, as a state machine of [`record::Op`]s.
//! - [`MetaStore`]: the namespace behind a group-committed, checksummed operation log with
//!   checkpoints; a mutation is answered only once durable, and reads never see state a crash
//!   could take back.
//!
//! Chunk locations are not persisted: heartbeats rebuild them. The gRPC service, leases,
//! heartbeats and the `gfs-master` binary build on this crate.

mod error;
mod metastore;
mod namespace;
pub mod path;
pub mod record;

pub use error::{MasterError, Result};
pub use metastore::{MetaConfig, MetaStore};
pub use namespace::{ChunkMeta, Namespace, Node, Stat};
