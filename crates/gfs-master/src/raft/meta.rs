//! The metadata of one master of a replicated group ([`Replicated`]), behind
//! [`crate::MetaStore`]: mutations proposed through Raft on the leader, reads from the
//! entries applied here.

use openraft::Raft;
use openraft::error::{ClientWriteError, RaftError};

use super::{MasterNode, Proposal, StateMachine, TypeConfig};
use crate::error::{MasterError, Result};
use crate::namespace::Namespace;
use crate::record::Op;

/// One master's view of the replicated metadata: its Raft and its state machine.
#[derive(Clone)]
pub struct Replicated {
    raft: Raft<TypeConfig>,
    sm: StateMachine,
}

impl Replicated {
    /// The metadata behind `raft`, whose state machine is `sm`.
    pub fn new(raft: Raft<TypeConfig>, sm: StateMachine) -> Replicated {
        Replicated { raft, sm }
    }

    /// Proposes `op` and returns once a majority of masters holds it durably and it has
    /// applied here: the chunks a delete removed, or why it did not apply (then it changed
    /// nothing anywhere). On a master that does not lead: `NotLeader`.
    pub async fn mutate(&self, op: Op) -> Result<Vec<u64>> {
        match self.raft.client_write(Proposal { op }).await {
            Ok(r) => r.data,
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(MasterError::NotLeader {
                    leader: f.leader_node.map(|n| n.addr),
                })
            }
            Err(e) => Err(MasterError::Unavailable(format!(
                "the replicated log did not take the mutation: {e}"
            ))),
        }
    }

    /// Adds master `id` at `addr`: a learner that is sent the log (or a snapshot) until it
    /// holds it, then a voter (a joint membership change, committed on majorities of both).
    /// Adding a master that is in the group at `addr` already changes nothing (a retry).
    pub async fn add_master(&self, id: u64, addr: String) -> Result<()> {
        let voters = self.voters();
        let known = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone());
        if voters.contains(&id) && known.as_deref() == Some(addr.as_str()) {
            return Ok(());
        }
        if id == 0 || voters.contains(&id) {
            return Err(MasterError::InvalidArgument(format!(
                "master {id} is {}",
                if id == 0 {
                    "not a number masters use".to_string()
                } else {
                    format!("in the group already, at {}", known.unwrap_or_default())
                }
            )));
        }
        self.raft
            .add_learner(id, MasterNode { addr: addr.clone() }, true)
            .await
            .map_err(changing)?;
        let mut next = voters;
        next.insert(id);
        self.raft
            .change_membership(next, false)
            .await
            .map_err(changing)?;
        tracing::info!(id, %addr, "master added to the group");
        Ok(())
    }

    /// Removes master `id` from the voters and the group.
    pub async fn remove_master(&self, id: u64) -> Result<()> {
        let mut next = self.voters();
        if !next.remove(&id) {
            return Err(MasterError::NotFound(format!(
                "master {id} is not in the group"
            )));
        }
        if next.is_empty() {
            return Err(MasterError::InvalidArgument(
                "the last master of the group cannot be removed".into(),
            ));
        }
        self.raft
            .change_membership(next, false)
            .await
            .map_err(changing)?;
        tracing::info!(id, "master removed from the group");
        Ok(())
    }

    /// The masters that vote now.
    fn voters(&self) -> std::collections::BTreeSet<u64> {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect()
    }

    /// Runs `f` on the namespace as the entries applied here left it (committed: on a
    /// majority of masters).
    pub fn read<T>(&self, f: impl FnOnce(&Namespace) -> T) -> T {
        self.sm.read(f)
    }

    /// Every master of the group as this one sees it: its own newest entry, and on the leader
    /// what each other master holds (a follower knows only itself).
    pub fn masters(&self) -> Vec<crate::report::MasterStatus> {
        let m = self.raft.metrics().borrow().clone();
        let newest = m.last_log_index.unwrap_or(0);
        let applied_index = m.last_applied.map_or(0, |l| l.index);
        m.membership_config
            .nodes()
            .map(|(id, node)| {
                let matched = if *id == m.id {
                    Some(newest)
                } else {
                    m.replication
                        .as_ref()
                        .and_then(|r| r.get(id).cloned().flatten())
                        .map(|l| l.index)
                };
                crate::report::MasterStatus {
                    id: *id,
                    addr: node.addr.clone(),
                    leader: m.current_leader == Some(*id),
                    term: m.current_term,
                    matched_index: matched.unwrap_or(0),
                    lag: matched.map_or(newest, |i| newest.saturating_sub(i)),
                    applied_index,
                }
            })
            .collect()
    }

    /// The index of the newest entry applied here.
    pub fn applied(&self) -> u64 {
        self.raft
            .metrics()
            .borrow()
            .last_applied
            .map(|l| l.index)
            .unwrap_or(0)
    }
}

/// A membership change's failure: `NotLeader` on a master that does not lead.
fn changing(e: RaftError<u64, ClientWriteError<u64, MasterNode>>) -> MasterError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => MasterError::NotLeader {
            leader: f.leader_node.map(|n| n.addr),
        },
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => {
            MasterError::InvalidArgument(format!("the group cannot change so: {c}"))
        }
        e => MasterError::Unavailable(format!("the group did not change: {e}")),
    }
}
