//! The one versioned JSON envelope around every machine-readable output of
//! both binaries (`verify --json`, the header line of `conformance
//! --jsonl`, the coming fsx and bench reports).
//!
//! ## Contract
//!
//! A document (or, for JSON lines, the header line) is one JSON object
//! whose first fields are, in this order:
//!
//! | field | type | meaning |
//! | --- | --- | --- |
//! | `schema` | string | `iesp-test/<output>/<version>`, e.g. `iesp-test/verify/1` |
//! | `tool_version` | string | the crate version of the binary that wrote it |
//! | `started_at` | string | start of the run, RFC 3339 UTC (`2026-11-21T13:57:29.123Z`) |
//! | `seed` | integer or null | the seed the run used (null for runs without one) |
//! | `args` | array of strings | the command line, program name first |
//! | `interrupted` | bool | the run was stopped by SIGINT or SIGTERM |
//!
//! then the body's own fields. The version in `schema` is bumped on any
//! incompatible change to that output; fields are only ever added within a
//! version. Each output's JSON Schema (draft 2020-12) is in `docs/schemas/`.
//!
//! [`Envelope::write`] writes a pretty document to a file (atomically: a
//! temporary file renamed into place) or, for `-`, to stdout and nothing
//! else.

use std::io::Write;
use std::path::Path;
use std::time::SystemTime;

use serde::Serialize;

/// The prefix of every `schema` value.
pub const SCHEMA_PREFIX: &str = "iesp-test";

/// The envelope's keys, which a body must not repeat.
pub const KEYS: [&str; 6] = [
    "schema",
    "tool_version",
    "started_at",
    "seed",
    "args",
    "interrupted",
];

/// The common head of every machine-readable output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Envelope {
    /// `iesp-test/<output>/<version>`.
    pub schema: String,
    /// The version of the tool that wrote the document.
    pub tool_version: String,
    /// When the run started (RFC 3339 UTC on the wire).
    #[serde(serialize_with = "rfc3339")]
    pub started_at: SystemTime,
    /// The run's seed, when it has one; printed and recorded so a run can be
    /// repeated.
    pub seed: Option<u64>,
    /// The command line, program name first.
    pub args: Vec<String>,
    /// Stopped by SIGINT or SIGTERM before its end.
    pub interrupted: bool,
}

fn rfc3339<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_millis(*t))
}

/// `schema` of output `output` (e.g. `verify`) at `version`.
pub fn schema(output: &str, version: u32) -> String {
    format!("{SCHEMA_PREFIX}/{output}/{version}")
}

impl Envelope {
    /// An envelope for output `output` at schema `version`, started now.
    pub fn new(output: &str, version: u32, seed: Option<u64>, args: Vec<String>) -> Envelope {
        Envelope {
            schema: schema(output, version),
            tool_version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at: SystemTime::now(),
            seed,
            args,
            interrupted: false,
        }
    }

    /// As [`Envelope::new`], with this process's command line as `args`.
    pub fn for_process(output: &str, version: u32, seed: Option<u64>) -> Envelope {
        Envelope::new(output, version, seed, process_args())
    }

    /// Sets the start time (when the run began before the envelope was made).
    pub fn started_at(mut self, t: SystemTime) -> Envelope {
        self.started_at = t;
        self
    }

    /// Marks the run as stopped by a signal.
    pub fn interrupted(mut self, yes: bool) -> Envelope {
        self.interrupted = yes;
        self
    }

    /// The same run under another output's schema (one run, several files).
    pub fn with_schema(mut self, output: &str, version: u32) -> Envelope {
        self.schema = schema(output, version);
        self
    }

    /// `started_at` as written (RFC 3339 UTC, milliseconds).
    pub fn started_at_string(&self) -> String {
        humantime::format_rfc3339_millis(self.started_at).to_string()
    }

    /// The envelope's fields followed by the body's; `body` must serialize
    /// as a map (a struct or a JSON object) without the envelope's keys.
    pub fn wrap<'a, T: Serialize + ?Sized>(&'a self, body: &'a T) -> Wrapped<'a, T> {
        Wrapped {
            envelope: self,
            body,
        }
    }

    /// The wrapped document as a JSON value.
    pub fn to_value<T: Serialize + ?Sized>(
        &self,
        body: &T,
    ) -> serde_json::Result<serde_json::Value> {
        check_body(body)?;
        serde_json::to_value(self.wrap(body))
    }

    /// The wrapped document on one line (a JSON-lines header).
    pub fn to_line<T: Serialize + ?Sized>(&self, body: &T) -> serde_json::Result<String> {
        check_body(body)?;
        serde_json::to_string(&self.wrap(body))
    }

    /// Writes the wrapped document as pretty JSON to `path`; `-` is stdout.
    pub fn write<T: Serialize + ?Sized>(&self, path: &Path, body: &T) -> std::io::Result<()> {
        check_body(body).map_err(std::io::Error::other)?;
        let mut text =
            serde_json::to_string_pretty(&self.wrap(body)).map_err(std::io::Error::other)?;
        text.push('\n');
        write_output(path, text.as_bytes())
    }
}

/// An envelope and a body, serialized as one flat object.
#[derive(Serialize)]
pub struct Wrapped<'a, T: ?Sized> {
    #[serde(flatten)]
    envelope: &'a Envelope,
    #[serde(flatten)]
    body: &'a T,
}

/// A body is a JSON object that repeats none of the envelope's [`KEYS`]:
/// a repeated key would be written twice, and readers would disagree about
/// which one counts. (One extra serialization per report, not per I/O.)
fn check_body<T: Serialize + ?Sized>(body: &T) -> serde_json::Result<()> {
    use serde::ser::Error as _;
    match serde_json::to_value(body)? {
        serde_json::Value::Object(m) => match KEYS.iter().find(|k| m.contains_key(**k)) {
            Some(k) => Err(serde_json::Error::custom(format!(
                "the report body repeats the envelope's key {k:?}"
            ))),
            None => Ok(()),
        },
        other => Err(serde_json::Error::custom(format!(
            "a report body must be a JSON object, not {other}"
        ))),
    }
}

/// This process's command line, lossily as UTF-8.
pub fn process_args() -> Vec<String> {
    std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
}

/// Whether an output flag's value means stdout.
pub fn is_stdout(path: &Path) -> bool {
    path == Path::new("-")
}

/// Writes a whole output: to stdout for `-`, else to a temporary file in
/// the same directory renamed over `path`, so readers never see half a
/// report.
pub fn write_output(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_whole(path, bytes, false)
}

/// [`write_output`] that also survives a crash: the temporary file is
/// fsynced before the rename and the directory after it, so a crash
/// leaves the old file or the new one, never a mix or nothing (state
/// files).
pub fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_whole(path, bytes, true)
}

fn write_whole(path: &Path, bytes: &[u8], durable: bool) -> std::io::Result<()> {
    if is_stdout(path) {
        let mut out = std::io::stdout().lock();
        out.write_all(bytes)?;
        return out.flush();
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // The mode a plain create gives (0666 less the umask), or the mode of
    // the file replaced: not the 0600 of a temporary file.
    let replaced = std::fs::metadata(path).ok().map(|m| m.permissions());
    let mut tmp = tempfile::Builder::new()
        .prefix(".iesp-test-")
        .permissions(
            replaced
                .clone()
                .unwrap_or_else(|| std::os::unix::fs::PermissionsExt::from_mode(0o666)),
        )
        .tempfile_in(dir)?;
    if let Some(mode) = replaced {
        // Exactly the old mode, which the umask applied at creation may
        // have narrowed.
        tmp.as_file().set_permissions(mode)?;
    }
    tmp.write_all(bytes)?;
    if durable {
        tmp.as_file().sync_all()?;
    }
    tmp.persist(path).map_err(|e| e.error)?;
    if durable {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;
    use std::time::{Duration, UNIX_EPOCH};

    #[derive(Serialize)]
    struct Body {
        blocks: u64,
        outcome: &'static str,
    }

    fn sample() -> Envelope {
        Envelope::new(
            "verify",
            1,
            Some(42),
            vec!["iesp-test".into(), "verify".into()],
        )
        .started_at(UNIX_EPOCH + Duration::from_millis(1_795_269_449_123))
    }

    #[test]
    fn envelope_fields_come_first_then_the_body() {
        let line = sample()
            .to_line(&Body {
                blocks: 8,
                outcome: "pass",
            })
            .unwrap();
        assert_eq!(
            line,
            r#"{"schema":"iesp-test/verify/1","tool_version":"0.1.0","started_at":"2026-11-21T13:57:29.123Z","seed":42,"args":["iesp-test","verify"],"interrupted":false,"blocks":8,"outcome":"pass"}"#
                .replace("0.1.0", env!("CARGO_PKG_VERSION"))
        );
    }

    #[test]
    fn builders() {
        let e = sample()
            .interrupted(true)
            .with_schema("conformance-jsonl", 2);
        assert_eq!(e.schema, "iesp-test/conformance-jsonl/2");
        assert!(e.interrupted);
        assert_eq!(e.started_at_string(), "2026-11-21T13:57:29.123Z");
        let v = Envelope::new("x", 1, None, vec![])
            .to_value(&serde_json::json!({}))
            .unwrap();
        assert_eq!(v["seed"], serde_json::Value::Null);
        assert!(!process_args().is_empty());
    }

    #[test]
    fn a_body_that_repeats_an_envelope_key_is_refused() {
        let e = sample();
        let err = e
            .to_line(&serde_json::json!({"interrupted": true}))
            .unwrap_err();
        assert!(err.to_string().contains("\"interrupted\""), "{err}");
        assert!(e.to_line(&[1, 2]).is_err(), "not an object");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.json");
        assert!(e.write(&p, &serde_json::json!({"seed": 1})).is_err());
        assert!(!p.exists(), "nothing is written");
    }

    #[test]
    fn files_are_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.json");
        sample().write(&p, &serde_json::json!({"a": 1})).unwrap();
        sample().write(&p, &serde_json::json!({"b": 2})).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        assert_eq!(v["b"], 2);
        assert_eq!(v.get("a"), None);
        assert_eq!(v["seed"], 42);
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file is left behind");
    }

    /// A report gets the mode any new file gets (0666 less the umask),
    /// not a temporary file's 0600; a replaced file keeps its own.
    #[test]
    fn reports_get_a_plain_file_mode() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        std::fs::File::create(&plain).unwrap();
        let p = dir.path().join("r.json");
        sample().write(&p, &serde_json::json!({"a": 1})).unwrap();
        assert_eq!(mode(&p), mode(&plain));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        sample().write(&p, &serde_json::json!({"a": 2})).unwrap();
        assert_eq!(mode(&p), 0o640);
    }
}
