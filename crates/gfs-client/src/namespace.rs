//! Namespace and admin calls on [`Client`]: one call to the master each, no retry (but
//! [`Client::ensure_file`], the reads, and a mutation a group of masters refused unperformed:
//! see `Client::mutate`); [`Client::create_with_parents`] and
//! [`Client::ensure_file`] create missing parent directories first, as HDFS's create does.

use gfs_host::Masters;
use gfs_proto::v1::admin_client::AdminClient;
use gfs_proto::v1::{
    AddMasterRequest, DecommissionRequest, FsckRequest, RemoveMasterRequest, ReportRequest,
};
use gfs_proto::v1::{
    CreateFileRequest, DeleteRequest, ListRequest, MkdirRequest, RenameRequest, StatRequest,
};

use crate::client::*;
use crate::error::{ClientError, Result};
use crate::model::*;
use crate::report::{ClusterReport, FsckReport, MasterStatus};
use crate::writer::Writer;

/// The parent directory of the absolute `path` (`/` for a top-level entry).
pub(crate) fn parent(path: &str) -> &str {
    match path.trim_end_matches('/').rsplit_once('/') {
        Some((p, _)) if !p.is_empty() => p,
        _ => "/",
    }
}

impl Client {
    /// Creates the directory `path` (and its missing parents with `parents`).
    pub async fn mkdir(&self, path: &str, parents: bool) -> Result<()> {
        let req = MkdirRequest {
            path: path.into(),
            parents,
        };
        self.mutate(|mut m| {
            let req = req.clone();
            async move { m.mkdir(req).await }
        })
        .await?;
        Ok(())
    }

    /// Creates the empty file `path`; fails if it exists.
    pub async fn create(&self, path: &str) -> Result<()> {
        let req = CreateFileRequest {
            path: path.into(),
            replication: 0,
            first_chunk: false,
        };
        self.mutate(|mut m| {
            let req = req.clone();
            async move { m.create(req).await }
        })
        .await?;
        Ok(())
    }

    /// Creates the empty file `path` and, when its parent directory is missing, that and its
    /// missing ancestors first (as HDFS's create does); fails if `path` exists. Not atomic: a
    /// failed create may leave the directories it made.
    pub async fn create_with_parents(&self, path: &str) -> Result<()> {
        self.with_parents(path, || self.create(path)).await
    }

    /// [`Client::create_writer`], making the parent directory and its missing ancestors first
    /// when it is missing, as [`Client::create_with_parents`] does.
    pub async fn create_writer_with_parents(&self, path: &str) -> Result<Writer> {
        self.with_parents(path, || self.create_writer(path)).await
    }

    /// `create()`, once more after making `path`'s missing parent directories when it answers
    /// that the parent is missing.
    async fn with_parents<T, F, Fut>(&self, path: &str, create: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        match create().await {
            Err(ClientError::NotFound(_)) => {
                self.mkdir(parent(path), true).await?;
                create().await
            }
            done => done,
        }
    }

    /// Creates the empty file `path` unless an entry is there already (made by someone else,
    /// or by an earlier attempt whose answer was lost), and its missing parent directories
    /// first, as [`Client::create_with_parents`]; retries transient failures, an unreachable
    /// master included, within `op_deadline`. An existing directory is not reported here:
    /// appending to it fails.
    pub async fn ensure_file(&self, path: &str) -> Result<()> {
        let mut retry = self.retry();
        let create = CreateFileRequest {
            path: path.into(),
            replication: 0,
            first_chunk: false,
        };
        let mut made_parents = false;
        loop {
            let created = self
                .ask(&mut retry, |mut m| {
                    let req = create.clone();
                    async move { m.create(req).await }
                })
                .await;
            match created {
                Ok(_) | Err(ClientError::AlreadyExists(_)) => return Ok(()),
                Err(ClientError::NotFound(_)) if !made_parents => {
                    // `mkdir -p` is idempotent, so it retries like the create.
                    let mkdir = MkdirRequest {
                        path: parent(path).into(),
                        parents: true,
                    };
                    self.ask(&mut retry, |mut m| {
                        let req = mkdir.clone();
                        async move { m.mkdir(req).await }
                    })
                    .await?;
                    made_parents = true;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Deletes `path` (a directory's contents too with `recursive`).
    pub async fn delete(&self, path: &str, recursive: bool) -> Result<()> {
        let req = DeleteRequest {
            path: path.into(),
            recursive,
        };
        self.mutate(|mut m| {
            let req = req.clone();
            async move { m.delete(req).await }
        })
        .await?;
        self.forget(path);
        Ok(())
    }

    /// Renames `src` to `dst` atomically; fails if `dst` exists.
    pub async fn rename(&self, src: &str, dst: &str) -> Result<()> {
        let req = RenameRequest {
            src: src.into(),
            dst: dst.into(),
        };
        self.mutate(|mut m| {
            let req = req.clone();
            async move { m.rename(req).await }
        })
        .await?;
        self.forget(src);
        Ok(())
    }

    /// The entries of directory `path` (a file is `FailedPrecondition`: not a directory).
    /// Reads retry while the master is unavailable, up to `op_deadline`; mutations do not,
    /// since a lost reply would make their retry ambiguous.
    pub async fn list(&self, path: &str) -> Result<Vec<Entry>> {
        let req = ListRequest { path: path.into() };
        let r = self
            .ask(&mut self.retry(), |mut m| {
                let req = self.read_request(req.clone());
                async move { m.list(req).await }
            })
            .await?;
        Ok(r.entries.into_iter().map(Entry::from).collect())
    }

    /// What the namespace says of `path` (retried like [`Client::list`]).
    pub async fn stat(&self, path: &str) -> Result<Entry> {
        let req = StatRequest { path: path.into() };
        let r = self
            .ask(&mut self.retry(), |mut m| {
                let req = self.read_request(req.clone());
                async move { m.stat(req).await }
            })
            .await?;
        Ok(Entry::try_from(r)?)
    }

    /// A namespace read, marked as allowed to be stale when the configuration says so.
    fn read_request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        if self.inner.cfg.stale_reads {
            req.metadata_mut().insert(
                gfs_host::STALE_HEADER,
                tonic::metadata::MetadataValue::from_static("1"),
            );
        }
        req
    }

    /// [`Client::ask`] for the master's Admin service, with a fresh backoff.
    pub(crate) async fn ask_admin<T, F, Fut>(&self, call: F) -> Result<T>
    where
        F: Fn(AdminClient<Masters>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        ask_with(&self.inner.admin, &mut self.retry(), call).await
    }

    /// The cluster summary, every chunkserver and recent events (`gfs admin report`).
    pub async fn report(&self) -> Result<ClusterReport> {
        let r = self
            .ask_admin(|mut a| async move { a.report(ReportRequest {}).await })
            .await?;
        Ok(ClusterReport::try_from(r)?)
    }

    /// The health of every file at or under `path` (`gfs fsck`).
    pub async fn fsck(&self, path: &str) -> Result<FsckReport> {
        let asked = path.to_string();
        let r = self
            .ask_admin(|mut a| {
                let path = asked.clone();
                async move { a.fsck(FsckRequest { path }).await }
            })
            .await?;
        Ok(FsckReport::from_reply(path, r))
    }

    /// Starts draining chunkserver `id` (or asks again how far it got), or with `cancel` stops
    /// draining it; returns how many of its chunks still lack the goal elsewhere (0: safe to
    /// stop it; always 0 when cancelling).
    pub async fn decommission(&self, id: &str, cancel: bool) -> Result<u64> {
        let id = id.to_string();
        let reply = self
            .ask_admin(|mut a| {
                let id = id.clone();
                async move { a.decommission(DecommissionRequest { id, cancel }).await }
            })
            .await?;
        Ok(reply.remaining)
    }

    /// Adds master `id` at `addr` (running, started to join) to the replicated group; returns
    /// the group once it votes.
    pub async fn add_master(&self, id: u64, addr: &str) -> Result<Vec<MasterStatus>> {
        let addr = addr.to_string();
        let reply = self
            .ask_admin(|mut a| {
                let addr = addr.clone();
                async move { a.add_master(AddMasterRequest { id, addr }).await }
            })
            .await?;
        membership(reply)
    }

    /// Removes master `id` from the replicated group; returns the group without it.
    pub async fn remove_master(&self, id: u64) -> Result<Vec<MasterStatus>> {
        let reply = self
            .ask_admin(|mut a| async move { a.remove_master(RemoveMasterRequest { id }).await })
            .await?;
        membership(reply)
    }
}

/// The group of masters a membership change answered with.
fn membership(reply: gfs_proto::v1::MembershipReply) -> Result<Vec<MasterStatus>> {
    Ok(reply
        .masters
        .into_iter()
        .map(MasterStatus::try_from)
        .collect::<std::result::Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::parent;

    #[test]
    fn parents_of_absolute_paths() {
        assert_eq!(parent("/logs/app"), "/logs");
        assert_eq!(parent("/a/b/c"), "/a/b");
        assert_eq!(parent("/app"), "/");
        assert_eq!(parent("/logs/app/"), "/logs");
        assert_eq!(parent("/"), "/");
    }
}
