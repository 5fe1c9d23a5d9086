//! Starting the `iesp-target` binary in tests.
//!
//! The child binds `127.0.0.1:0` itself and the test learns the port from
//! its "listening on" line. Picking a free port in the test and passing it
//! in races with every other test doing the same (two tests can be handed
//! the same port, and a connect probe then reaches the wrong process).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running `iesp-target`; killed when dropped.
pub struct Running {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns `iesp-target --listen 127.0.0.1:0 ARGS…` and returns once it
/// listens. Its stderr is forwarded to ours, line by line.
pub fn start(args: &[&str]) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_iesp-target"))
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn iesp-target");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            eprintln!("{line}");
            if let Some(addr) = line.strip_prefix("iesp-target: listening on ") {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(addr.trim().parse::<SocketAddr>().unwrap());
                }
            }
        }
    });
    let addr = match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(addr) => addr,
        Err(_) => {
            let _ = child.kill();
            let status = child.wait();
            panic!("iesp-target did not report a listening address ({status:?})");
        }
    };
    Running { child, addr }
}
