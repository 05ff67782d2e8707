//! Real chunkserver processes on 127.0.0.1 with free ports, and helpers to drive them: a
//! [`Cluster`] of chunkservers that the test grants leases on itself (no master), appends
//! through the data plane, and the whole-promise check of a healed cluster.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gfs_dataplane::{ClientConfig, DataClient, DataError};
use gfs_proto::v1::chunk_control_client::ChunkControlClient;
use gfs_proto::v1::{
    CreateChunkRequest, GrantLeaseRequest, ReportChunksReply, ReportChunksRequest,
    SetVersionRequest,
};
use tonic::transport::Channel;

/// Chunk size the tests run with.
pub const CHUNK: u64 = 1 << 20;

/// One `gfs-chunkserver` process.
pub struct Server {
    /// Its id (`cs<i>`).
    pub id: String,
    /// Its data directory.
    pub dir: PathBuf,
    /// Its data-plane address.
    pub data: String,
    /// Its replication- and control-plane address.
    pub repl: String,
    /// Address of its /metrics and /health.
    pub http: String,
    child: Option<Child>,
}

impl Server {
    /// `n` chunkservers `cs0`.. in `dir/cs<i>`, registering with the master at `master`.
    pub fn with_master(dir: &Path, n: usize, master: &str) -> Vec<Server> {
        Self::with_master_args(dir, n, master, &[])
    }

    /// [`Server::with_master`] with `extra` command-line arguments for every server.
    pub fn with_master_args(dir: &Path, n: usize, master: &str, extra: &[&str]) -> Vec<Server> {
        Self::with_master_env_args(dir, n, master, |_| Vec::new(), extra)
    }

    /// [`Server::with_master`] with `env(i)` as server `i`'s extra environment (failpoints).
    pub fn with_master_env(
        dir: &Path,
        n: usize,
        master: &str,
        env: impl Fn(usize) -> Vec<(&'static str, &'static str)>,
    ) -> Vec<Server> {
        Self::with_master_env_args(dir, n, master, env, &[])
    }

    /// [`Server::with_master_env`] with `extra` command-line arguments for every server.
    pub fn with_master_env_args(
        dir: &Path,
        n: usize,
        master: &str,
        env: impl Fn(usize) -> Vec<(&'static str, &'static str)>,
        extra: &[&str],
    ) -> Vec<Server> {
        (0..n)
            .map(|i| {
                Server::start_with(
                    &dir.join(format!("cs{i}")),
                    &format!("cs{i}"),
                    None,
                    &env(i),
                    &[&["--master", master], extra].concat(),
                )
            })
            .collect()
    }

    /// This server started again on its directory (new ports), registering with `master`.
    pub fn restarted(&mut self, master: &str) {
        self.kill();
        *self = Server::start_with(
            &self.dir.clone(),
            &self.id.clone(),
            None,
            &[],
            &["--master", master],
        );
    }

    /// Starts a chunkserver on `dir`; `ports` reuses earlier ports (after a restart).
    pub fn start(dir: &Path, id: &str, ports: Option<(u16, u16)>, env: &[(&str, &str)]) -> Server {
        Self::start_with(dir, id, ports, env, &[])
    }

    /// Like [`Server::start`], with extra command-line arguments.
    pub fn start_with(
        dir: &Path,
        id: &str,
        ports: Option<(u16, u16)>,
        env: &[(&str, &str)],
        extra: &[&str],
    ) -> Server {
        let (p, r) = ports.unwrap_or((0, 0));
        let mut cmd = Command::new(crate::bin("gfs-chunkserver"));
        cmd.args([
            "-p",
            &p.to_string(),
            "-r",
            &r.to_string(),
            "-h",
            "127.0.0.1",
            "-id",
            id,
        ])
        .arg("-d")
        .arg(dir)
        .args(["--chunk-size", "1MiB", "--http-port", "0"])
        // Without TLS unless a test brings certificates (see `MasterProc::start_with`).
        .args(if extra.contains(&"--certs") {
            &[][..]
        } else {
            &["--insecure"][..]
        })
        .args(extra)
        .env(
            "RUST_LOG",
            std::env::var("GFS_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn gfs-chunkserver");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains(" ready: ") {
                    let _ = tx.send(line);
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let line = loop {
            if let Ok(line) = rx.recv_timeout(Duration::from_millis(50)) {
                break line;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("chunkserver {id} exited before it was ready: {status}");
            }
            assert!(Instant::now() < deadline, "chunkserver {id} did not start");
        };
        // "gfs-chunkserver ID ready: data ADDR replication ADDR http ADDR"
        let words: Vec<&str> = line.split_whitespace().collect();
        Server {
            id: id.to_string(),
            dir: dir.to_path_buf(),
            data: words[4].to_string(),
            repl: words[6].to_string(),
            http: words[8].to_string(),
            child: Some(child),
        }
    }

    /// The ports in use, to restart on the same ones.
    pub fn ports(&self) -> (u16, u16) {
        let port = |a: &str| {
            a.rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .unwrap_or(0)
        };
        (port(&self.data), port(&self.repl))
    }

    /// Whether its process is running (not killed, stopped or exited).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends a signal ("STOP", "CONT", ...) to the running process.
    pub fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let ok = Command::new("kill")
                .args([&format!("-{sig}"), &c.id().to_string()])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "kill -{sig} {} failed", self.id);
        }
    }

    /// SIGTERM, then waits (with a deadline) for the exit status.
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the process to exit on its own (e.g. at a failpoint) within `within`.
    pub fn wait_exit(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while let Some(c) = self.child.as_mut() {
            if let Ok(Some(_)) = c.try_wait() {
                self.child = None;
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// Restarts on the same directory, on fresh ports (an old port may already belong to
    /// another test's server).
    pub fn restart(&mut self, env: &[(&str, &str)]) {
        self.restart_with(env, &[]);
    }

    /// [`Server::restart`] with `extra` command-line arguments.
    pub fn restart_with(&mut self, env: &[(&str, &str)], extra: &[&str]) {
        self.kill();
        *self = Server::start_with(&self.dir.clone(), &self.id.clone(), None, env, extra);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Several chunkservers in one temporary directory.
pub struct Cluster {
    /// The servers, `cs0` first.
    pub servers: Vec<Server>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts `n` servers; `env(i)` gives server `i` extra environment.
    pub fn start(n: usize, env: impl Fn(usize) -> Vec<(&'static str, &'static str)>) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let servers = (0..n)
            .map(|i| {
                let d = dir.path().join(format!("cs{i}"));
                Server::start(&d, &format!("cs{i}"), None, &env(i))
            })
            .collect();
        Cluster { servers, _dir: dir }
    }

    /// Starts `n` servers with `extra` command-line arguments each.
    pub fn start_with_args(n: usize, extra: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let servers = (0..n)
            .map(|i| {
                let d = dir.path().join(format!("cs{i}"));
                Server::start_with(&d, &format!("cs{i}"), None, &[], extra)
            })
            .collect();
        Cluster { servers, _dir: dir }
    }

    /// Creates `handle` at `version` on every server.
    pub async fn create(&self, handle: u64, version: u64) {
        for s in &self.servers {
            let mut c = control(&s.repl).await;
            c.create_chunk(CreateChunkRequest { handle, version })
                .await
                .expect("create chunk");
        }
    }

    /// Sets `version` on the servers listed.
    pub async fn set_version(&self, which: &[usize], handle: u64, version: u64) {
        for i in which {
            let mut c = control(&self.servers[*i].repl).await;
            c.set_version(SetVersionRequest { handle, version })
                .await
                .expect("set version");
        }
    }

    /// Grants server `primary` the lease, with every other server as a secondary.
    pub async fn grant(&self, primary: usize, handle: u64, version: u64) -> u64 {
        let secondaries = self
            .servers
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != primary)
            .map(|(_, s)| s.repl.clone())
            .collect();
        let expires =
            SystemTime::now().duration_since(UNIX_EPOCH).expect("clock") + Duration::from_secs(60);
        let mut c = control(&self.servers[primary].repl).await;
        c.grant_lease(GrantLeaseRequest {
            handle,
            version,
            secondaries,
            expires_unix_ms: expires.as_millis() as u64,
        })
        .await
        .expect("grant lease")
        .into_inner()
        .committed_length
    }

    /// The chunk report of server `i`.
    pub async fn report(&self, i: usize) -> ReportChunksReply {
        let mut c = control(&self.servers[i].repl).await;
        c.report_chunks(ReportChunksRequest::default())
            .await
            .expect("report")
            .into_inner()
    }

    /// Committed length of `handle` on server `i`.
    pub async fn committed(&self, i: usize, handle: u64) -> u64 {
        self.report(i)
            .await
            .chunks
            .iter()
            .find(|c| c.handle == handle)
            .map(|c| c.committed_length)
            .unwrap_or(0)
    }

    /// Waits (with a deadline) until server `i` has `len` committed bytes of `handle`.
    pub async fn wait_committed(&self, i: usize, handle: u64, len: u64) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let got = self.committed(i, handle).await;
            if got == len {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "server {i} has {got} of {len} bytes"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A data-plane connection to server `i`.
    pub async fn client(&self, i: usize) -> DataClient {
        DataClient::connect(&self.servers[i].data, ClientConfig::default())
            .await
            .expect("connect")
    }
}

/// Waits (20 s at most) until the master counts `n` chunkservers alive, so a chunk created
/// next is placed on all of them even on a loaded machine (with fewer, it gets fewer replicas).
pub async fn registered(c: &gfs_client::Client, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = c.report().await.expect("the master's report");
        if r.servers
            .iter()
            .filter(|s| s.state == gfs_client::ServerState::Alive)
            .count()
            >= n
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} servers registered",
            r.servers.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Appends to `chunk` with retries of retriable errors under the same op id, as a real client
/// does.
pub async fn append(
    c: &DataClient,
    chunk: &gfs_dataplane::ChunkRef,
    op: u64,
    data: &[u8],
) -> Result<u64, DataError> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match c
            .append(chunk, op, bytes::Bytes::copy_from_slice(data))
            .await
        {
            Err(e) if e.is_retriable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return other,
        }
    }
}

/// The bytes of record `i` of writer `w`.
pub fn record(w: u64, i: u64) -> Vec<u8> {
    let len = 1 + ((w * 7919 + i * 104_729) % 20_000) as usize;
    (0..len)
        .map(|j| (w as usize * 31 + i as usize * 7 + j) as u8)
        .collect()
}

/// The whole promise over `path` once the cluster healed (fsck clean): every acknowledged
/// record exactly once at its offset, nothing never sent, no duplicate, the replicas the
/// master counts current byte-identical on the disks of the live servers (stopped for that),
/// and fsck in agreement with those disks.
pub async fn check_promise(
    c: &gfs_client::Client,
    path: &str,
    h: &crate::History,
    servers: &mut [Server],
) {
    let took = crate::wait_healthy(c, path, Duration::from_secs(90)).await;
    println!("{path}: fsck clean {took:?} after the run");
    let seen = crate::observe(c, path).await;
    let dirs: Vec<(String, PathBuf)> = servers
        .iter_mut()
        .filter(|s| s.is_running())
        .map(|s| {
            s.terminate(Duration::from_secs(10));
            (s.id.clone(), s.dir.clone())
        })
        .collect();
    crate::assert_clean(&seen.check(h, &dirs));
}

/// A control-plane client for the chunkserver whose replication plane is at `addr`.
async fn control(addr: &str) -> ChunkControlClient<Channel> {
    let endpoint = gfs_host::endpoint(addr)
        .expect("a chunkserver address")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30));
    let channel = endpoint
        .connect()
        .await
        .expect("cannot reach the chunkserver");
    ChunkControlClient::new(channel)
}
