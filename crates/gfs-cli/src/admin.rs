//! `gfs admin report`, `gfs fsck` and `gfs admin decommission`: the master's Admin service.

use std::time::Duration;

use anyhow::{Context, bail};
use gfs_client::{Client, ServerState};

use crate::out::{ago, bytes, mtime, print, print_json};

/// `gfs admin report`: the cluster summary, a table of chunkservers and the newest 20 events
/// (`--json`: the whole [`gfs_client::ClusterReport`]).
pub async fn report(client: &Client, json: bool) -> anyhow::Result<()> {
    let r = client.report().await?;
    if json {
        return print_json(&r);
    }
    let alive = r
        .servers
        .iter()
        .filter(|s| s.state == ServerState::Alive)
        .count();
    let pct = r.used_bytes as f64 * 100.0 / r.capacity_bytes.max(1) as f64;
    let mut out = String::new();
    if r.insecure {
        out += "TLS is off (insecure = true): every gRPC plane is open to whoever reaches it\n";
    }
    if r.warming_up {
        out += "the master has just started: chunkservers are still reporting\n";
    }
    out += &format!(
        "chunkservers: {alive} of {} alive    capacity {}    used {} ({pct:.1}%)\n\
         files {}    directories {}    chunks {} (goal {} replicas)\n\
         under-replicated {}    lost {}    stale replicas {}\n\
         waiting for a copy {}    copying {}    in the trash {}    master up {}\n\n",
        r.servers.len(),
        bytes(r.capacity_bytes),
        bytes(r.used_bytes),
        r.files,
        r.directories,
        r.chunks,
        r.replication_goal,
        r.under_replicated,
        r.lost,
        r.stale_replicas,
        r.repair_queue,
        r.copies_in_flight,
        r.trash_entries,
        ago(r.master_uptime_ms),
    );
    if !r.masters.is_empty() {
        out += &masters_table(&r.masters);
        out += "\n";
    }
    out += &format!(
        "{:<10} {:<22} {:<8} {:<10} {:>10} {:>8} {:>11} {:>11} {:>9}\n",
        "ID", "ADDRESS", "RACK", "STATE", "HEARTBEAT", "CHUNKS", "USED", "FREE", "COPIES"
    );
    for s in &r.servers {
        out += &format!(
            "{:<10} {:<22} {:<8} {:<10} {:>10} {:>8} {:>11} {:>11} {:>9}\n",
            s.id,
            s.data_addr,
            if s.rack.is_empty() { "-" } else { &s.rack },
            s.state,
            ago(s.last_heartbeat_ms_ago),
            s.chunks,
            bytes(s.used_bytes),
            bytes(s.capacity_bytes.saturating_sub(s.used_bytes)),
            format!("{}/{}", s.copies_in, s.copies_out),
        );
    }
    if !r.events.is_empty() {
        out += "\nrecent events (newest first):\n";
        for e in r.events.iter().take(20) {
            out += &format!("  {}  {:<12} {}\n", mtime(e.unix_ms), e.kind, e.text);
        }
    }
    print(&out)
}

/// A table of the group of masters: id, address, role, term, log index, lag.
fn masters_table(masters: &[gfs_client::MasterStatus]) -> String {
    let mut out = format!(
        "{:<4} {:<22} {:<9} {:>6} {:>12} {:>8}\n",
        "ID", "MASTER", "ROLE", "TERM", "LOG INDEX", "LAG"
    );
    for m in masters {
        out += &format!(
            "{:<4} {:<22} {:<9} {:>6} {:>12} {:>8}\n",
            m.id,
            m.addr,
            if m.leader { "leader" } else { "follower" },
            m.term,
            m.matched_index,
            m.lag,
        );
    }
    out
}

/// `gfs admin add-master` and `remove-master`: the group once changed.
pub fn print_masters(masters: &[gfs_client::MasterStatus]) -> anyhow::Result<()> {
    print(&masters_table(masters))
}

/// `gfs fsck PATH`: each unhealthy chunk on a line, then the verdict (`--json`: the
/// [`gfs_client::FsckReport`]); fails when anything is unhealthy.
pub async fn fsck(client: &Client, path: &str, json: bool) -> anyhow::Result<()> {
    let r = client.fsck(path).await?;
    // Listed or not: the master lists what fits in one reply and counts the rest.
    let unhealthy = r.unhealthy_files;
    if json {
        print_json(&r)?;
    } else {
        let mut out = String::new();
        for f in &r.unhealthy {
            for c in &f.chunks {
                let what = if c.lost {
                    "LOST".to_string()
                } else if c.current < r.replication_goal {
                    format!("UNDER-REPLICATED {}/{}", c.current, r.replication_goal)
                } else {
                    "replicated".to_string()
                };
                out += &format!(
                    "{} chunk {} (handle {}): {what}{}{}\n",
                    f.path,
                    c.index,
                    c.handle,
                    if c.stale > 0 {
                        format!(", {} stale", c.stale)
                    } else {
                        String::new()
                    },
                    if c.corrupt > 0 {
                        format!(", {} corrupt", c.corrupt)
                    } else {
                        String::new()
                    },
                );
            }
            if f.unlisted_chunks > 0 {
                out += &format!(
                    "{}: {} more bad chunks not listed\n",
                    f.path, f.unlisted_chunks
                );
            }
        }
        if r.unlisted_files > 0 {
            out += &format!(
                "{} more unhealthy files not listed (run fsck on a narrower path)\n",
                r.unlisted_files
            );
        }
        out += &format!(
            "{path}: {} files, {} chunks, {unhealthy} unhealthy files: {}\n",
            r.files,
            r.chunks,
            if unhealthy == 0 {
                "HEALTHY"
            } else {
                "UNHEALTHY"
            }
        );
        print(&out)?;
    }
    if unhealthy > 0 {
        bail!(
            "{unhealthy} of {} files under {path} are unhealthy",
            r.files
        );
    }
    Ok(())
}

/// `gfs admin decommission SERVER`: starts draining it and, with `wait`, prints progress until
/// it is drained.
pub async fn decommission(client: &Client, server: &str, wait: bool) -> anyhow::Result<()> {
    let mut remaining = client.decommission(server, false).await?;
    print(&format!(
        "{server}: draining; {remaining} chunks still need a copy elsewhere\n"
    ))?;
    while wait && remaining > 0 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = client.decommission(server, false).await?;
        if now != remaining {
            print(&format!(
                "{server}: {now} chunks still need a copy elsewhere\n"
            ))?;
        }
        remaining = now;
    }
    if remaining == 0 {
        print(&format!("{server}: drained; safe to stop\n"))?;
    }
    Ok(())
}

/// Bound on a health answer.
const HEALTH_MAX: usize = 64 * 1024;
/// Bound on the whole health exchange.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

/// `gfs health ADDR`: `GET /health` over plain HTTP; prints the body; fails unless 200.
pub async fn health(addr: &str) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        s.write_all(format!("GET /health HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut answer = Vec::new();
        (&mut s)
            .take(HEALTH_MAX as u64)
            .read_to_end(&mut answer)
            .await?;
        anyhow::Ok(answer)
    };
    let answer = tokio::time::timeout(HEALTH_TIMEOUT, exchange)
        .await
        .map_err(|_| anyhow::anyhow!("{addr}: no answer within {HEALTH_TIMEOUT:?}"))??;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("{addr}: not an HTTP answer"))?;
    print(body)?;
    if status != "200" {
        anyhow::bail!("{addr}: /health answered {status}: {}", body.trim());
    }
    Ok(())
}
