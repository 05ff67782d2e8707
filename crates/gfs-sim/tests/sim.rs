//! The simulator under `cargo test` (a debug build, about 4 s a seed): a run replays exactly.
//! CI then runs the pinned seeds ([`gfs_sim::PINNED`], each found a defect once) and 250 more
//! on a release build (`.ci/run`: `gfs-sim --pinned --seeds 250`).
//!
//! `GFS_SIM_CLUSTER_SEEDS=N` runs the pinned seeds and N more here too (fresh each run when
//! `GFS_SIM_FRESH=1`, which prints them); a failure prints the one-line replay command.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use gfs_sim::{Options, Outcome, PINNED, run};

#[test]
fn a_seed_replays_with_the_same_trace_hash() {
    let o = Options {
        load: std::time::Duration::from_secs(10),
        ..Options::new(7)
    };
    let a = run(&o);
    let b = run(&o);
    assert!(a.passed(), "seed 7: {:?}", a.problems);
    assert!(a.acked > 0, "seed 7 acknowledged nothing");
    assert_eq!(
        a.trace_hash,
        b.trace_hash,
        "two runs of seed 7 differ; replay: {}",
        o.replay_command()
    );
    let other = run(&Options {
        seed: 8,
        ..o.clone()
    });
    assert_ne!(a.trace_hash, other.trace_hash, "seeds 7 and 8 ran the same");
}

#[test]
fn seeds_keep_every_promise() {
    let Some(n) = std::env::var("GFS_SIM_CLUSTER_SEEDS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    else {
        println!("sim: GFS_SIM_CLUSTER_SEEDS unset: the pinned and batch seeds run in .ci/run");
        return;
    };
    let first: u64 = if std::env::var("GFS_SIM_FRESH").is_ok_and(|v| v == "1") {
        gfs_util::random::random::<u64>() >> 16
    } else {
        1000
    };
    println!("sim: pinned {PINNED:?}, then seeds {first}..{}", first + n);
    let seeds: Vec<(u64, u64)> = PINNED
        .iter()
        .copied()
        .chain((first..first + n).map(|s| (s, 20)))
        .collect();
    let seeds = Arc::new(seeds);
    let next = Arc::new(AtomicUsize::new(0));
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads: Vec<_> = (0..jobs)
        .map(|_| {
            let (seeds, next) = (Arc::clone(&seeds), Arc::clone(&next));
            std::thread::spawn(move || {
                let mut failed: Vec<(Options, Outcome)> = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(&(seed, load)) = seeds.get(i) else {
                        return failed;
                    };
                    let o = Options {
                        load: std::time::Duration::from_secs(load),
                        ..Options::new(seed)
                    };
                    let out = run(&o);
                    if !out.passed() {
                        failed.push((o, out));
                    }
                }
            })
        })
        .collect();
    let failed: Vec<(Options, Outcome)> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("a simulation thread panicked"))
        .collect();
    let lines: Vec<String> = failed
        .iter()
        .map(|(o, out)| {
            format!(
                "seed {}: {:?}\n  replay: {}",
                o.seed,
                out.problems.iter().take(5).collect::<Vec<_>>(),
                o.replay_command()
            )
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} seed(s) failed:\n{}",
        failed.len(),
        lines.join("\n")
    );
}
