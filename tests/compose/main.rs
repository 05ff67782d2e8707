//! Issue 18: the compose cluster of `deploy/docker` (three masters in one Raft group, five
//! chunkservers, mutual TLS, each container with its own address on a private network), run
//! from the image `deploy/docker/image.sh` builds, under node loss. This process is a client on
//! the Docker host, as an operator's `gfs` is. Every scenario ends with the whole promise,
//! checked on the servers' own disks once they are stopped: every acknowledged record exactly
//! once at its offset, nothing never sent, the current replicas byte-identical, fsck clean.
//!
//! Runs only with `GFS_COMPOSE=1` and a container engine (`.ci/run` builds the image and sets
//! it when `docker info` answers); otherwise it prints why it is skipped and passes.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gfs_client::{Client, ClientConfig};
use gfs_testkit::observe::{assert_clean, observe, wait_healthy};
use gfs_testkit::{Appenders, Workload};

/// Bound on each step; each step prints how long it took.
const STEP: Duration = Duration::from_secs(120);

/// A compose cluster made by `deploy/docker/setup.sh` in a directory of its own, taken down
/// when dropped.
struct Compose {
    dir: tempfile::TempDir,
    /// The first three octets of its network's addresses (a /24 of its own).
    net: &'static str,
    /// Its compose project.
    project: &'static str,
    /// `docker compose`, or Compose v1's `docker-compose`.
    cmd: Vec<&'static str>,
}

impl Compose {
    /// Starts a cluster on `net` as compose project `project`; `None`, printing why, when the
    /// suite cannot run here.
    fn start(net: &'static str, project: &'static str) -> Option<Compose> {
        Self::try_start(net, project)
            .map_err(|why| println!("skipped: {why}"))
            .ok()
    }

    /// [`Compose::start`] for a scenario that cuts or degrades links inside containers: also
    /// `None`, printing why, when [`Compose::cannot_cut`] says that cannot be done here.
    fn start_cutting(net: &'static str, project: &'static str) -> Option<Compose> {
        if let Some(why) = Self::cannot_cut() {
            println!("skipped: {why}");
            return None;
        }
        Self::start(net, project)
    }

    fn try_start(net: &'static str, project: &'static str) -> Result<Compose, String> {
        if std::env::var("GFS_COMPOSE").as_deref() != Ok("1") {
            return Err(
                "GFS_COMPOSE=1 is not set (.ci/run sets it when a container engine \
                        answers, after deploy/docker/image.sh)"
                    .into(),
            );
        }
        let ok = |cmd: &str, args: &[&str]| {
            Command::new(cmd)
                .args(args)
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if !ok("docker", &["info"]) {
            return Err("no container engine: `docker info` failed".into());
        }
        let cmd = if ok("docker", &["compose", "version"]) {
            vec!["docker", "compose"]
        } else if ok("docker-compose", &["version"]) {
            vec!["docker-compose"]
        } else {
            return Err("neither `docker compose` nor `docker-compose` is installed".into());
        };
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let setup = repo().join("deploy/docker/setup.sh");
        let out = Command::new(&setup)
            .arg(dir.path())
            .env("GFS_IMAGE_READY", "1")
            .env("GFS_NET", net)
            .env("COMPOSE_PROJECT_NAME", project)
            .output()
            .expect("run setup.sh");
        assert!(out.status.success(), "setup.sh: {}", text(&out));
        let c = Compose {
            dir,
            net,
            project,
            cmd,
        };
        // What an interrupted earlier run may have left.
        c.compose(&["down", "-t", "1"]);
        c.must(&["up", "-d"]);
        Ok(c)
    }

    fn compose(&self, args: &[&str]) -> Output {
        Command::new(self.cmd[0])
            .args(&self.cmd[1..])
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("run compose")
    }

    fn must(&self, args: &[&str]) {
        let out = self.compose(args);
        assert!(out.status.success(), "compose {args:?}: {}", text(&out));
    }

    /// `docker kill` (SIGKILL) of a service's container.
    fn kill(&self, service: &str) {
        self.must(&["kill", "-s", "SIGKILL", service]);
    }

    /// The masters' list, as clients are given it.
    fn masters(&self) -> String {
        (1..=3)
            .map(|i| self.master(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Master `i`'s gRPC address.
    fn master(&self, i: usize) -> String {
        format!("{}.1{i}:9000", self.net)
    }

    /// Master `i`'s `/health`: (status, body); (0, why) when it does not answer within 2 s
    /// (a container cut off the network never answers a connection).
    fn health(&self, i: usize) -> (u16, String) {
        use std::io::{Read, Write};
        let addr: std::net::SocketAddr = format!("{}.1{i}:9001", self.net)
            .parse()
            .expect("an address");
        let ask = || -> std::io::Result<String> {
            let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            write!(s, "GET /health HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
            let mut raw = String::new();
            s.take(64 * 1024).read_to_string(&mut raw)?;
            Ok(raw)
        };
        match ask() {
            Ok(raw) => {
                let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
                let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok());
                (code.unwrap_or(0), body.to_string())
            }
            Err(e) => (0, e.to_string()),
        }
    }

    /// Cuts `service` off the cluster's network (no traffic in or out), or joins it again at
    /// its address.
    fn cut(&self, service: &str, cut: bool) {
        let out = self.compose(&["ps", "-q", service]);
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(!id.is_empty(), "no container for {service}: {}", text(&out));
        let network = format!("{}_gfs", self.project);
        let out = if cut {
            Command::new("docker")
                .args(["network", "disconnect", &network, &id])
                .output()
        } else {
            Command::new("docker")
                .args([
                    "network",
                    "connect",
                    "--ip",
                    &self.ip(service),
                    &network,
                    &id,
                ])
                .output()
        }
        .expect("run docker network");
        assert!(out.status.success(), "docker network: {}", text(&out));
    }

    /// Waits until Docker's health check says `service` is healthy; returns how long it took.
    async fn healthy(&self, service: &str) -> Duration {
        let start = Instant::now();
        loop {
            let out = self.compose(&["ps", "-q", service]);
            let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
            let out = Command::new("docker")
                .args(["inspect", "-f", "{{.State.Health.Status}}", &id])
                .output()
                .expect("run docker inspect");
            let status = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if status == "healthy" {
                return start.elapsed();
            }
            assert!(start.elapsed() < STEP, "{service} is {status}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Drops every packet between `service` and `peers` (addresses), or lets them through
    /// again: iptables rules in the container's network namespace, run with the host's tools
    /// (the image has none). Needs root, `nsenter` and `iptables` on the host.
    fn cut_from(&self, service: &str, peers: &[String], cut: bool) {
        let op = if cut { "-A" } else { "-D" };
        for peer in peers {
            for rule in [["INPUT", "-s"], ["OUTPUT", "-d"]] {
                self.in_netns(
                    service,
                    &["iptables", op, rule[0], rule[1], peer, "-j", "DROP"],
                );
            }
        }
    }

    /// Runs `args` in `service`'s network namespace with the host's tools (the image has
    /// none): iptables and tc. Needs root and `nsenter` on the host.
    fn in_netns(&self, service: &str, args: &[&str]) {
        let out = self.compose(&["ps", "-q", service]);
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let out = Command::new("docker")
            .args(["inspect", "-f", "{{.State.Pid}}", &id])
            .output()
            .expect("run docker inspect");
        let pid = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let out = Command::new("nsenter")
            .args(["-t", &pid, "-n"])
            .args(args)
            .output()
            .expect("run nsenter");
        assert!(
            out.status.success(),
            "{args:?} in {service}: {}",
            text(&out)
        );
    }

    /// `service`'s link made poor, or good again: every packet it sends or receives dropped
    /// with probability `loss` (iptables' `statistic` match) and its sending limited to `rate`
    /// by a token bucket (`tc tbf`). This kernel has no `netem`, so no added delay: a slow link
    /// here is a narrow, lossy one.
    fn poor_link(&self, service: &str, loss: &str, rate: &str, on: bool) {
        let op = if on { "-A" } else { "-D" };
        for chain in ["INPUT", "OUTPUT"] {
            self.in_netns(
                service,
                &[
                    "iptables",
                    op,
                    chain,
                    "-m",
                    "statistic",
                    "--mode",
                    "random",
                    "--probability",
                    loss,
                    "-j",
                    "DROP",
                ],
            );
        }
        if on {
            self.in_netns(
                service,
                &[
                    "tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", rate, "burst",
                    "32kbit", "latency", "400ms",
                ],
            );
        } else {
            self.in_netns(service, &["tc", "qdisc", "del", "dev", "eth0", "root"]);
        }
    }

    /// The address of `service` on the cluster's network (`master<i>` or `cs<i>`).
    fn ip(&self, service: &str) -> String {
        match service.strip_prefix("master") {
            Some(i) => format!("{}.1{i}", self.net),
            None => format!("{}.2{}", self.net, &service[2..]),
        }
    }

    /// The Docker host's address on the cluster's network (the bridge's gateway): where this
    /// test's clients come from.
    fn host_ip(&self) -> String {
        format!("{}.1", self.net)
    }

    /// The lease of `path`'s last chunk as the leading master hands it out to appenders.
    async fn lease(&self, path: &str) -> gfs_proto::v1::ChunkLease {
        use gfs_proto::v1::AppendChunkRequest;
        use gfs_proto::v1::master_client::MasterClient;
        let net = gfs_host::Net::os().with_tls(self.admin_tls());
        let deadline = Instant::now() + STEP;
        loop {
            let leader = self.leader().await;
            let endpoint = net.endpoint(&self.master(leader)).expect("an endpoint");
            let got = match net.connect_channel(&endpoint).await {
                Ok(ch) => MasterClient::new(ch)
                    .append_chunk(AppendChunkRequest { path: path.into() })
                    .await
                    .map(|l| l.into_inner())
                    .map_err(|s| s.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match got {
                Ok(l) => return l,
                Err(e) => assert!(Instant::now() < deadline, "no lease of {path}: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Why [`Compose::cut_from`] and [`Compose::poor_link`] cannot run here, if they cannot.
    fn cannot_cut() -> Option<String> {
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0"));
        let has = |tool: &str, arg: &str| {
            Command::new(tool)
                .arg(arg)
                .output()
                .is_ok_and(|o| o.status.success())
        };
        (!root || !has("nsenter", "--version") || !has("iptables", "--version") || !has("tc", "-V"))
            .then(|| "partial cuts need root, nsenter, iptables and tc on the host".to_string())
    }

    /// The admin certificate setup.sh issued, as a client on the host presents it.
    fn admin_tls(&self) -> Arc<gfs_client::tls::Tls> {
        let files = gfs_client::tls::TlsFiles::in_dir(&self.dir.path().join("certs"), "admin");
        Arc::new(gfs_client::tls::Tls::load(&files).expect("the admin certificate"))
    }

    /// A client on the host with the admin certificate (fsck and reports too).
    async fn client(&self) -> Client {
        self.client_of(&self.masters(), false).await
    }

    /// A client of `masters` (`stale`: reads answered by any master from its own state).
    async fn client_of(&self, masters: &str, stale: bool) -> Client {
        let mut cfg = ClientConfig {
            stale_reads: stale,
            ..ClientConfig::default()
        };
        cfg.net = cfg.net.with_tls(self.admin_tls());
        let deadline = Instant::now() + STEP;
        loop {
            match Client::connect_with(masters, cfg.clone()).await {
                Ok(c) => return c,
                Err(e) => assert!(Instant::now() < deadline, "no master answers: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The master that says it leads (a follower's `/health` names the leader instead).
    async fn leader(&self) -> usize {
        let deadline = Instant::now() + STEP;
        loop {
            for i in 1..=3 {
                let (code, body) = self.health(i);
                if code == 200 && !body.contains("follower") {
                    return i;
                }
            }
            assert!(Instant::now() < deadline, "no master leads");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `(server id, data directory)` of every chunkserver, for reading replicas once stopped.
    fn chunkserver_dirs(&self) -> Vec<(String, PathBuf)> {
        (1..=5)
            .map(|i| {
                (
                    format!("cs{i}"),
                    self.dir.path().join(format!("data/cs{i}")),
                )
            })
            .collect()
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        let out = self.compose(&["down", "-t", "1"]);
        if !out.status.success() {
            eprintln!("compose down: {}", text(&out));
        }
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Waits until the report counts `n` live chunkservers.
async fn alive(c: &Client, n: usize) -> Duration {
    let start = Instant::now();
    loop {
        let live = match c.report().await {
            Ok(r) => r
                .servers
                .iter()
                .filter(|s| s.state == gfs_client::ServerState::Alive)
                .count(),
            Err(_) => 0,
        };
        if live >= n {
            return start.elapsed();
        }
        assert!(start.elapsed() < STEP, "{live} of {n} chunkservers alive");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until `a` has acknowledged `more` appends past `from`; returns how long it took.
async fn progress(a: &Appenders, from: usize, more: usize) -> Duration {
    let start = Instant::now();
    a.until_acked(from + more, STEP).await;
    start.elapsed()
}

/// A client on the host, five chunkservers alive, and four writers appending small records
/// to `/log` (paced: the file stays tens of MB) that have had 40 acknowledged.
async fn appending(cluster: &Compose) -> (Client, Appenders) {
    let c = cluster.client().await;
    println!("5 chunkservers alive after {:?}", alive(&c, 5).await);
    c.create("/log").await.expect("create /log");
    let a = Appenders::start(
        &c,
        Workload {
            size: |id| 1_000 + (id.writer as usize * 7 + id.seq as usize * 13) % 1_000,
            pace: Duration::from_millis(20),
            // An append caught by a fault may fail: unacknowledged, it may be in the file once
            // or not at all.
            must_succeed: false,
            ..Workload::new("/log", 0..4, None)
        },
    );
    a.until_acked(40, STEP).await;
    (c, a)
}

/// Stops the writers, waits until fsck is clean, reads `/log`, stops every container and
/// checks the whole promise on the chunkservers' disks.
async fn checked(cluster: &Compose, c: &Client, a: Appenders) {
    a.stop();
    let h = a.join().await;
    println!(
        "healed (fsck clean) after {:?}",
        wait_healthy(c, "/log", STEP).await
    );
    let seen = observe(c, "/log").await;
    cluster.must(&["stop", "-t", "30"]);
    assert_clean(&seen.check(&h, &cluster.chunkserver_dirs()));
    println!(
        "{} records acknowledged, each once at its offset; {} bytes, replicas identical",
        h.acked.len(),
        seen.file.len()
    );
}

/// Record appends from four writers on the host, and a put of a 12 MB file, while the
/// chunkserver holding the lease of the log's chunk (its primary) is SIGKILLed (`docker kill`)
/// and kept down until the masters count it dead, then started again; then the leading master
/// is SIGKILLed and started again. Appends go on within 45 s of the primary's kill (counted dead
/// after 15 s, its lease is fenced out rather than waited out), a create from the host succeeds
/// within 5 s of the leader's kill (issue 16's failover target; the client does not wait out a
/// connect timeout toward the vanished leader), a put that says it succeeded
/// reads back byte for byte, every
/// acknowledged record is in the log exactly once at its offset, the replicas are
/// byte-identical on the chunkservers' disks and fsck is clean once healed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_chunkserver_and_leader_lose_no_acknowledged_record() {
    let Some(cluster) = Compose::start("172.29.1", "gfs-test-kill") else {
        return;
    };
    let (c, a) = appending(&cluster).await;
    let data: Arc<Vec<u8>> = Arc::new((0..12_000_000u32).map(|i| (i * 7 % 251) as u8).collect());
    // Pieces the put's writer has taken.
    let taken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let put = {
        let (c, data, taken) = (c.clone(), Arc::clone(&data), Arc::clone(&taken));
        tokio::spawn(async move {
            c.create("/put").await?;
            let mut w = c.writer("/put");
            for piece in data.chunks(256 * 1024) {
                w.write(piece).await?;
                taken.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            w.finish().await
        })
    };

    // The primary of the log's chunk, SIGKILLed under the appends and the put.
    let holder = cluster.lease("/log").await.primary.expect("a primary").id;
    // The put under way (a few pieces in) before the kill.
    let deadline = Instant::now() + STEP;
    while taken.load(std::sync::atomic::Ordering::Relaxed) < 4 && !put.is_finished() {
        assert!(Instant::now() < deadline, "the put does not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.kill(&holder);
    let killed = Instant::now();
    let acked = a.acked();
    let took = progress(&a, acked, 40).await;
    println!("{holder} (the log's primary) killed: 40 more appends acknowledged after {took:?}");
    // Counted dead after `dead_after` (15 s), its lease is fenced out, not waited out (60 s).
    assert!(
        took < Duration::from_secs(45),
        "the appends waited {took:?} for the killed primary"
    );
    let deadline = Instant::now() + STEP;
    while c.report().await.is_ok_and(|r| {
        r.servers
            .iter()
            .any(|s| s.id == holder && s.state == gfs_client::ServerState::Alive)
    }) {
        assert!(Instant::now() < deadline, "{holder} still counted alive");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "{holder} counted dead {:?} after the kill",
        killed.elapsed()
    );
    match put.await.expect("the put task") {
        Ok(n) => {
            assert_eq!(n, data.len() as u64);
            let mut back = Vec::new();
            let mut r = c.reader("/put").await.expect("open /put");
            tokio::io::AsyncReadExt::read_to_end(&mut r, &mut back)
                .await
                .expect("read /put");
            assert!(back == *data, "the put succeeded but reads back otherwise");
            println!("the put under the kill succeeded and reads back byte for byte");
        }
        Err(e) => println!("the put under the kill failed, as it may: {e}"),
    }
    cluster.must(&["start", &holder]);
    println!("{holder} back after {:?}", alive(&c, 5).await);

    // The leading master, SIGKILLed under the appends.
    let leader = cluster.leader().await;
    cluster.kill(&format!("master{leader}"));
    let killed = Instant::now();
    let acked = a.acked();
    let took = progress(&a, acked, 40).await;
    println!("master{leader} (the leader) killed: 40 more appends acknowledged after {took:?}");
    let deadline = Instant::now() + STEP;
    while let Err(e) = c.create("/after-failover").await {
        assert!(
            Instant::now() < deadline,
            "no create after the failover: {e}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = killed.elapsed();
    println!("first create on the new leader {took:?} after the kill");
    assert!(
        took < Duration::from_secs(5),
        "the first create after the leader's kill took {took:?}"
    );
    cluster.must(&["start", &format!("master{leader}")]);

    checked(&cluster, &c, a).await;
}

/// The leading master cut off the network (`docker network disconnect`: the two others, the
/// chunkservers and the clients lose it at once) under record appends: the two others elect a
/// leader, and appends and creates go on (a create from the host within 6 s: the client leaves
/// the silent leader's connection within 3 s); joined again, the old leader follows the new
/// one, and every master holds the same namespace. Then the whole promise, as above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_the_group_is_replaced_and_follows_once_back() {
    let Some(cluster) = Compose::start("172.29.2", "gfs-test-cut") else {
        return;
    };
    let (c, a) = appending(&cluster).await;
    let leader = cluster.leader().await;
    let name = format!("master{leader}");
    cluster.cut(&name, true);
    let cut = Instant::now();
    let acked = a.acked();
    let took = progress(&a, acked, 40).await;
    println!("{name} (the leader) cut off: 40 more appends acknowledged after {took:?}");
    let deadline = Instant::now() + STEP;
    while let Err(e) = c.create("/after-cut").await {
        assert!(Instant::now() < deadline, "no create after the cut: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = cut.elapsed();
    println!("first create on the new leader {took:?} after the cut");
    assert!(
        took < Duration::from_secs(6),
        "the first create after the leader's cut took {took:?}"
    );
    let now = cluster.leader().await;
    assert_ne!(now, leader, "the cut-off master still leads");
    cluster.cut(&name, false);
    let back = Instant::now();
    loop {
        let (code, body) = cluster.health(leader);
        if code == 200 && body.contains("follower") {
            break;
        }
        assert!(
            back.elapsed() < STEP,
            "{name} does not follow once back: {code} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "{name} follows the new leader {:?} after it is back",
        back.elapsed()
    );
    same_namespace(&cluster, &c, "/last").await;
    checked(&cluster, &c, a).await;
}

/// A chunkserver holding the file cut off from the three masters only (its peers and the
/// clients still reach it) under record appends: the masters count it dead after `dead_after`
/// and copy its chunks elsewhere while the appends go on (through another primary once its
/// lease, which it can no longer extend, runs out); let through again, it registers, what it
/// holds that is stale goes, and fsck is clean. Then the whole promise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunkserver_cut_off_from_the_masters_only_is_replaced_then_returns() {
    let Some(cluster) = Compose::start_cutting("172.29.3", "gfs-test-partial") else {
        return;
    };
    let (c, a) = appending(&cluster).await;
    let holder = c.refresh("/log").await.expect("the file's chunks").chunks[0].replicas[0]
        .id
        .clone();
    let masters: Vec<String> = (1..=3).map(|i| format!("{}.1{i}", cluster.net)).collect();
    cluster.cut_from(&holder, &masters, true);
    let cut = Instant::now();
    let deadline = Instant::now() + STEP;
    loop {
        let r = c.report().await.expect("the report");
        let dead = r
            .servers
            .iter()
            .any(|s| s.id == holder && s.state != gfs_client::ServerState::Alive);
        if dead {
            break;
        }
        assert!(Instant::now() < deadline, "{holder} still counted alive");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "{holder} cut off the masters: counted dead after {:?}",
        cut.elapsed()
    );
    let acked = a.acked();
    println!(
        "40 more appends acknowledged after {:?}",
        progress(&a, acked, 40).await
    );
    cluster.cut_from(&holder, &masters, false);
    println!(
        "{holder} let through: alive again after {:?}",
        alive(&c, 5).await
    );
    checked(&cluster, &c, a).await;
}

/// A rolling restart of every container, one at a time (`docker compose restart`: SIGTERM, the
/// server drains and checkpoints, then starts on its data), the chunkservers and then the
/// masters, each waited on until Docker's health check passes, under record appends: appends
/// are acknowledged after every restart, and at the end the whole promise holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_every_container_loses_no_acknowledged_record() {
    let Some(cluster) = Compose::start("172.29.4", "gfs-test-rolling") else {
        return;
    };
    let (c, a) = appending(&cluster).await;
    let order = [
        "cs1", "cs2", "cs3", "cs4", "cs5", "master1", "master2", "master3",
    ];
    for service in order {
        let start = Instant::now();
        cluster.must(&["restart", "-t", "60", service]);
        let stopped = start.elapsed();
        let healthy = cluster.healthy(service).await;
        let acked = a.acked();
        let more = progress(&a, acked, 10).await;
        println!(
            "{service}: restarted in {stopped:?}, healthy {healthy:?} later, 10 more appends \
             acknowledged {more:?} after that"
        );
    }
    checked(&cluster, &c, a).await;
}

/// The primary of the log's chunk cut off from its two secondaries only (the masters, the
/// other chunkservers and the clients still reach it) under record appends. Its PREPAREs time
/// out, it reports both secondaries lagging, the masters find fewer good replicas than a
/// quorum and let its lease run out, and the log goes on in another chunk: what this proves is
/// that a primary that can reach everyone but its secondaries cannot hold the file up for
/// longer than a lease, and that the appends caught in it are each in the file once or not at
/// all. Let through again, the stale replicas go and fsck is clean; then the whole promise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_cut_from_its_secondaries_only_loses_the_chunk_not_the_file() {
    let Some(cluster) = Compose::start_cutting("172.29.5", "gfs-test-primary") else {
        return;
    };
    let (c, a) = appending(&cluster).await;
    let lease = cluster.lease("/log").await;
    let primary = lease.primary.as_ref().expect("a primary").id.clone();
    let secondaries: Vec<String> = lease.secondaries.iter().map(|s| s.id.clone()).collect();
    let ips: Vec<String> = secondaries.iter().map(|s| cluster.ip(s)).collect();
    cluster.cut_from(&primary, &ips, true);
    let cut = Instant::now();
    println!(
        "{primary}, primary of chunk {}, cut off from {secondaries:?}",
        lease.handle
    );
    let acked = a.acked();
    let took = progress(&a, acked, 40).await;
    let now = cluster.lease("/log").await;
    println!(
        "40 more appends acknowledged after {took:?}, now to chunk {} through {}",
        now.handle,
        now.primary.as_ref().map_or("none", |p| p.id.as_str())
    );
    assert!(
        now.handle != lease.handle
            || now.primary.as_ref().is_some_and(|p| p.id != primary)
            || now.secondaries.iter().all(|s| !secondaries.contains(&s.id)),
        "the appends went on through the cut-off primary and its secondaries"
    );
    cluster.cut_from(&primary, &ips, false);
    println!("let through {:?} after the cut", cut.elapsed());
    checked(&cluster, &c, a).await;
}

/// The client (this process, on the Docker host) cut off from the primary of the log's chunk
/// mid-append, for 15 s, a quarter of its op deadline (the masters and the other chunkservers
/// still reach that primary). The appends in flight wait or retry with their op ids; once the
/// client reaches the primary again they end, each in the file once (a retry of an op that
/// had committed returns its first offset), and new ones are acknowledged. What this proves:
/// an outcome the client could not learn is never turned into a second copy of the record.
/// Then the whole promise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cut_from_the_primary_mid_append_appends_each_record_once() {
    let Some(cluster) = Compose::start_cutting("172.29.6", "gfs-test-client") else {
        return;
    };
    let (c, a) = appending(&cluster).await;
    let lease = cluster.lease("/log").await;
    let primary = lease.primary.as_ref().expect("a primary").id.clone();
    let host = [cluster.host_ip()];
    cluster.cut_from(&primary, &host, true);
    let before = a.acked();
    tokio::time::sleep(Duration::from_secs(15)).await;
    let during = a.acked() - before;
    cluster.cut_from(&primary, &host, false);
    println!(
        "the client cut off from {primary} (primary) for 15 s: {during} appends acknowledged meanwhile"
    );
    let acked = a.acked();
    println!(
        "let through: 40 more appends acknowledged after {:?}",
        progress(&a, acked, 40).await
    );
    checked(&cluster, &c, a).await;
}

/// The leading master cut off from one of the two others only (a minority: it keeps a
/// majority with the third) under record appends and creates. What this proves: a leader that
/// still has a majority goes on serving, creates and appends never stop for longer than the
/// printed bounds, and the cut-off master catches up once let through, every master holding
/// the same namespace. Then the whole promise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_from_a_minority_of_masters_keeps_serving() {
    let Some(cluster) = Compose::start_cutting("172.29.7", "gfs-test-minority") else {
        return;
    };
    let (c, a) = appending(&cluster).await;
    let leader = cluster.leader().await;
    let other = if leader == 1 { 2 } else { 1 };
    let (name, other_name) = (format!("master{leader}"), format!("master{other}"));
    cluster.cut_from(&name, &[cluster.ip(&other_name)], true);
    let cut = Instant::now();
    // Creates go on throughout: the longest wait for one is the leader's unavailability.
    let mut longest = Duration::ZERO;
    let mut made = 0;
    while cut.elapsed() < Duration::from_secs(15) {
        let t = Instant::now();
        let deadline = t + STEP;
        while let Err(e) = c.create(&format!("/cut-{made}")).await {
            assert!(Instant::now() < deadline, "no create while cut: {e}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        longest = longest.max(t.elapsed());
        made += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let acked = a.acked();
    println!(
        "{name} (the leader) cut from {other_name}: {made} creates in 15 s, the longest took \
         {longest:?}; 40 more appends acknowledged after {:?}; master{} leads",
        progress(&a, acked, 40).await,
        cluster.leader().await
    );
    cluster.cut_from(&name, &[cluster.ip(&other_name)], false);
    same_namespace(&cluster, &c, "/after-minority-cut").await;
    checked(&cluster, &c, a).await;
}

/// A secondary of the log's chunk on a poor link (30 % of the packets it sends or receives
/// dropped, and what it sends limited to 1 mbit/s) under record appends. What this proves: a degraded link, not a
/// cut, costs neither records nor the other replicas' pace: the two good replicas still make a
/// quorum, the slow one is relegated once it misses a phase (the chunk goes on without it, or
/// is sealed and the file goes on in a new chunk), and once the link is good again fsck is
/// clean. The kernel here has no `netem`, so no added delay. Then the whole promise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secondary_on_a_poor_link_neither_slows_appends_nor_loses_records() {
    let Some(cluster) = Compose::start_cutting("172.29.8", "gfs-test-poor") else {
        return;
    };
    let (c, a) = appending(&cluster).await;
    let lease = cluster.lease("/log").await;
    let slow = lease.secondaries.first().expect("a secondary").id.clone();
    let acked = a.acked();
    let good = progress(&a, acked, 200).await;
    cluster.poor_link(&slow, "0.3", "1mbit", true);
    let acked = a.acked();
    let poor = progress(&a, acked, 200).await;
    let now = cluster.lease("/log").await;
    cluster.poor_link(&slow, "0.3", "1mbit", false);
    println!(
        "200 appends took {good:?} before and {poor:?} with {slow} (a secondary of chunk {}) \
         on a poor link; now chunk {} on {:?}",
        lease.handle,
        now.handle,
        now.primary
            .iter()
            .chain(now.secondaries.iter())
            .map(|r| r.id.as_str())
            .collect::<Vec<_>>()
    );
    checked(&cluster, &c, a).await;
}

/// Creates `last` and waits until every master, asked for its own state, applied it; asserts
/// they all hold the namespace the leader lists.
async fn same_namespace(cluster: &Compose, c: &Client, last: &str) {
    c.create(last).await.expect("create the last file");
    let want: Vec<String> = c
        .list("/")
        .await
        .expect("ls /")
        .into_iter()
        .map(|e| e.path)
        .collect();
    for i in 1..=3 {
        let one = cluster.client_of(&cluster.master(i), true).await;
        let deadline = Instant::now() + STEP;
        let got = loop {
            let got = one
                .list("/")
                .await
                .map(|l| l.into_iter().map(|e| e.path).collect::<Vec<_>>());
            if let Ok(got) = got
                && got.iter().any(|p| p == last)
            {
                break got;
            }
            assert!(Instant::now() < deadline, "master{i} never applied {last}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(got, want, "master{i}'s namespace");
    }
}
