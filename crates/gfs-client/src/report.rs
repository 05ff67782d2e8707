//! The client's own types for what the master's Admin service answers: the cluster report
//! ([`Client::report`](crate::Client::report)) and fsck ([`Client::fsck`](crate::Client::fsck)).
//!
//! Each is converted once from its protobuf message, here; a reply this client cannot
//! understand (a server state it does not know) is a [`ProtocolError`]. Every type serializes
//! (serde) to the JSON `gfs admin report --json` and `gfs fsck --json` print; fields are
//! declared in alphabetical order, the order of the keys those commands have always printed.

use serde::Serialize;

use gfs_proto::v1 as proto;

use crate::error::ProtocolError;

/// The cluster summary, every chunkserver and recent events (as on the master's status page).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClusterReport {
    /// Capacity of the live chunkservers with their disks, in bytes.
    pub capacity_bytes: u64,
    /// Chunks in the namespace.
    pub chunks: u64,
    /// Re-replication copies in flight.
    pub copies_in_flight: u64,
    /// Directories, the root not counted.
    pub directories: u64,
    /// Recent events, newest first.
    pub events: Vec<ClusterEvent>,
    /// Files in the namespace.
    pub files: u64,
    /// Chunks no live server holds at the current version.
    pub lost: u64,
    /// How long the master has been up, in ms.
    pub master_uptime_ms: u64,
    /// Every master of a replicated group, as the leader sees it (empty for a single master).
    pub masters: Vec<MasterStatus>,
    /// Chunks waiting for a copy.
    pub repair_queue: u64,
    /// Replicas per chunk the master aims for.
    pub replication_goal: u32,
    /// Every chunkserver the master knows.
    pub servers: Vec<ServerReport>,
    /// Stale replicas on live servers.
    pub stale_replicas: u64,
    /// Entries in `/.trash` waiting for their retention to end.
    pub trash_entries: u64,
    /// Chunks with fewer current replicas than the goal (lost ones included).
    pub under_replicated: u64,
    /// Bytes used on the live chunkservers with their disks.
    pub used_bytes: u64,
    /// The master started less than a dead-server timeout ago: servers may not have reported
    /// yet, so replica counts can look low.
    pub warming_up: bool,
    /// The master serves without TLS (`insecure = true`): every gRPC plane is open.
    pub insecure: bool,
}

impl TryFrom<proto::ClusterReport> for ClusterReport {
    type Error = ProtocolError;

    fn try_from(r: proto::ClusterReport) -> Result<Self, ProtocolError> {
        Ok(ClusterReport {
            capacity_bytes: r.capacity_bytes,
            chunks: r.chunks,
            copies_in_flight: r.copies_in_flight,
            directories: r.directories,
            events: r.events.into_iter().map(ClusterEvent::from).collect(),
            files: r.files,
            lost: r.lost,
            master_uptime_ms: r.master_uptime_ms,
            masters: r
                .masters
                .into_iter()
                .map(MasterStatus::try_from)
                .collect::<Result<_, _>>()?,
            repair_queue: r.repair_queue,
            replication_goal: r.replication_goal,
            servers: r
                .servers
                .into_iter()
                .map(ServerReport::try_from)
                .collect::<Result<_, _>>()?,
            stale_replicas: r.stale_replicas,
            trash_entries: r.trash_entries,
            under_replicated: r.under_replicated,
            used_bytes: r.used_bytes,
            warming_up: r.warming_up,
            insecure: r.insecure,
        })
    }
}

/// One master of a replicated group, as the leader sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MasterStatus {
    /// Its gRPC address.
    pub addr: String,
    /// The newest log index the leader applied (committed on a majority).
    pub applied_index: u64,
    /// Its number in the group.
    pub id: u64,
    /// Entries the leader holds that it does not (yet).
    pub lag: u64,
    /// Whether it leads.
    pub leader: bool,
    /// The newest log index the leader knows it holds.
    pub matched_index: u64,
    /// The leader's term.
    pub term: u64,
}

impl TryFrom<proto::MasterStatus> for MasterStatus {
    type Error = ProtocolError;

    fn try_from(m: proto::MasterStatus) -> Result<Self, ProtocolError> {
        let leader = match m.role.as_str() {
            "leader" => true,
            "follower" => false,
            other => {
                return Err(ProtocolError::new(format!(
                    "master {}: unknown role {other:?}",
                    m.id
                )));
            }
        };
        Ok(MasterStatus {
            addr: m.addr,
            applied_index: m.applied_index,
            id: m.id,
            lag: m.lag,
            leader,
            matched_index: m.matched_index,
            term: m.term,
        })
    }
}

/// One chunkserver as the master sees it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServerReport {
    /// Its disk's capacity, in bytes.
    pub capacity_bytes: u64,
    /// Replicas it holds.
    pub chunks: u64,
    /// Bytes copied into it since the master started.
    pub copied_in_bytes: u64,
    /// Bytes copied out of it since the master started.
    pub copied_out_bytes: u64,
    /// Copies running into it now.
    pub copies_in: u32,
    /// Copies running out of it now.
    pub copies_out: u32,
    /// Its data-plane address.
    pub data_addr: String,
    /// Its id.
    pub id: String,
    /// Time since its last heartbeat, in ms.
    pub last_heartbeat_ms_ago: u64,
    /// Its rack; empty when none was configured.
    pub rack: String,
    /// Its replication-plane address.
    pub repl_addr: String,
    /// Whether it serves.
    pub state: ServerState,
    /// Bytes used on its disk.
    pub used_bytes: u64,
}

impl TryFrom<proto::ServerReport> for ServerReport {
    type Error = ProtocolError;

    fn try_from(s: proto::ServerReport) -> Result<Self, ProtocolError> {
        Ok(ServerReport {
            state: s.state.parse().map_err(|e: ProtocolError| {
                ProtocolError::new(format!("chunkserver {}: {e}", s.id))
            })?,
            capacity_bytes: s.capacity_bytes,
            chunks: s.chunks,
            copied_in_bytes: s.copied_in_bytes,
            copied_out_bytes: s.copied_out_bytes,
            copies_in: s.copies_in,
            copies_out: s.copies_out,
            data_addr: s.data_addr,
            id: s.id,
            last_heartbeat_ms_ago: s.last_heartbeat_ms_ago,
            rack: s.rack,
            repl_addr: s.repl_addr,
            used_bytes: s.used_bytes,
        })
    }
}

/// A chunkserver's state in the cluster report; serializes and prints as the master names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ServerState {
    /// Heartbeating and taking new replicas.
    #[serde(rename = "alive")]
    Alive,
    /// No heartbeat within the dead-server timeout.
    #[serde(rename = "dead")]
    Dead,
    /// Heartbeating, but its data directory is gone: its replicas do not count.
    #[serde(rename = "disk lost")]
    DiskLost,
    /// Being decommissioned: some of its chunks still need a copy elsewhere.
    #[serde(rename = "draining")]
    Draining,
    /// Decommissioned: every chunk it holds has the goal elsewhere; safe to stop.
    #[serde(rename = "drained")]
    Drained,
}

impl ServerState {
    /// The master's name for the state ("alive", "dead", "disk lost", "draining", "drained").
    pub fn as_str(self) -> &'static str {
        match self {
            ServerState::Alive => "alive",
            ServerState::Dead => "dead",
            ServerState::DiskLost => "disk lost",
            ServerState::Draining => "draining",
            ServerState::Drained => "drained",
        }
    }
}

impl std::fmt::Display for ServerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad`, so width and alignment (`{:<10}`) apply.
        f.pad(self.as_str())
    }
}

impl std::str::FromStr for ServerState {
    type Err = ProtocolError;

    fn from_str(s: &str) -> Result<Self, ProtocolError> {
        [
            ServerState::Alive,
            ServerState::Dead,
            ServerState::DiskLost,
            ServerState::Draining,
            ServerState::Drained,
        ]
        .into_iter()
        .find(|state| state.as_str() == s)
        .ok_or_else(|| ProtocolError::new(format!("unknown server state {s:?}")))
    }
}

/// Something that happened to the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClusterEvent {
    /// What kind ("server-dead", "server-back", "chunk-lost", "repaired", "drained", ...; the
    /// master adds kinds over time, so this stays open).
    pub kind: String,
    /// What happened, in words.
    pub text: String,
    /// When, in ms since the Unix epoch.
    pub unix_ms: u64,
}

impl From<proto::ClusterEvent> for ClusterEvent {
    fn from(e: proto::ClusterEvent) -> Self {
        ClusterEvent {
            kind: e.kind,
            text: e.text,
            unix_ms: e.unix_ms,
        }
    }
}

/// The health of every file at or under a path (`gfs fsck`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FsckReport {
    /// Chunks of those files.
    pub chunks: u64,
    /// Files at or under `path`.
    pub files: u64,
    /// Whether every file is healthy (`unhealthy_files` is 0).
    pub healthy: bool,
    /// The path checked.
    pub path: String,
    /// Replicas per chunk the master aims for.
    pub replication_goal: u32,
    /// Unhealthy files with their bad chunks, in namespace order, as many as fit in one reply.
    pub unhealthy: Vec<FileHealth>,
    /// Unhealthy files, listed or not.
    pub unhealthy_files: u64,
    /// Unhealthy files left out of `unhealthy` (the reply was full).
    pub unlisted_files: u64,
}

impl FsckReport {
    /// The report of fsck of `path`, from the master's reply to it.
    pub(crate) fn from_reply(path: &str, r: proto::FsckReply) -> FsckReport {
        // Never fewer than are listed (a master that did not count them sends 0).
        let unhealthy_files = r.unhealthy_files.max(r.unhealthy.len() as u64);
        FsckReport {
            chunks: r.chunks,
            files: r.files,
            healthy: unhealthy_files == 0,
            path: path.to_string(),
            replication_goal: r.replication_goal,
            unhealthy: r.unhealthy.into_iter().map(FileHealth::from).collect(),
            unhealthy_files,
            unlisted_files: r.unlisted_files,
        }
    }
}

/// An unhealthy file and its bad chunks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FileHealth {
    /// Its bad chunks: short of the goal, lost, or with stale or corrupt replicas.
    pub chunks: Vec<ChunkHealth>,
    /// The file.
    pub path: String,
    /// Bad chunks left out of `chunks` (the reply was full).
    pub unlisted_chunks: u64,
}

impl From<proto::FileHealth> for FileHealth {
    fn from(f: proto::FileHealth) -> Self {
        FileHealth {
            chunks: f.chunks.into_iter().map(ChunkHealth::from).collect(),
            path: f.path,
            unlisted_chunks: f.unlisted_chunks,
        }
    }
}

/// A chunk short of the goal, lost, or with stale or corrupt replicas.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChunkHealth {
    /// Corrupt replicas.
    pub corrupt: u32,
    /// Current replicas on live servers.
    pub current: u32,
    /// Chunk handle.
    pub handle: u64,
    /// Position in its file.
    pub index: u64,
    /// No current replica on a live server (`current` is 0).
    pub lost: bool,
    /// Stale replicas on live servers.
    pub stale: u32,
    /// The chunk's current version.
    pub version: u64,
}

impl From<proto::ChunkHealth> for ChunkHealth {
    fn from(c: proto::ChunkHealth) -> Self {
        ChunkHealth {
            corrupt: c.corrupt,
            current: c.current,
            handle: c.handle,
            index: c.index,
            lost: c.current == 0,
            stale: c.stale,
            version: c.version,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn server(id: &str, state: &str) -> proto::ServerReport {
        proto::ServerReport {
            id: id.into(),
            data_addr: "10.0.0.1:8080".into(),
            repl_addr: "10.0.0.1:8081".into(),
            rack: "r1".into(),
            state: state.into(),
            last_heartbeat_ms_ago: 300,
            chunks: 7,
            capacity_bytes: 1000,
            used_bytes: 400,
            copies_in: 1,
            copies_out: 2,
            copied_in_bytes: 3,
            copied_out_bytes: 4,
        }
    }

    #[test]
    fn a_master_of_an_unknown_role_is_a_protocol_error() {
        let e = MasterStatus::try_from(proto::MasterStatus {
            id: 3,
            role: "witness".into(),
            ..proto::MasterStatus::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("unknown role"), "{e}");
    }

    #[test]
    fn a_cluster_report_converts_field_by_field() {
        let r = ClusterReport::try_from(proto::ClusterReport {
            generated_unix_ms: 5,
            capacity_bytes: 1000,
            used_bytes: 400,
            files: 2,
            directories: 1,
            chunks: 3,
            under_replicated: 1,
            lost: 0,
            stale_replicas: 4,
            repair_queue: 5,
            copies_in_flight: 6,
            trash_entries: 7,
            replication_goal: 3,
            servers: vec![server("cs0", "alive"), server("cs1", "disk lost")],
            events: vec![proto::ClusterEvent {
                unix_ms: 9,
                kind: "server-dead".into(),
                text: "cs2 is dead".into(),
            }],
            master_uptime_ms: 10,
            warming_up: true,
            insecure: true,
            masters: vec![proto::MasterStatus {
                id: 2,
                addr: "m2:9000".into(),
                role: "leader".into(),
                term: 7,
                matched_index: 40,
                lag: 0,
                applied_index: 39,
            }],
        })
        .unwrap();
        assert_eq!(
            r.masters,
            [MasterStatus {
                addr: "m2:9000".into(),
                applied_index: 39,
                id: 2,
                lag: 0,
                leader: true,
                matched_index: 40,
                term: 7,
            }]
        );
        assert_eq!((r.files, r.directories, r.chunks), (2, 1, 3));
        assert_eq!((r.stale_replicas, r.repair_queue), (4, 5));
        assert_eq!((r.copies_in_flight, r.trash_entries), (6, 7));
        assert_eq!((r.replication_goal, r.master_uptime_ms), (3, 10));
        assert!(r.warming_up && r.insecure);
        let s = &r.servers[0];
        assert_eq!((s.id.as_str(), s.state), ("cs0", ServerState::Alive));
        assert_eq!((s.copies_in, s.copies_out), (1, 2));
        assert_eq!((s.copied_in_bytes, s.copied_out_bytes), (3, 4));
        assert_eq!(r.servers[1].state, ServerState::DiskLost);
        assert_eq!(r.events[0].kind, "server-dead");
        assert_eq!(r.events[0].unix_ms, 9);
    }

    #[test]
    fn an_unknown_server_state_is_a_protocol_error() {
        let bad = proto::ClusterReport {
            servers: vec![server("cs0", "alive"), server("cs1", "sleepy")],
            ..Default::default()
        };
        let e = ClusterReport::try_from(bad).unwrap_err();
        assert!(e.to_string().contains("cs1"), "{e}");
        assert!(e.to_string().contains("sleepy"), "{e}");
    }

    #[test]
    fn server_states_serialize_and_print_as_the_master_names_them() {
        for name in ["alive", "dead", "disk lost", "draining", "drained"] {
            let state: ServerState = name.parse().unwrap();
            assert_eq!(state.to_string(), name);
            assert_eq!(serde_json::to_value(state).unwrap(), name);
        }
        assert_eq!(format!("[{:<6}]", ServerState::Dead), "[dead  ]");
        assert!("".parse::<ServerState>().is_err());
    }

    #[test]
    fn fsck_counts_what_it_lists_and_marks_lost_chunks() {
        let reply = proto::FsckReply {
            files: 4,
            chunks: 9,
            replication_goal: 3,
            unhealthy: vec![proto::FileHealth {
                path: "/d/a".into(),
                chunks: vec![
                    proto::ChunkHealth {
                        index: 0,
                        handle: 11,
                        version: 2,
                        current: 0,
                        stale: 1,
                        corrupt: 0,
                    },
                    proto::ChunkHealth {
                        index: 1,
                        handle: 12,
                        version: 1,
                        current: 2,
                        stale: 0,
                        corrupt: 1,
                    },
                ],
                unlisted_chunks: 5,
            }],
            // An older master that did not count: never fewer than listed.
            unhealthy_files: 0,
            unlisted_files: 0,
        };
        let r = FsckReport::from_reply("/d", reply);
        assert_eq!(r.path, "/d");
        assert_eq!((r.files, r.chunks, r.replication_goal), (4, 9, 3));
        assert_eq!(r.unhealthy_files, 1);
        assert!(!r.healthy);
        let f = &r.unhealthy[0];
        assert_eq!((f.path.as_str(), f.unlisted_chunks), ("/d/a", 5));
        assert!(f.chunks[0].lost && !f.chunks[1].lost);
        assert_eq!((f.chunks[1].current, f.chunks[1].corrupt), (2, 1));
        let clean = FsckReport::from_reply("/", proto::FsckReply::default());
        assert!(clean.healthy);
    }

    #[test]
    fn json_keys_come_in_the_order_the_cli_always_printed() {
        let r = FsckReport::from_reply("/", proto::FsckReply::default());
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"chunks":0,"files":0,"healthy":true,"path":"/","replication_goal":0,"#.to_string()
                + r#""unhealthy":[],"unhealthy_files":0,"unlisted_files":0}"#
        );
    }
}
