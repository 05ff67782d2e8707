//! The nemesis: a fault schedule drawn from the seed, applied between simulation steps.
//!
//! Faults: a crash (power cut: the host's simulated disk loses what was not synced, each write
//! kept, dropped or torn by the seed) and restart of the master or a chunkserver; a partition
//! between two hosts, both ways or one way; a pause (every message to and from a host held,
//! then delivered late, as after a stop-the-world pause); slow links (message latency up to
//! 200 ms); a chunkserver's disk full, or its fsyncs failing (and forgetting the writes they
//! covered); a host's clock off by up to a tenth of a lease; a bit flipped at rest in a
//! chunkserver's chunk file (at most two a run, noted in [`Flips`]: the checker waits for the
//! scrubber or a reader to find each); a chunkserver's disk slow (rounds of up to
//! [`SLOW_DISK`]; every disk takes up to [`DISK_LATENCY`] otherwise).
//!
//! Some faults aim: at the roles of the lease granted last (pause, crash or cut the primary
//! from the master or from a secondary, slow a secondary's disk), and at moments the
//! production code logs ([`crate::cues`]): when a primary seals, its report to the master is
//! lost or the master crashes; as a primary finds a secondary lagging (a relegation follows),
//! the primary is paused or crashed, the messages between it and the master are held (the
//! version change reaches it late, while it appends), or it and the lease's other secondary
//! are cut apart (that one misses appends the lagging one takes, as the relegation measures
//! and fences); as a primary is left alone with an append it committed (its secondaries
//! failed to), it is cut from the master and the other servers past its lease while clients
//! still reach it (the next lease goes on without its tail, which no reader may have seen;
//! at most two a run, beside the four other strikes); as the master has measured the good
//! replicas to relegate a lagging one, the messages between it and the primary are held and
//! the primary is cut from one secondary (the fence reaches that one at once, the primary
//! late, and the primary appends meanwhile with the lagging one only), or the primary's
//! messages to a good secondary are held until that secondary starts its version change
//! ([`Cue::VersionChanging`]), so the PREPAREs sent as the fence lands reach it in the middle
//! of the change (at most two of these two kinds a run); and as the master fences any chunk
//! (a new lease, a seal of its own), the messages from the chunk's last primary to one of its
//! secondaries are sometimes held the same way (finding 5's own interleaving: a new lease
//! granted while the old primary still appends; at most three a run).
//!
//! Faults overlap; at most two servers are down at once. Everything heals when the load
//! ends.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::cluster::{Cluster, LEASE, MASTER, SERVERS};
use crate::cues::{Cue, Cues};
use crate::trace::Trace;

/// The client hosts (partitions may cut them off too).
pub const CLIENTS: [&str; 2] = ["client1", "client2"];

/// One fault.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Power cut of a server host, restarted when it heals.
    Crash(&'static str),
    /// No messages between two hosts, either way.
    Partition(&'static str, &'static str),
    /// No messages from the first host to the second.
    Oneway(&'static str, &'static str),
    /// Every message to and from a host held until it heals.
    Pause(&'static str),
    /// Every message between two hosts held until it heals, then delivered (a slow link).
    Hold(&'static str, &'static str),
    /// Message latency up to 200 ms everywhere.
    Slow,
    /// A chunkserver's disk refuses to grow.
    DiskFull(&'static str),
    /// A chunkserver's fsyncs fail (parts per million).
    SyncFailures(&'static str, u32),
    /// A host's clock runs this many milliseconds off.
    Skew(&'static str, i64),
    /// One bit of a chunk file of a chunkserver flips at rest; the draw picks which.
    FlipBit(&'static str, u64),
    /// A chunkserver cut from the master and the other chunkservers; clients still reach it.
    Isolate(&'static str),
    /// A chunkserver's disk takes up to [`SLOW_DISK`] a round (a failing disk, a noisy
    /// neighbour): its replicas lag.
    SlowDisk(&'static str),
    /// A fault aimed at the roles of the newest lease, resolved when it starts.
    Aimed(Aim),
}

/// Where an aimed fault strikes: the roles of the lease the master granted last
/// ([`Cues::newest`]).
#[derive(Clone, Copy, Debug)]
pub enum Aim {
    /// Every message to and from the primary held.
    PausePrimary,
    /// The primary's messages to the master lost (its seal reports, heartbeats, lagging
    /// reports), while clients and secondaries still reach it.
    CutPrimaryFromMaster,
    /// The primary and one secondary cut from each other.
    CutPrimaryFromSecondary,
    /// A secondary's disk slow.
    SlowSecondary,
    /// The primary's power cut.
    CrashPrimary,
}

/// A bit the nemesis flipped at rest.
#[derive(Clone, Debug)]
pub struct Flip {
    /// The chunkserver.
    pub server: &'static str,
    /// The chunk file.
    pub path: PathBuf,
    /// The chunk's handle.
    pub handle: u64,
    /// The byte flipped.
    pub offset: u64,
    /// Its value before.
    pub was: u8,
}

/// The bits flipped so far, shared with the checker.
pub type Flips = Arc<Mutex<Vec<Flip>>>;

/// At most this many bits flip in a run: one replica of a chunk that two flips hit leaves a
/// third, so no flip schedule can destroy data by itself.
const MAX_FLIPS: usize = 2;
/// A slow disk's rounds take up to this long.
pub const SLOW_DISK: Duration = Duration::from_millis(300);
/// Every disk's rounds take up to this long outside a slow-disk fault.
pub const DISK_LATENCY: Duration = Duration::from_millis(2);
/// At most this many faults a run strike at cues.
const MAX_STRIKES: usize = 4;
/// At most this many primaries a run are isolated at [`Cue::PrimaryOnly`] (on top of those).
const MAX_ISOLATIONS: usize = 2;
/// Holds into a version change struck at the master's fences, at most, a run.
const MAX_CHANGES: usize = 3;

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Crash(h) => write!(f, "crash {h}"),
            Fault::Partition(a, b) => write!(f, "partition {a} | {b}"),
            Fault::Oneway(a, b) => write!(f, "partition {a} -> {b}"),
            Fault::Pause(h) => write!(f, "pause {h}"),
            Fault::Hold(a, b) => write!(f, "messages between {a} and {b} held"),
            Fault::Slow => write!(f, "slow network"),
            Fault::DiskFull(h) => write!(f, "disk full on {h}"),
            Fault::SyncFailures(h, ppm) => write!(f, "fsyncs failing on {h} ({ppm} ppm)"),
            Fault::Skew(h, ms) => write!(f, "clock of {h} {ms:+} ms"),
            Fault::FlipBit(h, _) => write!(f, "a bit flip at rest on {h}"),
            Fault::SlowDisk(h) => write!(f, "slow disk on {h}"),
            Fault::Isolate(h) => write!(f, "{h} cut from the master and the other servers"),
            Fault::Aimed(a) => write!(f, "aimed: {a:?}"),
        }
    }
}

/// A fault, when it starts and how long it lasts.
#[derive(Clone, Debug)]
pub struct Planned {
    /// Start, in simulated time.
    pub at: Duration,
    /// Length.
    pub lasts: Duration,
    /// What.
    pub fault: Fault,
}

/// The faults of a run of `seed` whose load lasts `load`.
pub fn plan(seed: u64, load: Duration) -> Vec<Planned> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x006e_656d_6573_6973);
    let hosts: Vec<&'static str> = std::iter::once(MASTER)
        .chain(SERVERS)
        .chain(CLIENTS)
        .collect();
    let servers: Vec<&'static str> = std::iter::once(MASTER).chain(SERVERS).collect();
    let mut out: Vec<Planned> = Vec::new();
    let mut t = Duration::from_millis(rng.random_range(500..2000));
    while t < load {
        let lasts = Duration::from_millis(rng.random_range(300..8000));
        let pick = |rng: &mut StdRng, from: &[&'static str]| from[rng.random_range(0..from.len())];
        let roll = rng.random_range(0..120);
        let fault = match roll {
            0..30 => Fault::Crash(pick(&mut rng, &servers)),
            30..55 => {
                let (a, b) = (pick(&mut rng, &hosts), pick(&mut rng, &hosts));
                if a == b {
                    continue;
                }
                if roll < 45 {
                    Fault::Partition(a, b)
                } else {
                    Fault::Oneway(a, b)
                }
            }
            55..65 => Fault::Pause(pick(&mut rng, &servers)),
            65..72 => Fault::Slow,
            72..80 => Fault::DiskFull(pick(&mut rng, &SERVERS)),
            80..88 => {
                Fault::SyncFailures(pick(&mut rng, &SERVERS), rng.random_range(1..5) * 100_000)
            }
            88..95 => {
                let limit = LEASE.as_millis() as i64 / 10;
                Fault::Skew(pick(&mut rng, &hosts), rng.random_range(-limit..=limit))
            }
            95..100 => {
                let flips = out.iter().filter(|p| matches!(p.fault, Fault::FlipBit(..)));
                if flips.count() >= MAX_FLIPS {
                    continue;
                }
                Fault::FlipBit(pick(&mut rng, &SERVERS), rng.random())
            }
            100..105 => Fault::SlowDisk(pick(&mut rng, &SERVERS)),
            _ => Fault::Aimed(match roll {
                105..108 => Aim::PausePrimary,
                108..112 => Aim::CutPrimaryFromMaster,
                112..115 => Aim::CutPrimaryFromSecondary,
                115..118 => Aim::SlowSecondary,
                _ => Aim::CrashPrimary,
            }),
        };
        let down_then = |p: &Planned| downs(&p.fault) && p.at <= t && t < p.at + p.lasts;
        if downs(&fault) && out.iter().filter(|p| down_then(p)).count() >= 2 {
            continue;
        }
        out.push(Planned {
            at: t,
            lasts,
            fault,
        });
        t += Duration::from_millis(rng.random_range(200..3000));
    }
    out
}

/// Whether `f` takes a server down (a crash, an aimed crash).
fn downs(f: &Fault) -> bool {
    matches!(f, Fault::Crash(_) | Fault::Aimed(Aim::CrashPrimary))
}

/// The host named `name` (a name a cue carries), if it is a server.
fn server(name: &str) -> Option<&'static str> {
    SERVERS.into_iter().find(|s| *s == name)
}

/// A secondary of `lease` other than `besides` (the one last found lagging), at random.
fn other_secondary(
    rng: &mut StdRng,
    lease: &crate::cues::Lease,
    besides: Option<&String>,
) -> Option<&'static str> {
    let all: Vec<&'static str> = lease
        .secondaries
        .iter()
        .filter(|s| Some(*s) != besides)
        .filter_map(|s| server(s))
        .collect();
    (!all.is_empty()).then(|| all[rng.random_range(0..all.len())])
}

/// Applies a plan to a running simulation, and strikes at cues.
pub struct Nemesis {
    plan: Vec<Planned>,
    /// The bits flipped, for the checker.
    flips: Flips,
    /// What the production code logged that aimed faults wait for.
    cues: Cues,
    /// Draws for aiming and striking, by the seed.
    rng: StdRng,
    next: usize,
    /// Faults in force, with when they heal.
    active: Vec<(Duration, Fault)>,
    /// Faults struck at cues so far, and at most.
    strikes: usize,
    max_strikes: usize,
    /// Chunks whose primary was isolated at a [`Cue::PrimaryOnly`].
    isolated: std::collections::BTreeSet<u64>,
    /// Strikes at [`Cue::Measured`] so far.
    fences: usize,
    /// Holds struck at a fence, `(chunk, held secondary)`, to release when that secondary
    /// starts its version change.
    into_the_change: Vec<(u64, &'static str)>,
    /// Holds struck at a master's fence so far ([`Nemesis::hold_into_the_change`]; those at a
    /// relegation's count toward `fences`).
    changes: usize,
    /// The secondary last found lagging on each chunk.
    lagging: std::collections::BTreeMap<u64, String>,
    /// Faults applied.
    pub applied: usize,
}

impl Nemesis {
    /// A nemesis of the run of `seed`: with `faults`, it applies the run's [`plan`] and strikes
    /// at `cues`; it notes the bits it flips in `flips`.
    pub fn new(seed: u64, load: Duration, faults: bool, flips: Flips, cues: Cues) -> Nemesis {
        Nemesis {
            plan: if faults { plan(seed, load) } else { Vec::new() },
            max_strikes: if faults { MAX_STRIKES } else { 0 },
            flips,
            cues,
            rng: StdRng::seed_from_u64(seed ^ 0x0073_7472_696b_6573),
            next: 0,
            active: Vec::new(),
            strikes: 0,
            isolated: Default::default(),
            fences: 0,
            into_the_change: Vec::new(),
            changes: 0,
            lagging: Default::default(),
            applied: 0,
        }
    }

    /// Plans a fault for each cue it strikes at: at a seal, the primary's report to the
    /// master lost or the master crashed (finding 1 of the replication review); at a lagging
    /// secondary, as the relegation runs, the primary paused or crashed, its messages with
    /// the master held (finding 4: the bump reaches it late, while it appends), or it and the
    /// other secondary cut apart (finding 4: that one misses appends the lagging one takes,
    /// and comes out of the bump short); at a primary
    /// left alone with an append it committed, the primary cut from the master and the other
    /// servers past its lease, readers still reaching it (finding 12: its tail must stay
    /// unseen, as the next lease writes other bytes there); as the master has measured the
    /// replicas it relegates to, its messages with the primary held and the primary cut from
    /// a secondary (finding 4: that secondary comes out of the fence short), or the primary's
    /// messages to a good secondary held until that secondary starts its version change
    /// (finding 5: its PREPAREs land in the middle of the change).
    fn strike(&mut self, now: Duration, t: &Trace) {
        for cue in self.cues.take() {
            if let Cue::VersionChanging { handle, host } = &cue {
                self.release_into_the_change(*handle, host, now, t);
                continue;
            }
            if let Cue::Lagging { handle, peer } = &cue {
                self.lagging.insert(*handle, peer.clone());
            }
            if let Cue::Fencing { handle } = cue {
                self.hold_into_the_change(handle, now, t);
                continue;
            }
            // Isolations and strikes at a relegation's fence have budgets of their own: their
            // cues are rarer, and come late.
            let rare = matches!(cue, Cue::PrimaryOnly { .. } | Cue::Measured { .. });
            if self.max_strikes == 0
                || !rare && self.strikes >= self.max_strikes
                || matches!(cue, Cue::PrimaryOnly { .. }) && self.isolated.len() >= MAX_ISOLATIONS
                || matches!(cue, Cue::Measured { .. }) && self.fences >= MAX_ISOLATIONS
            {
                continue;
            }
            let roll = self.rng.random_range(0..100);
            let (handle, delay) = match cue {
                Cue::Sealed { handle } if roll < 30 => (handle, Duration::ZERO),
                Cue::Lagging { handle, .. } if roll < 20 => (
                    handle,
                    Duration::from_millis(self.rng.random_range(0..1500)),
                ),
                // The relegation follows the primary's next heartbeat.
                Cue::Lagging { handle, .. } if roll < 50 => {
                    (handle, Duration::from_millis(self.rng.random_range(0..300)))
                }
                Cue::Lagging { handle, .. } if roll < 70 => (handle, Duration::ZERO),
                // Once per chunk: the cue comes once per append that failed so.
                Cue::PrimaryOnly { handle } if roll < 60 && self.isolated.insert(handle) => {
                    (handle, Duration::ZERO)
                }
                Cue::Measured { handle } if roll < 90 => (handle, Duration::ZERO),
                _ => continue,
            };
            // At a relegation's fence, the primary's messages to a good secondary held until
            // that secondary starts its version change: the PREPAREs sent as the fence lands
            // reach it in the middle of the change (finding 5: staged at the old version, then
            // committed at the new one, beside other bytes on the others).
            let into_the_change = matches!(cue, Cue::Measured { .. }) && roll >= 70;
            let Some(lease) = self.cues.lease(handle) else {
                continue;
            };
            let Some(primary) = server(&lease.primary) else {
                continue;
            };
            // A secondary of the lease other than the one found lagging (at a relegation's
            // fence, any: which one lags is not in the cue).
            let other = match &cue {
                Cue::Lagging { peer, .. } => lease
                    .secondaries
                    .iter()
                    .filter(|s| *s != peer)
                    .find_map(|s| server(s)),
                Cue::Measured { handle } => {
                    // Into the change: one the fence reaches (not the one last found lagging).
                    let lagging = self.lagging.get(handle).filter(|_| into_the_change);
                    other_secondary(&mut self.rng, &lease, lagging)
                }
                _ => None,
            };
            let fault = match cue {
                Cue::Sealed { .. } if roll < 18 => Fault::Oneway(primary, MASTER),
                Cue::Sealed { .. } => Fault::Crash(MASTER),
                Cue::Lagging { .. } if roll < 8 => Fault::Crash(primary),
                Cue::Lagging { .. } if roll < 20 => Fault::Pause(primary),
                Cue::Lagging { .. } if roll < 50 => Fault::Hold(MASTER, primary),
                Cue::Lagging { .. } => match other {
                    Some(other) => Fault::Partition(primary, other),
                    None => continue,
                },
                Cue::PrimaryOnly { .. } => Fault::Isolate(primary),
                Cue::Measured { .. } if into_the_change => match other {
                    Some(other) => Fault::Hold(primary, other),
                    None => continue,
                },
                // The fence reaches the secondary at once and the primary late, while the
                // primary appends with the lagging secondary only: the other comes out of the
                // fence short (finding 4).
                Cue::Measured { .. } => Fault::Hold(MASTER, primary),
                Cue::VersionChanging { .. } | Cue::Fencing { .. } => continue,
            };
            let beside = match cue {
                Cue::Measured { .. } if into_the_change => None,
                Cue::Measured { .. } => match other {
                    Some(other) => Some(Fault::Partition(primary, other)),
                    None => continue,
                },
                _ => None,
            };
            self.strikes += usize::from(!rare);
            self.fences += usize::from(beside.is_some() || into_the_change);
            let lasts = match fault {
                // Released as the fence reaches the held secondary (finding 5), or after this.
                Fault::Hold(_, other) if into_the_change => {
                    self.into_the_change.push((handle, other));
                    Duration::from_millis(self.rng.random_range(100..500))
                }
                // The master's version change reaches the primary late, while it appends.
                Fault::Hold(..) => Duration::from_millis(self.rng.random_range(50..1500)),
                // The other secondary misses appends the lagging one takes, while the
                // relegation measures and fences (finding 4).
                Fault::Partition(..) => Duration::from_millis(self.rng.random_range(100..1500)),
                // Past the lease (the master waits it out), so that the next lease goes to
                // the others, while readers still reach the primary's tail (finding 12).
                Fault::Isolate(_) => {
                    LEASE + Duration::from_millis(self.rng.random_range(1000..6000))
                }
                _ => Duration::from_millis(self.rng.random_range(300..5000)),
            };
            t.at(
                now,
                format_args!("nemesis: {cue:?} on {primary}: {fault} in {delay:?}"),
            );
            let at = now + delay;
            for fault in std::iter::once(fault).chain(beside) {
                let i = self.plan[self.next..]
                    .iter()
                    .position(|p| p.at > at)
                    .map_or(self.plan.len(), |i| self.next + i);
                self.plan.insert(i, Planned { at, lasts, fault });
            }
        }
    }

    /// As the master fences `handle` (any lease decision: the review's finding 5 came from
    /// a new lease granted while the old primary still appended), sometimes holds the messages
    /// from the chunk's last primary to one of its secondaries until that secondary starts its
    /// version change, at most [`MAX_CHANGES`] a run.
    fn hold_into_the_change(&mut self, handle: u64, now: Duration, t: &Trace) {
        if self.max_strikes == 0 || self.changes >= MAX_CHANGES {
            return;
        }
        if self.rng.random_range(0..100) >= 30 {
            return;
        }
        let Some(lease) = self.cues.lease(handle) else {
            return;
        };
        let Some(primary) = server(&lease.primary) else {
            return;
        };
        let lagging = self.lagging.get(&handle);
        let Some(other) = other_secondary(&mut self.rng, &lease, lagging) else {
            return;
        };
        let fault = Fault::Hold(primary, other);
        let lasts = Duration::from_millis(self.rng.random_range(100..500));
        self.changes += 1;
        self.into_the_change.push((handle, other));
        t.at(
            now,
            format_args!(
                "nemesis: Fencing {{ handle: {handle} }}: {fault} until {other} changes the version"
            ),
        );
        let i = self.plan[self.next..]
            .iter()
            .position(|p| p.at > now)
            .map_or(self.plan.len(), |i| self.next + i);
        self.plan.insert(
            i,
            Planned {
                at: now,
                lasts,
                fault,
            },
        );
    }

    /// Heals a hold struck at a fence on `handle` now that `host`, the secondary it holds
    /// messages to, starts its version change: the PREPAREs held land in the middle of it.
    fn release_into_the_change(&mut self, handle: u64, host: &str, now: Duration, t: &Trace) {
        let Some(i) = self
            .into_the_change
            .iter()
            .position(|(h, s)| *h == handle && *s == host)
        else {
            return;
        };
        let (_, held) = self.into_the_change.swap_remove(i);
        for (heals, f) in &mut self.active {
            if matches!(f, Fault::Hold(_, b) if *b == held) {
                t.at(
                    now,
                    format_args!("nemesis: {held} changes the version of {handle}: release {f}"),
                );
                *heals = now;
            }
        }
    }

    /// The concrete fault `aim` strikes with now, if the newest lease names its roles.
    fn resolve(&mut self, aim: Aim) -> Option<Fault> {
        let l = self.cues.newest()?;
        let primary = server(&l.primary)?;
        let secondaries: Vec<&'static str> =
            l.secondaries.iter().filter_map(|s| server(s)).collect();
        let secondary = (!secondaries.is_empty())
            .then(|| secondaries[self.rng.random_range(0..secondaries.len())]);
        Some(match aim {
            Aim::PausePrimary => Fault::Pause(primary),
            Aim::CutPrimaryFromMaster => Fault::Oneway(primary, MASTER),
            Aim::CutPrimaryFromSecondary => Fault::Partition(primary, secondary?),
            Aim::SlowSecondary => Fault::SlowDisk(secondary?),
            Aim::CrashPrimary => Fault::Crash(primary),
        })
    }

    /// Starts the faults due and heals the ones that ran out, at simulated time `now`.
    pub fn tick(&mut self, now: Duration, sim: &mut turmoil::Sim<'_>, c: &Cluster, t: &Trace) {
        self.strike(now, t);
        while let Some(p) = self.plan.get(self.next)
            && p.at <= now
        {
            let mut p = p.clone();
            self.next += 1;
            if let Fault::Aimed(aim) = p.fault {
                match self.resolve(aim) {
                    Some(f) => p.fault = f,
                    None => {
                        t.at(now, format_args!("nemesis: no lease to aim {aim:?} at"));
                        continue;
                    }
                }
            }
            if self.conflicts(&p.fault) || downs(&p.fault) && self.down() >= 2 {
                continue;
            }
            if let Fault::FlipBit(server, draw) = p.fault {
                match flip(server, draw, c) {
                    Some(f) => {
                        t.at(
                            now,
                            format_args!(
                                "nemesis: bit flipped at rest on {server}: chunk {} byte {}",
                                f.handle, f.offset
                            ),
                        );
                        self.flips.lock().push(f);
                        self.applied += 1;
                    }
                    None => t.at(
                        now,
                        format_args!("nemesis: no chunk on {server} to flip a bit of"),
                    ),
                }
                continue;
            }
            t.at(now, format_args!("nemesis: {} for {:?}", p.fault, p.lasts));
            start(&p.fault, sim, c);
            self.applied += 1;
            self.active.push((now + p.lasts, p.fault));
        }
        let mut i = 0;
        while i < self.active.len() {
            if self.active[i].0 <= now {
                let (_, f) = self.active.remove(i);
                t.at(now, format_args!("nemesis: heal {f}"));
                heal(&f, sim, c);
            } else {
                i += 1;
            }
        }
    }

    /// Heals every fault in force and stops the plan.
    pub fn heal_all(&mut self, now: Duration, sim: &mut turmoil::Sim<'_>, c: &Cluster, t: &Trace) {
        self.next = self.plan.len();
        for (_, f) in self.active.drain(..) {
            t.at(now, format_args!("nemesis: heal {f}"));
            heal(&f, sim, c);
        }
    }

    /// Whether the nemesis holds host `h` down (crashed, not yet restarted).
    pub fn holds_down(&self, h: &str) -> bool {
        self.active
            .iter()
            .any(|(_, f)| matches!(f, Fault::Crash(x) if *x == h))
    }

    /// Servers held down now.
    fn down(&self) -> usize {
        self.active.iter().filter(|(_, f)| downs(f)).count()
    }

    /// Whether `f` touches what a fault in force already holds (a crashed host crashed again,
    /// a link cut twice), which healing one of them would undo early.
    fn conflicts(&self, f: &Fault) -> bool {
        self.active.iter().any(|(_, a)| match (a, f) {
            (Fault::Crash(x), Fault::Crash(y))
            | (Fault::Pause(x), Fault::Pause(y))
            | (Fault::SlowDisk(x), Fault::SlowDisk(y)) => x == y,
            (
                Fault::Partition(a, b) | Fault::Oneway(a, b) | Fault::Hold(a, b),
                Fault::Partition(c, d) | Fault::Oneway(c, d) | Fault::Hold(c, d),
            ) => (a == c && b == d) || (a == d && b == c),
            (Fault::Slow, Fault::Slow) => true,
            (
                Fault::DiskFull(x) | Fault::SyncFailures(x, _),
                Fault::DiskFull(y) | Fault::SyncFailures(y, _),
            ) => x == y,
            (
                Fault::Pause(x) | Fault::Isolate(x),
                Fault::Partition(a, b) | Fault::Oneway(a, b) | Fault::Hold(a, b),
            )
            | (
                Fault::Partition(a, b) | Fault::Oneway(a, b) | Fault::Hold(a, b),
                Fault::Pause(x) | Fault::Isolate(x),
            ) => x == a || x == b,
            (Fault::Isolate(_), Fault::Isolate(_))
            | (Fault::Isolate(_), Fault::Pause(_))
            | (Fault::Pause(_), Fault::Isolate(_)) => true,
            _ => false,
        })
    }
}

/// Flips one bit of one durable byte of one chunk file of `server`, picked by `draw`.
fn flip(server: &'static str, draw: u64, c: &Cluster) -> Option<Flip> {
    let disk = &c.disks[server];
    let dir = crate::cluster::data_dir();
    let chunks: Vec<(PathBuf, u64, u64)> = disk
        .files()
        .into_iter()
        .filter(|p| p.parent() == Some(dir.as_path()))
        .filter_map(|p| {
            let handle = p.file_name()?.to_str()?.parse::<u64>().ok()?;
            let len = disk.durable_len(&p).filter(|l| *l > 0)?;
            Some((p, handle, len))
        })
        .collect();
    if chunks.is_empty() {
        return None;
    }
    let (path, handle, len) = chunks[(draw % chunks.len() as u64) as usize].clone();
    let offset = (draw >> 16) % len;
    let was = disk.durable_byte(&path, offset)?;
    disk.flip_bit(&path, offset, (draw >> 8) as u8 % 8)
        .then_some(Flip {
            server,
            path,
            handle,
            offset,
            was,
        })
}

/// The master and the servers other than `h`.
fn peers(h: &str) -> Vec<&'static str> {
    std::iter::once(MASTER)
        .chain(SERVERS)
        .filter(|x| *x != h)
        .collect()
}

fn others(h: &str) -> Vec<&'static str> {
    std::iter::once(MASTER)
        .chain(SERVERS)
        .chain(CLIENTS)
        .filter(|x| *x != h)
        .collect()
}

fn start(f: &Fault, sim: &mut turmoil::Sim<'_>, c: &Cluster) {
    match f {
        Fault::Crash(h) => {
            // The disk first: what the dying software still writes goes nowhere.
            c.disks[*h].crash();
            sim.crash(*h);
        }
        Fault::Partition(a, b) => sim.partition(*a, *b),
        Fault::Oneway(a, b) => sim.partition_oneway(*a, *b),
        Fault::Pause(h) => {
            for o in others(h) {
                sim.hold(*h, o);
            }
        }
        Fault::Hold(a, b) => sim.hold(*a, *b),
        Fault::Slow => sim.set_max_message_latency(Duration::from_millis(200)),
        Fault::DiskFull(h) => c.disks[*h].set_capacity(Some(0)),
        Fault::SyncFailures(h, ppm) => c.disks[*h].set_sync_failure_ppm(*ppm),
        Fault::Skew(h, ms) => c.set_skew(h, *ms),
        Fault::SlowDisk(h) => c.disks[*h].set_latency(SLOW_DISK),
        Fault::Isolate(h) => {
            for o in peers(h) {
                sim.partition(*h, o);
            }
        }
        Fault::FlipBit(..) | Fault::Aimed(_) => {}
    }
}

fn heal(f: &Fault, sim: &mut turmoil::Sim<'_>, c: &Cluster) {
    match f {
        Fault::Crash(h) => sim.bounce(*h),
        Fault::Partition(a, b) => sim.repair(*a, *b),
        Fault::Oneway(a, b) => sim.repair_oneway(*a, *b),
        Fault::Pause(h) => {
            for o in others(h) {
                sim.release(*h, o);
            }
        }
        Fault::Hold(a, b) => sim.release(*a, *b),
        Fault::Slow => sim.set_max_message_latency(crate::run::MAX_LATENCY),
        Fault::DiskFull(h) => c.disks[*h].set_capacity(None),
        Fault::SyncFailures(h, _) => c.disks[*h].set_sync_failure_ppm(0),
        Fault::Skew(h, _) => c.set_skew(h, 0),
        Fault::SlowDisk(h) => c.disks[*h].set_latency(DISK_LATENCY),
        Fault::Isolate(h) => {
            for o in peers(h) {
                sim.repair(*h, o);
            }
        }
        Fault::FlipBit(..) | Fault::Aimed(_) => {}
    }
}
