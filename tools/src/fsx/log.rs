//! The op log (`--log`, JSON lines, schema `iesp-test/fsx-log/1`,
//! docs/schemas/fsx-log.json): the first line is the common envelope
//! ([`iesp_cli::envelope`]) with the LUN's geometry and the run's range;
//! then one [`Op`] per line, in issue order. `--replay` reads it back.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ops::Op;

/// The schema name and version of the op log.
pub const SCHEMA: (&str, u32) = ("fsx-log", 1);

/// The header line's body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// The LUN's (or file's) size in blocks.
    pub lun_blocks: u64,
    pub block_size: u32,
    /// The tested range.
    pub first_lba: u64,
    pub blocks: u64,
    pub qd: usize,
}

/// Writes the op log as ops are issued.
pub struct LogWriter {
    out: Box<dyn Write + Send>,
    path: PathBuf,
    error: Option<String>,
}

impl LogWriter {
    /// Creates `path` (`-`: stdout) and writes the header line.
    pub fn create(
        path: &Path,
        envelope: &iesp_cli::envelope::Envelope,
        header: &Header,
    ) -> std::io::Result<LogWriter> {
        let out: Box<dyn Write + Send> = if iesp_cli::envelope::is_stdout(path) {
            Box::new(std::io::BufWriter::new(std::io::stdout()))
        } else {
            Box::new(std::io::BufWriter::new(std::fs::File::create(path)?))
        };
        let mut w = LogWriter {
            out,
            path: path.to_owned(),
            error: None,
        };
        let line = envelope.to_line(header).map_err(std::io::Error::other)?;
        writeln!(w.out, "{line}")?;
        Ok(w)
    }

    /// Appends one op.
    pub fn op(&mut self, op: &Op) {
        if self.error.is_some() {
            return;
        }
        let r = serde_json::to_string(op)
            .map_err(std::io::Error::other)
            .and_then(|l| writeln!(self.out, "{l}"));
        if let Err(e) = r {
            self.error = Some(format!("{}: {e}", self.path.display()));
        }
    }

    /// Flushes; the first write error, if any.
    pub fn flush(&mut self) -> Option<String> {
        if let Err(e) = self.out.flush()
            && self.error.is_none()
        {
            self.error = Some(format!("{}: {e}", self.path.display()));
        }
        self.error.clone()
    }
}

/// A log read back.
#[derive(Clone, Debug)]
pub struct Log {
    pub seed: Option<u64>,
    pub header: Header,
    pub ops: Vec<Op>,
}

/// The envelope fields a log's first line carries.
#[derive(Deserialize)]
struct Head {
    schema: String,
    seed: Option<u64>,
    #[serde(flatten)]
    header: Header,
}

/// Reads a log; errors name the line.
pub fn read(path: &Path) -> Result<Log, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("--replay {}: {e}", path.display()))?;
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((_, first)) = lines.next() else {
        return Err(format!("--replay {}: empty log", path.display()));
    };
    let head: Head = serde_json::from_str(first).map_err(|e| {
        format!(
            "--replay {} line 1: not an fsx op log header: {e}",
            path.display()
        )
    })?;
    let want = iesp_cli::envelope::schema(SCHEMA.0, SCHEMA.1);
    if head.schema != want {
        return Err(format!(
            "--replay {} line 1: schema {:?}, expected {want:?}",
            path.display(),
            head.schema
        ));
    }
    let mut ops = Vec::new();
    for (n, l) in lines {
        let op: Op = serde_json::from_str(l)
            .map_err(|e| format!("--replay {} line {}: {e}", path.display(), n + 1))?;
        ops.push(op);
    }
    Ok(Log {
        seed: head.seed,
        header: head.header,
        ops,
    })
}

/// Writes a whole log (a shrunk reproducer) at once.
pub fn write_all(
    path: &Path,
    envelope: &iesp_cli::envelope::Envelope,
    header: &Header,
    ops: &[Op],
) -> std::io::Result<()> {
    let mut text = envelope.to_line(header).map_err(std::io::Error::other)?;
    text.push('\n');
    for op in ops {
        text.push_str(&serde_json::to_string(op).map_err(std::io::Error::other)?);
        text.push('\n');
    }
    iesp_cli::envelope::write_output(path, text.as_bytes())
}
