//! Draining servers (decommissioning).
//!
//! Decommissioning marks a server draining (or, cancelled, not any more) and writes the
//! draining set to `<data_dir>/draining` (one id per line; temporary file, fsync, rename,
//! directory fsync), restored at start, so a restarted master keeps draining. A draining server
//! takes no new replica (placement, copies and rebalancing skip it); its replicas are still read
//! and used as copy sources but do not count toward the goal, so re-replication copies its
//! chunks elsewhere, and the extra-replica rule leaves them alone. The reply is how many of its
//! chunks still lack the goal elsewhere; at 0 it is `drained` (an event) and safe to stop.

use gfs_util::collections::HashSet;
use std::path::{Path, PathBuf};

use gfs_util::disk::Disk;
use parking_lot::Mutex;

use super::*;
use crate::error::{MasterError, Result};
use crate::registry::ChunkMap;
use crate::registry::Want;

/// Decommissioning state.
#[derive(Default)]
pub(crate) struct Drain {
    /// Draining servers already announced as safe to stop.
    pub(super) drained: Mutex<HashSet<String>>,
    /// Where the draining set is kept across restarts.
    pub(crate) file: std::sync::OnceLock<PathBuf>,
}

impl ChunkManager {
    /// Chunks `id` holds at the current version that lack the goal on servers not draining.
    pub(crate) fn left_on(
        &self,
        id: &str,
        counts: &ChunkMap<crate::registry::HolderCount>,
        versions: &ChunkMap<Want>,
    ) -> usize {
        let held = self.registry.lock().replicas_of(id);
        held.iter()
            .filter(|r| versions.get(&r.handle).is_some_and(|w| w.admits(r)))
            .filter(|r| {
                counts.get(&r.handle).map_or(0, |c| c.counted as usize) < self.cfg.replication
            })
            .count()
    }

    /// Starts (`drain`) or cancels draining server `id`, and records the draining set in
    /// `draining_file`; returns how many of its chunks still lack the goal on other servers
    /// (0: safe to stop it).
    pub async fn decommission(&self, id: &str, drain: bool) -> Result<u64> {
        let ids = {
            let mut reg = self.registry.lock();
            if !reg.decommission(id, drain) {
                return Err(MasterError::NoSuchServer(id.to_string()));
            }
            reg.draining()
        };
        if let Some(file) = self.drain.file.get() {
            let file = file.clone();
            let mut ids: Vec<String> = ids.into_iter().collect();
            ids.sort();
            let disk = Arc::clone(self.meta.disk());
            let on = Arc::clone(&disk);
            let saved = gfs_host::blocking(&*on, move || save_draining(&*disk, &file, &ids)).await;
            saved.map_err(|e| unavailable(format!("recording the draining servers: {e}")))?;
        }
        if !drain {
            return Ok(0);
        }
        let metas = self.meta.read(|ns| ns.chunk_metas()).await?;
        let versions: ChunkMap<Want> = metas.iter().map(|(h, m)| (*h, Want::from(*m))).collect();
        let counts = {
            let reg = self.registry.lock();
            reg.holder_counts(&versions, &reg.draining())
        };
        Ok(self.left_on(id, &counts, &versions) as u64)
    }

    /// Keeps the draining set in `file` (one id per line), and drains the servers it already
    /// names.
    pub fn persist_draining(&self, file: PathBuf) -> std::io::Result<()> {
        let ids = match self.meta.disk().read(&file) {
            Ok(text) => String::from_utf8_lossy(&text)
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        if !ids.is_empty() {
            tracing::info!(servers = ?ids, "still decommissioning");
        }
        self.registry.lock().restore_draining(ids);
        let _ = self.drain.file.set(file);
        Ok(())
    }
}

/// Writes `ids` to `file` atomically and durably (temporary file, fsync, rename, directory
/// fsync).
fn save_draining(disk: &dyn Disk, file: &Path, ids: &[String]) -> std::io::Result<()> {
    let text: String = ids.iter().map(|id| format!("{id}\n")).collect();
    gfs_util::crashsafe::replace(disk, file, text.as_bytes())?;
    Ok(())
}
