//! An in-memory [`ReplicaTransport`] for tests: [`MemTransport`] delivers the primary's calls to
//! real [`Participant`]s (over real chunk stores), with faults injected per node and per call.
//!
//! Built for this crate's unit tests and, with the feature `testing`, for other crates' tests.
//! What it is for: driving a [`Coordinator`](crate::Coordinator)'s two-phase commit, quorum and
//! seal through exact interleavings (a COMMIT lost on one node, a reply lost after the call
//! applied, a slow PREPARE) in one process, in milliseconds, where the process-level fault
//! tests need real servers, failpoints and SIGKILL.
//!
//! Fidelity. A call runs the same domain code as the gRPC service ([`Participant::prepare`],
//! `commit`, `abort`, `seal_at`), and a refusal comes back as the same
//! [`ReplicationError::Peer`] message `Peers` would give (`"{code:?}: {message}"`). A call
//! that reached its node runs to its end even when the caller stopped waiting (as a message
//! already sent does). Unlike a gRPC session, PREPAREs to one node are not serialized in
//! sending order: each call is its own task, as though every PREPARE took its own stream.

use gfs_util::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use gfs_storage::{ChunkHandle, OpId, StageRequest};
use parking_lot::Mutex;

use crate::error::{ReplicationError, Result};
use crate::participant::{Participant, refusal};
use crate::transport::ReplicaTransport;

/// The kinds of call the primary makes to a secondary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Call {
    /// PREPARE (READY phase).
    Prepare,
    /// COMMIT.
    Commit,
    /// WRITE (the one-round append: PREPARE and COMMIT in one call).
    Write,
    /// ABORT.
    Abort,
    /// SEAL.
    Seal,
    /// The quorum's length.
    QuorumLength,
}

/// What happens to a call a fault applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The call never reaches the node and fails at once (a refused connection).
    Fail,
    /// The call is applied on the node, then its reply is lost: the caller gets an error.
    LoseReply,
    /// The call reaches the node after this long (it is applied then, even if the caller's
    /// deadline passed meanwhile: a slow replica).
    Delay(Duration),
    /// The call never reaches the node and nothing answers: the caller waits out its deadline.
    Hang,
}

/// A fault with how many more calls it applies to (`None`: until [`MemTransport::heal`]).
struct Rule {
    call: Option<Call>,
    fault: Fault,
    left: Option<usize>,
}

struct Node {
    participant: Arc<Participant>,
    rules: Vec<Rule>,
    /// Calls that reached the participant, by kind.
    delivered: HashMap<Call, u64>,
}

/// An in-memory replication plane: nodes by address, each a real [`Participant`].
#[derive(Default)]
pub struct MemTransport {
    nodes: Arc<Mutex<HashMap<String, Node>>>,
}

fn peer_err(addr: &str, message: impl ToString) -> ReplicationError {
    ReplicationError::Peer {
        addr: addr.to_string(),
        message: message.to_string(),
    }
}

impl MemTransport {
    /// A plane without nodes.
    pub fn new() -> MemTransport {
        MemTransport::default()
    }

    /// Adds (or replaces) the node at `addr`, served by `participant`; its faults are cleared.
    pub fn add(&self, addr: impl Into<String>, participant: Arc<Participant>) {
        self.nodes.lock().insert(
            addr.into(),
            Node {
                participant,
                rules: Vec::new(),
                delivered: HashMap::default(),
            },
        );
    }

    /// The next `times` calls of kind `call` to `addr` meet `fault` (after faults injected
    /// earlier are used up). Panics when no node is at `addr`, as do `always` and `down`.
    pub fn inject(&self, addr: &str, call: Call, fault: Fault, times: usize) {
        self.rule(addr, Some(call), fault, Some(times));
    }

    /// Every call of kind `call` to `addr` meets `fault` until [`MemTransport::heal`].
    pub fn always(&self, addr: &str, call: Call, fault: Fault) {
        self.rule(addr, Some(call), fault, None);
    }

    /// Takes `addr` down: every call to it fails at once until [`MemTransport::heal`].
    pub fn down(&self, addr: &str) {
        self.rule(addr, None, Fault::Fail, None);
    }

    /// Clears every fault of `addr`.
    pub fn heal(&self, addr: &str) {
        if let Some(n) = self.nodes.lock().get_mut(addr) {
            n.rules.clear();
        }
    }

    /// How many calls of kind `call` reached `addr`'s participant (refused ones included).
    pub fn delivered(&self, addr: &str, call: Call) -> u64 {
        self.nodes
            .lock()
            .get(addr)
            .and_then(|n| n.delivered.get(&call).copied())
            .unwrap_or(0)
    }

    fn rule(&self, addr: &str, call: Option<Call>, fault: Fault, left: Option<usize>) {
        let mut nodes = self.nodes.lock();
        let Some(n) = nodes.get_mut(addr) else {
            panic!("MemTransport: no node at {addr}");
        };
        n.rules.push(Rule { call, fault, left });
    }

    /// The node's participant and the fault this call meets, if any (using it up).
    fn route(&self, addr: &str, call: Call) -> Result<(Arc<Participant>, Option<Fault>)> {
        let mut nodes = self.nodes.lock();
        let node = nodes
            .get_mut(addr)
            .ok_or_else(|| peer_err(addr, "no such node"))?;
        let mut fault = None;
        for r in &mut node.rules {
            if r.call.is_some_and(|c| c != call) || r.left == Some(0) {
                continue;
            }
            if let Some(n) = r.left.as_mut() {
                *n -= 1;
            }
            fault = Some(r.fault);
            break;
        }
        node.rules.retain(|r| r.left != Some(0));
        Ok((Arc::clone(&node.participant), fault))
    }

    /// Delivers one call: `apply` runs on the node (in its own task, so it finishes even if
    /// the caller gives up) unless the fault keeps it away; the caller waits up to `timeout`.
    async fn deliver<T, F>(
        &self,
        addr: &str,
        call: Call,
        timeout: Duration,
        apply: impl FnOnce(Arc<Participant>) -> F,
    ) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T>> + Send + 'static,
    {
        let (participant, fault) = self.route(addr, call)?;
        let late = || peer_err(addr, format!("no answer within {timeout:?}"));
        let delay = match fault {
            Some(Fault::Fail) => return Err(peer_err(addr, "unreachable (injected)")),
            Some(Fault::Hang) => {
                tokio::time::sleep(timeout).await;
                return Err(late());
            }
            Some(Fault::Delay(d)) => d,
            Some(Fault::LoseReply) | None => Duration::ZERO,
        };
        let work = apply(participant);
        let nodes = Arc::clone(&self.nodes);
        let at = addr.to_string();
        let task = tokio::spawn(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if let Some(n) = nodes.lock().get_mut(&at) {
                *n.delivered.entry(call).or_insert(0) += 1;
            }
            work.await
        });
        let reply = match tokio::time::timeout(timeout, task).await {
            Err(_) => return Err(late()),
            Ok(Err(e)) => return Err(peer_err(addr, format!("the call panicked: {e}"))),
            Ok(Ok(reply)) => reply,
        };
        if fault == Some(Fault::LoseReply) {
            return Err(peer_err(addr, "the reply was lost (injected)"));
        }
        reply.map_err(|e| {
            let s = refusal(e);
            peer_err(addr, format!("{:?}: {}", s.code(), s.message()))
        })
    }
}

impl ReplicaTransport for MemTransport {
    fn prepare<'a>(
        &'a self,
        addr: &'a str,
        append: StageRequest,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(
            self.deliver(addr, Call::Prepare, timeout, move |p| async move {
                p.prepare(append).await
            }),
        )
    }

    fn write<'a>(
        &'a self,
        addr: &'a str,
        append: StageRequest,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(
            self.deliver(addr, Call::Write, timeout, move |p| async move {
                p.write(append).await
            }),
        )
    }

    fn commit<'a>(
        &'a self,
        addr: &'a str,
        handle: ChunkHandle,
        version: u64,
        op: OpId,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(
            self.deliver(addr, Call::Commit, timeout, move |p| async move {
                p.commit(handle, version, op).await
            }),
        )
    }

    fn abort<'a>(
        &'a self,
        addr: &'a str,
        handle: ChunkHandle,
        version: u64,
        op: OpId,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(
            self.deliver(addr, Call::Abort, timeout, move |p| async move {
                p.abort(handle, version, op).map(|_| ())
            }),
        )
    }

    fn quorum_length<'a>(
        &'a self,
        addr: &'a str,
        handle: ChunkHandle,
        version: u64,
        length: u64,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(
            self.deliver(addr, Call::QuorumLength, timeout, move |p| async move {
                p.quorum_length(handle, version, length)
            }),
        )
    }

    fn seal<'a>(
        &'a self,
        addr: &'a str,
        handle: ChunkHandle,
        version: u64,
        length: u64,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Option<u64>>> {
        Box::pin(
            self.deliver(addr, Call::Seal, timeout, move |p| async move {
                p.seal_at(handle, version, length).await
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use gfs_storage::{ChunkStore, StoreConfig};
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::ParticipantConfig;

    const H: ChunkHandle = ChunkHandle(1);
    const T: Duration = Duration::from_millis(300);

    /// A plane with one node `n` over a fresh store holding chunk `H` at version 1.
    async fn plane() -> (tempfile::TempDir, MemTransport, Arc<ChunkStore>) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = StoreConfig {
            chunk_size: 1 << 20,
            ..StoreConfig::default()
        };
        let store = Arc::new(ChunkStore::open(dir.path(), cfg).unwrap());
        store.create(H, 1).await.unwrap();
        let net = MemTransport::new();
        let p = Participant::new(
            Arc::clone(&store),
            ParticipantConfig::default(),
            CancellationToken::new(),
        );
        net.add("n", Arc::new(p));
        (dir, net, store)
    }

    fn append(op: u64, offset: u64, len: usize) -> StageRequest {
        StageRequest {
            op: OpId(op),
            handle: H,
            version: 1,
            offset,
            data: vec![op as u8; len].into(),
        }
    }

    fn message(r: Result<impl std::fmt::Debug>) -> String {
        match r {
            Err(ReplicationError::Peer { addr, message }) => {
                assert_eq!(addr, "n");
                message
            }
            other => panic!("not a peer error: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_fault_meets_the_next_calls_of_its_kind_only_and_is_used_up() {
        let (_d, net, store) = plane().await;
        net.inject("n", Call::Prepare, Fault::Fail, 2);
        for _ in 0..2 {
            let m = message(net.prepare("n", append(1, 0, 10), T).await);
            assert!(m.contains("unreachable"), "{m}");
        }
        assert_eq!(net.delivered("n", Call::Prepare), 0);
        assert_eq!(store.stats().staged_bytes, 0);
        net.prepare("n", append(1, 0, 10), T).await.unwrap();
        assert_eq!(net.commit("n", H, 1, OpId(1), T).await.unwrap(), 10);
        assert_eq!(net.delivered("n", Call::Prepare), 1);
        assert_eq!(net.delivered("n", Call::Commit), 1);
        // Down until healed, whatever the call.
        net.down("n");
        message(net.seal("n", H, 1, 10, T).await);
        message(net.abort("n", H, 1, OpId(1), T).await);
        net.heal("n");
        assert_eq!(net.seal("n", H, 1, 10, T).await.unwrap(), None);
        assert!(store.info(H).unwrap().sealed);
    }

    #[tokio::test]
    async fn a_lost_reply_applies_a_hang_does_not_and_a_delay_applies_late() {
        let (_d, net, store) = plane().await;
        net.inject("n", Call::Prepare, Fault::LoseReply, 1);
        let m = message(net.prepare("n", append(1, 0, 10), T).await);
        assert!(m.contains("lost"), "{m}");
        assert_eq!(store.stats().staged_bytes, 10);
        net.inject("n", Call::Commit, Fault::Hang, 1);
        let start = tokio::time::Instant::now();
        let m = message(net.commit("n", H, 1, OpId(1), T).await);
        assert!(m.contains("no answer within"), "{m}");
        assert!(start.elapsed() >= T);
        assert_eq!(store.info(H).unwrap().committed_len, 0);
        assert_eq!(net.delivered("n", Call::Commit), 0);
        net.inject("n", Call::Commit, Fault::Delay(T * 2), 1);
        let m = message(net.commit("n", H, 1, OpId(1), T).await);
        assert!(m.contains("no answer within"), "{m}");
        assert_eq!(store.info(H).unwrap().committed_len, 0);
        let late = tokio::time::Instant::now() + Duration::from_secs(5);
        while store.info(H).unwrap().committed_len != 10 {
            assert!(
                tokio::time::Instant::now() < late,
                "the late COMMIT never applied"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_refusal_reads_as_it_would_over_grpc() {
        let (_d, net, _store) = plane().await;
        // A COMMIT of nothing staged: the store's NotStaged, which the service sends as
        // Aborted; a PREPARE at an old version: StaleVersion, FailedPrecondition.
        let m = message(net.commit("n", H, 1, OpId(9), T).await);
        assert!(m.starts_with("Aborted: "), "{m}");
        let mut old = append(2, 0, 10);
        old.version = 0;
        let m = message(net.prepare("n", old, T).await);
        assert!(m.starts_with("FailedPrecondition: "), "{m}");
        let r = net.commit("x", H, 1, OpId(9), T).await;
        assert!(
            matches!(&r, Err(ReplicationError::Peer { addr, .. }) if addr == "x"),
            "{r:?}"
        );
    }
}
