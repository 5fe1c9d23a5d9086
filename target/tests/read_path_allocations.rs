//! The read path allocates nothing per command but its share of the data
//! buffer: READ(16)s parsed into typed commands and run on a RAM LUN make
//! one heap allocation per read arena (`scsi::READ_ARENA_BYTES`, 16 reads of
//! 4 KiB) and nothing else, counted by a global allocator wrapper (issue
//! 16: no `cdb.to_vec()`, no `format!`, no second parse, no `malloc` per
//! READ).

#![allow(unsafe_code)] // a counting GlobalAlloc wrapper needs `unsafe impl`

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;

use iesp_proto::bhs::Lun;
use iesp_proto::pdu::Isid;
use iesp_proto::scsi::{Cdb, CdbSize};
use iesp_target::backend::Backend;
use iesp_target::backend::RamBackend;
use iesp_target::scsi::{LogicalUnit, LunTable, Nexus, READ_ARENA_BYTES, RawCdb};

thread_local! {
    /// Allocations made by this thread while counting is on.
    static COUNT: Cell<Option<u64>> = const { Cell::new(None) };
}

struct Counting;

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = COUNT.try_with(|c| c.set(c.get().map(|n| n + 1)));
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let _ = COUNT.try_with(|c| c.set(c.get().map(|n| n + 1)));
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = COUNT.try_with(|c| c.set(c.get().map(|n| n + 1)));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Allocations `f` makes on this thread.
fn allocations<R>(f: impl FnOnce() -> R) -> (u64, R) {
    COUNT.with(|c| c.set(Some(0)));
    let r = f();
    let n = COUNT.with(|c| c.replace(None)).unwrap_or(0);
    (n, r)
}

#[test]
fn reads_allocate_only_their_share_of_a_data_arena() {
    // Every 4 KiB of the first 256 KiB holds its own index.
    let ram = RamBackend::new(1 << 20);
    for i in 0..64u8 {
        ram.write_at(&[i; 4096], u64::from(i) * 4096).unwrap();
    }
    let lu = LogicalUnit::new(Box::new(ram), 512, false, "ALLOC001".into());
    let table = LunTable::new(vec![Arc::new(lu)]);
    let nexus = Nexus {
        initiator_name: "iqn.2026-11.org.iesp-test:alloc".into(),
        isid: Isid([0x80, 0, 0, 0, 0, 1]),
        target_name: "iqn.2026-11.org.iesp-test:target0".into(),
        portal_group_tag: 1,
        session_id: 1,
    };
    let lun = Lun::from_index(0);
    // The power-on unit attention (its sense data is allocated), and the
    // nexus's first registration, out of the way.
    for _ in 0..2 {
        let _ = table.execute(&nexus, lun, &Cdb::TestUnitReady.encode(), &[], 0);
    }
    let reads = 64;
    // Kept, as the Data-Ins waiting for the writer keep them: the arena
    // cannot be reused, a new one is needed every 16 reads.
    let mut kept = Vec::with_capacity(reads as usize);
    let (n, ()) = allocations(|| {
        for i in 0..reads {
            let raw = Cdb::read(CdbSize::Sixteen, i * 8, 8).encode().padded();
            let command = table.prepare(lun, RawCdb::Header(raw));
            let c = table.run(&nexus, &command, &[], 4096);
            assert_eq!(c.status, 0);
            assert_eq!(c.data.len(), 4096);
            kept.push(c.data);
        }
    });
    // Per arena: its buffer and the shared header `bytes` adds when the
    // first read splits off it.
    let arenas = (reads * 4096).div_ceil(READ_ARENA_BYTES as u64);
    assert!(
        n <= 2 * arenas,
        "{n} allocations for {reads} 4 KiB READ(16)s ({arenas} arenas)"
    );
    assert!(n >= arenas, "{n}: the arena is not being used up");
    // Each read got its own blocks, intact after the later reads.
    for (i, d) in kept.iter().enumerate() {
        assert!(d.iter().all(|b| usize::from(*b) == i), "read {i}");
    }
    // The counter counts: a command with sense data allocates more.
    let bad = Cdb::read(CdbSize::Sixteen, 1 << 40, 8).encode().padded();
    let (n, c) =
        allocations(|| table.run(&nexus, &table.prepare(lun, RawCdb::Header(bad)), &[], 4096));
    assert_eq!(c.status, 2);
    assert!(n >= 1, "{n}");
}
