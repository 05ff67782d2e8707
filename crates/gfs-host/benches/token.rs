//! `cargo bench -p gfs-host`: what a chunk token costs on the data plane's hot path, next to
//! what every request already pays in the same run: the CRC32C of a 4 KiB record (each append
//! checksums its bytes) as this machine's yardstick.
//!
//! - issue: the master's HMAC-SHA256 over one token (once per lease or location);
//! - check: a chunkserver's MAC check and field checks of one token (once per request).

#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;
use std::time::Instant;

use gfs_host::token::{Grant, Rights, TokenKey};

const N: u32 = 200_000;
const RUNS: usize = 5;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Nanoseconds per call of `f`, the median of `RUNS` runs of `N` calls.
fn per_call(mut f: impl FnMut(u32)) -> f64 {
    median(
        (0..RUNS)
            .map(|_| {
                let t = Instant::now();
                for i in 0..N {
                    f(i);
                }
                t.elapsed().as_nanos() as f64 / f64::from(N)
            })
            .collect(),
    )
}

fn main() {
    let key = TokenKey::generate();
    let grant = |i: u32| Grant {
        handle: u64::from(i),
        version: 3,
        rights: Rights::APPEND,
        expires_unix_ms: u64::MAX,
        client: "alice".into(),
    };
    let issue = per_call(|i| {
        black_box(key.issue(&grant(i)));
    });
    let token = key.issue(&grant(7));
    let check = per_call(|_| {
        black_box(
            key.check(black_box(&token), 7, 3, Rights::APPEND, 0)
                .unwrap(),
        );
    });
    let record = vec![0x5au8; 4096];
    let crc = per_call(|_| {
        black_box(crc32c::crc32c(black_box(&record)));
    });
    println!("token issue: {issue:.0} ns");
    println!("token check: {check:.0} ns");
    println!("crc32c of a 4 KiB record (yardstick): {crc:.0} ns");
    println!(
        "a check costs {:.2} x the CRC of a 4 KiB record",
        check / crc
    );
}
