//! [`Size`]: a byte count as configs and flags write it, "64MiB", "512 KiB", "1G" or plain
//! bytes.
//!
//! Parsing ([`FromStr`]): digits, optional spaces, an optional unit, case-insensitive. Units are
//! binary whatever their spelling: `k`, `kb`, `kib` are 1024; then `m`, `g`, `t`, `p`, `e`
//! likewise; none or `b` is bytes. No fractions ("1.5GiB" is refused) and nothing that
//! overflows 64 bits. Printing ([`Display`](fmt::Display)) uses the largest unit the value is an
//! exact multiple of: 64 MiB prints "64MiB", 1536 prints "1536", so what prints parses back to
//! the same value. Serde reads an integer or such a string; it writes a string with a unit, or
//! an integer when the value has none (zero, or not a multiple of 1 KiB).

use std::fmt;
use std::str::FromStr;

/// A number of bytes, parsed from and printed as "64MiB" (see the module doc).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Size(pub u64);

/// The units, largest first: suffix and power of two.
const UNITS: [(&str, u32); 6] = [
    ("EiB", 60),
    ("PiB", 50),
    ("TiB", 40),
    ("GiB", 30),
    ("MiB", 20),
    ("KiB", 10),
];

impl Size {
    /// `n` KiB.
    pub const fn kib(n: u64) -> Size {
        Size(n * (1 << 10))
    }

    /// `n` MiB.
    pub const fn mib(n: u64) -> Size {
        Size(n * (1 << 20))
    }

    /// `n` GiB.
    pub const fn gib(n: u64) -> Size {
        Size(n * (1 << 30))
    }

    /// The number of bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }

    /// The largest unit `self` is a whole number of, and that number; `None` for zero and for
    /// values that are not a multiple of 1 KiB.
    fn in_unit(self) -> Option<(u64, &'static str)> {
        if self.0 == 0 {
            return None;
        }
        UNITS
            .iter()
            .find(|(_, shift)| self.0.trailing_zeros() >= *shift)
            .map(|(unit, shift)| (self.0 >> shift, *unit))
    }
}

impl From<u64> for Size {
    fn from(n: u64) -> Size {
        Size(n)
    }
}

impl From<Size> for u64 {
    fn from(s: Size) -> u64 {
        s.0
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.in_unit() {
            Some((n, unit)) => f.pad(&format!("{n}{unit}")),
            None => f.pad(&self.0.to_string()),
        }
    }
}

/// Why a string is not a [`Size`]; its message quotes the string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseSizeError(String);

impl fmt::Display for ParseSizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseSizeError {}

impl FromStr for Size {
    type Err = ParseSizeError;

    /// Parses "64MiB", "512 KiB", "1G", "4096" (see the module doc).
    fn from_str(s: &str) -> Result<Size, ParseSizeError> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        if num.is_empty() {
            return Err(ParseSizeError(format!(
                "{s:?} is not a size (expected e.g. 4096, \"512KiB\", \"64MiB\")"
            )));
        }
        let shift = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 0,
            "k" | "kb" | "kib" => 10,
            "m" | "mb" | "mib" => 20,
            "g" | "gb" | "gib" => 30,
            "t" | "tb" | "tib" => 40,
            "p" | "pb" | "pib" => 50,
            "e" | "eb" | "eib" => 60,
            other => {
                return Err(ParseSizeError(format!(
                    "unknown size unit {other:?} in {s:?}"
                )));
            }
        };
        let too_large = || ParseSizeError(format!("{s:?} is too large"));
        // Only digits: the number fails to parse only when it overflows.
        let n: u64 = num.parse().map_err(|_| too_large())?;
        n.checked_mul(1 << shift).map(Size).ok_or_else(too_large)
    }
}

/// Serde adapter for a byte count kept as a `u64` field: read from bytes or a string with a unit
/// ("64MiB"), written as [`Size`] writes (`#[serde(with = "gfs_util::size::as_size")]`).
pub mod as_size {
    use super::Size;

    /// Writes `bytes` as a [`Size`].
    pub fn serialize<S: serde::Serializer>(bytes: &u64, s: S) -> Result<S::Ok, S::Error> {
        serde::Serialize::serialize(&Size(*bytes), s)
    }

    /// Reads a [`Size`] and keeps its bytes.
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        <Size as serde::Deserialize>::deserialize(d).map(Size::bytes)
    }
}

impl serde::Serialize for Size {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.in_unit() {
            Some(_) => s.collect_str(self),
            None => s.serialize_u64(self.0),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Size, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Size;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size: bytes, or a string with a unit such as \"64MiB\"")
            }

            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Size, E> {
                Ok(Size(n))
            }

            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Size, E> {
                u64::try_from(n)
                    .map(Size)
                    .map_err(|_| E::custom(format!("{n} is negative")))
            }

            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Size, E> {
                s.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn parse(s: &str) -> Result<u64, String> {
        s.parse::<Size>()
            .map(Size::bytes)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse("4096"), Ok(4096));
        assert_eq!(parse("0"), Ok(0));
        assert_eq!(parse("64MiB"), Ok(64 << 20));
        assert_eq!(parse("512 KiB"), Ok(512 << 10));
        assert_eq!(parse("  1G "), Ok(1 << 30));
        assert_eq!(parse("1gb"), Ok(1 << 30));
        assert_eq!(parse("7b"), Ok(7));
        assert_eq!(parse("2TiB"), Ok(2 << 40));
        assert_eq!(parse("3p"), Ok(3 << 50));
        assert_eq!(parse("15EiB"), Ok(15 << 60));
    }

    #[test]
    fn bad_sizes_say_why() {
        assert_eq!(
            parse("12 parsecs"),
            Err("unknown size unit \"parsecs\" in \"12 parsecs\"".into())
        );
        assert_eq!(
            parse("MiB"),
            Err("\"MiB\" is not a size (expected e.g. 4096, \"512KiB\", \"64MiB\")".into())
        );
        assert!(parse("").unwrap_err().contains("is not a size"));
        assert!(parse("-5").unwrap_err().contains("is not a size"));
        assert!(parse("1.5GiB").unwrap_err().contains("unknown size unit"));
        assert!(parse("64 Mi B").unwrap_err().contains("unknown size unit"));
    }

    #[test]
    fn overflow_is_too_large() {
        assert_eq!(parse(&u64::MAX.to_string()), Ok(u64::MAX));
        assert_eq!(
            parse("18446744073709551616"),
            Err("\"18446744073709551616\" is too large".into())
        );
        assert_eq!(parse("16EiB"), Err("\"16EiB\" is too large".into()));
        assert_eq!(
            parse("17179869184GiB"),
            Err("\"17179869184GiB\" is too large".into())
        );
        assert_eq!(parse("17179869183GiB"), Ok(17179869183 << 30));
    }

    #[test]
    fn display_uses_the_largest_exact_unit_and_parses_back() {
        for (n, shown) in [
            (0, "0"),
            (1000, "1000"),
            (1536, "1536"),
            (1 << 10, "1KiB"),
            (3 << 10, "3KiB"),
            (1536 << 10, "1536KiB"),
            (64 << 20, "64MiB"),
            (1 << 30, "1GiB"),
            (100 << 30, "100GiB"),
            (5 << 40, "5TiB"),
            (1 << 50, "1PiB"),
            (8 << 60, "8EiB"),
            (u64::MAX, "18446744073709551615"),
        ] {
            assert_eq!(Size(n).to_string(), shown);
            assert_eq!(parse(shown), Ok(n), "{shown}");
        }
        assert_eq!(format!("{:>6}", Size::mib(1)), "  1MiB");
    }

    #[test]
    fn constructors_and_conversions() {
        assert_eq!(Size::kib(64), Size(64 << 10));
        assert_eq!(Size::mib(64).bytes(), 64 << 20);
        assert_eq!(Size::gib(100), Size::from(100u64 << 30));
        assert_eq!(u64::from(Size(5)), 5);
    }

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Cfg {
        size: Size,
    }

    #[test]
    fn serde_reads_integers_and_strings_and_writes_units() {
        let read = |text: &str| toml::from_str::<Cfg>(text).map(|c| c.size.bytes());
        assert_eq!(read("size = 4096").unwrap(), 4096);
        assert_eq!(read("size = \"64MiB\"").unwrap(), 64 << 20);
        assert_eq!(read("size = \"1000\"").unwrap(), 1000);
        let e = read("size = \"3 bananas\"").unwrap_err().to_string();
        assert!(e.contains("bananas"), "{e}");
        let e = read("size = -1").unwrap_err().to_string();
        assert!(e.contains("-1 is negative"), "{e}");
        let e = read("size = 1.5").unwrap_err().to_string();
        assert!(e.contains("a size"), "{e}");

        let write = |n: u64| toml::to_string(&Cfg { size: Size(n) }).unwrap();
        assert_eq!(write(64 << 20), "size = \"64MiB\"\n");
        assert_eq!(write(1000), "size = 1000\n");
        assert_eq!(write(0), "size = 0\n");
        for n in [0, 1000, 4096, 64 << 20, 3 << 40] {
            assert_eq!(read(&write(n)).unwrap(), n);
        }
    }
}
