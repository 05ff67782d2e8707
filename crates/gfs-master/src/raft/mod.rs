//! The masters' operation log replicated by Raft: the types, the durable Raft log
//! ([`LogStore`]) and the state machine ([`StateMachine`]: the namespace and chunk map) that
//! three or five masters share (issue 16). This part is the storage; the network between
//! masters, the leader-only services and failover build on it.
//!
//! **Why openraft** (pinned to 0.9.25, the newest stable release the registry offers; 0.10 is
//! not there): it is well kept and runs Databend's metadata service; it is async on tokio; its
//! storage and network sit behind traits, so the simulator's disk and network fit under it as
//! under the rest of the master; and it ships a conformance suite for storage
//! (`openraft::testing::Suite`), which these types pass. `storage-v2` splits the log from the
//! state machine, as here.
//!
//! **Propose, then apply.** Mutations are entries ([`Proposal`]: the `Op`s that reached the
//! leader while the previous entry was being committed, so that one round of fsyncs on a
//! majority carries many, as the single master's group commit does); a leader proposes
//! it, a majority of masters make it durable (each fsyncs its log), and every master applies it
//! to its namespace in log order. Applying validates: an entry that does not apply (a create
//! of a path that exists by then) changes nothing on any master, deterministically, and its
//! proposer hears why ([`Applied`]). So the single master's apply-then-log (validate and apply
//! under the state lock, then log) becomes log-then-apply, and log order is apply order on
//! every master.
//!
//! **Durability.** The log ([`LogStore`]) writes each append as one write and one `fdatasync`
//! of its segment before Raft hears it is durable (zeros written ahead of the records, as in
//! the single master's log, keep most of those writes inside the file's size); a vote is written aside and renamed into
//! place (`gfs_util::crashsafe`). A torn tail of the segment is cut at startup; a damaged
//! record before a good one is a startup error naming the file and offset. A purge (Raft
//! drops entries a snapshot holds) rewrites the surviving entries into a new segment, written
//! aside and renamed, then removes the old one. Snapshots are the namespace's checkpoint with
//! the Raft metadata (`raft-snapshot`, written aside): a master that restarts recovers its
//! state machine from it and replays the log after it as Raft commits it again.

use std::io::Cursor;

use crate::error::MasterError;
use crate::record::Op;

#[cfg(test)]
mod cluster_tests;
pub mod codec;
mod log;
mod member;
mod meta;
mod network;
mod sm;
#[cfg(test)]
mod tests;

pub use log::LogStore;
pub use member::{Member, RaftTiming};
pub use meta::Replicated;
pub use network::{Peer, RaftNet, RaftService};
pub use sm::StateMachine;

/// Mutations proposed to the replicated log as one entry: operations on the namespace or chunk
/// map, applied in order, each on its own (one that does not apply leaves the others be).
#[derive(Clone, Debug, PartialEq)]
pub struct Proposal {
    /// The operations (at least one).
    pub ops: Vec<Op>,
}

/// What applying one operation did: the chunks a delete removed, or why the operation did not
/// apply (it then changed nothing, on every master).
pub type Applied = Result<Vec<u64>, MasterError>;

/// A master as a Raft membership names it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MasterNode {
    /// Where its Raft service listens (`host:port`).
    pub addr: String,
}

openraft::declare_raft_types!(
    /// The masters' Raft types: node ids are `u64`, entries carry [`Proposal`]s, snapshots are
    /// the bytes of a `codec::SnapshotRecord`.
    pub TypeConfig:
        D = Proposal,
        R = Vec<Applied>,
        NodeId = u64,
        Node = MasterNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// openraft's storage error, for this crate's node ids.
pub type RaftStorageError = openraft::StorageError<u64>;
