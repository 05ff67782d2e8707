//! A cluster of real processes and helpers that run the `gfs` binary against it.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::{RngCore, SeedableRng};

use gfs_testkit::fixture::Server;
use gfs_testkit::master_proc::MasterProc;

/// Chunk size of the test clusters.
pub const CHUNK: usize = gfs_testkit::fixture::CHUNK as usize;

/// How long one `gfs` invocation may take on a loaded machine before the test fails.
const COMMAND_DEADLINE: Duration = Duration::from_secs(180);

/// A master and chunkservers registered with it, in one temporary directory.
pub struct Gfs {
    pub servers: Vec<Server>,
    pub master: MasterProc,
    pub dir: tempfile::TempDir,
}

/// What one `gfs` run left: exit code, stdout, stderr.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Out {
    /// stdout as UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8(self.stdout.clone()).expect("stdout is UTF-8")
    }

    /// stdout parsed as one JSON document.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {:?}", self.text()))
    }

    /// The `error: ...` line of a failed run; panics unless the run exited 1 with exactly one
    /// such line, as the last line of stderr.
    pub fn error_line(&self) -> &str {
        assert_eq!(self.code, 1, "expected exit 1: {self:?}");
        let lines: Vec<&str> = self.stderr.lines().collect();
        let errors: Vec<&&str> = lines.iter().filter(|l| l.starts_with("error: ")).collect();
        assert_eq!(
            errors.len(),
            1,
            "expected one error line: {:?}",
            self.stderr
        );
        assert!(
            lines.last().is_some_and(|l| l.starts_with("error: ")),
            "the error line is not the last: {:?}",
            self.stderr
        );
        errors[0]
    }
}

impl Gfs {
    /// Starts a master and `n` chunkservers, and waits until files can be written.
    pub fn start(n: usize) -> Gfs {
        let dir = tempfile::tempdir().unwrap();
        let master = MasterProc::start(&dir.path().join("master"), "127.0.0.1:0");
        let servers = Server::with_master(dir.path(), n, &master.addr);
        let gfs = Gfs {
            servers,
            master,
            dir,
        };
        gfs.wait_ready();
        gfs
    }

    /// Retries a record append (which needs a chunk on registered chunkservers) until it
    /// works; the master answers UNAVAILABLE until enough chunkservers registered.
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let out = self.run_in(&["append", "/.ready"], b"ready");
            if out.code == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster never became writable: {out:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        self.ok(&["rm", "/.ready"]);
    }

    /// A local path in the test's temporary directory.
    pub fn local(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `gfs --master ADDR` with the tests' log level (`GFS_TEST_LOG`, default warn).
    pub fn command(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_gfs"));
        c.arg("--master")
            .arg(&self.master.addr)
            .env_remove("GFS_MASTER")
            .env(
                "RUST_LOG",
                std::env::var("GFS_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            );
        c
    }

    /// Runs `gfs ARGS` with no input.
    pub fn run(&self, args: &[&str]) -> Out {
        run(self.command().args(args), None)
    }

    /// Runs `gfs ARGS` with `input` on stdin.
    pub fn run_in(&self, args: &[&str], input: &[u8]) -> Out {
        run(self.command().args(args), Some(input.to_vec()))
    }

    /// Runs `gfs ARGS` and returns its stdout; panics unless it exited 0.
    pub fn ok(&self, args: &[&str]) -> Vec<u8> {
        let out = self.run(args);
        assert_eq!(out.code, 0, "gfs {args:?} failed: {out:?}");
        out.stdout
    }

    /// Runs `gfs ARGS`, expects exit 1 and returns its one error line.
    pub fn fails(&self, args: &[&str]) -> String {
        self.run(args).error_line().to_string()
    }

    /// `gfs put` of `data` (through a local file) to `remote`.
    pub fn put(&self, data: &[u8], remote: &str) {
        let local = self.local(&format!("put-{}", remote.replace('/', "_")));
        std::fs::write(&local, data).unwrap();
        self.ok(&["put", local.to_str().unwrap(), remote]);
    }

    /// `gfs get` of `remote` (through a local file).
    pub fn get(&self, remote: &str) -> Vec<u8> {
        let local = self.local(&format!("get-{}", remote.replace('/', "_")));
        self.ok(&["get", remote, local.to_str().unwrap()]);
        let data = std::fs::read(&local).unwrap();
        std::fs::remove_file(&local).unwrap();
        data
    }

    /// `gfs stat --json PATH`.
    pub fn stat(&self, path: &str) -> serde_json::Value {
        let out = self.run(&["stat", "--json", path]);
        assert_eq!(out.code, 0, "stat {path}: {out:?}");
        out.json()
    }
}

/// A running `gfs` process whose output is being collected; SIGKILLed if dropped before
/// [`Running::wait`] (a failing test leaves no process behind).
pub struct Running {
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    /// The threads collecting stdout and stderr; `None` once waited for.
    output: Option<(Collector, Collector)>,
}

/// A thread reading one output stream to its end.
type Collector = JoinHandle<Vec<u8>>;

impl Drop for Running {
    fn drop(&mut self) {
        if self.output.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Running {
    /// Spawns `cmd` with piped stdio.
    pub fn spawn(cmd: &mut Command) -> Running {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn gfs");
        let collect = |mut r: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut v = Vec::new();
                let _ = r.read_to_end(&mut v);
                v
            })
        };
        let stdout = collect(Box::new(child.stdout.take().unwrap()));
        let stderr = collect(Box::new(child.stderr.take().unwrap()));
        Running {
            stdin: child.stdin.take(),
            child,
            output: Some((stdout, stderr)),
        }
    }

    /// Writes to the process's stdin; a process that already exited (a failed put) reads no
    /// more, and [`Running::wait`] tells how it ended.
    pub fn feed(&mut self, data: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        if let Err(e) = stdin.write_all(data) {
            eprintln!("gfs stopped reading its input: {e}");
        }
    }

    /// Closes stdin and waits (with a deadline) for the exit.
    pub fn wait(mut self) -> Out {
        drop(self.stdin.take());
        let deadline = Instant::now() + COMMAND_DEADLINE;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("gfs did not exit within {COMMAND_DEADLINE:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let (stdout, stderr) = self.output.take().expect("waited once");
        Out {
            code: status.code().expect("gfs died by a signal"),
            stdout: stdout.join().unwrap(),
            stderr: String::from_utf8_lossy(&stderr.join().unwrap()).into_owned(),
        }
    }
}

/// Runs `cmd` to completion with `input` on stdin (none: stdin closed at once).
pub fn run(cmd: &mut Command, input: Option<Vec<u8>>) -> Out {
    let mut r = Running::spawn(cmd);
    let feeder = r.stdin.take().map(|mut stdin| {
        std::thread::spawn(move || {
            if let Some(input) = input {
                // The process may exit without reading it all (e.g. a usage error).
                let _ = stdin.write_all(&input);
            }
        })
    });
    let out = r.wait();
    if let Some(f) = feeder {
        f.join().unwrap();
    }
    out
}

/// Random bytes from a seed the test prints (`GFS_TEST_SEED=<n>` repeats a run).
pub fn random_bytes(len: usize, what: &str) -> Vec<u8> {
    let seed = std::env::var("GFS_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("{what}: GFS_TEST_SEED={seed}");
    let mut v = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// Asserts two byte strings are equal without printing megabytes.
pub fn assert_same(got: &[u8], want: &[u8], what: &str) {
    if got != want {
        let first = got
            .iter()
            .zip(want)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(want.len()));
        panic!(
            "{what}: got {} bytes, want {}; first difference at byte {first}",
            got.len(),
            want.len()
        );
    }
}

/// Whether `path` exists locally.
pub fn exists(path: &Path) -> bool {
    path.symlink_metadata().is_ok()
}
