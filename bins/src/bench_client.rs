//! The client-level benchmarks of `gfs-bench`: a master and three chunkservers in this process
//! (real sockets, real files, 64 MiB chunks), driven through `gfs-client`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use gfs_chunkserver::{ChunkServer, ChunkserverConfig};
use gfs_client::{Client, ClientConfig};
use gfs_master::{Master, MasterConfig};
use tokio::io::AsyncReadExt;

/// A master and chunkservers in this process.
pub struct LocalCluster {
    master: Master,
    servers: Vec<ChunkServer>,
    /// A client of the cluster.
    pub client: Client,
    /// What points the `gfs` CLI at this cluster.
    cli_args: Vec<String>,
}

/// The program `name` beside this one, if it was built (`gfs`: `cargo build --release -p
/// gfs-cli`).
pub fn sibling(name: &str) -> Option<PathBuf> {
    let p = std::env::current_exe().ok()?.with_file_name(name);
    p.exists().then_some(p)
}

impl LocalCluster {
    /// Starts a master and `n` chunkservers under `dir` with `chunk_size` chunks, with mutual
    /// TLS on the gRPC planes if `tls` (certificates issued under `dir/certs`) and on the data
    /// plane too if `data_tls`, appending in one round if `one_round` (else two), and waits
    /// until the chunkservers registered.
    pub async fn start(
        dir: &std::path::Path,
        n: usize,
        chunk_size: u64,
        tls: bool,
        data_tls: bool,
        one_round: bool,
    ) -> anyhow::Result<Self> {
        use gfs_host::tls::{Authority, Role, TlsFiles, TlsSettings};
        let certs = dir.join("certs");
        let settings = |name: &str| {
            if tls {
                TlsSettings {
                    data_plane: data_tls,
                    ..TlsSettings::in_dir(&certs, name)
                }
            } else {
                TlsSettings::default()
            }
        };
        if tls {
            let ca = Authority::generate("gfs-bench CA")?;
            let hosts = vec!["127.0.0.1".to_string(), "localhost".to_string()];
            ca.issue_into(&certs, "master", Role::Master, "master", &hosts)?;
            ca.issue_into(&certs, "client", Role::Client, "bench", &hosts)?;
            for i in 0..n {
                let id = format!("cs{i}");
                ca.issue_into(&certs, &id, Role::Chunkserver, &id, &hosts)?;
            }
        }
        let master = Master::start(MasterConfig {
            tls: settings("master"),
            listen: "127.0.0.1:0".into(),
            http_listen: "127.0.0.1:0".into(),
            data_dir: dir.join("master"),
            chunk_size: gfs_util::Size(chunk_size),
            heartbeat_interval: Duration::from_millis(500),
            dead_after: Duration::from_secs(5),
            ..MasterConfig::default()
        })
        .await?;
        let mut servers = Vec::new();
        for i in 0..n {
            let mut cfg = ChunkserverConfig {
                id: format!("cs{i}"),
                data_dir: dir.join(format!("cs{i}")),
                data_port: 0,
                repl_port: 0,
                http_port: 0,
                chunk_size: gfs_util::Size(chunk_size),
                master: master.addr.to_string(),
                tls: settings(&format!("cs{i}")),
                ..ChunkserverConfig::default()
            };
            cfg.replication.one_round = one_round;
            servers.push(ChunkServer::start(cfg).await?);
        }
        let client = Client::connect_with(
            &master.addr.to_string(),
            ClientConfig {
                in_flight: 8,
                net: if tls {
                    let files = TlsFiles::in_dir(&certs, "client");
                    gfs_host::Net::os().with_tls(Arc::new(
                        gfs_host::tls::Tls::load(&files)?.with_data_plane(data_tls),
                    ))
                } else {
                    gfs_host::Net::os()
                },
                ..ClientConfig::default()
            },
        )
        .await?;
        // The first append waits until enough chunkservers registered.
        client.create("/.warm").await?;
        client.append("/.warm", &b"x"[..]).await?;
        let cli_args = {
            let mut a = vec!["--master".to_string(), master.addr.to_string()];
            if tls {
                a.push("--certs".into());
                a.push(certs.display().to_string());
            }
            if data_tls {
                a.push("--data-tls".into());
            }
            a
        };
        Ok(LocalCluster {
            master,
            servers,
            client,
            cli_args,
        })
    }

    /// Runs the `gfs` CLI at `gfs` against this cluster with `args`; returns the seconds it
    /// took and what it wrote to stdout (drained, not kept: its length).
    pub async fn cli(&self, gfs: &Path, args: &[&str]) -> anyhow::Result<(f64, u64)> {
        let t = Instant::now();
        let mut child = tokio::process::Command::new(gfs)
            .args(&self.cli_args)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("running {}", gfs.display()))?;
        let mut out = child.stdout.take().context("the CLI's stdout")?;
        let n = drain(&mut out).await?;
        let done = child.wait_with_output().await?;
        anyhow::ensure!(
            done.status.success(),
            "gfs {}: {}: {}",
            args.join(" "),
            done.status,
            String::from_utf8_lossy(&done.stderr)
        );
        Ok((t.elapsed().as_secs_f64(), n))
    }

    /// Summed seconds and counts, over the chunkservers, of each append stage their
    /// `/metrics` export (`gfs_chunkserver_append_stage_duration_seconds`, by stage) and of
    /// their fsync rounds (as `fsync_round`): two readings around a workload give its means.
    pub fn stage_sums(&self) -> std::collections::BTreeMap<String, (f64, f64)> {
        let mut out = std::collections::BTreeMap::<String, (f64, f64)>::new();
        for s in &self.servers {
            for (key, is_sum, v) in s.metrics().render().lines().filter_map(stage_sample) {
                let e = out.entry(key.to_string()).or_default();
                if is_sum {
                    e.0 += v;
                } else {
                    e.1 += v;
                }
            }
        }
        out
    }

    /// The data directories of the chunkservers.
    pub fn server_dirs(&self) -> Vec<std::path::PathBuf> {
        self.servers
            .iter()
            .map(|s| s.store().dir().to_path_buf())
            .collect()
    }

    /// Stops everything.
    pub async fn stop(self) -> anyhow::Result<()> {
        for s in self.servers {
            s.stop().await?;
        }
        self.master.shutdown_token().cancel();
        self.master.wait().await?;
        Ok(())
    }
}

/// Writes `mib` MiB to a new file `path` with a streaming writer; returns MB/s (10^6 bytes).
pub async fn put(c: &Client, path: &str, mib: u64) -> anyhow::Result<f64> {
    let block = Bytes::from(
        (0..(4 << 20))
            .map(|i| (i * 7 % 251) as u8)
            .collect::<Vec<u8>>(),
    );
    let t = Instant::now();
    let mut w = c.create_writer(path).await?;
    for _ in 0..mib / 4 {
        w.write(&block).await?;
    }
    let n = w.finish().await?;
    anyhow::ensure!(n == mib << 20, "put wrote {n} bytes of {}", mib << 20);
    Ok(n as f64 / 1e6 / t.elapsed().as_secs_f64())
}

/// Reads `r` to its end, 1 MiB at a time; returns the bytes read.
async fn drain(r: &mut (impl tokio::io::AsyncRead + Unpin)) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = r.read(&mut buf).await?;
        if k == 0 {
            return Ok(n);
        }
        n += k as u64;
    }
}

/// Reads `path` whole with a streaming reader; returns MB/s.
pub async fn get(c: &Client, path: &str) -> anyhow::Result<f64> {
    let t = Instant::now();
    let mut r = c.reader(path).await?;
    let n = drain(&mut r).await?;
    anyhow::ensure!(n == r.size(), "get read {n} of {} bytes", r.size());
    Ok(n as f64 / 1e6 / t.elapsed().as_secs_f64())
}

/// Asks the kernel to drop its page cache (root only); whether it did.
pub fn drop_caches() -> bool {
    let _ = std::process::Command::new("sync").status();
    std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

/// Whether `GFS_BENCH_VERBOSE=1`: the client suite then prints where the time of a small
/// file and of an append went.
pub fn verbose() -> bool {
    std::env::var("GFS_BENCH_VERBOSE").is_ok_and(|v| v == "1")
}

/// A `_sum` or `_count` line of an append stage's histogram (by its stage) or of the fsync
/// rounds' (`fsync_round`) in a chunkserver's metrics: the key, whether a sum, the value.
fn stage_sample(line: &str) -> Option<(&str, bool, f64)> {
    let (name, value) = line.rsplit_once(' ')?;
    let v: f64 = value.parse().ok()?;
    let (key, what) = match name.strip_prefix("gfs_chunkserver_append_stage_duration_seconds_") {
        Some(rest) => {
            let (what, label) = rest.split_once("{stage=\"")?;
            (label.strip_suffix("\"}")?, what)
        }
        None => (
            "fsync_round",
            name.strip_prefix("gfs_chunkserver_fsync_duration_seconds_")?,
        ),
    };
    match what {
        "sum" => Some((key, true, v)),
        "count" => Some((key, false, v)),
        _ => None,
    }
}

/// MB/s of reading the files under `dir` sequentially (the disk's read limit for this data).
pub fn raw_read(dir: &std::path::Path) -> anyhow::Result<f64> {
    use std::io::Read;
    let t = Instant::now();
    let mut n = 0u64;
    let mut buf = vec![0u8; 4 << 20];
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if !p.is_file() {
            continue;
        }
        let mut f = std::fs::File::open(&p)?;
        loop {
            let k = f.read(&mut buf)?;
            if k == 0 {
                break;
            }
            n += k as u64;
        }
    }
    Ok(n as f64 / 1e6 / t.elapsed().as_secs_f64())
}

/// Aggregate MB/s of `writers` streaming writers of `mib` MiB each, to their own files.
pub async fn parallel_put(c: &Client, writers: usize, mib: u64) -> anyhow::Result<f64> {
    let t = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move { put(&c, &format!("/par{i}"), mib).await })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok((writers as u64 * (mib << 20)) as f64 / 1e6 / t.elapsed().as_secs_f64())
}

/// Files/s of creating and writing `files` files of 4 KiB, `concurrency` at a time; with
/// `GFS_BENCH_VERBOSE=1`, the median time of each step of a file.
pub async fn small_files(c: &Client, files: usize, concurrency: usize) -> anyhow::Result<f64> {
    use futures::StreamExt;
    c.mkdir("/small", false).await?;
    let data = Arc::new(vec![0x5au8; 4096]);
    let t = Instant::now();
    let results: Vec<anyhow::Result<[Duration; 3]>> = futures::stream::iter(0..files)
        .map(|i| {
            let (c, data) = (c.clone(), Arc::clone(&data));
            async move {
                let path = format!("/small/f{i}");
                let t = Instant::now();
                let mut w = c.create_writer(&path).await?;
                let created = t.elapsed();
                w.write(&data).await?;
                let sent = t.elapsed();
                let n = w.finish().await?;
                anyhow::ensure!(n == 4096, "{path}: {n} bytes");
                Ok([created, sent - created, t.elapsed() - sent])
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let rate = files as f64 / t.elapsed().as_secs_f64();
    let mut steps = [Vec::new(), Vec::new(), Vec::new()];
    for r in results {
        for (i, d) in r.context("small file")?.into_iter().enumerate() {
            steps[i].push(d);
        }
    }
    if verbose() {
        let med = |v: &mut Vec<Duration>| {
            v.sort();
            v[v.len() / 2].as_secs_f64() * 1e3
        };
        println!(
            "small files, median per file: create (with its first chunk and lease) {:.2} ms, write {:.2} ms, finish (the append sent and acknowledged, flush) {:.2} ms",
            med(&mut steps[0]),
            med(&mut steps[1]),
            med(&mut steps[2])
        );
    }
    Ok(rate)
}

/// Record appends/s of `clients` appenders of `records` 4 KiB records each to one file, and
/// every latency.
pub async fn appends(
    c: &Client,
    clients: usize,
    records: usize,
) -> anyhow::Result<(f64, Vec<Duration>)> {
    c.create("/appends").await?;
    appends_to(c, "/appends", clients, records).await
}

/// As [`appends`], to the existing file `path`.
pub async fn appends_to(
    c: &Client,
    path: &str,
    clients: usize,
    records: usize,
) -> anyhow::Result<(f64, Vec<Duration>)> {
    let t = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|w| {
            let (c, path) = (c.clone(), path.to_string());
            tokio::spawn(async move {
                let data = Bytes::from(vec![w as u8; 4096]);
                let mut lat = Vec::with_capacity(records);
                for _ in 0..records {
                    let t = Instant::now();
                    c.append(&path, data.clone()).await?;
                    lat.push(t.elapsed());
                }
                Ok::<_, gfs_client::ClientError>(lat)
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    Ok((all.len() as f64 / t.elapsed().as_secs_f64(), all))
}

/// A master and three chunkservers as processes of their own, started by `gfs-cluster` (beside
/// this program) with its built-in settings on free ports and no TLS: for what needs a process
/// per role, such as a chunkserver paused with SIGSTOP.
pub struct ProcessCluster {
    child: tokio::process::Child,
    /// Each chunkserver's pid and metrics address (`host:port`), by id.
    chunkservers: std::collections::BTreeMap<String, (u32, String)>,
    /// A client of the cluster.
    pub client: Client,
}

impl ProcessCluster {
    /// Starts the cluster under `dir` (its roles' output in `dir/cluster.log`) and waits until
    /// an append succeeds.
    pub async fn start(dir: &Path, gfs_cluster: &Path) -> anyhow::Result<ProcessCluster> {
        use tokio::io::AsyncBufReadExt;
        std::fs::create_dir_all(dir)?;
        let config = dir.join("cluster.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = {:?}\nmaster_port = 0\nchunkserver_port = 0\ninsecure = true\n",
                dir.join("data").to_str().context("a UTF-8 path")?
            ),
        )?;
        let log = std::fs::File::create(dir.join("cluster.log"))?;
        let mut child = tokio::process::Command::new(gfs_cluster)
            .arg("--config")
            .arg(&config)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("running {}", gfs_cluster.display()))?;
        let mut lines =
            tokio::io::BufReader::new(child.stdout.take().context("its stdout")?).lines();
        let (mut master, mut chunkservers) = (None, std::collections::BTreeMap::new());
        let listed = async {
            // "  cs1      pid 1610     data ...  metrics http://127.0.0.1:33571/metrics"
            while let Some(line) = lines.next_line().await? {
                let words: Vec<&str> = line.split_whitespace().collect();
                match words.as_slice() {
                    ["master", "pid", _, "grpc", addr, ..] => master = Some(addr.to_string()),
                    [id, "pid", pid, .., "metrics", url] if id.starts_with("cs") => {
                        let at = url
                            .strip_prefix("http://")
                            .and_then(|u| u.strip_suffix("/metrics"))
                            .context("a metrics URL")?;
                        chunkservers.insert(id.to_string(), (pid.parse()?, at.to_string()));
                    }
                    ["tls:", ..] => return anyhow::Ok(()),
                    _ => {}
                }
            }
            anyhow::bail!("gfs-cluster ended before it listed its roles")
        };
        tokio::time::timeout(Duration::from_secs(60), listed)
            .await
            .context("gfs-cluster not ready within 60 s")??;
        // Keep its stdout drained.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let master = master.context("no master listed")?;
        let client = Client::connect_with(
            &master,
            ClientConfig {
                in_flight: 8,
                ..ClientConfig::default()
            },
        )
        .await?;
        client.create("/.warm").await?;
        client.append("/.warm", &b"x"[..]).await?;
        Ok(ProcessCluster {
            child,
            chunkservers,
            client,
        })
    }

    /// A chunkserver that is primary of no chunk (its `gfs_chunkserver_leases` is 0), with its pid.
    pub fn idle_chunkserver(&self) -> anyhow::Result<(String, u32)> {
        for (id, (pid, metrics)) in &self.chunkservers {
            let (code, body) = gfs_testkit::try_http_get(metrics, "/metrics")?;
            anyhow::ensure!(code == 200, "{id}'s /metrics answered {code}");
            let leases = body
                .lines()
                .find_map(|l| l.strip_prefix("gfs_chunkserver_leases "))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .context("no gfs_chunkserver_leases in /metrics")?;
            if leases == 0.0 {
                return Ok((id.clone(), *pid));
            }
        }
        anyhow::bail!("every chunkserver is a primary")
    }

    /// Stops every role (SIGTERM to gfs-cluster, which stops them) and waits for it.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.child.id() {
            signal(pid, "TERM")?;
        }
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .context("gfs-cluster did not stop within 30 s")??;
        Ok(())
    }
}

/// Sends signal `sig` (`STOP`, `CONT`, `TERM`) to process `pid`.
pub fn signal(pid: u32, sig: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill")
        .args(["-s", sig, &pid.to_string()])
        .status()?;
    anyhow::ensure!(status.success(), "kill -s {sig} {pid}: {status}");
    Ok(())
}
