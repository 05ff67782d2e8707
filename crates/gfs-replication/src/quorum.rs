//! The one fan-out helper of the replication plane, used for PREPARE, COMMIT and SEAL.

use std::future::Future;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use tokio::time::Instant;

/// Calls still running when a quorum call returned, each yielding its peer and outcome.
pub type Pending<P, T, E> = FuturesUnordered<BoxFuture<'static, (P, Result<T, E>)>>;

/// What [`call_quorum`] saw before it returned.
pub struct QuorumOutcome<P, T, E> {
    /// Peers whose call succeeded, with their results.
    pub ok: Vec<(P, T)>,
    /// Peers whose call failed, with their errors.
    pub failed: Vec<(P, E)>,
    /// Calls still running: the caller decides whether to drive them (to learn which peers
    /// lag) or to drop them.
    pub pending: Pending<P, T, E>,
}

impl<P, T, E> QuorumOutcome<P, T, E> {
    /// Whether at least `need` calls succeeded.
    pub fn reached(&self, need: usize) -> bool {
        self.ok.len() >= need
    }
}

/// Calls `call(peer)` for every peer at once and returns as soon as `need` calls have
/// succeeded, as soon as `need` can no longer be reached, or at `deadline`, whichever comes
/// first.
///
/// Contract: it never waits for more answers than the decision needs. Calls still running
/// when it returns are handed back in [`QuorumOutcome::pending`] untouched (not cancelled), so
/// slow peers can still be tracked; a call that misses the deadline is neither `ok` nor
/// `failed`. With `need == 0` it returns at once.
pub async fn call_quorum<P, T, E, F, Fut>(
    peers: impl IntoIterator<Item = P>,
    need: usize,
    deadline: Instant,
    call: F,
) -> QuorumOutcome<P, T, E>
where
    P: Clone + Send + 'static,
    T: Send + 'static,
    E: Send + 'static,
    F: Fn(P) -> Fut,
    Fut: Future<Output = Result<T, E>> + Send + 'static,
{
    let pending: Pending<P, T, E> = FuturesUnordered::new();
    for peer in peers {
        let fut = call(peer.clone());
        pending.push(Box::pin(async move { (peer, fut.await) }));
    }
    await_quorum(pending, need, deadline).await
}

/// Like [`call_quorum`], over calls already started (for example a PREPARE chained into its
/// COMMIT), with the same contract.
pub async fn await_quorum<P, T, E>(
    mut pending: Pending<P, T, E>,
    need: usize,
    deadline: Instant,
) -> QuorumOutcome<P, T, E> {
    let total = pending.len();
    let mut out = QuorumOutcome {
        ok: Vec::new(),
        failed: Vec::new(),
        pending: FuturesUnordered::new(),
    };
    let sleep = tokio::time::sleep_until(deadline);
    tokio::pin!(sleep);
    while out.ok.len() < need && total - out.failed.len() >= need {
        tokio::select! {
            next = pending.next() => match next {
                Some((peer, Ok(v))) => out.ok.push((peer, v)),
                Some((peer, Err(e))) => out.failed.push((peer, e)),
                None => break,
            },
            _ = &mut sleep => break,
        }
    }
    out.pending = pending;
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use super::*;

    /// Peer `(id, delay_ms, succeeds)`.
    type Peer = (u32, u64, bool);

    async fn run(peers: Vec<Peer>, need: usize, deadline_ms: u64) -> QuorumOutcome<Peer, u32, u32> {
        call_quorum(
            peers,
            need,
            Instant::now() + Duration::from_millis(deadline_ms),
            |(id, delay, good)| async move {
                tokio::time::sleep(Duration::from_millis(delay)).await;
                if good { Ok(id) } else { Err(id) }
            },
        )
        .await
    }

    #[tokio::test(start_paused = true)]
    async fn returns_once_the_quorum_is_reached() {
        let out = run(
            vec![(1, 10, true), (2, 20, true), (3, 5_000, true)],
            2,
            60_000,
        )
        .await;
        assert!(out.reached(2));
        assert_eq!(
            out.ok.iter().map(|(_, v)| *v).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!(
            out.pending.len(),
            1,
            "the slow call is handed back, not awaited"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_as_soon_as_the_quorum_is_impossible() {
        let start = Instant::now();
        let out = run(
            vec![(1, 10, false), (2, 20, false), (3, 5_000, true)],
            2,
            60_000,
        )
        .await;
        assert!(!out.reached(2));
        assert_eq!(out.failed.len(), 2);
        assert!(start.elapsed() < Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_bounds_the_wait() {
        let start = Instant::now();
        let mut out = run(vec![(1, 10, true), (2, 10_000, true)], 2, 500).await;
        assert!(!out.reached(2));
        assert_eq!(out.ok.len(), 1);
        assert!(start.elapsed() < Duration::from_millis(600));
        // The late call still completes for whoever drives it.
        let (peer, res) = out.pending.next().await.unwrap();
        assert_eq!((peer.0, res), (2, Ok(2)));
    }

    #[tokio::test(start_paused = true)]
    async fn need_zero_returns_at_once() {
        let out = run(vec![(1, 10, true)], 0, 1_000).await;
        assert!(out.reached(0));
        assert_eq!(out.pending.len(), 1);
    }
}
