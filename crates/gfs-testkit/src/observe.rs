//! What a client sees of a file after a run, checked against the history and the disks.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use gfs_util::disk::Disk;
use tokio::time::Instant;

use gfs_client::Client;

use crate::checker::{ChunkView, History, Violation, check_file, check_quorum, check_replicas};
use crate::replicas::{read_replicas, read_replicas_on};

/// A file as a client saw it at the end of a run.
#[derive(Clone, Debug)]
pub struct Observed {
    /// The file's bytes, as a sequential reader returns them.
    pub file: Vec<u8>,
    /// Its chunks, as the master lists them.
    pub chunks: Vec<ChunkView>,
    /// Whether `fsck` of the file found nothing wrong.
    pub fsck_healthy: bool,
    /// The replication goal fsck reported.
    pub goal: usize,
    /// The cluster's chunk size.
    pub chunk_size: u64,
}

/// Reads `path` whole and asks the master for its chunks and for `fsck` of it.
pub async fn observe(c: &Client, path: &str) -> Observed {
    let mut r = c.reader(path).await.expect("open the file");
    let mut file = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut r, &mut file)
        .await
        .expect("read the file");
    let l = c.refresh(path).await.expect("the file's chunks");
    let chunks = l
        .chunks
        .iter()
        .map(|ch| ChunkView {
            handle: ch.handle,
            version: ch.version,
            sealed_length: ch.sealed_length,
            file_offset: ch.file_offset,
            counted: ch.replicas.iter().map(|r| r.id.clone()).collect(),
        })
        .collect();
    let fsck = c.fsck(path).await.expect("fsck");
    Observed {
        file,
        chunks,
        fsck_healthy: fsck.unhealthy.is_empty(),
        goal: fsck.replication_goal as usize,
        chunk_size: l.chunk_size,
    }
}

/// Waits until `fsck` of `path` finds nothing wrong (the cluster healed); returns how long it
/// took. Panics past `within`, naming what is still wrong.
pub async fn wait_healthy(c: &Client, path: &str, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let f = c.fsck(path).await.expect("fsck");
        if f.unhealthy.is_empty() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{path} still unhealthy after {within:?}: {:?}",
            f.unhealthy
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

impl Observed {
    /// Checks the whole promise: the file against the history, and every replica on the
    /// disks of `dirs` (`(server id, data directory)`, every live server, all stopped now)
    /// against the master's and fsck's views.
    pub fn check(&self, h: &History, dirs: &[(String, PathBuf)]) -> Vec<Violation> {
        self.check_replicas(h, read_replicas(dirs, self.chunk_size))
    }

    /// [`Observed::check`] on `(server id, disk, data directory)`s (a simulator's disks).
    pub fn check_on(
        &self,
        h: &History,
        dirs: &[(String, Arc<dyn Disk>, PathBuf)],
    ) -> Vec<Violation> {
        self.check_replicas(h, read_replicas_on(dirs, self.chunk_size))
    }

    fn check_replicas(
        &self,
        h: &History,
        replicas: Result<
            std::collections::BTreeMap<u64, Vec<crate::ReplicaState>>,
            gfs_storage::StorageError,
        >,
    ) -> Vec<Violation> {
        let mut out = check_file(h, &self.file);
        match replicas {
            Ok(replicas) => out.extend(check_replicas(
                &self.chunks,
                &replicas,
                &self.file,
                self.goal,
                Some(self.fsck_healthy),
            )),
            Err(e) => out.push(Violation::Fsck {
                detail: format!("cannot read the replicas: {e}"),
            }),
        }
        out
    }

    /// Checks the file against the history and invariant I2 on the disks of `dirs` (stopped
    /// servers): each acknowledged record on at least `quorum` current replicas.
    pub fn check_quorum(
        &self,
        h: &History,
        dirs: &[(String, PathBuf)],
        quorum: usize,
    ) -> Vec<Violation> {
        let mut out = check_file(h, &self.file);
        match read_replicas(dirs, self.chunk_size) {
            Ok(replicas) => out.extend(check_quorum(h, &self.chunks, &replicas, quorum)),
            Err(e) => out.push(Violation::Fsck {
                detail: format!("cannot read the replicas: {e}"),
            }),
        }
        out
    }
}

/// Panics listing the violations (the first 20), if any.
pub fn assert_clean(v: &[Violation]) {
    if v.is_empty() {
        return;
    }
    let shown: Vec<String> = v.iter().take(20).map(|x| format!("  {x:?}")).collect();
    panic!(
        "the history checker found {} violation(s):\n{}",
        v.len(),
        shown.join("\n")
    );
}
