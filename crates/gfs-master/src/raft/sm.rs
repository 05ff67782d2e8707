//! The replicated state machine of one master: the namespace and chunk map, as the entries
//! Raft commits leave them, with its snapshots (format: `super::codec`).

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use gfs_util::crashsafe;
use gfs_util::disk::Disk;
use gfs_util::framed::{self, ANY_LEN, FrameAt};
use openraft::storage::RaftStateMachine;
use openraft::{
    EntryPayload, ErrorSubject, ErrorVerb, LogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta,
    StorageError, StoredMembership,
};
use parking_lot::Mutex;
use prost::Message;

use super::codec::{SNAPSHOT_MAGIC, SnapshotRecord};
use super::{Applied, MasterNode, RaftStorageError, TypeConfig};
use crate::error::Result;
use crate::metastore::{corrupt, io};
use crate::namespace::Namespace;

/// The snapshot file's name.
const SNAPSHOT_FILE: &str = "raft-snapshot";

/// The state machine of one master; clones share it (Raft builds snapshots through a clone).
#[derive(Clone)]
pub struct StateMachine {
    inner: Arc<Mutex<Machine>>,
}

struct Machine {
    disk: Arc<dyn Disk>,
    dir: PathBuf,
    ns: Namespace,
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, MasterNode>,
    /// The newest snapshot, built or installed: its metadata and bytes.
    snapshot: Option<(SnapshotMeta<u64, MasterNode>, Vec<u8>)>,
    /// Snapshots built by this process, for their ids.
    built: u64,
}

fn sm_error(verb: ErrorVerb, e: impl std::fmt::Display) -> RaftStorageError {
    StorageError::from_io_error(
        ErrorSubject::StateMachine,
        verb,
        std::io::Error::other(e.to_string()),
    )
}

fn snapshot_error(e: std::io::Error) -> RaftStorageError {
    StorageError::from_io_error(ErrorSubject::Snapshot(None), ErrorVerb::Write, e)
}

impl StateMachine {
    /// Opens the state machine in `dir` on `disk`: the namespace of the newest snapshot
    /// there, or an empty one.
    pub fn open_on(disk: Arc<dyn Disk>, dir: impl AsRef<Path>) -> Result<StateMachine> {
        let dir = dir.as_ref().to_path_buf();
        disk.create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let path = dir.join(SNAPSHOT_FILE);
        let mut m = Machine {
            disk: Arc::clone(&disk),
            dir,
            ns: Namespace::new(),
            last_applied: None,
            membership: StoredMembership::default(),
            snapshot: None,
            built: 0,
        };
        if disk.exists(&path) {
            let bytes = disk.read(&path).map_err(|e| io(&path, e))?;
            if !bytes.starts_with(SNAPSHOT_MAGIC) {
                return Err(corrupt(&path, 0, "not a GFSRSNP1 snapshot"));
            }
            let at = SNAPSHOT_MAGIC.len();
            let FrameAt::Ok(payload, _) = framed::frame_at(&bytes, at, ANY_LEN) else {
                return Err(corrupt(&path, at as u64, "damaged snapshot frame"));
            };
            let rec = SnapshotRecord::decode(payload)
                .map_err(|e| corrupt(&path, at as u64, format!("undecodable snapshot: {e}")))?;
            m.restore(&rec, payload.to_vec());
            tracing::info!(path = %path.display(), last_applied = ?m.last_applied.map(|l| l.index), "Raft snapshot recovered");
        }
        Ok(StateMachine {
            inner: Arc::new(Mutex::new(m)),
        })
    }

    /// Writes `checkpoint` (a single master's namespace) in `dir` as the state a new group's
    /// state machine starts from, before its first entry (a snapshot of no log position,
    /// which Raft never sends: the group's first snapshot carries it to others).
    pub fn seed(disk: &dyn Disk, dir: &Path, checkpoint: crate::record::Checkpoint) -> Result<()> {
        let rec = SnapshotRecord {
            last_log_id: None,
            membership_log_id: None,
            membership: None,
            snapshot_id: "seed".into(),
            checkpoint: Some(checkpoint),
        };
        let mut file = SNAPSHOT_MAGIC.to_vec();
        framed::frame(&rec.encode_to_vec(), &mut file);
        let path = dir.join(SNAPSHOT_FILE);
        crashsafe::replace(disk, &path, &file).map_err(|e| io(&path, e.source))
    }

    /// Runs `f` on the namespace as the applied entries left it.
    pub fn read<T>(&self, f: impl FnOnce(&Namespace) -> T) -> T {
        f(&self.inner.lock().ns)
    }
}

impl Machine {
    /// Takes the state `rec` holds (`bytes` is its encoding).
    fn restore(&mut self, rec: &SnapshotRecord, bytes: Vec<u8>) {
        let meta = rec.meta();
        self.ns = rec
            .checkpoint
            .clone()
            .map(Namespace::from_checkpoint)
            .unwrap_or_default();
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        // A seed (no log position) is a starting state, not a snapshot Raft may send.
        self.snapshot = meta.last_log_id.is_some().then_some((meta, bytes));
    }

    /// Writes `bytes` (a snapshot record) aside and renames it into place.
    fn persist(&self, bytes: &[u8]) -> std::io::Result<()> {
        let mut file = SNAPSHOT_MAGIC.to_vec();
        framed::frame(bytes, &mut file);
        crashsafe::replace(&*self.disk, &self.dir.join(SNAPSHOT_FILE), &file).map_err(|e| e.source)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(
        &mut self,
    ) -> std::result::Result<Snapshot<TypeConfig>, RaftStorageError> {
        let mut m = self.inner.lock();
        m.built += 1;
        let last = m.last_applied;
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: m.membership.clone(),
            snapshot_id: format!(
                "{}-{}-{}",
                last.map(|l| l.leader_id.term).unwrap_or(0),
                last.map(|l| l.index).unwrap_or(0),
                m.built
            ),
        };
        let rec = SnapshotRecord {
            checkpoint: Some(m.ns.to_checkpoint(last.map(|l| l.index).unwrap_or(0))),
            ..SnapshotRecord::from(&meta)
        };
        let bytes = rec.encode_to_vec();
        m.persist(&bytes).map_err(snapshot_error)?;
        m.snapshot = Some((meta.clone(), bytes.clone()));
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(
        &mut self,
    ) -> std::result::Result<
        (Option<LogId<u64>>, StoredMembership<u64, MasterNode>),
        RaftStorageError,
    > {
        let m = self.inner.lock();
        Ok((m.last_applied, m.membership.clone()))
    }

    async fn apply<I>(
        &mut self,
        entries: I,
    ) -> std::result::Result<Vec<Vec<Applied>>, RaftStorageError>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut m = self.inner.lock();
        let mut out = Vec::new();
        for e in entries {
            m.last_applied = Some(e.log_id);
            out.push(match e.payload {
                EntryPayload::Blank => Vec::new(),
                // Validated here, the same on every master: one that does not apply changes
                // nothing anywhere, and its proposer hears why.
                EntryPayload::Normal(p) => p.ops.iter().map(|op| m.ns.apply(op)).collect(),
                EntryPayload::Membership(mem) => {
                    m.membership = StoredMembership::new(Some(e.log_id), mem);
                    Vec::new()
                }
            });
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> StateMachine {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> std::result::Result<Box<Cursor<Vec<u8>>>, RaftStorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, MasterNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> std::result::Result<(), RaftStorageError> {
        let bytes = snapshot.into_inner();
        let rec = SnapshotRecord::decode(bytes.as_slice())
            .map_err(|e| sm_error(ErrorVerb::Read, format!("undecodable snapshot: {e}")))?;
        // The metadata Raft sends wins over what the bytes say of themselves.
        let rec = SnapshotRecord {
            checkpoint: rec.checkpoint,
            ..SnapshotRecord::from(meta)
        };
        let bytes = rec.encode_to_vec();
        let mut m = self.inner.lock();
        m.persist(&bytes).map_err(snapshot_error)?;
        m.restore(&rec, bytes);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> std::result::Result<Option<Snapshot<TypeConfig>>, RaftStorageError> {
        let m = self.inner.lock();
        Ok(m.snapshot.as_ref().map(|(meta, bytes)| Snapshot {
            meta: meta.clone(),
            snapshot: Box::new(Cursor::new(bytes.clone())),
        }))
    }
}
