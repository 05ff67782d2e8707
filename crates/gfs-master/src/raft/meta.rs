//! The metadata of one master of a replicated group ([`Replicated`]), behind
//! [`crate::MetaStore`]: mutations proposed through Raft on the leader, reads from the
//! entries applied here.
//!
//! **Group commit.** One entry is being committed at a time; the mutations that arrive
//! meanwhile wait, and go together as the next entry (at most [`MAX_BATCH`]), so a round of
//! fsyncs on a majority of masters carries every mutation that was waiting for it, as the
//! single master's log does. Each is applied on its own and answered with its own result. The
//! entry is proposed by a task of its own, so a caller that stops waiting never leaves the
//! others without an answer.

use std::sync::Arc;

use openraft::Raft;
use openraft::error::{ClientWriteError, RaftError};
use parking_lot::Mutex;
use tokio::sync::{Notify, oneshot};
use tokio::time::{Duration, Instant};

use super::{MasterNode, Proposal, StateMachine, TypeConfig};
use crate::error::{MasterError, Result};
use crate::namespace::Namespace;
use crate::record::Op;

/// The most mutations one entry carries.
pub const MAX_BATCH: usize = 512;

/// Entries being committed at once (each carrying the mutations that arrived before it). Two
/// measured worse than one (entries of 5, 6,917 against 7,659 creates/s over gRPC before
/// entries gathered their callers; `GFS_BENCH_ONLY=group cargo bench -p gfs-master`): openraft 0.9
/// has one replication call in flight per follower, so a second entry waits for the round of
/// the first anyway.
pub const IN_FLIGHT: usize = 1;

/// The longest the next entry waits for the callers the last one answered.
pub const GATHER_MAX: Duration = Duration::from_millis(1);

/// A mutation waiting for the next entry, and where its answer goes.
type Waiting = (Op, oneshot::Sender<Result<Vec<u64>>>);

/// Mutations waiting for the next entry, and whether an entry is being committed.
#[derive(Default)]
struct Queue {
    waiting: Vec<Waiting>,
    proposing: usize,
}

/// The queue, and a wake-up for a proposer gathering the next entry.
#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    arrived: Notify,
}

impl Shared {
    /// Queues `w` for the next entry; true if the caller is to start a proposer.
    fn push(&self, w: Waiting) -> bool {
        let start = {
            let mut q = self.queue.lock();
            q.waiting.push(w);
            let start = q.proposing < IN_FLIGHT;
            q.proposing += usize::from(start);
            start
        };
        self.arrived.notify_one();
        start
    }

    /// Waits until `carried` more mutations than the `before` waiting when the last entry was
    /// answered have arrived, or until `until`.
    async fn gather(&self, carried: usize, before: usize, until: Instant) {
        loop {
            let arrived = self.arrived.notified();
            if self.queue.lock().waiting.len() >= before + carried {
                return;
            }
            if tokio::time::timeout_at(until, arrived).await.is_err() {
                return;
            }
        }
    }
}

/// One master's view of the replicated metadata: its Raft and its state machine.
#[derive(Clone)]
pub struct Replicated {
    raft: Raft<TypeConfig>,
    sm: StateMachine,
    shared: Arc<Shared>,
}

impl Replicated {
    /// The metadata behind `raft`, whose state machine is `sm`.
    pub fn new(raft: Raft<TypeConfig>, sm: StateMachine) -> Replicated {
        Replicated {
            raft,
            sm,
            shared: Arc::default(),
        }
    }

    /// Proposes `op` and returns once a majority of masters holds it durably and it has
    /// applied here: the chunks a delete removed, or why it did not apply (then it changed
    /// nothing anywhere). On a master that does not lead: `NotLeader`.
    pub async fn mutate(&self, op: Op) -> Result<Vec<u64>> {
        let (tx, rx) = oneshot::channel();
        if self.shared.push((op, tx)) {
            tokio::spawn(self.clone().propose_waiting());
        }
        rx.await.unwrap_or_else(|_| {
            Err(MasterError::Unavailable(
                "the master stopped before the mutation was answered".into(),
            ))
        })
    }

    /// Proposes the waiting mutations, an entry at a time, until none waits.
    ///
    /// **Gathering.** Callers answered by one entry come back with their next mutation a
    /// moment later, while those that arrived during the entry are waiting already: started at
    /// once, the next entry would carry only the latter, and two halves of the callers would
    /// take turns, each waiting two rounds (measured: 16 callers, entries of 8). So the next
    /// entry waits until as many more mutations have arrived as the last one carried, for at
    /// most the last entry's round and [`GATHER_MAX`] (tokio's timer rounds that up to its
    /// next millisecond): PostgreSQL's `commit_delay` with `commit_siblings`, counted from
    /// what the last entry carried rather than set. A lone caller never waits: its next
    /// mutation is the one the entry waits for.
    async fn propose_waiting(self) {
        let mut last: Option<(usize, usize, Instant)> = None;
        loop {
            if let Some((carried, before, until)) = last.take() {
                self.shared.gather(carried, before, until).await;
            }
            let batch: Vec<Waiting> = {
                let mut q = self.shared.queue.lock();
                if q.waiting.is_empty() {
                    q.proposing -= 1;
                    return;
                }
                let n = q.waiting.len().min(MAX_BATCH);
                q.waiting.drain(..n).collect()
            };
            let (ops, answers): (Vec<Op>, Vec<_>) = batch.into_iter().unzip();
            let n = ops.len();
            let t0 = Instant::now();
            let written = self.raft.client_write(Proposal { ops }).await;
            let round = t0.elapsed();
            let before = self.shared.queue.lock().waiting.len();
            last = Some((n, before, Instant::now() + round.min(GATHER_MAX)));
            match written {
                Ok(r) if r.data.len() == n => {
                    for (tx, applied) in answers.into_iter().zip(r.data) {
                        let _ = tx.send(applied);
                    }
                }
                Ok(r) => {
                    let why = format!("{} results for {n} mutations", r.data.len());
                    for tx in answers {
                        let _ = tx.send(Err(MasterError::Internal(why.clone())));
                    }
                }
                Err(e) => {
                    for tx in answers {
                        let _ = tx.send(Err(refused(&e)));
                    }
                }
            }
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
        self.snapshot_before_the_first_join().await?;
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

    /// Before a group that never took a snapshot grows, takes one and purges the log it
    /// covers: a new master then starts from the snapshot, which holds what a group of one
    /// started from (a single master's namespace brought in as its seed) as well as every
    /// entry since; the log alone would miss the seed.
    async fn snapshot_before_the_first_join(&self) -> Result<()> {
        let m = self.raft.metrics().borrow().clone();
        if m.snapshot.is_some() {
            return Ok(());
        }
        let fatal = |e: &dyn std::fmt::Display| MasterError::Unavailable(format!("snapshot: {e}"));
        self.raft
            .trigger()
            .snapshot()
            .await
            .map_err(|e| fatal(&e))?;
        let taken = self
            .raft
            .wait(Some(std::time::Duration::from_secs(30)))
            .metrics(|m| m.snapshot.is_some(), "a snapshot")
            .await
            .map_err(|e| fatal(&e))?;
        if let Some(s) = taken.snapshot {
            self.raft
                .trigger()
                .purge_log(s.index)
                .await
                .map_err(|e| fatal(&e))?;
            self.raft
                .wait(Some(std::time::Duration::from_secs(30)))
                .metrics(
                    |m| m.purged.is_some_and(|p| p.index >= s.index),
                    "the log purged up to the snapshot",
                )
                .await
                .map_err(|e| fatal(&e))?;
        }
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

/// A membership change's failure: as [`refused`], or a change the group cannot make.
fn changing(e: RaftError<u64, ClientWriteError<u64, MasterNode>>) -> MasterError {
    match e {
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => {
            MasterError::InvalidArgument(format!("the group cannot change so: {c}"))
        }
        e => refused(&e),
    }
}

/// Why the log did not take an entry: `NotLeader` on a master that does not lead (the entry
/// was not appended, or was cut by a new leader), else unavailable.
fn refused(e: &RaftError<u64, ClientWriteError<u64, MasterNode>>) -> MasterError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => MasterError::NotLeader {
            leader: f.leader_node.as_ref().map(|n| n.addr.clone()),
        },
        e => MasterError::Unavailable(format!("the replicated log refused: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::PathOp;

    fn op(i: usize) -> Waiting {
        let (tx, _) = oneshot::channel();
        let path = format!("/d{i}");
        (Op::Mkdir(PathOp { path, mtime_ms: 0 }), tx)
    }

    fn waiting(s: &Shared) -> usize {
        s.queue.lock().waiting.len()
    }

    #[tokio::test(start_paused = true)]
    async fn the_next_entry_waits_for_the_callers_the_last_one_answered() {
        let s = Arc::new(Shared::default());
        // Two arrived during the last entry, which carried three.
        assert!(s.push(op(0)));
        assert!(!s.push(op(1)));
        let back = Arc::clone(&s);
        tokio::spawn(async move {
            for i in 2..5 {
                tokio::time::sleep(Duration::from_millis(1)).await;
                back.push(op(i));
            }
        });
        let t = Instant::now();
        s.gather(3, 2, t + Duration::from_millis(10)).await;
        assert_eq!(waiting(&s), 5, "the three answered callers are back");
        assert_eq!(t.elapsed(), Duration::from_millis(3), "not a moment longer");
    }

    #[tokio::test(start_paused = true)]
    async fn the_next_entry_waits_no_longer_than_its_bound() {
        let s = Shared::default();
        s.push(op(0));
        let t = Instant::now();
        s.gather(16, 1, t + Duration::from_millis(4)).await;
        assert_eq!(t.elapsed(), Duration::from_millis(4));
        assert_eq!(waiting(&s), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_caller_s_next_mutation_goes_at_once() {
        let s = Arc::new(Shared::default());
        let back = Arc::clone(&s);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(2)).await;
            back.push(op(0));
        });
        let t = Instant::now();
        s.gather(1, 0, t + Duration::from_millis(10)).await;
        assert_eq!(t.elapsed(), Duration::from_millis(2));
    }
}
