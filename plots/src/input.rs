//! The files plot reads, and the two text formats bench writes:
//!
//! - **bench JSON** — `iesp-test bench --json` ([`crate::data::BenchBody`]
//!   in the envelope, schema `iesp-test/bench/…`);
//! - **bench CSV** — `--csv`: one row per second and point, the first six
//!   columns in the order of fio's latency/IOPS logs (`time` in ms,
//!   `value` — here IOPS —, data direction, block size, offset, priority),
//!   then this tool's own: mean and p99 latency, MiB/s, target, queue
//!   depth, jobs ([`CSV_HEADER`]);
//! - **legacy .dat** — the tab-separated `bs threads value` lines of iESP's
//!   block-speed-randread.py that plot.sh read (bs in bytes, value IOPS;
//!   `#` comments and blank lines ignored). `--dat` writes them; with
//!   several targets (`--compare`) a `# target NAME` comment starts each
//!   target's lines, and the reader keeps the targets apart ([`DatSet`]).
//!
//! Which format a file is: JSON when it starts with `{`; bench CSV when its
//! name ends in `.csv`, or its first line that is neither blank nor a `#`
//! comment holds a comma (a `.dat` line never does) and its name does not
//! end in `.dat`; else `.dat`. A CSV whose header is not [`CSV_HEADER`] is
//! a CSV error, not a `.dat` one.
//!
//! Other iesp-test JSON (verify, fsx) carries no per-second series today:
//! [`load`] says so ([`Loaded::Skipped`]) rather than drawing nothing.
//! Errors name the file and, where there is one, the line.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::data::BenchBody;

/// The bench CSV header (fio's log columns first).
pub const CSV_HEADER: [&str; 12] = [
    "time_ms",
    "iops",
    "ddir",
    "bs",
    "offset",
    "prio",
    "lat_mean_us",
    "lat_p99_us",
    "mib_s",
    "target",
    "qd",
    "jobs",
];

/// One CSV row.
#[derive(Clone, Debug, PartialEq)]
pub struct CsvRow {
    pub time_ms: u64,
    pub iops: f64,
    /// fio's data direction: 0 read, 1 write (a mix is written as 0).
    pub ddir: u8,
    pub bs: u64,
    pub lat_mean_us: f64,
    pub lat_p99_us: f64,
    pub mib_s: f64,
    pub target: String,
    pub qd: u32,
    pub jobs: u32,
}

impl CsvRow {
    /// The row as written (no quoting: targets with commas or quotes are
    /// quoted CSV-style).
    pub fn to_line(&self) -> String {
        let target = if self.target.contains([',', '"', '\n']) {
            format!("\"{}\"", self.target.replace('"', "\"\""))
        } else {
            self.target.clone()
        };
        format!(
            "{},{:.1},{},{},0,0,{:.3},{:.3},{:.3},{},{},{}",
            self.time_ms,
            self.iops,
            self.ddir,
            self.bs,
            self.lat_mean_us,
            self.lat_p99_us,
            self.mib_s,
            target,
            self.qd,
            self.jobs
        )
    }
}

/// One legacy `.dat` line.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DatRow {
    pub bs: u64,
    pub threads: u32,
    pub value: f64,
}

impl DatRow {
    pub fn to_line(&self) -> String {
        format!("{}\t{}\t{:.0}", self.bs, self.threads, self.value)
    }
}

/// The lines of one target in a `.dat` file: those after its
/// `# target NAME` comment (`None` before any such comment, the old
/// single-target files).
#[derive(Clone, Debug, PartialEq)]
pub struct DatSet {
    pub target: Option<String>,
    pub rows: Vec<DatRow>,
}

/// A file plot can draw.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    Bench(BenchBody),
    Csv(Vec<CsvRow>),
    /// One set per target, in file order (never empty sets).
    Dat(Vec<DatSet>),
}

/// What [`load`] found.
#[derive(Clone, Debug, PartialEq)]
pub enum Loaded {
    /// Data to draw, with a label (the file's name).
    Data { label: String, input: Input },
    /// A valid file without anything to draw; why.
    Skipped(String),
}

/// A file that does not load: its path, the line (1-based) where known,
/// and what is wrong.
#[derive(Clone, Debug, PartialEq)]
pub struct InputError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{l}: {}", self.path.display(), self.message),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

impl std::error::Error for InputError {}

/// The name bench CSV errors give the format.
const CSV_FORMAT: &str = "bench CSV";
/// The name `.dat` errors give the format.
const DAT_FORMAT: &str = "legacy .dat";

/// Reads `path` in the format its name and first line say (see the
/// module's documentation). Errors name the file, the 1-based line and
/// the format being parsed.
pub fn load(path: &Path) -> Result<Loaded, InputError> {
    let err = |line: Option<usize>, message: String| InputError {
        path: path.to_owned(),
        line,
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| err(None, format!("cannot read: {e}")))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let line = e.as_bytes()[..e.utf8_error().valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1;
        err(Some(line), "not UTF-8 text".into())
    })?;
    // A spreadsheet's byte-order mark is not part of the first field.
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let label = path.file_name().map_or_else(
        || path.display().to_string(),
        |s| s.to_string_lossy().into_owned(),
    );
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    let first = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'));
    let input = if text.trim_start().starts_with('{') {
        match json(text).map_err(|(l, m)| err(l, m))? {
            Some(b) => Input::Bench(b),
            None => {
                return Ok(Loaded::Skipped(format!(
                    "{}: carries no per-second series (only bench JSON does): skipped",
                    path.display()
                )));
            }
        }
    } else if ext.as_deref() == Some("csv")
        || (ext.as_deref() != Some("dat") && first.is_some_and(|l| l.contains(',')))
    {
        Input::Csv(csv(text).map_err(|(l, m)| err(Some(l), format!("{CSV_FORMAT}: {m}")))?)
    } else {
        Input::Dat(dat(text).map_err(|(l, m)| err(Some(l), format!("{DAT_FORMAT}: {m}")))?)
    };
    Ok(Loaded::Data { label, input })
}

/// A bench body, `None` for another iesp-test output.
fn json(text: &str) -> Result<Option<BenchBody>, (Option<usize>, String)> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| (Some(e.line()), format!("not JSON: {e}")))?;
    let schema = v.get("schema").and_then(|s| s.as_str()).unwrap_or("");
    let want = format!("iesp-test/{}/", crate::data::BENCH_OUTPUT);
    if !schema.starts_with("iesp-test/") {
        return Err((
            Some(1),
            "not an iesp-test JSON document (no \"schema\": \"iesp-test/...\")".into(),
        ));
    }
    if !schema.starts_with(&want) {
        return Ok(None);
    }
    if schema != crate::data::bench_schema() {
        return Err((
            Some(1),
            format!(
                "schema {schema}: this version reads {}",
                crate::data::bench_schema()
            ),
        ));
    }
    // Parse again from the text so that errors carry a line.
    serde_json::from_str::<BenchBody>(text)
        .map(Some)
        .map_err(|e| (Some(e.line()), format!("not a bench report: {e}")))
}

/// Splits one CSV line (fields may be double-quoted).
fn split_csv(line: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted) = (Vec::new(), String::new(), false);
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

fn num<T: std::str::FromStr>(field: &str, name: &str) -> Result<T, String> {
    field
        .trim()
        .parse()
        .map_err(|_| format!("{name} `{}` is not a number", shown(field)))
}

/// A field as an error message shows it: on one line.
fn shown(field: &str) -> String {
    field.escape_debug().to_string()
}

/// The CSV records of `text` with the 1-based line each starts on: a
/// quoted field may hold a line break, so a record may span lines.
fn records(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut open: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let (start, mut rec) = match open.take() {
            Some((start, mut rec)) => {
                rec.push('\n');
                (start, rec)
            }
            None => (i + 1, String::new()),
        };
        rec.push_str(line);
        if rec.chars().filter(|&c| c == '"').count() % 2 == 1 {
            open = Some((start, rec));
        } else {
            out.push((start, rec));
        }
    }
    out.extend(open);
    out
}

fn csv(text: &str) -> Result<Vec<CsvRow>, (usize, String)> {
    let mut recs = records(text)
        .into_iter()
        .filter(|(_, r)| !r.trim().is_empty() && !r.trim_start().starts_with('#'));
    let Some((header_line, header)) = recs.next() else {
        return Err((1, "no header line".into()));
    };
    let names = split_csv(&header);
    let names: Vec<&str> = names.iter().map(|n| n.trim()).collect();
    if names != CSV_HEADER {
        let why = match names.iter().zip(CSV_HEADER).position(|(a, b)| *a != b) {
            Some(i) => format!(
                "column {} is `{}`, `{}` expected",
                i + 1,
                shown(names[i]),
                CSV_HEADER[i]
            ),
            None => format!("{} columns, {} expected", names.len(), CSV_HEADER.len()),
        };
        return Err((
            header_line,
            format!("the header is not `{}`: {why}", CSV_HEADER.join(",")),
        ));
    }
    let mut rows = Vec::new();
    for (line, rec) in recs {
        let f = split_csv(&rec);
        if f.len() != CSV_HEADER.len() {
            return Err((
                line,
                format!("{} fields, {} expected", f.len(), CSV_HEADER.len()),
            ));
        }
        let row = (|| -> Result<CsvRow, String> {
            Ok(CsvRow {
                time_ms: num(&f[0], "time_ms")?,
                iops: num(&f[1], "iops")?,
                ddir: num(&f[2], "ddir")?,
                bs: num(&f[3], "bs")?,
                lat_mean_us: num(&f[6], "lat_mean_us")?,
                lat_p99_us: num(&f[7], "lat_p99_us")?,
                mib_s: num(&f[8], "mib_s")?,
                target: f[9].clone(),
                qd: num(&f[10], "qd")?,
                jobs: num(&f[11], "jobs")?,
            })
        })()
        .map_err(|m| (line, m))?;
        rows.push(row);
    }
    if rows.is_empty() {
        return Err((header_line, "a header and no rows".into()));
    }
    Ok(rows)
}

fn dat(text: &str) -> Result<Vec<DatSet>, (usize, String)> {
    let mut sets = vec![DatSet {
        target: None,
        rows: Vec::new(),
    }];
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if let Some(comment) = t.strip_prefix('#') {
            if let Some(name) = comment.trim_start().strip_prefix("target ") {
                sets.push(DatSet {
                    target: Some(name.trim().to_owned()),
                    rows: Vec::new(),
                });
            }
            continue;
        }
        if t.is_empty() {
            continue;
        }
        let f: Vec<&str> = t.split_whitespace().collect();
        if f.len() != 3 {
            return Err((
                i + 1,
                format!(
                    "{} fields: a legacy .dat line is `bs<TAB>threads<TAB>value` (or a bench CSV or JSON file)",
                    f.len()
                ),
            ));
        }
        let row = (|| -> Result<DatRow, String> {
            Ok(DatRow {
                bs: num(f[0], "bs")?,
                threads: num(f[1], "threads")?,
                value: num(f[2], "value")?,
            })
        })()
        .map_err(|m| (i + 1, m))?;
        if let Some(set) = sets.last_mut() {
            set.rows.push(row);
        }
    }
    sets.retain(|s| !s.rows.is_empty());
    if sets.is_empty() {
        return Err((1, "no `bs threads value` lines".into()));
    }
    Ok(sets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_and_quotes() {
        assert_eq!(split_csv("a,\"b,c\",\"d\"\"e\""), vec!["a", "b,c", "d\"e"]);
        let r = CsvRow {
            time_ms: 1000,
            iops: 5.0,
            ddir: 0,
            bs: 4096,
            lat_mean_us: 1.0,
            lat_p99_us: 2.0,
            mib_s: 3.0,
            target: "a,b".into(),
            qd: 1,
            jobs: 1,
        };
        let text = format!("{}\n{}\n", CSV_HEADER.join(","), r.to_line());
        let back = csv(&text).unwrap();
        assert_eq!(back[0].target, "a,b");
        assert_eq!(back[0].bs, 4096);
    }

    #[test]
    fn dat_errors_name_the_line() {
        assert_eq!(
            dat("# c\n512\t1\t100\n\n4096 2 5.5\n").unwrap()[0]
                .rows
                .len(),
            2
        );
        assert_eq!(dat("512\t1\t100\nx\t1\t2\n").unwrap_err().0, 2);
        assert_eq!(dat("512\t1\n").unwrap_err().0, 1);
    }
}
