//! Chunkserver membership and chunk locations, rebuilt from heartbeats (never persisted).
//!
//! A server's chunk report is the full set of its replicas, sent as one pass of heartbeat
//! pieces ([`Piece`], `gfs_proto::report`): each piece adds or updates the replicas it names,
//! and only a pass whose pieces all arrived in order drops the replicas it did not name
//! ([`Registry::heartbeat_piece`]). A missed piece leaves the pass incomplete: it drops
//! nothing, and the next pass starts afresh.
//!
//! Time is passed in (`now`), so tests drive liveness with a clock of their own. A server that
//! has not heartbeated for `dead_after` is dead: its replicas stop counting as locations. A
//! replica reported at a version older than the master's is stale: never a location, and
//! so is one at the version that ends short of (or past) a sealed chunk's length (I1: the
//! master counts as current only replicas it knows hold the same bytes). Locations are the live
//! current replicas ([`Want::admits`]); a report at a newer version than the log is adopted by
//! the chunk manager (a crash between a bump and its log record).
//!
//! A replica reported failing its checksums (`ReportCorrupt` from a read or the scrubber, or a
//! copy that failed with DATA_LOSS) is marked corrupt: it stays out of the locations and the
//! holder counts for as long as its server reports it, and no copy is placed there. Placement
//! ([`Registry::place`] for a new chunk, [`Registry::place_new`] for a copy) takes live servers
//! that have not lost their disk and are not draining, least used share of capacity first, a
//! rack not yet used before one already used. Draining servers (an operator's decommission,
//! restored at start) keep serving their replicas and are copy sources, but their replicas do
//! not count toward the goal. The registry also keeps the recent events for operators
//! (`events.rs`).

use gfs_util::collections::{HashMap, HashSet};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio::time::Instant;

/// What makes a replica current (invariant I1): the chunk's version and, once the chunk is
/// sealed, exactly its sealed length. A replica at the version that ends elsewhere is stale.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Want {
    /// The master's version of the chunk.
    pub version: u64,
    /// The chunk's agreed length, once sealed.
    pub sealed: Option<u64>,
}

impl Want {
    /// Whether `r` is a current replica.
    pub fn admits(&self, r: &Replica) -> bool {
        r.version == self.version && self.sealed.is_none_or(|s| r.length == s)
    }

    /// Whether `r` is stale: older than the version, or at it but not at the sealed length.
    pub fn is_stale(&self, r: &Replica) -> bool {
        r.version < self.version || (r.version == self.version && !self.admits(r))
    }
}

impl From<crate::namespace::ChunkMeta> for Want {
    fn from(m: crate::namespace::ChunkMeta) -> Want {
        Want {
            version: m.version,
            sealed: m.sealed_length,
        }
    }
}

impl From<u64> for Want {
    /// A chunk not sealed (yet): any length at `version` is current.
    fn from(version: u64) -> Want {
        Want {
            version,
            sealed: None,
        }
    }
}

/// What a chunkserver told the master about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerInfo {
    /// Its id.
    pub id: String,
    /// Data-plane address clients use.
    pub data_addr: String,
    /// Replication/control-plane address.
    pub repl_addr: String,
    /// Rack, for placement ("" when not configured).
    pub rack: String,
    /// Disk capacity in bytes.
    pub capacity_bytes: u64,
    /// Disk use in bytes.
    pub used_bytes: u64,
}

/// One replica in a chunk report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Replica {
    /// Chunk handle.
    pub handle: u64,
    /// The replica's version.
    pub version: u64,
    /// Its committed length.
    pub length: u64,
    /// Whether it is sealed.
    pub sealed: bool,
}

/// Where one heartbeat's share of a chunk report sits in its pass.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Piece {
    /// The pass (chosen by the server, new for each pass).
    pub report_id: u64,
    /// Its place in the pass, from 0.
    pub index: u32,
    /// More pieces of the pass follow.
    pub more: bool,
}

impl Piece {
    /// A whole report in one heartbeat: a pass of one piece.
    pub const WHOLE: Piece = Piece {
        report_id: 0,
        index: 0,
        more: false,
    };
}

/// What [`Registry::heartbeat_piece`] made of a heartbeat.
#[derive(Debug, Default)]
pub struct Heard {
    /// The server is registered (false: it must register again).
    pub known: bool,
    /// The piece completed a pass: every handle the pass named.
    pub pass: Option<ChunkSet>,
}

/// A pass of a server's chunk report in progress.
struct Pass {
    report_id: u64,
    /// The piece expected next.
    next: u32,
    /// Every handle its pieces named so far.
    seen: ChunkSet,
}

struct Server {
    info: ServerInfo,
    /// The pass of its chunk report being received (None: none, or one that missed a piece).
    pass: Option<Pass>,
    last_heartbeat: Instant,
    alive: bool,
    replicas: HashMap<u64, Replica>,
    /// The server reported its data directory lost: it takes no new replica.
    disk_lost: bool,
    /// An operator is draining it: it takes no new replica and its replicas do not count
    /// toward the goal (they are copied elsewhere), though they are still read and copied.
    draining: bool,
    /// Replicas this server reported failing their checksums, as last reported (version 0:
    /// unknown): never listed, never counted, never a copy source, deleted once a quorum of
    /// good replicas of the chunk lives elsewhere. Their version and length still count in a
    /// fence ([`Registry::corrupt_at`]), and their good blocks can restore another's bad ones.
    corrupt: HashMap<u64, Replica>,
    /// Corrupt replicas whose server was told where good copies of their blocks are, until
    /// when: not deleted meanwhile, so that it can restore them in place.
    restoring: HashMap<u64, Instant>,
    /// Replicas restored in place (as last reported before they went corrupt) that no report
    /// has named since: counted toward their chunk's goal by repair, never listed, until the
    /// server's next report says what it holds.
    restored: HashMap<u64, Replica>,
    /// Replicas the master noted itself (a copy, a new chunk) since the last whole pass of
    /// the chunk report: the server may have taken that pass before the replica existed, so
    /// the pass does not drop them; the next one decides.
    noted: ChunkSet,
    /// Chunks whose creation here failed, during this registration or an earlier one with the
    /// same data directory ([`Registry::register_disk`]), named by no report or note since
    /// ([`Registry::never_held`]).
    uncreated: ChunkSet,
    /// The identity of its data directory, as it registered (0: unknown).
    disk_id: u64,
}

/// How many live servers hold a chunk's replicas, by state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplicaCounts {
    /// At the current version, not reported corrupt.
    pub current: usize,
    /// At an older version.
    pub stale: usize,
    /// Reported failing their checksums.
    pub corrupt: usize,
}

/// A map keyed by chunk handle: the scans over every chunk build maps of millions of entries
/// (the seeded maps hash with foldhash, which is fast; handles are random, so hash flooding is
/// no concern).
pub type ChunkMap<V> = HashMap<u64, V>;

/// A set of chunk handles, as [`ChunkMap`].
pub type ChunkSet = HashSet<u64>;

/// Live current replicas of one chunk ([`Registry::holder_counts`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HolderCount {
    /// On servers that are not draining: what counts toward the goal.
    pub counted: u32,
    /// On any live server.
    pub all: u32,
}

/// A registered server as [`Registry::snapshot`] reports it.
#[derive(Clone, Debug)]
pub struct ServerState {
    /// Its addresses and capacity.
    pub info: ServerInfo,
    /// Heartbeating.
    pub alive: bool,
    /// It reported its data directory lost.
    pub disk_lost: bool,
    /// An operator is draining it.
    pub draining: bool,
    /// Time since its last heartbeat.
    pub since_heartbeat: Duration,
    /// The replicas it last reported.
    pub replicas: Vec<Replica>,
}

impl Server {
    /// Whether new replicas may go here.
    fn takes_new(&self) -> bool {
        self.alive && !self.disk_lost && !self.draining
    }
}

/// The membership table.
pub struct Registry {
    dead_after: Duration,
    servers: BTreeMap<String, Server>,
    /// Recent cluster events, for operators.
    pub events: crate::events::Events,
    /// Servers an operator is draining (persisted by the master, restored at start).
    draining: BTreeSet<String>,
}

impl Registry {
    /// An empty table; servers silent for `dead_after` are dead.
    pub fn new(dead_after: Duration) -> Registry {
        Registry {
            dead_after,
            servers: BTreeMap::new(),
            events: crate::events::Events::default(),
            draining: BTreeSet::new(),
        }
    }

    /// How long a server may stay silent before it is dead.
    pub fn dead_after(&self) -> Duration {
        self.dead_after
    }

    /// Starts (`drain`) or cancels draining `id`; false when `id` is neither registered nor
    /// draining.
    pub fn decommission(&mut self, id: &str, drain: bool) -> bool {
        if !self.servers.contains_key(id) && !self.draining.contains(id) {
            return false;
        }
        let changed = if drain {
            self.draining.insert(id.to_string())
        } else {
            self.draining.remove(id)
        };
        if let Some(s) = self.servers.get_mut(id) {
            s.draining = drain;
        }
        if changed {
            let text = if drain {
                format!("chunkserver {id} is being decommissioned")
            } else {
                format!("decommissioning of chunkserver {id} cancelled")
            };
            tracing::warn!(id, drain, "{text}");
            self.events
                .push(if drain { "draining" } else { "recommissioned" }, text);
        }
        true
    }

    /// Servers to drain as soon as they register (kept from before a master restart).
    pub fn restore_draining(&mut self, ids: impl IntoIterator<Item = String>) {
        for id in ids {
            if let Some(s) = self.servers.get_mut(&id) {
                s.draining = true;
            }
            self.draining.insert(id);
        }
    }

    /// Ids of the servers being drained (registered or not).
    pub fn draining(&self) -> HashSet<String> {
        self.draining.iter().cloned().collect()
    }

    /// Every registered server as operators see it, at `now`.
    pub fn snapshot(&self, now: Instant) -> Vec<ServerState> {
        self.servers
            .values()
            .map(|s| ServerState {
                info: s.info.clone(),
                alive: s.alive,
                disk_lost: s.disk_lost,
                draining: s.draining,
                since_heartbeat: now.saturating_duration_since(s.last_heartbeat),
                replicas: s.replicas.values().copied().collect(),
            })
            .collect()
    }

    /// Adds or refreshes a server (a restarted server registers again).
    pub fn register(&mut self, info: ServerInfo, now: Instant) {
        self.register_disk(info, 0, now);
    }

    /// [`Registry::register`] of a server whose data directory is `disk_id` (0: unknown). A
    /// server that registers again with the same known directory keeps its failed creations
    /// ([`Registry::never_held`]): what a directory never held durably it does not hold after
    /// a restart either (seed 73346212800128 of the simulator: the one server that could
    /// witness a chunk's length of 0 had restarted, and the chunk was never sealed). A new or
    /// unknown one may be a replaced disk, which held what it no longer has.
    pub fn register_disk(&mut self, info: ServerInfo, disk_id: u64, now: Instant) {
        tracing::info!(id = %info.id, data = %info.data_addr, repl = %info.repl_addr, "chunkserver registered");
        let (replicas, corrupt, uncreated) = self
            .servers
            .remove(&info.id)
            .map(|s| {
                let same_disk = disk_id != 0 && s.disk_id == disk_id && !s.disk_lost;
                let uncreated = if same_disk {
                    s.uncreated
                } else {
                    ChunkSet::default()
                };
                (s.replicas, s.corrupt, uncreated)
            })
            .unwrap_or_default();
        let draining = self.draining.contains(&info.id);
        self.servers.insert(
            info.id.clone(),
            Server {
                info,
                pass: None,
                last_heartbeat: now,
                alive: true,
                replicas,
                corrupt,
                // A restarted server's restores died with it.
                restoring: HashMap::default(),
                restored: HashMap::default(),
                noted: ChunkSet::default(),
                // What a new disk never held, it may have held before.
                uncreated,
                disk_id,
                disk_lost: false,
                draining,
            },
        );
    }

    /// Records a heartbeat with the server's full chunk report; `false` when the server is not
    /// registered (it must register again).
    pub fn heartbeat(
        &mut self,
        id: &str,
        used_bytes: u64,
        report: Vec<Replica>,
        now: Instant,
    ) -> bool {
        self.heartbeat_with(id, used_bytes, report, false, now)
    }

    /// [`Registry::heartbeat`], with whether the server lost its data directory.
    pub fn heartbeat_with(
        &mut self,
        id: &str,
        used_bytes: u64,
        report: Vec<Replica>,
        disk_lost: bool,
        now: Instant,
    ) -> bool {
        self.heartbeat_piece(id, used_bytes, report, Piece::WHOLE, disk_lost, now)
            .known
    }

    /// Records a heartbeat carrying `piece` of a pass of the server's chunk report: its
    /// replicas are added or updated at once; the piece that completes a pass received whole
    /// and in order drops the server's replicas (and corrupt marks) the pass did not name,
    /// except those the master noted since the last whole pass, and returns the pass's handles. Piece 0 starts a new pass; a piece out of order (one was
    /// lost, or belongs to another pass) abandons the pass, which then drops nothing.
    pub fn heartbeat_piece(
        &mut self,
        id: &str,
        used_bytes: u64,
        report: Vec<Replica>,
        piece: Piece,
        disk_lost: bool,
        now: Instant,
    ) -> Heard {
        let Some(s) = self.servers.get_mut(id) else {
            return Heard::default();
        };
        if !s.alive {
            tracing::info!(id, "chunkserver is back");
            self.events
                .push("server-back", format!("chunkserver {id} is back"));
        }
        if disk_lost && !s.disk_lost {
            tracing::error!(
                id,
                "chunkserver lost its data directory: no new replicas go there"
            );
        }
        s.disk_lost = disk_lost;
        s.alive = true;
        s.last_heartbeat = now;
        s.info.used_bytes = used_bytes;
        if piece.index == 0 {
            s.pass = Some(Pass {
                report_id: piece.report_id,
                next: 0,
                seen: ChunkSet::with_capacity_and_hasher(report.len(), Default::default()),
            });
        } else if s
            .pass
            .take_if(|p| p.report_id != piece.report_id || p.next != piece.index)
            .is_some()
        {
            tracing::warn!(
                id,
                piece = piece.index,
                "a piece of a chunk report was missed: this pass drops no replica"
            );
        }
        // A corrupt replica stays out of the locations for as long as the server keeps it.
        for r in report {
            if let Some(p) = &mut s.pass {
                p.seen.insert(r.handle);
            }
            s.uncreated.remove(&r.handle);
            s.restored.remove(&r.handle);
            match s.corrupt.get_mut(&r.handle) {
                Some(v) => *v = r,
                None => {
                    s.replicas.insert(r.handle, r);
                }
            }
        }
        let complete = match &mut s.pass {
            Some(p) => {
                p.next += 1;
                !piece.more
            }
            None => false,
        };
        let pass = if complete {
            s.pass.take().map(|p| p.seen)
        } else {
            None
        };
        if let Some(seen) = &pass {
            let noted = std::mem::take(&mut s.noted);
            s.replicas
                .retain(|h, _| seen.contains(h) || noted.contains(h));
            s.corrupt.retain(|h, _| seen.contains(h));
            let corrupt = &s.corrupt;
            s.restoring.retain(|h, _| corrupt.contains_key(h));
            s.restored.clear();
        }
        Heard { known: true, pass }
    }

    /// Records that `id`'s replica of `handle` failed its checksums.
    pub fn mark_corrupt(&mut self, id: &str, handle: u64) {
        if let Some(s) = self.servers.get_mut(id) {
            let removed = s.replicas.remove(&handle);
            let known = s.corrupt.entry(handle).or_insert(Replica {
                handle,
                version: 0,
                length: 0,
                sealed: false,
            });
            if let Some(r) = removed
                && r.version >= known.version
            {
                *known = r;
            }
        }
    }

    /// Counts `id`'s replica of `handle` again: its server restored its bad blocks from a
    /// peer's copies and it passes every checksum. Its next report lists it; until then repair
    /// counts it toward the goal as last reported (`restored`), so that no pass in between
    /// copies the chunk for want of it. Returns whether it was marked corrupt.
    pub fn clear_corrupt(&mut self, id: &str, handle: u64) -> bool {
        let Some(s) = self.servers.get_mut(id) else {
            return false;
        };
        s.restoring.remove(&handle);
        let Some(known) = s.corrupt.remove(&handle) else {
            return false;
        };
        if known.version > 0 {
            s.restored.insert(handle, known);
        }
        true
    }

    /// Live servers other than `except` holding a replica of `handle`, with it: where a
    /// corrupt replica may find good copies of its blocks. Those not reported corrupt come
    /// first, then the corrupt ones of known version (their other blocks may be good: a
    /// restore checks every block against its own CRC), each longest first.
    pub fn block_sources(&self, handle: u64, except: &str) -> Vec<(ServerInfo, Replica)> {
        let mut all: Vec<(bool, ServerInfo, Replica)> = self
            .servers
            .values()
            .filter(|s| s.alive && s.info.id != except)
            .filter_map(|s| {
                let good = s.replicas.get(&handle).map(|r| (false, *r));
                let rotten = s.corrupt.get(&handle).filter(|r| r.version > 0);
                let (corrupt, r) = good.or(rotten.map(|r| (true, *r)))?;
                Some((corrupt, s.info.clone(), r))
            })
            .collect();
        all.sort_by(|(c, a, x), (d, b, y)| {
            (c, std::cmp::Reverse(x.length), &a.id).cmp(&(d, std::cmp::Reverse(y.length), &b.id))
        });
        all.into_iter().map(|(_, s, r)| (s, r)).collect()
    }

    /// Keeps `id`'s corrupt replica of `handle` from deletion until `until`: its server is
    /// restoring its bad blocks from the sources it was given. Once per mark: later reports of
    /// the same replica (a restore that failed, found again by the scrubber) do not extend it.
    pub fn restoring_until(&mut self, id: &str, handle: u64, until: Instant) {
        if let Some(s) = self.servers.get_mut(id)
            && s.corrupt.contains_key(&handle)
        {
            s.restoring.entry(handle).or_insert(until);
        }
    }

    /// Ends the restore of `id`'s corrupt replica of `handle` at `now`: its server could not
    /// restore it from the sources it was given. The mark stays, so later reports of the same
    /// replica do not start another grace; the chunk is copied and the replica deleted.
    pub fn cannot_restore(&mut self, id: &str, handle: u64, now: Instant) {
        if let Some(s) = self.servers.get_mut(id)
            && s.corrupt.contains_key(&handle)
        {
            s.restoring.insert(handle, now);
        }
    }

    /// Whether `id` may still be restoring its corrupt replica of `handle` at `now`.
    pub fn is_restoring(&self, id: &str, handle: u64, now: Instant) -> bool {
        self.servers
            .get(id)
            .and_then(|s| s.restoring.get(&handle))
            .is_some_and(|until| now < *until)
    }

    /// Live servers whose replica of `handle` failed its checksums at `version`: its version
    /// and committed length are still sound (only data blocks went bad), so it takes part in
    /// a fence of the chunk, never as a source of its bytes.
    pub fn corrupt_at(&self, handle: u64, version: u64) -> Vec<ServerInfo> {
        self.servers
            .values()
            .filter(|s| s.alive && s.corrupt.get(&handle).map(|r| r.version) == Some(version))
            .map(|s| s.info.clone())
            .collect()
    }

    /// Live servers whose replica of `handle` failed its checksums at a version past
    /// `version`, with that version: fenced with the others when replicas are ahead of the log.
    pub fn corrupt_ahead_of(&self, handle: u64, version: u64) -> Vec<(ServerInfo, u64)> {
        self.servers
            .values()
            .filter(|s| s.alive)
            .filter_map(|s| {
                let v = s.corrupt.get(&handle)?.version;
                (v > version).then(|| (s.info.clone(), v))
            })
            .collect()
    }

    /// The chunks with a replica on a live server reported corrupt.
    pub fn corrupt_chunks(&self) -> ChunkSet {
        self.servers
            .values()
            .filter(|s| s.alive)
            .flat_map(|s| s.corrupt.keys().copied())
            .collect()
    }

    /// Whether `id` reported its replica of `handle` corrupt.
    pub fn is_corrupt(&self, id: &str, handle: u64) -> bool {
        self.servers
            .get(id)
            .is_some_and(|s| s.corrupt.contains_key(&handle))
    }

    /// Marks servers silent for longer than `dead_after` as dead; returns the newly dead.
    pub fn sweep(&mut self, now: Instant) -> Vec<String> {
        let mut dead = Vec::new();
        for (id, s) in &mut self.servers {
            if s.alive && now.saturating_duration_since(s.last_heartbeat) > self.dead_after {
                s.alive = false;
                tracing::warn!(id, "chunkserver missed its heartbeats: dead");
                self.events.push(
                    "server-dead",
                    format!("chunkserver {id} missed its heartbeats: dead"),
                );
                dead.push(id.clone());
            }
        }
        dead
    }

    /// Drops `id`'s replica of `handle` from the table (the master told it to delete it).
    pub fn forget_replica(&mut self, id: &str, handle: u64) {
        if let Some(s) = self.servers.get_mut(id) {
            s.replicas.remove(&handle);
            s.noted.remove(&handle);
        }
    }

    /// Records a replica the master itself just created or bumped, before the server reports it.
    pub fn note_replica(&mut self, id: &str, r: Replica) {
        if let Some(s) = self.servers.get_mut(id) {
            s.uncreated.remove(&r.handle);
            if let Some(v) = s.corrupt.get_mut(&r.handle) {
                // Fenced with the others, still corrupt: it stays out.
                *v = r;
                return;
            }
            s.noted.insert(r.handle);
            s.replicas.insert(r.handle, r);
        }
    }

    /// Notes that creating `handle` on `id` failed, unless `id` already named a replica of
    /// it (the creation may have worked all the same: a report or a note naming it ends this).
    pub fn note_uncreated(&mut self, id: &str, handle: u64) {
        if let Some(s) = self.servers.get_mut(id)
            && !s.replicas.contains_key(&handle)
            && !s.corrupt.contains_key(&handle)
        {
            s.uncreated.insert(handle);
        }
    }

    /// Whether `id` is live, has not lost its disk, failed to create `handle` on the data
    /// directory it runs on and has named no replica of it since: if it now answers that it
    /// holds none, it never held one (a chunkserver's lost disk answers otherwise, and the
    /// master deletes only replicas it was told of).
    pub fn never_held(&self, id: &str, handle: u64) -> bool {
        self.servers
            .get(id)
            .is_some_and(|s| s.alive && !s.disk_lost && s.uncreated.contains(&handle))
    }

    /// The servers for which [`Registry::never_held`] holds of `handle` if they say so.
    pub fn uncreated(&self, handle: u64) -> Vec<ServerInfo> {
        self.servers
            .iter()
            .filter(|(id, _)| self.never_held(id, handle))
            .map(|(_, s)| s.info.clone())
            .collect()
    }

    /// Forgets the failed creations of `handle` (it is sealed: no witness is needed).
    pub fn forget_uncreated(&mut self, handle: u64) {
        for s in self.servers.values_mut() {
            s.uncreated.remove(&handle);
        }
    }

    /// Picks up to `n` live servers for a new chunk: least used first, and a rack not yet
    /// chosen before one already chosen (servers without a rack count as racks of their own).
    pub fn place(&self, n: usize) -> Vec<ServerInfo> {
        self.place_without(n, |_| false)
    }

    /// [`Registry::place`] among the servers that are not `excluded`.
    pub fn place_without(&self, n: usize, excluded: impl Fn(&str) -> bool) -> Vec<ServerInfo> {
        let mut live: Vec<&Server> = self
            .servers
            .values()
            .filter(|s| s.takes_new() && !excluded(&s.info.id))
            .collect();
        live.sort_by(|a, b| {
            let used = |s: &Server| s.info.used_bytes as f64 / s.info.capacity_bytes.max(1) as f64;
            used(a)
                .total_cmp(&used(b))
                .then_with(|| a.info.id.cmp(&b.info.id))
        });
        let mut chosen: Vec<ServerInfo> = Vec::new();
        let mut racks = BTreeSet::new();
        for s in &live {
            if chosen.len() < n && (s.info.rack.is_empty() || racks.insert(s.info.rack.clone())) {
                chosen.push(s.info.clone());
            }
        }
        for s in live {
            if chosen.len() < n && !chosen.iter().any(|c| c.id == s.info.id) {
                chosen.push(s.info.clone());
            }
        }
        chosen
    }

    /// For every chunk of `versions` held at that version by a live server: how many such
    /// replicas are on servers not `draining` (they count toward the goal), and how many in
    /// all. One pass over the reports, cloning nothing.
    pub fn holder_counts(
        &self,
        versions: &ChunkMap<Want>,
        draining: &HashSet<String>,
    ) -> ChunkMap<HolderCount> {
        let mut out: ChunkMap<HolderCount> =
            ChunkMap::with_capacity_and_hasher(versions.len(), Default::default());
        for (id, s) in self.servers.iter().filter(|(_, s)| s.alive) {
            let counts = !draining.contains(id);
            for r in s.replicas.values() {
                if versions.get(&r.handle).is_some_and(|w| w.admits(r)) {
                    let c = out.entry(r.handle).or_default();
                    c.all += 1;
                    c.counted += u32::from(counts);
                }
            }
        }
        out
    }

    /// For every chunk of `versions`: how many live servers not `draining` are restoring a
    /// corrupt replica of it at that version in place at `now` (within the grace their report
    /// began, `RESTORE_GRACE`), or restored one that no report has named since. Repair counts
    /// them toward the goal meanwhile: a restore takes milliseconds, a copy a whole chunk, and
    /// the copy would make one too many once the restored replica counts again.
    pub fn restoring_counts(
        &self,
        versions: &ChunkMap<Want>,
        draining: &HashSet<String>,
        now: Instant,
    ) -> ChunkMap<u32> {
        let mut out = ChunkMap::default();
        for (id, s) in self.servers.iter().filter(|(_, s)| s.alive) {
            if draining.contains(id) {
                continue;
            }
            for (h, until) in &s.restoring {
                let admitted = s
                    .corrupt
                    .get(h)
                    .is_some_and(|r| versions.get(h).is_some_and(|w| w.admits(r)));
                if now < *until && admitted {
                    *out.entry(*h).or_default() += 1;
                }
            }
            for (h, r) in &s.restored {
                if versions.get(h).is_some_and(|w| w.admits(r)) {
                    *out.entry(*h).or_default() += 1;
                }
            }
        }
        out
    }

    /// Where a new replica of `handle` goes: the least-used live server that holds no replica of
    /// it (current or stale) and is not `busy`, on a rack none of `holders` uses if possible.
    pub fn place_new(
        &self,
        handle: u64,
        holders: &[ServerInfo],
        busy: impl Fn(&str) -> bool,
    ) -> Option<ServerInfo> {
        let mut free: Vec<&Server> = self
            .servers
            .values()
            .filter(|s| {
                s.takes_new()
                    && !s.replicas.contains_key(&handle)
                    && !s.corrupt.contains_key(&handle)
                    && !busy(&s.info.id)
            })
            .collect();
        let used = |s: &Server| s.info.used_bytes as f64 / s.info.capacity_bytes.max(1) as f64;
        free.sort_by(|a, b| {
            used(a)
                .total_cmp(&used(b))
                .then_with(|| a.info.id.cmp(&b.info.id))
        });
        let new_rack =
            |s: &&&Server| !s.info.rack.is_empty() && holders.iter().all(|h| h.rack != s.info.rack);
        free.iter()
            .find(new_rack)
            .or(free.first())
            .map(|s| s.info.clone())
    }

    /// Share of its capacity each live server that takes replicas uses, by id.
    pub fn usage(&self) -> Vec<(ServerInfo, f64)> {
        self.servers
            .values()
            .filter(|s| s.takes_new())
            .map(|s| {
                let used = s.info.used_bytes as f64 / s.info.capacity_bytes.max(1) as f64;
                (s.info.clone(), used)
            })
            .collect()
    }

    /// The replicas `id` reported.
    pub fn replicas_of(&self, id: &str) -> Vec<Replica> {
        self.servers
            .get(id)
            .map(|s| s.replicas.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Live servers, by id.
    pub fn live(&self) -> Vec<ServerInfo> {
        self.servers
            .values()
            .filter(|s| s.alive)
            .map(|s| s.info.clone())
            .collect()
    }

    /// Whether `id` reported a replica of `handle` (any version).
    pub fn holds(&self, id: &str, handle: u64) -> bool {
        self.servers
            .get(id)
            .is_some_and(|s| s.replicas.contains_key(&handle))
    }

    /// Whether `id` is registered (alive or not).
    pub fn is_registered(&self, id: &str) -> bool {
        self.servers.contains_key(id)
    }

    /// The identity of server `id`'s data directory as it registered (0: unknown), if it is
    /// registered.
    pub fn disk_id(&self, id: &str) -> Option<u64> {
        self.servers.get(id).map(|s| s.disk_id)
    }

    /// Whether server `id` is registered and alive.
    pub fn is_alive(&self, id: &str) -> bool {
        self.servers.get(id).is_some_and(|s| s.alive)
    }

    /// Live servers holding a current replica of `handle` (`want`: the master's version and
    /// sealed length), with their replica.
    pub fn locations(&self, handle: u64, want: impl Into<Want>) -> Vec<(ServerInfo, Replica)> {
        let want = want.into();
        self.servers
            .values()
            .filter(|s| s.alive)
            .filter_map(|s| {
                let r = s.replicas.get(&handle)?;
                want.admits(r).then(|| (s.info.clone(), *r))
            })
            .collect()
    }

    /// How the live servers hold `handle`, whose current replicas are what `want` admits.
    pub fn health(&self, handle: u64, want: impl Into<Want>) -> ReplicaCounts {
        let want = want.into();
        let mut c = ReplicaCounts::default();
        for s in self.servers.values().filter(|s| s.alive) {
            if s.corrupt.contains_key(&handle) {
                c.corrupt += 1;
            } else if let Some(r) = s.replicas.get(&handle) {
                if want.admits(r) {
                    c.current += 1;
                } else if want.is_stale(r) {
                    c.stale += 1;
                }
            }
        }
        c
    }

    /// Live servers that take new replicas and hold one of sealed `handle` at its version,
    /// unsealed and shorter than its sealed length: a prefix of it (at one version, replicas
    /// hold prefixes of one sequence of appends), so a catch-up makes it current without a
    /// full copy. Empty for an unsealed chunk.
    pub fn short_of(&self, handle: u64, want: impl Into<Want>) -> Vec<ServerInfo> {
        let want = want.into();
        let Some(sealed) = want.sealed else {
            return Vec::new();
        };
        self.servers
            .values()
            .filter(|s| s.takes_new() && !s.corrupt.contains_key(&handle))
            .filter(|s| {
                s.replicas
                    .get(&handle)
                    .is_some_and(|r| r.version == want.version && !r.sealed && r.length < sealed)
            })
            .map(|s| s.info.clone())
            .collect()
    }

    /// Live servers holding `handle` at a version above `version` (one a bump reached that the
    /// log does not hold yet), each with that version.
    pub fn ahead_of(&self, handle: u64, version: u64) -> Vec<(ServerInfo, u64)> {
        self.servers
            .values()
            .filter(|s| s.alive)
            .filter_map(|s| {
                let r = s.replicas.get(&handle)?;
                (r.version > version).then(|| (s.info.clone(), r.version))
            })
            .collect()
    }

    /// Live servers holding a replica of `handle` not reported corrupt at a version in
    /// `from..below`.
    pub fn held_between(&self, handle: u64, from: u64, below: u64) -> Vec<ServerInfo> {
        self.servers
            .values()
            .filter(|s| s.alive)
            .filter(|s| {
                s.replicas
                    .get(&handle)
                    .is_some_and(|r| (from..below).contains(&r.version))
            })
            .map(|s| s.info.clone())
            .collect()
    }

    /// Live servers holding a current replica of `handle`.
    pub fn holders_of(&self, handle: u64, want: impl Into<Want>) -> Vec<ServerInfo> {
        self.locations(handle, want)
            .into_iter()
            .map(|(s, _)| s)
            .collect()
    }

    /// `(server, handle)` pairs whose replica is stale (older than the master's version, or at
    /// it but short of the sealed length), given `current(handle)` (None: the chunk is
    /// unknown).
    pub fn stale(&self, current: impl Fn(u64) -> Option<Want>) -> BTreeSet<(String, u64)> {
        let mut out = BTreeSet::new();
        for (id, s) in &self.servers {
            for r in s.replicas.values() {
                if current(r.handle).is_some_and(|w| w.is_stale(r)) {
                    out.insert((id.clone(), r.handle));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
