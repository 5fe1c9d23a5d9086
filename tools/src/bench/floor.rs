//! `--floor`: the bare-TCP bound of a queue depth of 1 on this machine,
//! measured in the same run as the sweep. A 48-byte ping-pong between two
//! threads over loopback, no iSCSI and no storage: every QD 1 command of
//! any target here costs at least one such round trip (two wake-ups and
//! two trips through the kernel's TCP stack), so QD 1 IOPS sit below
//! this rate.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use iesp_plots::data::Floor;

/// Size of each ping (an iSCSI basic header segment).
pub const PING_BYTES: usize = 48;

/// Round trips of a [`PING_BYTES`] ping-pong over 127.0.0.1 for `time`
/// (blocking: run it on a blocking thread).
pub fn ping_pong(time: Duration) -> std::io::Result<Floor> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let mut b = [0u8; PING_BYTES];
        while s.read_exact(&mut b).is_ok() {
            s.write_all(&b)?;
        }
        Ok(())
    });
    let mut c = TcpStream::connect(addr)?;
    c.set_nodelay(true)?;
    let mut b = [0u8; PING_BYTES];
    let t0 = Instant::now();
    let mut n = 0u64;
    while t0.elapsed() < time {
        c.write_all(&b)?;
        c.read_exact(&mut b)?;
        n += 1;
    }
    let secs = t0.elapsed().as_secs_f64();
    drop(c);
    let _ = echo.join();
    let rate = n as f64 / secs;
    Ok(Floor {
        round_trips_per_s: rate,
        rtt_us: if rate > 0.0 { 1e6 / rate } else { 0.0 },
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn measures_round_trips() {
        let f = super::ping_pong(std::time::Duration::from_millis(100)).unwrap();
        assert!(f.round_trips_per_s > 100.0, "{f:?}");
        assert!((f.rtt_us * f.round_trips_per_s - 1e6).abs() < 1.0);
    }
}
