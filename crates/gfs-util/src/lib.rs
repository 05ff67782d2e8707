//! gfs-util: the ground every gfs-rs crate may stand on.
//!
//! - [`disk`]: the file operations the stores use, as a seam ([`disk::Disk`]): the operating
//!   system's files, or a seeded simulated disk with real crash semantics ([`disk::sim`]);
//! - [`crashsafe`]: durable file replacement (write aside, fsync, rename, fsync the directory);
//! - [`framed`]: the `[len][crc32c][payload]` frames, after an 8-byte magic, of every on-disk log
//!   and snapshot (the chunk store's and the master's), with torn-tail detection;
//! - [`size`]: [`Size`], a byte count that parses and prints "64MiB" (configs and flags);
//! - [`time`]: milliseconds since the Unix epoch, the unit of every wire and log timestamp, and
//!   the [`time::Clock`] seam (the system's clock or a simulator's);
//! - [`random`]: the one source of randomness, seedable per thread for simulation, and
//!   [`collections`]: hash maps seeded from it;
//! - [`human`]: bytes and durations for people ("1.5 GiB", "3 min"), and duration parsing.
//!
//! Invariant: no network, no tokio, no gfs-* dependency. Everything here is synchronous code on
//! std (plus crc32c, serde, humantime, rand and foldhash), so the lowest crates (gfs-storage) can use it and it
//! never becomes a place where higher layers meet. What needs a runtime or a socket belongs
//! elsewhere: the chunkserver's copy throttle stays in gfs-chunkserver, as it sleeps on tokio's
//! clock.

pub mod collections;
pub mod crashsafe;
pub mod disk;
pub mod framed;
pub mod human;
pub mod random;
pub mod size;
pub mod time;

pub use size::Size;
