//! The objects the SNMP agent serves, read from [`crate::stats`] at each
//! request and sorted by OID. docs/mib/IESP-TARGET-MIB.txt describes our
//! subtree; the iSCSI-MIB part follows RFC 4544 (instance index 1, node
//! index = target position + 1; login and logout statistics are counted
//! for the whole target and served under node 1).

use std::sync::Arc;

use super::ber::Value;
use crate::server::Target;

/// iscsiObjects (RFC 4544): mib-2.142.1.
pub const ISCSI_OBJECTS: [u32; 8] = [1, 3, 6, 1, 2, 1, 142, 1];
/// iespTargetObjects: enterprises.32473.15.1.
pub const IESP_OBJECTS: [u32; 10] = [1, 3, 6, 1, 4, 1, 32473, 15, 1, 0];

fn under(base: &[u32], rest: &[u32]) -> Vec<u32> {
    base.iter().chain(rest).copied().collect()
}

fn c32(v: u64) -> Value {
    Value::Counter32(v as u32)
}

fn g32(v: u64) -> Value {
    Value::Gauge32(v.min(u64::from(u32::MAX)) as u32)
}

/// iscsiSessionAttributesTable, iscsiSessionStatsTable and
/// iscsiSessionCxnErrorStatsTable (…1.10.{1,2,3}.1.col.inst.node.ssn): one
/// row per normal session, iscsiSsnIndex = its TSIH, node = the target's
/// position + 1. One connection per session, so the session's counters
/// are its connection's; the octet counters count whole PDUs.
fn sessions(t: &Arc<Target>, m: &mut Vec<(Vec<u32>, Value)>) {
    for c in t.stats.connections() {
        let info = &c.info;
        let Some(node) = t.nodes.iter().position(|n| n.iqn == info.target) else {
            continue;
        };
        if info.discovery || info.tsih == 0 {
            continue;
        }
        let idx = [1, node as u32 + 1, u32::from(info.tsih)];
        let row = |table: u32, col: u32| {
            let mut o = under(&ISCSI_OBJECTS, &[10, table, 1, col]);
            o.extend_from_slice(&idx);
            o
        };
        let isid: Vec<u8> = (0..info.isid.len() / 2)
            .filter_map(|i| u8::from_str_radix(info.isid.get(2 * i..2 * i + 2)?, 16).ok())
            .collect();
        let k = &c.counters;
        m.extend([
            (row(1, 3), Value::Integer(1)),
            (
                row(1, 4),
                Value::Octets(info.initiator.clone().into_bytes()),
            ),
            (row(1, 5), Value::Octets(info.target.clone().into_bytes())),
            (row(1, 6), Value::Gauge32(u32::from(info.tsih))),
            (row(1, 7), Value::Octets(isid)),
            (row(2, 1), c32(k.commands.get())),
            (row(2, 2), c32(k.pdus_out.get())),
            (row(2, 3), Value::Counter64(k.bytes_out.get())),
            (row(2, 4), Value::Counter64(k.bytes_in.get())),
            (
                row(3, 1),
                c32(k.header_digest_errors.get() + k.data_digest_errors.get()),
            ),
            (row(3, 2), c32(k.nop_timeouts.get())),
        ]);
    }
}

/// Every object, sorted by OID.
pub fn snapshot(t: &Arc<Target>) -> Vec<(Vec<u32>, Value)> {
    let s = &t.stats;
    let tot = s.totals();
    let l = &s.login;
    let i = |rest: &[u32]| under(&ISCSI_OBJECTS, rest);
    let mut m = vec![
        // iscsiInstanceAttributesEntry (…1.1.1.1.col.instIndex).
        (
            i(&[1, 1, 1, 2, 1]),
            Value::Octets(b"iesp-target reference iSCSI target".to_vec()),
        ),
        (i(&[1, 1, 1, 3, 1]), Value::Gauge32(0)),
        (i(&[1, 1, 1, 4, 1]), Value::Gauge32(0)),
        (i(&[1, 1, 1, 5, 1]), Value::Octets(b"iesp-test".to_vec())),
        (
            i(&[1, 1, 1, 6, 1]),
            Value::Octets(env!("CARGO_PKG_VERSION").as_bytes().to_vec()),
        ),
        (i(&[1, 1, 1, 8, 1]), g32(t.nodes.len() as u64)),
        (i(&[1, 1, 1, 9, 1]), g32(t.sessions.len() as u64)),
        (i(&[1, 1, 1, 10, 1]), c32(l.logouts_other.get())),
        // iscsiInstanceSsnErrorStatsEntry (…1.1.2.1.col.instIndex).
        (
            i(&[1, 2, 1, 1, 1]),
            c32(tot.header_digest_errors.get() + tot.data_digest_errors.get()),
        ),
        (i(&[1, 2, 1, 2, 1]), c32(tot.nop_timeouts.get())),
        // iscsiTargetLoginStatsEntry (…1.6.2.1.col.instIndex.nodeIndex).
        (i(&[6, 2, 1, 1, 1, 1]), c32(l.accepts.get())),
        (i(&[6, 2, 1, 2, 1, 1]), c32(l.other_failures.get())),
        (i(&[6, 2, 1, 3, 1, 1]), c32(0)),
        (i(&[6, 2, 1, 4, 1, 1]), c32(l.authorization_failures.get())),
        (i(&[6, 2, 1, 5, 1, 1]), c32(l.authentication_failures.get())),
        (i(&[6, 2, 1, 6, 1, 1]), c32(l.negotiation_failures.get())),
        // iscsiTargetLogoutStatsEntry (…1.6.3.1.col.instIndex.nodeIndex).
        (i(&[6, 3, 1, 1, 1, 1]), c32(l.logouts_normal.get())),
        (i(&[6, 3, 1, 2, 1, 1]), c32(l.logouts_other.get())),
    ];
    sessions(t, &mut m);
    let base = &IESP_OBJECTS[..9];
    let e = |rest: &[u32]| under(base, rest);
    let scalars = [
        g32(s.connections().len() as u64),
        g32(t.sessions.len() as u64),
        Value::Counter64(l.accepts.get()),
        Value::Counter64(l.failures()),
        Value::Counter64(tot.data_digest_errors.get()),
        Value::Counter64(tot.header_digest_errors.get()),
        Value::Counter64(tot.rejects.get()),
        Value::Counter64(tot.pdus_in.get()),
        Value::Counter64(tot.pdus_out.get()),
        Value::Counter64(tot.nop_timeouts.get()),
    ];
    for (n, v) in scalars.into_iter().enumerate() {
        m.push((e(&[1, n as u32 + 1, 0]), v));
    }
    // iespLuTable (…1.2.1.col.row), row = LU position across targets + 1.
    let mut row = 0u32;
    for node in &t.nodes {
        for (n, lu) in node.luns.iter().enumerate() {
            row += 1;
            let st = &lu.stats;
            use crate::stats::CommandKind as K;
            let cols = [
                Value::Octets(format!("{}/{n}", node.iqn).into_bytes()),
                Value::Counter64(st.commands(K::Read)),
                Value::Counter64(st.commands(K::Write)),
                Value::Counter64(st.read_bytes.get()),
                Value::Counter64(st.written_bytes.get()),
                Value::Counter64(st.errors()),
                Value::Counter64(st.unmapped_blocks.get()),
                g32(st.in_flight()),
            ];
            for (c, v) in cols.into_iter().enumerate() {
                m.push((e(&[2, 1, c as u32 + 2, row]), v));
            }
        }
    }
    m.sort_by(|a, b| a.0.cmp(&b.0));
    m
}
