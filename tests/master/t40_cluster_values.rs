//! Cluster-wide values from the master: a chunkserver with another chunk size refuses to serve.

use super::*;

/// A `gfs-chunkserver` registering with `master`, with `chunk_size`, its stderr collected.
fn chunkserver(
    dir: &Path,
    id: &str,
    chunk_size: &str,
    master: &str,
) -> (std::process::Child, std::thread::JoinHandle<String>) {
    use std::io::Read;
    use std::process::{Command, Stdio};

    let mut child = Command::new(env!("CARGO_BIN_EXE_gfs-chunkserver"))
        .args(["-p", "0", "-r", "0", "--http-port", "0", "-h", "127.0.0.1"])
        .args([
            "-id",
            id,
            "--chunk-size",
            chunk_size,
            "--master",
            master,
            "--insecure",
        ])
        .arg("-d")
        .arg(dir.join(id))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    (child, err)
}

/// Waits for `child` to exit on its own within `within`; its exit status and stderr.
async fn exits_within(
    mut child: std::process::Child,
    err: std::thread::JoinHandle<String>,
    within: Duration,
) -> (std::process::ExitStatus, String) {
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the chunkserver still runs after {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let err = err.join().unwrap();
    eprint!("{err}");
    (status, err)
}

/// Waits (15 s at most) until the chunkserver `child` exits: non-zero, by itself (not by a
/// signal, not by a panic), with `line` on its stderr.
async fn refused(child: std::process::Child, err: std::thread::JoinHandle<String>, line: &str) {
    let (status, err) = exits_within(child, err, Duration::from_secs(15)).await;
    assert!(!status.success(), "{status}");
    assert!(
        status.code().is_some(),
        "exits, not killed by a signal: {status}"
    );
    assert!(err.contains(line), "stderr: {err}");
    assert!(!err.contains("panicked"), "stderr: {err}");
}

/// The one line a chunkserver with `ours` prints when the master at `master` runs `theirs`.
fn mismatch_line(ours: u64, master: &str, theirs: u64) -> String {
    format!(
        "gfs-chunkserver: error: chunk_size {ours} in this chunkserver's config, the master at \
         {master} runs with {theirs}: set chunk_size (or --chunk-size) in the chunkserver's \
         config to match"
    )
}

/// Issue 13, item 4: the chunk size and quorum come from the master. A chunkserver configured
/// with another chunk size than the master's (1 MiB here) refuses to serve: it exits non-zero
/// within seconds with one line naming both values, and the master never lists it as alive;
/// one with the master's values registers and stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunkserver_with_another_chunk_size_than_the_master_refuses_to_serve() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterProc::start(&dir.path().join("master"), "127.0.0.1:0");
    let (child, err) = chunkserver(dir.path(), "wrong", "4MiB", &master.addr);
    refused(child, err, &mismatch_line(4 << 20, &master.addr, 1 << 20)).await;
    assert!(alive_servers(&master.addr).await.is_empty());

    // The master's values: it registers and stays up.
    let good = Server::with_master(dir.path(), 1, &master.addr);
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive_servers(&master.addr).await != ["cs0"] {
        assert!(Instant::now() < deadline, "cs0 never listed as alive");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(alive_servers(&master.addr).await, ["cs0"]);
    assert!(good[0].is_running());
}

/// Issue 13, item 4: a serving chunkserver checks again when it registers with a restarted
/// master, and stops (non-zero, the same line) when that master runs with another chunk size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serving_chunkserver_stops_when_a_restarted_master_runs_another_chunk_size() {
    let dir = tempfile::tempdir().unwrap();
    let mut master = MasterProc::start(&dir.path().join("master"), "127.0.0.1:0");
    let addr = master.addr.clone();
    let (child, err) = chunkserver(dir.path(), "cs", "1MiB", &addr);
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive_servers(&addr).await != ["cs"] {
        assert!(Instant::now() < deadline, "cs never listed as alive");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    master.kill();
    let _master = MasterProc::start_with(
        &dir.path().join("master2"),
        &addr,
        &["--chunk-size", "2MiB"],
    );
    refused(child, err, &mismatch_line(1 << 20, &addr, 2 << 20)).await;
    assert!(alive_servers(&addr).await.is_empty());
}
