//! `gfs-bench`: the replicated append path on a local three-node cluster, against the raw
//! limits of the same disk measured in the same run.
//!
//! - stream: one client, 1 MiB appends, `--window` in flight; target >= 0.6 x (raw fsync'd
//!   bandwidth / 3), since every byte is written by three replicas on this one disk. The raw
//!   bandwidth is the faster of buffered and direct 1 MiB writes (`probe::fsync_bandwidth`):
//!   the stores write large appends past the page cache.
//! - small: 16 clients appending 4 KiB records to one chunk; target >= 20,000 appends/s; p50/p99.
//!
//! The three chunkservers run in this process (port 0, data under `--dir`), with 1 GiB chunks
//! so no run fills one.
//!
//! `--suite client` (or `all`, the default) adds the client-level figures, through
//! `gfs-client` against a master and three chunkservers in this process (64 MiB chunks):
//! put and get of `--put-mib` (1 GiB; get with a cold page cache when root can drop it, beside
//! the disk's own read rate of the same chunk files), 4 parallel writers × 256 MiB, 2,000 files
//! × 4 KiB, 16 and then 64 appenders × 1,000 records × 4 KiB to one file. Targets (issue 17):
//! put >= 0.8 x (raw write / 3), 4 writers >= 0.85 x, get >= 0.85 x raw read, >= 3,000 small
//! files/s, >= 15,000 and >= 25,000 record appends/s with p99 <= 5 ms. When the `gfs` CLI was built
//! beside it (`cargo build --release -p gfs-cli`), also what users run: `gfs get` of the file
//! to a local file and `gfs cat` into a pipe (cold cache each), `gfs put` of that local file,
//! each against the library's figure of the same run (target >= 0.9 x).
//!
//! Every figure is the median of `--runs` runs.

#[path = "../bench_client.rs"]
mod bench_client;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use futures::StreamExt;
use gfs_chunkserver::{ChunkServer, ChunkserverConfig};
use gfs_dataplane::{ChunkRef, ClientConfig, DataClient};
use gfs_proto::v1::{CreateChunkRequest, GrantLeaseRequest};
use gfs_storage::probe;

/// Benchmark the replicated append path.
#[derive(Parser, Debug, serde::Serialize)]
#[command(name = "gfs-bench", version)]
struct Args {
    /// Where the chunkservers keep their data (default: a temporary directory under ./target).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    /// Runs per measurement; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// MiB appended by the streaming client per run.
    #[arg(long, default_value_t = 256)]
    stream_mib: u64,
    /// 1 MiB appends in flight for the streaming client (a streaming writer keeps several).
    #[arg(long, default_value_t = 8)]
    window: usize,
    /// Clients appending 4 KiB records.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Seconds of 4 KiB appends per run.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// The stores' group-commit delay in microseconds (default: the configuration default).
    #[arg(long)]
    commit_delay_us: Option<u64>,
    /// The chunkservers append in one round (WRITE, experimental) instead of two (PREPARE,
    /// then COMMIT), to compare the two (the paused-secondary run keeps the default).
    #[arg(long)]
    one_round: bool,
    /// Which benchmarks: `append` (the replicated append path), `client`, or `all`.
    #[arg(long, default_value = "all", value_parser = ["append", "client", "all"])]
    suite: String,
    /// MiB of the client suite's put and get.
    #[arg(long, default_value_t = 1024)]
    put_mib: u64,
    /// MiB per writer of the client suite's parallel writers.
    #[arg(long, default_value_t = 256)]
    parallel_mib: u64,
    /// Files of 4 KiB in the client suite.
    #[arg(long, default_value_t = 2000)]
    files: usize,
    /// Files written at once in the client suite.
    #[arg(long, default_value_t = 16)]
    file_clients: usize,
    /// Records per appender (16, then 64 appenders, 4 KiB records) in the client suite.
    #[arg(long, default_value_t = 1000)]
    records: usize,
    /// The client suite's cluster with mutual TLS on its gRPC planes (the data plane stays
    /// plain unless `--data-tls`).
    #[arg(long)]
    tls: bool,
    /// With `--tls`: TLS on the data plane too (the chunkservers take only TLS there).
    #[arg(long = "data-tls", requires = "tls")]
    data_tls: bool,
    #[command(flatten)]
    #[serde(skip)]
    common: gfs_bins::CommonArgs,
}

const CHUNK: u64 = 1 << 30;

struct Cluster {
    servers: Vec<ChunkServer>,
}

impl Cluster {
    async fn start(
        dir: &std::path::Path,
        delay: Option<Duration>,
        one_round: bool,
    ) -> anyhow::Result<Cluster> {
        let mut servers = Vec::new();
        for i in 0..3 {
            let mut cfg = ChunkserverConfig {
                id: format!("bench{i}"),
                data_dir: dir.join(format!("cs{i}")),
                data_port: 0,
                repl_port: 0,
                http_port: 0,
                chunk_size: gfs_util::Size(CHUNK),
                ..ChunkserverConfig::default()
            };
            if let Some(d) = delay {
                cfg.storage.store.commit_delay = d;
            }
            cfg.replication.one_round = one_round;
            servers.push(ChunkServer::start(cfg).await?);
        }
        Ok(Cluster { servers })
    }

    async fn chunk(&self, handle: u64) -> anyhow::Result<()> {
        for s in &self.servers {
            gfs_bins::control_client(&s.repl_addr.to_string())
                .await?
                .create_chunk(CreateChunkRequest { handle, version: 1 })
                .await?;
        }
        let expires_unix_ms = gfs_util::time::now_ms() + 600_000;
        gfs_bins::control_client(&self.servers[0].repl_addr.to_string())
            .await?
            .grant_lease(GrantLeaseRequest {
                handle,
                version: 1,
                secondaries: self.servers[1..]
                    .iter()
                    .map(|s| s.repl_addr.to_string())
                    .collect(),
                expires_unix_ms,
            })
            .await?;
        Ok(())
    }

    async fn stop(self) -> anyhow::Result<()> {
        for s in self.servers {
            s.stop().await?;
        }
        Ok(())
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn client_config() -> ClientConfig {
    ClientConfig {
        max_frame: (CHUNK / 4) as usize + gfs_dataplane::REQUEST_OVERHEAD,
        ..ClientConfig::default()
    }
}

/// MiB/s of one client appending 1 MiB records with `window` in flight.
async fn stream(cluster: &Cluster, handle: u64, mib: u64, window: usize) -> anyhow::Result<f64> {
    cluster.chunk(handle).await?;
    let c = DataClient::connect(&cluster.servers[0].data_addr.to_string(), client_config()).await?;
    let data = Bytes::from(vec![0x42u8; 1 << 20]);
    let t = Instant::now();
    let results: Vec<_> = futures::stream::iter(0..mib)
        .map(|i| {
            let (c, data) = (c.clone(), data.clone());
            async move { c.append(&ChunkRef::untokened(handle, 1), i, data).await }
        })
        .buffer_unordered(window.max(1))
        .collect()
        .await;
    for r in results {
        r.context("streaming append")?;
    }
    Ok(mib as f64 / t.elapsed().as_secs_f64())
}

/// Appends/s of `clients` clients appending 4 KiB records for `secs`, and every latency.
async fn small(
    cluster: &Cluster,
    handle: u64,
    clients: usize,
    secs: f64,
) -> anyhow::Result<(f64, Vec<Duration>)> {
    cluster.chunk(handle).await?;
    let window = Duration::from_secs_f64(secs);
    let addr = cluster.servers[0].data_addr.to_string();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..clients as u64 {
        let c = DataClient::connect(&addr, client_config()).await?;
        tasks.push(tokio::spawn(async move {
            let data = Bytes::from(vec![w as u8; 4096]);
            let mut lat = Vec::new();
            let mut n = 0u64;
            while start.elapsed() < window {
                let t = Instant::now();
                c.append(&ChunkRef::untokened(handle, 1), (w << 40) | n, data.clone())
                    .await?;
                lat.push(t.elapsed());
                n += 1;
            }
            Ok::<_, gfs_dataplane::DataError>(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await?.context("small append")?);
    }
    let rate = all.len() as f64 / start.elapsed().as_secs_f64();
    if std::env::var_os("GFS_BENCH_VERBOSE").is_some() {
        for s in &cluster.servers {
            let st = s.store().stats();
            println!(
                "  {}: {} commits in {} batches ({:.1}/batch), {} fsyncs",
                s.repl_addr,
                st.commits,
                st.batches,
                st.commits as f64 / st.batches.max(1) as f64,
                st.fsyncs
            );
        }
    }
    Ok((rate, all))
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p) as usize]
}

async fn run(args: Args) -> anyhow::Result<()> {
    if args.common.printed(&args)? {
        return Ok(());
    }
    let base = args
        .dir
        .clone()
        .unwrap_or_else(|| "target/gfs-bench".into());
    std::fs::create_dir_all(&base)?;
    if args.suite != "client" {
        append_suite(&args, &base).await?;
    }
    if args.suite != "append" {
        client_suite(&args, &base).await?;
    }
    Ok(())
}

async fn client_suite(args: &Args, base: &std::path::Path) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir_in(base)?;
    println!(
        "gfs-bench client suite: {} runs in {}{}",
        args.runs,
        tmp.path().display(),
        match (args.tls, args.data_tls) {
            (true, true) => ", mutual TLS on the gRPC planes and the data plane",
            (true, false) => ", mutual TLS on the gRPC planes",
            _ => "",
        }
    );
    let mut m: std::collections::BTreeMap<&str, Vec<f64>> = Default::default();
    let mut cold = true;
    let gfs = bench_client::sibling("gfs");
    if gfs.is_none() {
        println!(
            "(no `gfs` beside this program: the CLI's rows are left out; `cargo build --release -p gfs-cli` builds it)"
        );
    }
    let gfs_cluster = bench_client::sibling("gfs-cluster");
    if gfs_cluster.is_none() {
        println!(
            "(no `gfs-cluster` beside this program: the paused-chunkserver rows are left out; `cargo build --release --bins` builds it)"
        );
    }
    for run in 0..args.runs {
        let dir = tmp.path().join(format!("client{run}"));
        std::fs::create_dir_all(&dir)?;
        let raw_w = probe::fsync_bandwidth(&dir, 256)? * 1.048_576;
        let cluster = bench_client::LocalCluster::start(
            &dir,
            3,
            64 << 20,
            args.tls,
            args.data_tls,
            args.one_round,
        )
        .await?;
        let c = cluster.client.clone();
        let put = bench_client::put(&c, "/big", args.put_mib).await?;
        cold &= bench_client::drop_caches();
        let get = bench_client::get(&c, "/big").await?;
        let dirs = cluster.server_dirs();
        cold &= bench_client::drop_caches();
        let raw_r = bench_client::raw_read(&dirs[0])?;
        if let Some(gfs) = &gfs {
            // What users run: the CLI's get to a local file (synced) and cat into a pipe,
            // each from a cold cache like the library's get, then put of that local file.
            let bytes = (args.put_mib << 20) as f64;
            let local = dir.join("big.local");
            let local = local.to_str().context("a UTF-8 path")?;
            cold &= bench_client::drop_caches();
            let (t, _) = cluster.cli(gfs, &["get", "/big", local]).await?;
            m.entry("cli_get").or_default().push(bytes / 1e6 / t);
            cold &= bench_client::drop_caches();
            let (t, n) = cluster.cli(gfs, &["cat", "/big"]).await?;
            anyhow::ensure!(n == args.put_mib << 20, "gfs cat gave {n} bytes");
            m.entry("cli_cat").or_default().push(bytes / 1e6 / t);
            let (t, _) = cluster.cli(gfs, &["put", local, "/big-cli"]).await?;
            m.entry("cli_put").or_default().push(bytes / 1e6 / t);
            std::fs::remove_file(local)?;
            println!(
                "run {}: gfs get {:.0} MB/s, gfs cat {:.0} MB/s, gfs put {:.0} MB/s",
                run + 1,
                m["cli_get"][run],
                m["cli_cat"][run],
                m["cli_put"][run]
            );
        }
        let par = bench_client::parallel_put(&c, 4, args.parallel_mib).await?;
        let files = bench_client::small_files(&c, args.files, args.file_clients).await?;
        let before = bench_client::verbose().then(|| cluster.stage_sums());
        let (app, mut lat) = bench_client::appends(&c, 16, args.records).await?;
        lat.sort();
        if let Some(before) = before {
            // Where an append's time went on its primary (means over this run's appends).
            let after = cluster.stage_sums();
            let mean = |k: &str| {
                let (s0, n0) = before.get(k).copied().unwrap_or_default();
                let (s1, n1) = after.get(k).copied().unwrap_or_default();
                (s1 - s0) / (n1 - n0).max(1.0) * 1e3
            };
            println!(
                "16 appenders, mean per append on its primary: assign {:.2} ms, prepare {:.2} ms, commit here {:.2} ms (fsync rounds {:.2} ms), commit on a quorum of secondaries {:.2} ms, total {:.2} ms; at the client p50 {:.2} ms",
                mean("assign"),
                mean("prepare"),
                mean("commit_here"),
                mean("fsync_round"),
                mean("commit_remote"),
                mean("total"),
                pct(&lat, 0.5).as_secs_f64() * 1e3,
            );
        }
        c.create("/appends64").await?;
        let (app64, mut lat64) =
            bench_client::appends_to(&c, "/appends64", 64, args.records).await?;
        lat64.sort();
        cluster.stop().await?;
        if let Some(gfs_cluster) = &gfs_cluster {
            // Tail tolerance: the same 16 appenders against a cluster of processes, then again
            // to another file (its chunk fits the records) with a chunkserver that is primary
            // of nothing, so a secondary of that chunk, paused (SIGSTOP) the whole run.
            let pc = bench_client::ProcessCluster::start(&dir.join("procs"), gfs_cluster).await?;
            let c = pc.client.clone();
            c.create("/steady").await?;
            let (steady, mut lat0) =
                bench_client::appends_to(&c, "/steady", 16, args.records).await?;
            c.create("/tail").await?;
            c.append("/tail", &b"x"[..]).await?;
            let (id, pid) = pc.idle_chunkserver()?;
            bench_client::signal(pid, "STOP")?;
            let paused = bench_client::appends_to(&c, "/tail", 16, args.records).await;
            bench_client::signal(pid, "CONT")?;
            let (tail, mut lat1) = paused?;
            pc.stop().await?;
            lat0.sort();
            lat1.sort();
            let ms = |l: &[Duration], p| pct(l, p).as_secs_f64() * 1e3;
            println!(
                "run {}: processes: 16 appenders {steady:.0}/s (p99 {:.2} ms); with {id} paused {tail:.0}/s (p99 {:.2} ms)",
                run + 1,
                ms(&lat0, 0.99),
                ms(&lat1, 0.99),
            );
            for (k, v) in [
                ("steady", steady),
                ("steady_p99", ms(&lat0, 0.99)),
                ("tail", tail),
                ("tail_p99", ms(&lat1, 0.99)),
            ] {
                m.entry(k).or_default().push(v);
            }
        }
        std::fs::remove_dir_all(&dir)?;
        println!(
            "run {}: raw write {raw_w:.0} MB/s, raw read {raw_r:.0} MB/s | put {put:.0} MB/s, get {get:.0} MB/s, 4 writers {par:.0} MB/s, {files:.0} files/s, {app:.0} appends/s (p50 {:.2} ms, p99 {:.2} ms), 64 appenders {app64:.0}/s (p99 {:.2} ms)",
            run + 1,
            pct(&lat, 0.5).as_secs_f64() * 1e3,
            pct(&lat, 0.99).as_secs_f64() * 1e3,
            pct(&lat64, 0.99).as_secs_f64() * 1e3,
        );
        for (k, v) in [
            ("raw_w", raw_w),
            ("raw_r", raw_r),
            ("put", put),
            ("get", get),
            ("par", par),
            ("files", files),
            ("app", app),
            ("p50", pct(&lat, 0.5).as_secs_f64() * 1e3),
            ("p99", pct(&lat, 0.99).as_secs_f64() * 1e3),
            ("app64", app64),
            ("p99_64", pct(&lat64, 0.99).as_secs_f64() * 1e3),
        ] {
            m.entry(k).or_default().push(v);
        }
    }
    let med = |k: &str| median(m.get(k).cloned().unwrap_or_default());
    let (raw_w, raw_r) = (med("raw_w"), med("raw_r"));
    println!();
    println!("median of {} runs (MB = 10^6 bytes)", args.runs);
    println!(
        "raw 1 MiB write+fdatasync            {raw_w:>9.0} MB/s (buffered or direct, the faster; 3 replicas share it)"
    );
    println!(
        "raw sequential read of chunk files   {raw_r:>9.0} MB/s ({} cache)",
        if cold { "cold" } else { "warm" }
    );
    println!(
        "put {} MiB                          {:>9.0} MB/s = {:.2} x (raw write / 3)  (target >= 0.8)",
        args.put_mib,
        med("put"),
        med("put") / (raw_w / 3.0)
    );
    println!(
        "get {} MiB                          {:>9.0} MB/s = {:.2} x raw read  (target >= 0.85)",
        args.put_mib,
        med("get"),
        med("get") / raw_r
    );
    if gfs.is_some() {
        for (what, key, lib) in [
            ("gfs put (CLI), local file", "cli_put", "put"),
            ("gfs get (CLI), to a local file", "cli_get", "get"),
            ("gfs cat (CLI), into a pipe", "cli_cat", "get"),
        ] {
            println!(
                "{what:<36} {:>9.0} MB/s = {:.2} x the library's {lib}  (target >= 0.9)",
                med(key),
                med(key) / med(lib)
            );
        }
    }
    println!(
        "4 writers x {} MiB                  {:>9.0} MB/s = {:.2} x (raw write / 3)  (target >= 0.85)",
        args.parallel_mib,
        med("par"),
        med("par") / (raw_w / 3.0)
    );
    println!(
        "{} files x 4 KiB, {} at a time      {:>9.0} files/s  (target >= 3000)",
        args.files,
        args.file_clients,
        med("files")
    );
    println!(
        "16 appenders x {} x 4 KiB, one file {:>8.0} appends/s  (target >= 15000), p50 {:.2} ms, p99 {:.2} ms  (target <= 5)",
        args.records,
        med("app"),
        med("p50"),
        med("p99")
    );
    println!(
        "64 appenders x {} x 4 KiB, one file {:>8.0} appends/s  (target >= 25000), p99 {:.2} ms  (target <= 5)",
        args.records,
        med("app64"),
        med("p99_64")
    );
    if gfs_cluster.is_some() {
        println!(
            "  the same, roles as processes     {:>8.0} appends/s, p99 {:.2} ms",
            med("steady"),
            med("steady_p99")
        );
        println!(
            "  a secondary paused (SIGSTOP)     {:>8.0} appends/s = {:.2} x  (target >= 0.7), p99 {:.2} ms = {:.2} x  (target <= 2)",
            med("tail"),
            med("tail") / med("steady"),
            med("tail_p99"),
            med("tail_p99") / med("steady_p99")
        );
    }
    let mut summary = format!(
        "summary: put {:.2} x raw/3 (>= 0.8) | 4 writers {:.2} x raw/3 (>= 0.85) | get {:.2} x raw read (>= 0.85)",
        med("put") / (raw_w / 3.0),
        med("par") / (raw_w / 3.0),
        med("get") / raw_r
    );
    if gfs.is_some() {
        summary += &format!(
            " | gfs put/get/cat {:.2}/{:.2}/{:.2} x library (>= 0.9)",
            med("cli_put") / med("put"),
            med("cli_get") / med("get"),
            med("cli_cat") / med("get")
        );
    }
    summary += &format!(
        " | {:.0} files/s (>= 3000) | 16 appenders {:.0}/s (>= 15000), p99 {:.2} ms (<= 5) | 64 appenders {:.0}/s (>= 25000), p99 {:.2} ms (<= 5)",
        med("files"),
        med("app"),
        med("p99"),
        med("app64"),
        med("p99_64")
    );
    if gfs_cluster.is_some() {
        summary += &format!(
            " | a secondary paused: {:.2} x throughput (>= 0.7), {:.2} x p99 (<= 2)",
            med("tail") / med("steady"),
            med("tail_p99") / med("steady_p99")
        );
    }
    println!("{summary}");
    Ok(())
}

async fn append_suite(args: &Args, base: &std::path::Path) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir_in(base)?;
    println!("gfs-bench: {} runs in {}", args.runs, tmp.path().display());
    let (mut raw_bw, mut st, mut raw_rate, mut sm) = (vec![], vec![], vec![], vec![]);
    let mut lat_p50 = vec![];
    let mut lat_p99 = vec![];
    for run in 0..args.runs {
        let dir = tmp.path().join(format!("run{run}"));
        std::fs::create_dir_all(&dir)?;
        let before = probe::fsync_bandwidth(&dir, 128)?;
        let rate_before = probe::fsync_rate(&dir, Duration::from_secs(2))?;
        let cluster = Cluster::start(
            &dir,
            args.commit_delay_us.map(Duration::from_micros),
            args.one_round,
        )
        .await?;
        let s = stream(&cluster, 1, args.stream_mib, args.window).await?;
        let (r, mut lat) = small(&cluster, 2, args.clients, args.seconds).await?;
        cluster.stop().await?;
        std::fs::remove_dir_all(&dir)?;
        probe::settle(tmp.path())?;
        std::fs::create_dir_all(&dir)?;
        // The raw limits are measured before and after; the better one is the disk's limit.
        raw_bw.push(before.max(probe::fsync_bandwidth(&dir, 128)?));
        raw_rate.push(rate_before.max(probe::fsync_rate(&dir, Duration::from_secs(2))?));
        lat.sort();
        lat_p50.push(pct(&lat, 0.5).as_secs_f64() * 1e3);
        lat_p99.push(pct(&lat, 0.99).as_secs_f64() * 1e3);
        println!(
            "run {}: raw {:.0} MiB/s, stream {:.0} MiB/s | raw 4K {:.0}/s, {} clients {:.0} appends/s (p50 {:.2} ms, p99 {:.2} ms)",
            run + 1,
            raw_bw[run],
            s,
            raw_rate[run],
            args.clients,
            r,
            lat_p50[run],
            lat_p99[run]
        );
        st.push(s);
        sm.push(r);
    }
    let (rb, s, rr, r) = (median(raw_bw), median(st), median(raw_rate), median(sm));
    println!();
    println!("median of {} runs", args.runs);
    println!("raw 1 MiB write+fdatasync            {rb:>9.1} MiB/s");
    println!(
        "1 client, 1 MiB appends ({} in flight) {s:>7.1} MiB/s = {:.2} x (raw / 3)  (target >= 0.60)",
        args.window,
        s / (rb / 3.0)
    );
    println!("raw 4 KiB write+fdatasync            {rr:>9.0} ops/s");
    println!(
        "{} clients, 4 KiB appends, one chunk {r:>8.0} appends/s (target >= 20000), p50 {:.2} ms, p99 {:.2} ms",
        args.clients,
        median(lat_p50),
        median(lat_p99)
    );
    println!();
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    gfs_bins::main_of("gfs-bench", run(Args::parse())).await
}
