//! Helpers shared by the gfs-rs binaries: logging, signals, serving a master or a chunkserver
//! until told to stop, Go-style flags, seed addresses, and gfs-cluster's configuration.

pub mod cluster;

use std::ffi::OsString;
use std::future::Future;

use anyhow::Context;
use gfs_chunkserver::{ChunkServer, ChunkserverConfig};
use gfs_master::{Master, MasterConfig};
use gfs_proto::v1::chunk_control_client::ChunkControlClient;
use tonic::transport::Channel;

/// Flags every server binary takes.
#[derive(clap::Args, Debug)]
pub struct CommonArgs {
    /// Log line format on stderr: "text" for people, "json" (one object per line, with the
    /// span fields such as the RPC method) for log collectors. RUST_LOG sets the filter.
    #[arg(long = "log-format", value_name = "FORMAT", value_parser = ["text", "json"])]
    pub log_format: Option<String>,
    /// Print the effective configuration (file, defaults and flags merged) as TOML and exit.
    #[arg(long = "print-config")]
    pub print_config: bool,
    /// Directory of the cluster's certificates (`ca.pem`, and this server's `<name>.pem` and
    /// `<name>.key`, as `gfs-cluster certs` writes them): mutual TLS on every gRPC plane.
    #[arg(long, value_name = "DIR", conflicts_with = "insecure")]
    pub certs: Option<std::path::PathBuf>,
    /// Serve every gRPC plane without TLS, open to whoever reaches its port.
    #[arg(long)]
    pub insecure: bool,
}

impl CommonArgs {
    /// Applies `--certs` (this server's certificate named `name`) and `--insecure` to `tls`.
    pub fn apply_tls(&self, tls: &mut gfs_host::tls::TlsSettings, name: &str) {
        if let Some(dir) = &self.certs {
            *tls = gfs_host::tls::TlsSettings::in_dir(dir, name);
        }
        if self.insecure {
            *tls = gfs_host::tls::TlsSettings {
                insecure: true,
                ..gfs_host::tls::TlsSettings::default()
            };
        }
    }

    /// Prints `cfg` as TOML and returns true when `--print-config` was given.
    pub fn printed<T: serde::Serialize>(&self, cfg: &T) -> anyhow::Result<bool> {
        if self.print_config {
            print!(
                "{}",
                toml::to_string(cfg).context("printing the configuration")?
            );
        }
        Ok(self.print_config)
    }
}

/// Whether the command line asks for JSON logs (`--log-format json` or `--log-format=json`).
fn json_logs() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.windows(2)
        .any(|w| w[0] == "--log-format" && w[1] == "json")
        || args.iter().any(|a| a == "--log-format=json")
}

/// Logs to stderr; `RUST_LOG` sets the filter (default `info`), `--log-format json` makes each
/// line a JSON object. A failed write is dropped silently: a closed stderr (gfs-cluster killed
/// under its roles) must not panic the process that is shutting down because of it.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false);
    if json_logs() {
        fmt.json()
            .with_current_span(true)
            .with_span_list(false)
            .init();
    } else {
        fmt.init();
    }
}

/// Runs a binary's body with logging set up; an error is one line on stderr and exit status 1.
pub async fn main_of(
    name: &str,
    body: impl std::future::Future<Output = anyhow::Result<()>>,
) -> std::process::ExitCode {
    init_tracing();
    match body.await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "{name}: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Resolves when the process receives SIGINT or SIGTERM. The handlers are installed when this
/// is called (inside a runtime), not when the future is first polled, so a signal that arrives
/// in between is not lost.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let listen = |kind: SignalKind, name: &'static str| {
        let s = signal(kind);
        async move {
            match s {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for {name}");
                    std::future::pending::<()>().await;
                }
            }
        }
    };
    let int = listen(SignalKind::interrupt(), "SIGINT");
    let term = listen(SignalKind::terminate(), "SIGTERM");
    async move {
        tokio::select! {
            () = int => tracing::info!("SIGINT: shutting down"),
            () = term => tracing::info!("SIGTERM: shutting down"),
        }
    }
}

/// Resolves at end of file (or an error) on stdin. gfs-cluster's roles run with a pipe on stdin
/// whose other end only the gfs-cluster process holds: EOF means it is gone, even by SIGKILL.
/// A detached thread reads, so a blocked read never holds up the exit of the process.
pub fn stdin_closed() -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    use std::io::Read;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("stdin-watch".into())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buf = [0u8; 256];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            drop(tx);
        })
        .context("starting the stdin watch")?;
    Ok(async move {
        let _ = rx.await;
    })
}

/// Starts a master, prints `gfs-master ready: grpc ADDR http ADDR` on stdout (scripts and tests wait for
/// it), serves until `stop` resolves, then stops cleanly (flush, checkpoint).
pub async fn serve_master(
    cfg: MasterConfig,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    require_tls(&cfg.tls, "gfs-master")?;
    let master = Master::start(cfg).await.context("starting the master")?;
    let http = master
        .http_addr
        .map_or("off".to_string(), |a| a.to_string());
    println!("gfs-master ready: grpc {} http {http}", master.addr);
    let token = master.shutdown_token();
    after(stop, move || token.cancel());
    master.wait().await?;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Starts a chunkserver, prints `gfs-chunkserver ID ready: data ADDR replication ADDR http ADDR` on
/// stdout, serves until `stop` resolves, then stops cleanly (drain, checkpoint).
pub async fn serve_chunkserver(
    cfg: ChunkserverConfig,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let id = cfg.id.clone();
    require_tls(&cfg.tls, "gfs-chunkserver")?;
    let server = ChunkServer::start(cfg)
        .await
        .context("starting the chunkserver")?;
    println!(
        "gfs-chunkserver {id} ready: data {} replication {} http {}",
        server.data_addr, server.repl_addr, server.http_addr
    );
    let token = server.shutdown_token();
    after(stop, move || token.cancel());
    server.wait().await?;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Refuses to serve with neither certificates nor `insecure = true` in `[tls]`, and says
/// loudly that every plane is open when insecure.
fn require_tls(tls: &gfs_host::tls::TlsSettings, what: &str) -> anyhow::Result<()> {
    tls.require()
        .with_context(|| format!("{what} will not start"))?;
    if tls.insecure {
        tracing::warn!(
            "INSECURE: tls.insecure = true: every gRPC plane serves without TLS, open to whoever \
             reaches its port (anyone can register as a chunkserver, read or delete chunks, \
             decommission servers); use certificates (gfs-cluster certs) on any shared network"
        );
    }
    Ok(())
}

/// Runs `then` once `stop` resolves, in a task of its own.
fn after(stop: impl Future<Output = ()> + Send + 'static, then: impl FnOnce() + Send + 'static) {
    tokio::spawn(async move {
        stop.await;
        then();
    });
}

/// Rewrites Go-style single-dash long flags (`-id cs1`, `-config f`) as `--id cs1`, so the seed's
/// command lines keep working; single-letter flags are left alone.
pub fn go_style_args(args: impl IntoIterator<Item = OsString>, long: &[&str]) -> Vec<OsString> {
    args.into_iter()
        .map(|a| match a.to_str().and_then(|s| s.strip_prefix('-')) {
            Some(name) if !name.starts_with('-') && long.contains(&name) => {
                OsString::from(format!("--{name}"))
            }
            _ => a,
        })
        .collect()
}

/// A control-plane client for the chunkserver whose replication plane is at `addr`.
pub async fn control_client(addr: &str) -> anyhow::Result<ChunkControlClient<Channel>> {
    let endpoint = gfs_host::endpoint(addr)?
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(30));
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the chunkserver at {addr}: {e}"))?;
    Ok(ChunkControlClient::new(channel))
}

/// One chunkserver as `HOST:DATA_PORT:REPL_PORT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerAddr {
    /// Data-plane address `host:port`.
    pub data: String,
    /// Replication/control-plane address `host:port`.
    pub repl: String,
}

/// Parses `HOST:DATA_PORT:REPL_PORT,...`.
pub fn parse_servers(s: &str) -> anyhow::Result<Vec<ServerAddr>> {
    s.split(',')
        .map(|one| {
            let parts: Vec<&str> = one.trim().rsplitn(3, ':').collect();
            let [repl, data, host] = parts[..] else {
                anyhow::bail!("{one:?} is not HOST:DATA_PORT:REPL_PORT");
            };
            let data: u16 = data
                .parse()
                .map_err(|_| anyhow::anyhow!("bad data port in {one:?}"))?;
            let repl: u16 = repl
                .parse()
                .map_err(|_| anyhow::anyhow!("bad replication port in {one:?}"))?;
            Ok(ServerAddr {
                data: format!("{host}:{data}"),
                repl: format!("{host}:{repl}"),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn go_style_flags_become_long_flags() {
        let args = ["x", "-id", "cs1", "-p", "8080", "--id", "-config"].map(OsString::from);
        let got = go_style_args(args, &["id", "config"]);
        assert_eq!(
            got,
            ["x", "--id", "cs1", "-p", "8080", "--id", "--config"].map(OsString::from)
        );
    }

    #[test]
    fn servers_parse() {
        let s = parse_servers("localhost:8080:8081, 10.0.0.1:1:2").unwrap();
        assert_eq!(
            s[0],
            ServerAddr {
                data: "localhost:8080".into(),
                repl: "localhost:8081".into()
            }
        );
        assert_eq!(s[1].repl, "10.0.0.1:2");
        assert!(parse_servers("localhost:8080").is_err());
    }
}
