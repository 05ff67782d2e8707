//! A real `gfs-master` process on 127.0.0.1, for the end-to-end tests that need one.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `gfs-master` process, SIGKILLed when dropped.
pub struct MasterProc {
    /// The gRPC address it serves on.
    pub addr: String,
    /// The address of its status page, /metrics and /health.
    pub http: String,
    child: Child,
}

impl MasterProc {
    /// Starts a master on `dir` listening on `listen` (`127.0.0.1:0` picks a free port), with
    /// 1 MiB chunks, 2 s leases and 300 ms heartbeats.
    pub fn start(dir: &Path, listen: &str) -> MasterProc {
        Self::start_with(dir, listen, &[])
    }

    /// Like [`MasterProc::start`], with extra command-line arguments (which may override the
    /// chunk size, the heartbeat interval and the lease).
    pub fn start_with(dir: &Path, listen: &str, extra: &[&str]) -> MasterProc {
        Self::start_with_env(dir, listen, extra, &[])
    }

    /// Like [`MasterProc::start_with`], with extra environment variables (which may override
    /// `RUST_LOG`).
    pub fn start_with_env(
        dir: &Path,
        listen: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> MasterProc {
        // Short leases for the tests, with heartbeats well inside them (as lease >> heartbeat in
        // a real configuration), so a live primary's lease is extended in time under load.
        let heartbeat: &[&str] = if extra.contains(&"--heartbeat-interval") {
            &[]
        } else {
            &["--heartbeat-interval", "300ms"]
        };
        let lease: &[&str] = if extra.contains(&"--lease") {
            &[]
        } else {
            &["--lease", "2s"]
        };
        let chunk_size: &[&str] = if extra.contains(&"--chunk-size") {
            &[]
        } else {
            &["--chunk-size", "1MiB"]
        };
        // Without TLS unless a test brings certificates: the tests' own probes (raw gRPC
        // clients of the master and the chunkservers) carry none (tests/security.rs covers TLS).
        let tls: &[&str] = if extra.contains(&"--certs") {
            &[]
        } else {
            &["--insecure"]
        };
        let mut child = Command::new(crate::bin("gfs-master"))
            .args(["--listen", listen])
            .args(tls)
            .args(chunk_size)
            .args(lease)
            .args(["--http-listen", "127.0.0.1:0"])
            .args(heartbeat)
            .args(extra)
            .arg("--dir")
            .arg(dir)
            .env(
                "RUST_LOG",
                std::env::var("GFS_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn gfs-master");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // "gfs-master ready: grpc ADDR http ADDR"
                if let Some(rest) = line.strip_prefix("gfs-master ready: grpc ") {
                    let mut words = rest.split_whitespace();
                    let addr = words.next().unwrap_or_default().to_string();
                    let http = words.nth(1).unwrap_or_default().to_string();
                    let _ = tx.send((addr, http));
                }
            }
        });
        let (addr, http) = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("master did not start");
        MasterProc { addr, http, child }
    }

    /// Sends a signal ("STOP", "CONT", ...) to the process.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{sig} of the master at {} failed", self.addr);
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for MasterProc {
    fn drop(&mut self) {
        self.kill();
    }
}
