//! Spawning `iesp-target` for the benches that compare it with itself
//! (`metrics_overhead`, `stats_instructions`, `target_instructions`): the
//! binary, built when
//! needed, and a child process on an ephemeral loopback port that reports
//! its addresses on stderr.

// Each bench that includes this file uses part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The `iesp-target` binary: `IESP_TARGET_BIN`, or built now (so it is
/// never older than the library this bench linked) and found in the
/// profile directory, the parent of this executable's `deps/`.
pub fn target_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("IESP_TARGET_BIN") {
        return PathBuf::from(p);
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let built = Command::new(cargo)
        .args([
            "build",
            "--release",
            "-p",
            "iesp-target",
            "--bin",
            "iesp-target",
        ])
        .status();
    let exe = std::env::current_exe().expect("current_exe");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("iesp-target"))
        .expect("profile directory");
    match built {
        Ok(s) if s.success() => {}
        other => eprintln!(
            "warning: cargo build -p iesp-target: {other:?}; using {}",
            bin.display()
        ),
    }
    assert!(bin.exists(), "no iesp-target at {}", bin.display());
    bin
}

/// A spawned target; killed when dropped.
pub struct Spawned {
    pub child: Child,
    pub portal: SocketAddr,
    pub metrics: Option<SocketAddr>,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `iesp-target` with a 64 MiB RAM LUN on an ephemeral loopback
/// port, statistics on (with the metrics endpoint when `metrics`) or off;
/// under `valgrind --tool=callgrind --callgrind-out-file=FILE` when
/// `callgrind` names FILE. Under callgrind the runtime gets one worker
/// thread (`TOKIO_WORKER_THREADS=1`): valgrind runs one thread at a time
/// anyway, and with one worker no instructions go to work stealing and
/// to waking a second worker, whose count follows scheduling luck; and
/// keep-alive is off (`--nop-interval 0`), so that no NOP-In ping of an
/// idle session lands in a measured interval.
pub fn spawn_target(
    bin: &Path,
    statistics: bool,
    metrics: bool,
    callgrind: Option<&Path>,
) -> Spawned {
    spawn_target_lun(bin, "ram:64M", statistics, metrics, callgrind)
}

/// [`spawn_target`] with LUN 0 given as an `--lun` spec (`ram:64M`,
/// `file:PATH`).
pub fn spawn_target_lun(
    bin: &Path,
    lun: &str,
    statistics: bool,
    metrics: bool,
    callgrind: Option<&Path>,
) -> Spawned {
    let mut cmd = match callgrind {
        Some(out) => {
            let mut c = Command::new("valgrind");
            c.env("TOKIO_WORKER_THREADS", "1")
                .arg("--tool=callgrind")
                .arg(format!("--callgrind-out-file={}", out.display()))
                .arg(bin);
            c
        }
        None => Command::new(bin),
    };
    cmd.args(["--listen", "127.0.0.1:0", "--lun", lun, "--log", "warn"]);
    if callgrind.is_some() {
        cmd.args(["--nop-interval", "0"]);
    }
    if !statistics {
        cmd.args(["--statistics", "off"]);
    } else if metrics {
        cmd.args(["--metrics", "127.0.0.1:0"]);
    }
    let metrics = statistics && metrics;
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn iesp-target");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    // Reads the addresses, then keeps draining stderr so the child never
    // blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(a) = line.strip_prefix("iesp-target: listening on ") {
                let _ = tx.send(("portal", a.trim().to_owned()));
            } else if let Some(a) = line.strip_prefix("iesp-target: metrics on http://") {
                let _ = tx.send(("metrics", a.trim_end_matches("/metrics").to_owned()));
            } else if line.contains("error") {
                eprintln!("iesp-target: {line}");
            }
        }
    });
    let (mut portal, mut endpoint) = (None, None);
    while portal.is_none() || (metrics && endpoint.is_none()) {
        let (kind, addr) = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("iesp-target did not report its addresses");
        let addr: SocketAddr = addr.parse().expect("address");
        if kind == "portal" {
            portal = Some(addr);
        } else {
            endpoint = Some(addr);
        }
    }
    Spawned {
        child,
        portal: portal.unwrap(),
        metrics: endpoint,
    }
}
