//! `gfs-cluster`: a master and N chunkservers on this machine, each its own child process.
//!
//! The roles are this same binary, re-executed (`current_exe`) as the hidden subcommand
//! `gfs-cluster role master|chunkserver --config <data_dir>/<role>.toml`, so `cargo run --bin
//! gfs-cluster` needs no sibling binary. Each child runs in its own process group, so Ctrl-C
//! reaches only gfs-cluster, which then stops every child (SIGTERM, a deadline, SIGKILL). A
//! child's stdin is a pipe that only gfs-cluster holds: EOF there means gfs-cluster is gone (even
//! by SIGKILL) and the role stops cleanly. Children's stdout and stderr are forwarded to
//! gfs-cluster's stderr, each line prefixed with the role's name; their ready lines are read to
//! build the summary.

use gfs_util::collections::HashMap;
use std::future::Future;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{ExitCode, ExitStatus, Stdio};

use anyhow::{Context, anyhow, bail};
use clap::{Parser, Subcommand, ValueEnum};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use gfs_bins::cluster::ClusterConfig;
use gfs_chunkserver::ChunkserverConfig;
use gfs_master::MasterConfig;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Start a master and N chunkservers on this machine, each its own process; Ctrl-C stops them.
#[derive(Parser, Debug)]
#[command(
    name = "gfs-cluster",
    version,
    args_conflicts_with_subcommands = true,
    args_override_self = true
)]
struct Args {
    /// Run one role (how gfs-cluster starts its children).
    #[command(subcommand)]
    role: Option<Command>,
    /// TOML configuration (default: config/local-cluster.toml, built into the binary).
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Root of the cluster's files (the config's data_dir, default ./data).
    #[arg(long = "data-dir", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Number of chunkservers (default 3).
    #[arg(long, value_name = "N")]
    chunkservers: Option<usize>,
    /// Number of masters: 1, or a replicated group of 3 or 5 (default 1).
    #[arg(long, value_name = "N")]
    masters: Option<usize>,
    /// The (first) master's gRPC port (default 9000; 0 picks a free one, for one master only).
    #[arg(long = "master-port", value_name = "PORT")]
    master_port: Option<u16>,
    /// The first chunkserver's data port; its replication port is the next one and each further
    /// chunkserver takes the two after (default 8080; 0 picks free ones).
    #[arg(long = "chunkserver-port", value_name = "PORT")]
    chunkserver_port: Option<u16>,
    /// Print the effective configuration (a file --config accepts) and exit.
    #[arg(long = "print-config")]
    print_config: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Issue a certificate for a real deployment: the CA in DIR (ca.pem, ca.key; made if
    /// missing), then NAME.pem and NAME.key for ROLE, valid for each --host. Prints the files.
    ///
    /// e.g. `gfs-cluster certs /etc/gfs/certs chunkserver cs1 --host cs1.example --host
    /// 10.0.0.5`; give each server its own certificate and key and ca.pem (never ca.key).
    Certs {
        /// Directory of the CA and the certificates.
        dir: PathBuf,
        /// What the certificate's holder may do.
        role: CertRole,
        /// Its name: a chunkserver's id (it may act as that chunkserver only), or any.
        name: String,
        /// A host name or IP address peers reach it by (servers; repeat for each).
        #[arg(long = "host", value_name = "HOST")]
        hosts: Vec<String>,
    },
    /// Run one role in this process, from a configuration file gfs-cluster wrote; it stops on
    /// SIGINT/SIGTERM or at end of file on stdin.
    #[command(hide = true)]
    Role {
        /// Which role.
        kind: Kind,
        /// The role's configuration file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

/// A certificate's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum CertRole {
    Master,
    Chunkserver,
    Client,
    Admin,
}

impl From<CertRole> for gfs_host::tls::Role {
    fn from(r: CertRole) -> Self {
        use gfs_host::tls::Role;
        match r {
            CertRole::Master => Role::Master,
            CertRole::Chunkserver => Role::Chunkserver,
            CertRole::Client => Role::Client,
            CertRole::Admin => Role::Admin,
        }
    }
}

/// `gfs-cluster certs`.
fn issue_cert(dir: &Path, role: CertRole, name: &str, hosts: &[String]) -> anyhow::Result<()> {
    use gfs_host::tls::Authority;
    let ca = if dir.join("ca.key").exists() {
        Authority::load(dir)?
    } else {
        let ca = Authority::generate("gfs cluster CA")?;
        ca.save(dir)?;
        println!(
            "made a new CA: {} (keep {} secret)",
            dir.join("ca.pem").display(),
            dir.join("ca.key").display()
        );
        ca
    };
    let files = ca.issue_into(dir, name, role.into(), name, hosts)?;
    println!(
        "issued {} {name}: {} and {}",
        gfs_host::tls::Role::from(role),
        files.cert.display(),
        files.key.display()
    );
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Kind {
    Master,
    Chunkserver,
}

impl Kind {
    fn arg(self) -> &'static str {
        match self {
            Kind::Master => "master",
            Kind::Chunkserver => "chunkserver",
        }
    }
}

/// A request to the task that owns a child.
#[derive(Clone, Copy, Debug)]
enum Stop {
    /// Ask it to stop cleanly.
    Term,
    /// End it now.
    Kill,
}

/// A child process that exited: its name and how.
struct Exit {
    name: String,
    pid: u32,
    status: std::io::Result<ExitStatus>,
}

/// A running child process.
struct Role {
    name: String,
    pid: u32,
    /// Stop requests to the task that owns (and alone reaps) the child.
    stop: mpsc::UnboundedSender<Stop>,
    /// Its ready line, until it arrives.
    ready: Option<oneshot::Receiver<String>>,
    /// Its ready line as printed (empty until it arrives).
    ready_line: String,
}

/// Resolves at Ctrl-C or SIGTERM to gfs-cluster.
type Signal = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The cluster's children, started and stopped in order.
struct Cluster {
    cfg: ClusterConfig,
    exe: PathBuf,
    roles: Vec<Role>,
    exits_tx: mpsc::UnboundedSender<Exit>,
    exits: mpsc::UnboundedReceiver<Exit>,
}

/// How a wait ended when it did not fail.
enum Waited {
    Done,
    Signalled,
}

impl Cluster {
    fn new(cfg: ClusterConfig) -> anyhow::Result<Cluster> {
        let exe = std::env::current_exe().context("finding this executable to run the roles")?;
        let (exits_tx, exits) = mpsc::unbounded_channel();
        Ok(Cluster {
            cfg,
            exe,
            roles: Vec::new(),
            exits_tx,
            exits,
        })
    }

    /// Writes the role's configuration file and starts it.
    fn spawn(&mut self, name: &str, kind: Kind, toml: &str) -> anyhow::Result<()> {
        let file = self.cfg.role_file(name);
        std::fs::write(&file, toml).with_context(|| format!("writing {}", file.display()))?;
        let mut cmd = tokio::process::Command::new(&self.exe);
        cmd.args(["role", kind.arg(), "--config"]).arg(&file);
        if !std::io::stderr().is_terminal() {
            // Their logs end up where ours go: no colour codes in a file or a pipe.
            cmd.env("NO_COLOR", "1");
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {name} ({})", self.exe.display()))?;
        let pid = child.id().context("a child without a pid")?;
        let (ready_tx, ready) = oneshot::channel();
        if let Some(out) = child.stdout.take() {
            tokio::spawn(forward(name.to_string(), out, Some(ready_tx)));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(forward(name.to_string(), err, None));
        }
        let (stop, mut stops) = mpsc::unbounded_channel();
        let (exits, task_name) = (self.exits_tx.clone(), name.to_string());
        // The pipe on the child's stdin stays open until the child is reaped (`wait` would
        // close it first if it were left in `child`).
        let lifeline = child.stdin.take();
        tokio::spawn(async move {
            let status = loop {
                tokio::select! {
                    status = child.wait() => break status,
                    Some(s) = stops.recv() => signal(&mut child, &task_name, s).await,
                }
            };
            drop(lifeline);
            let _ = exits.send(Exit {
                name: task_name,
                pid,
                status,
            });
        });
        println!("gfs-cluster: started {name} (pid {pid})");
        self.roles.push(Role {
            name: name.to_string(),
            pid,
            stop,
            ready: Some(ready),
            ready_line: String::new(),
        });
        Ok(())
    }

    /// Waits for the ready line of every role started so far, within `ready_timeout`.
    async fn wait_ready(&mut self, sig: &mut Signal) -> anyhow::Result<Waited> {
        let deadline = Instant::now() + self.cfg.ready_timeout;
        let mut pending: FuturesUnordered<_> = self
            .roles
            .iter_mut()
            .filter_map(|r| {
                let name = r.name.clone();
                r.ready.take().map(|rx| async move { (name, rx.await) })
            })
            .collect();
        let mut lines = HashMap::default();
        let want = pending.len();
        while lines.len() < want {
            tokio::select! {
                biased;
                Some((name, line)) = pending.next() => {
                    // An Err means its stdout closed without the line: its exit comes next.
                    if let Ok(line) = line {
                        lines.insert(name, line);
                    }
                }
                Some(exit) = self.exits.recv() => {
                    drop(pending);
                    let why = describe(&exit.status);
                    self.forget(&exit.name);
                    bail!(
                        "{} (pid {}) exited during start-up ({why}); its log is above, \
                         prefixed [{}]",
                        exit.name, exit.pid, exit.name
                    );
                }
                () = tokio::time::sleep_until(deadline) => {
                    drop(pending);
                    let late: Vec<&str> = self
                        .roles
                        .iter()
                        .filter(|r| r.ready_line.is_empty() && !lines.contains_key(&r.name))
                        .map(|r| r.name.as_str())
                        .collect();
                    bail!(
                        "{} not ready within {:?} (ready_timeout); see the log above",
                        late.join(", "),
                        self.cfg.ready_timeout
                    );
                }
                () = sig.as_mut() => return Ok(Waited::Signalled),
            }
        }
        drop(pending);
        for r in &mut self.roles {
            if let Some(line) = lines.remove(&r.name) {
                r.ready_line = line;
            }
        }
        Ok(Waited::Done)
    }

    /// Starts the masters, then every chunkserver, each waited for until ready.
    async fn start(&mut self, sig: &mut Signal) -> anyhow::Result<Waited> {
        for m in 1..=self.cfg.masters {
            let toml = self.cfg.master_toml(m)?;
            self.spawn(&self.cfg.master_name(m), Kind::Master, &toml)?;
        }
        if let Waited::Signalled = self.wait_ready(sig).await? {
            return Ok(Waited::Signalled);
        }
        // Chunkservers register at the address the master really listens on (port 0 included).
        let master = self.master_addr()?;
        for n in 1..=self.cfg.chunkservers {
            let toml = self.cfg.chunkserver_toml(n, &master)?;
            self.spawn(&ClusterConfig::chunkserver_id(n), Kind::Chunkserver, &toml)?;
        }
        self.wait_ready(sig).await
    }

    /// The address clients and chunkservers are given: the single master's as it listens,
    /// or the list of a group.
    fn master_addr(&self) -> anyhow::Result<String> {
        if self.cfg.masters > 1 {
            return Ok(self.cfg.master_addrs().join(","));
        }
        self.roles
            .iter()
            .find(|r| r.name == "master")
            .and_then(|r| r.ready_line.strip_prefix("gfs-master ready: grpc "))
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_string)
            .ok_or_else(|| anyhow!("the master's ready line has no address"))
    }

    fn summary(&self) -> anyhow::Result<String> {
        let master = self.master_addr()?;
        let mut s = format!(
            "gfs-cluster ready: {} and {} chunkservers (configuration: {})\n",
            match self.cfg.masters {
                1 => "1 master".to_string(),
                n => format!("{n} masters (a replicated group: one leads, elected)"),
            },
            self.cfg.chunkservers,
            self.cfg.origin
        );
        for r in &self.roles {
            let at = if let Some(rest) = r.ready_line.strip_prefix("gfs-master ready: grpc ") {
                let grpc = rest.split_whitespace().next().unwrap_or_default();
                let http = r.ready_line.rsplit_once(" http ").map_or("off", |(_, h)| h);
                format!("grpc {grpc}  status http://{http}/")
            } else {
                let (data, repl, http) = r
                    .ready_line
                    .split_once(" ready: data ")
                    .and_then(|(_, rest)| rest.split_once(" replication "))
                    .and_then(|(data, rest)| {
                        rest.split_once(" http ")
                            .map(|(repl, http)| (data, repl, http))
                    })
                    .ok_or_else(|| {
                        anyhow!("{}: unexpected ready line {:?}", r.name, r.ready_line)
                    })?;
                format!("data {data}  replication {repl}  metrics http://{http}/metrics")
            };
            s += &format!("  {:<8} pid {:<8} {at}\n", r.name, r.pid);
        }
        let dir = self.cfg.data_dir.display();
        s += &format!(
            "data: {dir}/{masters} and {dir}/cs1 .. cs{n}, each role's configuration in {dir}/<role>.toml\n\
             logs: every role's output on stderr, each line prefixed [master], [cs1], ... \
             (RUST_LOG sets the level)\n",
            n = self.cfg.chunkservers,
            masters = match self.cfg.masters {
                1 => "master".to_string(),
                n => format!("master1 .. master{n}"),
            },
        );
        if self.cfg.insecure {
            s += "tls: OFF (insecure = true): every gRPC plane is open to whoever reaches its port\n";
        } else {
            s += &format!(
                "tls: mutual TLS on every gRPC plane; the CA and each role's certificate in {}\n",
                self.cfg.certs_dir().display()
            );
        }
        s += "use it from another terminal with the gfs CLI:\n";
        if master != "127.0.0.1:9000" {
            s += &format!("  export GFS_MASTER={master}        # or gfs --master {master} ...\n");
        }
        let default_certs = std::env::current_dir()
            .map(|d| d.join("data").join("certs"))
            .is_ok_and(|d| d == self.cfg.certs_dir());
        if !self.cfg.insecure && !default_certs {
            s += &format!(
                "  export GFS_CERTS={}        # or gfs --certs DIR ...\n",
                self.cfg.certs_dir().display()
            );
        }
        s += "  cargo run --release --bin gfs -- put ./file /file\n\
              \x20 cargo run --release --bin gfs -- ls /\n\
              \x20 cargo run --release --bin gfs -- get /file -\n\
              \x20 echo hello | cargo run --release --bin gfs -- append /log -\n\
              kill a role (kill PID) to watch the cluster carry on: nothing is restarted. \
              Ctrl-C stops every role.\n";
        Ok(s)
    }

    /// Reports children that exit, until Ctrl-C/SIGTERM or until none is left.
    async fn supervise(&mut self, sig: &mut Signal) -> anyhow::Result<()> {
        loop {
            tokio::select! {
                () = sig.as_mut() => return Ok(()),
                Some(exit) = self.exits.recv() => {
                    self.forget(&exit.name);
                    println!(
                        "gfs-cluster: {} (pid {}) exited ({}); not restarted, {} still running",
                        exit.name,
                        exit.pid,
                        describe(&exit.status),
                        self.names()
                    );
                    if self.roles.is_empty() {
                        bail!("every role has exited");
                    }
                }
            }
        }
    }

    /// SIGTERM to every child, `stop_timeout` for all to exit, then SIGKILL to the rest. Ok when
    /// every child stopped by itself with status 0.
    async fn stop(&mut self) -> anyhow::Result<()> {
        if self.roles.is_empty() {
            return Ok(());
        }
        println!(
            "gfs-cluster: stopping {} (SIGTERM, up to {:?})",
            self.names(),
            self.cfg.stop_timeout
        );
        for r in &self.roles {
            let _ = r.stop.send(Stop::Term);
        }
        let mut unclean = Vec::new();
        let deadline = Instant::now() + self.cfg.stop_timeout;
        let mut killed = false;
        while !self.roles.is_empty() {
            tokio::select! {
                Some(exit) = self.exits.recv() => {
                    self.forget(&exit.name);
                    if !matches!(&exit.status, Ok(s) if s.success()) {
                        unclean.push(format!("{} {}", exit.name, describe(&exit.status)));
                    }
                }
                () = tokio::time::sleep_until(deadline), if !killed => {
                    killed = true;
                    println!(
                        "gfs-cluster: SIGKILL to {} (still running after {:?})",
                        self.names(),
                        self.cfg.stop_timeout
                    );
                    for r in &self.roles {
                        let _ = r.stop.send(Stop::Kill);
                    }
                }
            }
        }
        if unclean.is_empty() {
            println!("gfs-cluster: stopped cleanly");
            Ok(())
        } else {
            bail!("not every role stopped cleanly: {}", unclean.join(", "))
        }
    }

    fn forget(&mut self, name: &str) {
        self.roles.retain(|r| r.name != name);
    }

    fn names(&self) -> String {
        let names: Vec<&str> = self.roles.iter().map(|r| r.name.as_str()).collect();
        if names.is_empty() {
            "no role".into()
        } else {
            names.join(", ")
        }
    }
}

/// Sends `stop` to `child` (not yet reaped, so its pid is still its own).
async fn signal(child: &mut tokio::process::Child, name: &str, stop: Stop) {
    let term = match (stop, child.id()) {
        (Stop::Term, Some(pid)) => pid,
        (Stop::Term, None) => return,
        (Stop::Kill, _) => {
            let _ = child.start_kill();
            return;
        }
    };
    // No libc in the workspace (`unsafe_code = "deny"`): the kill(1) utility sends SIGTERM.
    let sent = tokio::process::Command::new("kill")
        .args(["-s", "TERM", &term.to_string()])
        .stdin(Stdio::null())
        .status()
        .await;
    if !matches!(sent, Ok(s) if s.success()) {
        tracing::warn!(
            role = name,
            ?sent,
            "kill -s TERM failed; sending SIGKILL instead"
        );
        let _ = child.start_kill();
    }
}

/// Copies a child's output to stderr, each line prefixed `[name] `; with `ready`, the first
/// ready line is sent there instead.
async fn forward(
    name: String,
    from: impl AsyncRead + Unpin,
    mut ready: Option<oneshot::Sender<String>>,
) {
    use std::io::Write;
    let mut lines = BufReader::new(from).split(b'\n');
    while let Ok(Some(line)) = lines.next_segment().await {
        let line = String::from_utf8_lossy(&line);
        if line.contains(" ready: ")
            && let Some(tx) = ready.take()
        {
            let _ = tx.send(line.into_owned());
            continue;
        }
        let _ = writeln!(std::io::stderr().lock(), "[{name}] {line}");
    }
}

fn describe(status: &std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(s) => s.to_string(),
        Err(e) => format!("cannot wait for it: {e}"),
    }
}

async fn run_cluster(args: Args) -> anyhow::Result<()> {
    let mut cfg = match &args.config {
        Some(path) => ClusterConfig::load(path)?,
        None => ClusterConfig::built_in()?,
    };
    if let Some(d) = args.data_dir {
        cfg.data_dir = d;
    }
    if let Some(n) = args.chunkservers {
        cfg.chunkservers = n;
    }
    if let Some(n) = args.masters {
        cfg.masters = n;
    }
    if let Some(p) = args.master_port {
        cfg.master_port = p;
    }
    if let Some(p) = args.chunkserver_port {
        cfg.chunkserver_port = p;
    }
    cfg.validate()?;
    if args.print_config {
        print!("{}", cfg.to_toml()?);
        return Ok(());
    }
    // Installed before any child starts, so a signal during start-up stops them too.
    let mut sig: Signal = Box::pin(gfs_bins::shutdown_signal());
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating {}", cfg.data_dir.display()))?;
    cfg.data_dir = absolute(&cfg.data_dir)?;
    cfg.ensure_certs()?;
    let mut cluster = Cluster::new(cfg)?;
    match cluster.start(&mut sig).await {
        Ok(Waited::Done) => {
            print!("{}", cluster.summary()?);
            let supervised = cluster.supervise(&mut sig).await;
            let stopped = cluster.stop().await;
            supervised.and(stopped)
        }
        Ok(Waited::Signalled) => cluster.stop().await,
        Err(e) => {
            let _ = cluster.stop().await;
            Err(e)
        }
    }
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    std::fs::canonicalize(p).with_context(|| format!("resolving {}", p.display()))
}

/// A role's own stop: SIGINT/SIGTERM, or gfs-cluster gone (EOF on stdin).
fn role_stop() -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    let signal = gfs_bins::shutdown_signal();
    let parent = gfs_bins::stdin_closed()?;
    Ok(async move {
        tokio::select! {
            () = signal => {}
            () = parent => tracing::warn!("stdin closed (gfs-cluster is gone): shutting down"),
        }
    })
}

async fn run_role(kind: Kind, config: &Path) -> anyhow::Result<()> {
    match kind {
        Kind::Master => gfs_bins::serve_master(MasterConfig::load(config)?, role_stop()?).await,
        Kind::Chunkserver => {
            let cfg = ChunkserverConfig::load(config)?;
            cfg.validate()?;
            gfs_bins::serve_chunkserver(cfg, role_stop()?).await
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = Args::parse();
    match args.role.take() {
        Some(Command::Role { kind, config }) => {
            let name = match kind {
                Kind::Master => "gfs-master",
                Kind::Chunkserver => "gfs-chunkserver",
            };
            gfs_bins::main_of(name, run_role(kind, &config)).await
        }
        Some(Command::Certs {
            dir,
            role,
            name,
            hosts,
        }) => {
            gfs_bins::main_of("gfs-cluster", async move {
                issue_cert(&dir, role, &name, &hosts)
            })
            .await
        }
        None => gfs_bins::main_of("gfs-cluster", run_cluster(args)).await,
    }
}
