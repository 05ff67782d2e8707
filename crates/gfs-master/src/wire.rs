//! The master's report types turned into the `Admin` service's replies: the one place that
//! does. An fsck reply is cut here to a page ([`fsck_reply`]).

use gfs_proto::v1 as pb;
use prost::encoding::string::encoded_len;

use crate::chunks::ChunkHealth;
use crate::events::Event;
use crate::report::{ClusterReport, FsckReport, MasterStatus, ServerReport};

impl From<Event> for pb::ClusterEvent {
    fn from(e: Event) -> Self {
        pb::ClusterEvent {
            unix_ms: e.unix_ms,
            kind: e.kind,
            text: e.text,
        }
    }
}

impl From<ServerReport> for pb::ServerReport {
    fn from(s: ServerReport) -> Self {
        pb::ServerReport {
            id: s.id,
            data_addr: s.data_addr,
            repl_addr: s.repl_addr,
            rack: s.rack,
            state: s.state.as_str().to_string(),
            last_heartbeat_ms_ago: s.since_heartbeat.as_millis() as u64,
            chunks: s.chunks,
            capacity_bytes: s.capacity_bytes,
            used_bytes: s.used_bytes,
            copies_in: s.copies_in,
            copies_out: s.copies_out,
            copied_in_bytes: s.copied_in_bytes,
            copied_out_bytes: s.copied_out_bytes,
        }
    }
}

impl From<ClusterReport> for pb::ClusterReport {
    fn from(r: ClusterReport) -> Self {
        pb::ClusterReport {
            generated_unix_ms: r.generated_unix_ms,
            capacity_bytes: r.capacity_bytes,
            used_bytes: r.used_bytes,
            files: r.files,
            directories: r.directories,
            chunks: r.chunks,
            under_replicated: r.under_replicated,
            lost: r.lost,
            stale_replicas: r.stale_replicas,
            repair_queue: r.repair_queue,
            copies_in_flight: r.copies_in_flight,
            trash_entries: r.trash_entries,
            replication_goal: r.replication_goal,
            servers: r.servers.into_iter().map(Into::into).collect(),
            events: r.events.into_iter().map(Into::into).collect(),
            master_uptime_ms: r.master_uptime.as_millis() as u64,
            warming_up: r.warming_up,
            insecure: r.insecure,
            masters: r.masters.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<MasterStatus> for pb::MasterStatus {
    fn from(m: MasterStatus) -> Self {
        pb::MasterStatus {
            id: m.id,
            addr: m.addr,
            role: if m.leader { "leader" } else { "follower" }.into(),
            term: m.term,
            matched_index: m.matched_index,
            lag: m.lag,
            applied_index: m.applied_index,
        }
    }
}

impl From<&ChunkHealth> for pb::ChunkHealth {
    fn from(c: &ChunkHealth) -> Self {
        pb::ChunkHealth {
            index: c.index,
            handle: c.handle,
            version: c.version,
            current: c.replicas.current as u32,
            stale: c.replicas.stale as u32,
            corrupt: c.replicas.corrupt as u32,
        }
    }
}

/// `report` as a reply of at most `budget` encoded bytes (at least 128): unhealthy files and
/// their bad chunks are listed in namespace order while they fit, and the rest are counted
/// (`unlisted_files`, `FileHealth::unlisted_chunks`); the totals (`files`, `chunks`,
/// `unhealthy_files`) always cover everything.
pub fn fsck_reply(report: FsckReport, budget: usize) -> pb::FsckReply {
    let mut reply = pb::FsckReply {
        files: report.files,
        chunks: report.chunks,
        replication_goal: report.replication_goal,
        unhealthy_files: report.unhealthy.len() as u64,
        ..pb::FsckReply::default()
    };
    // What the reply holds so far, counted high: its own fields at their largest.
    let mut bytes = 64;
    for f in report.unhealthy {
        let mut file = pb::FileHealth {
            path: f.path,
            chunks: Vec::new(),
            unlisted_chunks: 0,
        };
        // The entry's key, its length (at most 5 bytes), its path, `unlisted_chunks`.
        let mut len = 1 + 5 + encoded_len(1, &file.path) + 11;
        if bytes + len > budget {
            reply.unlisted_files += 1;
            continue;
        }
        for c in &f.chunks {
            let c = pb::ChunkHealth::from(c);
            let n = prost::encoding::message::encoded_len(2, &c);
            if bytes + len + n > budget {
                file.unlisted_chunks += 1;
            } else {
                file.chunks.push(c);
                len += n;
            }
        }
        bytes += len;
        reply.unhealthy.push(file);
    }
    reply
}
