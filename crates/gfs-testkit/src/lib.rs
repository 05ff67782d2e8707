//! Test support shared by every fault test of gfs-rs (dev-only).
//!
//! - [`mod@record`]: self-describing records: each names its writer, sequence number and length,
//!   and carries a payload derived from them, so any byte range of a file can be parsed back
//!   into records and every record checked whole.
//! - [`checker`]: the history checker. Given what a run acknowledged and sent, the bytes of the
//!   file as a reader sees them, and every replica's bytes read straight from its disk, it
//!   checks the whole promise: each acknowledged record exactly once, whole, at its
//!   acknowledged offset; nothing that was never sent; no torn record; no duplicate (even of an
//!   unacknowledged record); replicas the master counts current byte-identical (invariant I1);
//!   and `fsck`'s verdict in agreement with the disks; and, right after a fault, every
//!   acknowledged record on a quorum of current replicas (invariant I2).
//! - [`appenders`]: appender workloads that note what they sent and what was acknowledged.
//! - [`replicas`]: reads every replica of a set of stopped chunkservers' data directories.
//! - [`mod@observe`]: what a client sees of a file after a run (its bytes, its chunks, fsck), then
//!   checked against the history and the disks.
//! - [`storage`]: the store configuration and payloads of gfs-storage's own integration tests.
//! - [`fixture`] and [`master_proc`]: real `gfs-chunkserver` and `gfs-master` processes on
//!   127.0.0.1 (the binaries next to the running test, see [`bin`]), to kill, pause and restart.

pub mod appenders;
pub mod checker;
pub mod fixture;
pub mod master_proc;
pub mod observe;
pub mod record;
pub mod replicas;
pub mod storage;

pub use appenders::{Appenders, Workload, assert_acked_read_back};
pub use checker::{
    ChunkView, History, ReplicaState, Violation, check_file, check_quorum, check_replicas,
};
pub use observe::{Observed, assert_clean, observe, wait_healthy};
pub use record::{RecordId, parse_record, record};

/// The path of the workspace binary `name`: in `$GFS_BIN_DIR` if set, else beside the running
/// test's directory (`target/<profile>/`, where cargo builds the binaries of a package for its
/// integration tests). Cargo builds only the test's own package's binaries for it: one of
/// another package (`gfs` for gfs-bins' tests, the servers for gfs-cli's) is there when the
/// whole workspace was built or tested, or after `cargo build -p <its package>`. Panics,
/// saying so, when it is not there.
pub fn bin(name: &str) -> std::path::PathBuf {
    let path = match std::env::var_os("GFS_BIN_DIR") {
        Some(dir) => std::path::PathBuf::from(dir).join(name),
        None => {
            let exe = std::env::current_exe().expect("the path of the running test");
            // target/<profile>/deps/<test> -> target/<profile>/<name>
            let dir = exe
                .parent()
                .and_then(|deps| deps.parent())
                .expect("a test binary under target/<profile>/deps");
            dir.join(name)
        }
    };
    assert!(
        path.exists(),
        "{} is not built: build the workspace's binaries (`cargo build --bins`, or run \
         `cargo test --workspace`), or set GFS_BIN_DIR",
        path.display()
    );
    path
}

/// The seeds a seeded test runs: `$GFS_SIM_SEED` alone if set, else `0..$GFS_SIM_SEEDS`
/// (`default` when unset).
pub fn sim_seeds(default: u64) -> Vec<u64> {
    let var = |name: &str| std::env::var(name).ok().and_then(|s| s.parse::<u64>().ok());
    match var("GFS_SIM_SEED") {
        Some(seed) => vec![seed],
        None => (0..var("GFS_SIM_SEEDS").unwrap_or(default)).collect(),
    }
}

/// A GET of `path` from the HTTP server at `addr` (HTTP/1.1, connection closed, 10 s read
/// timeout): the status code and the body. Panics, saying why, on any failure.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    try_http_get(addr, path).unwrap_or_else(|e| panic!("{e}"))
}

/// [`http_get`], with its failure returned: an error that names the address, the path and
/// what went wrong.
pub fn try_http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Error, Read, Write};
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        Error::other(format!("GET {path} from {addr}: {what}: {e}"))
    };
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| fail("connecting", &e))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .map_err(|e| fail("setting a read timeout", &e))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| fail("sending", &e))?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)
        .map_err(|e| fail("reading the answer", &e))?;
    let Some((head, body)) = raw.split_once("\r\n\r\n") else {
        return Err(fail("no header end", &format!("{raw:?}")));
    };
    let Some(code) = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()) else {
        return Err(fail("no status", &format!("{head:?}")));
    };
    Ok((code, body.to_string()))
}

/// The first of `n` consecutive ports free now, below Linux's ephemeral range (32768 on), where
/// outgoing connections would not take them meanwhile (a server restarted on its port finds
/// it free).
pub fn free_ports(n: u16) -> u16 {
    // Tests of one process running side by side each start from their own place.
    static CALLS: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let seed = (std::process::id() as u16)
        .wrapping_mul(31)
        .wrapping_add(call.wrapping_mul(1_009));
    for attempt in 0..200u16 {
        let base = 20_000 + seed.wrapping_add(attempt.wrapping_mul(97)) % 12_000;
        let bound: Vec<_> = (base..base + n)
            .map_while(|p| std::net::TcpListener::bind(("127.0.0.1", p)).ok())
            .collect();
        if bound.len() == usize::from(n) {
            return base;
        }
    }
    panic!("no {n} consecutive free ports below 32768");
}
