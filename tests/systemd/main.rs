//! Issue 18: the systemd units of `deploy/systemd` start, stop and restart a master and
//! chunkservers on one host. Checked in a container whose PID 1 is systemd (Debian bookworm
//! made by `deploy/systemd/test-host.sh` with debootstrap: no registry needed), installed the
//! way `deploy/README.md` tells an operator to (a `gfs` system user, the static release
//! binaries in `/usr/local/bin`, the shipped TOML files in `/etc/gfs` with their `[tls]` paths
//! set, the units in `/etc/systemd/system`, `systemctl enable --now`), with the units'
//! sandboxing on (the container gets `CAP_SYS_ADMIN` for the mount namespaces it needs).
//!
//! Runs only with `GFS_SYSTEMD=1`, Docker and the image (`.ci/run` builds it and sets it when
//! `docker info` answers); otherwise it prints why it is skipped and passes. The binaries are
//! those `deploy/docker/image.sh` builds (`target/<host>/release`, statically linked, so they
//! run on any glibc).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Bound on each wait; each prints how long it took.
const STEP: Duration = Duration::from_secs(90);

/// A systemd host in a container, removed when dropped.
struct Host {
    id: String,
    _certs: tempfile::TempDir,
}

impl Host {
    /// Starts the host with the binaries, units, shipped configuration and certificates
    /// mounted read-only under `/opt/gfs`; `None`, printing why, when it cannot run here.
    fn start(name: &str) -> Option<Host> {
        Self::try_start(name)
            .map_err(|why| println!("skipped: {why}"))
            .ok()
    }

    fn try_start(name: &str) -> Result<Host, String> {
        if std::env::var("GFS_SYSTEMD").as_deref() != Ok("1") {
            return Err(
                "GFS_SYSTEMD=1 is not set (.ci/run sets it when a container engine \
                        answers, after deploy/systemd/test-host.sh)"
                    .into(),
            );
        }
        let image = std::env::var("GFS_SYSTEMD_IMAGE")
            .unwrap_or_else(|_| "gfs-systemd-host:bookworm".into());
        if !run("docker", &["image", "inspect", &image])
            .status
            .success()
        {
            return Err(format!("no image {image}: run deploy/systemd/test-host.sh"));
        }
        let bin = release_dir();
        let cluster = bin.join("gfs-cluster");
        if !cluster.exists() {
            return Err(format!(
                "no release binaries in {}: run deploy/docker/image.sh",
                bin.display()
            ));
        }
        // The CA and each server's certificate, as the README issues them.
        let certs = tempfile::tempdir().map_err(|e| e.to_string())?;
        let dir = certs.path().to_str().expect("a UTF-8 path");
        let mut issue = vec![("master", "master".to_string()), ("admin", "admin".into())];
        issue.extend((1..=3).map(|i| ("chunkserver", format!("cs{i}"))));
        for (role, name) in issue {
            let out = run(
                cluster.to_str().expect("a UTF-8 path"),
                &[
                    "certs",
                    dir,
                    role,
                    &name,
                    "--host",
                    "localhost",
                    "--host",
                    "127.0.0.1",
                ],
            );
            assert!(out.status.success(), "gfs-cluster certs: {}", text(&out));
        }
        let _ = run("docker", &["rm", "-f", name]);
        let mount = |from: &Path, to: &str| format!("{}:{to}:ro", from.display());
        let repo = repo();
        let out = run(
            "docker",
            &[
                "run",
                "-d",
                "--name",
                name,
                "--hostname",
                name,
                "--cap-add",
                "SYS_ADMIN",
                "--tmpfs",
                "/run",
                "--tmpfs",
                "/run/lock",
                "-v",
                "/sys/fs/cgroup:/sys/fs/cgroup:rw",
                "-v",
                &mount(&bin, "/opt/gfs/bin"),
                "-v",
                &mount(&repo.join("deploy/systemd"), "/opt/gfs/units"),
                "-v",
                &mount(&repo.join("config"), "/opt/gfs/config"),
                "-v",
                &mount(certs.path(), "/opt/gfs/ca"),
                &image,
            ],
        );
        if !out.status.success() {
            return Err(format!("docker run: {}", text(&out)));
        }
        let host = Host {
            id: name.to_string(),
            _certs: certs,
        };
        let start = Instant::now();
        loop {
            let state = host.sh("systemctl is-system-running");
            let state = String::from_utf8_lossy(&state.stdout).trim().to_string();
            if state == "running" || state == "degraded" {
                break;
            }
            assert!(start.elapsed() < STEP, "systemd did not start: {state}");
            std::thread::sleep(Duration::from_millis(200));
        }
        println!("systemd up in {:?}", start.elapsed());
        Ok(host)
    }

    /// Runs `script` with `sh -c` in the container, as root.
    fn sh(&self, script: &str) -> Output {
        run("docker", &["exec", &self.id, "sh", "-c", script])
    }

    /// Runs `script`, which must succeed; its standard output.
    fn must(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(
            out.status.success(),
            "{script}: {}\n{}",
            text(&out),
            self.journal()
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A unit's property (`systemctl show -p`).
    fn prop(&self, unit: &str, prop: &str) -> String {
        self.must(&format!("systemctl show -p {prop} --value {unit}"))
    }

    /// Waits until every server's `/health` answers 200 (`gfs health`) and the master counts
    /// three chunkservers; returns how long it took.
    fn serving(&self) -> Duration {
        let start = Instant::now();
        loop {
            let up = ["9001", "9101", "9102", "9103"].iter().all(|p| {
                self.sh(&format!("gfs health 127.0.0.1:{p}"))
                    .status
                    .success()
            }) && self
                .sh(&format!(
                    "{CLI} gfs admin report | grep -q 'chunkservers: 3 of 3 alive'"
                ))
                .status
                .success();
            if up {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < STEP,
                "the servers do not serve:\n{}",
                self.journal()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Waits until `unit` is active again under a main PID other than `old`; returns the new.
    fn restarted(&self, unit: &str, old: &str) -> String {
        let start = Instant::now();
        loop {
            let pid = self.prop(unit, "MainPID");
            if self.prop(unit, "ActiveState") == "active" && pid != old && pid != "0" {
                return pid;
            }
            assert!(
                start.elapsed() < STEP,
                "{unit} not restarted:\n{}",
                self.journal()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The last lines of the servers' journal, for a failure's message.
    fn journal(&self) -> String {
        let out = self.sh("journalctl --no-pager -n 60 -u 'gfs-*'");
        text(&out)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if std::env::var_os("GFS_SYSTEMD_KEEP").is_some() {
            println!("kept (GFS_SYSTEMD_KEEP): docker rm -f {}", self.id);
            return;
        }
        let _ = run("docker", &["rm", "-f", &self.id]);
    }
}

fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {cmd}: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

/// Where `deploy/docker/image.sh` leaves the static release binaries.
fn release_dir() -> PathBuf {
    let out = run("rustc", &["-vV"]);
    let host = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .expect("rustc -vV names the host");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"));
    target.join(host).join("release")
}

/// The CLI's settings on the host: as root, with the admin certificate.
const CLI: &str = "export GFS_CERTS=/opt/gfs/ca GFS_MASTER=127.0.0.1:9000;";

/// Installs as `deploy/README.md` says: the user, the binaries, the shipped configuration with
/// its `[tls]` paths in `/etc/gfs/certs` (three chunkservers on one host: ids cs1..cs3, ports
/// 8080/8081/9101 upwards, each with its certificate), the certificates, the units; then
/// `systemctl enable --now`.
const INSTALL: &str = r#"set -e
useradd --system --home-dir /var/lib/gfs --shell /usr/sbin/nologin gfs
for b in gfs-master gfs-chunkserver gfs; do install -m 0755 /opt/gfs/bin/$b /usr/local/bin/; done
install -d /etc/gfs
sed 's#data/certs/#/etc/gfs/certs/#' /opt/gfs/config/master.toml > /etc/gfs/master.toml
for i in 1 2 3; do
  sed -e "s#data/certs/#/etc/gfs/certs/#" -e "s/cs1/cs$i/g" \
      -e "s/^data_port = 8080/data_port = $((8078 + 2 * i))/" \
      -e "s/^repl_port = 8081/repl_port = $((8079 + 2 * i))/" \
      -e "s/^http_port = 9101/http_port = $((9100 + i))/" \
      -e 's/^master = ""/master = "127.0.0.1:9000"/' \
      /opt/gfs/config/chunkserver.toml > /etc/gfs/chunkserver-$i.toml
done
install -d -m 0750 -o gfs /etc/gfs/certs
install -m 0640 -o gfs /opt/gfs/ca/ca.pem /opt/gfs/ca/master.* /opt/gfs/ca/cs*.* /etc/gfs/certs/
install -m 0644 /opt/gfs/units/*.service /etc/systemd/system/
systemctl daemon-reload
systemctl enable --now gfs-master gfs-chunkserver@1 gfs-chunkserver@2 gfs-chunkserver@3
"#;

/// The units on a systemd host: installed and enabled, the master and three chunkservers
/// serve (a put and record appends read back); a SIGKILLed master and chunkserver are
/// restarted by systemd (`Restart=on-failure`) and serve the same data; `systemctl restart`
/// replaces a chunkserver; `systemctl stop` ends every server cleanly (SIGTERM, exit 0:
/// `Result=success`, not failed), and started again they serve the same data, fsck clean.
#[test]
fn the_units_start_stop_and_restart_a_master_and_chunkservers() {
    let Some(h) = Host::start("gfs-systemd-test") else {
        return;
    };
    h.must(INSTALL);
    println!("enabled; serving after {:?}", h.serving());
    h.must(&format!(
        "{CLI} head -c 3000000 /dev/urandom > /root/in && gfs put /root/in /f && \
         for i in 1 2 3 4 5; do echo record-$i | gfs append /log; done"
    ));
    let same = || {
        h.must(&format!(
            "{CLI} gfs get /f /root/out && cmp /root/in /root/out && gfs cat /log | \
             grep -c record- | grep -qx 5"
        ))
    };
    same();

    for unit in ["gfs-master", "gfs-chunkserver@2"] {
        let pid = h.prop(unit, "MainPID");
        let start = Instant::now();
        h.must(&format!("systemctl kill -s SIGKILL {unit}"));
        let now = h.restarted(unit, &pid);
        assert_eq!(h.prop(unit, "NRestarts"), "1", "{unit}");
        println!(
            "{unit} SIGKILLed (pid {pid}): restarted by systemd as pid {now} after {:?}, \
             serving after {:?}",
            start.elapsed(),
            h.serving()
        );
        same();
    }

    let pid = h.prop("gfs-chunkserver@1", "MainPID");
    h.must("systemctl restart gfs-chunkserver@1");
    h.restarted("gfs-chunkserver@1", &pid);
    println!(
        "systemctl restart gfs-chunkserver@1: serving after {:?}",
        h.serving()
    );
    same();

    let all = "gfs-master gfs-chunkserver@1 gfs-chunkserver@2 gfs-chunkserver@3";
    let start = Instant::now();
    h.must(&format!("systemctl stop {all}"));
    for unit in all.split(' ') {
        assert_eq!(h.prop(unit, "ActiveState"), "inactive", "{unit}");
        assert_eq!(h.prop(unit, "Result"), "success", "{unit}: {}", h.journal());
    }
    println!(
        "systemctl stop: every server exited cleanly in {:?}",
        start.elapsed()
    );
    h.must(&format!("systemctl start {all}"));
    println!("started again: serving after {:?}", h.serving());
    same();
    let deadline = Instant::now() + STEP;
    while !h.sh(&format!("{CLI} gfs fsck /")).status.success() {
        assert!(
            Instant::now() < deadline,
            "fsck: {}",
            h.must(&format!("{CLI} gfs fsck / || true"))
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    println!("fsck clean");
}
