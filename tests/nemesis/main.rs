//! The randomized fault run (issue 12, part 5), Jepsen style with real processes: a master and
//! five chunkservers, eight appenders and two readers on one file, and a nemesis driven by a
//! seeded RNG that kills, pauses, restarts and damages servers for a set time, while every
//! chunkserver loses a few COMMITs and append replies all along ([`LOST_MESSAGES`]). At the end
//! every server is back, the cluster heals, and the history checker judges the whole run.
//!
//! - `GFS_NEMESIS_SEEDS=1,2,3`: the seeds to run (default [`DEFAULT_SEEDS`]).
//! - `GFS_NEMESIS_SECS=35`: seconds of faults per seed (default [`DEFAULT_SECS`]).
//! - `GFS_NEMESIS_RANDOM=N`: run `N` fresh random seeds instead (each printed).
//! - `GFS_NEMESIS_KEEP=1`: keep each run's directory (printed) instead of removing it.
//! - `GFS_TEST_LOG`: the servers' `RUST_LOG` (default `error`: faults make warnings by the
//!   thousand).
//! - `GFS_NEMESIS_CLIENT_LOG`: a log filter for the test's own clients (e.g. `gfs_client=debug`).
//!
//! A failing seed prints the command that replays it.

#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gfs_client::{Client, ClientConfig};
use gfs_testkit::fixture::{CHUNK, Server};
use gfs_testkit::master_proc::MasterProc;
use gfs_testkit::record::HEADER;
use gfs_testkit::{History, RecordId, Violation, check_file, observe, parse_record, wait_healthy};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

/// The seeds CI runs: one odd (its first damage flips a bit), one even (it truncates first).
const DEFAULT_SEEDS: &[u64] = &[0x6e65_6d31, 0x6e65_6d32];
/// Seconds of faults per seed in CI. With the start, the heal and the checker a seed takes
/// about a minute on two cores: about two minutes in all.
const DEFAULT_SECS: u64 = 35;
const SERVERS: usize = 5;
const APPENDERS: u32 = 8;
const READERS: u32 = 2;
const PATH: &str = "/nemesis";
/// The master declares a silent chunkserver dead after this.
const DEAD_AFTER: &str = "2s";
/// Chunkservers verify one idle chunk this often, so a flipped byte is found within seconds.
const SCRUB_EVERY: Duration = Duration::from_millis(100);

/// The seeds to run and the seconds of faults for each, from the environment.
fn plan() -> (Vec<u64>, u64) {
    let secs = std::env::var("GFS_NEMESIS_SECS")
        .ok()
        .map(|s| {
            s.trim()
                .parse()
                .expect("GFS_NEMESIS_SECS: a number of seconds")
        })
        .unwrap_or(DEFAULT_SECS);
    if let Ok(n) = std::env::var("GFS_NEMESIS_RANDOM") {
        let n: usize = n
            .trim()
            .parse()
            .expect("GFS_NEMESIS_RANDOM: a number of seeds");
        return ((0..n).map(|_| rand::random::<u64>()).collect(), secs);
    }
    let seeds = match std::env::var("GFS_NEMESIS_SEEDS") {
        Ok(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                let parsed = match s.strip_prefix("0x") {
                    Some(hex) => u64::from_str_radix(hex, 16),
                    None => s.parse(),
                };
                parsed.expect("GFS_NEMESIS_SEEDS: comma-separated seeds")
            })
            .collect(),
        Err(_) => DEFAULT_SEEDS.to_vec(),
    };
    (seeds, secs)
}

fn replay(seed: u64, secs: u64) -> String {
    format!(
        "GFS_NEMESIS_SEEDS={seed} GFS_NEMESIS_SECS={secs} \
         cargo test -p gfs-bins --test nemesis -- --nocapture"
    )
}

/// Every seed in turn: a fresh cluster, faults for the set time, then the checker. A failing
/// seed does not stop the others; the test fails at the end naming every failing seed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn randomized_faults_keep_every_promise() {
    if let Ok(filter) = std::env::var("GFS_NEMESIS_CLIENT_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .try_init();
    }
    let (seeds, secs) = plan();
    println!("nemesis: {} seed(s) x {secs} s: {seeds:?}", seeds.len());
    let mut failed = Vec::new();
    for seed in seeds {
        println!("nemesis: seed {seed} ({secs} s of faults)");
        let started = Instant::now();
        match tokio::spawn(run(seed, secs)).await {
            Ok(()) => println!(
                "nemesis: seed {seed} clean ({:.0?} in all)",
                started.elapsed()
            ),
            Err(e) => {
                let why = match e.try_into_panic() {
                    Ok(p) => p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "a panic".into()),
                    Err(e) => e.to_string(),
                };
                println!("nemesis: seed {seed} FAILED: {why}");
                println!("nemesis: replay with: {}", replay(seed, secs));
                failed.push(seed);
            }
        }
    }
    assert!(
        failed.is_empty(),
        "seeds {failed:?} failed; replay one with: {}",
        replay(failed[0], secs)
    );
}

/// What one seed's run found besides the checker's verdict.
#[derive(Default)]
struct Findings {
    /// Reads that returned other bytes than an acknowledged record's, and the like.
    violations: Vec<String>,
    /// Appends that failed for good.
    append_errors: Vec<String>,
}

/// One seed: the cluster, the load, the nemesis, the heal and the checker.
async fn run(seed: u64, secs: u64) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    println!("nemesis: seed {seed}: directory {}", root.display());
    let _dir = Keep(Some(dir));
    let master = start_master(&root, "127.0.0.1:0");
    let servers: Vec<Server> = (0..SERVERS)
        .map(|i| {
            start_server(
                &root.join(format!("cs{i}")),
                &format!("cs{i}"),
                &master.addr,
            )
        })
        .collect();
    let patient = ClientConfig {
        op_deadline: Duration::from_secs(120),
        ..ClientConfig::default()
    };
    let c = Client::connect_with(&master.addr, patient.clone())
        .await
        .unwrap();
    c.create(PATH).await.unwrap();

    let shared = Arc::new(Shared::default());
    let stop_load = Arc::new(AtomicBool::new(false));
    let mut appenders = Vec::new();
    for w in 0..APPENDERS {
        let c = Client::connect_with(&master.addr, patient.clone())
            .await
            .unwrap();
        let (shared, stop) = (Arc::clone(&shared), Arc::clone(&stop_load));
        appenders.push(tokio::spawn(appender(c, w, seed, shared, stop)));
    }
    let mut readers = Vec::new();
    for r in 0..READERS {
        let cfg = ClientConfig {
            op_deadline: Duration::from_secs(30),
            ..ClientConfig::default()
        };
        let c = Client::connect_with(&master.addr, cfg).await.unwrap();
        let (shared, stop) = (Arc::clone(&shared), Arc::clone(&stop_load));
        readers.push(tokio::spawn(reader(c, r, seed, shared, stop)));
    }

    // The nemesis runs on a thread of its own (starting processes blocks).
    let stop_nemesis = Arc::new(AtomicBool::new(false));
    let _stop_on_drop = SetOnDrop(Arc::clone(&stop_nemesis));
    let nemesis = Nemesis::new(
        seed,
        root.clone(),
        master,
        servers,
        Arc::clone(&stop_nemesis),
    );
    let handle = tokio::runtime::Handle::current();
    let nemesis =
        tokio::task::spawn_blocking(move || nemesis.run(&handle, Duration::from_secs(secs)));
    let Outcome {
        mut master,
        mut servers,
        mix,
        flips,
    } = nemesis.await.unwrap();
    println!(
        "nemesis: seed {seed}: faults {mix:?}; every server back, {} records acknowledged so far",
        shared.acked.lock().unwrap().len()
    );

    // The load stops; each appender finishes the append it is in (they wait through faults).
    stop_load.store(true, Ordering::SeqCst);
    let mut findings = Findings::default();
    let mut h = History::new();
    for (w, a) in appenders.into_iter().enumerate() {
        let (hw, errors) = tokio::time::timeout(Duration::from_secs(180), a)
            .await
            .unwrap_or_else(|_| {
                panic!("appender {w} hangs 180 s after every server came back (seed {seed})")
            })
            .unwrap();
        h.merge(hw);
        findings.append_errors.extend(errors);
    }
    for (i, r) in readers.into_iter().enumerate() {
        let report = tokio::time::timeout(Duration::from_secs(180), r)
            .await
            .unwrap_or_else(|_| {
                panic!("reader {i} hangs 180 s after every server came back (seed {seed})")
            })
            .unwrap();
        println!("nemesis: seed {seed}: {}", report.summary());
        findings.violations.extend(report.violations);
    }
    println!(
        "nemesis: seed {seed}: {} records sent, {} acknowledged",
        h.sent.len(),
        h.acked.len()
    );

    // Heal: fsck clean. A flipped bit nobody read is found by the scrubber, not by fsck:
    // after one, wait for every server to verify each of its idle replicas, then for fsck
    // again.
    let took = wait_healthy(&c, PATH, Duration::from_secs(120)).await;
    let chunks = c.refresh(PATH).await.unwrap().chunks.len();
    println!("nemesis: seed {seed}: {chunks} chunks, fsck clean {took:.1?} after the load");
    if flips > 0 {
        let most = c
            .report()
            .await
            .unwrap()
            .servers
            .iter()
            .map(|s| s.chunks)
            .max()
            .unwrap_or(0);
        let pass = SCRUB_EVERY * (most as u32 + 10) + Duration::from_secs(2);
        tokio::time::sleep(pass).await;
        let again = wait_healthy(&c, PATH, Duration::from_secs(120)).await;
        println!(
            "nemesis: seed {seed}: {flips} bit(s) flipped: fsck clean again {again:.1?} after \
             a scrub pass ({pass:.1?})"
        );
    }
    let seen = observe(&c, PATH).await;
    master.kill();
    let dirs: Vec<(String, PathBuf)> = servers
        .iter_mut()
        .map(|s| {
            s.terminate(Duration::from_secs(10));
            (s.id.clone(), s.dir.clone())
        })
        .collect();
    let checked = seen.check(&h, &dirs);
    report(seed, secs, &checked, &findings);
}

/// Panics with everything that went wrong, if anything did.
fn report(seed: u64, secs: u64, checked: &[Violation], f: &Findings) {
    if checked.is_empty() && f.violations.is_empty() && f.append_errors.is_empty() {
        return;
    }
    let mut lines = Vec::new();
    lines.push(format!(
        "seed {seed}: the history checker found {} violation(s) {:?}, the readers {}, {} append(s) failed",
        checked.len(),
        by_kind(checked),
        f.violations.len(),
        f.append_errors.len()
    ));
    lines.extend(checked.iter().take(30).map(|v| format!("  checker: {v:?}")));
    lines.extend(
        f.violations
            .iter()
            .take(30)
            .map(|v| format!("  reader: {v}")),
    );
    lines.extend(
        f.append_errors
            .iter()
            .take(10)
            .map(|v| format!("  append: {v}")),
    );
    lines.push(format!("replay with: {}", replay(seed, secs)));
    panic!("{}", lines.join("\n"));
}

/// The servers' `RUST_LOG`.
fn server_log() -> String {
    std::env::var("GFS_TEST_LOG").unwrap_or_else(|_| "error".into())
}

/// The master on `root/master`, listening on `listen`.
fn start_master(root: &Path, listen: &str) -> MasterProc {
    MasterProc::start_with_env(
        &root.join("master"),
        listen,
        &["--dead-after", DEAD_AFTER],
        &[("RUST_LOG", &server_log())],
    )
}

/// Messages every chunkserver loses all along, besides the nemesis's faults: COMMITs on the
/// replication plane (secondaries fall short of their primary, which must catch them up at the
/// seal) and append replies (clients must learn what became of an op without applying it
/// twice). Drawn by the processes, not by the seed.
const LOST_MESSAGES: &str = "commit-lost:1,append-reply-lost:2";

/// Chunkserver `id` on `dir`, on fresh ports, registering with `master`.
fn start_server(dir: &Path, id: &str, master: &str) -> Server {
    Server::start_with(
        dir,
        id,
        None,
        &[
            ("RUST_LOG", &server_log()),
            ("GFS_FAILPOINTS", LOST_MESSAGES),
        ],
        &[
            "--master",
            master,
            "--scrub-every",
            &format!("{}ms", SCRUB_EVERY.as_millis()),
        ],
    )
}

/// The time of day (UTC) now, as the servers' logs print it.
fn clock() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let s = t.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        s / 3600,
        s / 60 % 60,
        s % 60,
        t.subsec_millis()
    )
}

/// Removes the run's directory when dropped, unless `GFS_NEMESIS_KEEP` is set.
struct Keep(Option<tempfile::TempDir>);

impl Drop for Keep {
    fn drop(&mut self) {
        if let Some(d) = self.0.take()
            && std::env::var_os("GFS_NEMESIS_KEEP").is_some()
        {
            println!("nemesis: kept {}", d.keep().display());
        }
    }
}

/// Sets the flag when dropped (the nemesis stops if its run panics).
struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// What the appenders tell the readers.
#[derive(Default)]
struct Shared {
    /// Every acknowledged record: who, where, how long.
    acked: Mutex<Vec<(RecordId, u64, usize)>>,
    /// Every record sent, with its length.
    sent: Mutex<gfs_util::collections::HashMap<RecordId, usize>>,
}

/// Appends records of random size (up to a quarter chunk) until told to stop; returns its
/// history and the appends that failed for good.
async fn appender(
    c: Client,
    w: u32,
    seed: u64,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
) -> (History, Vec<String>) {
    let mut rng = StdRng::seed_from_u64(seed ^ (0xA99E_0000 + u64::from(w)));
    let mut h = History::new();
    let mut errors = Vec::new();
    let mut seq = 0u32;
    while !stop.load(Ordering::SeqCst) {
        let id = RecordId { writer: w, seq };
        seq += 1;
        let len = rng.random_range(HEADER..=(CHUNK / 4) as usize);
        let rec = gfs_testkit::record(id, len);
        h.sent(id, len);
        shared.sent.lock().unwrap().insert(id, len);
        let started = Instant::now();
        match c.append(PATH, rec).await {
            Ok(off) => {
                h.acked(id, off);
                shared.acked.lock().unwrap().push((id, off, len));
            }
            Err(e) => errors.push(format!(
                "{id} ({len} bytes) failed after {:.1?}: {e}",
                started.elapsed()
            )),
        }
    }
    (h, errors)
}

/// What a reader saw.
#[derive(Default)]
struct ReadReport {
    reader: u32,
    /// Record reads that returned the record.
    good: u64,
    /// Record reads that failed (no replica could serve, for now).
    failed: u64,
    /// Whole-file reads that were checked, and that failed.
    whole: u64,
    whole_failed: u64,
    violations: Vec<String>,
}

impl ReadReport {
    fn summary(&self) -> String {
        format!(
            "reader {}: {} records read back whole, {} reads failed, {} whole-file reads checked \
             ({} failed), {} violations",
            self.reader,
            self.good,
            self.failed,
            self.whole,
            self.whole_failed,
            self.violations.len()
        )
    }
}

/// Reads acknowledged records back at their offsets until told to stop, and every few
/// seconds the whole file: every read that succeeds must return exactly what was
/// acknowledged there.
async fn reader(
    c: Client,
    r: u32,
    seed: u64,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
) -> ReadReport {
    let mut rng = StdRng::seed_from_u64(seed ^ (0x2EAD_0000 + u64::from(r)));
    let mut out = ReadReport {
        reader: r,
        ..ReadReport::default()
    };
    let mut last_whole = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        if last_whole.elapsed() > Duration::from_secs(8) {
            last_whole = Instant::now();
            read_whole(&c, &shared, &mut out).await;
            continue;
        }
        let pick = {
            let acked = shared.acked.lock().unwrap();
            acked.choose(&mut rng).copied()
        };
        let Some((id, off, len)) = pick else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        match c.read(PATH, off, len as u64).await {
            Ok(b) => {
                if let Some(bad) = misread(id, len, &b) {
                    let seen = where_is(&c, off).await;
                    out.violations.push(format!(
                        "reader {r} at {}: {id} acknowledged at {off}: {bad}; {seen}",
                        clock()
                    ));
                } else {
                    out.good += 1;
                }
            }
            Err(_) => out.failed += 1,
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(5..40))).await;
    }
    out
}

/// What the reader's client knows of the chunk holding file offset `off` (for a report).
async fn where_is(c: &Client, off: u64) -> String {
    let Ok(l) = c.locations(PATH).await else {
        return "no locations".into();
    };
    let n = l.chunks.len();
    match l.chunks.iter().rev().find(|ch| ch.file_offset <= off) {
        None => format!("none of the {n} chunks it knows holds it"),
        Some(ch) => format!(
            "it read chunk {} of {n} (handle {}, version {}, at {}, sealed {:?}, replicas {:?})",
            ch.index,
            ch.handle,
            ch.version,
            ch.file_offset,
            ch.sealed_length,
            ch.replicas
                .iter()
                .map(|r| r.id.as_str())
                .collect::<Vec<_>>()
        ),
    }
}

/// What is wrong with `b`, read where record `id` of `len` bytes was acknowledged.
fn misread(id: RecordId, len: usize, b: &[u8]) -> Option<String> {
    if b.len() == len && parse_record(b) == Some((id, len)) {
        return None;
    }
    let want = gfs_testkit::record(id, len);
    let n = b.len().min(len);
    if let Some(i) = (0..n).find(|&i| b[i] != want[i]) {
        let there = match parse_record(b) {
            Some((other, l)) => format!("record {other} of {l} bytes"),
            None => "no whole record".into(),
        };
        return Some(format!(
            "read {} bytes, differing at byte {i}: {there} is there",
            b.len()
        ));
    }
    Some(format!(
        "short read: {} of {len} bytes (a prefix of the record)",
        b.len()
    ))
}

/// Reads the whole file and checks it against what was acknowledged before the read began:
/// each such record exactly once at its offset, nothing never sent, no duplicate, no torn
/// record.
async fn read_whole(c: &Client, shared: &Shared, out: &mut ReadReport) {
    let acked: Vec<(RecordId, u64)> = shared
        .acked
        .lock()
        .unwrap()
        .iter()
        .map(|(id, off, _)| (*id, *off))
        .collect();
    let file = async {
        let mut r = c.reader(PATH).await?;
        let mut file = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut r, &mut file)
            .await
            .map_err(|e| gfs_client::ClientError::Master(e.to_string()))?;
        Ok::<_, gfs_client::ClientError>(file)
    }
    .await;
    let Ok(file) = file else {
        out.whole_failed += 1;
        return;
    };
    out.whole += 1;
    let h = History {
        sent: shared.sent.lock().unwrap().clone(),
        acked,
    };
    for v in check_file(&h, &file) {
        out.violations.push(format!(
            "reader {}: a whole-file read of {} bytes: {v:?}",
            out.reader,
            file.len()
        ));
    }
}

/// The state of one chunkserver under the nemesis.
#[derive(Clone, Copy, Debug, PartialEq)]
enum CsState {
    Up,
    /// SIGKILLed; restarted at the instant.
    Down(Instant),
    /// SIGSTOPped; continued at the instant.
    Stopped(Instant),
}

/// A replica damaged while its server was down, not yet known to be repaired.
struct Damage {
    handle: u64,
    /// The server whose disk was damaged.
    server: usize,
    since: Instant,
    /// When that server was started again.
    back: Option<Instant>,
}

/// The fault injector: owns the processes and decides, from its seeded RNG, what to break
/// next. At most two chunkservers are down or stopped at any moment, so a quorum of every
/// chunk's replicas can always be re-formed; a replica is damaged only while every other
/// server is up, and no other chunkserver fault comes until its server is back, the damaged
/// chunk is sealed and fsck is clean again (a damaged replica and a second fault on the same
/// chunk are beyond what a 2-of-3 quorum survives). Master faults come at any time.
struct Nemesis {
    seed: u64,
    rng: StdRng,
    root: PathBuf,
    addr: String,
    master: Option<MasterProc>,
    /// When a killed master is started again.
    master_back: Option<Instant>,
    servers: Vec<Server>,
    state: Vec<CsState>,
    damage: Option<Damage>,
    stop: Arc<AtomicBool>,
    started: Instant,
    /// Faults injected, by kind.
    mix: BTreeMap<&'static str, usize>,
    flips: usize,
    /// Whether the last damage was a truncation.
    last_damage: Option<bool>,
}

/// One kind of fault the nemesis picks among.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// A quiet step.
    None,
    /// SIGKILL a chunkserver, restart it later on its disk.
    Kill,
    /// SIGSTOP a chunkserver (a slow replica), SIGCONT it a few seconds later.
    Stop,
    /// SIGKILL the master, restart it later on its directory and port.
    Master,
    /// Two chunkservers down at once.
    TwoDown,
    /// A chunkserver down, one of its replicas truncated or a bit flipped, then restarted.
    Damage,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::None => "none",
            Fault::Kill => "kill",
            Fault::Stop => "stop",
            Fault::Master => "master",
            Fault::TwoDown => "two down",
            Fault::Damage => "damage",
        }
    }
}

/// What the nemesis hands back once every server is up again.
struct Outcome {
    master: MasterProc,
    servers: Vec<Server>,
    /// Faults injected, by kind.
    mix: BTreeMap<&'static str, usize>,
    /// Bits flipped in replicas.
    flips: usize,
}

impl Nemesis {
    fn new(
        seed: u64,
        root: PathBuf,
        master: MasterProc,
        servers: Vec<Server>,
        stop: Arc<AtomicBool>,
    ) -> Nemesis {
        let n = servers.len();
        Nemesis {
            seed,
            rng: StdRng::seed_from_u64(seed),
            root,
            addr: master.addr.clone(),
            master: Some(master),
            master_back: None,
            servers,
            state: vec![CsState::Up; n],
            damage: None,
            stop,
            started: Instant::now(),
            mix: BTreeMap::new(),
            flips: 0,
            last_damage: None,
        }
    }

    fn log(&self, what: &str) {
        println!(
            "nemesis {:>6.1}s ({}): {what}",
            self.started.elapsed().as_secs_f64(),
            clock()
        );
    }

    /// Random duration between `lo` and `hi` milliseconds.
    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.rng.random_range(lo..=hi))
    }

    fn faulty(&self) -> usize {
        self.state.iter().filter(|s| **s != CsState::Up).count()
    }

    fn up(&self) -> Vec<usize> {
        (0..self.state.len())
            .filter(|&i| self.state[i] == CsState::Up)
            .collect()
    }

    /// Breaks things for `secs`, then brings everything back.
    fn run(mut self, rt: &tokio::runtime::Handle, secs: Duration) -> Outcome {
        // A client of its own, impatient: it must not wait long on a dead master.
        let c = rt
            .block_on(Client::connect_with(
                &self.addr,
                ClientConfig {
                    op_deadline: Duration::from_secs(3),
                    ..ClientConfig::default()
                },
            ))
            .unwrap();
        let end = Instant::now() + secs;
        while Instant::now() < end && !self.stop.load(Ordering::SeqCst) {
            self.restore_due(false);
            self.check_damage(rt, &c);
            self.step();
            let pause = self.ms(300, 1_500);
            std::thread::sleep(pause);
        }
        self.log("stop: every server back");
        self.restore_due(true);
        Outcome {
            master: self.master.take().unwrap(),
            servers: self.servers,
            mix: self.mix,
            flips: self.flips,
        }
    }

    /// Restarts what is due (everything with `all`).
    fn restore_due(&mut self, all: bool) {
        let now = Instant::now();
        for i in 0..self.state.len() {
            match self.state[i] {
                CsState::Down(at) if all || at <= now => self.restart(i),
                CsState::Stopped(at) if all || at <= now => {
                    self.servers[i].signal("CONT");
                    self.state[i] = CsState::Up;
                    self.log(&format!("SIGCONT {}", self.servers[i].id));
                }
                _ => {}
            }
        }
        if self.master_back.is_some_and(|at| all || at <= now) {
            self.master_back = None;
            self.master = Some(start_master(&self.root, &self.addr));
            self.log("master restarted");
        }
    }

    fn restart(&mut self, i: usize) {
        let (dir, id) = (self.servers[i].dir.clone(), self.servers[i].id.clone());
        self.servers[i] = start_server(&dir, &id, &self.addr);
        self.state[i] = CsState::Up;
        if let Some(d) = self.damage.as_mut().filter(|d| d.server == i) {
            d.back = Some(Instant::now());
        }
        self.log(&format!("restarted {id}"));
    }

    fn kill(&mut self, i: usize, down: Duration) {
        self.servers[i].kill();
        self.state[i] = CsState::Down(Instant::now() + down);
        self.log(&format!("SIGKILL {} for {down:.1?}", self.servers[i].id));
    }

    /// Closes the damage window once the damaged chunk is sealed (or gone) and fsck is clean.
    fn check_damage(&mut self, rt: &tokio::runtime::Handle, c: &Client) {
        let Some(d) = &self.damage else { return };
        // Until the damaged server is back and has reported its replicas, fsck knows nothing
        // of the damage.
        if self.master.is_none() || d.back.is_none_or(|t| t.elapsed() < Duration::from_secs(2)) {
            return;
        }
        let handle = d.handle;
        let repaired = rt.block_on(async {
            let Ok(f) = c.fsck(PATH).await else {
                return false;
            };
            let Ok(l) = c.refresh(PATH).await else {
                return false;
            };
            f.unhealthy.is_empty()
                && l.chunks
                    .iter()
                    .find(|ch| ch.handle == handle)
                    .is_none_or(|ch| ch.sealed_length.is_some())
        });
        if repaired {
            let took = d.since.elapsed();
            self.log(&format!(
                "chunk {handle} repaired {took:.1?} after its damage"
            ));
            self.damage = None;
        }
    }

    /// Picks one fault and starts it, if the rules allow it now.
    fn step(&mut self) {
        let calm = self.damage.is_none();
        let (faulty, master_up) = (self.faulty(), self.master.is_some());
        // The faults the rules allow now, with their weights; one of them, or a quiet step.
        let mut allowed: Vec<(Fault, u32)> = vec![(Fault::None, 3)];
        if calm && faulty < 2 {
            allowed.extend([(Fault::Kill, 3), (Fault::Stop, 2)]);
        }
        if master_up {
            allowed.push((Fault::Master, 2));
        }
        if calm && faulty == 0 {
            allowed.push((Fault::TwoDown, 1));
            if master_up {
                allowed.push((Fault::Damage, 3));
            }
        }
        let total: u32 = allowed.iter().map(|(_, w)| w).sum();
        let mut pick = self.rng.random_range(0..total);
        let fault = allowed
            .iter()
            .find(|(_, w)| {
                let here = pick < *w;
                pick = pick.saturating_sub(*w);
                here
            })
            .map_or(Fault::None, |(f, _)| *f);
        if fault != Fault::None {
            *self.mix.entry(fault.name()).or_insert(0) += 1;
        }
        match fault {
            Fault::None => {}
            Fault::Kill => {
                let i = *self.up().choose(&mut self.rng).unwrap();
                let down = self.ms(500, 4_000);
                self.kill(i, down);
            }
            Fault::Stop => {
                let i = *self.up().choose(&mut self.rng).unwrap();
                let pause = self.ms(1_000, 5_000);
                self.servers[i].signal("STOP");
                self.state[i] = CsState::Stopped(Instant::now() + pause);
                self.log(&format!("SIGSTOP {} for {pause:.1?}", self.servers[i].id));
            }
            Fault::Master => {
                let down = self.ms(200, 3_000);
                self.master.take().unwrap().kill();
                self.master_back = Some(Instant::now() + down);
                self.log(&format!("SIGKILL master for {down:.1?}"));
            }
            Fault::TwoDown => {
                let mut up = self.up();
                for _ in 0..2 {
                    let k = self.rng.random_range(0..up.len());
                    let i = up.swap_remove(k);
                    let down = self.ms(1_000, 6_000);
                    self.kill(i, down);
                }
            }
            Fault::Damage => {
                let i = *self.up().choose(&mut self.rng).unwrap();
                let down = self.ms(300, 2_000);
                self.kill(i, down);
                if let Some((handle, what)) = self.damage_one(i) {
                    self.log(&format!("{what} ({})", self.servers[i].id));
                    self.damage = Some(Damage {
                        handle,
                        server: i,
                        since: Instant::now(),
                        back: None,
                    });
                }
            }
        }
    }

    /// Damages one replica on the (stopped) disk of server `i`: truncates its chunk file or
    /// flips one bit in it. Returns the chunk and what was done.
    fn damage_one(&mut self, i: usize) -> Option<(u64, String)> {
        let files = chunk_files(&self.servers[i].dir);
        let (handle, path, len) = files.choose(&mut self.rng)?.clone();
        if len == 0 {
            return None;
        }
        let f = std::fs::OpenOptions::new()
            .write(true)
            .read(true)
            .open(&path)
            .ok()?;
        // Truncations and flips take turns: an even seed truncates first, an odd one flips.
        let truncate = self
            .last_damage
            .map_or(self.seed.is_multiple_of(2), |truncated| !truncated);
        self.last_damage = Some(truncate);
        if truncate {
            let to = self.rng.random_range(0..len);
            f.set_len(to).unwrap();
            f.sync_all().unwrap();
            Some((
                handle,
                format!("truncated chunk {handle} from {len} to {to} bytes"),
            ))
        } else {
            use std::os::unix::fs::FileExt;
            let at = self.rng.random_range(0..len);
            let mask = 1u8 << self.rng.random_range(0..8);
            let mut b = [0u8];
            f.read_exact_at(&mut b, at).unwrap();
            f.write_all_at(&[b[0] ^ mask], at).unwrap();
            f.sync_all().unwrap();
            self.flips += 1;
            Some((
                handle,
                format!("flipped bit {mask:#04x} at byte {at} of chunk {handle}"),
            ))
        }
    }
}

/// The chunk files in a data directory: handle, path, length.
fn chunk_files(dir: &Path) -> Vec<(u64, PathBuf, u64)> {
    let mut out: Vec<(u64, PathBuf, u64)> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| {
                    let handle = e.file_name().to_str()?.parse::<u64>().ok()?;
                    let len = e.metadata().ok()?.len();
                    Some((handle, e.path(), len))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// How many violations of each kind.
fn by_kind(v: &[Violation]) -> BTreeMap<&'static str, usize> {
    let mut out = BTreeMap::new();
    for x in v {
        let k = match x {
            Violation::Lost { .. } => "lost",
            Violation::Duplicate { .. } => "duplicate",
            Violation::AckedTwice { .. } => "acked twice",
            Violation::NeverSent { .. } => "never sent",
            Violation::Garbage { .. } => "garbage",
            Violation::Replica { .. } => "replica",
            Violation::UnderQuorum { .. } => "under quorum",
            Violation::Fsck { .. } => "fsck",
        };
        *out.entry(k).or_insert(0) += 1;
    }
    out
}
