//! Human-friendly sizes and durations in config files: `128MiB`, `1GB`, `6h`, `1d`.

use std::fmt;

/// A byte count parsed from `"256MiB"`, `"1GB"`, `"1048576"` or a bare integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

/// 1 MiB.
pub const MIB: u64 = 1024 * 1024;

impl ByteSize {
    /// Parses a size; units are B, KB/MB/GB/TB (powers of 1000) and KiB/MiB/GiB/TiB (powers of 1024).
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let value: f64 = num
            .parse()
            .map_err(|_| format!("`{text}` is not a size; write e.g. `128MiB` or `1GB`"))?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            "tb" => 1_000_000_000_000,
            "kib" => 1 << 10,
            "mib" => 1 << 20,
            "gib" => 1 << 30,
            "tib" => 1 << 40,
            other => {
                return Err(format!(
                    "unknown size unit `{other}` in `{text}`; use B, KB, MB, GB, KiB, MiB or GiB"
                ));
            }
        };
        Ok(ByteSize((value * mult as f64).round() as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0 as f64;
        if self.0 >= 1 << 30 {
            write!(f, "{:.2} GiB", b / (1u64 << 30) as f64)
        } else if self.0 >= 1 << 20 {
            write!(f, "{:.1} MiB", b / (1u64 << 20) as f64)
        } else if self.0 >= 1 << 10 {
            write!(f, "{:.1} KiB", b / 1024.0)
        } else {
            write!(f, "{} B", self.0)
        }
    }
}

impl<'de> serde::Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(ByteSize(n)),
            Raw::Text(s) => ByteSize::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

impl serde::Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

/// A span of time parsed from `"90s"`, `"15m"`, `"6h"`, `"1d"`, `"1w"`; kept in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span {
    /// Length in microseconds.
    pub micros: i64,
}

impl Span {
    /// Parses a span; units: us, ms, s, m, h, d, w.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let value: i64 = num
            .parse()
            .map_err(|_| format!("`{text}` is not a duration; write e.g. `6h` or `1d`"))?;
        let mult: i64 = match unit.trim() {
            "us" => 1,
            "ms" => 1_000,
            "s" => 1_000_000,
            "m" | "min" => 60_000_000,
            "h" => 3_600_000_000,
            "d" => 86_400_000_000,
            "w" => 7 * 86_400_000_000,
            other => {
                return Err(format!(
                    "unknown duration unit `{other}` in `{text}`; use s, m, h, d or w"
                ));
            }
        };
        if value <= 0 {
            return Err(format!("duration `{text}` must be positive"));
        }
        value
            .checked_mul(mult)
            .map(|micros| Span { micros })
            .ok_or_else(|| format!("duration `{text}` is too large"))
    }
}

impl<'de> serde::Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Span::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(ByteSize::parse("128MiB").unwrap().0, 128 * MIB);
        assert_eq!(ByteSize::parse("1GB").unwrap().0, 1_000_000_000);
        assert_eq!(ByteSize::parse("42").unwrap().0, 42);
        assert!(ByteSize::parse("12 parsecs").is_err());
    }

    #[test]
    fn spans() {
        assert_eq!(Span::parse("1d").unwrap().micros, 86_400_000_000);
        assert_eq!(Span::parse("90s").unwrap().micros, 90_000_000);
        assert!(Span::parse("0h").is_err());
        assert!(Span::parse("3 fortnights").is_err());
    }
}
