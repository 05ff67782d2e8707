//! Operability with real processes: the master's status page (in headless Chromium), /metrics
//! and /health on every server, `gfs admin report`, `gfs fsck`, decommissioning.

#![allow(clippy::unwrap_used, missing_docs)]

use std::io::Read;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use gfs_client::Client;
use gfs_testkit::fixture::Server;
use gfs_testkit::http_get;
use gfs_testkit::master_proc::MasterProc;

/// The value of the sample `name` (with its labels, as printed) in a Prometheus exposition.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The `gfs` CLI: gfs-cli's binary, built beside this package's (see bins/Cargo.toml).
fn gfs_bin() -> std::path::PathBuf {
    gfs_testkit::bin("gfs")
}

fn gfs(master: &MasterProc, args: &[&str]) -> Output {
    Command::new(gfs_bin())
        .arg("--master")
        .arg(&master.addr)
        .args(args)
        .output()
        .unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

/// Polls `cond` every 100 ms until it holds, failing after `secs` with `what`.
async fn until(secs: u64, what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond().await {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn put(c: &Client, path: &str, len: usize) -> Vec<u8> {
    let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
    if let Some((parent, _)) = path.rsplit_once('/')
        && !parent.is_empty()
    {
        c.mkdir(parent, true).await.unwrap();
    }
    c.create(path).await.unwrap();
    let mut w = c.writer(path);
    w.write(&data).await.unwrap();
    w.finish().await.unwrap();
    data
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_on_every_server() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterProc::start(&dir.path().join("master"), "127.0.0.1:0");
    let servers = Server::with_master(dir.path(), 3, &master.addr);
    let c = Client::connect(&master.addr).await.unwrap();
    put(&c, "/m", 1_500_000).await;
    c.read("/m", 0, 1000).await.unwrap();

    let (code, body) = http_get(&master.http, "/health");
    assert_eq!(code, 200, "{body}");
    assert!(body.starts_with("ok: 3 chunkservers alive"), "{body}");
    let (code, m) = http_get(&master.http, "/metrics");
    assert_eq!(code, 200);
    assert_eq!(sample(&m, "gfs_master_chunks"), Some(2.0), "{m}");
    assert_eq!(sample(&m, "gfs_master_files"), Some(1.0));
    assert_eq!(
        sample(&m, r#"gfs_master_chunkservers{state="alive"}"#),
        Some(3.0)
    );
    assert!(sample(&m, "gfs_master_lease_grants_total").unwrap() >= 2.0);
    assert!(
        sample(
            &m,
            r#"gfs_master_rpc_requests_total{op="MasterControl/Heartbeat",outcome="ok"}"#
        )
        .unwrap()
            > 0.0
    );
    assert!(
        sample(
            &m,
            r#"gfs_master_rpc_duration_seconds_count{op="Master/Create"}"#
        ) == Some(1.0)
    );

    // Every chunkserver holds both chunks; the primaries counted the appended bytes.
    let mut written = 0.0;
    let mut read = 0.0;
    let mut appends = 0.0;
    for s in &servers {
        let (code, body) = http_get(&s.http, "/health");
        assert_eq!(code, 200, "{body}");
        let (_, m) = http_get(&s.http, "/metrics");
        assert_eq!(sample(&m, "gfs_chunkserver_chunks"), Some(2.0), "{m}");
        assert!(sample(&m, "gfs_chunkserver_commits_total").unwrap() > 0.0);
        assert!(sample(&m, "gfs_chunkserver_fsync_duration_seconds_count").unwrap() > 0.0);
        assert_eq!(
            sample(&m, "gfs_chunkserver_checksum_failures_total"),
            Some(0.0)
        );
        // Exported (its counts are tests/security.rs's).
        assert!(
            sample(&m, "gfs_chunkserver_token_refused_total").is_some(),
            "{m}"
        );
        assert!(
            sample(
                &m,
                r#"gfs_chunkserver_rpc_requests_total{op="ChunkControl/CreateChunk",outcome="ok"}"#
            )
            .is_some(),
            "{m}"
        );
        // Each append acknowledged here as primary, stage by stage: every stage counted once
        // per append, and the stages on its path add up to no more than its total.
        let stage = |stage: &str, what: &str| {
            let name = format!(
                r#"gfs_chunkserver_append_stage_duration_seconds_{what}{{stage="{stage}"}}"#
            );
            sample(&m, &name).unwrap_or(0.0)
        };
        let n = stage("total", "count");
        for s in ["assign", "prepare", "commit_here", "commit_remote"] {
            assert_eq!(stage(s, "count"), n, "{s}: {m}");
        }
        let on_path = stage("assign", "sum") + stage("prepare", "sum");
        assert!(
            stage("total", "sum") >= on_path + stage("commit_here", "sum"),
            "{m}"
        );
        assert!(
            stage("total", "sum") >= on_path + stage("commit_remote", "sum"),
            "{m}"
        );
        appends += n;
        written += sample(&m, "gfs_chunkserver_written_bytes_total").unwrap_or(0.0);
        read += sample(&m, "gfs_chunkserver_read_bytes_total").unwrap_or(0.0);
    }
    assert_eq!(written, 1_500_000.0);
    assert!(
        appends >= 2.0,
        "{appends} appends timed (the file has two chunks)"
    );
    assert!(read >= 1000.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_and_fsck_see_a_dead_server_and_short_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterProc::start_with(
        &dir.path().join("master"),
        "127.0.0.1:0",
        &["--dead-after", "2s"],
    );
    let mut servers = Server::with_master(dir.path(), 3, &master.addr);
    let c = Client::connect(&master.addr).await.unwrap();
    put(&c, "/d/a", 1_200_000).await;
    put(&c, "/d/b", 1000).await;

    let out = gfs(&master, &["admin", "report", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let r = json(&out);
    assert_eq!(r["servers"].as_array().unwrap().len(), 3);
    assert_eq!(r["files"], 2);
    assert_eq!(r["chunks"], 3);
    assert!(
        r["servers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["state"] == "alive")
    );
    let text = gfs(&master, &["admin", "report"]);
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("chunkservers: 3 of 3 alive"), "{text}");

    let ok = gfs(&master, &["fsck", "/d"]);
    assert!(ok.status.success(), "{ok:?}");
    assert!(
        String::from_utf8_lossy(&ok.stdout)
            .contains("/d: 2 files, 3 chunks, 0 unhealthy files: HEALTHY")
    );

    // With three servers, one dead leaves every chunk short (nowhere to copy to).
    servers[1].kill();
    let dead = servers[1].id.clone();
    until(30, "fsck never saw the chunks short", async || {
        !gfs(&master, &["fsck", "/"]).status.success()
    })
    .await;
    let bad = gfs(&master, &["fsck", "/", "--json"]);
    assert_eq!(bad.status.code(), Some(1));
    let f = json(&bad);
    assert_eq!(f["healthy"], false);
    assert_eq!(f["unhealthy"].as_array().unwrap().len(), 2);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("2 of 2 files under / are unhealthy"));
    let text = String::from_utf8(gfs(&master, &["fsck", "/d/a"]).stdout).unwrap();
    assert!(text.contains("/d/a chunk 0 (handle"), "{text}");
    assert!(text.contains("UNDER-REPLICATED 2/3"), "{text}");
    let r = json(&gfs(&master, &["admin", "report", "--json"]));
    let state = |id: &str| {
        r["servers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .unwrap()["state"]
            .clone()
    };
    assert_eq!(state(&dead), "dead");
    assert_eq!(r["under_replicated"], 3);
    let events = r["events"].as_array().unwrap();
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "server-dead" && e["text"].as_str().unwrap().contains(&dead)),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decommissioned_server_is_drained_then_safe_to_stop() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterProc::start(&dir.path().join("master"), "127.0.0.1:0");
    let mut servers = Server::with_master(dir.path(), 4, &master.addr);
    let c = Client::connect(&master.addr).await.unwrap();
    let mut files = Vec::new();
    for i in 0..4 {
        files.push(put(&c, &format!("/f{i}"), 1 << 20).await);
    }
    // The server holding the most chunks goes.
    let l = c.refresh("/f0").await.unwrap();
    let victim = l.chunks[0].replicas[0].id.clone();
    let out = gfs(&master, &["admin", "decommission", &victim]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.ends_with(&format!("{victim}: drained; safe to stop\n")),
        "{text}"
    );
    let r = json(&gfs(&master, &["admin", "report", "--json"]));
    let s = r["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == victim.as_str())
        .unwrap()
        .clone();
    assert_eq!(s["state"], "drained", "{r}");
    // No new chunk goes there.
    let fresh = put(&c, "/after", 1000).await;
    let l = c.refresh("/after").await.unwrap();
    assert!(l.chunks[0].replicas.iter().all(|r| r.id != victim));
    // Stopping it loses nothing and leaves nothing short.
    servers.iter_mut().find(|s| s.id == victim).unwrap().kill();
    for (i, data) in files.iter().enumerate() {
        let got = c
            .read(&format!("/f{i}"), 0, data.len() as u64)
            .await
            .unwrap();
        assert!(got[..] == data[..]);
    }
    assert_eq!(c.read("/after", 0, 1000).await.unwrap()[..], fresh[..]);
    let ok = gfs(&master, &["fsck", "/"]);
    assert!(ok.status.success(), "{ok:?}");
    // Unknown servers are refused.
    let out = gfs(&master, &["admin", "decommission", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no chunkserver \"nope\""));
}

/// The status page in a real browser: headless Chromium renders it (its inline script runs)
/// and the DOM lists every chunkserver with its state and the right counts. Screenshots are
/// left in target/status-page.png and target/status-page-phone.png for the record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_renders_in_headless_chromium() {
    let Some(chromium) = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        assert!(
            std::env::var_os("GFS_REQUIRE_BROWSER").is_none(),
            "GFS_REQUIRE_BROWSER is set but no chromium is installed (apt-get install chromium)"
        );
        eprintln!("SKIPPED: no chromium here (.ci/run installs it and sets GFS_REQUIRE_BROWSER)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let master = MasterProc::start_with(
        &dir.path().join("master"),
        "127.0.0.1:0",
        &["--dead-after", "2s"],
    );
    let mut servers = Server::with_master(dir.path(), 4, &master.addr);
    let c = Client::connect(&master.addr).await.unwrap();
    put(&c, "/p/one", 2_500_000).await;
    put(&c, "/p/two", 10).await;
    servers[3].kill();
    let dead = servers[3].id.clone();
    until(
        30,
        "the master never declared the server dead",
        async || {
            http_get(&master.http, "/health")
                .1
                .starts_with("ok: 3 chunkservers alive")
        },
    )
    .await;
    let browse = |extra: &[&str]| {
        let profile = dir.path().join("chromium-profile");
        Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-quic",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(extra)
            .arg(format!("http://{}/", master.http))
            .output()
            .unwrap()
    };
    let out = browse(&["--dump-dom", "--virtual-time-budget=2000"]);
    assert!(out.status.success(), "{out:?}");
    let dom = String::from_utf8(out.stdout).unwrap();
    for s in &servers {
        assert!(
            dom.contains(&format!("<tr data-id=\"{}\">", s.id)),
            "{} missing: {dom}",
            s.id
        );
    }
    assert!(dom.contains(">dead</td>"), "{dom}");
    assert!(dom.contains(&format!("<tr data-id=\"{dead}\">")));
    assert_eq!(dom.matches(">alive</td>").count(), 3, "{dom}");
    assert!(
        dom.contains("<div class=\"card \" id=\"files\"><b>2</b>files</div>"),
        "{dom}"
    );
    assert!(
        dom.contains("<div class=\"card \" id=\"chunks\"><b>4</b>chunks</div>"),
        "{dom}"
    );
    // The inline script ran: event timestamps were turned into local times.
    assert!(dom.contains("server-dead"), "{dom}");
    let (_, after) = dom.split_once("class=\"ts\"").unwrap();
    let shown = after.split_once('>').unwrap().1.split_once('<').unwrap().0;
    assert!(
        shown.parse::<u64>().is_err() && !shown.is_empty(),
        "the timestamp was not rendered by the page's script: {shown:?}"
    );
    let shot = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/status-page.png");
    let out = browse(&[
        &format!("--screenshot={}", shot.display()),
        "--window-size=1280,900",
        "--hide-scrollbars",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);
    // And as a phone shows it.
    let phone = shot.with_file_name("status-page-phone.png");
    let out = browse(&[
        &format!("--screenshot={}", phone.display()),
        "--window-size=390,844",
        "--hide-scrollbars",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert!(std::fs::metadata(&phone).unwrap().len() > 10_000);
}

/// `--print-config` prints the effective configuration (file, defaults and flags merged) as
/// TOML that the binary reads back; `--log-format json` makes every log line a JSON object.
#[test]
fn print_config_and_json_logs() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gfs-master"))
        .args([
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../config/master.toml"),
        ])
        .args([
            "--http-listen",
            "127.0.0.1:0",
            "--max-clones",
            "3",
            "--print-config",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let cfg: toml::Table = toml::from_str(&text).unwrap();
    assert_eq!(cfg["http_listen"].as_str(), Some("127.0.0.1:0"));
    assert_eq!(cfg["max_clones"].as_integer(), Some(3));
    assert_eq!(cfg["listen"].as_str(), Some("127.0.0.1:9000"));
    let file = dir.path().join("printed.toml");
    std::fs::write(&file, &text).unwrap();
    let again = Command::new(env!("CARGO_BIN_EXE_gfs-master"))
        .arg("--config")
        .arg(&file)
        .arg("--print-config")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(again.stdout).unwrap(), text);

    let out = Command::new(env!("CARGO_BIN_EXE_gfs-chunkserver"))
        .args(["--clone-rate", "1MiB", "--http-port", "0", "--print-config"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let cfg: toml::Table = toml::from_str(&String::from_utf8(out.stdout).unwrap()).unwrap();
    // Sizes print with their largest exact unit.
    assert_eq!(cfg["replication"]["clone_rate"].as_str(), Some("1MiB"));
    assert_eq!(cfg["chunk_size"].as_str(), Some("64MiB"));
    assert_eq!(cfg["http_port"].as_integer(), Some(0));

    // The other binaries print theirs too.
    let printed = |bin: &str, args: &[&str]| -> toml::Table {
        let out = Command::new(bin).args(args).output().unwrap();
        assert!(out.status.success(), "{bin}: {out:?}");
        toml::from_str(&String::from_utf8(out.stdout).unwrap()).unwrap()
    };
    let cli = printed(
        gfs_bin().to_str().unwrap(),
        &["--master", "10.0.0.1:9000", "--print-config"],
    );
    assert_eq!(cli["master"].as_str(), Some("10.0.0.1:9000"));
    assert_eq!(cli["client"]["rpc_timeout"].as_str(), Some("30s"));
    let bench = printed(
        env!("CARGO_BIN_EXE_gfs-bench"),
        &["--runs", "5", "--print-config"],
    );
    assert_eq!(bench["runs"].as_integer(), Some(5));
    let tester = printed(env!("CARGO_BIN_EXE_gfs-tester"), &["--print-config"]);
    assert_eq!(tester["records"].as_integer(), Some(100));
    // Without a command (and without --print-config) the CLI is a usage error.
    let bare = Command::new(gfs_bin()).output().unwrap();
    assert_eq!(bare.status.code(), Some(2));

    // JSON logs: the master's start-up line is one JSON object with its fields.
    let mut child = Command::new(env!("CARGO_BIN_EXE_gfs-master"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "",
            "--log-format",
            "json",
            "--insecure",
        ])
        .arg("--dir")
        .arg(dir.path().join("m"))
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let line = std::io::BufRead::lines(std::io::BufReader::new(stderr))
        .map_while(Result::ok)
        .find(|l| l.contains("master serving"))
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["level"], "INFO", "{v}");
    assert_eq!(v["fields"]["message"], "master serving", "{v}");
    assert!(
        v["fields"]["addr"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"),
        "{v}"
    );
}

/// Decommissioning survives a master restart (the draining set is kept in the master's
/// directory), and `--cancel` brings the server back into use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decommissioning_survives_a_master_restart_and_can_be_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let mut master = MasterProc::start(&dir.path().join("master"), "127.0.0.1:0");
    let addr = master.addr.clone();
    let servers = Server::with_master(dir.path(), 4, &master.addr);
    let c = Client::connect(&master.addr).await.unwrap();
    put(&c, "/x", 1000).await;
    let victim = c.refresh("/x").await.unwrap().chunks[0].replicas[0]
        .id
        .clone();
    let out = gfs(&master, &["admin", "decommission", "--no-wait", &victim]);
    assert!(out.status.success(), "{out:?}");
    master.kill();
    let master = MasterProc::start(&dir.path().join("master"), &addr);
    let state = |r: &serde_json::Value| {
        r["servers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == victim.as_str())
            .map(|s| s["state"].as_str().unwrap().to_string())
    };
    until(
        30,
        "the restarted master forgot the decommissioning",
        async || {
            let r = json(&gfs(&master, &["admin", "report", "--json"]));
            matches!(state(&r).as_deref(), Some("draining" | "drained"))
        },
    )
    .await;
    let out = gfs(&master, &["admin", "decommission", "--cancel", &victim]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("{victim}: no longer draining\n")
    );
    let r = json(&gfs(&master, &["admin", "report", "--json"]));
    assert_eq!(state(&r).as_deref(), Some("alive"));
    assert!(
        r["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "recommissioned"),
        "{r}"
    );
    drop(servers);
}

/// Chunkservers that bind one address and advertise a host name: the master lists the name,
/// and clients and peers reach them through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunkservers_are_reached_through_their_advertised_host() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterProc::start(&dir.path().join("master"), "127.0.0.1:0");
    let _servers = Server::with_master_args(
        dir.path(),
        3,
        &master.addr,
        &["--advertise-host", "localhost"],
    );
    let c = Client::connect(&master.addr).await.unwrap();
    let data = put(&c, "/adv", 1_500_000).await;
    let l = c.refresh("/adv").await.unwrap();
    for ch in &l.chunks {
        assert_eq!(ch.replicas.len(), 3);
        for r in &ch.replicas {
            assert!(r.data_addr.starts_with("localhost:"), "{r:?}");
        }
    }
    let mut r = c.reader("/adv").await.unwrap();
    let mut got = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut r, &mut got)
        .await
        .unwrap();
    assert!(got == data);
}

/// A client that connects to the status port and sends nothing is disconnected after the
/// header timeout, and does not keep others from being served meanwhile.
#[test]
fn a_silent_http_client_is_cut_off_and_blocks_nobody() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterProc::start(&dir.path().join("master"), "127.0.0.1:0");
    let mut silent = std::net::TcpStream::connect(&master.http).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let (code, _) = http_get(&master.http, "/health");
    assert_eq!(code, 200);
    let started = Instant::now();
    let mut buf = [0u8; 256];
    // Closed by the server (0 bytes, a 408, or a reset), not by our 20 s read timeout.
    let n = silent.read(&mut buf).unwrap_or(0);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(15), "still open after {took:?}");
    let reply = String::from_utf8_lossy(&buf[..n]);
    assert!(n == 0 || reply.starts_with("HTTP/1.1 408"), "{reply}");
}

/// A child process killed and reaped when dropped, however the test ends.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The soft and hard limits on open files of process `pid` ("unlimited" as `u64::MAX`).
fn open_files_limits(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let n = |w: &str| w.parse().unwrap_or(u64::MAX);
    let words: Vec<&str> = line.split_whitespace().collect();
    (n(words[3]), n(words[4]))
}

/// Found with gfs-bench's small files (2026-12-07): a chunkserver keeps a file open per chunk
/// it holds, so under the usual soft limit of 1,024 open files it failed every creation
/// (`Too many open files`) near a thousand chunks. Started under a soft limit far below its
/// hard one, it raises the soft limit to the hard one, and then takes more chunks than the
/// soft limit it was started with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunkserver_raises_its_open_files_limit_to_the_hard_limit() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("one-replica.toml");
    std::fs::write(&cfg, "replication = 1\nquorum = 1\n").unwrap();
    let master = MasterProc::start_with(
        &dir.path().join("master"),
        "127.0.0.1:0",
        &["-c", cfg.to_str().unwrap()],
    );
    let cs_cfg = dir.path().join("quorum-of-one.toml");
    std::fs::write(&cs_cfg, "quorum = 1\n").unwrap();
    let soft = 96;
    let child = Command::new("sh")
        .args(["-c", &format!("ulimit -Sn {soft} && exec \"$0\" \"$@\"")])
        .arg(gfs_testkit::bin("gfs-chunkserver"))
        .args(["-p", "0", "-r", "0", "-h", "127.0.0.1", "-id", "cs-limits"])
        .arg("-d")
        .arg(dir.path().join("cs"))
        .args(["--chunk-size", "1MiB", "--http-port", "0", "--insecure"])
        .args(["--master", &master.addr, "-c", cs_cfg.to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Killed however the test ends.
    let mut child = Killed(child);
    let stdout = child.0.stdout.take().unwrap();
    let ready = std::io::BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|l| l.contains(" ready: "));
    assert!(ready, "the chunkserver did not start");
    let (now, hard) = open_files_limits(child.0.id());
    assert!(
        hard > soft,
        "this machine's hard limit ({hard}) leaves nothing to raise"
    );
    assert_eq!(now, hard, "the soft limit was not raised");

    // More chunks than the limit it was started with, each one file kept open.
    let c = Client::connect(&master.addr).await.unwrap();
    gfs_testkit::fixture::registered(&c, 1).await;
    let files = soft as usize + 32;
    for i in 0..files {
        put(&c, &format!("/f{i}"), 100).await;
    }
    assert_eq!(c.list("/").await.unwrap().len(), files);
}
