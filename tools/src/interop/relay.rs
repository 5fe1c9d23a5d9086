//! `iesp-test interop relay HOST:PORT`: the program qemu's
//! `guestfwd=…-cmd:` starts for each connection the guest opens to the
//! target address. Its stdin and stdout are the guest's connection; it
//! connects to the target and copies both ways until either side closes.
//! It prints nothing: its stderr is the guest's connection too.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

/// How long the relay waits for the target to accept.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Relays stdin/stdout to `addr` until one side closes.
pub fn run(addr: SocketAddr) -> anyhow::Result<()> {
    let sock = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
        .map_err(|e| crate::exit::io(anyhow::anyhow!("relay: connect {addr}: {e}")))?;
    let _ = sock.set_nodelay(true);
    let mut up = sock.try_clone()?;
    let upstream = std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let _ = copy(&mut stdin, &mut up);
        let _ = up.shutdown(Shutdown::Write);
    });
    let mut down = sock;
    let mut stdout = std::io::stdout().lock();
    let _ = copy(&mut down, &mut stdout);
    // The target closed: the guest's side goes too (the process exits).
    drop(stdout);
    let _ = down.shutdown(Shutdown::Both);
    if upstream.is_finished() {
        let _ = upstream.join();
    }
    std::process::exit(0);
}

/// Copies until end of file or an error, flushing after every read (stdout
/// is line-buffered in Rust; iSCSI is not lines).
fn copy(from: &mut impl Read, to: &mut impl Write) -> std::io::Result<()> {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        to.write_all(&buf[..n])?;
        to.flush()?;
    }
}
