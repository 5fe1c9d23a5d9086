//! The read path allocates nothing per command but the data buffer: a
//! READ(16) parsed into a typed command and run on a RAM LUN makes exactly
//! one heap allocation, counted by a global allocator wrapper (issue 16:
//! no `cdb.to_vec()`, no `format!`, no second parse).

#![allow(unsafe_code)] // a counting GlobalAlloc wrapper needs `unsafe impl`

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;

use iesp_proto::bhs::Lun;
use iesp_proto::pdu::Isid;
use iesp_proto::scsi::{Cdb, CdbSize};
use iesp_target::backend::RamBackend;
use iesp_target::scsi::{LogicalUnit, LunTable, Nexus, RawCdb};

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
fn a_read_allocates_only_its_data_buffer() {
    let lu = LogicalUnit::new(
        Box::new(RamBackend::new(1 << 20)),
        512,
        false,
        "ALLOC001".into(),
    );
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
    let raw = Cdb::read(CdbSize::Sixteen, 64, 8).encode().padded();
    for _ in 0..3 {
        let (n, c) = allocations(|| {
            let command = table.prepare(lun, RawCdb::Header(raw));
            table.run(&nexus, &command, &[], 4096)
        });
        assert_eq!(c.status, 0);
        assert_eq!(c.data.len(), 4096);
        assert_eq!(n, 1, "allocations for one 4 KiB READ(16)");
    }
    // The counter counts: a command with sense data allocates more.
    let bad = Cdb::read(CdbSize::Sixteen, 1 << 40, 8).encode().padded();
    let (n, c) =
        allocations(|| table.run(&nexus, &table.prepare(lun, RawCdb::Header(bad)), &[], 4096));
    assert_eq!(c.status, 2);
    assert!(n >= 1, "{n}");
}
