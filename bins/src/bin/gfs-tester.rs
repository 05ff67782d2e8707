//! `gfs-tester`: the seed's end-to-end check against three running chunkservers.
//!
//! Creates a chunk on every server, grants the lease to the first with the others as
//! secondaries (servers run without a master, so no chunk tokens), appends records through the data plane, waits until every replica has committed
//! them, and reads every record back from every replica, comparing byte for byte. Exits non-zero
//! with a clear message on any difference.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Parser;
use futures::StreamExt;
use gfs_bins::{ServerAddr, control_client, parse_servers};
use gfs_dataplane::{ChunkRef, ClientConfig, DataClient};
use gfs_proto::v1::{CreateChunkRequest, GrantLeaseRequest, ReportChunksRequest};

/// End-to-end check of a three-replica append path.
#[derive(Parser, Debug, serde::Serialize)]
#[command(name = "gfs-tester", version)]
struct Args {
    /// Chunkservers as HOST:DATA_PORT:REPL_PORT, comma-separated; the first is the primary.
    #[arg(
        long,
        default_value = "localhost:8080:8081,localhost:8082:8083,localhost:8084:8085"
    )]
    servers: String,
    /// Number of records to append.
    #[arg(long, default_value_t = 100)]
    records: usize,
    /// Largest record, in bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    max_record: usize,
    /// Appends in flight at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Chunk handle to create (default: a random one).
    #[arg(long)]
    handle: Option<u64>,
    #[command(flatten)]
    #[serde(skip)]
    common: gfs_bins::CommonArgs,
}

/// The bytes of record `i`: its length and content follow from `seed` and `i`.
fn record(seed: u64, i: usize, max: usize) -> Bytes {
    let mut x = seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let len = 1 + (next() as usize) % max.max(1);
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        v.extend_from_slice(&next().to_le_bytes());
    }
    v.truncate(len);
    Bytes::from(v)
}

async fn run(args: Args) -> anyhow::Result<()> {
    if args.common.printed(&args)? {
        return Ok(());
    }
    let servers: Vec<ServerAddr> = parse_servers(&args.servers)?;
    if servers.len() < 2 {
        bail!("need at least two servers, got {}", servers.len());
    }
    let handle = args.handle.unwrap_or_else(rand::random::<u64>);
    let version = 1;
    let seed: u64 = rand::random();
    println!("gfs-tester: chunk {handle} on {} servers", servers.len());

    let mut controls = Vec::new();
    for s in &servers {
        let mut c = control_client(&s.repl).await?;
        c.create_chunk(CreateChunkRequest { handle, version })
            .await
            .with_context(|| format!("creating chunk {handle} on {}", s.repl))?;
        controls.push(c);
    }
    let expires_unix_ms = gfs_util::time::now_ms() + 60_000;
    controls[0]
        .grant_lease(GrantLeaseRequest {
            handle,
            version,
            secondaries: servers[1..].iter().map(|s| s.repl.clone()).collect(),
            expires_unix_ms,
        })
        .await
        .with_context(|| format!("granting the lease to {}", servers[0].repl))?;

    let primary = DataClient::connect(&servers[0].data, ClientConfig::default())
        .await
        .with_context(|| format!("connecting to the primary at {}", servers[0].data))?;
    let started = Instant::now();
    let max = args.max_record;
    let results: Vec<anyhow::Result<(usize, u64)>> = futures::stream::iter(0..args.records)
        .map(|i| {
            let primary = primary.clone();
            async move {
                let data = record(seed, i, max);
                // One op id for every attempt: a retry after a lost reply must not append twice.
                let op: u64 = rand::random();
                let deadline = Instant::now() + Duration::from_secs(30);
                let mut attempt = 0u32;
                loop {
                    match primary.append(&ChunkRef::untokened(handle, version), op, data.clone()).await {
                        Ok(off) => return Ok((i, off)),
                        Err(e) if e.is_retriable() && Instant::now() < deadline => {
                            attempt += 1;
                            tracing::warn!(record = i, attempt, error = %e, "append failed; retrying");
                            tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt.min(25)))).await;
                        }
                        Err(e) => {
                            return Err(anyhow::Error::new(e))
                                .with_context(|| format!("append of record {i}"));
                        }
                    }
                }
            }
        })
        .buffer_unordered(args.concurrency.max(1))
        .collect()
        .await;
    let mut placed = Vec::with_capacity(results.len());
    for r in results {
        placed.push(r?);
    }
    let elapsed = started.elapsed();
    placed.sort_by_key(|(_, off)| *off);
    let mut end = 0;
    for (i, off) in &placed {
        if *off != end {
            bail!(
                "record {i} landed at offset {off}, expected {end}: records overlap or leave a hole"
            );
        }
        end += record(seed, *i, max).len() as u64;
    }
    println!(
        "appended {} records ({end} bytes) in {:.2?}",
        placed.len(),
        elapsed
    );

    let placed = Arc::new(placed);
    for (s, c) in servers.iter().zip(controls.iter_mut()) {
        // A replica outside the quorum may commit the last records a moment later.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let report = c
                .report_chunks(ReportChunksRequest::default())
                .await?
                .into_inner();
            let len = report
                .chunks
                .iter()
                .find(|x| x.handle == handle)
                .map(|x| x.committed_length)
                .unwrap_or(0);
            if len == end {
                break;
            }
            if Instant::now() > deadline {
                bail!("replica {} has {len} committed bytes of {end}", s.repl);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let client = DataClient::connect(&s.data, ClientConfig::default())
            .await
            .with_context(|| format!("connecting to {}", s.data))?;
        for (i, off) in placed.iter() {
            let want = record(seed, *i, max);
            let got = client
                .read(
                    &ChunkRef::untokened(handle, version),
                    *off,
                    want.len() as u32,
                )
                .await
                .with_context(|| format!("reading record {i} from {}", s.data))?;
            if got != want {
                bail!(
                    "replica {} returned different bytes for record {i} at offset {off}",
                    s.data
                );
            }
        }
        println!("replica {}: {} records identical", s.data, placed.len());
    }
    println!("gfs-tester: OK");
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    gfs_bins::main_of("gfs-tester", run(Args::parse())).await
}
