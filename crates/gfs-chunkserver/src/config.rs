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
    /// The master's gRPC address ("host:port"), or a replicated group's, comma separated (the
    /// server follows their leader); empty: run without a master (tests, gfs-tester).
    pub master: String,
    /// Rack name, for the master's placement ("" when racks are not used).
    pub rack: String,
    /// Disk capacity to report to the master, in bytes or with a unit.
    pub capacity: Size,
    /// Storage tunables.
    pub storage: StorageSection,
    /// Replication tunables.
    pub replication: ReplicationSection,
    /// Data-plane limits (`[dataplane]`: the keys of [`gfs_dataplane::ServerConfig`]; its
    /// `max_frame` follows from the chunk size).
    pub dataplane: gfs_dataplane::ServerConfig,
    /// `[tls]`: this server's certificate, the CA's, and its key (mutual TLS on the gRPC
    /// planes; see `gfs_host::tls`), or `insecure = true`.
    pub tls: gfs_host::tls::TlsSettings,
    /// Encoded bytes of one heartbeat at most: the chunk report goes in pieces of this size
    /// (`gfs_proto::report::REPORT_PIECE_BYTES`, 1 MiB). Not a key of the file: tests set it
    /// small so that a report of a few replicas takes several pieces.
    #[serde(skip)]
    pub report_piece_bytes: usize,
}

/// `[storage]`: the chunk store's own settings (its keys are those of
/// [`gfs_storage::StoreConfig`], but `chunk_size`, the cluster's) and the scrubber's period.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSection {
    /// The scrubber verifies one idle chunk (no lease here) every this long and reports a bad
    /// one to the master (0: off).
    #[serde(with = "humantime_serde")]
    pub scrub_every: Duration,
    /// The chunk store's settings; `chunk_size` is replaced by the cluster's.
    #[serde(flatten)]
    pub store: gfs_storage::StoreConfig,
}

/// `[replication]`: the append's rounds and their deadlines.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicationSection {
    /// Appends in one round (WRITE: stage and commit on each secondary at once) instead of
    /// two (PREPARE, then COMMIT); experimental, off by default.
    pub one_round: bool,
    /// Deadline of the READY phase (two rounds only).
    #[serde(with = "humantime_serde")]
    pub prepare_timeout: Duration,
    /// Deadline of the COMMIT phase (in one round: of the WRITE).
    #[serde(with = "humantime_serde")]
    pub commit_timeout: Duration,
    /// Deadline for connecting to a peer or a master (to each master of a group,
    /// [`gfs_host::GROUP_CONNECT_TIMEOUT`] at most, as another can answer instead).
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Bytes per second all re-replication copies into this server may receive together, in
    /// bytes or with a unit ("50MiB"); 0: no cap.
    pub clone_rate: Size,
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
            dataplane: gfs_dataplane::ServerConfig::default(),
            report_piece_bytes: gfs_proto::report::REPORT_PIECE_BYTES,
            tls: gfs_host::tls::TlsSettings::default(),
        }
    }
}

impl Default for StorageSection {
    fn default() -> Self {
        StorageSection {
            scrub_every: Duration::from_secs(10),
            store: gfs_storage::StoreConfig::default(),
        }
    }
}

impl Default for ReplicationSection {
    fn default() -> Self {
        ReplicationSection {
            one_round: false,
            prepare_timeout: Duration::from_secs(5),
            commit_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            clone_rate: Size(0),
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
            ..self.storage.store.clone()
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
        assert_eq!(c.storage.store.staging_ttl, Duration::from_secs(5));
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

    #[test]
    fn the_lower_layers_tables_take_their_own_keys_and_refuse_others() {
        let c = ChunkserverConfig::from_toml(
            r#"
            chunk_size = "4MiB"
            [storage]
            scrub_every = "0s"
            staging_limit = "8MiB"
            commit_wait = "3s"
            max_batch_bytes = 1048576
            op_retention = "5m"
            [dataplane]
            max_in_flight = 7
            idle_timeout = "2s"
            "#,
            "t.toml",
        )
        .unwrap();
        assert!(c.storage.scrub_every.is_zero());
        let store = c.store_config().unwrap();
        assert_eq!(store.chunk_size, 4 << 20, "the cluster's chunk size");
        assert_eq!(store.staging_limit, 8 << 20);
        assert_eq!(store.commit_wait, Duration::from_secs(3));
        assert_eq!(store.max_batch_bytes, 1 << 20);
        assert_eq!(store.op_retention, Duration::from_secs(300));
        assert_eq!(c.dataplane.max_in_flight, 7);
        assert_eq!(c.dataplane.idle_timeout, Duration::from_secs(2));
        assert_eq!(c.dataplane.max_connections, 1024, "a default");

        // A misspelt key in either table, or one that is not the file's to set, is named.
        for (text, key) in [
            ("[storage]\nstaging_tll = \"1s\"", "staging_tll"),
            ("[storage]\nchunk_size = \"1MiB\"", "chunk_size"),
            ("[dataplane]\nmax_conections = 5", "max_conections"),
            ("[dataplane]\nmax_frame = 5", "max_frame"),
        ] {
            let e = ChunkserverConfig::from_toml(text, "t.toml").unwrap_err();
            assert!(e.to_string().contains(key), "{text}: {e}");
        }

        // What the process prints as its configuration reads back the same.
        let text = toml::to_string(&c).unwrap();
        let back = ChunkserverConfig::from_toml(&text, "printed").unwrap();
        assert_eq!(format!("{back:?}"), format!("{c:?}"));
    }
}
