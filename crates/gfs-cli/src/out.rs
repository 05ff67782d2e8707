//! What the commands print: stdout writes that return errors (a closed pipe is an error, not a
//! panic), one JSON document per `--json` (the serde form of gfs-client's types), and human
//! formatting of times, durations and sizes.

use std::io::Write;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::Context;
use serde::Serialize;

/// Writes `s` to stdout and flushes (an error, e.g. a closed pipe, is returned, not a panic).
pub fn print(s: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(s.as_bytes())
        .and_then(|()| out.flush())
        .context("writing to stdout")
}

/// Prints `v` as one pretty-printed JSON document and a newline.
pub fn print_json(v: &impl Serialize) -> anyhow::Result<()> {
    let mut s = serde_json::to_string_pretty(v).context("encoding JSON")?;
    s.push('\n');
    print(&s)
}

/// `mtime_ms` as RFC 3339 UTC, to the second.
pub fn mtime(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

// TODO(gfs-util): `bytes` and `ago` are copies of gfs_master::status_page's (the CLI no longer
// links gfs-master); use gfs_util::human::{bytes, ago} once the gfs-util crate is merged.

/// A byte count in binary units ("512 B", "1.5 KiB", "3.0 GiB").
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A duration in milliseconds, roughly ("850 ms", "12 s", "3 min", "5 h", "2 d").
pub fn ago(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..120_000 => format!("{} s", ms / 1_000),
        120_000..7_200_000 => format!("{} min", ms / 60_000),
        7_200_000..172_800_000 => format!("{} h", ms / 3_600_000),
        _ => format!("{} d", ms / 86_400_000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_units() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
        assert_eq!(ago(850), "850 ms");
        assert_eq!(ago(12_000), "12 s");
        assert_eq!(ago(180_000), "3 min");
        assert_eq!(ago(5 * 3_600_000), "5 h");
        assert_eq!(ago(2 * 86_400_000), "2 d");
        assert_eq!(mtime(0), "1970-01-01T00:00:00Z");
    }
}
