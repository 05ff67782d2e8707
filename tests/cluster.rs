//! End-to-end tests of `gfs-cluster`: the real binary with a temporary data directory, every
//! role on ports the OS picks (`--master-port 0 --chunkserver-port 0`; a group of masters on
//! consecutive free ones).

#![allow(clippy::unwrap_used, missing_docs)]

use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use gfs_bins::cluster::ClusterConfig;
use gfs_proto::v1::master_client::MasterClient;
use gfs_proto::v1::{AppendChunkRequest, ChunkLease, CreateFileRequest, ListRequest};

/// One role as the summary lists it.
#[derive(Debug)]
struct RoleLine {
    name: String,
    pid: u32,
    /// `grpc ADDR` for the master; `data ADDR`, `replication ADDR` for a chunkserver.
    addrs: Vec<String>,
}

/// A running `gfs-cluster` process.
struct ClusterProc {
    child: Child,
    /// gfs-cluster's stdout, line by line.
    lines: mpsc::Receiver<String>,
    /// Every stdout line read so far.
    seen: Vec<String>,
    /// gfs-cluster's stderr (the roles' logs), once it closes.
    stderr: mpsc::Receiver<String>,
    _dir: tempfile::TempDir,
}

impl ClusterProc {
    /// Starts gfs-cluster with `extra` flags, without waiting for anything.
    fn spawn(extra: &[&str]) -> ClusterProc {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_gfs-cluster"))
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--master-port", "0", "--chunkserver-port", "0"])
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("GFS_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let (tx, stderr) = mpsc::channel();
        let mut err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            eprint!("{s}");
            let _ = tx.send(s);
        });
        ClusterProc {
            child,
            lines,
            seen: Vec::new(),
            stderr,
            _dir: dir,
        }
    }

    /// Starts gfs-cluster and waits for its summary.
    fn start(extra: &[&str]) -> (ClusterProc, Vec<RoleLine>) {
        let mut c = Self::spawn(extra);
        c.line(
            |l| l.starts_with("gfs-cluster ready: "),
            Duration::from_secs(60),
        );
        let mut roles = Vec::new();
        loop {
            let l = c.line(|_| true, Duration::from_secs(10));
            let words: Vec<&str> = l.split_whitespace().collect();
            if !l.starts_with("  ") || words.get(1) != Some(&"pid") {
                break;
            }
            roles.push(RoleLine {
                name: words[0].to_string(),
                pid: words[2].parse().unwrap(),
                addrs: words[3..].chunks(2).map(|w| w[1].to_string()).collect(),
            });
        }
        c.line(
            |l| l.contains("Ctrl-C stops every role"),
            Duration::from_secs(10),
        );
        (c, roles)
    }

    /// Waits for the next stdout line that satisfies `want`.
    fn line(&mut self, want: impl Fn(&str) -> bool, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if want(&l) {
                        return l;
                    }
                }
                Err(e) => panic!(
                    "no such line within {within:?} ({e}); so far: {:#?}",
                    self.seen
                ),
            }
        }
    }

    fn signal(&self, sig: &str) {
        kill(self.child.id(), sig);
    }

    /// Waits (with a deadline) for gfs-cluster to exit.
    fn wait(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "gfs-cluster still running after {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything gfs-cluster wrote on stderr (after it exited).
    fn stderr(&self) -> String {
        self.stderr.recv_timeout(Duration::from_secs(10)).unwrap()
    }
}

impl ClusterProc {
    /// The certificates gfs-cluster made for its roles, the CLI's among them.
    fn certs(&self) -> std::path::PathBuf {
        self._dir.path().join("data").join("certs")
    }
}

/// A client of the master at `addr`, over mutual TLS with the client certificate in `certs`.
async fn master_client(
    addr: &str,
    certs: &std::path::Path,
) -> MasterClient<tonic::transport::Channel> {
    use gfs_host::tls::{Tls, TlsFiles};
    let tls = Tls::load(&TlsFiles::in_dir(certs, "client")).unwrap();
    let net = gfs_host::Net::os().with_tls(std::sync::Arc::new(tls));
    let endpoint = net.endpoint(addr).unwrap();
    MasterClient::new(net.connect_channel(&endpoint).await.unwrap())
}

impl Drop for ClusterProc {
    fn drop(&mut self) {
        // The roles stop by themselves when gfs-cluster is gone (EOF on their stdin).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn kill(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args(["-s", sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success(), "kill -s {sig} {pid}");
}

/// Whether `pid` is a live process (not gone, not a zombie).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

fn wait_gone(roles: &[RoleLine], within: Duration) {
    let deadline = Instant::now() + within;
    while roles.iter().any(|r| alive(r.pid)) {
        let left: Vec<&str> = roles
            .iter()
            .filter(|r| alive(r.pid))
            .map(|r| r.name.as_str())
            .collect();
        assert!(
            Instant::now() < deadline,
            "{left:?} still running after {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn names(roles: &[RoleLine]) -> Vec<&str> {
    roles.iter().map(|r| r.name.as_str()).collect()
}

/// A lease on a chunk placed on three chunkservers: files are created until one gets its first
/// chunk placed while all three are registered (until then the master says UNAVAILABLE, or
/// places it on fewer).
async fn lease_on_three(master: &str, certs: &std::path::Path) -> ChunkLease {
    let mut m = master_client(master, certs).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    for i in 0.. {
        let path = format!("/f{i}");
        m.create(CreateFileRequest {
            path: path.clone(),
            replication: 0,
            first_chunk: false,
        })
        .await
        .unwrap();
        let lease = loop {
            match m
                .append_chunk(AppendChunkRequest { path: path.clone() })
                .await
            {
                Ok(l) => break l.into_inner(),
                Err(s) if s.code() == tonic::Code::Unavailable && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(s) => panic!("append_chunk: {s}"),
            }
        };
        if lease.secondaries.len() == 2 || Instant::now() >= deadline {
            return lease;
        }
    }
    unreachable!()
}

#[test]
fn a_cluster_starts_registers_and_stops_cleanly_on_sigterm() {
    let (mut c, roles) = ClusterProc::start(&[]);
    assert_eq!(names(&roles), ["master", "cs1", "cs2", "cs3"]);
    assert!(roles.iter().all(|r| alive(r.pid)), "{roles:?}");
    // data, replication, metrics URL; the master: grpc, status page URL.
    assert!(roles[1..].iter().all(|r| r.addrs.len() == 3), "{roles:?}");
    assert!(roles[0].addrs[1].starts_with("http://"), "{roles:?}");

    let lease = tokio::runtime::Runtime::new().unwrap().block_on(async {
        // Mutual TLS by default: a client without a certificate gets nowhere.
        let plain = MasterClient::connect(format!("http://{}", roles[0].addrs[0])).await;
        if let Ok(mut m) = plain {
            assert!(m.list(ListRequest { path: "/".into() }).await.is_err());
        }
        lease_on_three(&roles[0].addrs[0], &c.certs()).await
    });
    let primary = lease.primary.as_ref().expect("a primary");
    let mut ids: Vec<&str> = lease.secondaries.iter().map(|s| s.id.as_str()).collect();
    ids.push(&primary.id);
    ids.sort_unstable();
    assert_eq!(ids, ["cs1", "cs2", "cs3"], "{lease:?}");

    c.signal("TERM");
    let status = c.wait(Duration::from_secs(30));
    assert!(status.success(), "gfs-cluster: {status}\n{}", c.stderr());
    wait_gone(&roles, Duration::from_secs(5));
    c.line(|l| l.contains("stopped cleanly"), Duration::from_secs(5));
}

#[test]
fn four_chunkservers_start_with_their_own_ports() {
    let (mut c, roles) = ClusterProc::start(&["--chunkservers", "4"]);
    assert_eq!(names(&roles), ["master", "cs1", "cs2", "cs3", "cs4"]);
    let mut addrs: Vec<&String> = roles[1..].iter().flat_map(|r| &r.addrs[..2]).collect();
    let mut metrics: Vec<&String> = roles[1..].iter().map(|r| &r.addrs[2]).collect();
    metrics.sort();
    metrics.dedup();
    assert_eq!(metrics.len(), 4, "{roles:?}");
    for a in &addrs {
        TcpStream::connect(a.as_str()).unwrap();
    }
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), 8);

    c.signal("TERM");
    assert!(c.wait(Duration::from_secs(30)).success());
    wait_gone(&roles, Duration::from_secs(5));
}

#[test]
fn a_killed_chunkserver_is_reported_and_the_rest_keep_running() {
    let (mut c, roles) = ClusterProc::start(&[]);
    let victim = &roles[2];
    kill(victim.pid, "KILL");
    let report = c.line(
        |l| l.starts_with(&format!("gfs-cluster: cs2 (pid {}) exited", victim.pid)),
        Duration::from_secs(10),
    );
    assert!(
        report.contains("SIGKILL") && report.contains("not restarted"),
        "{report}"
    );
    for r in roles.iter().filter(|r| r.name != "cs2") {
        assert!(alive(r.pid), "{} died with cs2", r.name);
    }
    // The master still answers.
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut m = master_client(&roles[0].addrs[0], &c.certs()).await;
        m.list(ListRequest { path: "/".into() }).await.unwrap();
    });
    assert!(c.child.try_wait().unwrap().is_none(), "gfs-cluster exited");

    c.signal("TERM");
    let status = c.wait(Duration::from_secs(30));
    assert!(status.success(), "gfs-cluster: {status}\n{}", c.stderr());
    wait_gone(&roles, Duration::from_secs(5));
}

#[test]
fn a_role_that_does_not_stop_is_killed_after_stop_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cluster.toml");
    std::fs::write(&config, "stop_timeout = \"1s\"\n").unwrap();
    let (mut c, roles) = ClusterProc::start(&["--config", config.to_str().unwrap()]);
    // A stopped process does not act on SIGTERM; SIGKILL still ends it.
    kill(roles[1].pid, "STOP");
    c.signal("TERM");
    // (The master may be killed too: its graceful stop waits for cs1's open connection.)
    c.line(
        |l| l.starts_with("gfs-cluster: SIGKILL to ") && l.contains("cs1"),
        Duration::from_secs(10),
    );
    let status = c.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(1), "{status}");
    let err = c.stderr();
    assert!(
        err.contains("not every role stopped cleanly") && err.contains("cs1 signal: 9"),
        "{err}"
    );
    wait_gone(&roles, Duration::from_secs(5));
}

#[test]
fn the_roles_stop_when_gfs_cluster_is_sigkilled() {
    let (mut c, roles) = ClusterProc::start(&[]);
    c.signal("KILL");
    c.wait(Duration::from_secs(10));
    // Each role sees EOF on its stdin and stops cleanly.
    wait_gone(&roles, Duration::from_secs(30));
}

#[test]
fn a_role_that_cannot_start_stops_the_others() {
    // The first chunkserver's data port is taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let mut c = ClusterProc::spawn(&["--chunkserver-port", &port]);
    let started = c.line(
        |l| l.starts_with("gfs-cluster: started master"),
        Duration::from_secs(30),
    );
    let master_pid: u32 = started
        .rsplit_once("(pid ")
        .and_then(|(_, p)| p.strip_suffix(')'))
        .unwrap()
        .parse()
        .unwrap();
    let status = c.wait(Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "{status}");
    let err = c.stderr();
    assert!(
        err.contains("exited during start-up") && err.contains("cs1"),
        "{err}"
    );
    assert!(!alive(master_pid), "the master outlived a failed start");
    assert!(c.seen.iter().all(|l| !l.starts_with("gfs-cluster ready")));
}

#[test]
fn print_config_prints_a_configuration_that_reads_back() {
    let out = Command::new(env!("CARGO_BIN_EXE_gfs-cluster"))
        .args(["--print-config", "--chunkservers", "4", "--data-dir", "/x"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("cs4: data 127.0.0.1:8086, replication 127.0.0.1:8087"),
        "{text}"
    );
    let back = ClusterConfig::from_toml(&text, "printed").unwrap();
    assert_eq!(back.chunkservers, 4);
    assert_eq!(back.data_dir, std::path::Path::new("/x"));
}

#[test]
fn a_bad_config_file_names_the_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad-cluster.toml");
    std::fs::write(&path, "[chunkserver]\ncapacty = \"1GiB\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gfs-cluster"))
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad-cluster.toml") && err.contains("capacty"),
        "{err}"
    );
}

/// `--masters 3`: three masters on consecutive fixed ports, one elected; the CLI's library
/// given the list works through the leader, and after the leader is killed through the one
/// elected next; each surviving master holds the namespace (asked for its own state).
#[test]
fn three_masters_elect_a_leader_and_survive_its_loss() {
    let base = gfs_testkit::free_ports(6).to_string();
    let (c, roles) = ClusterProc::start(&["--masters", "3", "--master-port", &base]);
    assert_eq!(
        names(&roles),
        ["master1", "master2", "master3", "cs1", "cs2", "cs3"]
    );
    let masters: Vec<&RoleLine> = roles
        .iter()
        .filter(|r| r.name.starts_with("master"))
        .collect();
    let list = masters
        .iter()
        .map(|m| m.addrs[0].clone())
        .collect::<Vec<_>>()
        .join(",");
    let leader = || {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let leading: Vec<&&RoleLine> = masters
                .iter()
                .filter(|m| alive(m.pid))
                .filter(|m| {
                    let http = m.addrs[1]
                        .trim_start_matches("http://")
                        .trim_end_matches('/');
                    let (code, body) = gfs_testkit::http_get(http, "/health");
                    code == 200 && !body.contains("follower")
                })
                .collect();
            if let [one] = leading[..] {
                return one.pid;
            }
            assert!(Instant::now() < deadline, "no single leader: {leading:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let tls = gfs_client::tls::Tls::load(&gfs_client::tls::TlsFiles::in_dir(&c.certs(), "client"))
        .unwrap();
    let cfg = gfs_client::ClientConfig {
        net: gfs_host::Net::os().with_tls(std::sync::Arc::new(tls)),
        ..gfs_client::ClientConfig::default()
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = gfs_client::Client::connect_with(&list, cfg.clone())
            .await
            .unwrap();
        client.create("/before").await.unwrap();
        client
            .append("/before", bytes::Bytes::from_static(b"one"))
            .await
            .unwrap();
    });
    let first = leader();
    kill(first, "KILL");
    let killed = Instant::now();
    rt.block_on(async {
        let client = gfs_client::Client::connect_with(&list, cfg.clone())
            .await
            .unwrap();
        client.ensure_file("/after").await.unwrap();
        println!(
            "a create {:?} after the leader was killed",
            killed.elapsed()
        );
        client
            .append("/before", bytes::Bytes::from_static(b"two"))
            .await
            .unwrap();
        for m in masters.iter().filter(|m| m.pid != first) {
            let stale = gfs_client::ClientConfig {
                stale_reads: true,
                ..cfg.clone()
            };
            let one = gfs_client::Client::connect_with(&m.addrs[0], stale)
                .await
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let names: Vec<String> = one
                    .list("/")
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|e| e.path)
                    .collect();
                if names == ["/after", "/before"] {
                    break;
                }
                assert!(Instant::now() < deadline, "{}: {names:?}", m.name);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    let second = leader();
    assert_ne!(first, second);
    // The report, the status page and /metrics show the group as the new leader sees it.
    let admin = gfs_client::tls::Tls::load(&gfs_client::tls::TlsFiles::in_dir(&c.certs(), "admin"))
        .unwrap();
    let admin = gfs_client::ClientConfig {
        net: gfs_host::Net::os().with_tls(std::sync::Arc::new(admin)),
        ..gfs_client::ClientConfig::default()
    };
    let report = rt.block_on(async {
        let client = gfs_client::Client::connect_with(&list, admin)
            .await
            .unwrap();
        client.report().await.unwrap()
    });
    assert_eq!(report.masters.len(), 3, "{:?}", report.masters);
    let leaders: Vec<_> = report.masters.iter().filter(|m| m.leader).collect();
    assert_eq!(leaders.len(), 1, "{:?}", report.masters);
    assert!(leaders[0].term > 1, "{:?}", report.masters);
    let http = masters.iter().find(|m| m.pid == second).unwrap().addrs[1]
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let (_, page) = gfs_testkit::http_get(&http, "/");
    assert!(page.contains("id=masters"), "{page}");
    let (_, metrics) = gfs_testkit::http_get(&http, "/metrics");
    assert!(
        metrics.contains(&format!(
            "gfs_master_raft_leader{{master=\"{}\"}} 1",
            leaders[0].addr
        )),
        "{metrics}"
    );
}
