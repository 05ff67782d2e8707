//! Lazy deletion, as in the GFS paper: `delete` moves the entry to `/.trash/<ms>-<tag>/<name>`
//! (hidden from listings of `/`), where it can be moved back out until `retention` has passed;
//! then a background pass deletes it for good, and the servers drop its chunks on their next
//! heartbeat.
//!
//! [`Trash::delete`] first refuses what a delete would refuse (not found, the root, a non-empty
//! directory without `recursive`), then logs `Mkdir /.trash` (if missing), the `Mkdir` of a
//! slot `/.trash/<ms, 13 digits>-<8 hex>` and the `Rename` of the entry to `<slot>/<name>`,
//! holding the path locks of the entry and the slot. `List /` hides `/.trash`; moving an entry
//! back out undeletes it. Every heartbeat interval [`Trash::purge`] deletes the slots older than
//! the retention for good (a recursive `Delete`, under the slot's lock), as a delete inside the
//! trash does at once; both return the chunks deleted for good, for the caller to hand to the
//! chunk manager's purged set: a server that reports one is told to delete it on that
//! heartbeat, not after `orphan_grace`.

use std::sync::Arc;
use std::time::Duration;

use crate::error::{MasterError, Result};
use crate::locks::{Mode, PathLocks};
use crate::metastore::MetaStore;
use crate::path;
use crate::record::{DeleteOp, Op, PathOp, RenameOp};

/// The trash directory.
pub const TRASH: &str = "/.trash";

/// Whether `p` is the trash or inside it.
pub fn in_trash(p: &str) -> bool {
    p == TRASH || p.starts_with("/.trash/")
}

/// Deletion through the trash, and its purge.
pub struct Trash {
    meta: Arc<MetaStore>,
    locks: Arc<PathLocks>,
    retention: Duration,
}

impl Trash {
    /// Deletion over `meta`, with `locks` shared with the namespace calls; entries stay in the
    /// trash for `retention`.
    pub fn new(meta: Arc<MetaStore>, locks: Arc<PathLocks>, retention: Duration) -> Trash {
        Trash {
            meta,
            locks,
            retention,
        }
    }

    /// Deletes `p` (normalized): into the trash, or for good if it is already there; returns
    /// the chunks deleted for good.
    pub async fn delete(&self, p: &str, recursive: bool, now_ms: u64) -> Result<Vec<u64>> {
        let op = Op::Delete(DeleteOp {
            path: p.to_string(),
            mtime_ms: now_ms,
            recursive,
        });
        if in_trash(p) {
            let _lock = self.locks.mutate(p).await;
            return self.purge_now(op).await;
        }
        let slot = format!(
            "{TRASH}/{now_ms:013}-{:08x}",
            gfs_util::random::random::<u32>()
        );
        let dst = format!("{slot}/{}", path::name(p));
        let _lock = self
            .locks
            .paths(&[(p, Mode::Write), (&slot, Mode::Write), (&dst, Mode::Write)])
            .await;
        // Refuse what a delete would refuse (missing, the root, a non-empty directory).
        let check = op.clone();
        self.meta.read(move |ns| ns.check(&check)).await??;
        let mkdir = |path: &str| {
            Op::Mkdir(PathOp {
                path: path.to_string(),
                mtime_ms: now_ms,
            })
        };
        match self.meta.mutate(mkdir(TRASH)).await {
            Ok(_) | Err(MasterError::AlreadyExists(_)) => {}
            Err(e) => return Err(e),
        }
        self.meta.mutate(mkdir(&slot)).await?;
        self.meta
            .mutate(Op::Rename(RenameOp {
                src: p.to_string(),
                dst: dst.clone(),
                mtime_ms: now_ms,
            }))
            .await?;
        tracing::info!(path = p, trash = %dst, "moved to the trash");
        Ok(Vec::new())
    }

    async fn purge_now(&self, op: Op) -> Result<Vec<u64>> {
        let removed = self.meta.mutate(op).await?;
        tracing::info!(chunks = removed.len(), "deleted for good");
        Ok(removed)
    }

    /// Deletes for good the trash entries older than the retention period; returns their
    /// chunks.
    pub async fn purge(&self, now_ms: u64) -> Vec<u64> {
        let mut purged = Vec::new();
        let entries = self
            .meta
            .read(|ns| ns.list(TRASH).unwrap_or_default())
            .await
            .unwrap_or_default();
        let keep_ms = self.retention.as_millis() as u64;
        for e in entries {
            let stamp = path::name(&e.path)
                .split('-')
                .next()
                .and_then(|ms| ms.parse::<u64>().ok());
            if stamp.is_some_and(|ms| ms.saturating_add(keep_ms) <= now_ms) {
                let _lock = self.locks.mutate(&e.path).await;
                let op = Op::Delete(DeleteOp {
                    path: e.path.clone(),
                    mtime_ms: now_ms,
                    recursive: true,
                });
                match self.purge_now(op).await {
                    Ok(chunks) => {
                        tracing::info!(entry = %e.path, "trash entry expired");
                        purged.extend(chunks);
                    }
                    Err(MasterError::NotFound(_)) => {}
                    Err(err) => tracing::warn!(entry = %e.path, error = %err, "cannot purge"),
                }
            }
        }
        purged
    }
}
