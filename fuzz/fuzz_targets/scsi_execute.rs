//! SCSI execution on arbitrary CDBs and data: what the transport asks
//! (`transfer`) and what the LU does (`execute`), on a writable RAM LU, a
//! read-only one and a LUN without a logical unit. Every outcome is a
//! status with sense data, never a panic.
#![no_main]

use std::sync::{Arc, OnceLock};

use iesp_proto::bhs::Lun;
use iesp_proto::pdu::Isid;
use iesp_target::backend::RamBackend;
use iesp_target::scsi::{LogicalUnit, LunTable, Nexus};
use libfuzzer_sys::fuzz_target;

fn table() -> &'static LunTable {
    static TABLE: OnceLock<LunTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        let rw = LogicalUnit::new(Box::new(RamBackend::new(1 << 20)), 512, false, "FUZZRW01".into());
        let ro = LogicalUnit::new(Box::new(RamBackend::new(256 << 10)), 4096, true, "FUZZRO01".into());
        LunTable::new(vec![Arc::new(rw), Arc::new(ro)])
    })
}

fuzz_target!(|data: &[u8]| {
    let [sel, len, rest @ ..] = data else { return };
    let cdb_len = usize::from(*len % 33).min(rest.len());
    let (cdb, data_out) = rest.split_at(cdb_len);
    let lun = Lun::from_index(u16::from(sel % 3));
    let nexus = Nexus {
        initiator_name: if sel & 4 != 0 { "iqn.a:one".into() } else { "iqn.a:two".into() },
        isid: Isid([0x80, 0, 0, 0, 0, sel & 8]),
        target_name: "iqn.2026-11.org.iesp-test:fuzz".into(),
        portal_group_tag: 1,
        session_id: u64::from(sel & 12),
    };
    let t = table();
    let transfer = t.transfer(lun, cdb);
    let edtl = if sel & 16 != 0 { transfer.length } else { data_out.len() as u32 };
    let _ = t.execute(&nexus, lun, cdb, data_out, edtl);
});
