//! Numbers for people: byte counts in binary units ("1.5 GiB") and durations roughly ("3 min"),
//! as the status page and the CLI's report show them; duration parsing for flags ("60s"); and
//! text cut to a byte budget without splitting a character ([`cut`]).
//!
//! [`bytes`] and [`ago`] are for reading, not for parsing back (they round); a [`Size`]
//! (`crate::size`) prints exactly.
//!
//! [`Size`]: crate::Size

use std::fmt;
use std::time::Duration;

/// `s` cut to at most `max` bytes at a char boundary (names and messages put in bounded
/// fields).
pub fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Bytes in binary units with one decimal ("512 B", "1.5 KiB", "3.0 GiB").
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

/// Why a string is not a duration; its message quotes the string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseDurationError(String);

impl fmt::Display for ParseDurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseDurationError {}

/// Parses a duration as flags take it: humantime's syntax ("60s", "500ms", "2m", "72h",
/// "1h 30m", "3days"), or a bare number of seconds ("60"). Spaces around it are ignored.
pub fn parse_duration(s: &str) -> Result<Duration, ParseDurationError> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse()
            .map(Duration::from_secs)
            .map_err(|_| ParseDurationError(format!("{s:?} is too large")));
    }
    humantime::parse_duration(s)
        .map_err(|e| ParseDurationError(format!("{s:?} is not a duration (e.g. 60s, 500ms): {e}")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn cut_keeps_whole_characters_within_the_budget() {
        assert_eq!(cut("abc", 5), "abc");
        assert_eq!(cut("abcdef", 3), "abc");
        // "é" is two bytes: a cut inside it backs off to before it.
        assert_eq!(cut("aé", 2), "a");
        assert_eq!(cut("éé", 3), "é");
        assert_eq!(cut("", 0), "");
    }

    #[test]
    fn bytes_are_binary_units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1024), "1.0 KiB");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
        assert_eq!(bytes(2048 << 50), "2048.0 PiB");
    }

    #[test]
    fn durations_are_rough() {
        assert_eq!(ago(0), "0 ms");
        assert_eq!(ago(850), "850 ms");
        assert_eq!(ago(12_500), "12 s");
        assert_eq!(ago(119_999), "119 s");
        assert_eq!(ago(120_000), "2 min");
        assert_eq!(ago(7_200_000), "2 h");
        assert_eq!(ago(3 * 86_400_000), "3 d");
        assert_eq!(ago(u64::MAX), "213503982334 d");
    }

    #[test]
    fn durations_parse_as_humantime_or_seconds() {
        let ok = |s: &str| parse_duration(s).unwrap();
        // What the master's flags took before (digits and one of ms, s, m, h, or none).
        assert_eq!(ok("60s"), Duration::from_secs(60));
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("2m"), Duration::from_secs(120));
        assert_eq!(ok("72h"), Duration::from_secs(72 * 3600));
        assert_eq!(ok("60"), Duration::from_secs(60));
        assert_eq!(ok(" 3s "), Duration::from_secs(3));
        assert_eq!(ok("0"), Duration::ZERO);
        // And humantime's.
        assert_eq!(ok("1h 30m"), Duration::from_secs(5400));
        assert_eq!(ok("3days"), Duration::from_secs(3 * 86_400));
        assert_eq!(ok("200us"), Duration::from_micros(200));
    }

    #[test]
    fn bad_durations_say_why() {
        for s in ["", "s", "5 parsecs", "-5s", "1.5.5s"] {
            let e = parse_duration(s).unwrap_err().to_string();
            assert!(e.contains("is not a duration"), "{s}: {e}");
        }
        let e = parse_duration("99999999999999999999").unwrap_err();
        assert!(e.to_string().contains("too large"), "{e}");
    }
}
