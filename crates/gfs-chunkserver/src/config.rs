//! The chunkserver's TOML configuration: a documented, defaulted file format, validated into
//! the settings of each layer.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gfs_util::Size;
use serde::{Deserialize, Serialize};

use crate::error::{ChunkserverError, Result};

/// The chunkserver configuration file (`config/chunkserver*.toml`). Every field has a default.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChunkserverConfig {
    /// This server's id (the seed's `-id`).
    pub id: String,
    /// Directory holding chunk files, snapshots and the write-ahead log (the seed's `-d`).
    pub data_dir: PathBuf,
    /// Host to bind and to advertise to peers (the seed's `-h`).
    pub host: String,
    /// Host name or address the master, peers and clients should use to reach this server,
    /// when it differs from `host` (e.g. `host = "0.0.0.0"` in a container); "" advertises the
    /// address bound.
    pub advertise_host: String,
    /// TCP port of the client data plane (the seed's `-p`; 0 picks a free one).
    pub data_port: u16,
    /// gRPC port of the replication and control planes (the seed's `-r`; 0 picks a free one).
    pub repl_port: u16,
    /// HTTP port of `/metrics` (Prometheus) and `/health` (0, the default without a file,
    /// picks a free one, printed at start; the shipped files say 9101, 9102, ...).
    pub http_port: u16,
    /// Chunk size of the cluster, in bytes or with a unit ("64MiB"); a multiple of 64 KiB.
    pub chunk_size: Size,
    /// Replicas (the primary included) that must accept an append.
    pub quorum: usize,
    /// The master's gRPC address ("host:port"); empty: run without a master (tests, gfs-tester).
    pub master: String,
    /// Rack name, for the master's placement ("" when racks are not used).
    pub rack: String,
    /// Disk capacity to report to the master, in bytes or with a unit.
    pub capacity: Size,
    /// Storage tunables.
    pub storage: StorageSection,
    /// Replication tunables.
    pub replication: ReplicationSection,
    /// Data-plane tunables.
    pub dataplane: DataplaneSection,
    /// Encoded bytes of one heartbeat at most: the chunk report goes in pieces of this size
    /// (`gfs_proto::report::REPORT_PIECE_BYTES`, 1 MiB). Not a key of the file: tests set it
    /// small so that a report of a few replicas takes several pieces.
    #[serde(skip)]
    pub report_piece_bytes: usize,
}

/// `[storage]`: the chunk store.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSection {
    /// Bound on bytes staged in memory across all chunks.
    pub staging_limit: Size,
    /// Staged data not committed within this time is dropped.
    #[serde(with = "humantime_serde")]
    pub staging_ttl: Duration,
    /// Appends up to this size are made durable inside the write-ahead log.
    pub inline_max: Size,
    /// The write-ahead log is checkpointed past this size.
    pub checkpoint_bytes: Size,
    /// How long a group commit may wait for COMMITs of appends already staged (0: never).
    #[serde(with = "humantime_serde")]
    pub commit_delay: Duration,
    /// The scrubber verifies one idle chunk (no lease here) every this long and reports a bad
    /// one to the master (0: off).
    #[serde(with = "humantime_serde")]
    pub scrub_every: Duration,
    /// A sealed chunk keeps its op table (exactly-once retries) this long after it was sealed
    /// here; then a retry of any op on it fails as "outcome unknown". Must exceed the clients'
    /// `op_deadline` (60 s) plus the lease period (60 s), with a margin.
    #[serde(with = "humantime_serde")]
    pub op_retention: Duration,
}

/// `[replication]`: the two-phase commit.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicationSection {
    /// Deadline of the READY phase.
    #[serde(with = "humantime_serde")]
    pub prepare_timeout: Duration,
    /// Deadline of the COMMIT phase.
    #[serde(with = "humantime_serde")]
    pub commit_timeout: Duration,
    /// Deadline for connecting to a peer.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Bytes per second all re-replication copies into this server may receive together, in
    /// bytes or with a unit ("50MiB"); 0: no cap.
    pub clone_rate: Size,
}

/// `[dataplane]`: the client TCP protocol.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataplaneSection {
    /// Most client connections served at once.
    pub max_connections: usize,
    /// Requests in flight per connection.
    pub max_in_flight: usize,
    /// A connection idle this long is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Deadline for writing one reply.
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
}

impl Default for ChunkserverConfig {
    fn default() -> Self {
        ChunkserverConfig {
            id: "cs1".into(),
            data_dir: PathBuf::from("data/cs1"),
            host: "127.0.0.1".into(),
            advertise_host: String::new(),
            data_port: 8080,
            repl_port: 8081,
            http_port: 0,
            chunk_size: Size::mib(64),
            quorum: 2,
            master: String::new(),
            rack: String::new(),
            capacity: Size::gib(100),
            storage: StorageSection::default(),
            replication: ReplicationSection::default(),
            dataplane: DataplaneSection::default(),
            report_piece_bytes: gfs_proto::report::REPORT_PIECE_BYTES,
        }
    }
}

impl Default for StorageSection {
    fn default() -> Self {
        let d = gfs_storage::StoreConfig::default();
        StorageSection {
            staging_limit: Size(d.staging_limit),
            staging_ttl: d.staging_ttl,
            inline_max: Size(d.inline_max),
            checkpoint_bytes: Size(d.checkpoint_bytes),
            commit_delay: d.commit_delay,
            scrub_every: Duration::from_secs(10),
            op_retention: d.op_retention,
        }
    }
}

impl Default for ReplicationSection {
    fn default() -> Self {
        ReplicationSection {
            prepare_timeout: Duration::from_secs(5),
            commit_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            clone_rate: Size(0),
        }
    }
}

impl Default for DataplaneSection {
    fn default() -> Self {
        DataplaneSection {
            max_connections: 1024,
            max_in_flight: 64,
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(30),
        }
    }
}

impl ChunkserverConfig {
    /// Parses a TOML document; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<ChunkserverConfig> {
        toml::from_str(text).map_err(|e| ChunkserverError::Config(format!("{origin}: {e}")))
    }

    /// Reads and parses a TOML file.
    pub fn load(path: &Path) -> Result<ChunkserverConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ChunkserverError::Config(format!("{}: {e}", path.display())))?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// The chunk store settings these values give, checked.
    pub fn store_config(&self) -> Result<gfs_storage::StoreConfig> {
        let s = gfs_storage::StoreConfig {
            chunk_size: self.chunk_size.bytes(),
            staging_limit: self.storage.staging_limit.bytes(),
            staging_ttl: self.storage.staging_ttl,
            inline_max: self.storage.inline_max.bytes(),
            checkpoint_bytes: self.storage.checkpoint_bytes.bytes(),
            commit_delay: self.storage.commit_delay,
            op_retention: self.storage.op_retention,
            ..gfs_storage::StoreConfig::default()
        };
        s.validate()
            .map_err(|e| ChunkserverError::Config(e.to_string()))?;
        Ok(s)
    }

    /// Checks every value; the error names the key.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, why: String| Err(ChunkserverError::Config(format!("{key}: {why}")));
        if self.id.is_empty() || self.id.len() > 64 {
            return bad("id", "must be 1 to 64 characters".into());
        }
        if self.host.is_empty() {
            return bad("host", "must not be empty".into());
        }
        if self.advertise_host.contains(':') && !self.advertise_host.starts_with('[') {
            return bad(
                "advertise_host",
                "a host name or address without a port (IPv6 in brackets)".into(),
            );
        }
        if self.quorum == 0 {
            return bad("quorum", "must be at least 1".into());
        }
        if self.dataplane.max_connections == 0 || self.dataplane.max_in_flight == 0 {
            return bad(
                "dataplane",
                "max_connections and max_in_flight must be positive".into(),
            );
        }
        self.store_config().map(|_| ())
    }

    /// Largest record an append may carry: a quarter of a chunk.
    pub fn max_record(&self) -> u64 {
        self.chunk_size.bytes() / 4
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_full_file_parses_and_bad_keys_are_named() {
        let c = ChunkserverConfig::from_toml(
            r#"
            id = "cs9"
            data_dir = "/tmp/x"
            chunk_size = "1MiB"
            [storage]
            staging_ttl = "5s"
            [replication]
            prepare_timeout = "250ms"
            "#,
            "test.toml",
        )
        .unwrap();
        assert_eq!(c.chunk_size, Size::mib(1));
        assert_eq!(c.storage.staging_ttl, Duration::from_secs(5));
        assert_eq!(c.replication.prepare_timeout, Duration::from_millis(250));
        // Not a key of the file, but a file still gets the default.
        assert_eq!(c.report_piece_bytes, gfs_proto::report::REPORT_PIECE_BYTES);
        c.validate().unwrap();
        assert!(ChunkserverConfig::from_toml("report_piece_bytes = 5", "x").is_err());

        let e = ChunkserverConfig::from_toml("chunk_sise = 5", "bad.toml").unwrap_err();
        assert!(
            e.to_string().contains("bad.toml") && e.to_string().contains("chunk_sise"),
            "{e}"
        );
        let e = ChunkserverConfig::from_toml("chunk_size = \"3 bananas\"", "bad.toml").unwrap_err();
        assert!(e.to_string().contains("bananas"), "{e}");
        let c = ChunkserverConfig::from_toml("chunk_size = 1000", "x").unwrap();
        assert!(c.validate().is_err());
    }
}
