//! gfs-cluster's configuration (`config/local-cluster.toml`): cluster-wide keys (data root, host,
//! ports, chunk size, quorum, timeouts) and the `[master]` / `[chunkserver]` sections from which
//! each role's own configuration file is derived.
//!
//! Invariant: a [`ClusterConfig`] that passed [`ClusterConfig::validate`] yields a valid
//! configuration for the master and for every chunkserver (both are built and checked up front),
//! so a mistake is reported against the user's file and key, never first by a child process.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use gfs_chunkserver::ChunkserverConfig;
use gfs_master::MasterConfig;
use gfs_util::Size;
use serde::Deserialize;
use toml::{Table, Value};

/// The built-in configuration: `config/local-cluster.toml` at build time.
pub const BUILT_IN: &str = include_str!("../../config/local-cluster.toml");

/// How messages name the built-in configuration.
pub const BUILT_IN_ORIGIN: &str = "config/local-cluster.toml (built in)";

/// Keys of `[master]` that gfs-cluster sets for every run.
const MASTER_SET: &[&str] = &[
    "listen",
    "http_listen",
    "data_dir",
    "chunk_size",
    "quorum",
    "tls",
    "raft",
];

/// Keys of `[chunkserver]` that gfs-cluster sets for each server.
const CHUNKSERVER_SET: &[&str] = &[
    "id",
    "data_dir",
    "host",
    "data_port",
    "repl_port",
    "http_port",
    "master",
    "chunk_size",
    "quorum",
    "tls",
];

/// The file as written; the defaults are those of `config/local-cluster.toml`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ClusterFile {
    data_dir: PathBuf,
    host: String,
    chunkservers: usize,
    masters: usize,
    master_port: u16,
    chunkserver_port: u16,
    /// An integer or a string with a unit; converted to a [`Size`] after parsing, so the error
    /// names the key.
    chunk_size: Value,
    quorum: usize,
    #[serde(with = "humantime_serde")]
    ready_timeout: Duration,
    #[serde(with = "humantime_serde")]
    stop_timeout: Duration,
    insecure: bool,
    master: Table,
    chunkserver: Table,
}

/// The sections of the file, typed by the roles' own configurations (other keys ignored).
#[derive(Deserialize)]
#[allow(dead_code, reason = "parsed only to check the sections")]
struct Sections {
    master: Option<MasterConfig>,
    chunkserver: Option<ChunkserverConfig>,
}

impl Default for ClusterFile {
    fn default() -> Self {
        ClusterFile {
            data_dir: PathBuf::from("data"),
            host: "127.0.0.1".into(),
            chunkservers: 3,
            masters: 1,
            master_port: 9000,
            chunkserver_port: 8080,
            chunk_size: Value::String("64MiB".into()),
            quorum: 2,
            ready_timeout: Duration::from_secs(30),
            stop_timeout: Duration::from_secs(15),
            insecure: false,
            master: Table::new(),
            chunkserver: Table::new(),
        }
    }
}

/// gfs-cluster's effective configuration: the file's values, then the flags'.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Where the file came from (a path or [`BUILT_IN_ORIGIN`]); errors name it.
    pub origin: String,
    /// Root of the cluster's files: `<data_dir>/master`, `<data_dir>/csN`, `<data_dir>/<role>.toml`.
    pub data_dir: PathBuf,
    /// Host every role binds and advertises.
    pub host: String,
    /// Number of chunkservers (ids `cs1`, `cs2`, ...).
    pub chunkservers: usize,
    /// Number of masters: 1, or a replicated group of 3 or 5 (`master1`, `master2`, ...).
    pub masters: usize,
    /// The (first) master's gRPC port (0: a free one, for a single master only); master `m`
    /// of a group uses `+ 2(m-1)`, its status page the port after.
    pub master_port: u16,
    /// First chunkserver's data port; server N uses `+ 2(N-1)` and the port after it (0: free ones).
    pub chunkserver_port: u16,
    /// Chunk size of the cluster.
    pub chunk_size: Size,
    /// Replicas, the primary included, an append needs.
    pub quorum: usize,
    /// How long a role may take to print its ready line.
    pub ready_timeout: Duration,
    /// How long the roles get to stop after SIGTERM before SIGKILL.
    pub stop_timeout: Duration,
    /// Every gRPC plane without TLS (else the roles use certificates under
    /// `<data_dir>/certs`, made at the first start).
    pub insecure: bool,
    master: Table,
    chunkserver: Table,
}

impl ClusterConfig {
    /// The built-in configuration.
    pub fn built_in() -> anyhow::Result<ClusterConfig> {
        Self::from_toml(BUILT_IN, BUILT_IN_ORIGIN)
    }

    /// Reads, parses and validates a file.
    pub fn load(path: &Path) -> anyhow::Result<ClusterConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// Parses and validates a TOML document; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> anyhow::Result<ClusterConfig> {
        let f: ClusterFile = toml::from_str(text).map_err(|e| anyhow!("{origin}: {e}"))?;
        for (section, table, set) in [
            ("master", &f.master, MASTER_SET),
            ("chunkserver", &f.chunkserver, CHUNKSERVER_SET),
        ] {
            if let Some(key) = set.iter().find(|k| table.contains_key(**k)) {
                bail!(
                    "{origin}: [{section}] {key}: set by gfs-cluster for each run (see the \
                     cluster-wide keys at the top of the file)"
                );
            }
        }
        // The sections again, typed, so that a mistake in them is shown at its line.
        toml::from_str::<Sections>(text).map_err(|e| anyhow!("{origin}: {e}"))?;
        let chunk_size: Size = f
            .chunk_size
            .try_into()
            .map_err(|e| anyhow!("{origin}: chunk_size: {e}"))?;
        let cfg = ClusterConfig {
            origin: origin.to_string(),
            data_dir: f.data_dir,
            host: f.host,
            chunkservers: f.chunkservers,
            masters: f.masters,
            master_port: f.master_port,
            chunkserver_port: f.chunkserver_port,
            chunk_size,
            quorum: f.quorum,
            ready_timeout: f.ready_timeout,
            stop_timeout: f.stop_timeout,
            insecure: f.insecure,
            master: f.master,
            chunkserver: f.chunkserver,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every value (again after flags changed some); the error names the file and key.
    pub fn validate(&self) -> anyhow::Result<()> {
        let origin = &self.origin;
        let bad = |key: &str, why: String| Err(anyhow!("{origin}: {key}: {why}"));
        if self.host.is_empty() {
            return bad("host", "must not be empty".into());
        }
        if self.chunkservers == 0 {
            return bad("chunkservers", "must be at least 1".into());
        }
        if self.quorum == 0 || self.quorum > self.chunkservers {
            return bad(
                "quorum",
                format!(
                    "must be between 1 and chunkservers ({}): a chunk needs a quorum of servers",
                    self.chunkservers
                ),
            );
        }
        if self.masters == 0 || self.masters.is_multiple_of(2) {
            return bad(
                "masters",
                format!(
                    "{} is not an odd number: 1, or 3 or 5 masters (a majority must outlive a loss)",
                    self.masters
                ),
            );
        }
        if self.masters > 1 && self.master_port == 0 {
            return bad(
                "master_port",
                "a group of masters needs fixed ports: each names the others up front".into(),
            );
        }
        if u32::from(self.master_port) + 2 * self.masters as u32 - 1 > u32::from(u16::MAX) {
            return bad(
                "master_port",
                format!(
                    "{} masters need ports from {}",
                    self.masters, self.master_port
                ),
            );
        }
        if self.chunkserver_port != 0 {
            let last = u32::from(self.chunkserver_port) + 2 * self.chunkservers as u32 - 1;
            if last > u32::from(u16::MAX) {
                return bad(
                    "chunkserver_port",
                    format!(
                        "{} chunkservers from port {} need ports up to {last}",
                        self.chunkservers, self.chunkserver_port
                    ),
                );
            }
        }
        if self.chunk_size.bytes() == 0 || !self.chunk_size.bytes().is_multiple_of(64 << 10) {
            return bad(
                "chunk_size",
                format!("{} is not a positive multiple of 64 KiB", self.chunk_size),
            );
        }
        if self.ready_timeout.is_zero() || self.stop_timeout.is_zero() {
            return bad("ready_timeout / stop_timeout", "must be positive".into());
        }
        for m in 1..=self.masters {
            self.master_toml(m)?;
        }
        self.chunkserver_toml(1, "127.0.0.1:9000")?;
        Ok(())
    }

    /// The name of master `m` (from 1): `master` when it is the only one, else `master<m>`;
    /// also its directory, configuration file and certificate name.
    pub fn master_name(&self, m: usize) -> String {
        if self.masters == 1 {
            "master".into()
        } else {
            format!("master{m}")
        }
    }

    /// The gRPC addresses of the masters, in order (a single master's on port 0 is known only
    /// once it runs).
    pub fn master_addrs(&self) -> Vec<String> {
        (1..=self.masters)
            .map(|m| format!("{}:{}", self.host, self.master_grpc_port(m)))
            .collect()
    }

    /// Master `m`'s gRPC port (0: a free one).
    fn master_grpc_port(&self, m: usize) -> u16 {
        match self.master_port {
            0 => 0,
            // validate() bounds the last port of the last master.
            p => u16::try_from(u32::from(p) + 2 * (m as u32 - 1)).unwrap_or(u16::MAX),
        }
    }

    /// The directory of one role's data (`<data_dir>/master`, `<data_dir>/cs1`, ...).
    pub fn role_dir(&self, role: &str) -> PathBuf {
        self.data_dir.join(role)
    }

    /// Where the cluster's CA and certificates are (`<data_dir>/certs`).
    pub fn certs_dir(&self) -> PathBuf {
        self.data_dir.join("certs")
    }

    /// The `[tls]` table of role `name` (a certificate file in [`ClusterConfig::certs_dir`]),
    /// or `insecure = true`.
    fn tls_table(&self, name: &str) -> anyhow::Result<Value> {
        let mut t = Table::new();
        if self.insecure {
            t.insert("insecure".into(), true.into());
        } else {
            let files = gfs_host::tls::TlsFiles::in_dir(&self.certs_dir(), name);
            t.insert("ca".into(), path_value(&files.ca)?);
            t.insert("cert".into(), path_value(&files.cert)?);
            t.insert("key".into(), path_value(&files.key)?);
        }
        Ok(Value::Table(t))
    }

    /// Makes the cluster's CA and the certificates of its master, its chunkservers, a client
    /// and an admin under [`ClusterConfig::certs_dir`], those missing only (a CA made at an
    /// earlier start is kept, and the CLI's certificates with it); nothing when insecure.
    pub fn ensure_certs(&self) -> anyhow::Result<()> {
        use gfs_host::tls::{Authority, Role};
        if self.insecure {
            return Ok(());
        }
        let dir = self.certs_dir();
        let ca = if dir.join("ca.key").exists() {
            Authority::load(&dir)?
        } else {
            let ca = Authority::generate("gfs-cluster local CA")?;
            ca.save(&dir)?;
            ca
        };
        let mut hosts = vec![self.host.clone()];
        for h in ["127.0.0.1", "localhost"] {
            if !hosts.iter().any(|x| x == h) {
                hosts.push(h.to_string());
            }
        }
        let mut roles = vec![
            ("client".to_string(), Role::Client),
            ("admin".to_string(), Role::Admin),
        ];
        roles.extend((1..=self.masters).map(|m| (self.master_name(m), Role::Master)));
        roles.extend((1..=self.chunkservers).map(|n| (Self::chunkserver_id(n), Role::Chunkserver)));
        for (name, role) in roles {
            if !dir.join(format!("{name}.pem")).exists() {
                ca.issue_into(&dir, &name, role, &name, &hosts)?;
            }
        }
        Ok(())
    }

    /// Where a role's generated configuration file goes (`<data_dir>/<role>.toml`).
    pub fn role_file(&self, role: &str) -> PathBuf {
        self.data_dir.join(format!("{role}.toml"))
    }

    /// The id of chunkserver `n` (from 1).
    pub fn chunkserver_id(n: usize) -> String {
        format!("cs{n}")
    }

    /// Data and replication ports of chunkserver `n` (from 1); `(0, 0)` when the OS picks them.
    pub fn chunkserver_ports(&self, n: usize) -> (u16, u16) {
        if self.chunkserver_port == 0 {
            return (0, 0);
        }
        // validate() bounds the last port of the last server.
        let data = u32::from(self.chunkserver_port) + 2 * (n as u32 - 1);
        let data = u16::try_from(data).unwrap_or(u16::MAX);
        (data, data.saturating_add(1))
    }

    /// Master `m`'s status page port: the one after its gRPC port (0: a free one).
    pub fn master_http_port(&self, m: usize) -> u16 {
        match self.master_grpc_port(m) {
            0 => 0,
            p => p.saturating_add(1),
        }
    }

    /// Chunkserver `n`'s `/metrics` port: 9100 + n when ports are fixed (0: a free one).
    pub fn chunkserver_http_port(&self, n: usize) -> u16 {
        match self.chunkserver_port {
            0 => 0,
            _ => u16::try_from(9100 + n).unwrap_or(0),
        }
    }

    /// Master `m`'s configuration file (from 1; with `[raft]` in a group), checked by parsing
    /// it as [`MasterConfig`].
    pub fn master_toml(&self, m: usize) -> anyhow::Result<String> {
        let name = self.master_name(m);
        let mut t = self.master.clone();
        t.insert(
            "listen".into(),
            format!("{}:{}", self.host, self.master_grpc_port(m)).into(),
        );
        t.insert(
            "http_listen".into(),
            format!("{}:{}", self.host, self.master_http_port(m)).into(),
        );
        t.insert("data_dir".into(), path_value(&self.role_dir(&name))?);
        t.insert("tls".into(), self.tls_table(&name)?);
        if self.masters > 1 {
            let mut raft = Table::new();
            raft.insert("id".into(), (m as i64).into());
            raft.insert(
                "members".into(),
                Value::Array(self.master_addrs().into_iter().map(Value::from).collect()),
            );
            t.insert("raft".into(), Value::Table(raft));
        }
        self.role_text("master", t, MasterConfig::validate)
    }

    /// Chunkserver `n`'s configuration file (registering with the master at `master`), checked
    /// by parsing it as [`ChunkserverConfig`].
    pub fn chunkserver_toml(&self, n: usize, master: &str) -> anyhow::Result<String> {
        let id = Self::chunkserver_id(n);
        let (data_port, repl_port) = self.chunkserver_ports(n);
        let mut t = self.chunkserver.clone();
        t.insert("data_dir".into(), path_value(&self.role_dir(&id))?);
        t.insert("id".into(), id.clone().into());
        t.insert("host".into(), self.host.clone().into());
        t.insert("data_port".into(), i64::from(data_port).into());
        t.insert("repl_port".into(), i64::from(repl_port).into());
        t.insert(
            "http_port".into(),
            i64::from(self.chunkserver_http_port(n)).into(),
        );
        t.insert("master".into(), master.into());
        t.insert("tls".into(), self.tls_table(&id)?);
        self.role_text("chunkserver", t, ChunkserverConfig::validate)
    }

    /// The effective configuration as a file `--config` accepts (`--print-config`).
    pub fn to_toml(&self) -> anyhow::Result<String> {
        let secs = |d: Duration| {
            Value::String(humantime_serde::re::humantime::format_duration(d).to_string())
        };
        let mut t = Table::new();
        t.insert("data_dir".into(), path_value(&self.data_dir)?);
        t.insert("host".into(), self.host.clone().into());
        t.insert("chunkservers".into(), int(self.chunkservers)?);
        t.insert("masters".into(), int(self.masters)?);
        t.insert("master_port".into(), i64::from(self.master_port).into());
        t.insert(
            "chunkserver_port".into(),
            i64::from(self.chunkserver_port).into(),
        );
        t.insert(
            "chunk_size".into(),
            Value::try_from(self.chunk_size).context("writing chunk_size")?,
        );
        t.insert("quorum".into(), int(self.quorum)?);
        t.insert("ready_timeout".into(), secs(self.ready_timeout));
        t.insert("stop_timeout".into(), secs(self.stop_timeout));
        t.insert("insecure".into(), self.insecure.into());
        t.insert("master".into(), Value::Table(self.master.clone()));
        t.insert("chunkserver".into(), Value::Table(self.chunkserver.clone()));
        let mut out = format!(
            "# Effective gfs-cluster configuration: {} with the flags applied.\n",
            self.origin
        );
        let at = |port: u16| match port {
            0 => format!("{}:<free port>", self.host),
            p => format!("{}:{p}", self.host),
        };
        for m in 1..=self.masters {
            let name = self.master_name(m);
            out += &format!(
                "# {name}: grpc {}, data in {}\n",
                at(self.master_grpc_port(m)),
                self.role_dir(&name).display()
            );
        }
        for n in 1..=self.chunkservers {
            let id = Self::chunkserver_id(n);
            let (data, repl) = self.chunkserver_ports(n);
            out += &format!(
                "# {id}: data {}, replication {}, data in {}\n",
                at(data),
                at(repl),
                self.role_dir(&id).display()
            );
        }
        out += "\n";
        out += &toml::to_string(&t).context("writing the configuration as TOML")?;
        if !out.ends_with('\n') {
            out.push('\n');
        }
        Ok(out)
    }

    /// A role's file from its `[section]` table `t`: the keys shared by every role are added,
    /// the result must parse as the role's configuration `T` and pass its `validate`.
    fn role_text<T, E>(
        &self,
        section: &str,
        mut t: Table,
        validate: impl FnOnce(&T) -> Result<(), E>,
    ) -> anyhow::Result<String>
    where
        T: serde::de::DeserializeOwned,
        E: std::fmt::Display,
    {
        t.insert("chunk_size".into(), int(self.chunk_size.bytes())?);
        t.insert("quorum".into(), int(self.quorum)?);
        let origin = &self.origin;
        let cfg: T = Value::Table(t.clone())
            .try_into()
            .map_err(|e| anyhow!("{origin}: [{section}]: {e}"))?;
        validate(&cfg).map_err(|e| anyhow!("{origin}: [{section}]: {e}"))?;
        Ok(format!(
            "# Generated by gfs-cluster from {origin} at every start; edits are overwritten.\n{}",
            toml::to_string(&t).context("writing a role's configuration")?
        ))
    }
}

/// A TOML integer.
fn int(n: impl TryInto<i64>) -> anyhow::Result<Value> {
    n.try_into()
        .map(Value::Integer)
        .map_err(|_| anyhow!("a value is too large for TOML"))
}

/// A path as a TOML string (it must be UTF-8).
fn path_value(p: &Path) -> anyhow::Result<Value> {
    p.to_str()
        .map(|s| Value::String(s.into()))
        .ok_or_else(|| anyhow!("{} is not UTF-8", p.display()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn an_empty_file_means_the_built_in_one() {
        let empty = ClusterConfig::from_toml("", "empty.toml").unwrap();
        let built_in = ClusterConfig::built_in().unwrap();
        let master = |c: &ClusterConfig| {
            let t: MasterConfig = toml::from_str(&c.master_toml(1).unwrap()).unwrap();
            format!("{t:?}")
        };
        let cs = |c: &ClusterConfig| {
            let t = ChunkserverConfig::from_toml(&c.chunkserver_toml(2, "m:1").unwrap(), "x");
            format!("{:?}", t.unwrap())
        };
        assert_eq!(master(&empty), master(&built_in));
        assert_eq!(cs(&empty), cs(&built_in));
        let top = |c: &ClusterConfig| {
            let mut c = c.clone();
            c.origin.clear();
            c.master.clear();
            c.chunkserver.clear();
            format!("{c:?}")
        };
        assert_eq!(top(&empty), top(&built_in));
    }

    #[test]
    fn ports_continue_upward() {
        let mut c = ClusterConfig::built_in().unwrap();
        assert_eq!(c.chunkserver_ports(1), (8080, 8081));
        assert_eq!(c.chunkserver_ports(3), (8084, 8085));
        assert_eq!(c.chunkserver_ports(4), (8086, 8087));
        c.chunkserver_port = 0;
        assert_eq!(c.chunkserver_ports(4), (0, 0));
        c.chunkserver_port = 65531;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("chunkserver_port"), "{e}");
    }

    #[test]
    fn role_files_carry_the_cluster_keys() {
        let mut c = ClusterConfig::built_in().unwrap();
        c.data_dir = "/d".into();
        let cs: ChunkserverConfig =
            ChunkserverConfig::from_toml(&c.chunkserver_toml(2, "h:9").unwrap(), "x").unwrap();
        assert_eq!(
            (
                cs.id.as_str(),
                cs.data_port,
                cs.repl_port,
                cs.master.as_str()
            ),
            ("cs2", 8082, 8083, "h:9")
        );
        assert_eq!(cs.data_dir, Path::new("/d/cs2"));
        assert_eq!(cs.chunk_size, Size::mib(64));
        let m: MasterConfig = toml::from_str(&c.master_toml(1).unwrap()).unwrap();
        assert_eq!(m.listen, "127.0.0.1:9000");
        assert_eq!(m.data_dir, Path::new("/d/master"));
        assert_eq!(m.chunk_size, Size::mib(64));
    }

    #[test]
    fn mistakes_name_the_file_and_key() {
        for (text, key) in [
            ("chunkservers = 0", "chunkservers"),
            ("chunk_size = \"3 bananas\"", "chunk_size"),
            ("chunk_size = 1000", "chunk_size"),
            ("chunkserverz = 2", "chunkserverz"),
            ("[master]\nleese = \"5s\"", "leese"),
            ("[master]\nlisten = \"0.0.0.0:1\"", "listen"),
            ("[chunkserver]\ndata_port = 1", "data_port"),
            ("[chunkserver.storage]\nstaging_tll = \"1s\"", "staging_tll"),
            ("[master]\nlease = \"forever\"", "lease"),
        ] {
            let e = format!(
                "{:#}",
                ClusterConfig::from_toml(text, "bad.toml").unwrap_err()
            );
            assert!(e.contains("bad.toml") && e.contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn the_printed_configuration_reads_back() {
        let mut c = ClusterConfig::built_in().unwrap();
        c.chunkservers = 5;
        c.master_port = 0;
        let text = c.to_toml().unwrap();
        let back = ClusterConfig::from_toml(&text, "printed").unwrap();
        assert_eq!(back.chunkservers, 5);
        assert_eq!(back.master_port, 0);
        assert_eq!(back.chunk_size, Size::mib(64));
        assert_eq!(back.stop_timeout, c.stop_timeout);
        assert_eq!(
            back.master_toml(1).unwrap(),
            c.master_toml(1)
                .unwrap()
                .replace("from config/local-cluster.toml (built in)", "from printed",)
        );
    }
}
