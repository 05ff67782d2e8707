//! gfs-sim: deterministic simulation of a whole gfs-rs cluster.
//!
//! The production master, chunkservers (data plane, replication, control, chunk store) and
//! client run unchanged, each on a host of [turmoil]'s simulation, through the seams of
//! `gfs-host`: turmoil's simulated TCP for the network (tonic, hyper and the data plane run
//! over it), a [`SimDisk`](gfs_util::disk::sim::SimDisk) per host that loses unsynced writes on
//! a crash, a clock per host that reads simulated time plus a skew, no threads (the stores run
//! their committers inline on a disk without threads, after the disk's seeded latency;
//! blocking work runs inline). One seed
//! fixes everything: turmoil's network and host order, tokio's scheduler choices (the
//! workspace builds with `--cfg tokio_unstable`, so turmoil seeds each host's runtime), every
//! draw of [`gfs_util::random`] and every hash map's order ([`gfs_util::collections`]).
//!
//! A run ([`run()`]): one master, four chunkservers (replication 3, quorum 2, 1 MiB chunks), two
//! client hosts, each with three appenders record-appending self-describing records (small,
//! and one in ten near a quarter chunk, so chunks seal and pad) to one file, one putter writing
//! whole files of half a chunk to two and a half chunks with the streaming writer and getting
//! each back, one reader of the appenders' whole file, and one task creating, deleting and
//! renaming four paths, for the load period, under the [`nemesis`] (random faults, and faults
//! aimed at a lease's roles at the moments the servers log, [`cues`]); every half second the
//! disks are checked: each acknowledged record durable on a quorum of servers ([`durability`]);
//! then every fault heals, the checker client waits for every chunkserver to be alive and the
//! file's `fsck` to come back clean (liveness, bounded) and for the master's view of the file
//! to hold still, reads the file and that view and lists the paths, every server loses power,
//! and the checks run: the history checker of gfs-testkit against what survives on the disks
//! (every acknowledged record exactly once at its offset, nothing never sent, no duplicate, the
//! replicas the master counts current and byte-identical, fsck's verdict matching the disks),
//! every bit the nemesis flipped at rest found (by the scrubber or a reader) and its replica
//! replaced, every whole-file read during the load a prefix of the file at the end, every put file
//! healthy and read back (an acknowledged put exactly its bytes, as its get during the load
//! was; a failed one a prefix of them), the namespace calls' linearizability
//! ([`linearizable`]), and that no record append or put failed before its deadline with
//! anything but "outcome unknown": every fault heals, so one that gives up early is a defect (a
//! full or failing disk on a primary, a lease change, finding 13 of the replication review; a
//! chunk the master sealed under a put).
//!
//! Over TCP nothing is reordered or duplicated below the RPC layer; duplicates and reorders
//! come from retries (the client's, the primary's re-sent phases) and from delays (slow links,
//! held messages), which the nemesis makes.
//!
//! Every run ends with a trace hash over the event trace (faults, acknowledgements, failures,
//! stamped with simulated time) and every disk's operations: two runs of a seed must print the
//! same (a test asserts it). A failing run prints the one-line command that replays it with
//! its trace. `gfs-sim --seeds N` runs each seed in a process of its own, as `--seed` does: a
//! run leaves process-wide state behind in dependencies (a later run of a seed in the same
//! process can take another schedule), so only then does every seed a batch reports replay
//! alone.
//!
//! # Why turmoil
//! madsim intercepts the clock and randomness at the libc level, but its tonic is a
//! re-implementation (no HTTP/2, no layers, no `serve_with_incoming`): the simulator would not
//! run our transport code. turmoil runs the real tokio, tonic and hyper over simulated TCP with
//! partitions, holds and latency; what it leaves real (std's clock, hash seeds, threads,
//! randomness) is behind our own seams, which production pays nothing for.

// Without tokio's unstable API, turmoil cannot seed the hosts' runtimes: which ready branch of
// a `select!` goes first is then drawn from the OS, and a seed's run does not replay. Setting
// RUSTFLAGS (or CARGO_TARGET_<triple>_RUSTFLAGS, as a static build does) replaces the
// workspace's `build.rustflags`, so it must name the cfg again.
#[cfg(not(tokio_unstable))]
compile_error!(
    "gfs-sim needs `--cfg tokio_unstable` (.cargo/config.toml sets it; RUSTFLAGS, RUSTDOCFLAGS or \
     CARGO_TARGET_<triple>_RUSTFLAGS replace that setting and must name it again)"
);

pub mod cluster;
pub mod cues;
pub mod durability;
pub mod linearizable;
pub mod nemesis;
pub mod net;
mod pinned;
mod run;
pub mod trace;
pub mod workload;

pub use pinned::PINNED;
pub use run::{MAX_LATENCY, Options, Outcome, run};
