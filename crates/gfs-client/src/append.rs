//! Record appends on [`Client`].
//!
//! # Record appends ([`Client::append`])
//!
//! One random op id serves every retry. The lease of the file's last chunk is cached per client
//! (used while it has more than a second to run; dropped on any error, and by a delete or a
//! rename), else asked of the master (`AppendChunk`). `ChunkFull` asks again (the master has
//! the seal). Retriable errors (transport, Busy, NotPrimary, LeaseExpired, StaleVersion,
//! NotFound, QuorumNotReached) back off and ask again until `op_deadline` (`GaveUp`). The
//! primary's local `NotStaged`, `Hole` and `Overlap` reach the client as `Unavailable`
//! (retriable, same op id).
//!
//! Every chunk an attempt reached without a definite answer stays uncertain. Before the op goes
//! to another chunk, each uncertain chunk's replicas (those the attempt reached, primary first,
//! then those the master lists now) are asked (`resolve`): an offset ends the append (a
//! primary's, confirmed on a quorum, or the same one from a quorum of replicas sealed with the
//! op, `SealedWith`: one sealed replica's word is not enough, as the master may have sealed the
//! chunk at a length it alone held before its copies landed), `ChunkFull` at one length from a
//! quorum of them, or from one at the length the master's log sealed the chunk at (sealed there
//! without the op), clears that chunk (one at another length is not enough: a primary fenced
//! in the middle of its seal may have sealed one secondary, at a length the master, not
//! hearing from that one, did not seal the chunk at), anything else keeps it and the client
//! waits. So an op is never in two chunks (I4); a `GaveUp` may leave it committed once.
//! `OpRetentionExpired` from an uncertain chunk (on the APPEND, or in `resolve` when no other
//! replica of it still knows) ends the append with `OutcomeUnknown` (at most once, sent nowhere
//! else); from a chunk no earlier attempt left uncertain it counts as `ChunkFull` (the op cannot
//! be there). Either needs an append retrying for longer than the op retention (10 minutes).
//!

use std::sync::Arc;

use bytes::Bytes;
use gfs_dataplane::DataError;
use gfs_proto::v1::{AppendChunkRequest, ChunkLease};

use crate::client::*;
use crate::error::{ClientError, Result};
use crate::model::*;

/// Whether an append or read may succeed after asking the master again.
/// What a replica says about an op an earlier attempt may have committed.
pub(crate) enum OpAnswer {
    /// It is in the chunk, at this offset.
    At(u64),
    /// The chunk is sealed without it.
    NotThere,
    /// The chunk no longer knows its op ids (sealed longer than the op retention ago).
    Forgotten,
}

/// What the replicas of one chunk asked so far said of an op ([`Client::ask_op`]).
#[derive(Default)]
pub(crate) struct Votes {
    /// Data addresses asked.
    asked: Vec<String>,
    /// Replicas (ids) whose sealed chunk holds the op, each with the offset it gave.
    sealed_with: Vec<(String, u64)>,
    /// Replicas (ids) sealed without the op, each with the length it is sealed at.
    full: Vec<(String, u64)>,
    /// Whether one no longer knows its op ids.
    forgotten: bool,
}

impl Votes {
    /// Whether a replica asked is sealed without the op at `length`.
    pub(crate) fn full_at(&self, length: u64) -> bool {
        self.full.iter().any(|(_, l)| *l == length)
    }
}

/// The length the master sealed chunk `handle` of `layout` at, if it did.
pub(crate) fn sealed_length(layout: &Locations, handle: u64) -> Option<u64> {
    layout
        .chunks
        .iter()
        .find(|c| c.handle == handle)
        .and_then(|c| c.sealed_length)
}

/// Notes `who`'s word `value` among `votes` (once per replica); returns how many replicas said
/// the same.
fn vote(votes: &mut Vec<(String, u64)>, who: String, value: u64) -> usize {
    if !votes.iter().any(|(w, _)| *w == who) {
        votes.push((who, value));
    }
    votes.iter().filter(|(_, v)| *v == value).count()
}

/// The replicas `(id, data address)` lease `u` named: those an attempt under it reached.
pub(crate) fn reached(u: &ChunkLease) -> Vec<(String, String)> {
    u.primary
        .iter()
        .chain(u.secondaries.iter())
        .map(|r| (r.id.clone(), r.data_addr.clone()))
        .collect()
}

/// The replicas `(id, data address)` the master lists now for chunk `handle` of `layout`.
pub(crate) fn listed(layout: &Locations, handle: u64) -> Vec<(String, String)> {
    layout
        .chunks
        .iter()
        .filter(|c| c.handle == handle)
        .flat_map(|c| c.replicas.iter())
        .map(|r| (r.id.clone(), r.data_addr.clone()))
        .collect()
}

/// The failure of an append an earlier attempt of which may be in chunk `handle`, a chunk that
/// no longer knows its op ids.
pub(crate) fn outcome_unknown(path: &str, handle: u64) -> ClientError {
    ClientError::OutcomeUnknown {
        path: path.to_string(),
        handle,
    }
}

impl Client {
    /// The lease for appending to the last chunk of `path`, retrying while the master says
    /// UNAVAILABLE (servers registering, an old lease to wait out).
    pub(crate) async fn lease(&self, path: &str, retry: &mut Retry) -> Result<ChunkLease> {
        let req = AppendChunkRequest { path: path.into() };
        self.ask(retry, |mut m| {
            let req = req.clone();
            async move { m.append_chunk(req).await }
        })
        .await
    }

    /// Appends `data` as one record to file `path` and returns its file offset: its byte
    /// position in what a sequential read of the file returns (where its chunk starts, the
    /// sum of the sealed lengths of the earlier chunks, plus its offset in the chunk). The
    /// record lands whole, once, at an offset the primary chooses; at most a quarter of a
    /// chunk.
    ///
    /// One operation id is used across retries, so a retry of an append that did commit
    /// returns the first offset instead of writing again, and the op goes to a new chunk only
    /// once every chunk an earlier attempt reached has answered that it is not there
    /// (exactly once, I4). Retriable failures (primary gone, lease moving, busy, quorum lost)
    /// are retried with backoff until `op_deadline`; an error past it may leave the record
    /// committed (its outcome unknown), never twice. So does `OutcomeUnknown`: a chunk an
    /// earlier attempt reached was sealed longer than the chunkservers' op retention ago and no
    /// longer knows its op ids (only when `op_deadline` is longer than that retention, 10
    /// minutes by default).
    pub async fn append(&self, path: &str, data: impl Into<Bytes>) -> Result<u64> {
        let data = data.into();
        let op: u64 = gfs_util::random::random::<u64>().max(1);
        let mut retry = self.retry();
        // Chunks an attempt reached without a definite answer: the op may be (or become)
        // committed there. It goes to no other chunk before each of these answers (I4).
        let mut uncertain: Vec<ChunkLease> = Vec::new();
        loop {
            let lease = match self.cached_lease(path) {
                Some(l) => l,
                None => {
                    let l = self.lease(path, &mut retry).await?;
                    self.inner.leases.lock().insert(path.to_string(), l.clone());
                    l
                }
            };
            let max = lease.chunk_size / 4;
            if data.len() as u64 > max {
                return Err(ClientError::RecordTooLarge {
                    len: data.len() as u64,
                    max,
                });
            }
            if uncertain.iter().any(|u| u.handle != lease.handle) {
                // The file moved on to another chunk: first learn what became of the op where
                // it may already be.
                if let Some(offset) = self
                    .resolve(path, &mut uncertain, lease.handle, op, &data, &mut retry)
                    .await?
                {
                    return Ok(offset);
                }
                if uncertain.iter().any(|u| u.handle != lease.handle) {
                    self.forget_lease(path, lease.handle);
                    retry
                        .wait("the outcome of an earlier attempt is not known yet")
                        .await?;
                    continue;
                }
            }
            let Some(primary) = lease.primary.clone() else {
                retry.wait("the lease names no primary").await?;
                continue;
            };
            let res = match self.conn(&primary.data_addr).await {
                Ok(c) => c.append(&lease_ref(&lease), op, data.clone()).await,
                Err(e) => Err(e),
            };
            if res.is_err() {
                // Whatever went wrong, the next attempt asks the master.
                self.forget_lease(path, lease.handle);
            }
            match res {
                Ok(off) => return Ok(lease.file_offset + off),
                Err(DataError::OpRetentionExpired { handle, .. })
                    if uncertain.iter().any(|u| u.handle == handle) =>
                {
                    // An earlier attempt may have committed here, and the chunk no longer
                    // knows: the op must go nowhere else (I4), and nobody can tell.
                    return Err(outcome_unknown(path, handle));
                }
                // Sealed without the op (the primary checked its op table once the seal was
                // done): the op is not in this chunk and never will be. A chunk that forgot
                // its op ids says the same to an op no earlier attempt sent there (it is not
                // in `uncertain`): it cannot hold it. The master hands out the next chunk;
                // pause only if it keeps sending this one (its seal report is on the way).
                Err(DataError::ChunkFull { .. } | DataError::OpRetentionExpired { .. }) => {
                    uncertain.retain(|u| u.handle != lease.handle);
                    if retry.attempts > 0 {
                        retry.wait("chunk full").await?;
                    } else {
                        retry.attempts += 1;
                    }
                }
                // The chunk is sealed holding the op, on the primary's word alone: the master
                // may have sealed it at a length that replica alone held. Its replicas are asked
                // (`resolve`) once the master hands out the next chunk.
                // Refused before any work (a token from before a master restart, expired, or
                // from a chunkserver that has not registered yet): this attempt did nothing,
                // and what earlier ones did stays as open as it was. The lease is forgotten,
                // so the next attempt carries a fresh token.
                Err(e @ DataError::BadToken(_)) => retry.wait(&e).await?,
                Err(e @ DataError::SealedWith { .. }) => {
                    uncertain.retain(|u| u.handle != lease.handle);
                    uncertain.push(lease);
                    retry.wait(&e).await?;
                }
                Err(e) if data_retriable(&e) => {
                    self.drop_conn_on(&primary.data_addr, &e);
                    // Any other answer leaves the attempt's outcome open: an earlier attempt
                    // of the op may still commit on this chunk.
                    uncertain.retain(|u| u.handle != lease.handle);
                    uncertain.push(lease);
                    retry.wait(&e).await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Asks the replicas of each chunk in `uncertain` (other than `current`) what became of op
    /// `op`: its file offset if a quorum holds it ([`Client::ask_op`]);
    /// a chunk that answers `ChunkFull` (sealed without it) is dropped from `uncertain`. Chunks
    /// that give no definite answer stay. The replicas the attempt reached are asked first,
    /// then those the master lists for the chunk now: a replica may have moved since (its
    /// server restarted on another address, or the chunk was copied elsewhere), and asking
    /// only the old addresses would wait on them forever. `OutcomeUnknown` when a chunk's
    /// replicas no longer know their op ids (op retention expired) and none knows better.
    pub(crate) async fn resolve(
        &self,
        path: &str,
        uncertain: &mut Vec<ChunkLease>,
        current: u64,
        op: u64,
        data: &Bytes,
        retry: &mut Retry,
    ) -> Result<Option<u64>> {
        let mut still = Vec::new();
        let mut now: Option<Arc<Locations>> = None;
        for u in std::mem::take(uncertain) {
            if u.handle == current {
                still.push(u);
                continue;
            }
            let mut votes = Votes::default();
            let mut answer = self.ask_op(&u, reached(&u), &mut votes, op, data).await;
            if matches!(answer, None | Some(OpAnswer::Forgotten)) {
                if now.is_none() {
                    now = self.refresh_with(path, retry).await.ok();
                }
                let listed = now
                    .as_deref()
                    .map(|l| listed(l, u.handle))
                    .unwrap_or_default();
                let more = self.ask_op(&u, listed, &mut votes, op, data).await;
                answer = more.or(answer);
                // The master's seal is the chunk's one decision: a replica sealed without the
                // op at the length the master sealed it at holds its final content.
                let sealed = now.as_deref().and_then(|l| sealed_length(l, u.handle));
                if !matches!(answer, Some(OpAnswer::At(_)))
                    && sealed.is_some_and(|s| votes.full_at(s))
                {
                    answer = Some(OpAnswer::NotThere);
                }
            }
            match answer {
                Some(OpAnswer::At(off)) => return Ok(Some(u.file_offset + off)),
                // Sealed without the op: it is not in that chunk and never will be.
                Some(OpAnswer::NotThere) => {}
                Some(OpAnswer::Forgotten) => return Err(outcome_unknown(path, u.handle)),
                None => still.push(u),
            }
        }
        *uncertain = still;
        Ok(None)
    }

    /// Asks each replica `(id, data address)` of chunk `u` not yet asked (`votes`) what
    /// became of op `op`, until the answer is sure: `At(offset)` if a primary confirmed it on
    /// a quorum, or if a quorum of `u`'s replicas hold it in their sealed chunk (one sealed
    /// replica's word is not enough: the master may have sealed the chunk at a length that
    /// replica alone held, I2); `NotThere` if a quorum of them are sealed without it at one
    /// length (any quorum of replicas a master's fence hears from includes one of them, and
    /// the master seals the chunk where it finds one sealed). `Forgotten` if none is sure but
    /// one no longer knows its op ids; `None` if none answers for sure.
    pub(crate) async fn ask_op(
        &self,
        u: &ChunkLease,
        replicas: Vec<(String, String)>,
        votes: &mut Votes,
        op: u64,
        data: &Bytes,
    ) -> Option<OpAnswer> {
        // A majority of the replicas the op was sent to: the lease's members, which may be more
        // than it lists (seed 228949108538562 of the simulator: a lease adopted after a master
        // restart listed its primary alone, and that primary's lone `SealedWith` was taken
        // while the master's seal had left its one secondary short).
        let listed = 1 + u.secondaries.len();
        let sent_to = listed.max(u.members as usize);
        let need = sent_to / 2 + 1;
        for (id, addr) in replicas {
            if votes.asked.contains(&addr) {
                continue;
            }
            votes.asked.push(addr.clone());
            let res = match self.conn(&addr).await {
                Ok(c) => c.append(&lease_ref(u), op, data.clone()).await,
                Err(e) => Err(e),
            };
            match res {
                Ok(off) => {
                    tracing::debug!(
                        handle = u.handle,
                        op,
                        off,
                        "an earlier attempt had committed"
                    );
                    return Some(OpAnswer::At(off));
                }
                Err(DataError::SealedWith { offset, .. }) => {
                    let who = if id.is_empty() { addr } else { id };
                    if vote(&mut votes.sealed_with, who, offset) >= need {
                        tracing::debug!(
                            handle = u.handle,
                            op,
                            offset,
                            "a quorum of sealed replicas hold an earlier attempt"
                        );
                        return Some(OpAnswer::At(offset));
                    }
                }
                Err(DataError::ChunkFull { length, .. }) => {
                    let who = if id.is_empty() { addr } else { id };
                    if vote(&mut votes.full, who, length) >= need {
                        return Some(OpAnswer::NotThere);
                    }
                }
                // Another replica may still know (its retention started later).
                Err(DataError::OpRetentionExpired { .. }) => votes.forgotten = true,
                Err(e) => {
                    tracing::debug!(handle = u.handle, op, replica = %id, error = %e, "no answer yet about an earlier attempt");
                    self.drop_conn_on(&addr, &e);
                }
            }
        }
        votes.forgotten.then_some(OpAnswer::Forgotten)
    }

    /// The cached lease of `path`'s last chunk, while it has more than a second to run.
    pub(crate) fn cached_lease(&self, path: &str) -> Option<ChunkLease> {
        let now_ms = self.inner.cfg.clock.now_ms();
        self.inner
            .leases
            .lock()
            .get(path)
            .filter(|l| l.lease_expires_unix_ms > now_ms.saturating_add(1000))
            .cloned()
    }

    /// Drops the cached lease of `path` if it is still the one for chunk `handle`.
    pub(crate) fn forget_lease(&self, path: &str, handle: u64) {
        let mut leases = self.inner.leases.lock();
        if leases.get(path).is_some_and(|l| l.handle == handle) {
            leases.remove(path);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use bytes::Bytes;
    use gfs_dataplane::{DataError, Handler, Request, ServerConfig};
    use gfs_proto::v1::{ChunkLease, ReplicaAddr};
    use tokio_util::sync::CancellationToken;

    use super::{OpAnswer, Votes, reached};
    use crate::{Client, ClientConfig};

    /// A replica that answers every append with `answer`.
    struct Scripted(DataError);

    impl Handler for Scripted {
        fn admit(&self, _: &Request, _: Option<&gfs_host::tls::Peer>) -> Result<(), DataError> {
            Ok(())
        }
        async fn append(
            &self,
            _: u64,
            _: u64,
            _: u64,
            _: Option<u64>,
            _: Bytes,
        ) -> Result<u64, DataError> {
            Err(self.0.clone())
        }
        async fn read(&self, _: u64, _: u64, _: u64, _: u32) -> Result<Bytes, DataError> {
            Err(DataError::Busy)
        }
        async fn flush(&self, _: u64, _: u64) -> Result<u64, DataError> {
            Err(DataError::Busy)
        }
    }

    /// A replica `id` on a real data-plane server answering every append with `answer`.
    async fn replica(id: &str, answer: DataError, stop: &CancellationToken) -> ReplicaAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let data_addr = listener.local_addr().unwrap().to_string();
        let serve = gfs_dataplane::run(
            listener,
            Arc::new(Scripted(answer)),
            ServerConfig::default(),
            stop.clone(),
        );
        tokio::spawn(serve);
        ReplicaAddr {
            id: id.into(),
            data_addr,
            repl_addr: String::new(),
        }
    }

    fn full(length: u64) -> DataError {
        DataError::ChunkFull { handle: 7, length }
    }

    /// What the replicas `answers` (primary first) of a chunk make of an op.
    async fn ask(answers: [DataError; 3]) -> Option<OpAnswer> {
        let stop = CancellationToken::new();
        let [a, b, c] = answers;
        let u = ChunkLease {
            handle: 7,
            version: 1,
            primary: Some(replica("a", a, &stop).await),
            secondaries: vec![replica("b", b, &stop).await, replica("c", c, &stop).await],
            ..ChunkLease::default()
        };
        let client = Client::connect_lazy("127.0.0.1:1", ClientConfig::default()).unwrap();
        let mut votes = Votes::default();
        let data = Bytes::from_static(b"record");
        let answer = client.ask_op(&u, reached(&u), &mut votes, 42, &data).await;
        stop.cancel();
        answer
    }

    /// Seed 90477443447776 of the simulator: a primary fenced in the middle of its seal had
    /// sealed one secondary, and the master sealed the chunk elsewhere, with the op in it. One
    /// sealed replica's `ChunkFull` does not send the op to another chunk; a quorum's at one
    /// length does (the master seals the chunk where a fence finds one of them).
    #[tokio::test]
    async fn one_replica_sealed_without_the_op_does_not_clear_the_chunk() {
        let answer = ask([DataError::Busy, full(60), DataError::Busy]).await;
        assert!(answer.is_none(), "one sealed replica's word");
        let answer = ask([full(60), DataError::Busy, full(100)]).await;
        assert!(answer.is_none(), "two sealed replicas at different lengths");
        let answer = ask([DataError::Busy, full(60), full(60)]).await;
        assert!(matches!(answer, Some(OpAnswer::NotThere)), "a quorum");
    }

    /// Seed 228949108538562 of the simulator: a lease adopted after a master restart listed
    /// its primary alone (its one secondary had not registered again), and the master had
    /// sealed the chunk at a length that primary alone held. Its `SealedWith` is one replica's
    /// word of two: no answer until the other says the same.
    #[tokio::test]
    async fn a_lease_listing_fewer_replicas_than_it_has_still_needs_a_majority_of_them() {
        let stop = CancellationToken::new();
        let sealed_with = || DataError::SealedWith {
            handle: 7,
            offset: 40,
        };
        let primary = replica("a", sealed_with(), &stop).await;
        let u = ChunkLease {
            handle: 7,
            version: 2,
            primary: Some(primary),
            members: 2,
            ..ChunkLease::default()
        };
        let client = Client::connect_lazy("127.0.0.1:1", ClientConfig::default()).unwrap();
        let mut votes = Votes::default();
        let data = Bytes::from_static(b"record");
        let answer = client.ask_op(&u, reached(&u), &mut votes, 42, &data).await;
        assert!(answer.is_none(), "the primary's word alone was taken");
        // The secondary, listed by the master once it registered, says the same.
        let other = replica("b", sealed_with(), &stop).await;
        let listed = vec![(other.id, other.data_addr)];
        let answer = client.ask_op(&u, listed, &mut votes, 42, &data).await;
        assert!(matches!(answer, Some(OpAnswer::At(40))));
        // An older master says nothing of its members: the listed replicas count.
        let alone = ChunkLease { members: 0, ..u };
        let mut votes = Votes::default();
        let answer = client
            .ask_op(&alone, reached(&alone), &mut votes, 42, &data)
            .await;
        assert!(matches!(answer, Some(OpAnswer::At(40))));
        stop.cancel();
    }
}
