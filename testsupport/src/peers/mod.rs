//! Real peers on loopback: tgt's `tgtd`, libiscsi's command-line tools and
//! QEMU's NBD server and client ([`qemu`]).
//!
//! Interop tests across the workspace use this module to start a second,
//! independent iSCSI target ([`tgt::Tgtd`]) and to run an independent
//! initiator ([`libiscsi`]) against our own target, over 127.0.0.1 only.
//! Everything here is synchronous and blocking (process spawn, short polls);
//! call it from `#[test]` functions directly, or via `spawn_blocking` from
//! async code.
//!
//! # Missing-peer policy
//!
//! The peers come from Debian packages (`tgt`, `libiscsi-bin`, …) that
//! `.ci/run` installs. A test that needs one asks [`tool_or_skip`] (or
//! [`tools_or_skip`]) first:
//!
//! - tool found: the test runs;
//! - tool missing and the `CI` environment variable is set (non-empty and not
//!   `false`/`0`): the test **panics** with the install hint, so CI never
//!   "passes" by skipping an interop test;
//! - tool missing outside CI: the test prints `SKIPPED: …` on stderr and
//!   returns early.
//!
//! ```no_run
//! use iesp_testsupport::peers;
//!
//! let Some(_) = peers::tools_or_skip(&["tgtd", "tgtadm", "iscsi-inq"]) else {
//!     return;
//! };
//! ```
//!
//! # Processes
//!
//! Every external program runs with a timeout, its output captured to
//! anonymous temporary files (no pipe buffers to fill, no reader threads) and
//! is killed and reaped when the timeout expires. Long-lived peers (`tgtd`)
//! are stopped and reaped by their `Drop`.

pub mod libiscsi;
pub mod qemu;
pub mod tgt;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

/// Which Debian package provides each external tool the tests use; the
/// install hint of [`MissingTool`] and the package list in `.ci/run` follow
/// this table.
const PACKAGES: &[(&str, &str)] = &[
    ("tgtd", "tgt"),
    ("tgtadm", "tgt"),
    ("iscsi-ls", "libiscsi-bin"),
    ("iscsi-inq", "libiscsi-bin"),
    ("iscsi-readcapacity16", "libiscsi-bin"),
    ("iscsi-test-cu", "libiscsi-bin"),
    ("iscsi-perf", "libiscsi-bin"),
    ("iscsi-swp", "libiscsi-bin"),
    ("qemu-nbd", "qemu-utils"),
    ("qemu-img", "qemu-utils"),
    ("qemu-io", "qemu-utils"),
    ("fio", "fio"),
    ("losetup", "util-linux"),
    ("blkdiscard", "util-linux"),
    ("mkfs.ext4", "e2fsprogs"),
    ("xmllint", "libxml2-utils"),
];

/// Directories searched after `$PATH`: `tgtd` lives in `/usr/sbin`, which is
/// not on a non-root user's `$PATH`.
const EXTRA_DIRS: &[&str] = &["/usr/local/sbin", "/usr/sbin", "/sbin"];

/// Everything that can go wrong while driving a real peer.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The program is not installed.
    #[error(transparent)]
    Missing(#[from] MissingTool),
    /// The program exists but could not be started.
    #[error("cannot start {tool}: {source}")]
    Spawn {
        tool: String,
        #[source]
        source: io::Error,
    },
    /// The program ran longer than allowed and was killed.
    #[error("{tool} timed out after {timeout:?} and was killed; output so far:\n{output}")]
    Timeout {
        tool: String,
        timeout: Duration,
        output: String,
    },
    /// The program exited unsuccessfully where success was required.
    #[error("{tool} failed ({status}):\n{output}")]
    Failed {
        tool: String,
        status: ExitStatus,
        output: String,
    },
    /// `tgtd` did not become ready; `log` is its captured stdout/stderr.
    #[error("tgtd not ready: {reason}\n--- tgtd log ---\n{log}")]
    TgtdNotReady { reason: String, log: String },
    /// The program's output did not have the expected shape.
    #[error("cannot parse {tool} output: {reason}\n--- output ---\n{raw}")]
    Parse {
        tool: String,
        reason: String,
        raw: String,
    },
    /// A caller passed arguments the wrapper cannot honour.
    #[error("invalid arguments for {tool}: {reason}")]
    InvalidArgument { tool: String, reason: String },
    /// Local I/O (temporary files, sockets, /proc).
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A required external program is not installed.
///
/// Displays as `tgtd not found: install package tgt (apt-get install tgt) or
/// run .ci/run`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingTool {
    /// Program name as looked up, e.g. `tgtd`.
    pub tool: String,
    /// Debian package that provides it, when known.
    pub package: Option<&'static str>,
}

impl fmt::Display for MissingTool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.package {
            Some(pkg) => write!(
                f,
                "{} not found: install package {pkg} (apt-get install {pkg}) or run .ci/run",
                self.tool
            ),
            None => write!(f, "{} not found: install it or run .ci/run", self.tool),
        }
    }
}

impl std::error::Error for MissingTool {}

/// The Debian package that provides `tool`, if it is one the tests use.
pub fn package_for(tool: &str) -> Option<&'static str> {
    PACKAGES
        .iter()
        .find(|(name, _)| *name == tool)
        .map(|(_, pkg)| *pkg)
}

/// Whether we run under CI: `CI` set, non-empty and not `false`/`0`.
pub fn in_ci() -> bool {
    ci_value_means_ci(std::env::var_os("CI").as_deref())
}

fn ci_value_means_ci(value: Option<&OsStr>) -> bool {
    match value.and_then(OsStr::to_str) {
        Some(v) => {
            let v = v.trim();
            !(v.is_empty() || v.eq_ignore_ascii_case("false") || v == "0")
        }
        // Set but not UTF-8: someone set it on purpose.
        None => value.is_some(),
    }
}

/// Finds an executable named `name` on `$PATH` or in the sbin directories.
///
/// A `name` containing `/` is taken as a path. This only looks; the policy
/// (fail under CI, skip elsewhere) is [`tool_or_skip`].
pub fn require_tool(name: &str) -> Result<PathBuf, MissingTool> {
    let missing = || MissingTool {
        tool: name.to_owned(),
        package: package_for(name),
    };
    if name.contains('/') {
        let path = PathBuf::from(name);
        return if is_executable(&path) {
            Ok(path)
        } else {
            Err(missing())
        };
    }
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path_var)
        .chain(EXTRA_DIRS.iter().map(PathBuf::from))
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(missing)
}

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The missing-peer policy in one place: the path of `name`, or `None` after
/// printing `SKIPPED: …` when it is missing outside CI.
///
/// # Panics
///
/// When `name` is missing and [`in_ci`] is true, so that CI fails loudly
/// instead of skipping.
#[track_caller]
pub fn tool_or_skip(name: &str) -> Option<PathBuf> {
    match require_tool(name) {
        Ok(path) => Some(path),
        Err(missing) if in_ci() => panic!("{missing}"),
        Err(missing) => {
            eprintln!("SKIPPED: {missing}");
            None
        }
    }
}

/// [`tool_or_skip`] for several tools: `None` (after one `SKIPPED:` line per
/// missing tool) if any is missing.
///
/// # Panics
///
/// Under CI, naming every missing tool.
#[track_caller]
pub fn tools_or_skip(names: &[&str]) -> Option<Vec<PathBuf>> {
    let mut found = Vec::with_capacity(names.len());
    let mut missing = Vec::new();
    for name in names {
        match require_tool(name) {
            Ok(path) => found.push(path),
            Err(m) => missing.push(m),
        }
    }
    if missing.is_empty() {
        return Some(found);
    }
    let lines: Vec<String> = missing.iter().map(ToString::to_string).collect();
    if in_ci() {
        panic!("{}", lines.join("\n"));
    }
    for line in lines {
        eprintln!("SKIPPED: {line}");
    }
    None
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
///
/// The port is released before returning, so another process may take it
/// first; callers that hand it to a peer must detect that (as
/// [`tgt::Tgtd::start`] does) and retry. Within this process a port is
/// handed out only once: the kernel readily gives the same port to the next
/// `bind(…:0)`, and parallel tests would otherwise race for it.
pub fn free_loopback_port() -> io::Result<u16> {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    for _ in 0..64 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = listener.local_addr()?.port();
        // A poisoned lock only means another test panicked meanwhile.
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
        if handed_out.insert(port) {
            return Ok(port);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrNotAvailable,
        "no fresh loopback port after 64 tries",
    ))
}

/// Creates a sparse file of `size` bytes with a fresh name (`lun-*.img`)
/// in `dir`, for use as a file-backed LUN.
pub fn create_sparse_file(dir: &Path, size: u64) -> io::Result<PathBuf> {
    let file = tempfile::Builder::new()
        .prefix("lun-")
        .suffix(".img")
        .tempfile_in(dir)?;
    file.as_file().set_len(size)?;
    let (_, path) = file.keep().map_err(|e| e.error)?;
    Ok(path)
}

/// What a finished external program left behind.
#[derive(Debug, Clone)]
pub struct ToolOutput {
    /// Program name, for messages.
    pub tool: String,
    pub status: ExitStatus,
    /// Standard output (lossy UTF-8). When stderr was merged into stdout, the
    /// interleaving is exactly as the program wrote it.
    pub stdout: String,
    /// Standard error (lossy UTF-8); empty when merged into `stdout`.
    pub stderr: String,
    pub elapsed: Duration,
}

impl ToolOutput {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// `self` if the program exited with status 0, else [`PeerError::Failed`].
    pub fn ensure_success(self) -> Result<Self, PeerError> {
        if self.success() {
            Ok(self)
        } else {
            Err(PeerError::Failed {
                tool: self.tool.clone(),
                status: self.status,
                output: self.combined(),
            })
        }
    }

    /// Stdout followed by stderr, for error messages.
    pub fn combined(&self) -> String {
        if self.stderr.is_empty() {
            self.stdout.clone()
        } else {
            format!("{}\n--- stderr ---\n{}", self.stdout, self.stderr)
        }
    }
}

/// Runs `name` (looked up with [`require_tool`]) with `args` and a timeout,
/// stdin closed, stdout and stderr captured separately.
pub fn run_tool(name: &str, args: &[&str], timeout: Duration) -> Result<ToolOutput, PeerError> {
    let program = require_tool(name)?;
    let mut cmd = Command::new(&program);
    cmd.args(args);
    run_captured(name, cmd, timeout, false)
}

/// Runs `cmd` to completion or until `timeout`, capturing its output.
///
/// With `merge_stderr`, both streams go to one file so that their order is
/// preserved (iscsi-test-cu interleaves test names and messages).
pub(crate) fn run_captured(
    tool: &str,
    mut cmd: Command,
    timeout: Duration,
    merge_stderr: bool,
) -> Result<ToolOutput, PeerError> {
    let mut out = tempfile::tempfile()?;
    let mut err = tempfile::tempfile()?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(out.try_clone()?));
    if merge_stderr {
        cmd.stderr(Stdio::from(out.try_clone()?));
    } else {
        cmd.stderr(Stdio::from(err.try_clone()?));
    }
    let started = Instant::now();
    let child = cmd.spawn().map_err(|source| PeerError::Spawn {
        tool: tool.to_owned(),
        source,
    })?;
    let mut guard = ChildGuard(Some(child));
    let status = wait_deadline(&mut guard, started + timeout)?;
    let stdout = read_all(&mut out)?;
    let stderr = read_all(&mut err)?;
    match status {
        Some(status) => Ok(ToolOutput {
            tool: tool.to_owned(),
            status,
            stdout,
            stderr,
            elapsed: started.elapsed(),
        }),
        None => Err(PeerError::Timeout {
            tool: tool.to_owned(),
            timeout,
            output: if stderr.is_empty() {
                stdout
            } else {
                format!("{stdout}\n--- stderr ---\n{stderr}")
            },
        }),
    }
}

/// Waits for the guarded child until `deadline`; on expiry kills and reaps it
/// and returns `None`.
fn wait_deadline(guard: &mut ChildGuard, deadline: Instant) -> io::Result<Option<ExitStatus>> {
    let Some(child) = guard.0.as_mut() else {
        return Err(io::Error::other("child already reaped"));
    };
    if let Some(status) = poll_exit(child, deadline)? {
        guard.0 = None;
        return Ok(Some(status));
    }
    guard.kill_and_reap();
    Ok(None)
}

/// Polls `child` until it exits or `deadline` passes.
pub(crate) fn poll_exit(child: &mut Child, deadline: Instant) -> io::Result<Option<ExitStatus>> {
    // Short first sleeps keep quick tools quick; later ones keep the poll cheap.
    let mut pause = Duration::from_millis(2);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

fn read_all(file: &mut File) -> io::Result<String> {
    file.seek(SeekFrom::Start(0))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Kills (SIGKILL) and reaps a child on drop, so that a panic or an early
/// return never leaves a process or a zombie behind.
pub(crate) struct ChildGuard(pub(crate) Option<Child>);

impl ChildGuard {
    pub(crate) fn kill_and_reap(&mut self) {
        if let Some(mut child) = self.0.take() {
            // Errors mean it already exited; `wait` still reaps it.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl fmt::Debug for ChildGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(child) => write!(f, "ChildGuard(pid {})", child.id()),
            None => f.write_str("ChildGuard(reaped)"),
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill_and_reap();
    }
}

/// The loopback address with `port`.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ci_values() {
        assert!(!ci_value_means_ci(None));
        assert!(!ci_value_means_ci(Some(OsStr::new(""))));
        assert!(!ci_value_means_ci(Some(OsStr::new("false"))));
        assert!(!ci_value_means_ci(Some(OsStr::new("FALSE"))));
        assert!(!ci_value_means_ci(Some(OsStr::new("0"))));
        assert!(ci_value_means_ci(Some(OsStr::new("true"))));
        assert!(ci_value_means_ci(Some(OsStr::new("1"))));
        assert!(ci_value_means_ci(Some(OsStr::new("yes"))));
    }

    #[test]
    fn missing_tool_message_names_package() {
        let err = require_tool("tgtd-does-not-exist").unwrap_err();
        assert_eq!(err.package, None);
        let m = MissingTool {
            tool: "tgtd".into(),
            package: package_for("tgtd"),
        };
        assert_eq!(
            m.to_string(),
            "tgtd not found: install package tgt (apt-get install tgt) or run .ci/run"
        );
        assert_eq!(package_for("iscsi-test-cu"), Some("libiscsi-bin"));
    }

    #[test]
    fn finds_a_tool_on_path_and_by_path() {
        let sh = require_tool("sh").expect("sh is on every Debian machine");
        assert!(sh.is_absolute() || sh.starts_with("."));
        assert_eq!(require_tool(sh.to_str().unwrap()).unwrap(), sh);
        assert!(require_tool("/nonexistent/sh").is_err());
    }

    #[test]
    fn run_tool_captures_both_streams() {
        let out = run_tool(
            "sh",
            &["-c", "echo out; echo err >&2; exit 3"],
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(out.stdout, "out\n");
        assert_eq!(out.stderr, "err\n");
        assert_eq!(out.status.code(), Some(3));
        assert!(matches!(
            out.ensure_success(),
            Err(PeerError::Failed { .. })
        ));
    }

    #[test]
    fn merged_streams_keep_their_order() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo a; echo b >&2; echo c"]);
        let out = run_captured("sh", cmd, Duration::from_secs(10), true).unwrap();
        assert_eq!(out.stdout, "a\nb\nc\n");
        assert!(out.stderr.is_empty());
    }

    #[test]
    fn timeout_kills_the_child() {
        let started = Instant::now();
        let err = run_tool(
            "sh",
            &["-c", "echo started; exec sleep 30"],
            Duration::from_millis(300),
        )
        .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(10));
        match err {
            PeerError::Timeout { output, .. } => assert_eq!(output, "started\n"),
            other => panic!("expected a timeout, got {other}"),
        }
    }

    #[test]
    fn sparse_file_has_the_size_and_a_fresh_name() {
        let dir = tempfile::tempdir().unwrap();
        let a = create_sparse_file(dir.path(), 1 << 20).unwrap();
        let b = create_sparse_file(dir.path(), 4096).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.metadata().unwrap().len(), 1 << 20);
        assert_eq!(b.metadata().unwrap().len(), 4096);
    }

    #[test]
    fn free_ports_are_not_handed_out_twice() {
        let ports: Vec<u16> = (0..32).map(|_| free_loopback_port().unwrap()).collect();
        let distinct: BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len(), "{ports:?}");
        assert!(!distinct.contains(&0));
    }
}
