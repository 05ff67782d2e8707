//! The clients: appenders that record-append self-describing records to one file, and the
//! checker client that waits for the cluster to heal and reads everything back.

use std::sync::Arc;
use std::time::Duration;

use gfs_client::{Client, ClientConfig};
use gfs_host::Net;
use gfs_testkit::{History, Observed, RecordId, observe, record};
use gfs_util::random::random_range;
use parking_lot::Mutex;

use crate::cluster::{CHUNK, MASTER_ADDR};
use crate::net::TurmoilNet;
use crate::trace::{Trace, now};

/// The file every appender appends to.
pub const PATH: &str = "/sim/log";

/// A client over the simulated network, reading `clock`.
pub fn client(clock: gfs_util::time::Clock) -> Client {
    let cfg = ClientConfig {
        connect_timeout: Duration::from_secs(1),
        rpc_timeout: Duration::from_secs(3),
        op_deadline: Duration::from_secs(60),
        net: Net::Sim(Arc::new(TurmoilNet)),
        clock,
        ..ClientConfig::default()
    };
    Client::connect_lazy(MASTER_ADDR, cfg).expect("a valid master address")
}

/// What the clients share with the harness.
#[derive(Clone, Default)]
pub struct Shared {
    /// Every appender's history, merged as each finishes.
    pub history: Arc<Mutex<History>>,
    /// Appenders still running.
    pub running: Arc<Mutex<usize>>,
    /// What the checker client saw at the end, once the cluster healed.
    pub observed: Arc<Mutex<Option<Observed>>>,
    /// How long after the load the file's fsck came back clean.
    pub healed_after: Arc<Mutex<Option<Duration>>>,
    /// What fsck last said, when it never came back clean.
    pub unhealthy: Arc<Mutex<String>>,
}

/// Appends records as writer `writer` until `until` (simulated time), then adds its history.
pub async fn appender(c: Client, writer: u32, until: Duration, shared: Shared, trace: Trace) {
    let mut h = History::new();
    let mut seq = 0u32;
    while now() < until {
        seq += 1;
        let id = RecordId { writer, seq };
        // Mostly small records; one in ten near a quarter chunk, so chunks fill, seal and pad.
        let len = if random_range(0..10) == 0 {
            (CHUNK / 4) as usize - random_range(0..32 * 1024)
        } else {
            random_range(20..4096)
        };
        h.sent(id, len);
        match c.append(PATH, record(id, len)).await {
            Ok(offset) => {
                h.acked(id, offset);
                trace.event(format_args!("{id} ({len} B) acknowledged at {offset}"));
            }
            Err(e) => trace.event(format_args!("{id} ({len} B) failed: {e}")),
        }
        tokio::time::sleep(Duration::from_millis(random_range(0..50))).await;
    }
    shared.history.lock().merge(h);
    *shared.running.lock() -= 1;
}

/// Creates the file (retrying while the cluster starts).
pub async fn create_file(c: &Client) {
    loop {
        match c.ensure_file(PATH).await {
            Ok(()) => return,
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Waits for the appenders, then for `fsck` of the file to come back clean (within `within`),
/// then reads the file and the master's view of it.
pub async fn checker(c: Client, load_end: Duration, within: Duration, shared: Shared) {
    while *shared.running.lock() > 0 || now() < load_end {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let start = now();
    let mut last: Option<Observed> = None;
    loop {
        match c.fsck(PATH).await {
            Ok(f) if f.unhealthy.is_empty() => {
                if shared.healed_after.lock().is_none() {
                    *shared.healed_after.lock() = Some(now() - load_end);
                }
                // The master may still be deleting an extra replica or finishing a copy: the
                // view to check against the disks is one that held still for a while.
                let seen = observe(&c, PATH).await;
                if last.as_ref().is_some_and(|l| view(l) == view(&seen)) {
                    *shared.observed.lock() = Some(seen);
                    return;
                }
                last = Some(seen);
            }
            Ok(f) => *shared.unhealthy.lock() = format!("{:?}", f.unhealthy),
            Err(e) => *shared.unhealthy.lock() = format!("fsck failed: {e}"),
        }
        if now() - start > within {
            // Liveness failed; the harness reports it.
            *shared.healed_after.lock() = None;
            return;
        }
        tokio::time::sleep(SETTLE).await;
    }
}

/// How long the master's view of the file must hold still before it is checked.
const SETTLE: Duration = Duration::from_secs(3);

/// What the master says of the file's chunks, in a comparable form.
fn view(o: &Observed) -> Vec<(u64, u64, Option<u64>, Vec<String>)> {
    o.chunks
        .iter()
        .map(|c| {
            let mut counted = c.counted.clone();
            counted.sort();
            (c.handle, c.version, c.sealed_length, counted)
        })
        .collect()
}
