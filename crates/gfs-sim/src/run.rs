//! One simulated run: build the cluster and clients, step the simulation under the nemesis,
//! heal, then check the whole promise.

use std::sync::Arc;
use std::time::Duration;

use gfs_testkit::Violation;

use crate::cluster::{Cluster, MASTER, SERVERS, data_dir};
use crate::cues::Cues;
use crate::durability::Durability;
use crate::nemesis::{CLIENTS, Nemesis};
use crate::trace::Trace;
use crate::workload::{self, Shared};

/// Message latency between any two hosts, at most (outside a "slow network" fault).
pub const MAX_LATENCY: Duration = Duration::from_millis(5);
/// How often (simulated) the run checks that every acknowledged record is on a quorum's disks.
const CHECK_EVERY: Duration = Duration::from_millis(500);
/// Appenders per client host.
const APPENDERS: u32 = 3;
/// A server whose software stopped on its own is restarted this long after, as systemd's
/// `Restart=on-failure` with `RestartSec=2s` (deploy/systemd) would.
const RESTART_AFTER: Duration = Duration::from_secs(2);

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// The seed: every choice of the run follows from it.
    pub seed: u64,
    /// How long (simulated) the load and the nemesis run.
    pub load: Duration,
    /// Whether the nemesis injects faults.
    pub faults: bool,
    /// Echo the event trace to stdout.
    pub print_trace: bool,
    /// Liveness bound: after the load, the file's fsck must come back clean within this.
    pub heal_within: Duration,
}

impl Options {
    /// The defaults for `seed`: 20 s of load with faults, healed within 120 s.
    pub fn new(seed: u64) -> Options {
        Options {
            seed,
            load: Duration::from_secs(20),
            faults: true,
            print_trace: false,
            heal_within: Duration::from_secs(120),
        }
    }

    /// The one-line command that replays this run exactly.
    pub fn replay_command(&self) -> String {
        format!(
            "cargo run --release -p gfs-sim -- --seed {} --load-secs {}{} --trace",
            self.seed,
            self.load.as_secs(),
            if self.faults { "" } else { " --no-faults" }
        )
    }
}

/// What a run found.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The run's seed.
    pub seed: u64,
    /// Hash of the event trace and of every disk's operations: the same for two runs of a seed.
    pub trace_hash: u64,
    /// Records sent.
    pub sent: usize,
    /// Records acknowledged.
    pub acked: usize,
    /// Faults injected.
    pub faults: usize,
    /// Simulated time the run took.
    pub simulated: Duration,
    /// How long after the load fsck came back clean.
    pub healed_after: Option<Duration>,
    /// Everything that broke the promise (empty: the run passed).
    pub problems: Vec<String>,
}

impl Outcome {
    /// Whether the run kept every promise.
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Runs one simulation. Deterministic: the same options give the same outcome and trace hash.
pub fn run(o: &Options) -> Outcome {
    gfs_util::random::seed_thread(o.seed);
    let cues = Cues::default();
    let _logging = tracing::subscriber::set_default(subscriber(cues.clone()));
    let trace = Trace::new(o.print_trace);
    let mut sim = turmoil::Builder::new()
        .rng_seed(o.seed)
        .simulation_duration(o.load + o.heal_within + Duration::from_secs(120))
        .tick_duration(Duration::from_millis(1))
        .min_message_latency(Duration::from_micros(100))
        .max_message_latency(MAX_LATENCY)
        .tcp_capacity(4096)
        .enable_random_order()
        .build();
    let cluster = Cluster::new(o.seed, 20 + o.seed % 200);
    cluster.add_servers(&mut sim, &trace);

    let shared = Shared::default();
    // Each client host: the appenders, one putter, one namespace task and one reader.
    *shared.running.lock() = CLIENTS.len() * (APPENDERS as usize + 3);
    for (i, name) in CLIENTS.iter().enumerate() {
        let (shared, trace, load) = (shared.clone(), trace.clone(), o.load);
        let clock = cluster.clock(name);
        sim.client(*name, async move {
            let c = workload::client(clock);
            workload::create_file(&c).await;
            let tasks: Vec<_> = (0..APPENDERS)
                .map(|a| {
                    let writer = i as u32 * APPENDERS + a;
                    tokio::spawn(workload::appender(
                        c.clone(),
                        writer,
                        load,
                        shared.clone(),
                        trace.clone(),
                    ))
                })
                .collect();
            let ns = tokio::spawn(workload::namespace(
                c.clone(),
                i,
                load,
                shared.clone(),
                trace.clone(),
            ));
            let putter = tokio::spawn(workload::putter(
                c.clone(),
                i,
                load,
                shared.clone(),
                trace.clone(),
            ));
            let reader = tokio::spawn(workload::reader(
                c.clone(),
                load,
                shared.clone(),
                trace.clone(),
            ));
            ns.await?;
            putter.await?;
            reader.await?;
            for t in tasks {
                t.await?;
            }
            Ok(())
        });
    }
    {
        let (shared, load, within) = (shared.clone(), o.load, o.heal_within);
        let clock = cluster.clock("checker");
        let disks = cluster.disks.clone();
        sim.client("checker", async move {
            workload::checker(workload::client(clock), load, within, shared, disks).await;
            Ok(())
        });
    }

    let mut nemesis = Nemesis::new(o.seed, o.load, o.faults, shared.flips.clone(), cues);
    let mut problems = Vec::new();
    let mut durability = Durability::default();
    let mut next_check = Duration::ZERO;
    let mut healed = false;
    let mut stopped: std::collections::BTreeMap<&str, Duration> = Default::default();
    loop {
        match sim.step() {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => {
                problems.push(format!("the simulation stopped: {e}"));
                break;
            }
        }
        let now = sim.elapsed();
        if now >= next_check {
            next_check = now + CHECK_EVERY;
            let acked = shared.history.lock().acked.clone();
            let flips = shared.flips.lock().clone();
            problems.extend(durability.check(&cluster.disks, &acked, &flips, now));
        }
        if now < o.load {
            nemesis.tick(now, &mut sim, &cluster, &trace);
        } else if !healed {
            healed = true;
            nemesis.heal_all(now, &mut sim, &cluster, &trace);
        }
        // The supervisor: a server that stopped on its own comes back.
        for h in std::iter::once(MASTER).chain(SERVERS) {
            if nemesis.holds_down(h) || sim.is_host_running(h) {
                stopped.remove(h);
                continue;
            }
            let since = *stopped.entry(h).or_insert(now);
            if now - since >= RESTART_AFTER {
                trace.at(now, format_args!("supervisor: restart {h}, which stopped"));
                sim.bounce(h);
                stopped.remove(h);
            }
        }
    }
    let simulated = sim.elapsed();
    trace.at(simulated, "clients done; power cut on every server");
    // Every server loses power: the checker reads what survives on the disks.
    for d in cluster.disks.values() {
        d.crash();
    }
    drop(sim);

    let history = shared.history.lock().clone();
    let healed_after = *shared.healed_after.lock();
    if healed_after.is_none() {
        problems.push(format!(
            "liveness: {} not healthy (fsck) within {:?} after the load: {}",
            workload::PATH,
            o.heal_within,
            shared.unhealthy.lock()
        ));
    }
    if let Some(seen) = shared.observed.lock().as_ref() {
        for (at, len, crc) in shared.reads.lock().iter() {
            let end = seen.file.get(..*len);
            if end.is_none_or(|e| crc32c::crc32c(e) != *crc) {
                problems.push(format!(
                    "a whole-file read at {at:?} returned {len} bytes that are not the file's \
                     first {len} bytes at the end (it had {} then)",
                    seen.file.len()
                ));
            }
        }
    }
    problems.extend(shared.bad_gets.lock().iter().cloned());
    problems.extend(shared.fast_failures.lock().iter().cloned());
    if shared.observed.lock().is_some() {
        problems.extend(check_puts(&shared.puts.lock(), &shared.put_reads.lock()));
    }
    if let Some(seen) = shared.observed.lock().take() {
        let dirs: Vec<_> = SERVERS
            .iter()
            .map(|id| {
                (
                    id.to_string(),
                    Arc::clone(&cluster.disks[*id].shared()),
                    data_dir(),
                )
            })
            .collect();
        let violations: Vec<Violation> = seen.check_on(&history, &dirs);
        trace.at(
            simulated,
            format_args!("checked: {} violation(s)", violations.len()),
        );
        problems.extend(violations.iter().map(|v| format!("{v:?}")));
    }
    let calls = shared.calls.lock().clone();
    if let Err(e) = crate::linearizable::check(&calls) {
        problems.push(format!("namespace: {e}"));
    }
    for d in cluster.disks.values() {
        trace.fold(d.trace_hash());
    }
    // The thread draws from the OS again (a test thread may run other work after).
    gfs_util::random::unseed_thread();
    Outcome {
        seed: o.seed,
        trace_hash: trace.hash(),
        sent: history.sent.len(),
        acked: history.acked.len(),
        faults: nemesis.applied,
        simulated,
        healed_after,
        problems,
    }
}

/// Stamps log lines with simulated time (seconds since the run began), as the trace does.
struct SimTime;

impl tracing_subscriber::fmt::time::FormatTime for SimTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        write!(w, "{:9.3}", crate::trace::now().as_secs_f64())
    }
}

/// The run's tracing: the cues the nemesis aims by, and a log to stdout of what
/// `GFS_SIM_LOG` (an env-filter) asks for, stamped with simulated time.
fn subscriber(cues: Cues) -> impl tracing::Subscriber + Send + Sync {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt;
    let log = std::env::var("GFS_SIM_LOG").ok().map(|filter| {
        tracing_subscriber::fmt::layer()
            .with_timer(SimTime)
            .with_filter(tracing_subscriber::EnvFilter::new(filter))
    });
    tracing_subscriber::registry()
        .with(crate::cues::layer(cues))
        .with(log)
}

/// Each put file as read back at the end: an acknowledged put exactly its bytes, any other a
/// prefix of them (the writer's pieces land in order or not at all); every file readable.
fn check_puts(puts: &[workload::Put], reads: &[workload::PutRead]) -> Vec<String> {
    let mut out = Vec::new();
    for p in puts {
        let Some((_, back)) = reads.iter().find(|(path, _)| *path == p.path) else {
            out.push(format!("{} was not read back", p.path));
            continue;
        };
        let (len, crc) = match back {
            Ok(b) => *b,
            Err(e) => {
                out.push(format!("{} cannot be read back: {e}", p.path));
                continue;
            }
        };
        let data = workload::put_bytes(p.seed, p.len);
        let fits = len <= data.len() && crc32c::crc32c(&data[..len]) == crc;
        if p.acked && (len != p.len || !fits) {
            out.push(format!(
                "{}: acknowledged with {} bytes, reads back {len} bytes{}",
                p.path,
                p.len,
                if fits { "" } else { " that differ" }
            ));
        } else if !fits {
            out.push(format!(
                "{}: a failed put reads back {len} bytes that are not a prefix of what was put",
                p.path
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::check_puts;
    use crate::workload::{Put, put_bytes};

    fn put(acked: bool) -> Put {
        Put {
            path: "/p".into(),
            len: 1000,
            seed: 7,
            acked,
        }
    }

    fn read(len: usize, salt: u8) -> Vec<crate::workload::PutRead> {
        let mut b = put_bytes(7, 1000)[..len].to_vec();
        if let Some(x) = b.first_mut() {
            *x ^= salt;
        }
        vec![("/p".into(), Ok((len, crc32c::crc32c(&b))))]
    }

    #[test]
    fn a_put_reads_back_whole_when_acknowledged_and_as_a_prefix_otherwise() {
        assert!(check_puts(&[put(true)], &read(1000, 0)).is_empty());
        assert_eq!(check_puts(&[put(true)], &read(999, 0)).len(), 1, "short");
        assert_eq!(
            check_puts(&[put(true)], &read(1000, 1)).len(),
            1,
            "other bytes"
        );
        assert!(check_puts(&[put(false)], &read(400, 0)).is_empty());
        assert!(check_puts(&[put(false)], &read(0, 0)).is_empty());
        assert_eq!(
            check_puts(&[put(false)], &read(400, 1)).len(),
            1,
            "not a prefix"
        );
        let unreadable = vec![("/p".to_string(), Err("gone".to_string()))];
        assert_eq!(check_puts(&[put(false)], &unreadable).len(), 1);
        assert_eq!(check_puts(&[put(true)], &[]).len(), 1, "never read back");
    }
}
