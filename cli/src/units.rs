//! The size and duration grammar of every flag and configuration key.
//!
//! **Sizes** are bytes with an optional binary multiplier — storage sizes
//! are powers of two, so `k`, `K`, `KB` and `KiB` are all 1024:
//! `512`, `512B`, `512b`, `4k`, `4KiB`, `1.5G`, `1T`. Parsing is
//! [`parse_size`]'s job (the `parse-size` crate in binary mode); a
//! fraction of a unit is rounded to a whole byte.
//!
//! **Durations** are a bare number of seconds (`3`, `0.5`) or
//! [`humantime`] spans (`500ms`, `1s`, `2m`, `1h30m`, `1h 30m`).
//!
//! Both are accepted wherever a size or duration is asked for: as clap
//! value parsers ([`parse_size`], [`parse_duration`] and their typed
//! variants) and as TOML values, string or integer ([`Size`],
//! [`Duration`] with serde).

use std::fmt;
use std::str::FromStr;

/// Parses a size in bytes (see the module doc).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty size (e.g. 4k, 64MiB, 1.5G)".into());
    }
    if t.starts_with('-') {
        return Err(format!("`{s}` is negative: sizes are byte counts"));
    }
    parse_size::Config::new()
        .with_binary()
        .parse_size(t)
        .map_err(|e| format!("`{s}` is not a size ({e}; e.g. 512, 4k, 64MiB, 1.5G)"))
}

/// [`parse_size`] for a value that must fit in 32 bits (a transfer length).
pub fn parse_size_u32(s: &str) -> Result<u32, String> {
    let n = parse_size(s)?;
    u32::try_from(n).map_err(|_| format!("`{s}` is too large (at most 4GiB - 1)"))
}

/// [`parse_size`] that refuses zero.
pub fn parse_size_nonzero(s: &str) -> Result<u64, String> {
    match parse_size(s)? {
        0 => Err(format!("`{s}` must be more than zero")),
        n => Ok(n),
    }
}

/// A logical block size: a power of two from 512 to 65536, in the size
/// grammar (`512`, `4k`, `4KiB`).
pub fn parse_block_size(s: &str) -> Result<u32, String> {
    let n = parse_size(s)?;
    if n.is_power_of_two() && (512..=65536).contains(&n) {
        Ok(n as u32)
    } else {
        Err(format!(
            "block size `{s}` is not a power of two from 512 to 64KiB"
        ))
    }
}

/// Parses a duration (see the module doc).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration (e.g. 3, 500ms, 2m, 1h30m)".into());
    }
    if t.starts_with('-') {
        return Err(format!("`{s}` is negative"));
    }
    if t.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let secs: f64 = t
            .parse()
            .map_err(|_| format!("`{s}` is not a duration (e.g. 3, 500ms, 2m, 1h30m)"))?;
        return std::time::Duration::try_from_secs_f64(secs)
            .map_err(|_| format!("`{s}` is too long a duration"));
    }
    humantime::parse_duration(t)
        .map_err(|e| format!("`{s}` is not a duration ({e}; e.g. 3, 500ms, 2m, 1h30m)"))
}

/// [`parse_duration`] that refuses zero.
pub fn parse_duration_nonzero(s: &str) -> Result<std::time::Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err(format!("`{s}` must be more than zero")),
        d => Ok(d),
    }
}

/// Formats a byte count with the largest exact binary unit: `64MiB`, `512B`.
pub fn format_size(n: u64) -> String {
    for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if n >= 1 << shift && n % (1 << shift) == 0 {
            return format!("{}{unit}", n >> shift);
        }
    }
    format!("{n}B")
}

/// A size for configuration files: a TOML integer (bytes) or a string in
/// the size grammar.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Size(pub u64);

impl FromStr for Size {
    type Err = String;
    fn from_str(s: &str) -> Result<Size, String> {
        parse_size(s).map(Size)
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_size(self.0))
    }
}

impl<'de> serde::Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Size, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size: bytes as an integer, or a string such as \"4k\" or \"1.5G\"")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v)
                    .map(Size)
                    .map_err(|_| E::custom(format!("size {v} is negative")))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Size, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A duration for configuration files: a TOML number (seconds) or a
/// string in the duration grammar.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub std::time::Duration);

impl FromStr for Duration {
    type Err = String;
    fn from_str(s: &str) -> Result<Duration, String> {
        parse_duration(s).map(Duration)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> serde::Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a duration: seconds as a number, or a string such as \"500ms\" or \"2m\"",
                )
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Duration, E> {
                Ok(Duration(std::time::Duration::from_secs(v)))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Duration, E> {
                u64::try_from(v)
                    .map(|v| Duration(std::time::Duration::from_secs(v)))
                    .map_err(|_| E::custom(format!("duration {v} is negative")))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Duration, E> {
                std::time::Duration::try_from_secs_f64(v)
                    .map(Duration)
                    .map_err(|_| E::custom(format!("duration {v} is out of range")))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Duration, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;
    use std::time::Duration as D;

    #[test]
    fn sizes() {
        let ok = [
            ("0", 0),
            ("512", 512),
            ("512B", 512),
            ("512b", 512),
            ("4k", 4096),
            ("4K", 4096),
            ("4KB", 4096),
            ("4KiB", 4096),
            ("64M", 64 << 20),
            ("64MiB", 64 << 20),
            ("1.5G", 3 << 29),
            ("1T", 1 << 40),
            (" 8k ", 8192),
        ];
        for (s, n) in ok {
            assert_eq!(parse_size(s), Ok(n), "{s}");
        }
        for s in ["", "-1", "4x", "k", "99999999999T"] {
            assert!(parse_size(s).is_err(), "{s} should be refused");
        }
        assert!(parse_size_u32("4G").is_err());
        assert_eq!(parse_size_u32("64K"), Ok(65536));
        assert!(parse_size_nonzero("0").is_err());
        assert_eq!(parse_block_size("4k"), Ok(4096));
        assert_eq!(parse_block_size("512"), Ok(512));
        assert!(parse_block_size("1000").is_err());
        assert!(parse_block_size("128k").is_err());
    }

    #[test]
    fn durations() {
        let ok = [
            ("3", D::from_secs(3)),
            ("0.5", D::from_millis(500)),
            ("500ms", D::from_millis(500)),
            ("1s", D::from_secs(1)),
            ("2m", D::from_secs(120)),
            ("1h30m", D::from_secs(5400)),
            ("1h 30m", D::from_secs(5400)),
            ("0", D::ZERO),
        ];
        for (s, d) in ok {
            assert_eq!(parse_duration(s), Ok(d), "{s}");
        }
        for s in ["", "-1s", "5x", "s", "1..2"] {
            assert!(parse_duration(s).is_err(), "{s} should be refused");
        }
        assert!(parse_duration_nonzero("0s").is_err());
    }

    #[test]
    fn format() {
        assert_eq!(format_size(64 << 20), "64MiB");
        assert_eq!(format_size(1536), "1536B");
        assert_eq!(Size(4096).to_string(), "4KiB");
    }

    #[test]
    fn toml_values() {
        #[derive(serde::Deserialize)]
        struct C {
            a: Size,
            b: Size,
            t: Duration,
            u: Duration,
            v: Duration,
        }
        let c: C =
            toml::from_str("a = 4096\nb = \"1.5G\"\nt = 3\nu = \"1h30m\"\nv = 0.25\n").unwrap();
        assert_eq!(c.a, Size(4096));
        assert_eq!(c.b, Size(3 << 29));
        assert_eq!(c.t.0, D::from_secs(3));
        assert_eq!(c.u.0, D::from_secs(5400));
        assert_eq!(c.v.0, D::from_millis(250));
        let bad = toml::from_str::<C>("a = \"4x\"\nb = 1\nt = 1\nu = 1\nv = 1\n");
        let msg = bad.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("4x"), "{msg}");
    }
}
