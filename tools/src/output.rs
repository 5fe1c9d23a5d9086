//! The output layer of the tools: progress on a terminal or as periodic
//! lines, human-readable sizes and rates, hex dumps, and versioned JSON
//! files.
//!
//! Progress goes to stderr — a bar when stderr is a terminal, a plain line
//! every few seconds otherwise (logs, CI) — so stdout carries only results.
//!
//! ## Streams (docs/cli.md)
//!
//! - The human-readable results (a command's header and summary) go to
//!   stdout through [`say`] — unless an output flag is `-`, in which case
//!   stdout holds only that document and [`say`] writes to stderr
//!   ([`set_stdout_taken`]). At most one output flag may be `-`
//!   ([`check_outputs`]).
//! - Every output path is checked before any I/O starts
//!   ([`check_outputs`]): its directory must exist and be writable, and the
//!   path must not be a directory. A bad path is a usage error (exit 2).
//! - Files are written whole ([`write_output`], [`write_json`]): a temporary
//!   file in the same directory, renamed into place.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Writes a whole output to a path (`-` is stdout), files atomically.
pub use iesp_cli::envelope::write_output;

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

static STDOUT_TAKEN: AtomicBool = AtomicBool::new(false);

/// Marks stdout as holding a machine-readable document (an output flag was
/// `-`): from now on [`say`] writes to stderr.
pub fn set_stdout_taken(taken: bool) {
    STDOUT_TAKEN.store(taken, Ordering::Relaxed);
}

/// Whether an output flag is `-` (see [`set_stdout_taken`]).
pub fn stdout_taken() -> bool {
    STDOUT_TAKEN.load(Ordering::Relaxed)
}

/// Prints a line of human-readable results: stdout, or stderr when stdout
/// holds a document.
pub fn say(args: std::fmt::Arguments<'_>) {
    if stdout_taken() {
        eprintln!("{args}");
    } else {
        println!("{args}");
    }
}

/// Prints human-readable text as is (see [`say`]).
pub fn say_str(text: &str) {
    if stdout_taken() {
        eprint!("{text}");
    } else {
        print!("{text}");
    }
}

/// The writer for human-readable results (see [`say`]).
pub fn human_writer() -> Box<dyn Write + Send> {
    if stdout_taken() {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout())
    }
}

/// Checks the output flags of a command before it starts: `(flag, path)`
/// for each one given. Fails with a one-line message naming the flag when
/// a path cannot be written, or when more than one flag is `-`. Returns
/// whether one is `-` (stdout), and marks stdout taken if so.
pub fn check_outputs(outputs: &[(&str, Option<&Path>)]) -> Result<bool, String> {
    let mut to_stdout: Option<&str> = None;
    for &(flag, path) in outputs {
        let Some(path) = path else { continue };
        if path == Path::new("-") {
            if let Some(other) = to_stdout {
                return Err(format!(
                    "{other} and {flag} are both `-`: only one document can go to stdout"
                ));
            }
            to_stdout = Some(flag);
            continue;
        }
        check_output(path).map_err(|e| format!("{flag} {}: {e}", path.display()))?;
    }
    if to_stdout.is_some() {
        set_stdout_taken(true);
    }
    Ok(to_stdout.is_some())
}

/// Whether a file can be written at `path` (not `-`).
fn check_output(path: &Path) -> Result<(), String> {
    if path.as_os_str().is_empty() {
        return Err("empty path".into());
    }
    if path.is_dir() {
        return Err("is a directory".into());
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(format!("{} is not a directory", dir.display())),
        Err(e) => return Err(format!("directory {}: {e}", dir.display())),
    }
    // The file is written as a temporary file renamed into place: the
    // directory must take a new file.
    tempfile::NamedTempFile::new_in(dir)
        .map(drop)
        .map_err(|e| format!("cannot create a file in {}: {e}", dir.display()))
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
    let mut text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
    text.push('\n');
    write_output(path, text.as_bytes())
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

    #[test]
    fn output_paths_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("r.json");
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let under_file = file.join("r.json");
        let missing = dir.path().join("no/such/r.json");
        let check = |p: &Path| check_outputs(&[("--json", Some(p))]);
        assert_eq!(check(&ok), Ok(false));
        for bad in [dir.path(), &under_file, &missing, Path::new("")] {
            let e = check(bad).unwrap_err();
            assert!(e.starts_with("--json "), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
        let e = check_outputs(&[
            ("--junit", Some(Path::new("-"))),
            ("--json", None),
            ("--tap", Some(Path::new("-"))),
        ])
        .unwrap_err();
        assert!(e.contains("--junit and --tap"), "{e}");
        // Nothing was left behind by the checks.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
