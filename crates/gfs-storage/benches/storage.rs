//! `cargo bench -p gfs-storage`: the chunk store against the raw disk, measured in the same run.
//!
//! Raw limits: 1 MiB `write` + `fdatasync` to a plain file (bandwidth) and a 4 KiB `write` +
//! `fdatasync` loop (rate), each measured before and after the store's passes, keeping the
//! better (the first pass after a deletion runs slower on this disk). Store: 1 MiB commits from one writer, and 4 KiB commits from 16
//! concurrent writers (on 16 chunks, and on one shared chunk with offsets assigned in order as a
//! primary does). Every figure is the median of `GFS_BENCH_RUNS` runs (default 5). Files go to
//! `GFS_BENCH_DIR` (default: cargo's target tmp dir, on the same disk as the build).

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gfs_storage::{ChunkHandle, ChunkStore, OpId, StageRequest, StoreConfig, probe};

const MIB: u64 = 1 << 20;

fn bench_dir() -> PathBuf {
    std::env::var_os("GFS_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")))
}

fn runs() -> usize {
    std::env::var("GFS_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn raw_bandwidth(dir: &Path, total_mib: u64) -> f64 {
    probe::fsync_bandwidth(dir, total_mib).unwrap()
}

fn raw_small_rate(dir: &Path, window: Duration) -> f64 {
    probe::fsync_rate(dir, window).unwrap()
}

fn settle(dir: &Path) {
    probe::settle(dir).unwrap();
}

fn store_config() -> StoreConfig {
    StoreConfig {
        // Large enough that no run fills a chunk.
        chunk_size: 1024 * MIB,
        staging_limit: 256 * MIB,
        ..StoreConfig::default()
    }
}

/// MiB/s of 1 MiB stage + commit from one writer.
async fn store_bandwidth(dir: &Path, total_mib: u64) -> f64 {
    let d = tempfile::tempdir_in(dir).unwrap();
    let store = ChunkStore::open(d.path(), store_config()).unwrap();
    let h = ChunkHandle(1);
    store.create(h, 1).await.unwrap();
    let data = Bytes::from(vec![0xc3u8; MIB as usize]);
    let t = Instant::now();
    for i in 0..total_mib {
        store
            .stage(StageRequest {
                op: OpId(i),
                handle: h,
                version: 1,
                offset: i * MIB,
                data: data.clone(),
            })
            .unwrap();
        store.commit(h, OpId(i)).await.unwrap();
    }
    let rate = total_mib as f64 / t.elapsed().as_secs_f64();
    if std::env::var_os("GFS_BENCH_VERBOSE").is_some() {
        let st = store.stats();
        println!(
            "  1 MiB: {} commits, {} batches, {} fsyncs",
            st.commits, st.batches, st.fsyncs
        );
    }
    drop(store);
    drop(d);
    settle(dir);
    rate
}

/// Commits/s of 4 KiB appends from `writers` concurrent writers.
async fn store_small_rate(dir: &Path, writers: u64, shared_chunk: bool, window: Duration) -> f64 {
    let d = tempfile::tempdir_in(dir).unwrap();
    let store = Arc::new(ChunkStore::open(d.path(), store_config()).unwrap());
    let chunks = if shared_chunk { 1 } else { writers };
    let mut next = Vec::new();
    for c in 0..chunks {
        store.create(ChunkHandle(c), 1).await.unwrap();
        next.push(Arc::new(tokio::sync::Mutex::new(0u64)));
    }
    let data = Bytes::from(vec![0x3cu8; 4096]);
    let t = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = Arc::clone(&store);
        let c = if shared_chunk { 0 } else { w };
        let next = Arc::clone(&next[c as usize]);
        let data = data.clone();
        tasks.push(tokio::spawn(async move {
            let h = ChunkHandle(c);
            let mut n = 0u64;
            while t.elapsed() < window {
                let op = OpId((w << 32) | n);
                {
                    // Assign the offset and stage under one lock, as the primary does.
                    let mut off = next.lock().await;
                    store
                        .stage(StageRequest {
                            op,
                            handle: h,
                            version: 1,
                            offset: *off,
                            data: data.clone(),
                        })
                        .unwrap();
                    *off += 4096;
                }
                store.commit(h, op).await.unwrap();
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap();
    }
    let rate = total as f64 / t.elapsed().as_secs_f64();
    let st = store.stats();
    if std::env::var_os("GFS_BENCH_VERBOSE").is_some() {
        println!(
            "  {writers} writers, shared={shared_chunk}: {} commits in {} batches ({:.1}/batch), {:.1} fsyncs/batch",
            st.commits,
            st.batches,
            st.commits as f64 / st.batches as f64,
            st.fsyncs as f64 / st.batches as f64
        );
    }
    drop(store);
    drop(d);
    settle(dir);
    rate
}

fn main() {
    let base = bench_dir();
    std::fs::create_dir_all(&base).unwrap();
    let dir = tempfile::tempdir_in(&base).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let window = Duration::from_secs(2);
    let (mut raw_bw, mut raw_rate, mut st_bw, mut st_16, mut st_16_shared) =
        (vec![], vec![], vec![], vec![], vec![]);
    let n = runs();
    println!("gfs-storage bench: {n} runs in {}", dir.path().display());
    for run in 1..=n {
        // The raw limits are measured before and after the store's passes and the better one
        // is kept: whichever pass runs first on this VM disk is penalised.
        let raw_before = raw_bandwidth(dir.path(), 128);
        st_bw.push(rt.block_on(store_bandwidth(dir.path(), 128)));
        raw_bw.push(raw_before.max(raw_bandwidth(dir.path(), 128)));
        let rate_before = raw_small_rate(dir.path(), window);
        st_16.push(rt.block_on(store_small_rate(dir.path(), 16, false, window)));
        st_16_shared.push(rt.block_on(store_small_rate(dir.path(), 16, true, window)));
        raw_rate.push(rate_before.max(raw_small_rate(dir.path(), window)));
        println!(
            "run {run}: raw {:.0} MiB/s, store {:.0} MiB/s | raw 4K {:.0}/s, store 16w {:.0}/s, 16w one chunk {:.0}/s",
            raw_bw[run - 1],
            st_bw[run - 1],
            raw_rate[run - 1],
            st_16[run - 1],
            st_16_shared[run - 1]
        );
    }
    let (rb, sb, rr, s16, s16s) = (
        median(raw_bw),
        median(st_bw),
        median(raw_rate),
        median(st_16),
        median(st_16_shared),
    );
    println!();
    println!("median of {n} runs");
    println!("raw 1 MiB write+fdatasync         {rb:>10.1} MiB/s");
    println!(
        "store 1 MiB commits, 1 writer     {sb:>10.1} MiB/s   = {:.2} x raw (target >= 0.80)",
        sb / rb
    );
    println!("raw 4 KiB write+fdatasync         {rr:>10.0} ops/s");
    println!(
        "store 4 KiB, 16 writers/16 chunks {s16:>10.0} ops/s   = {:.2} x raw (target >= 3)",
        s16 / rr
    );
    println!(
        "store 4 KiB, 16 writers/1 chunk   {s16s:>10.0} ops/s   = {:.2} x raw (target >= 3)",
        s16s / rr
    );
}
