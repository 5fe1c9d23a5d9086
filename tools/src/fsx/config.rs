//! `--config fsx.toml`: weights, sizes, queue depth, op count or duration,
//! LBA range and seed (the commented sample is tools/fsx.sample.toml).
//! Command-line flags override the file. Every mistake is a one-line
//! error that names the line.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::ops::{Kind, Sizes};

/// The largest weight (weights are relative; this keeps sums small).
pub const MAX_WEIGHT: i64 = 1_000_000;

/// The file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub seed: Option<u64>,
    pub qd: Option<u32>,
    pub ops: Option<u64>,
    pub duration: Option<String>,
    pub lba_start: Option<u64>,
    pub lba_count: Option<u64>,
    #[serde(default)]
    pub weights: BTreeMap<String, Spanned<i64>>,
    #[serde(default)]
    pub sizes: BTreeMap<String, Spanned<Sizes>>,
}

/// The file, checked.
#[derive(Debug, Default, Clone)]
pub struct Config {
    pub seed: Option<u64>,
    pub qd: Option<u32>,
    pub ops: Option<u64>,
    pub duration: Option<Duration>,
    pub lba_start: Option<u64>,
    pub lba_count: Option<u64>,
    /// Weights the file sets (others keep their default).
    pub weights: Vec<(Kind, u32)>,
    /// Per-op sizes the file sets.
    pub sizes: Vec<(Kind, Sizes)>,
    /// `[sizes] default = ...`.
    pub default_sizes: Option<Sizes>,
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

fn names() -> String {
    Kind::ALL
        .iter()
        .map(|k| k.name().replace('-', "_"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parses a config's text; `name` is for messages.
pub fn parse(name: &str, text: &str) -> Result<Config, String> {
    let f: File = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| line_of(text, s.start));
        let msg = e.message().to_owned();
        match line {
            Some(l) => format!("{name} line {l}: {msg}"),
            None => format!("{name}: {msg}"),
        }
    })?;
    let mut c = Config {
        seed: f.seed,
        qd: f.qd,
        ops: f.ops,
        lba_start: f.lba_start,
        lba_count: f.lba_count,
        ..Config::default()
    };
    if let Some(d) = &f.duration {
        c.duration = Some(
            iesp_cli::units::parse_duration_nonzero(d)
                .map_err(|e| format!("{name}: duration {d:?}: {e}"))?,
        );
    }
    if let Some(q) = f.qd
        && !(1..=1024).contains(&q)
    {
        return Err(format!("{name}: qd {q}: must be 1 to 1024"));
    }
    for (k, v) in &f.weights {
        let line = line_of(text, v.span().start);
        let kind = Kind::from_name(k).ok_or_else(|| {
            format!(
                "{name} line {line}: unknown op {k:?} in [weights] (ops: {})",
                names()
            )
        })?;
        let w = *v.get_ref();
        if !(0..=MAX_WEIGHT).contains(&w) {
            return Err(format!(
                "{name} line {line}: weight {w} for {k}: must be 0 to {MAX_WEIGHT}"
            ));
        }
        c.weights.push((kind, w as u32));
    }
    for (k, v) in &f.sizes {
        let line = line_of(text, v.span().start);
        let s = *v.get_ref();
        if s.min == 0 || s.min > s.max {
            return Err(format!(
                "{name} line {line}: sizes.{k}: need 1 <= min <= max (min {}, max {})",
                s.min, s.max
            ));
        }
        if k == "default" {
            c.default_sizes = Some(s);
            continue;
        }
        let kind = Kind::from_name(k).ok_or_else(|| {
            format!(
                "{name} line {line}: unknown op {k:?} in [sizes] (default, {})",
                names()
            )
        })?;
        c.sizes.push((kind, s));
    }
    Ok(c)
}

/// `--weights read=30,write=10`: the weights it sets.
pub fn parse_weights(s: &str) -> Result<Vec<(Kind, u32)>, String> {
    let mut v = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, w) = part
            .split_once('=')
            .ok_or_else(|| format!("`{part}`: expected OP=WEIGHT"))?;
        let kind = Kind::from_name(k.trim())
            .ok_or_else(|| format!("unknown op `{k}` (ops: {})", names()))?;
        let w: i64 = w
            .trim()
            .parse()
            .map_err(|_| format!("`{w}` is not a weight (0 to {MAX_WEIGHT})"))?;
        if !(0..=MAX_WEIGHT).contains(&w) {
            return Err(format!("weight {w} for {k}: must be 0 to {MAX_WEIGHT}"));
        }
        v.push((kind, w as u32));
    }
    Ok(v)
}

/// The default weights: mostly reads and writes, every other op present.
pub fn default_weights() -> Vec<(Kind, u32)> {
    vec![
        (Kind::Read, 30),
        (Kind::Write, 20),
        (Kind::WriteFua, 5),
        (Kind::Unmap, 8),
        (Kind::WriteSame, 5),
        (Kind::WriteSameUnmap, 4),
        (Kind::CompareAndWrite, 5),
        (Kind::CompareAndWriteMiscompare, 3),
        (Kind::Flush, 3),
        (Kind::Reconnect, 1),
        (Kind::AbortTask, 2),
        (Kind::LunReset, 1),
    ]
}

/// `base` with the entries of each override list applied in order.
pub fn merge_weights(base: Vec<(Kind, u32)>, overrides: &[&[(Kind, u32)]]) -> Vec<(Kind, u32)> {
    let mut m: BTreeMap<Kind, u32> = base.into_iter().collect();
    for o in overrides {
        for &(k, w) in *o {
            m.insert(k, w);
        }
    }
    m.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_line() {
        let e = parse("f.toml", "seed = 1\n[weights]\nread = 3\nwrtie = 2\n").unwrap_err();
        assert!(e.contains("line 4") && e.contains("wrtie"), "{e}");
        let e = parse("f.toml", "seed = 1\n[weights]\nread = -3\n").unwrap_err();
        assert!(e.contains("line 3") && e.contains("-3"), "{e}");
        let e = parse("f.toml", "seed = 1\n\nbogus = 2\n").unwrap_err();
        assert!(e.contains("line 3") && e.contains("bogus"), "{e}");
        let e = parse("f.toml", "[weights]\nread = \"x\"\n").unwrap_err();
        assert!(e.contains("line 2"), "{e}");
        let e = parse(
            "f.toml",
            "[sizes]\nread = { min = 9, max = 2, dist = \"log\" }\n",
        )
        .unwrap_err();
        assert!(e.contains("line 2"), "{e}");
        let c = parse(
            "f.toml",
            "qd = 4\nduration = \"2s\"\n[weights]\nwrite_fua = 7\n",
        )
        .unwrap();
        assert_eq!(c.weights, vec![(Kind::WriteFua, 7)]);
        assert_eq!(c.duration, Some(Duration::from_secs(2)));
    }

    #[test]
    fn the_sample_parses() {
        let text = include_str!("../../fsx.sample.toml");
        let c = parse("fsx.sample.toml", text).unwrap();
        assert!(!c.weights.is_empty());
        assert!(c.default_sizes.is_some());
    }

    #[test]
    fn weight_flags() {
        assert_eq!(
            parse_weights("read=3, write_fua=0").unwrap(),
            vec![(Kind::Read, 3), (Kind::WriteFua, 0)]
        );
        assert!(parse_weights("reed=3").is_err());
        assert!(parse_weights("read=-1").is_err());
        assert!(parse_weights("read").is_err());
    }
}
