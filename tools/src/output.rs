//! The output layer of the tools: progress on a terminal or as periodic
//! lines, human-readable sizes and rates, hex dumps, and versioned JSON
//! files.
//!
//! Progress goes to stderr — a bar when stderr is a terminal, a plain line
//! every few seconds otherwise (logs, CI) — so stdout carries only results.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    /// A bar on a terminal, periodic lines otherwise.
    Auto,
    Bar,
    Lines,
    /// Nothing until the summary.
    Quiet,
}

/// A progress display for one run.
pub struct Progress {
    bar: Option<ProgressBar>,
    lines: Option<Mutex<Lines>>,
}

struct Lines {
    every: Duration,
    last: Instant,
}

impl Progress {
    /// `interval` is the time between plain lines.
    pub fn new(mode: ProgressMode, interval: Duration) -> Progress {
        let mode = match mode {
            ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Bar,
            ProgressMode::Auto => ProgressMode::Lines,
            m => m,
        };
        match mode {
            ProgressMode::Bar => {
                let bar =
                    ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr_with_hz(8));
                let style =
                    ProgressStyle::with_template("{prefix:>10} [{bar:30}] {percent:>3}% {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> ");
                bar.set_style(style);
                Progress {
                    bar: Some(bar),
                    lines: None,
                }
            }
            ProgressMode::Lines => Progress {
                bar: None,
                lines: Some(Mutex::new(Lines {
                    every: interval.max(Duration::from_millis(100)),
                    last: Instant::now(),
                })),
            },
            _ => Progress {
                bar: None,
                lines: None,
            },
        }
    }

    /// Starts a phase of `total` units (bytes or blocks).
    pub fn phase(&self, name: &str, total: u64) {
        if let Some(b) = &self.bar {
            b.set_prefix(name.to_owned());
            b.set_length(total.max(1));
            b.set_position(0);
        }
    }

    /// Updates the position; `message` is built only when it is shown.
    pub fn update(&self, position: u64, message: impl FnOnce() -> String) {
        if let Some(b) = &self.bar {
            b.set_position(position);
            b.set_message(message());
        } else if let Some(l) = &self.lines {
            let mut l = l.lock().unwrap_or_else(|p| p.into_inner());
            if l.last.elapsed() >= l.every {
                l.last = Instant::now();
                eprintln!("{}", message());
            }
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// `123.4 MiB`-style size.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// MiB/s of `n` bytes in `secs` (0 when no time passed).
pub fn mib_s(n: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        n as f64 / (1u64 << 20) as f64 / secs
    } else {
        0.0
    }
}

/// A one-line hex dump: `0x0030: 2f 28 4d 86 …`.
pub fn hex_line(offset: usize, data: &[u8]) -> String {
    let mut s = format!("{offset:#06x}:");
    for b in data {
        s.push_str(&format!(" {b:02x}"));
    }
    s
}

/// Writes `value` as pretty JSON to `path` (`-` is stdout), atomically for
/// files (a temporary file renamed into place).
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
    if path == Path::new("-") {
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())?;
        return out.write_all(b"\n");
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(text.as_bytes())?;
    tmp.write_all(b"\n")?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(64 << 20), "64.0 MiB");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(mib_s(10 << 20, 2.0), 5.0);
        assert_eq!(mib_s(1, 0.0), 0.0);
        assert_eq!(hex_line(0x30, &[0x2f, 0x00, 0xff]), "0x0030: 2f 00 ff");
    }

    #[test]
    fn json_files_are_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.json");
        write_json(&p, &serde_json::json!({"a": 1})).unwrap();
        write_json(&p, &serde_json::json!({"b": 2})).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        assert_eq!(v, serde_json::json!({"b": 2}));
    }
}
