//! tgt's userspace iSCSI target (`tgtd`, Debian package `tgt`) as a private,
//! disposable peer on loopback.
//!
//! Each [`Tgtd`] is one `tgtd -f` child process with:
//!
//! - its own iSCSI portal on `127.0.0.1:<free port>`;
//! - its own management channel: `tgtd` and `tgtadm` talk over a Unix socket
//!   `<TGT_IPC_SOCKET>.<control port>` (default `/var/run/tgtd/socket.0`,
//!   plus a `.lock` file that `tgtd` holds with `lockf`). We point
//!   `TGT_IPC_SOCKET` into the instance's temporary directory *and* pass a
//!   per-instance `-C/--control-port`, so parallel instances never share a
//!   socket or a lock, and nothing is left in `/run/tgtd` (tgtd does not
//!   unlink its socket on exit);
//! - its own temporary directory holding that socket, the log of tgtd's
//!   stdout/stderr (`tgtd.log`) and the backing files of file LUNs.
//!
//! Facts about tgt 1.0.85 this relies on (read from its source and checked
//! here):
//!
//! - The `--iscsi` argument is stored and parsed when the iSCSI driver
//!   starts, after the management socket exists but before the event loop
//!   runs; the last `--iscsi` wins, so options are joined with commas
//!   (`portal=127.0.0.1:3261,nop_interval=5`). A `tgtadm` request is only
//!   answered by the event loop, so the first successful `tgtadm` proves the
//!   portal has been set up — or has failed: **tgtd keeps running when it
//!   cannot bind its portal** ("unable to bind server socket"). After
//!   readiness we therefore check in `/proc` that the listening socket on the
//!   portal belongs to our tgtd, and retry with another port if not.
//! - tgtd's SIGTERM handler does nothing: SIGTERM never stops it. The
//!   graceful stop is `tgtadm --op delete --mode system`, which succeeds only
//!   once no target is left, so [`Drop`] first deletes every target with
//!   `--force`, then asks for the system stop, waits, and SIGKILLs as a last
//!   resort. The child is always reaped.
//! - The RDMA ("iser") driver fails to start without RDMA kernel modules,
//!   and tgtd cannot adjust `oom_score_adj`/`nr_open` in a container; both
//!   messages are harmless. `-d 1` adds debug messages (tgtd accepts only
//!   0 or 1) to the same log.
//! - LUN 0 of every target is tgt's controller LUN (`STORAGE_ARRAY_CONTROLLER`);
//!   the first disk is LUN 1, with 512-byte blocks.
//!
//! If the test process dies without running `Drop` (SIGKILL, abort), a tiny
//! watchdog (`sh`, blocked reading a pipe only we hold) sees end-of-file,
//! SIGKILLs tgtd and removes the directory, so no orphan keeps a port.

use std::fs::{self, File};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::{ChildGuard, PeerError, ToolOutput, create_sparse_file, free_loopback_port, loopback};

/// How many fresh ports [`Tgtd::start`] tries when another process takes
/// the chosen port first.
const PORT_ATTEMPTS: usize = 5;
/// Bound on each `tgtadm` call: it talks to a local daemon.
const TGTADM_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `Drop` waits for the graceful stop before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// `sockaddr_un.sun_path` holds 108 bytes including the terminating NUL.
const SUN_PATH_MAX: usize = 107;
/// Room for `.<control port>.lock` after the IPC base path.
const IPC_SUFFIX_MAX: usize = ".32767.lock".len();

/// Options for [`Tgtd::start_with`].
#[derive(Debug, Clone)]
pub struct TgtdConfig {
    /// Run with `-d 1` (debug messages in the log).
    pub debug: bool,
    /// Extra iSCSI driver options joined after the portal, such as
    /// `nop_interval=5` or `nop_count=3` (see tgtd(8), "ISCSI OPTIONS").
    pub iscsi_options: Vec<String>,
    /// How long to wait for tgtd to answer `tgtadm`.
    pub ready_timeout: Duration,
}

impl Default for TgtdConfig {
    fn default() -> Self {
        Self {
            debug: false,
            iscsi_options: Vec::new(),
            ready_timeout: Duration::from_secs(15),
        }
    }
}

/// A running `tgtd` on a private loopback portal; stopped and reaped on drop.
#[derive(Debug)]
pub struct Tgtd {
    child: ChildGuard,
    /// Kills tgtd if this process dies without dropping us.
    watchdog: ChildGuard,
    /// Write end of the watchdog's stdin; only this process holds it.
    watchdog_pipe: Option<ChildStdin>,
    pid: u32,
    portal: SocketAddr,
    control_port: u16,
    ipc_base: PathBuf,
    log_path: PathBuf,
    tgtadm: PathBuf,
    /// Targets to delete before stopping (tgtd refuses to stop with any).
    tids: Vec<u32>,
    /// Dropped last (field order): removes socket, log and backing files.
    dir: TempDir,
}

/// Why one start attempt failed: a port race is retried, anything else not.
enum Attempt {
    PortTaken(PeerError),
    Fatal(PeerError),
}

impl Tgtd {
    /// Starts tgtd with [`TgtdConfig::default`]; it has no targets yet.
    pub fn start() -> Result<Self, PeerError> {
        Self::start_with(TgtdConfig::default())
    }

    /// Starts tgtd on a free loopback port and waits until it answers
    /// `tgtadm` and owns its portal.
    pub fn start_with(config: TgtdConfig) -> Result<Self, PeerError> {
        let tgtd = super::require_tool("tgtd")?;
        let tgtadm = super::require_tool("tgtadm")?;
        let mut last = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = free_loopback_port().map_err(PeerError::Io)?;
            match Self::try_start(&tgtd, &tgtadm, &config, port) {
                Ok(t) => return Ok(t),
                Err(Attempt::PortTaken(e)) => last = Some(e),
                Err(Attempt::Fatal(e)) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| PeerError::TgtdNotReady {
            reason: "no start attempt was made".into(),
            log: String::new(),
        }))
    }

    /// tgtd with one target (tid 1, IQN `iqn.2026-11.test.iesp:tgt-<port>`)
    /// whose LUN 1 is a sparse file of `size_bytes` in the instance's
    /// directory, open to all initiators. Returns the URL of LUN 1.
    pub fn with_file_lun(size_bytes: u64) -> Result<(Self, String), PeerError> {
        let mut tgtd = Self::start()?;
        let iqn = format!("iqn.2026-11.test.iesp:tgt-{}", tgtd.portal.port());
        let backing = create_sparse_file(tgtd.dir(), size_bytes)?;
        tgtd.add_target(1, &iqn)?;
        tgtd.add_file_lun(1, 1, &backing)?;
        tgtd.bind_all(1)?;
        let url = tgtd.url(&iqn, 1);
        Ok((tgtd, url))
    }

    /// tgtd with one target (tid 1) whose LUN 1 is a sparse file of
    /// `size_bytes`, open to all initiators that authenticate with CHAP as
    /// `user`/`secret`; the target answers mutual CHAP as
    /// `target_user`/`target_secret`. Returns the target's IQN.
    pub fn with_chap_lun(
        size_bytes: u64,
        (user, secret): (&str, &str),
        (target_user, target_secret): (&str, &str),
    ) -> Result<(Self, String), PeerError> {
        let mut tgtd = Self::start()?;
        let iqn = format!("iqn.2026-11.test.iesp:chap-{}", tgtd.portal.port());
        let backing = create_sparse_file(tgtd.dir(), size_bytes)?;
        tgtd.add_target(1, &iqn)?;
        tgtd.add_file_lun(1, 1, &backing)?;
        tgtd.bind_all(1)?;
        tgtd.add_account(user, secret)?;
        tgtd.add_account(target_user, target_secret)?;
        tgtd.bind_account(1, user, false)?;
        tgtd.bind_account(1, target_user, true)?;
        Ok((tgtd, iqn))
    }

    fn try_start(
        tgtd: &Path,
        tgtadm: &Path,
        config: &TgtdConfig,
        port: u16,
    ) -> Result<Self, Attempt> {
        let fatal = |e: PeerError| Attempt::Fatal(e);
        let dir = ipc_tempdir().map_err(|e| fatal(e.into()))?;
        let portal = loopback(port);
        // `control_port` is a C `short`; any value in 1..=32767 works, and a
        // per-port value keeps instances apart even if TGT_IPC_SOCKET were
        // ignored.
        let control_port = 1 + port % 32767;
        let ipc_base = dir.path().join("ipc");
        let log_path = dir.path().join("tgtd.log");
        let log = File::create(&log_path).map_err(|e| fatal(e.into()))?;

        let mut iscsi = format!("portal={portal}");
        for opt in &config.iscsi_options {
            iscsi.push(',');
            iscsi.push_str(opt);
        }
        let mut cmd = Command::new(tgtd);
        cmd.arg("-f")
            .arg("-C")
            .arg(control_port.to_string())
            .arg("--iscsi")
            .arg(&iscsi);
        if config.debug {
            cmd.args(["-d", "1"]);
        }
        cmd.env("TGT_IPC_SOCKET", &ipc_base)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().map_err(|e| fatal(e.into()))?))
            .stderr(Stdio::from(log));
        let child = cmd.spawn().map_err(|source| {
            fatal(PeerError::Spawn {
                tool: "tgtd".into(),
                source,
            })
        })?;
        let pid = child.id();
        // From here on, dropping `this` stops and reaps tgtd.
        let mut this = Tgtd {
            child: ChildGuard(Some(child)),
            watchdog: ChildGuard(None),
            watchdog_pipe: None,
            pid,
            portal,
            control_port,
            ipc_base,
            log_path,
            tgtadm: tgtadm.to_path_buf(),
            tids: Vec::new(),
            dir,
        };
        this.spawn_watchdog();
        this.wait_ready(config.ready_timeout)?;
        match owns_listener(pid, portal) {
            // No /proc: trust the log check below.
            Ok(None) | Ok(Some(true)) => {}
            Ok(Some(false)) => {
                return Err(Attempt::PortTaken(
                    this.not_ready(format!("another process holds {portal}")),
                ));
            }
            Err(e) => return Err(fatal(e.into())),
        }
        if this.log().contains("failed to create/bind to portal") {
            return Err(Attempt::PortTaken(
                this.not_ready(format!("cannot bind portal {portal}")),
            ));
        }
        Ok(this)
    }

    /// Polls `tgtadm --op show --mode sys` until it succeeds, tgtd exits or
    /// `timeout` passes.
    fn wait_ready(&mut self, timeout: Duration) -> Result<(), Attempt> {
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(5);
        loop {
            let exited = match self.child.0.as_mut().map(|c| c.try_wait()) {
                Some(Ok(status)) => status,
                Some(Err(e)) => return Err(Attempt::Fatal(e.into())),
                None => None,
            };
            if let Some(status) = exited {
                self.child.0 = None;
                let log = self.log();
                let err = PeerError::TgtdNotReady {
                    reason: format!("tgtd exited early ({status})"),
                    log: log.clone(),
                };
                // Lost a race for the management lock: try other ports.
                return Err(if log.contains("another tgtd is using") {
                    Attempt::PortTaken(err)
                } else {
                    Attempt::Fatal(err)
                });
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(Attempt::Fatal(
                    self.not_ready(format!("no answer to tgtadm within {timeout:?}")),
                ));
            }
            match self.tgtadm_raw(&["--op", "show", "--mode", "sys"], remaining) {
                Ok(out) if out.success() => return Ok(()),
                // 107 = cannot connect: the socket is not there yet.
                Ok(_) | Err(PeerError::Timeout { .. }) => {}
                Err(e) => return Err(Attempt::Fatal(e)),
            }
            thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// Starts `sh` blocked on reading a pipe whose write end only this
    /// process holds (std creates pipes close-on-exec): when this process
    /// dies, `read` sees end-of-file and the shell SIGKILLs tgtd and removes
    /// the private directory. `Drop` SIGKILLs the watchdog first, so this
    /// runs only when `Drop` did not. Best effort: without `sh` there is no
    /// watchdog, and `Drop` still works.
    fn spawn_watchdog(&mut self) {
        let spawned = Command::new("sh")
            .args([
                "-c",
                "read -r _ignored; kill -KILL \"$1\" 2>/dev/null; rm -rf -- \"$2\"",
                "iesp-tgtd-watchdog",
            ])
            .arg(self.pid.to_string())
            .arg(self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        if let Ok(mut child) = spawned {
            self.watchdog_pipe = child.stdin.take();
            self.watchdog = ChildGuard(Some(child));
        }
    }

    /// Adds target `tid` (must be non-zero) named `iqn`.
    pub fn add_target(&mut self, tid: u32, iqn: &str) -> Result<(), PeerError> {
        let tid_s = tid.to_string();
        self.tgtadm(&[
            "--lld",
            "iscsi",
            "--op",
            "new",
            "--mode",
            "target",
            "--tid",
            &tid_s,
            "--targetname",
            iqn,
        ])?;
        self.tids.push(tid);
        Ok(())
    }

    /// Adds logical unit `lun` (1 or more; 0 is tgt's controller LUN) of
    /// target `tid`, backed by the regular file or block device at `path`.
    pub fn add_file_lun(&self, tid: u32, lun: u64, path: &Path) -> Result<(), PeerError> {
        let path = path.to_str().ok_or_else(|| PeerError::InvalidArgument {
            tool: "tgtadm".into(),
            reason: format!("backing store path is not UTF-8: {}", path.display()),
        })?;
        self.tgtadm(&[
            "--lld",
            "iscsi",
            "--op",
            "new",
            "--mode",
            "logicalunit",
            "--tid",
            &tid.to_string(),
            "--lun",
            &lun.to_string(),
            "--backing-store",
            path,
        ])
        .map(drop)
    }

    /// Lets every initiator address log in to target `tid`.
    pub fn bind_all(&self, tid: u32) -> Result<(), PeerError> {
        self.tgtadm(&[
            "--lld",
            "iscsi",
            "--op",
            "bind",
            "--mode",
            "target",
            "--tid",
            &tid.to_string(),
            "--initiator-address",
            "ALL",
        ])
        .map(drop)
    }

    /// Sets a target parameter, e.g. `MaxRecvDataSegmentLength` or
    /// `nop_interval` (names as `tgtadm --op show --mode target --tid N`
    /// lists them).
    pub fn update_target_param(&self, tid: u32, name: &str, value: &str) -> Result<(), PeerError> {
        self.tgtadm(&[
            "--lld",
            "iscsi",
            "--op",
            "update",
            "--mode",
            "target",
            "--tid",
            &tid.to_string(),
            "--name",
            name,
            "--value",
            value,
        ])
        .map(drop)
    }

    /// Creates a CHAP account (`tgtadm --mode account --op new`).
    pub fn add_account(&self, user: &str, password: &str) -> Result<(), PeerError> {
        self.tgtadm(&[
            "--lld",
            "iscsi",
            "--op",
            "new",
            "--mode",
            "account",
            "--user",
            user,
            "--password",
            password,
        ])
        .map(drop)
    }

    /// Binds a CHAP account to target `tid`: incoming (initiators must
    /// authenticate with it) or outgoing (the target's own name and secret
    /// for mutual CHAP).
    pub fn bind_account(&self, tid: u32, user: &str, outgoing: bool) -> Result<(), PeerError> {
        let tid = tid.to_string();
        let mut args = vec![
            "--lld", "iscsi", "--op", "bind", "--mode", "account", "--tid", &tid, "--user", user,
        ];
        if outgoing {
            args.push("--outgoing");
        }
        self.tgtadm(&args).map(drop)
    }

    /// Deletes target `tid` even if sessions are logged in.
    pub fn delete_target(&mut self, tid: u32) -> Result<(), PeerError> {
        self.tgtadm(&[
            "--lld",
            "iscsi",
            "--op",
            "delete",
            "--mode",
            "target",
            "--tid",
            &tid.to_string(),
            "--force",
        ])?;
        self.tids.retain(|t| *t != tid);
        Ok(())
    }

    /// `tgtadm --op show --mode target`: targets, sessions, LUNs, ACLs.
    pub fn show_targets(&self) -> Result<String, PeerError> {
        self.tgtadm(&["--lld", "iscsi", "--op", "show", "--mode", "target"])
            .map(|o| o.stdout)
    }

    /// The iSCSI portal, `127.0.0.1:<port>`.
    pub fn portal(&self) -> SocketAddr {
        self.portal
    }

    /// `iscsi://127.0.0.1:<port>/<iqn>/<lun>` (libiscsi URL form).
    pub fn url(&self, iqn: &str, lun: u64) -> String {
        format!("iscsi://{}/{iqn}/{lun}", self.portal)
    }

    /// `iscsi://127.0.0.1:<port>`, for discovery (`iscsi-ls`).
    pub fn portal_url(&self) -> String {
        format!("iscsi://{}", self.portal)
    }

    /// The instance's private directory (backing files belong here).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The file receiving tgtd's stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// tgtd's output so far (empty if unreadable).
    pub fn log(&self) -> String {
        fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// tgtd's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The watchdog shell's process id, if it started (for cleanup checks).
    pub fn watchdog_pid(&self) -> Option<u32> {
        self.watchdog.0.as_ref().map(std::process::Child::id)
    }

    /// The `-C` control port (management socket suffix) of this instance.
    pub fn control_port(&self) -> u16 {
        self.control_port
    }

    fn not_ready(&self, reason: String) -> PeerError {
        PeerError::TgtdNotReady {
            reason,
            log: self.log(),
        }
    }

    /// Runs tgtadm against this instance; non-zero exit is an error.
    fn tgtadm(&self, args: &[&str]) -> Result<ToolOutput, PeerError> {
        self.tgtadm_raw(args, TGTADM_TIMEOUT)?.ensure_success()
    }

    fn tgtadm_raw(&self, args: &[&str], timeout: Duration) -> Result<ToolOutput, PeerError> {
        let mut cmd = Command::new(&self.tgtadm);
        cmd.env("TGT_IPC_SOCKET", &self.ipc_base)
            .arg("-C")
            .arg(self.control_port.to_string())
            .args(args);
        super::run_captured("tgtadm", cmd, timeout, false)
    }

    /// Deletes the targets, asks tgtd to exit, SIGKILLs it if it does not,
    /// and reaps it.
    fn stop(&mut self) {
        // The watchdog goes first: once tgtd is reaped its pid may be reused.
        self.watchdog.kill_and_reap();
        self.watchdog_pipe = None;

        let Some(child) = self.child.0.as_mut() else {
            return;
        };
        if matches!(child.try_wait(), Ok(None)) {
            for tid in std::mem::take(&mut self.tids) {
                let _ = self.tgtadm_raw(
                    &[
                        "--lld",
                        "iscsi",
                        "--op",
                        "delete",
                        "--mode",
                        "target",
                        "--tid",
                        &tid.to_string(),
                        "--force",
                    ],
                    TGTADM_TIMEOUT,
                );
            }
            let _ = self.tgtadm_raw(&["--op", "delete", "--mode", "system"], TGTADM_TIMEOUT);
            let exited = match self.child.0.as_mut() {
                Some(child) => super::poll_exit(child, Instant::now() + STOP_GRACE),
                None => Ok(None),
            };
            if let Ok(Some(_)) = exited {
                self.child.0 = None;
            }
        }
        // SIGKILL if still running; reap in every case.
        self.child.kill_and_reap();
    }
}

impl Drop for Tgtd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A temporary directory whose path leaves room for the IPC socket name
/// within `sun_path`; falls back to `/tmp` when `$TMPDIR` is long.
fn ipc_tempdir() -> io::Result<TempDir> {
    let fits =
        |d: &TempDir| d.path().join("ipc").as_os_str().len() + IPC_SUFFIX_MAX <= SUN_PATH_MAX;
    let dir = tempfile::Builder::new().prefix("iesp-tgtd-").tempdir()?;
    if fits(&dir) {
        return Ok(dir);
    }
    let dir = tempfile::Builder::new()
        .prefix("iesp-tgtd-")
        .tempdir_in("/tmp")?;
    if fits(&dir) {
        Ok(dir)
    } else {
        Err(io::Error::other(
            "no temporary directory short enough for a Unix socket path",
        ))
    }
}

/// Whether process `pid` holds the TCP socket listening on `addr`.
///
/// `Ok(None)` when `/proc` is not available (not Linux, or hidden).
fn owns_listener(pid: u32, addr: SocketAddr) -> io::Result<Option<bool>> {
    let table = match fs::read_to_string(if addr.is_ipv4() {
        "/proc/net/tcp"
    } else {
        "/proc/net/tcp6"
    }) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let inodes = listening_inodes(&table, addr);
    if inodes.is_empty() {
        return Ok(Some(false));
    }
    let fd_dir = match fs::read_dir(format!("/proc/{pid}/fd")) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    for entry in fd_dir {
        let Ok(target) = fs::read_link(entry?.path()) else {
            continue; // fd closed meanwhile
        };
        let target = target.to_string_lossy();
        let inode = target
            .strip_prefix("socket:[")
            .and_then(|s| s.strip_suffix(']'))
            .and_then(|s| s.parse::<u64>().ok());
        if inode.is_some_and(|i| inodes.contains(&i)) {
            return Ok(Some(true));
        }
    }
    Ok(Some(false))
}

/// Socket inodes in a `/proc/net/tcp{,6}` table that listen on `addr`.
fn listening_inodes(table: &str, addr: SocketAddr) -> Vec<u64> {
    const TCP_LISTEN: &str = "0A";
    let want_ip = proc_hex_ip(addr.ip());
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local, state, inode) = (fields.get(1)?, fields.get(3)?, fields.get(9)?);
            let (ip, port) = local.split_once(':')?;
            let listening = *state == TCP_LISTEN
                && ip.eq_ignore_ascii_case(&want_ip)
                && u16::from_str_radix(port, 16).ok()? == addr.port();
            listening.then(|| inode.parse().ok()).flatten()
        })
        .collect()
}

/// The kernel prints addresses in `/proc/net/tcp` as the in-memory
/// (network-order) bytes read as native-endian 32-bit words, in hex.
fn proc_hex_ip(ip: IpAddr) -> String {
    let octets: Vec<u8> = match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    octets
        .chunks_exact(4)
        .map(|w| format!("{:08X}", u32::from_ne_bytes([w[0], w[1], w[2], w[3]])))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A real /proc/net/tcp excerpt: tgtd listening on 127.0.0.1:13271
    /// (0x33D7) and an established connection to it.
    const PROC_NET_TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:33D7 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 9460 1 0000000000000000 100 0 0 10 0
   1: 0100007F:33D7 0100007F:A1B2 01 00000000:00000000 00:00000000 00000000     0        0 9999 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:33D8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 9461 1 0000000000000000 100 0 0 10 0
";

    #[test]
    #[cfg(target_endian = "little")]
    fn parses_listening_sockets_from_proc() {
        let addr: SocketAddr = "127.0.0.1:13271".parse().unwrap();
        assert_eq!(listening_inodes(PROC_NET_TCP, addr), vec![9460]);
        let other: SocketAddr = "127.0.0.1:13273".parse().unwrap();
        assert!(listening_inodes(PROC_NET_TCP, other).is_empty());
        let wrong_ip: SocketAddr = "127.0.0.2:13271".parse().unwrap();
        assert!(listening_inodes(PROC_NET_TCP, wrong_ip).is_empty());
    }

    #[test]
    fn owns_listener_tells_our_socket_from_others() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let me = std::process::id();
        // None only where /proc is missing; then there is nothing to check.
        if let Some(owned) = owns_listener(me, addr).unwrap() {
            assert!(owned);
            // pid 1 is never this test process.
            assert_ne!(owns_listener(1, addr).ok().flatten(), Some(true));
        }
        drop(listener);
        assert_ne!(owns_listener(me, addr).unwrap(), Some(true));
    }

    /// tgtd keeps running when its portal is taken; the start attempt must
    /// notice, stop that tgtd and report the port as taken (then retried).
    #[test]
    fn detects_a_portal_held_by_another_process() {
        let Some(tools) = crate::peers::tools_or_skip(&["tgtd", "tgtadm"]) else {
            return;
        };
        let squatter = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = squatter.local_addr().unwrap().port();
        match Tgtd::try_start(&tools[0], &tools[1], &TgtdConfig::default(), port) {
            Err(Attempt::PortTaken(PeerError::TgtdNotReady { reason, log })) => {
                assert!(reason.contains(&port.to_string()), "{reason}");
                assert!(log.contains("bind"), "{log}");
            }
            Err(Attempt::PortTaken(e) | Attempt::Fatal(e)) => panic!("wrong error: {e}"),
            Ok(t) => panic!("tgtd on a taken port {} reported ready", t.portal()),
        }
        // The squatter still owns its port: the failed tgtd did not steal it.
        assert_eq!(
            owns_listener(std::process::id(), loopback(port))
                .ok()
                .flatten(),
            Some(true)
        );
    }

    #[test]
    fn debug_mode_starts_and_logs() {
        let Some(_) = crate::peers::tools_or_skip(&["tgtd", "tgtadm"]) else {
            return;
        };
        let config = TgtdConfig {
            debug: true,
            iscsi_options: vec!["nop_interval=7".into()],
            ..TgtdConfig::default()
        };
        let mut t = Tgtd::start_with(config).unwrap();
        t.add_target(3, "iqn.2026-11.test.iesp:debug").unwrap();
        let shown = t.show_targets().unwrap();
        assert!(
            shown.contains("Target 3: iqn.2026-11.test.iesp:debug"),
            "{shown}"
        );
        t.update_target_param(3, "MaxRecvDataSegmentLength", "65536")
            .unwrap();
        let params = t
            .tgtadm(&[
                "--lld", "iscsi", "--op", "show", "--mode", "target", "--tid", "3",
            ])
            .unwrap()
            .stdout;
        // The extra --iscsi option became the targets' default.
        assert!(params.contains("nop_interval=7"), "{params}");
        assert!(
            params.contains("MaxRecvDataSegmentLength=65536"),
            "{params}"
        );
        assert!(t.update_target_param(3, "NoSuchParam", "1").is_err());
        t.delete_target(3).unwrap();
        assert!(!t.show_targets().unwrap().contains("Target 3"));
        let sys = t.tgtadm(&["--op", "show", "--mode", "sys"]).unwrap().stdout;
        assert!(sys.contains("debug: on"), "{sys}");
        // Debug-only messages (dprintf) reach the log.
        assert!(t.log().contains("mtask_"), "{}", t.log());
    }

    #[test]
    fn ipc_tempdir_leaves_room_for_the_socket_name() {
        let dir = ipc_tempdir().unwrap();
        assert!(dir.path().join("ipc").as_os_str().len() + IPC_SUFFIX_MAX <= SUN_PATH_MAX);
    }
}
