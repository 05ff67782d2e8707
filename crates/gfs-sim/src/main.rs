//! `gfs-sim`: runs simulated seeds, many in parallel, or replays one with its trace.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use gfs_sim::{Options, run};

#[derive(Parser)]
#[command(about = "Deterministic simulation of a whole gfs-rs cluster under a seeded nemesis")]
struct Args {
    /// Run this one seed (with --trace: print its event trace).
    #[arg(long)]
    seed: Option<u64>,
    /// Run this many seeds, from --from on.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// The first seed of --seeds.
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// Then this many fresh seeds, from a random start (printed), so that every run explores
    /// new schedules.
    #[arg(long, default_value_t = 0)]
    fresh: u64,
    /// Seeds run at once (one process each); default: the number of cores.
    #[arg(long)]
    jobs: Option<usize>,
    /// Simulated seconds of load and faults per seed.
    #[arg(long, default_value_t = 20)]
    load_secs: u64,
    /// No faults (a baseline).
    #[arg(long)]
    no_faults: bool,
    /// Print the event trace.
    #[arg(long)]
    trace: bool,
    /// First the pinned seeds (each found a defect once), each at the load it was found at.
    #[arg(long)]
    pinned: bool,
    /// Stop starting seeds once one fails (finding how many seeds a defect takes).
    #[arg(long)]
    until_failure: bool,
}

fn options(a: &Args, seed: u64) -> Options {
    Options {
        load: Duration::from_secs(a.load_secs),
        faults: !a.no_faults,
        print_trace: a.trace,
        ..Options::new(seed)
    }
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    if let Some(seed) = a.seed {
        let o = options(&a, seed);
        let out = run(&o);
        println!("{}", summary(&out));
        for p in &out.problems {
            println!("  {p}");
        }
        anyhow::ensure!(
            out.passed(),
            "seed {seed} failed; replay: {}",
            o.replay_command()
        );
        return Ok(());
    }
    let jobs = a
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let mut seeds: Vec<(u64, u64)> = Vec::new();
    if a.pinned {
        println!("pinned seeds: {:?}", gfs_sim::PINNED);
        seeds.extend(gfs_sim::PINNED);
    }
    seeds.extend((a.from..a.from + a.seeds).map(|s| (s, a.load_secs)));
    if a.fresh > 0 {
        let base = gfs_util::random::random::<u64>() >> 16;
        println!("fresh seeds: {base}..{}", base + a.fresh);
        seeds.extend((base..base + a.fresh).map(|s| (s, a.load_secs)));
    }
    let seeds = Arc::new(seeds);
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let args = Arc::new(a);
    let exe = Arc::new(std::env::current_exe()?);
    let threads: Vec<_> = (0..jobs)
        .map(|_| {
            let (next, failed, args) = (Arc::clone(&next), Arc::clone(&failed), Arc::clone(&args));
            let (seeds, exe) = (Arc::clone(&seeds), Arc::clone(&exe));
            std::thread::spawn(move || {
                loop {
                    if args.until_failure && failed.load(Ordering::SeqCst) > 0 {
                        return;
                    }
                    let Some(&(seed, load)) = seeds.get(next.fetch_add(1, Ordering::SeqCst)) else {
                        return;
                    };
                    // Each seed in a process of its own, as `--seed` runs it: a run leaves
                    // process-wide state behind (in dependencies: a later run of the same
                    // seed in the same process can take another schedule), so only this way
                    // does every seed a batch reports replay alone, exactly.
                    let mut cmd = std::process::Command::new(&*exe);
                    cmd.args([
                        "--seed",
                        &seed.to_string(),
                        "--load-secs",
                        &load.to_string(),
                    ]);
                    if args.no_faults {
                        cmd.arg("--no-faults");
                    }
                    let out = cmd.stderr(std::process::Stdio::null()).output();
                    let replay = Options {
                        load: Duration::from_secs(load),
                        ..options(&args, seed)
                    }
                    .replay_command();
                    match out {
                        Ok(o) if o.status.success() => {
                            print!("{}", String::from_utf8_lossy(&o.stdout));
                        }
                        Ok(o) => {
                            failed.fetch_add(1, Ordering::SeqCst);
                            let text = String::from_utf8_lossy(&o.stdout);
                            match text.split_once('\n') {
                                Some((first, rest)) => {
                                    print!("{first}\n  replay: {replay}\n{rest}")
                                }
                                None => println!("seed {seed}: PANICKED\n  replay: {replay}"),
                            }
                        }
                        Err(e) => {
                            failed.fetch_add(1, Ordering::SeqCst);
                            println!("seed {seed}: cannot start a run: {e}");
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    let secs = started.elapsed().as_secs_f64();
    let n = next.load(Ordering::SeqCst).min(seeds.len());
    let bad = failed.load(Ordering::SeqCst);
    println!(
        "{n} seeds in {secs:.1} s ({:.2} seeds/s, {jobs} jobs): {bad} failed",
        n as f64 / secs
    );
    anyhow::ensure!(bad == 0, "{bad} seed(s) failed");
    Ok(())
}

fn summary(o: &gfs_sim::Outcome) -> String {
    format!(
        "seed {}: {} ({} sent, {} acknowledged, {} faults, {:.1} s simulated, healed after {:?}) trace {:016x}",
        o.seed,
        if o.passed() { "ok" } else { "FAILED" },
        o.sent,
        o.acked,
        o.faults,
        o.simulated.as_secs_f64(),
        o.healed_after,
        o.trace_hash
    )
}
