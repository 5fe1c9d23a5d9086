//! What the side-by-side benches (`testsuite/benches`, `tools/benches`)
//! share: their environment knobs, the median they report, the LUN image
//! both targets serve, and the bare TCP ping-pong bound of queue depth 1.

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

/// A `u32` from the environment (`IESP_BENCH_SECONDS`, `IESP_BENCH_ROUNDS`,
/// …), or `default` when it is unset or not a number.
pub fn env_u32(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The median of `v` (the upper one of an even count). Panics on an empty
/// vector: a bench with no rounds has nothing to report.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Overwrites the first `bytes` (a multiple of 1 MiB) of the existing file
/// at `path` with the same xorshift data every time, and syncs it: both
/// targets of a comparison then serve identical, incompressible images.
pub fn fill(path: &Path, bytes: u64) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open LUN file");
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..bytes >> 20 {
        for chunk in block.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes());
        }
        f.write_all(&block).expect("fill LUN file");
    }
    f.sync_all().expect("sync LUN file");
}

/// The bare loopback bound at queue depth 1: 48-byte TCP ping-pongs between
/// two threads for `seconds`, no iSCSI at all; round trips per second.
pub fn loopback_ping_pong(seconds: u32) -> f64 {
    use std::net::{TcpListener, TcpStream};
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let echo = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        s.set_nodelay(true).expect("nodelay");
        let mut b = [0u8; 48];
        while s.read_exact(&mut b).is_ok() {
            if s.write_all(&b).is_err() {
                break;
            }
        }
    });
    let mut c = TcpStream::connect(addr).expect("connect");
    c.set_nodelay(true).expect("nodelay");
    let mut b = [0u8; 48];
    let t0 = Instant::now();
    let limit = Duration::from_secs(u64::from(seconds));
    let mut n = 0u64;
    while t0.elapsed() < limit {
        c.write_all(&b).expect("ping");
        c.read_exact(&mut b).expect("pong");
        n += 1;
    }
    let rate = n as f64 / t0.elapsed().as_secs_f64();
    drop(c);
    let _ = echo.join();
    rate
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_fill() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 3.0);
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        for p in [&a, &b] {
            std::fs::write(p, vec![0u8; 2 << 20]).unwrap();
            fill(p, 2 << 20);
        }
        let (a, b) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
        assert_eq!(a, b);
        assert_ne!(&a[..1 << 20], &a[1 << 20..], "the two MiB differ");
        assert!(a.iter().filter(|&&x| x == 0).count() < a.len() / 100);
    }
}
