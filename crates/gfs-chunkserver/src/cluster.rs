//! Cluster-wide values from one source: the master's.
//!
//! The chunk size and the quorum must be the same on the master and on every chunkserver: a
//! server with another chunk size seals chunks where the master does not expect them and
//! refuses records the master sized for it; one with another quorum acknowledges appends the
//! master's lease and repair decisions do not count on. Both still sit in each server's own
//! configuration (a chunkserver without a master needs them), so they are checked, not copied:
//!
//! - at registration the server tells the master its values (`RegisterRequest.chunk_size`,
//!   `quorum`) and the master replies with its own (`RegisterReply.chunk_size`, `quorum`);
//! - the master does not register a server whose values differ (nothing is placed on it);
//! - the server compares ([`ClusterValues::check`]). On a mismatch it refuses to serve: the
//!   heartbeat loop stops, the server's shutdown token is cancelled, and
//!   [`ChunkServer::wait`](crate::ChunkServer::wait) returns [`ChunkserverError::ClusterMismatch`]
//!   after the usual drain, whose one line names both values, both sides and the key to set.
//!   The binary prints it and exits with a non-zero status.
//! - Every registration checks again, including the one after a master restart: a server that
//!   has been serving and finds that the (new) master runs with other values stops the same
//!   way, rather than keep serving under values the master does not share. The master's values
//!   win; the operator fixes the server's configuration and starts it again.
//! - A 0 from the master means "not sent" (an older master): the server's own values stand.

use gfs_proto::v1::RegisterReply;

use crate::error::ChunkserverError;

/// The values that must agree across the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClusterValues {
    /// Chunk size in bytes (0: not known).
    pub chunk_size: u64,
    /// Replicas (the primary included) that must accept an append (0: not known).
    pub quorum: u64,
}

impl From<&RegisterReply> for ClusterValues {
    fn from(r: &RegisterReply) -> ClusterValues {
        ClusterValues {
            chunk_size: r.chunk_size,
            quorum: r.quorum.into(),
        }
    }
}

impl ClusterValues {
    /// Checks this server's values (`self`) against those of the master at `master`; a value
    /// the master did not send (0) is accepted. The first difference is the error.
    pub fn check(
        &self,
        master_values: &ClusterValues,
        master: &str,
    ) -> Result<(), ChunkserverError> {
        let pairs = [
            (
                "chunk_size",
                self.chunk_size,
                master_values.chunk_size,
                "chunk_size (or --chunk-size)",
            ),
            ("quorum", self.quorum, master_values.quorum, "quorum"),
        ];
        for (key, ours, theirs, fix) in pairs {
            if theirs != 0 && ours != theirs {
                return Err(ChunkserverError::ClusterMismatch {
                    key,
                    ours,
                    theirs,
                    master: master.to_string(),
                    fix,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const OURS: ClusterValues = ClusterValues {
        chunk_size: 1 << 20,
        quorum: 2,
    };

    #[test]
    fn equal_values_pass() {
        OURS.check(&OURS, "m:9000").unwrap();
    }

    #[test]
    fn zero_from_an_older_master_is_not_sent() {
        let old = ClusterValues {
            chunk_size: 0,
            quorum: 0,
        };
        OURS.check(&old, "m:9000").unwrap();
        let only_size = ClusterValues { quorum: 0, ..OURS };
        OURS.check(&only_size, "m:9000").unwrap();
    }

    #[test]
    fn a_different_chunk_size_names_both_values_both_sides_and_the_key() {
        let master = ClusterValues {
            chunk_size: 64 << 20,
            ..OURS
        };
        let e = OURS.check(&master, "10.0.0.1:9000").unwrap_err();
        assert!(matches!(
            e,
            ChunkserverError::ClusterMismatch {
                key: "chunk_size",
                ..
            }
        ));
        assert_eq!(
            e.to_string(),
            "chunk_size 1048576 in this chunkserver's config, the master at 10.0.0.1:9000 runs \
             with 67108864: set chunk_size (or --chunk-size) in the chunkserver's config to match"
        );
    }

    #[test]
    fn a_different_quorum_is_refused_too() {
        let master = ClusterValues { quorum: 3, ..OURS };
        let e = OURS.check(&master, "m:9000").unwrap_err().to_string();
        assert!(
            e.starts_with("quorum 2 in this chunkserver's config"),
            "{e}"
        );
        assert!(e.contains("runs with 3"), "{e}");
    }

    #[test]
    fn a_reply_converts_at_the_edge() {
        let r = RegisterReply {
            heartbeat_interval_ms: 300,
            chunk_size: 1 << 20,
            quorum: 2,
            token_key: Default::default(),
        };
        assert_eq!(ClusterValues::from(&r), OURS);
        assert_eq!(
            ClusterValues::from(&RegisterReply::default()),
            ClusterValues {
                chunk_size: 0,
                quorum: 0
            }
        );
    }
}
