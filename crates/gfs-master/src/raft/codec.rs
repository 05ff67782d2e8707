//! The on-disk (and, later, on-the-wire) encoding of the replicated log: prost messages
//! (protobuf wire format, so fields can be added compatibly) for openraft's log ids, votes,
//! memberships, entries and snapshots, inside the CRC32C frames of `gfs_util::framed` behind
//! versioned magic headers, as the single master's op log (`crate::record`).
//!
//! Log segment `raft-log-<number, 20 digits>`: magic `GFSRLOG1`, then frames holding a
//! [`LogFileRecord`] each (an entry, a truncation or a purge). Vote `raft-vote`: magic
//! `GFSRVOT1`, one frame holding a [`VoteRecord`]. Snapshot `raft-snapshot`: magic `GFSRSNP1`,
//! one frame holding a [`SnapshotRecord`] (the namespace as a `Checkpoint`, with the Raft
//! metadata); its payload is also the snapshot's data as Raft sends it.

use std::collections::{BTreeMap, BTreeSet};

use gfs_util::framed::Magic;
use openraft::{
    CommittedLeaderId, Entry, EntryPayload, LeaderId, LogId, Membership, SnapshotMeta,
    StoredMembership, Vote,
};

use super::{MasterNode, Proposal, TypeConfig};
use crate::record::{Checkpoint, LogRecord};

/// Magic and format version of a Raft log segment.
pub const RAFT_LOG_MAGIC: &Magic = b"GFSRLOG1";
/// Magic and format version of the vote file.
pub const VOTE_MAGIC: &Magic = b"GFSRVOT1";
/// Magic and format version of the snapshot file.
pub const SNAPSHOT_MAGIC: &Magic = b"GFSRSNP1";

/// A log id: the term and node of the leader that proposed the entry, and its index.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LogIdRecord {
    /// The proposing leader's term.
    #[prost(uint64, tag = "1")]
    pub term: u64,
    /// The proposing leader's node id.
    #[prost(uint64, tag = "2")]
    pub node_id: u64,
    /// The entry's index.
    #[prost(uint64, tag = "3")]
    pub index: u64,
}

/// A vote: the term, the node voted for, and whether a quorum granted it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct VoteRecord {
    /// The term.
    #[prost(uint64, tag = "1")]
    pub term: u64,
    /// The node voted for.
    #[prost(uint64, tag = "2")]
    pub node_id: u64,
    /// A quorum granted it.
    #[prost(bool, tag = "3")]
    pub committed: bool,
}

/// One voter set of a (possibly joint) membership.
#[derive(Clone, PartialEq, prost::Message)]
pub struct VoterSet {
    /// Its voters' node ids.
    #[prost(uint64, repeated, tag = "1")]
    pub voters: Vec<u64>,
}

/// A master named in a membership.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeRecord {
    /// Its node id.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// Its Raft address.
    #[prost(string, tag = "2")]
    pub addr: String,
}

/// A membership: its voter sets (two during a joint change) and every node, learners too.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MembershipRecord {
    /// The voter sets.
    #[prost(message, repeated, tag = "1")]
    pub configs: Vec<VoterSet>,
    /// Every node, voters and learners.
    #[prost(message, repeated, tag = "2")]
    pub nodes: Vec<NodeRecord>,
}

/// An empty message (a blank entry).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Blank {}

/// A log entry's payload.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum PayloadRecord {
    /// A new leader's blank entry.
    #[prost(message, tag = "2")]
    Blank(Blank),
    /// A mutation of the namespace or chunk map (`seq` is the entry's index).
    #[prost(message, tag = "3")]
    Normal(LogRecord),
    /// A membership change.
    #[prost(message, tag = "4")]
    Membership(MembershipRecord),
    /// Mutations batched into one entry, applied in order (`seq` of each is the entry's index).
    #[prost(message, tag = "5")]
    Batch(BatchRecord),
}

/// Mutations proposed together as one entry.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BatchRecord {
    /// The mutations, in the order they apply.
    #[prost(message, repeated, tag = "1")]
    pub records: Vec<LogRecord>,
}

/// A log entry.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EntryRecord {
    /// Its log id.
    #[prost(message, optional, tag = "1")]
    pub log_id: Option<LogIdRecord>,
    /// Its payload.
    #[prost(oneof = "PayloadRecord", tags = "2, 3, 4, 5")]
    pub payload: Option<PayloadRecord>,
}

/// One record of a log segment.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LogFileRecord {
    /// What it records.
    #[prost(oneof = "LogFileOp", tags = "1, 2, 3")]
    pub op: Option<LogFileOp>,
}

/// What a log segment record does.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum LogFileOp {
    /// An entry appended.
    #[prost(message, tag = "1")]
    Entry(EntryRecord),
    /// Every entry from this index on removed (a new leader overwrote them).
    #[prost(uint64, tag = "2")]
    TruncateFrom(u64),
    /// Every entry up to this log id removed (a snapshot holds them).
    #[prost(message, tag = "3")]
    Purged(LogIdRecord),
}

/// A snapshot: the namespace after the entries up to `last_log_id`, with the membership then.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SnapshotRecord {
    /// The last entry it includes.
    #[prost(message, optional, tag = "1")]
    pub last_log_id: Option<LogIdRecord>,
    /// The entry that set `membership`, if any did.
    #[prost(message, optional, tag = "2")]
    pub membership_log_id: Option<LogIdRecord>,
    /// The membership in force at `last_log_id`.
    #[prost(message, optional, tag = "3")]
    pub membership: Option<MembershipRecord>,
    /// The snapshot's id.
    #[prost(string, tag = "4")]
    pub snapshot_id: String,
    /// The namespace and chunk map.
    #[prost(message, optional, tag = "5")]
    pub checkpoint: Option<Checkpoint>,
}

impl From<&LogId<u64>> for LogIdRecord {
    fn from(id: &LogId<u64>) -> LogIdRecord {
        LogIdRecord {
            term: id.leader_id.term,
            node_id: id.leader_id.node_id,
            index: id.index,
        }
    }
}

impl From<&LogIdRecord> for LogId<u64> {
    fn from(r: &LogIdRecord) -> LogId<u64> {
        LogId::new(CommittedLeaderId::new(r.term, r.node_id), r.index)
    }
}

impl From<&Vote<u64>> for VoteRecord {
    fn from(v: &Vote<u64>) -> VoteRecord {
        VoteRecord {
            term: v.leader_id.term,
            node_id: v.leader_id.node_id,
            committed: v.committed,
        }
    }
}

impl From<&VoteRecord> for Vote<u64> {
    fn from(r: &VoteRecord) -> Vote<u64> {
        Vote {
            leader_id: LeaderId::new(r.term, r.node_id),
            committed: r.committed,
        }
    }
}

impl From<&Membership<u64, MasterNode>> for MembershipRecord {
    fn from(m: &Membership<u64, MasterNode>) -> MembershipRecord {
        MembershipRecord {
            configs: m
                .get_joint_config()
                .iter()
                .map(|c| VoterSet {
                    voters: c.iter().copied().collect(),
                })
                .collect(),
            nodes: m
                .nodes()
                .map(|(id, n)| NodeRecord {
                    id: *id,
                    addr: n.addr.clone(),
                })
                .collect(),
        }
    }
}

impl From<&MembershipRecord> for Membership<u64, MasterNode> {
    fn from(r: &MembershipRecord) -> Membership<u64, MasterNode> {
        let configs: Vec<BTreeSet<u64>> = r
            .configs
            .iter()
            .map(|c| c.voters.iter().copied().collect())
            .collect();
        let nodes: BTreeMap<u64, MasterNode> = r
            .nodes
            .iter()
            .map(|n| {
                (
                    n.id,
                    MasterNode {
                        addr: n.addr.clone(),
                    },
                )
            })
            .collect();
        Membership::new(configs, nodes)
    }
}

impl From<&Entry<TypeConfig>> for EntryRecord {
    fn from(e: &Entry<TypeConfig>) -> EntryRecord {
        let payload = match &e.payload {
            EntryPayload::Blank => PayloadRecord::Blank(Blank {}),
            // One operation as a plain record, as before batches.
            EntryPayload::Normal(p) if p.ops.len() == 1 => PayloadRecord::Normal(LogRecord {
                seq: e.log_id.index,
                op: p.ops.first().cloned(),
            }),
            EntryPayload::Normal(p) => PayloadRecord::Batch(BatchRecord {
                records: p
                    .ops
                    .iter()
                    .map(|op| LogRecord {
                        seq: e.log_id.index,
                        op: Some(op.clone()),
                    })
                    .collect(),
            }),
            EntryPayload::Membership(m) => PayloadRecord::Membership(m.into()),
        };
        EntryRecord {
            log_id: Some((&e.log_id).into()),
            payload: Some(payload),
        }
    }
}

impl TryFrom<&EntryRecord> for Entry<TypeConfig> {
    type Error = String;

    fn try_from(r: &EntryRecord) -> Result<Entry<TypeConfig>, String> {
        let log_id: LogId<u64> = r.log_id.as_ref().ok_or("an entry without a log id")?.into();
        let payload = match r.payload.as_ref().ok_or("an entry without a payload")? {
            PayloadRecord::Blank(_) => EntryPayload::Blank,
            PayloadRecord::Normal(rec) => EntryPayload::Normal(Proposal {
                ops: vec![rec.op.clone().ok_or("an entry without an operation")?],
            }),
            PayloadRecord::Batch(b) if b.records.is_empty() => {
                return Err("a batch without operations".into());
            }
            PayloadRecord::Batch(b) => EntryPayload::Normal(Proposal {
                ops: b
                    .records
                    .iter()
                    .map(|r| r.op.clone().ok_or("a batched entry without an operation"))
                    .collect::<Result<_, _>>()?,
            }),
            PayloadRecord::Membership(m) => EntryPayload::Membership(m.into()),
        };
        Ok(Entry { log_id, payload })
    }
}

impl From<&SnapshotMeta<u64, MasterNode>> for SnapshotRecord {
    /// The record of `meta`, without the namespace.
    fn from(meta: &SnapshotMeta<u64, MasterNode>) -> SnapshotRecord {
        SnapshotRecord {
            last_log_id: meta.last_log_id.as_ref().map(Into::into),
            membership_log_id: meta.last_membership.log_id().as_ref().map(Into::into),
            membership: Some(meta.last_membership.membership().into()),
            snapshot_id: meta.snapshot_id.clone(),
            checkpoint: None,
        }
    }
}

impl SnapshotRecord {
    /// The Raft metadata it holds.
    pub fn meta(&self) -> SnapshotMeta<u64, MasterNode> {
        let membership = self
            .membership
            .as_ref()
            .map(Membership::from)
            .unwrap_or_default();
        SnapshotMeta {
            last_log_id: self.last_log_id.as_ref().map(Into::into),
            last_membership: StoredMembership::new(
                self.membership_log_id.as_ref().map(Into::into),
                membership,
            ),
            snapshot_id: self.snapshot_id.clone(),
        }
    }
}
