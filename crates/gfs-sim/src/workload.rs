//! The clients: appenders that record-append self-describing records to one file, and the
//! checker client that waits for the cluster to heal and reads everything back.

use std::sync::Arc;
use std::time::Duration;

use gfs_client::{Client, ClientConfig, ClientError};
use gfs_host::Net;
use gfs_testkit::{History, Observed, RecordId, observe, record};
use gfs_util::random::random_range;
use parking_lot::Mutex;

use crate::cluster::{CHUNK, MASTER_ADDR};
use crate::linearizable::{Answer, Call, Op, PATHS};
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
    /// Every namespace call, for the linearizability check.
    pub calls: Arc<Mutex<Vec<Call>>>,
    /// Whole-file reads made during the load: when, how many bytes, their CRC32C.
    pub reads: Arc<Mutex<Vec<(Duration, usize, u32)>>>,
}

/// Reads the whole file every second or two until `until`, noting what each read returned:
/// the file's committed bytes never change, so each read must be a prefix of the file at the
/// end (a reader never sees bytes that are not quorum-committed, which a later lease could
/// replace).
pub async fn reader(c: Client, until: Duration, shared: Shared, trace: Trace) {
    while now() < until {
        tokio::time::sleep(Duration::from_millis(random_range(1000..2000))).await;
        let at = now();
        let read = async {
            let mut r = c.reader(PATH).await?;
            let mut file = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut r, &mut file)
                .await
                .map_err(|e| ClientError::Master(e.to_string()))?;
            Ok::<_, ClientError>(file)
        };
        match read.await {
            Ok(file) => {
                trace.event(format_args!("whole-file read: {} B", file.len()));
                shared
                    .reads
                    .lock()
                    .push((at, file.len(), crc32c::crc32c(&file)));
            }
            Err(e) => trace.event(format_args!("whole-file read failed: {e}")),
        }
    }
    *shared.running.lock() -= 1;
}

/// Namespace calls per client (the check handles 128 in all).
const NAMESPACE_CALLS: usize = 50;

fn ns_path(i: usize) -> String {
    format!("/n{i}")
}

/// Creates, deletes and renames among the paths `/n0`.. as client `client` until `until`.
pub async fn namespace(c: Client, client: usize, until: Duration, shared: Shared, trace: Trace) {
    for _ in 0..NAMESPACE_CALLS {
        if now() >= until {
            break;
        }
        let i = random_range(0..PATHS);
        let op = match random_range(0..3) {
            0 => Op::Create(i),
            1 => Op::Delete(i),
            _ => Op::Rename(i, (i + random_range(1..PATHS)) % PATHS),
        };
        let invoked = now();
        let r = match op {
            Op::Create(i) => c.create(&ns_path(i)).await,
            Op::Delete(i) => c.delete(&ns_path(i), false).await,
            Op::Rename(i, j) => c.rename(&ns_path(i), &ns_path(j)).await,
            Op::List(_) => unreachable!("lists are the checker's"),
        };
        let answer = match &r {
            Ok(()) => Some(Answer::Ok),
            Err(ClientError::NotFound(_)) => Some(Answer::NotFound),
            Err(ClientError::AlreadyExists(_)) => Some(Answer::AlreadyExists),
            // The master did not answer: the outcome is unknown.
            Err(_) => None,
        };
        trace.event(format_args!("client {client} {op:?}: {r:?}"));
        shared.calls.lock().push(Call {
            client,
            op,
            invoked,
            answered: answer.map(|a| (now(), a)),
        });
        tokio::time::sleep(Duration::from_millis(random_range(50..400))).await;
    }
    *shared.running.lock() -= 1;
}

/// Lists which of the namespace workload's paths exist, as the last call of its history.
async fn list_paths(c: &Client, shared: &Shared) {
    let invoked = now();
    let Ok(entries) = c.list("/").await else {
        return;
    };
    let seen = entries
        .iter()
        .filter_map(|e| (0..PATHS).find(|i| e.path == ns_path(*i)))
        .fold(0u8, |m, i| m | 1 << i);
    shared.calls.lock().push(Call {
        client: usize::MAX,
        op: Op::List(seen),
        invoked,
        answered: Some((now(), Answer::Ok)),
    });
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
            Ok(f) if f.unhealthy.is_empty() && !all_alive(&c).await => {
                *shared.unhealthy.lock() = "not every chunkserver is alive".into();
            }
            Ok(f) if f.unhealthy.is_empty() => {
                if shared.healed_after.lock().is_none() {
                    *shared.healed_after.lock() = Some(now() - load_end);
                }
                // The master may still be deleting an extra replica or finishing a copy: the
                // view to check against the disks is one that held still for a while.
                let seen = observe(&c, PATH).await;
                if last.as_ref().is_some_and(|l| view(l) == view(&seen)) {
                    *shared.observed.lock() = Some(seen);
                    list_paths(&c, &shared).await;
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

/// Whether the master counts every chunkserver alive (one that comes back may still change
/// the file's replicas: the master then deletes an extra one).
async fn all_alive(c: &Client) -> bool {
    c.report().await.is_ok_and(|r| {
        r.servers
            .iter()
            .filter(|s| matches!(s.state, gfs_client::ServerState::Alive))
            .count()
            == crate::cluster::SERVERS.len()
    })
}

/// How long the master's view of the file must hold still before it is checked: longer than
/// it takes a chunkserver's report to reach it again after a connection silently died
/// (`gfs_host::KEEPALIVE_INTERVAL` + `KEEPALIVE_TIMEOUT`, plus a heartbeat). Until then the
/// master's inventory may still list a replica its server already deleted (seed 165: the
/// master's replies to one server were cut one way while it went on hearing its heartbeats).
const SETTLE: Duration = Duration::from_secs(12);

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
