//! The clients: appenders that record-append self-describing records to one file, putters
//! that write whole multi-chunk files and get them back, a reader, a namespace task, and the
//! checker client that waits for the cluster to heal and reads everything back.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use gfs_client::{Client, ClientConfig, ClientError};
use gfs_host::Net;
use gfs_testkit::{History, Observed, RecordId, observe, record};
use gfs_util::disk::sim::SimDisk;
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
        net: Net::sim(Arc::new(TurmoilNet)),
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
    /// Every file put during the load.
    pub puts: Arc<Mutex<Vec<Put>>>,
    /// What the checker read back of each put file once the cluster healed: its length and
    /// CRC32C, or why it could not.
    pub put_reads: Arc<Mutex<Vec<PutRead>>>,
    /// Gets during the load that returned other bytes than the put just acknowledged.
    pub bad_gets: Arc<Mutex<Vec<String>>>,
    /// The bits the nemesis flipped at rest.
    pub flips: crate::nemesis::Flips,
    /// Record appends and puts that failed before their deadline with an error other than
    /// "outcome unknown": every fault the nemesis injects heals, so a call gives up only when
    /// its retries run out (finding 13 of the replication review: a routine lease change
    /// failed appends at once).
    pub fast_failures: Arc<Mutex<Vec<String>>>,
}

impl Shared {
    /// Notes that `what` failed with `e`, if not the way a call may under faults that heal
    /// (its retries ran out at its deadline, or its outcome cannot be known).
    fn failed(&self, what: std::fmt::Arguments<'_>, e: &ClientError) {
        if !matches!(
            e,
            ClientError::GaveUp { .. } | ClientError::OutcomeUnknown { .. }
        ) {
            self.fast_failures.lock().push(format!(
                "at {:.3}s: {what} failed before its deadline: {e}",
                now().as_secs_f64()
            ));
        }
    }
}

/// A put file read back at the end: its path, and its length and CRC32C or why it could not
/// be read.
pub type PutRead = (String, Result<(usize, u32), String>);

/// A file put during the load: its bytes are [`put_bytes`]`(seed, len)`.
#[derive(Clone, Debug)]
pub struct Put {
    /// Its path.
    pub path: String,
    /// Bytes written.
    pub len: usize,
    /// What its bytes are drawn from.
    pub seed: u64,
    /// Whether the writer's `finish` acknowledged all of them.
    pub acked: bool,
}

/// The bytes of a put file: `len` bytes of a xorshift stream from `seed`, so every file
/// differs and a misplaced piece shows.
pub fn put_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Puts whole files of half a chunk to two and a half chunks, one every one to three seconds (the streaming writer: positioned appends,
/// several in flight, chunks filled exactly) as client `client` until `until`, and gets each
/// one back at once: a get after an acknowledged put returns exactly its bytes, or fails.
pub async fn putter(c: Client, client: usize, until: Duration, shared: Shared, trace: Trace) {
    let mut k = 0u64;
    while now() < until {
        k += 1;
        let path = format!("/sim/put{client}-{k}");
        let len = random_range(CHUNK / 2..5 * CHUNK / 2) as usize;
        let seed = ((client as u64) << 32) | k;
        let data = put_bytes(seed, len);
        let put = async {
            // Every other put makes the file with its first chunk in one call; when that
            // fails (its answer lost, the master gone), the file is made as the others are.
            let made = match k % 2 {
                0 => c.create_writer(&path).await.ok(),
                _ => None,
            };
            let mut w = match made {
                Some(w) => w,
                None => {
                    c.ensure_file(&path).await?;
                    c.writer(&path)
                }
            };
            w.write(&data).await?;
            w.finish().await
        };
        let acked = match put.await {
            Ok(n) => {
                trace.event(format_args!("put {path} ({n} B) acknowledged"));
                true
            }
            Err(e) => {
                trace.event(format_args!("put {path} ({len} B) failed: {e}"));
                shared.failed(format_args!("put {path} ({len} B)"), &e);
                false
            }
        };
        shared.puts.lock().push(Put {
            path: path.clone(),
            len,
            seed,
            acked,
        });
        if acked {
            match get(&c, &path).await {
                Ok(back) if back == data => trace.event(format_args!("get {path}: as put")),
                Ok(back) => {
                    trace.event(format_args!("get {path}: {} B, not as put", back.len()));
                    shared.bad_gets.lock().push(format!(
                        "a get of {path} right after its put was acknowledged returned {} \
                         bytes that are not the {len} put",
                        back.len()
                    ));
                }
                Err(e) => trace.event(format_args!("get {path} failed: {e}")),
            }
        }
        tokio::time::sleep(Duration::from_millis(random_range(1000..3000))).await;
    }
    *shared.running.lock() -= 1;
}

/// The whole of `path`.
async fn get(c: &Client, path: &str) -> Result<Vec<u8>, ClientError> {
    let mut r = c.reader(path).await?;
    let mut file = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut r, &mut file)
        .await
        .map_err(|e| ClientError::Master(e.to_string()))?;
    Ok(file)
}

/// Reads the whole file every second or two until `until`, noting what each read returned:
/// the file's committed bytes never change, so each read must be a prefix of the file at the
/// end (a reader never sees bytes that are not quorum-committed, which a later lease could
/// replace).
pub async fn reader(c: Client, until: Duration, shared: Shared, trace: Trace) {
    while now() < until {
        tokio::time::sleep(Duration::from_millis(random_range(1000..2000))).await;
        let at = now();
        match get(&c, PATH).await {
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
        // Into the shared history at once: the durability check reads it during the run.
        shared.history.lock().sent(id, len);
        match c.append(PATH, record(id, len)).await {
            Ok(offset) => {
                shared.history.lock().acked(id, offset);
                trace.event(format_args!("{id} ({len} B) acknowledged at {offset}"));
            }
            Err(e) => {
                trace.event(format_args!("{id} ({len} B) failed: {e}"));
                shared.failed(format_args!("append {id} ({len} B)"), &e);
            }
        }
        tokio::time::sleep(Duration::from_millis(random_range(0..50))).await;
    }
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
pub async fn checker(
    c: Client,
    load_end: Duration,
    within: Duration,
    shared: Shared,
    disks: BTreeMap<String, SimDisk>,
) {
    while *shared.running.lock() > 0 || now() < load_end {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let start = now();
    let mut last: Option<Observed> = None;
    let mut files = vec![PATH.to_string()];
    files.extend(shared.puts.lock().iter().map(|p| p.path.clone()));
    loop {
        match fsck_all(&c, &files).await {
            Ok(()) if !all_alive(&c).await => {
                *shared.unhealthy.lock() = "not every chunkserver is alive".into();
            }
            Ok(()) => {
                if shared.healed_after.lock().is_none() {
                    *shared.healed_after.lock() = Some(now() - load_end);
                }
                // The master may still be deleting an extra replica or finishing a copy: the
                // view to check against the disks is one that held still for a while.
                let seen = observe(&c, PATH).await;
                if let Some(why) = unfound_flip(&shared.flips, &disks, &seen) {
                    *shared.unhealthy.lock() = why;
                } else if last.as_ref().is_some_and(|l| view(l) == view(&seen)) {
                    *shared.observed.lock() = Some(seen);
                    list_paths(&c, &shared).await;
                    read_puts(&c, &shared).await;
                    return;
                }
                last = Some(seen);
            }
            Err(why) => *shared.unhealthy.lock() = why,
        }
        if now() - start > within {
            // Liveness failed; the harness reports it.
            *shared.healed_after.lock() = None;
            return;
        }
        tokio::time::sleep(SETTLE).await;
    }
}

/// A bit flipped at rest that nobody found yet: still flipped on the disk (no durable write
/// touched its byte since: a log's redo may rewrite it), in a replica the master counts, below the chunk's agreed length (the scrubber verifies every idle chunk in
/// turn, a reader every block it reads; either reports it, and the master replaces it).
fn unfound_flip(
    flips: &crate::nemesis::Flips,
    disks: &BTreeMap<String, SimDisk>,
    seen: &Observed,
) -> Option<String> {
    flips.lock().iter().find_map(|f| {
        let flipped = disks[f.server].still_flipped(&f.path, f.offset);
        let c = seen.chunks.iter().find(|c| c.handle == f.handle)?;
        let agreed = c
            .sealed_length
            .unwrap_or((seen.file.len() as u64).saturating_sub(c.file_offset));
        (flipped && f.offset < agreed && c.counted.iter().any(|s| s == f.server)).then(|| {
            format!(
                "the bit flipped at rest on {} (chunk {} byte {}) is not found yet",
                f.server, f.handle, f.offset
            )
        })
    })
}

/// Whether `fsck` calls every one of `files` healthy; else what it said of the first that is
/// not.
async fn fsck_all(c: &Client, files: &[String]) -> Result<(), String> {
    for f in files {
        match c.fsck(f).await {
            Ok(r) if r.unhealthy.is_empty() => {}
            Ok(r) => return Err(format!("{f}: {:?}", r.unhealthy)),
            Err(e) => return Err(format!("fsck of {f} failed: {e}")),
        }
    }
    Ok(())
}

/// Reads every put file back whole, for the harness to compare.
async fn read_puts(c: &Client, shared: &Shared) {
    let paths: Vec<String> = shared.puts.lock().iter().map(|p| p.path.clone()).collect();
    for path in paths {
        let back = get(c, &path)
            .await
            .map(|b| (b.len(), crc32c::crc32c(&b)))
            .map_err(|e| e.to_string());
        shared.put_reads.lock().push((path, back));
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
