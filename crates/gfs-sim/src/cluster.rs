//! The simulated cluster: one master and four chunkservers, each a turmoil host running the
//! production server (`Master::start_on`, `ChunkServer::start_on`) on its own simulated disk
//! and skewable clock.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use gfs_chunkserver::{ChunkServer, ChunkserverConfig};
use gfs_host::{Host, Net};
use gfs_master::{Master, MasterConfig};
use gfs_util::Size;
use gfs_util::disk::Disk;
use gfs_util::disk::sim::SimDisk;
use gfs_util::time::Clock;

use crate::net::TurmoilNet;
use crate::trace::Trace;

/// The cluster's chunk size: small, so that runs fill, seal and pad chunks.
pub const CHUNK: u64 = 1 << 20;
/// The master's host name.
pub const MASTER: &str = "master";
/// The master's gRPC address.
pub const MASTER_ADDR: &str = "master:9000";
/// Chunkservers.
pub const SERVERS: [&str; 4] = ["cs1", "cs2", "cs3", "cs4"];
/// Lease period.
pub const LEASE: Duration = Duration::from_secs(10);
/// The wall clock every host starts at (2026-01-01T00:00:00Z), plus simulated time.
pub const EPOCH: Duration = Duration::from_secs(1_767_225_600);

/// Each server's data directory on its own disk.
pub fn data_dir() -> PathBuf {
    PathBuf::from("/data")
}

/// The disks and clocks of every server host, kept across crashes.
pub struct Cluster {
    /// Disks by host name.
    pub disks: BTreeMap<String, SimDisk>,
    /// Clock offsets (ms) by host name.
    pub skew: BTreeMap<String, Arc<AtomicI64>>,
    /// The master's log checkpoint spacing (records), from the seed.
    pub checkpoint_every: u64,
    /// Whether the chunkservers append in one round (three seeds in four) or two, from the
    /// seed.
    pub one_round: bool,
}

impl Cluster {
    /// The disks of a run of `seed`.
    pub fn new(seed: u64, checkpoint_every: u64) -> Cluster {
        let mut disks = BTreeMap::new();
        let mut skew = BTreeMap::new();
        for (i, name) in std::iter::once(MASTER).chain(SERVERS).enumerate() {
            let d = SimDisk::new(seed.wrapping_mul(31).wrapping_add(i as u64 + 1));
            if name != MASTER {
                // Each data directory's identity, made here rather than drawn at the first
                // open, so that it takes nothing from the seed's one stream of draws.
                let id = format!("{:016x}\n", (seed ^ (i as u64 + 1)) | 1);
                d.create_dir_all(&data_dir())
                    .and_then(|()| {
                        gfs_util::crashsafe::replace(&d, &data_dir().join("ID"), id.as_bytes())
                            .map_err(std::io::Error::other)
                    })
                    .unwrap_or_else(|e| panic!("writing {name}'s disk identity: {e}"));
            }
            d.set_latency(crate::nemesis::DISK_LATENCY);
            disks.insert(name.to_string(), d);
            skew.insert(name.to_string(), Arc::new(AtomicI64::new(0)));
        }
        for name in crate::nemesis::CLIENTS.into_iter().chain(["checker"]) {
            skew.insert(name.to_string(), Arc::new(AtomicI64::new(0)));
        }
        Cluster {
            disks,
            skew,
            checkpoint_every,
            one_round: seed % 4 != 3,
        }
    }

    /// Adds the master and the chunkservers to `sim`.
    pub fn add_servers(&self, sim: &mut turmoil::Sim<'_>, trace: &Trace) {
        let (disk, skew) = (self.disks[MASTER].clone(), Arc::clone(&self.skew[MASTER]));
        let cfg = master_config(self.checkpoint_every);
        let t = trace.clone();
        sim.host(MASTER, move || {
            // Each start sees the disk as it is after the last crash.
            let (cfg, host, t) = (cfg.clone(), host_on(&disk, &skew), t.clone());
            async move {
                match Master::start_on(cfg, host).await {
                    Ok(m) => {
                        t.event("master up");
                        if let Err(e) = m.wait().await {
                            t.event(format_args!("master stopped: {e}"));
                        }
                    }
                    Err(e) => t.event(format_args!("master cannot start: {e}")),
                }
                Ok(())
            }
        });
        for id in SERVERS {
            let (disk, skew) = (self.disks[id].clone(), Arc::clone(&self.skew[id]));
            let mut cfg = chunkserver_config(id);
            cfg.replication.one_round = self.one_round;
            let t = trace.clone();
            sim.host(id, move || {
                let (cfg, host, t) = (cfg.clone(), host_on(&disk, &skew), t.clone());
                async move {
                    match ChunkServer::start_on(cfg, host).await {
                        Ok(s) => {
                            t.event(format_args!("{id} up"));
                            if let Err(e) = s.wait().await {
                                t.event(format_args!("{id} stopped: {e}"));
                            }
                        }
                        Err(e) => t.event(format_args!("{id} cannot start: {e}")),
                    }
                    Ok(())
                }
            });
        }
    }

    /// Client host `name`'s clock.
    pub fn clock(&self, name: &str) -> Clock {
        skewed_clock(Arc::clone(&self.skew[name]))
    }

    /// Sets host `name`'s clock `ms` milliseconds off (negative: behind).
    pub fn set_skew(&self, name: &str, ms: i64) {
        self.skew[name].store(ms, Ordering::Relaxed);
    }
}

/// A host on `disk` as it is now, with a clock `skew` off.
fn host_on(disk: &SimDisk, skew: &Arc<AtomicI64>) -> Host {
    Host {
        net: Net::sim(Arc::new(TurmoilNet)),
        disk: disk.shared(),
        clock: skewed_clock(Arc::clone(skew)),
    }
}

/// Simulated time plus [`EPOCH`] plus this host's skew.
fn skewed_clock(skew: Arc<AtomicI64>) -> Clock {
    Clock::from_fn(move || {
        let t = UNIX_EPOCH + EPOCH + crate::trace::now();
        let s = skew.load(Ordering::Relaxed);
        let off = Duration::from_millis(s.unsigned_abs());
        if s >= 0 { t + off } else { t - off }
    })
}

/// The master's settings in a simulation: short leases and heartbeats, frequent checkpoints.
pub fn master_config(checkpoint_every: u64) -> MasterConfig {
    MasterConfig {
        listen: "0.0.0.0:9000".into(),
        http_listen: String::new(),
        data_dir: data_dir(),
        chunk_size: Size::mib(1),
        lease: LEASE,
        heartbeat_interval: Duration::from_secs(1),
        dead_after: Duration::from_secs(4),
        rpc_timeout: Duration::from_secs(2),
        checkpoint_every,
        orphan_grace: Duration::from_secs(60),
        clone_timeout: Duration::from_secs(20),
        rebalance_threshold: 0.0,
        trash_retention: Duration::from_secs(60),
        ..MasterConfig::default()
    }
}

/// Chunkserver `id`'s settings in a simulation.
pub fn chunkserver_config(id: &str) -> ChunkserverConfig {
    let mut c = ChunkserverConfig {
        id: id.to_string(),
        data_dir: data_dir(),
        host: "0.0.0.0".into(),
        advertise_host: id.to_string(),
        data_port: 8080,
        repl_port: 8081,
        http_port: 8082,
        chunk_size: Size::mib(1),
        master: MASTER_ADDR.into(),
        ..ChunkserverConfig::default()
    };
    c.replication.connect_timeout = Duration::from_secs(1);
    c.replication.prepare_timeout = Duration::from_secs(2);
    c.replication.commit_timeout = Duration::from_secs(2);
    // Every idle chunk verified within a minute or so: bits the nemesis flips at rest are found.
    c.storage.scrub_every = Duration::from_secs(1);
    c
}
