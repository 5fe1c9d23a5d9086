//! Running the unpacked qemu: its command-line tools (`qemu-img`,
//! `qemu-io`) with their environment, and virtual machines whose serial
//! console goes to a file that the checks watch.
//!
//! A VM's only network is qemu's user-mode stack with `restrict=on` (the
//! guest reaches nothing) and one `guestfwd`: the guest-only address
//! [`GUEST_TARGET_IP`] at the target's port runs `iesp-test interop relay
//! HOST:PORT` for each guest connection, which carries it to the target
//! named by the URL. Software emulation (TCG) only.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::assets::{AssetError, Cache, Set};

/// The address the guest reaches the target at (inside qemu's user network
/// only; on the host the relay connects to the URL's address).
pub const GUEST_TARGET_IP: &str = "10.0.2.100";
/// The guest's own address in qemu's user network.
pub const GUEST_IP: &str = "10.0.2.15";

/// The unpacked qemu.
#[derive(Clone, Debug)]
pub struct Qemu {
    root: PathBuf,
    firmware: PathBuf,
    img: PathBuf,
    io: PathBuf,
    system: PathBuf,
}

impl Qemu {
    /// Finds qemu in `cache`, or names the package that is missing.
    pub fn locate(cache: &Cache) -> Result<Qemu, AssetError> {
        let s = Set::Qemu;
        cache.file(
            s,
            "usr/lib/x86_64-linux-gnu/qemu/block-iscsi.so",
            "qemu-block-extra",
        )?;
        cache.file(
            s,
            "usr/lib/x86_64-linux-gnu/qemu/accel-tcg-x86_64.so",
            "qemu-system-common",
        )?;
        cache.file(s, "usr/share/seabios/bios-256k.bin", "seabios")?;
        cache.file(s, "usr/lib/ipxe/qemu/efi-e1000.rom", "ipxe-qemu")?;
        cache.file(s, "usr/lib/x86_64-linux-gnu/libslirp.so.0", "libslirp0")?;
        Ok(Qemu {
            root: cache.root(s),
            firmware: cache.firmware_dir(),
            img: cache.file(s, "usr/bin/qemu-img", "qemu-utils")?,
            io: cache.file(s, "usr/bin/qemu-io", "qemu-utils")?,
            system: cache.file(s, "usr/bin/qemu-system-x86_64", "qemu-system-x86")?,
        })
    }

    fn with_env(&self, program: &Path) -> Command {
        let mut c = Command::new(program);
        c.env(
            "LD_LIBRARY_PATH",
            self.root.join("usr/lib/x86_64-linux-gnu"),
        )
        .env(
            "QEMU_MODULE_DIR",
            self.root.join("usr/lib/x86_64-linux-gnu/qemu"),
        )
        .stdin(Stdio::null());
        c
    }

    pub fn img(&self) -> Command {
        self.with_env(&self.img)
    }

    pub fn io(&self) -> Command {
        self.with_env(&self.io)
    }

    /// `qemu-system-x86_64` with the firmware directory, TCG, no display,
    /// no reboot, and the serial console written to `console`.
    pub fn system(&self, console: &Path, memory_mib: u32) -> Command {
        let mut c = self.with_env(&self.system);
        c.arg("-L")
            .arg(&self.firmware)
            .args(["-accel", "tcg", "-display", "none", "-no-reboot"])
            .args(["-monitor", "none", "-m", &memory_mib.to_string()])
            .arg("-serial")
            .arg(format!("file:{}", console.display()));
        c
    }
}

/// Console output as plain lines: `\r` dropped, ANSI escape sequences
/// removed, and a cursor move to column 1 (how sgabios draws each BIOS text
/// line) taken as a line break; blank lines collapsed.
pub fn plain_text(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {}
            '\u{1b}' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    let mut params = String::new();
                    while let Some(&p) = chars.peek() {
                        chars.next();
                        if p.is_ascii_alphabetic() {
                            if p == 'H' && params.ends_with(";1") && !out.ends_with('\n') {
                                out.push('\n');
                            }
                            break;
                        }
                        params.push(p);
                    }
                }
            }
            c => out.push(c),
        }
    }
    let mut lines: Vec<&str> = Vec::new();
    for l in out.lines() {
        if !(l.trim().is_empty() && lines.last().is_some_and(|p| p.trim().is_empty())) {
            lines.push(l);
        }
    }
    lines.join("\n") + if out.ends_with('\n') { "\n" } else { "" }
}

/// The `-netdev` value: restricted user networking whose only way out is
/// the relay to `target`; `extra` is appended (`tftp=…,bootfile=…`).
pub fn netdev(target: SocketAddr, extra: &str) -> anyhow::Result<String> {
    let exe = std::env::current_exe()
        .map_err(|e| anyhow::anyhow!("cannot find this program for the relay: {e}"))?;
    let exe = exe.display().to_string();
    if exe.contains([',', '\'', ' ']) {
        anyhow::bail!(
            "the relay path {exe:?} has a comma, quote or space, which qemu's guestfwd cannot carry"
        );
    }
    let extra = if extra.is_empty() {
        String::new()
    } else {
        format!(",{extra}")
    };
    Ok(format!(
        "user,id=n0,restrict=on{extra},guestfwd=tcp:{GUEST_TARGET_IP}:{port}-cmd:{exe} interop relay {target}",
        port = target.port()
    ))
}

/// How a wait on the console ended without its marker.
#[derive(Debug)]
pub enum Waited {
    /// No marker within the time given.
    Timeout(Duration),
    /// qemu exited first.
    Exited(ExitStatus),
    /// The console showed that the guest gave up (the text it printed).
    GaveUp(&'static str),
}

/// A running VM; killed and reaped on drop.
pub struct Vm {
    child: Child,
    console: PathBuf,
    log: PathBuf,
    pub started: Instant,
}

impl Vm {
    /// Starts `cmd` (from [`Qemu::system`] writing to `console`); qemu's own
    /// messages go to `log`.
    pub fn spawn(mut cmd: Command, console: &Path, log: &Path) -> anyhow::Result<Vm> {
        File::create(console)?;
        let out = File::create(log)?;
        let err = out.try_clone()?;
        let child = cmd
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start qemu-system-x86_64: {e}"))?;
        Ok(Vm {
            child,
            console: console.to_path_buf(),
            log: log.to_path_buf(),
            started: Instant::now(),
        })
    }

    /// The console so far as plain text (see [`plain_text`]).
    pub fn console(&self) -> String {
        std::fs::read(&self.console)
            .map(|b| plain_text(&String::from_utf8_lossy(&b)))
            .unwrap_or_default()
    }

    /// The last `lines` lines of the console, then qemu's own messages.
    pub fn tail(&self, lines: usize) -> String {
        let text = self.console();
        let all: Vec<&str> = text.lines().collect();
        let mut out = all[all.len().saturating_sub(lines)..].join("\n");
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        if !log.trim().is_empty() {
            out.push_str("\n--- qemu ---\n");
            out.push_str(log.trim_end());
        }
        out
    }

    /// Polls the console until `done` holds for it, qemu exits, or
    /// `timeout` (from now) passes. `done` sees the whole console.
    pub fn wait_for(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&str) -> bool,
    ) -> Result<Duration, Waited> {
        let start = Instant::now();
        loop {
            if done(&self.console()) {
                return Ok(self.started.elapsed());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // One more look: the marker may have come with the exit.
                if done(&self.console()) {
                    return Ok(self.started.elapsed());
                }
                return Err(Waited::Exited(status));
            }
            if start.elapsed() >= timeout {
                return Err(Waited::Timeout(timeout));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits up to `grace` for qemu to exit by itself, then kills it.
    pub fn finish(&mut self, grace: Duration) {
        let start = Instant::now();
        while start.elapsed() < grace {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// What a finished tool run left.
#[derive(Debug)]
pub struct Ran {
    pub ok: bool,
    pub stdout: String,
    /// stdout then stderr.
    pub output: String,
}

/// Runs `cmd` to completion within `timeout` (killed after it), its stdout
/// and stderr captured; an error only when it cannot start or times out.
pub fn run_tool(mut cmd: Command, timeout: Duration) -> Result<Ran, String> {
    let shown = cmd.get_program().to_string_lossy().into_owned();
    let mut out = tempfile::tempfile().map_err(|e| e.to_string())?;
    let mut err = tempfile::tempfile().map_err(|e| e.to_string())?;
    let mut child = cmd
        .stdout(out.try_clone().map_err(|e| e.to_string())?)
        .stderr(err.try_clone().map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| format!("cannot start {shown}: {e}"))?;
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if start.elapsed() < timeout => {
                std::thread::sleep(Duration::from_millis(20));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{shown} did not finish within {timeout:?}"));
            }
        }
    };
    let read = |f: &mut File| {
        use std::io::{Read, Seek};
        let mut b = Vec::new();
        let _ = f.rewind();
        let _ = f.read_to_end(&mut b);
        String::from_utf8_lossy(&b).into_owned()
    };
    let stdout = read(&mut out);
    let output = stdout.clone() + &read(&mut err);
    Ok(Ran {
        ok: status.success(),
        stdout,
        output,
    })
}
