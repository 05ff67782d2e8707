//! The simulator under `cargo test` (a debug build, a few seconds a seed): a seed replays
//! exactly. Each run is a `gfs-sim` process of its own, as every seed `gfs-sim` runs and every
//! replay command it prints: runs in one process can take different schedules (the crate
//! doc). CI then runs the pinned seeds ([`gfs_sim::PINNED`], each found a defect once) and 250
//! more on a release build (`.ci/run`: `gfs-sim --pinned --seeds 250`).
//!
//! `GFS_SIM_CLUSTER_SEEDS=N` runs the pinned seeds and N more here too (N fresh ones when
//! `GFS_SIM_FRESH=1`); a failure prints the one-line replay command.

use std::process::Command;

/// Runs `gfs-sim` with `args`; whether it passed, and what it printed.
fn sim(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gfs-sim"))
        .args(args)
        .output()
        .expect("gfs-sim starts");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The summary line of a one-seed run: `seed N: ok (S sent, A acknowledged, ...) trace H`.
fn summary(printed: &str) -> (usize, String) {
    let line = printed
        .lines()
        .find(|l| l.starts_with("seed "))
        .unwrap_or_else(|| panic!("no summary in: {printed}"));
    let acked = line
        .split(", ")
        .find_map(|p| p.strip_suffix(" acknowledged"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no acknowledged count in: {line}"));
    let hash = line
        .rsplit_once(" trace ")
        .map(|(_, h)| h.to_string())
        .unwrap_or_else(|| panic!("no trace hash in: {line}"));
    (acked, hash)
}

#[test]
fn a_seed_replays_with_the_same_trace_hash() {
    let run = |seed: &str| sim(&["--seed", seed, "--load-secs", "10"]);
    let (passed, a) = run("7");
    assert!(passed, "seed 7 failed:\n{a}");
    let (acked, hash) = summary(&a);
    assert!(acked > 0, "seed 7 acknowledged nothing");
    let (_, b) = run("7");
    assert_eq!(hash, summary(&b).1, "two runs of seed 7 differ:\n{a}\n{b}");
    let (_, other) = run("8");
    assert_ne!(hash, summary(&other).1, "seeds 7 and 8 ran the same");
}

#[test]
fn seeds_keep_every_promise() {
    let Ok(n) = std::env::var("GFS_SIM_CLUSTER_SEEDS") else {
        println!("sim: GFS_SIM_CLUSTER_SEEDS unset: the pinned and batch seeds run in .ci/run");
        return;
    };
    let fresh = std::env::var("GFS_SIM_FRESH").is_ok_and(|v| v == "1");
    let args = if fresh {
        ["--pinned", "--seeds", "0", "--fresh", &n]
    } else {
        ["--pinned", "--seeds", &n, "--from", "1000"]
    };
    let (passed, printed) = sim(&args);
    println!("{printed}");
    assert!(
        passed,
        "seeds failed (each with its replay command):\n{printed}"
    );
}
