//! Helpers shared by the gfs-rs binaries: logging, signals, Go-style flags, seed addresses.

use std::ffi::OsString;

use gfs_proto::v1::chunk_control_client::ChunkControlClient;
use tonic::transport::Channel;

/// Logs to stderr; `RUST_LOG` sets the filter (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
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
            eprintln!("{name}: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Resolves when the process receives SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        _ = term => tracing::info!("SIGTERM: shutting down"),
    }
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
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
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
