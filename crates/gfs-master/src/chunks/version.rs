//! Versions as fences: a new version set on the replicas before anything is decided on a
//! chunk (`fence`), the longest committed prefix among them (`longest`, [`Longest`]), replicas
//! behind it caught up (`catch_up`), replicas left ahead of the log fenced with the rest
//! (`lineage`), and a bump the log missed adopted from a quorum's reports (`adopt_reports`).
//! The rules are in the `lease` module's doc.

use super::control::{ControlError, Fenced};
use super::*;
use crate::error::{MasterError, Result};
use crate::record::{Op, SetVersionOp};
use crate::registry::{Replica, ServerInfo};

/// The committed lengths replicas of a chunk reported.
pub(super) struct Longest {
    /// The replicas at the longest length.
    pub(super) holders: Vec<ServerInfo>,
    /// The replicas that answered with less.
    pub(super) behind: Vec<ServerInfo>,
    /// How many replicas answered.
    pub(super) answered: usize,
    /// The longest length.
    pub(super) length: u64,
}

impl Longest {
    /// Splits `answers` (a replica and its committed length) at the longest length.
    pub(super) fn of(answers: Vec<(ServerInfo, u64)>) -> Longest {
        let answered = answers.len();
        let length = answers.iter().map(|(_, l)| *l).max().unwrap_or(0);
        let (holders, behind): (Vec<_>, Vec<_>) =
            answers.into_iter().partition(|(_, l)| *l == length);
        Longest {
            holders: holders.into_iter().map(|(s, _)| s).collect(),
            behind: behind.into_iter().map(|(s, _)| s).collect(),
            answered,
            length,
        }
    }
}

/// A fenced replica's word that it was the chunk's primary at `version` (a version the fence
/// moved it past) and acknowledged no append ending past `bound` under that lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Led {
    /// The replica's server id.
    pub(super) id: String,
    /// The lease's version.
    pub(super) version: u64,
    /// No acknowledged append of that lease ends past it.
    pub(super) bound: u64,
}

/// The outcome of a fence: the new version, the replicas that took it with their committed
/// lengths, the servers that answered they hold no replica of the chunk, and the length the
/// replicas found sealed are sealed at.
pub(super) struct Fence {
    pub(super) version: u64,
    pub(super) replicas: Vec<(ServerInfo, u64)>,
    pub(super) absent: Vec<ServerInfo>,
    /// The length of the fenced replicas that are sealed, if any is: the chunk's primary
    /// sealed them there (before the fence reached them), and clients may have been told the
    /// chunk ends there, so it is sealed there and nowhere else (`keep_seal`).
    pub(super) sealed: Option<u64>,
}

impl ChunkManager {
    /// Logs `version` of `handle` as one no lease was granted at (a fence of the master's own,
    /// or a bump adopted from reports): it names no primary.
    pub(super) async fn log_unleased_version(&self, handle: u64, version: u64) -> Result<()> {
        self.meta
            .mutate(Op::SetVersion(SetVersionOp {
                handle,
                version,
                primary: String::new(),
            }))
            .await?;
        Ok(())
    }

    /// The live replicas a decision on `handle` (logged at `version`) must count, and the
    /// version they are at. Normally the holders at `version`. When some replicas are ahead of
    /// the log (a bump that did not reach a quorum, or a crash before its record), they are
    /// the same appends (no lease is granted at an unlogged version, so nothing was appended
    /// at it) but possibly shorter: all of them are fenced past the highest version, that
    /// version is logged, and the decision goes on from there with every replica counted.
    /// Replicas that failed their checksums are fenced too (their version and length are
    /// sound, and without them a quorum may never take the fence: seed 9663 of the simulator,
    /// where a good replica alone was fenced again and again); they are not returned.
    pub(super) async fn lineage(
        &self,
        handle: u64,
        version: u64,
    ) -> Result<(u64, Vec<ServerInfo>)> {
        let (mut live, ahead, mut corrupt) = {
            let reg = self.registry.lock();
            (
                reg.holders_of(handle, version),
                reg.ahead_of(handle, version),
                reg.corrupt_ahead_of(handle, version),
            )
        };
        let Some(top) = ahead.iter().chain(&corrupt).map(|(_, v)| *v).max() else {
            return Ok((version, live));
        };
        live.extend(ahead.into_iter().map(|(s, _)| s));
        let mut asked = live;
        corrupt.extend(
            self.registry
                .lock()
                .corrupt_at(handle, version)
                .into_iter()
                .map(|s| (s, version)),
        );
        asked.extend(corrupt.into_iter().map(|(s, _)| s));
        tracing::warn!(%handle, version, top, "replicas ahead of the log: fencing them all past it");
        let Fence {
            version: new_version,
            replicas: fenced,
            ..
        } = self.fence(handle, top, asked).await?;
        self.log_unleased_version(handle, new_version).await?;
        // Corrupt ones keep their mark, at the new version (`Registry::note_replica`).
        self.note_unsealed(handle, new_version, fenced.iter().map(|(s, l)| (s, *l)));
        let reg = self.registry.lock();
        Ok((
            new_version,
            fenced
                .into_iter()
                .map(|(s, _)| s)
                .filter(|s| !reg.is_corrupt(&s.id, handle))
                .collect(),
        ))
    }

    /// Sets the version after `version` on each of `replicas`; returns it and the replicas
    /// that took it, each with its committed length once the new version is durable there
    /// (with what a primary among them said of its lease), or `Unavailable` unless a quorum
    /// took it. That length is final for the old version: the replica is fenced, nothing
    /// commits at the old version there any more, so an append that
    /// committed between an earlier length query and this call is seen (finding 4).
    pub(super) async fn fence(
        &self,
        handle: u64,
        version: u64,
        replicas: Vec<ServerInfo>,
    ) -> Result<Fence> {
        // Past every version an earlier fence sent without a quorum taking it: a replica may
        // hold that one unlogged, with other bytes, and its reports may not reach us.
        let tried = self.tried.lock().get(&handle).copied().unwrap_or(0);
        let Some(new_version) = version.max(tried).checked_add(1) else {
            return Err(MasterError::Internal(format!(
                "chunk {handle}: version {version} overflows"
            )));
        };
        self.note_last_lease(handle).await;
        tracing::debug!(%handle, version = new_version, replicas = replicas.len(), "fencing the replicas");
        let asks = replicas.into_iter().map(|s| async move {
            let r = self.control.set_version(&s, handle, new_version).await;
            (s, r)
        });
        let mut answers: Vec<(ServerInfo, Fenced)> = Vec::new();
        let mut absent = Vec::new();
        for (s, r) in futures::future::join_all(asks).await {
            match r {
                Ok(f) => answers.push((s, f)),
                Err(ControlError::NotFound(e)) => {
                    tracing::info!(%handle, server = %s.id, error = %e, "the fenced server holds no replica");
                    absent.push(s);
                }
                Err(e) => tracing::warn!(server = %s.id, error = %e, "chunkserver call failed"),
            }
        }
        self.keep_word(handle, &answers).await;
        let mut sealed: Vec<u64> = answers
            .iter()
            .filter(|(_, f)| f.sealed)
            .map(|(_, f)| f.length)
            .collect();
        sealed.sort_unstable();
        sealed.dedup();
        if sealed.len() > 1 {
            // Only a lease's primary seals, once, at one length, and a fence ends the lease:
            // a second length would be a defect elsewhere. Nothing is decided on it.
            tracing::error!(%handle, lengths = ?sealed, "replicas of the chunk are sealed at different lengths");
            return Err(MasterError::Internal(format!(
                "chunk {handle}: replicas are sealed at different lengths {sealed:?}"
            )));
        }
        let sealed = sealed.first().copied();
        let fenced: Vec<(ServerInfo, u64)> =
            answers.into_iter().map(|(s, f)| (s, f.length)).collect();
        if fenced.len() < self.cfg.quorum {
            self.tried.lock().insert(handle, new_version);
            return Err(unavailable(format!(
                "chunk {handle}: only {} replicas took version {new_version}",
                fenced.len()
            )));
        }
        let left = self.left_in_lease(handle, new_version, &fenced, &absent);
        if left >= self.cfg.quorum {
            // As a fence cut short: the version is not logged, and no later fence reuses it.
            self.tried.lock().insert(handle, new_version);
            return Err(unavailable(format!(
                "chunk {handle}: {left} members of its unexpired lease were not fenced; its \
                 primary could still commit with them"
            )));
        }
        self.tried.lock().remove(&handle);
        Ok(Fence {
            version: new_version,
            replicas: fenced,
            absent,
            sealed,
        })
    }

    /// How many members (primary and secondaries) of the unexpired lease on `handle`, if one
    /// older than `new_version` is in the table, neither took `new_version` (`fenced`) nor
    /// hold no replica (`absent`): those its primary could still commit with. A fence must
    /// leave fewer than a quorum (I5): then the old primary, wherever it is and whatever it
    /// believes, commits nothing more, and a new lease needs no wait for the old to run out.
    fn left_in_lease(
        &self,
        handle: u64,
        new_version: u64,
        fenced: &[(ServerInfo, u64)],
        absent: &[ServerInfo],
    ) -> usize {
        let now = self.cfg.clock.now();
        let table = self.lease.table.lock();
        let Some(l) = table
            .get(&handle)
            .filter(|l| l.expires > now && l.version < new_version)
        else {
            return 0;
        };
        let reached = |m: &ServerInfo| {
            fenced
                .iter()
                .map(|(s, _)| s)
                .chain(absent)
                .any(|s| (!m.id.is_empty() && s.id == m.id) || s.repl_addr == m.repl_addr)
        };
        std::iter::once(&l.primary)
            .chain(l.secondaries.iter())
            .filter(|m| !reached(m))
            .count()
    }

    /// Keeps the word of the primary of `handle`'s last lease, if it is among `answers` and
    /// speaks of that lease's version ([`Led`]; `ChunkMeta::last_leased`, the logged version
    /// when the log does not know it): that lease is the chunk's last (no lease is granted at
    /// a version logged without a primary), so its word bounds every acknowledged append until
    /// a new lease is logged (`forget_word`). While the log is at that version it names the
    /// primary, and only that server's word counts. Past it (unleased versions, which name no
    /// primary), a server speaks of a lease at a version only if it held it as its primary,
    /// and the log granted that version's lease once: the word of any answer about it counts
    /// (the largest bound, were there several). Matched against the logged version and its
    /// named primary alone, a word was never kept once the log had moved on to an unleased
    /// version before a fence heard it (soak seed 208499017516792: a fence that reached the
    /// primary alone failed, reports then moved the log on, the primary's replica rotted, and
    /// the master fenced once a second for good). Never fails the fence: the replicas took
    /// its version whatever becomes of the word.
    async fn keep_word(&self, handle: u64, answers: &[(ServerInfo, Fenced)]) {
        if answers.iter().all(|(_, f)| f.led.is_none()) {
            return;
        }
        let logged = self
            .meta
            .read(move |ns| {
                let at = ns
                    .chunk(handle)
                    .map(|m| m.last_leased().unwrap_or(m.version));
                (at, ns.last_primary(handle).map(String::from))
            })
            .await;
        let (at, primary) = match logged {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(%handle, error = %e, "cannot read the log: the primary's word is not kept");
                return;
            }
        };
        let Some(at) = at else {
            return;
        };
        let word = answers
            .iter()
            .filter_map(|(s, f)| {
                let (version, bound) = f.led?;
                let speaks = version == at && primary.as_ref().is_none_or(|p| *p == s.id);
                speaks.then(|| Led {
                    id: s.id.clone(),
                    version,
                    bound,
                })
            })
            .max_by_key(|w| w.bound);
        if let Some(word) = word {
            tracing::info!(%handle, primary = %word.id, version = word.version, acknowledged_up_to = word.bound, "the last primary's word on its lease");
            self.words.lock().insert(handle, word);
        }
    }

    /// Notes the version of `handle`'s last lease as the log knows it (`ChunkMeta::
    /// last_leased`, kept through the unleased versions fences log after it and through
    /// checkpoints, so a restarted master knows it too: seed 148412570704814 of the
    /// simulator). A log read that fails, or a log that does not know it, notes nothing.
    pub(super) async fn note_last_lease(&self, handle: u64) {
        let leased = self
            .meta
            .read(move |ns| ns.chunk(handle).and_then(|m| m.last_leased()))
            .await;
        if let Ok(Some(version)) = leased {
            self.last_lease.lock().insert(handle, version);
        }
    }

    /// Live replicas of `handle` not fenced to `version` but at or past its last lease's
    /// version: no append was made past that lease (only leases append), so each holds all it
    /// committed under the chunk's leases, as one at `version` does (seed 40853 of the
    /// simulator: a good replica down while fences moved the others on, the only other good
    /// one). Empty when the last lease is not known (a log written by an older version).
    pub(super) fn witnesses_behind(&self, handle: u64, version: u64) -> Vec<ServerInfo> {
        let Some(since) = self.last_lease.lock().get(&handle).copied() else {
            return Vec::new();
        };
        self.registry.lock().held_between(handle, since, version)
    }

    /// The most the primary of `handle`'s last lease said it acknowledged, when it said so.
    pub(super) fn acknowledged_up_to(&self, handle: u64) -> Option<u64> {
        self.words.lock().get(&handle).map(|w| w.bound)
    }

    /// Drops the word kept on `handle`: a new lease is being logged, or the chunk sealed.
    pub(super) fn forget_word(&self, handle: u64) {
        self.words.lock().remove(&handle);
    }

    /// The replicas among `live` whose committed length, asked now, is the longest.
    pub(super) async fn longest(
        &self,
        handle: u64,
        version: u64,
        live: Vec<ServerInfo>,
    ) -> Longest {
        let asks = live.into_iter().map(|s| async move {
            let length = self
                .control
                .committed_length(&s, handle, version)
                .await
                .ok()??;
            Some((s, length))
        });
        let answers: Vec<(ServerInfo, u64)> = futures::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect();
        let longest = Longest::of(answers);
        for s in &longest.behind {
            tracing::warn!(%handle, replica = %s.id, longest = longest.length, "replica behind the longest");
        }
        longest
    }

    /// Has each replica `longest` found behind copy the appends it lacks from a holder (with
    /// no lease out, nothing else is appending), within `clone_timeout`; returns those now at
    /// the longest length.
    /// Those that fail are left behind, to go stale at the next version bump. A source whose
    /// bytes fail their checksums (DATA_LOSS) is marked corrupt: callers check
    /// [`Registry::is_corrupt`](crate::registry::Registry::is_corrupt) before trusting its
    /// length.
    pub(super) async fn catch_up(
        &self,
        handle: u64,
        version: u64,
        longest: &Longest,
    ) -> Vec<ServerInfo> {
        let Some(source) = longest.holders.first() else {
            return Vec::new();
        };
        let length = longest.length;
        let asks = longest.behind.iter().map(|s| {
            let copy = ChunkCopy {
                handle,
                version,
                source: source.repl_addr.clone(),
                sealed_length: None,
                catch_up: true,
            };
            async move {
                match self.control.copy_chunk(s, copy).await {
                    Ok(l) if l == length => Ok(s.clone()),
                    Ok(l) => Err((
                        s.id.clone(),
                        ControlError::DataLoss(format!("caught up to {l}")),
                    )),
                    Err(e) => Err((s.id.clone(), e)),
                }
            }
        });
        let mut caught = Vec::new();
        for r in futures::future::join_all(asks).await {
            match r {
                Ok(s) => {
                    tracing::info!(%handle, replica = %s.id, length, "replica caught up");
                    self.registry.lock().note_replica(
                        &s.id,
                        Replica {
                            handle,
                            version,
                            length,
                            sealed: false,
                        },
                    );
                    caught.push(s);
                }
                Err((id, ControlError::DataLoss(why)))
                    if !self.registry.lock().is_corrupt(&source.id, handle) =>
                {
                    // The source's bytes failed their checksums (or ended short of its length):
                    // it is no source, and no holder of the length it reported either.
                    tracing::error!(%handle, source = %source.id, replica = %id, error = %why,
                        "catch-up source is corrupt: the replica goes stale");
                    let mut reg = self.registry.lock();
                    reg.mark_corrupt(&source.id, handle);
                    reg.events
                        .push("corrupt", format!("chunk {handle} on {}: {why}", source.id));
                }
                Err((id, e)) => {
                    tracing::warn!(%handle, replica = %id, error = %e, "catch-up failed: the replica goes stale");
                }
            }
        }
        caught
    }

    /// Adopts from a chunk report what the log missed: a newer version (a crash between
    /// bumping the replicas and logging the bump), and a seal at the current version (a lost
    /// seal report; every replica seals at the primary's length). A replica unsealed at a
    /// sealed chunk's version and length (a master that logged the seal crashed before its
    /// seal calls ended) is noted in `failed_seals`, for the next pass to seal it.
    pub async fn adopt_reports(&self, server: &str, report: &[Replica]) -> Result<()> {
        let handles: Vec<u64> = report.iter().map(|r| r.handle).collect();
        let known = self
            .meta
            .read(move |ns| handles.iter().map(|h| ns.chunk(*h)).collect::<Vec<_>>())
            .await?;
        for (r, current) in report.iter().zip(known) {
            let handle = r.handle;
            if let Some(m) = current
                && r.sealed
                && r.version == m.version
                && m.sealed_length.is_none()
            {
                self.report_sealed(handle, r.length, &[]).await?;
            }
            if let Some(m) = current
                && !r.sealed
                && r.version == m.version
                && m.sealed_length == Some(r.length)
            {
                self.failed_seals.lock().insert(handle);
            }
            // Only one step ahead: a crash between a bump and its log record leaves replicas
            // at the next version, never further (anything else is a lie or a bug).
            if current.is_some_and(|m| r.version > m.version && r.version - m.version > 1) {
                tracing::warn!(%handle, version = r.version, "a reported version more than one ahead of the log is ignored");
                continue;
            }
            // Only a bump that reached a quorum: its replicas then hold every acknowledged
            // append. One that reached fewer (a fence cut short) may have reached only a short
            // replica; adopting it would make the longer ones stale. Such replicas stay ahead
            // of the log until the next decision on the chunk fences them all (`lineage`).
            if current.is_some_and(|m| r.version > m.version) {
                let at_it = 1 + self
                    .registry
                    .lock()
                    .ahead_of(handle, r.version - 1)
                    .iter()
                    .filter(|(s, v)| *v == r.version && s.id != server)
                    .count();
                if at_it < self.cfg.quorum {
                    tracing::debug!(%handle, version = r.version, replicas = at_it, "a version one ahead of the log on fewer replicas than a quorum: not adopted");
                    continue;
                }
                tracing::warn!(%handle, version = r.version, "adopting a newer version from a chunk report");
                // No lease was granted at it (the master crashed before logging it).
                self.log_unleased_version(handle, r.version).await?;
            }
        }
        Ok(())
    }
}
