//! Busy-poll on both sides (`--poll-us`, `LoginOptions::poll_us`): the
//! bytes a spin reads through the duplicate descriptor and the bytes the
//! runtime reads are one stream. Writes then reads back, at queue depth 1
//! (every response is caught by a spin) and at queue depth 8, sizes from
//! one block to past the spin's 64 KiB chunk, digests off and on; the
//! target binary runs with --poll-us, our initiator polls too.

mod common;

use bytes::Bytes;
use iesp_initiator::{LoginOptions, Session};
use iesp_proto::negotiation::Digest;

const BLOCK: usize = 512;

fn pattern(seed: u32, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

async fn round_trip(addr: std::net::SocketAddr, poll_us: u32, digests: bool) {
    let mut o = LoginOptions::new(
        "iqn.2026-11.org.iesp-test:busy-poll",
        Some(iesp_target::DEFAULT_IQN),
    );
    o.poll_us = poll_us;
    if digests {
        o.header_digest = vec![Digest::Crc32c];
        o.data_digest = vec![Digest::Crc32c];
    }
    let session = Session::login(addr, o).await.expect("login");
    let lu = session.logical_unit(0).await.expect("LUN 0");
    // QD 1: one command at a time, sizes across the 64 KiB spin chunk.
    let mut lba = 0u64;
    let mut written = Vec::new();
    for (i, blocks) in [1usize, 8, 127, 128, 129, 300, 2048]
        .into_iter()
        .enumerate()
    {
        let data = pattern(i as u32 + u32::from(digests) * 100, blocks * BLOCK);
        lu.write(lba, Bytes::from(data.clone()))
            .await
            .expect("write");
        let back = lu.read(lba, blocks as u32).await.expect("read");
        assert_eq!(&back[..], &data[..], "QD1 {blocks} blocks at {lba}");
        written.push((lba, data));
        lba += blocks as u64;
    }
    // QD 8: reads of everything written, in flight together.
    let reads = written.iter().map(|(lba, data)| {
        let lu = &lu;
        async move {
            let back = lu
                .read(*lba, (data.len() / BLOCK) as u32)
                .await
                .expect("read");
            assert_eq!(&back[..], &data[..], "QD8 read at {lba}");
        }
    });
    futures_join_all(reads).await;
    session.logout().await.expect("logout");
}

/// `join_all` without a futures dependency: each on its own task would
/// need 'static; a local set of pinned futures polled together suffices.
async fn futures_join_all<F: std::future::Future<Output = ()>>(futs: impl Iterator<Item = F>) {
    let mut v: Vec<std::pin::Pin<Box<F>>> = futs.map(Box::pin).collect();
    std::future::poll_fn(|cx| {
        v.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if v.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_is_intact_with_busy_poll_on_both_sides() {
    let target = common::start(&["--lun", "ram:8M", "--poll-us", "200"]);
    for (poll_us, digests) in [(200, false), (200, true), (0, false)] {
        round_trip(target.addr, poll_us, digests).await;
    }
}
