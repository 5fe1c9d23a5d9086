//! QEMU's NBD tools (Debian package `qemu-utils`) as an independent NBD
//! server and client on loopback: `qemu-nbd` serves a raw image file,
//! `qemu-io` reads and writes it over NBD and verifies patterns.
//!
//! Used to check the target's NBD backend against a real server: what the
//! target writes must be what another NBD client reads, and back.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{ChildGuard, PeerError, ToolOutput, free_loopback_port, require_tool, run_tool};

/// How long `qemu-nbd` may take to listen, and a `qemu-io` run to finish.
const STARTUP: Duration = Duration::from_secs(10);
const QEMU_IO_TIMEOUT: Duration = Duration::from_secs(60);
/// Ports tried before giving up.
const PORT_ATTEMPTS: usize = 3;

/// A `qemu-nbd` child serving one raw file on `127.0.0.1:<port>`; killed and
/// reaped on drop.
pub struct QemuNbd {
    child: ChildGuard,
    port: u16,
    export: String,
    image: PathBuf,
}

impl QemuNbd {
    /// Serves `image` (raw) as `export`, to several clients at once
    /// (`--shared`), persistently, with discard requests passed to the file
    /// (`--discard=unmap`, so trims punch holes).
    pub fn serve(image: &Path, export: &str) -> Result<QemuNbd, PeerError> {
        // Another process may take the free port before qemu-nbd binds it;
        // qemu-nbd then exits, and another port is tried.
        let mut last = None;
        for _ in 0..PORT_ATTEMPTS {
            match QemuNbd::try_serve(image, export) {
                Ok(server) => return Ok(server),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| PeerError::InvalidArgument {
            tool: "qemu-nbd".into(),
            reason: "no attempt made".into(),
        }))
    }

    fn try_serve(image: &Path, export: &str) -> Result<QemuNbd, PeerError> {
        let tool = require_tool("qemu-nbd")?;
        let port = free_loopback_port()?;
        let child = Command::new(tool)
            .args([
                "--format=raw",
                "--bind=127.0.0.1",
                "--persistent",
                "--shared=8",
            ])
            .arg(format!("--port={port}"))
            .arg(format!("--export-name={export}"))
            .arg("--discard=unmap")
            .arg(image)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let mut guard = ChildGuard(Some(child));
        let deadline = Instant::now() + STARTUP;
        loop {
            // The port is ours only if the server that answers on it speaks
            // NBD: the kernel may have handed the same ephemeral port to
            // another test's listener between `free_loopback_port` and
            // qemu-nbd's bind, and qemu-nbd then exits while the connect
            // succeeds to the wrong server.
            if greets_as_nbd(port) {
                break;
            }
            let exited = guard
                .0
                .as_mut()
                .map(|c| c.try_wait())
                .transpose()?
                .flatten();
            if exited.is_some() || Instant::now() >= deadline {
                guard.kill_and_reap();
                return Err(PeerError::InvalidArgument {
                    tool: "qemu-nbd".into(),
                    reason: format!("did not listen on port {port} (exit: {exited:?})"),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(QemuNbd {
            child: guard,
            port,
            export: export.to_owned(),
            image: image.to_owned(),
        })
    }

    /// The qemu-nbd process id (tests stop and continue it to make the
    /// server stall).
    pub fn pid(&self) -> Option<u32> {
        self.child.0.as_ref().map(|c| c.id())
    }

    /// `host:port` of the server.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The export name.
    pub fn export(&self) -> &str {
        &self.export
    }

    /// The image file served.
    pub fn image(&self) -> &Path {
        &self.image
    }

    /// `nbd://127.0.0.1:<port>/<export>`, the URL `qemu-io` takes.
    pub fn url(&self) -> String {
        format!("nbd://127.0.0.1:{}/{}", self.port, self.export)
    }

    /// Runs `qemu-io -f raw <url> -c CMD…` (e.g. `read -P 0xa5 0 1M`, which
    /// fails unless every byte is 0xa5). A failed command makes the exit
    /// status non-zero.
    pub fn qemu_io(&self, commands: &[&str]) -> Result<ToolOutput, PeerError> {
        let url = self.url();
        let mut args = vec!["-f", "raw", url.as_str()];
        for c in commands {
            args.push("-c");
            args.push(c);
        }
        run_tool("qemu-io", &args, QEMU_IO_TIMEOUT)
    }
}

impl Drop for QemuNbd {
    fn drop(&mut self) {
        self.child.kill_and_reap();
    }
}

/// True when a connection to `port` receives the NBD server greeting
/// (`NBDMAGIC`, newstyle or oldstyle).
fn greets_as_nbd(port: u16) -> bool {
    use std::io::Read;
    let Ok(mut stream) = TcpStream::connect_timeout(&super::loopback(port), Duration::from_secs(1))
    else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut magic = [0u8; 8];
    stream.read_exact(&mut magic).is_ok() && &magic == b"NBDMAGIC"
}
