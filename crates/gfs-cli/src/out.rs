//! What the commands print: stdout writes that return errors (a closed pipe is an error, not a
//! panic), one JSON document per `--json` (the serde form of gfs-client's types), and human
//! formatting of times, durations and sizes.

use std::io::Write;

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
    humantime::format_rfc3339_seconds(gfs_util::time::from_unix_ms(ms)).to_string()
}

pub use gfs_util::human::{ago, bytes};

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
