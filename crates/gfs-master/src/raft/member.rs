//! One master of a replicated group, opened from its data directory ([`Member`]): what the
//! master process, the tests and the benchmarks start alike.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use gfs_proto::v1::master_raft_server::MasterRaftServer;
use gfs_util::disk::Disk;
use openraft::{Config, Raft, SnapshotPolicy};

use super::{LogStore, MasterNode, RaftNet, RaftService, Replicated, StateMachine, TypeConfig};
use crate::error::{MasterError, Result};

/// The timing of a group's Raft.
#[derive(Clone, Copy, Debug)]
pub struct RaftTiming {
    /// How often the leader sends to each follower when idle.
    pub heartbeat: Duration,
    /// A follower that hears nothing from a leader this long (up to twice this, at random)
    /// stands for election.
    pub election_timeout: Duration,
    /// A snapshot (the namespace's checkpoint) after this many entries since the last.
    pub snapshot_every: u64,
}

impl RaftTiming {
    /// openraft's configuration for this timing.
    pub fn config(&self, cluster: &str) -> Result<Arc<Config>> {
        let ms = |d: Duration| d.as_millis().max(1) as u64;
        Config {
            cluster_name: cluster.to_string(),
            heartbeat_interval: ms(self.heartbeat),
            election_timeout_min: ms(self.election_timeout),
            election_timeout_max: 2 * ms(self.election_timeout),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_every.max(1)),
            ..Config::default()
        }
        .validate()
        .map(Arc::new)
        .map_err(|e| MasterError::InvalidArgument(format!("raft timing: {e}")))
    }
}

/// One master of a group: its Raft and the state machine its entries apply to.
#[derive(Clone)]
pub struct Member {
    /// The Raft of this master.
    pub raft: Raft<TypeConfig>,
    /// The namespace and chunk map the committed entries applied to.
    pub sm: StateMachine,
}

impl Member {
    /// Opens master `id`'s log and state machine under `dir` on `disk` and starts its Raft,
    /// reaching the others over `net`. `members` lists every master's address, master `i`
    /// at position `i - 1`; a master that never ran proposes that membership (every pristine
    /// master of a group does, with the same list, which is safe), unless it `join`s a group
    /// that runs (it then waits to be added: `Replicated::add_master`); one that ran keeps its
    /// own and stands for election only once it heard no leader for three election timeouts.
    pub async fn open(
        disk: Arc<dyn Disk>,
        dir: &Path,
        (id, members, join): (u64, &[String], bool),
        config: Arc<Config>,
        net: gfs_host::Net,
    ) -> Result<Member> {
        let (d, path) = (Arc::clone(&disk), dir.to_path_buf());
        let (log, sm) = gfs_host::blocking(&*disk, move || {
            Ok::<_, MasterError>((
                LogStore::open_on(Arc::clone(&d), &path)?,
                StateMachine::open_on(d, &path)?,
            ))
        })
        .await?;
        let raft = Raft::new(id, Arc::clone(&config), RaftNet::new(net), log, sm.clone())
            .await
            .map_err(|e| MasterError::Internal(format!("starting Raft: {e}")))?;
        let fatal = |e: &dyn std::fmt::Display| {
            MasterError::Internal(format!("forming the group of masters: {e}"))
        };
        if raft.is_initialized().await.map_err(|e| fatal(&e))? {
            // A master that ran before stands for election only once it has had time to hear
            // the leader: restarted, it would otherwise raise the term past a leader that is
            // alive and depose it (openraft 0.9 has no pre-vote).
            raft.runtime_config().elect(false);
            let (r, wait) = (raft.clone(), 3 * config.election_timeout_max);
            tokio::spawn(async move {
                let heard = r
                    .wait(Some(Duration::from_millis(wait)))
                    .metrics(|m| m.current_leader.is_some(), "a leader heard")
                    .await;
                if heard.is_err() {
                    tracing::info!("no leader heard since the start: standing for election");
                }
                r.runtime_config().elect(true);
            });
        } else if join {
            tracing::info!(id, "a new master: waiting to be added to the group");
        } else {
            let nodes: BTreeMap<u64, MasterNode> = members
                .iter()
                .enumerate()
                .map(|(i, a)| (i as u64 + 1, MasterNode { addr: a.clone() }))
                .collect();
            match raft.initialize(nodes).await {
                Ok(()) => tracing::info!(id, ?members, "a new group of masters"),
                // Another master's proposal reached this one first.
                Err(openraft::error::RaftError::APIError(
                    openraft::error::InitializeError::NotAllowed(_),
                )) => {}
                Err(e) => return Err(fatal(&e)),
            }
        }
        Ok(Member { raft, sm })
    }

    /// The gRPC service through which the other masters reach this one's Raft.
    pub fn service(&self) -> MasterRaftServer<RaftService> {
        MasterRaftServer::new(RaftService::new(self.raft.clone()))
            .max_decoding_message_size(gfs_proto::MAX_MESSAGE)
            .max_encoding_message_size(gfs_proto::MAX_MESSAGE)
    }

    /// The metadata as this master sees it, for a [`crate::MetaStore`].
    pub fn replicated(&self) -> Replicated {
        Replicated::new(self.raft.clone(), self.sm.clone())
    }
}
