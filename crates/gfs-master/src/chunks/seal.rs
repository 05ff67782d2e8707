//! # Chunks that cannot continue
//!
//! When a new lease is needed and fewer than a quorum of replicas hold the longest prefix: if a
//! quorum answered, the longest length is final (any quorum includes a replica with every
//! acknowledged append) and the master seals the chunk there on its own, fenced first
//! (`fence_and_seal`, I5): a new version on the live replicas, the longest length a quorum of
//! them reports after it, those behind caught up, the version and the seal logged, then the
//! replicas sealed; `append_chunk` then allocates the next chunk. A replica whose seal call
//! failed is noted (`failed_seals`) and [`ChunkManager::settle`] calls it again; one
//! that answers it holds no such replica is forgotten as a holder (seed 30643). The note is
//! in memory: after a master restart a replica reported unsealed at the sealed version and
//! length is noted again (`adopt_reports`), since a replica that restarts unsealed serves no
//! read until sealed (seed 192902363027571: a file unreadable after a power cut). When
//! the good replicas at the longest length are fewer than a quorum, they are sealed all the
//! same: a sealed replica's word on a retried op is `SealedWith`, which a client takes only
//! once a majority of the replicas say it, so nothing is acknowledged on one disk while the
//! copies are on their way (seeds 132 and 337 of the simulator). When the longest replicas
//! failed their checksums, the seal goes by the good ones if a quorum of them answered the
//! fence, or if the primary of the chunk's last lease (the one the log names at the version
//! that lease was at) said at a fence that it acknowledged nothing past what a good one holds
//! (`version::Led`, kept until a new lease is logged: a primary acknowledges nothing a fence
//! overtook, and says so whether the fence ended its lease or the lease ended before, given
//! up on a full disk or run out); else nothing is sealed (seeds 740, 9663 and 11060). If
//! fewer than a quorum answer,
//! the length is unknown and the file cannot move on: UNAVAILABLE until a quorum of the chunk's
//! own replicas returns (a copy cannot stand in for one: unsealed chunks are never copied).
//! Chunks abandoned unsealed by older versions (`unsettled`: unsealed chunks that are not last
//! in their file, found in the log at start) are fenced and sealed the same way by
//! [`ChunkManager::settle`], every heartbeat interval, once a quorum reports again; until then
//! `append_chunk` on their file answers UNAVAILABLE. So are unsealed chunks re-replication
//! found below their goal with no lease out (`Repair::to_seal`), so that they can be copied.
//!
//! A chunk's length is decided once. A fence that finds a replica already sealed (its primary
//! sealed it before the fence reached it, and clients may have been told the chunk ends
//! there) seals the chunk at that length, whichever decision fenced it (`keep_seal`): longer
//! replicas are left stale, shorter ones caught up, and no lease is granted on it.

use super::version::{Fence, Longest};
use super::*;
use crate::error::{MasterError, Result};
use crate::record::{Op, SealOp};
use crate::registry::{Replica, ServerInfo};

impl ChunkManager {
    /// Seals `handle` at `length` in the log and drops its lease.
    pub(super) async fn seal_at(&self, handle: u64, length: u64) -> Result<()> {
        // A chunk's length is decided once: a second seal elsewhere would drop or duplicate
        // the records clients were told are (not) in it (I2, I4).
        let known = self.meta.read(move |ns| ns.chunk(handle)).await?;
        if let Some(sealed) = known.and_then(|m| m.sealed_length) {
            if sealed == length {
                return Ok(());
            }
            tracing::error!(%handle, sealed, length, "refusing to seal a sealed chunk again at another length");
            return Err(MasterError::Internal(format!(
                "chunk {handle} is sealed at {sealed}, not {length}"
            )));
        }
        self.meta
            .mutate(Op::Seal(SealOp { handle, length }))
            .await?;
        self.lease.table.lock().remove(&handle);
        self.unsettled.lock().remove(&handle);
        self.forget_word(handle);
        self.last_lease.lock().remove(&handle);
        self.registry.lock().forget_uncreated(handle);
        tracing::info!(%handle, length, "chunk sealed");
        Ok(())
    }

    /// Finds the chunks left unsettled in the log (after a restart).
    pub async fn load_unsettled(&self) -> Result<()> {
        let found = self.meta.read(|ns| ns.unsettled()).await?;
        if !found.is_empty() {
            tracing::warn!(
                chunks = found.len(),
                "chunks abandoned with their length unknown"
            );
        }
        self.unsettled.lock().extend(found);
        Ok(())
    }

    /// Seals each abandoned chunk, each unsealed chunk re-replication found below its goal
    /// with no lease out, and each a replica reported unvouched with no lease out on it
    /// ([`ChunkManager::note_unvouched`]), once a quorum of its replicas is alive, at the
    /// longest length they hold after a fence; then the replicas whose seal call failed
    /// (`failed_seals`) are called again.
    pub async fn settle(&self) {
        let pending: Vec<u64> = self.unsettled.lock().iter().copied().collect();
        for handle in pending {
            self.seal_unleased(handle, false).await;
        }
        let below: Vec<u64> = self
            .repair
            .to_seal
            .lock()
            .iter()
            .filter(|(_, since)| since.elapsed() >= self.cfg.lease)
            .map(|(h, _)| *h)
            .collect();
        for handle in below {
            self.seal_unleased(handle, true).await;
        }
        // An unvouched chunk no lease is out on, as far as this master knows every lease that
        // can be out on it, waits no longer: its readers cannot read its tail meanwhile.
        let reported: Vec<(u64, Instant)> = self
            .unvouched
            .lock()
            .iter()
            .map(|(h, t)| (*h, *t))
            .collect();
        let mut unvouched = Vec::new();
        for (handle, since) in reported {
            let due = since.elapsed() >= self.cfg.lease || {
                let leased = self.leased(handle);
                let last_primary = self
                    .meta
                    .read(move |ns| ns.last_primary(handle).map(str::to_string))
                    .await
                    .ok()
                    .flatten();
                !leased && self.knows_leases(handle, last_primary.as_deref())
            };
            if due {
                self.unvouched.lock().remove(&handle);
                unvouched.push(handle);
            }
        }
        for handle in unvouched {
            self.seal_unleased(handle, true).await;
        }
        self.retry_failed_seals().await;
    }

    /// Notes unsealed chunks a replica reported unvouched: it holds committed bytes past what
    /// it knows a quorum to hold (it restarted and lost what its primary told, or committed
    /// them alone), and shows readers none of them. Like HDFS's lease recovery, `settle`
    /// seals such a chunk at the longest length a quorum reports after a fence, once no lease
    /// is out on it (a writer with a lease keeps its chunk): at its next pass if this master
    /// knows every lease that can be out on it ([`ChunkManager::knows_leases`]), else a lease
    /// period after the report.
    pub fn note_unvouched(&self, handles: impl IntoIterator<Item = u64>) {
        let now = Instant::now();
        let mut u = self.unvouched.lock();
        for h in handles {
            u.entry(h).or_insert(now);
        }
    }

    /// Seals `handle` at the longest length a quorum of its live replicas reports after a
    /// fence, if it is still unsealed and (`unless_leased`) no live lease is out on it.
    async fn seal_unleased(&self, handle: u64, unless_leased: bool) {
        let _deciding = self.deciding.write([handle]).await;
        let Ok(Some(m)) = self.meta.read(move |ns| ns.chunk(handle)).await else {
            self.unsettled.lock().remove(&handle);
            return;
        };
        if m.sealed_length.is_some() {
            self.unsettled.lock().remove(&handle);
            return;
        }
        if unless_leased && self.leased(handle) {
            // Being written again: its lease decides (the next pass queues it again if it is
            // still below its goal once the lease ends).
            return;
        }
        let (version, mut live) = match self.lineage(handle, m.version).await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(%handle, error = %e, "cannot seal the chunk yet");
                return;
            }
        };
        // A replica that failed its checksums still knows its version and length: it counts
        // toward the fence's quorum (else one good replica beside a corrupt one could never
        // be sealed, nor copied), never as a source of bytes.
        live.extend(self.registry.lock().corrupt_at(handle, version));
        if live.len() < self.cfg.quorum {
            tracing::warn!(%handle, live = live.len(), "too few replicas answer to seal the chunk; waiting for more");
            return;
        }
        // Sealed at the longest length, fenced first; the others catch up first, so the
        // chunk does not come out with fewer current replicas than it could have.
        match self.fence_and_seal(handle, version, live).await {
            Ok(length) => tracing::info!(%handle, length, "unleased chunk sealed"),
            Err(e) => tracing::warn!(%handle, error = %e, "cannot seal the chunk yet"),
        }
    }

    /// Seals `handle` on the master's own decision, with no lease out (too few replicas hold
    /// its longest length to continue it, or it was abandoned): fences `live` with a new
    /// version first, so an old primary's appends still on their way are refused everywhere;
    /// takes the longest length a quorum of them reports after the fence (every acknowledged
    /// append is on a quorum, so on one of them); catches up those behind; logs the version and
    /// the seal; then seals the replicas there, so clients resolving an earlier attempt get a
    /// final answer from them. Live replicas at a version between the chunk's last lease and
    /// `version` are fenced with `live` (`witnesses_behind`), and so are servers whose creation
    /// of the chunk failed: one that answers it holds no replica and never did
    /// (`Registry::never_held`) witnesses that no append was acknowledged with it. Returns the
    /// sealed length.
    pub(super) async fn fence_and_seal(
        &self,
        handle: u64,
        version: u64,
        mut live: Vec<ServerInfo>,
    ) -> Result<u64> {
        // Replicas left at a version between the last lease and this one answer too.
        self.note_last_lease(handle).await;
        for s in self.witnesses_behind(handle, version) {
            if !live.iter().any(|l| l.id == s.id) {
                tracing::info!(%handle, server = %s.id, "a replica behind only unleased versions is fenced with the others");
                live.push(s);
            }
        }
        let uncreated = self.registry.lock().uncreated(handle);
        for s in uncreated {
            if !live.iter().any(|l| l.id == s.id) {
                live.push(s);
            }
        }
        let Fence {
            version: new_version,
            replicas: fenced,
            absent,
            sealed,
        } = self.fence(handle, version, live).await?;
        if let Some(length) = sealed {
            tracing::warn!(%handle, length, "the fence found replicas sealed: the chunk ends there");
            return self.keep_seal(handle, new_version, length, fenced).await;
        }
        // Members of the chunk's first lease that never held it (their creation failed, and
        // the fence found nothing there): every acknowledged append is on a quorum of members,
        // so on the others.
        let never_held = {
            let reg = self.registry.lock();
            absent
                .iter()
                .filter(|s| reg.never_held(&s.id, handle))
                .count()
        };
        // The word of the chunk's last primary, heard at this fence or an earlier one, bounds
        // what was acknowledged (below).
        let primary_led = self.acknowledged_up_to(handle);
        let corrupt = |s: &ServerInfo| self.registry.lock().is_corrupt(&s.id, handle);
        // Decided again each time a catch-up finds its source corrupt (at most once per
        // replica: each time one more is marked).
        let (longest, holders) = loop {
            let mut longest = Longest::of(fenced.clone());
            // Replicas that failed their checksums gave their length; they are no copy
            // source, take no catch-up and are not sealed here (they stay out, and go once
            // the chunk has its goal elsewhere).
            longest.holders.retain(|s| !corrupt(s));
            longest.behind.retain(|s| !corrupt(s));
            if longest.holders.is_empty() {
                let good: Vec<(ServerInfo, u64)> = fenced
                    .iter()
                    .filter(|(s, _)| !corrupt(s))
                    .cloned()
                    .collect();
                let good_length = good.iter().map(|(_, l)| *l).max();
                // Every acknowledged append is on a quorum, so on one of a quorum of good
                // replicas; or, by the word of the lease's own primary at the fence, it ends
                // within what a good replica holds (seed 9663 of the simulator: a put's bytes
                // on the rotten primary alone, the one good replica empty, the third never
                // created). What only the corrupt ones hold past that was never acknowledged.
                // A member that never held the chunk counts with the good ones (seed 13798: the
                // primary's tail alone on its rotten replica, the one other replica empty, the
                // third never created, the primary restarted and without a word).
                let vouched = primary_led.is_some_and(|b| good_length.is_some_and(|g| g >= b));
                let witnesses = good.len() + if good.is_empty() { 0 } else { never_held };
                let witnesses_needed = self.witnesses_needed(handle).await?;
                if witnesses < witnesses_needed && !vouched {
                    return Err(unavailable(format!(
                        "chunk {handle}: its longest length {} is only on replicas that failed \
                         their checksums, and too few good ones answered; waiting for another \
                         holder",
                        longest.length
                    )));
                }
                tracing::warn!(%handle, corrupt_length = longest.length, good = good.len(), never_held, acknowledged_up_to = ?primary_led, "the longest replicas failed their checksums: sealing at the good replicas' longest length");
                longest = Longest::of(good);
            }
            let caught = self.catch_up(handle, new_version, &longest).await;
            let cut_short = caught.len() < longest.behind.len();
            let mut holders = longest.holders.clone();
            holders.extend(caught);
            if !holders.iter().any(corrupt) {
                break (longest, holders);
            }
            // A catch-up that failed may have copied part of the way before it met the rot:
            // its target's length is no longer the one the fence heard (seed 56860221658621: a
            // seal at a length no good replica still had, and the chunk was lost). The next
            // fence hears it.
            if cut_short {
                return Err(unavailable(format!(
                    "chunk {handle}: a catch-up from a replica that failed its checksums ended                      short; deciding the length at the next fence"
                )));
            }
        };
        let length = longest.length;
        self.log_unleased_version(handle, new_version).await?;
        self.seal_at(handle, length).await?;
        for s in &longest.behind {
            if !holders.iter().any(|h| h.id == s.id) {
                tracing::warn!(%handle, server = %s.id, length, "replica left short of the sealed length");
            }
        }
        self.seal_replicas(handle, new_version, length, &holders)
            .await;
        Ok(length)
    }

    /// How many good replicas hold every acknowledged append of unsealed `handle` between
    /// them: each append is on a quorum of the chunk's members, who are at most the servers it
    /// was placed on, so any `placed - quorum + 1` of them include one of its holders (seed
    /// 228949108538566: a chunk placed on two servers, the longer replica rotten, the other
    /// one alone holds all that was acknowledged). A chunk logged before `placed` was takes a
    /// quorum, as for three members.
    async fn witnesses_needed(&self, handle: u64) -> Result<usize> {
        let placed = self
            .meta
            .read(move |ns| ns.chunk(handle).map(|m| usize::from(m.placed)))
            .await?
            .unwrap_or(0);
        Ok(match placed {
            0 => self.cfg.quorum,
            n => (n + 1).saturating_sub(self.cfg.quorum).max(1),
        })
    }

    /// Seals `handle` at `length`, where the fence to `new_version` found replicas sealed: their
    /// primary sealed them there, so the chunk ends there (clients may have been told it does:
    /// a sealed replica answers `ChunkFull` to an op it lacks). Every acknowledged append is
    /// within it: the primary sealed at its own committed length, past every append it
    /// acknowledged. Replicas holding more (appends no quorum took) are left unsealed, stale;
    /// those holding less catch up. Seed 90477443447776 of the simulator: a fenced primary
    /// sealed a secondary the fence had not reached yet, and the master sealed the chunk at a
    /// third replica's longer length, holding a record clients had re-appended elsewhere.
    pub(super) async fn keep_seal(
        &self,
        handle: u64,
        new_version: u64,
        length: u64,
        fenced: Vec<(ServerInfo, u64)>,
    ) -> Result<u64> {
        let corrupt = |s: &ServerInfo| self.registry.lock().is_corrupt(&s.id, handle);
        let (past, within): (Vec<_>, Vec<_>) = fenced.into_iter().partition(|(_, l)| *l > length);
        for (s, l) in &past {
            tracing::warn!(%handle, server = %s.id, holds = l, length, "a replica holds more than the length the chunk is sealed at: left stale");
        }
        let longest = Longest::of(within.into_iter().filter(|(s, _)| !corrupt(s)).collect());
        if longest.length != length {
            return Err(unavailable(format!(
                "chunk {handle}: sealed at {length} on replicas that failed their checksums; \
                 waiting for a good one"
            )));
        }
        let mut holders = longest.holders.clone();
        holders.extend(self.catch_up(handle, new_version, &longest).await);
        holders.retain(|s| !corrupt(s));
        self.log_unleased_version(handle, new_version).await?;
        self.seal_at(handle, length).await?;
        self.seal_replicas(handle, new_version, length, &holders)
            .await;
        Ok(length)
    }

    /// Seals `handle` at `version` and `length` on `holders` (each holds that length), notes
    /// each replica as the call left it, and notes the chunk in `failed_seals` if a seal failed.
    /// A server that answers it holds no such replica is forgotten as its holder, not noted
    /// (seed 30643 of the simulator: noted again by each retry, a replica deleted after a
    /// failed copy was counted current for good).
    async fn seal_replicas(&self, handle: u64, version: u64, length: u64, holders: &[ServerInfo]) {
        let seals = holders
            .iter()
            .map(|s| self.control.seal(s, handle, version, length));
        let sealed = futures::future::join_all(seals).await;
        let mut reg = self.registry.lock();
        let mut all = true;
        for (s, r) in holders.iter().zip(sealed) {
            let sealed = match r {
                Ok(sealed) => sealed,
                Err(ControlError::NotFound(e)) => {
                    tracing::warn!(%handle, server = %s.id, error = %e, "a replica to seal is not there: forgotten");
                    reg.forget_replica(&s.id, handle);
                    continue;
                }
                Err(e) => {
                    tracing::warn!(%handle, server = %s.id, error = %e, "sealing the replica failed; tried again later");
                    false
                }
            };
            all &= sealed;
            reg.note_replica(
                &s.id,
                Replica {
                    handle,
                    version,
                    length,
                    sealed,
                },
            );
        }
        if !all {
            self.failed_seals.lock().insert(handle);
        }
    }

    /// Calls the seal again on the good replicas of chunks in `failed_seals` that hold the
    /// sealed length unsealed; drops chunks with none left to seal.
    async fn retry_failed_seals(&self) {
        let pending: Vec<u64> = self.failed_seals.lock().iter().copied().collect();
        for handle in pending {
            let _deciding = self.deciding.write([handle]).await;
            self.failed_seals.lock().remove(&handle);
            let m = match self.meta.read(move |ns| ns.chunk(handle)).await {
                Ok(Some(m)) => m,
                Ok(None) => continue,
                Err(_) => {
                    self.failed_seals.lock().insert(handle);
                    continue;
                }
            };
            let Some(length) = m.sealed_length else {
                continue;
            };
            let unsealed: Vec<ServerInfo> = {
                let reg = self.registry.lock();
                reg.locations(handle, m)
                    .into_iter()
                    .filter(|(s, r)| !r.sealed && !reg.is_corrupt(&s.id, handle))
                    .map(|(s, _)| s)
                    .collect()
            };
            if !unsealed.is_empty() {
                self.seal_replicas(handle, m.version, length, &unsealed)
                    .await;
            }
        }
    }

    /// Refuses a seal report on `handle` from chunkserver `id` (named by its certificate) unless
    /// it leads the chunk's lease or holds a replica of it: a chunkserver cannot end another's
    /// chunks.
    pub fn check_seal_reporter(&self, id: &str, handle: u64) -> Result<()> {
        let leads = self
            .lease
            .table
            .lock()
            .get(&handle)
            .is_some_and(|l| l.primary.id == id);
        if leads || self.registry.lock().holds(id, handle) {
            return Ok(());
        }
        tracing::warn!(server = id, %handle, "a seal report from a chunkserver that neither leads nor holds the chunk refused");
        Err(MasterError::PermissionDenied(format!(
            "chunkserver {id} neither leads nor holds chunk {handle}: its seal report is refused"
        )))
    }

    /// Records that `handle` is sealed at `length`, and that the replicas at `sealed_on`
    /// (replication-plane addresses) hold it sealed there: they count as current at once.
    pub async fn report_sealed(
        &self,
        handle: u64,
        length: u64,
        sealed_on: &[String],
    ) -> Result<()> {
        let _deciding = self.deciding.write([handle]).await;
        let known = self.meta.read(move |ns| ns.chunk(handle)).await?;
        let Some(m) = known else {
            return Err(MasterError::ChunkNotFound(handle));
        };
        if length > self.cfg.chunk_size {
            return Err(MasterError::InvalidArgument(
                "sealed length exceeds the chunk size".into(),
            ));
        }
        if m.sealed_length.is_none() {
            self.seal_at(handle, length).await?;
        }
        if m.sealed_length.is_none_or(|l| l == length) {
            let mut reg = self.registry.lock();
            let ids: Vec<String> = reg
                .live()
                .into_iter()
                .filter(|s| sealed_on.contains(&s.repl_addr))
                .map(|s| s.id)
                .collect();
            for id in ids {
                reg.note_replica(
                    &id,
                    Replica {
                        handle,
                        version: m.version,
                        length,
                        sealed: true,
                    },
                );
            }
        }
        Ok(())
    }
}
