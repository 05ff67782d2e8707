//! gfs-host: what a gfs-rs server or client runs on, as one value ([`Host`]): the network
//! ([`Net`]), the disk ([`gfs_util::disk::Disk`]), the wall clock ([`gfs_util::time::Clock`])
//! and where blocking work runs ([`blocking`]).
//!
//! In production every part is the operating system's ([`Host::os`]) and costs nothing: a
//! [`Conn`] is a `TcpStream` underneath, a [`Listener`] a `TcpListener`, gRPC channels are
//! tonic's own. A deterministic simulator (gfs-sim) gives each simulated host its own: streams
//! of a simulated network, a simulated disk that loses what was not synced when the host
//! crashes, a skewable clock, and no threads (blocking work runs inline, so that one seed gives
//! one order of events).
//!
//! Two security pieces live here too, as every role needs them and they sit on the network
//! seam: [`tls`] (mutual TLS with roles on every gRPC plane) and [`token`] (the chunk tokens
//! that guard the data plane).
//!
//! Invariant: no gfs-rs logic here, only the seams; the crates above take a `Host` (or the one
//! part they need) and never reach for `tokio::net`, `SystemTime::now` or `spawn_blocking`.

pub mod data_tls;
pub mod leader;
mod net;
pub mod tls;
pub mod token;

use std::sync::Arc;

use gfs_util::disk::{Disk, OsDisk};
use gfs_util::time::Clock;

pub use leader::{
    GROUP_CONNECT_TIMEOUT, GROUP_KEEPALIVE_INTERVAL, GROUP_KEEPALIVE_TIMEOUT, LEADER_HEADER,
    Masters, STALE_HEADER, SUSPECT_FOR, master_list, redirected,
};
pub use net::{
    Accept, Conn, ConnRead, ConnWrite, Io, KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT, Listener, Net,
    Network, endpoint,
};

/// The network, disk and clock a server runs on.
#[derive(Clone, Debug)]
pub struct Host {
    /// Sockets: the operating system's or a simulator's.
    pub net: Net,
    /// Files: the operating system's or a simulated disk.
    pub disk: Arc<dyn Disk>,
    /// Wall-clock time.
    pub clock: Clock,
}

impl Host {
    /// The operating system's network (over mutual TLS when `tls` names certificate files),
    /// disk and clock.
    pub fn os_with(tls: &tls::TlsSettings) -> Result<Host, tls::TlsError> {
        let mut host = Host::os();
        if let Some(identity) = tls.load()? {
            host.net = host.net.with_tls(identity);
        }
        Ok(host)
    }

    /// The operating system's network, disk and clock.
    pub fn os() -> Host {
        Host {
            net: Net::os(),
            disk: Arc::new(OsDisk),
            clock: Clock::system(),
        }
    }
}

impl Default for Host {
    fn default() -> Self {
        Host::os()
    }
}

/// Runs `f`, blocking work on `disk`'s files: on tokio's blocking threads, or inline on a disk
/// without threads (a simulated one), where every operation must come in the seed's order.
pub async fn blocking<R: Send + 'static>(
    disk: &dyn Disk,
    f: impl FnOnce() -> R + Send + 'static,
) -> R {
    if !disk.threads() {
        return f();
    }
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Only a runtime shutting down cancels blocking work.
        Err(e) => panic!("blocking work cancelled: {e}"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use gfs_util::disk::sim::SimDisk;

    #[tokio::test]
    async fn blocking_work_runs_inline_on_a_disk_without_threads() {
        let here = std::thread::current().id();
        let sim = SimDisk::new(1);
        assert_eq!(
            blocking(&sim, move || std::thread::current().id()).await,
            here
        );
        let os = blocking(&OsDisk, move || std::thread::current().id()).await;
        assert_ne!(os, here);
    }

    #[test]
    fn the_default_host_is_the_operating_systems() {
        let h = Host::default();
        assert!(!h.net.is_simulated() && h.net.tls().is_none() && h.disk.threads());
    }
}
