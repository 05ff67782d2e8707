//! gfs-client: the library programs embed to use a gfs cluster.
//!
//! ```no_run
//! # async fn demo() -> gfs_client::Result<()> {
//! let client = gfs_client::Client::connect("127.0.0.1:9000").await?;
//! client.create_with_parents("/logs/app").await?;
//! let offset = client.append("/logs/app", &b"one record"[..]).await?;
//! let back = client.read("/logs/app", offset, 10).await?;
//! assert_eq!(&back[..], b"one record");
//! # Ok(()) }
//! ```
//!
//! - Namespace calls go to the master ([`Client::mkdir`], [`Client::list`], ...).
//! - [`Client::append`] is GFS record append: atomic, at an offset the primary picks,
//!   exactly once across retries while the chunk's primary answers.
//! - [`Writer`] streams one writer's bytes into a file, filling chunks exactly (`put`);
//!   [`Client::create_writer`] makes a new file with its first chunk in one call.
//! - [`Reader`] and [`Client::read`] read from the nearest replica and fail over.
//! - What the master answers comes in the client's own types ([`Entry`], [`Locations`],
//!   [`ClusterReport`], [`FsckReport`], ...), converted once from the protobuf messages; each
//!   serializes with serde, and a reply that breaks the protocol is [`ClientError::Protocol`].
//!
//! File offsets are logical (invariant I3): a chunk starts in its file at the sum of the sealed
//! lengths of the chunks before it, and every chunk but the last is sealed before the next one
//! is handed out, so the offset an append returns is final and is the record's position in what
//! a [`Reader`] returns. A chunk sealed short (a record that did not fit) has padding, which
//! takes no offsets and is never returned.

mod append;
mod client;
mod config;
mod error;
mod model;
mod namespace;
mod read;
mod reader;
mod report;
mod writer;

#[cfg(test)]
mod proto_fuzz;

pub use client::Client;
pub use config::ClientConfig;
pub use error::{ClientError, ProtocolError, Result};
pub use gfs_dataplane::DataError;
/// Mutual TLS: a client's certificate files and identity (`ClientConfig::net`).
pub use gfs_host::tls;
pub use model::{ChunkDetail, ChunkInfo, Entry, EntryKind, Locations, Replica, StatDetail};
pub use reader::Reader;
pub use report::{
    ChunkHealth, ClusterEvent, ClusterReport, FileHealth, FsckReport, MasterStatus, ServerReport,
    ServerState,
};
pub use writer::Writer;
