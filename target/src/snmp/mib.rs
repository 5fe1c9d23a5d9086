//! The objects the SNMP agent serves, read from [`crate::stats`] at each
//! request and sorted by OID. docs/mib/IESP-TARGET-MIB.txt describes our
//! subtree; the iSCSI-MIB part follows RFC 4544 (instance index 1; node
//! and portal indexes are one more than the target's or listening
//! portal's position; login and logout statistics are counted for the
//! whole target and served under node 1). The initiator ACLs are served
//! as IPS-AUTH-MIB (RFC 4545) identities, which the iSCSI-MIB's
//! authorization rows point at ([`authorization`]).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use super::ber::Value;
use crate::server::Target;

/// iscsiObjects (RFC 4544): mib-2.142.1.
pub const ISCSI_OBJECTS: [u32; 8] = [1, 3, 6, 1, 2, 1, 142, 1];
/// iespTargetObjects: enterprises.32473.15.1.
pub const IESP_OBJECTS: [u32; 10] = [1, 3, 6, 1, 4, 1, 32473, 15, 1, 0];
/// ipsAuthObjects (RFC 4545): mib-2.141.1.
pub const IPS_AUTH_OBJECTS: [u32; 8] = [1, 3, 6, 1, 2, 1, 141, 1];
/// sysUpTime.0 (RFC 3418): the origin of every TimeStamp served.
pub const SYS_UP_TIME: [u32; 9] = [1, 3, 6, 1, 2, 1, 1, 3, 0];
/// zeroDotZero (SNMPv2-SMI): a RowPointer or AutonomousType to nothing.
fn zero_dot_zero() -> Value {
    Value::Oid(vec![0, 0])
}

/// A time since the statistics began as TimeTicks (hundredths of a
/// second), the SYNTAX of sysUpTime and of every TimeStamp.
fn ticks(d: Duration) -> Value {
    Value::TimeTicks((d.as_millis() / 10).min(u128::from(u32::MAX)) as u32)
}

fn under(base: &[u32], rest: &[u32]) -> Vec<u32> {
    base.iter().chain(rest).copied().collect()
}

fn c32(v: u64) -> Value {
    Value::Counter32(v as u32)
}

fn g32(v: u64) -> Value {
    Value::Gauge32(v.min(u64::from(u32::MAX)) as u32)
}

/// TruthValue (SNMPv2-TC): true(1), false(2).
fn truth(b: bool) -> Value {
    Value::Integer(if b { 1 } else { 2 })
}

/// StorageType readOnly(5): rows come from the configuration, and the
/// agent refuses writes.
const READ_ONLY: i64 = 5;
/// IscsiTransportProtocol: TCP's protocol number.
const TCP: u32 = 6;
/// IscsiDigestMethod none(1): no secondary method.
const DIGEST_NONE: i64 = 1;
/// IscsiDigestMethod noDigest(3).
const NO_DIGEST: i64 = 3;
/// IscsiDigestMethod crc32c(4).
const CRC32C: i64 = 4;
/// BITS with bit 0 set: targetTypePortal / targetTypeNode.
fn target_role() -> Value {
    Value::Octets(vec![0x80])
}

/// InetAddressType and InetAddress (RFC 4001) of `ip`.
fn inet(ip: IpAddr) -> (Value, Value) {
    match ip {
        IpAddr::V4(v4) => (Value::Integer(1), Value::Octets(v4.octets().to_vec())),
        IpAddr::V6(v6) => (Value::Integer(2), Value::Octets(v6.octets().to_vec())),
    }
}

/// iscsiPortalAttributesTable (…1.2.1.1.col.inst.portal) and
/// iscsiTgtPortalAttributesTable (…1.3.1.1.col.inst.portal.0): one row per
/// listening portal; every target node is reachable on every portal, so
/// the target-portal rows have iscsiTgtPortalNodeIndexOrZero = 0.
fn portals(t: &Arc<Target>, m: &mut Vec<(Vec<u32>, Value)>) {
    let l = &t.limits;
    // The target offers CRC32C first when digests are allowed, and always
    // accepts None.
    let (primary, secondary) = if l.digests {
        (CRC32C, NO_DIGEST)
    } else {
        (NO_DIGEST, DIGEST_NONE)
    };
    for (i, addr) in t.stats.portals().into_iter().enumerate() {
        let idx = i as u32 + 1;
        let col = |col: u32| under(&ISCSI_OBJECTS, &[2, 1, 1, col, 1, idx]);
        let (kind, ip) = inet(addr.ip());
        m.extend([
            (col(2), Value::Integer(1)),
            (col(3), target_role()),
            (col(4), kind),
            (col(5), ip),
            (col(6), Value::Gauge32(TCP)),
            (col(7), Value::Gauge32(l.max_recv_data_segment_length)),
            (col(8), Value::Integer(primary)),
            (col(9), Value::Integer(primary)),
            (col(10), Value::Integer(secondary)),
            (col(11), Value::Integer(secondary)),
            (col(12), truth(false)),
            (col(13), Value::Integer(READ_ONLY)),
            (
                col(14),
                Value::Octets(format!("iSCSI portal {addr}").into_bytes()),
            ),
        ]);
        let tcol = |col: u32| under(&ISCSI_OBJECTS, &[3, 1, 1, col, 1, idx, 0]);
        m.extend([
            (tcol(2), Value::Gauge32(u32::from(addr.port()))),
            (tcol(3), Value::Gauge32(u32::from(t.portal_group_tag))),
        ]);
    }
}

/// iscsiTargetAttributesTable (…1.6.1.1.col.inst.node): login failures
/// and the most recent one, for the whole target, under node 1 like the
/// login statistics.
fn target_attributes(t: &Arc<Target>, m: &mut Vec<(Vec<u32>, Value)>) {
    let l = &t.stats.login;
    let col = |col: u32| under(&ISCSI_OBJECTS, &[6, 1, 1, col, 1, 1]);
    m.push((col(1), c32(l.failures())));
    let Some(last) = l.last_failure() else {
        // No failure yet: 0, 0.0, "", unknown(0), "", and an empty port,
        // which RFC 4544 asks for though InetPortNumber is an integer: 0.
        m.extend([
            (col(2), Value::TimeTicks(0)),
            (col(3), zero_dot_zero()),
            (col(4), Value::Octets(Vec::new())),
            (col(5), Value::Integer(0)),
            (col(6), Value::Octets(Vec::new())),
            (col(7), Value::Gauge32(0)),
        ]);
        return;
    };
    use crate::stats::LoginFailure as F;
    // iscsiTgtLastFailureType: the iscsiTargetLoginStatsEntry counter
    // object bumped (OtherFails, AuthorizeFails, AuthenticateFails,
    // NegotiateFails).
    let counter = match last.reason {
        F::Other => 2,
        F::Authorization => 4,
        F::Authentication => 5,
        F::Negotiation => 6,
    };
    let (kind, addr, port) = match last.peer {
        Some(p) => {
            let (kind, addr) = inet(p.ip());
            (kind, addr, u32::from(p.port()))
        }
        None => (Value::Integer(0), Value::Octets(Vec::new()), 0),
    };
    m.extend([
        (col(2), ticks(t.stats.since_origin(last.at))),
        (
            col(3),
            Value::Oid(under(&ISCSI_OBJECTS, &[6, 2, 1, counter])),
        ),
        (col(4), Value::Octets(last.initiator.into_bytes())),
        (col(5), kind),
        (col(6), addr),
        (col(7), Value::Gauge32(port)),
    ]);
}

/// The initiator ACLs. IPS-AUTH-MIB (mib-2.141.1): one authorization
/// instance (index 1); one identity per distinct initiator name in any
/// target's ACL (ipsAuthIdentIndex = order of first appearance + 1), with
/// that name as its one identity name (ipsAuthIdentNameIndex 1). iSCSI-MIB
/// iscsiTgtAuthAttributesTable (…1.7.1.1.col.inst.node.auth): one row per
/// name in the node's ACL (iscsiTgtAuthIndex = position + 1), pointing at
/// the identity's first column. A node without an ACL admits every
/// initiator name and has no rows: the table lists names, and "any" is
/// none. CHAP user names are not served (no IPS-AUTH credential rows).
fn authorization(t: &Arc<Target>, m: &mut Vec<(Vec<u32>, Value)>) {
    let mut names: Vec<&str> = Vec::new();
    for acl in t.nodes.iter().flat_map(|n| n.acl.iter()) {
        if !names.contains(&acl.as_str()) {
            names.push(acl);
        }
    }
    if names.is_empty() {
        return;
    }
    let a = |rest: &[u32]| under(&IPS_AUTH_OBJECTS, rest);
    // ipsAuthInstanceAttributesEntry (…2.2.1.col.inst).
    m.extend([
        (
            a(&[2, 2, 1, 2, 1]),
            Value::Octets(b"iesp-target initiator ACLs".to_vec()),
        ),
        (a(&[2, 2, 1, 3, 1]), Value::Integer(READ_ONLY)),
    ]);
    for (n, name) in names.iter().enumerate() {
        let ident = n as u32 + 1;
        m.extend([
            // ipsAuthIdentAttributesEntry (…3.1.1.col.inst.ident).
            (
                a(&[3, 1, 1, 2, 1, ident]),
                Value::Octets(format!("initiator {name}").into_bytes()),
            ),
            (a(&[3, 1, 1, 3, 1, ident]), Value::Integer(1)),
            (a(&[3, 1, 1, 4, 1, ident]), Value::Integer(READ_ONLY)),
            // ipsAuthIdentNameAttributesEntry (…4.1.1.col.inst.ident.1).
            (
                a(&[4, 1, 1, 2, 1, ident, 1]),
                Value::Octets(name.as_bytes().to_vec()),
            ),
            (a(&[4, 1, 1, 3, 1, ident, 1]), Value::Integer(1)),
            (a(&[4, 1, 1, 4, 1, ident, 1]), Value::Integer(READ_ONLY)),
        ]);
    }
    for (i, node) in t.nodes.iter().enumerate() {
        for (k, name) in node.acl.iter().enumerate() {
            let ident = names.iter().position(|n| n == name).unwrap_or(0) as u32 + 1;
            let col = |col: u32| {
                under(
                    &ISCSI_OBJECTS,
                    &[7, 1, 1, col, 1, i as u32 + 1, k as u32 + 1],
                )
            };
            m.extend([
                (col(2), Value::Integer(1)),
                (col(3), Value::Oid(a(&[3, 1, 1, 2, 1, ident]))),
                (col(4), Value::Integer(READ_ONLY)),
            ]);
        }
    }
}

/// iscsiNodeAttributesTable (…1.5.1.1.col.inst.node): one row per target
/// node, with the operational values its logins start negotiating from.
fn nodes(t: &Arc<Target>, m: &mut Vec<(Vec<u32>, Value)>) {
    let l = &t.limits;
    let d = iesp_proto::negotiation::Limits::default();
    for (i, node) in t.nodes.iter().enumerate() {
        let col = |col: u32| under(&ISCSI_OBJECTS, &[5, 1, 1, col, 1, i as u32 + 1]);
        let alias = node.alias.clone().unwrap_or_default();
        m.extend([
            (col(2), Value::Octets(node.iqn.clone().into_bytes())),
            (col(3), Value::Octets(alias.into_bytes())),
            (col(4), target_role()),
            // iscsiNodeTransportType: no SCSI-MIB row to point at.
            (col(5), zero_dot_zero()),
            (col(6), truth(l.initial_r2t)),
            (col(7), truth(l.immediate_data)),
            (col(8), Value::Gauge32(l.max_outstanding_r2t)),
            (col(9), Value::Gauge32(l.first_burst_length)),
            (col(10), Value::Gauge32(l.max_burst_length)),
            // The MaxConnections logins may negotiate up to.
            (
                col(11),
                Value::Gauge32(u32::from(l.max_connections_per_session)),
            ),
            (col(12), truth(d.data_sequence_in_order)),
            (col(13), truth(d.data_pdu_in_order)),
            (col(14), Value::Gauge32(u32::from(d.default_time2wait))),
            (col(15), Value::Gauge32(u32::from(d.default_time2retain))),
            (col(16), Value::Gauge32(0)),
            // iscsiNodeDiscontinuityTime: the node's counters (login and
            // logout statistics) count whether statistics are on or off.
            (col(17), Value::TimeTicks(0)),
            (col(18), Value::Integer(READ_ONLY)),
        ]);
    }
}

/// iscsiConnectionAttributesTable (…1.11.1.1.col.inst.node.ssn.cxn): each
/// connection of a normal session, iscsiCxnIndex from 1 in CID order.
fn connection(
    info: &crate::stats::ConnInfo,
    idx: &[u32; 3],
    cxn: u32,
    m: &mut Vec<(Vec<u32>, Value)>,
) {
    let (Ok(local), Ok(peer)) = (
        info.local.parse::<SocketAddr>(),
        info.peer.parse::<SocketAddr>(),
    ) else {
        return;
    };
    let col = |col: u32| {
        let mut o = under(&ISCSI_OBJECTS, &[11, 1, 1, col]);
        o.extend_from_slice(idx);
        o.push(cxn);
        o
    };
    let digest = |on: bool| Value::Integer(if on { CRC32C } else { NO_DIGEST });
    let (kind, local_ip) = inet(local.ip());
    let (_, peer_ip) = inet(peer.ip());
    m.extend([
        (col(2), Value::Gauge32(u32::from(info.cid))),
        // full(2): rows exist only in full feature phase.
        (col(3), Value::Integer(2)),
        (col(4), kind),
        (col(5), local_ip),
        (col(6), Value::Gauge32(TCP)),
        (col(7), Value::Gauge32(u32::from(local.port()))),
        (col(8), peer_ip),
        (col(9), Value::Gauge32(u32::from(peer.port()))),
        (col(10), Value::Gauge32(info.max_recv_data_segment)),
        (col(11), Value::Gauge32(info.max_xmit_data_segment)),
        (col(12), digest(info.header_digest)),
        (col(13), digest(info.data_digest)),
        (col(14), truth(false)),
        (col(15), truth(false)),
        (col(16), Value::Gauge32(0)),
    ]);
}

/// iscsiSessionAttributesTable, iscsiSessionStatsTable and
/// iscsiSessionCxnErrorStatsTable (…1.10.{1,2,3}.1.col.inst.node.ssn): one
/// row per normal session, iscsiSsnIndex = its TSIH, node = the target's
/// position + 1. A session's counters are the sums over its connections
/// (MC/S: several share a TSIH); the octet counters count whole PDUs.
fn sessions(t: &Arc<Target>, m: &mut Vec<(Vec<u32>, Value)>) {
    let mut by_session: BTreeMap<(usize, u16), Vec<Arc<crate::stats::ConnStats>>> = BTreeMap::new();
    for c in t.stats.connections() {
        let info = &c.info;
        let Some(node) = t.nodes.iter().position(|n| n.iqn == info.target) else {
            continue;
        };
        if info.discovery || info.tsih == 0 {
            continue;
        }
        by_session.entry((node, info.tsih)).or_default().push(c);
    }
    for ((node, tsih), mut conns) in by_session {
        conns.sort_by_key(|c| c.info.cid);
        let info = &conns[0].info;
        let idx = [1, node as u32 + 1, u32::from(tsih)];
        let row = |table: u32, col: u32| {
            let mut o = under(&ISCSI_OBJECTS, &[10, table, 1, col]);
            o.extend_from_slice(&idx);
            o
        };
        let isid: Vec<u8> = (0..info.isid.len() / 2)
            .filter_map(|i| u8::from_str_radix(info.isid.get(2 * i..2 * i + 2)?, 16).ok())
            .collect();
        let sum = |f: &dyn Fn(&crate::stats::ConnCounters) -> u64| {
            conns.iter().map(|c| f(c.counters())).sum::<u64>()
        };
        m.extend([
            (row(1, 3), Value::Integer(1)),
            (
                row(1, 4),
                Value::Octets(info.initiator.clone().into_bytes()),
            ),
            (row(1, 5), Value::Octets(info.target.clone().into_bytes())),
            (row(1, 6), Value::Gauge32(u32::from(tsih))),
            (row(1, 7), Value::Octets(isid)),
            // iscsiSsnDiscontinuityTime: the login (of its first
            // connection), or counting turned on or off since.
            (
                row(1, 21),
                ticks({
                    let login = conns
                        .iter()
                        .map(|c| c.login_uptime)
                        .min()
                        .unwrap_or_default();
                    t.stats.last_toggle().map_or(login, |at| at.max(login))
                }),
            ),
            (row(2, 1), c32(sum(&|k| k.commands.get()))),
            (row(2, 2), c32(sum(&|k| k.pdus_out.get()))),
            (row(2, 3), Value::Counter64(sum(&|k| k.bytes_out.get()))),
            (row(2, 4), Value::Counter64(sum(&|k| k.bytes_in.get()))),
            (
                row(3, 1),
                c32(sum(&|k| {
                    k.header_digest_errors.get() + k.data_digest_errors.get()
                })),
            ),
            (row(3, 2), c32(sum(&|k| k.nop_timeouts.get()))),
        ]);
        for (i, c) in conns.iter().enumerate() {
            connection(&c.info, &idx, i as u32 + 1, m);
        }
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
        (i(&[1, 1, 1, 7, 1]), g32(s.portals().len() as u64)),
        (i(&[1, 1, 1, 8, 1]), g32(t.nodes.len() as u64)),
        (i(&[1, 1, 1, 9, 1]), g32(t.sessions.len() as u64)),
        (i(&[1, 1, 1, 10, 1]), c32(l.logouts_other.get())),
        // iscsiInstDiscontinuityTime: digest errors and timeouts are
        // per-connection counters, which miss what happens while
        // statistics are off.
        (
            i(&[1, 1, 1, 13, 1]),
            ticks(s.last_toggle().unwrap_or_default()),
        ),
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
    target_attributes(t, &mut m);
    portals(t, &mut m);
    nodes(t, &mut m);
    sessions(t, &mut m);
    authorization(t, &mut m);
    m.push((SYS_UP_TIME.to_vec(), ticks(s.uptime())));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TargetConfig;
    use crate::stats::ConnInfo;

    fn conn(tsih: u16, cid: u16, port: u16) -> ConnInfo {
        ConnInfo {
            initiator: "iqn.2026-12.org.iesp-test:mib".into(),
            target: crate::DEFAULT_IQN.into(),
            isid: "800000000001".into(),
            tsih,
            cid,
            local: "127.0.0.1:3260".into(),
            peer: format!("127.0.0.1:{port}"),
            ..ConnInfo::default()
        }
    }

    #[test]
    fn a_session_with_two_connections_is_one_session_row_and_two_connection_rows() {
        let t = Target::from_config(&TargetConfig::default()).unwrap();
        // Registered out of CID order, with a single-connection session
        // beside them.
        let regs = [
            t.stats.connection_up(conn(7, 3, 40003)),
            t.stats.connection_up(conn(7, 1, 40001)),
            t.stats.connection_up(conn(8, 0, 40008)),
        ];
        regs[0].stats.counters().commands.add(5);
        regs[1].stats.counters().commands.add(2);
        let m = snapshot(&t);
        let mut oids: Vec<&Vec<u32>> = m.iter().map(|(o, _)| o).collect();
        let n = oids.len();
        oids.dedup();
        assert_eq!(oids.len(), n, "duplicate OIDs in the snapshot");
        let get = |rest: &[u32]| {
            let oid = under(&ISCSI_OBJECTS, rest);
            m.iter()
                .find(|(o, _)| *o == oid)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("no {rest:?}"))
        };
        // iscsiSsnCmdPDUs of session 7: both connections' commands.
        assert_eq!(get(&[10, 2, 1, 1, 1, 1, 7]), Value::Counter32(7));
        // iscsiCxnCid: connection 1 and 2 of session 7, in CID order.
        assert_eq!(get(&[11, 1, 1, 2, 1, 1, 7, 1]), Value::Gauge32(1));
        assert_eq!(get(&[11, 1, 1, 2, 1, 1, 7, 2]), Value::Gauge32(3));
        assert_eq!(get(&[11, 1, 1, 2, 1, 1, 8, 1]), Value::Gauge32(0));
        let rows = m
            .iter()
            .filter(|(o, _)| o.starts_with(&under(&ISCSI_OBJECTS, &[10, 1, 1, 6, 1, 1])))
            .count();
        assert_eq!(rows, 2, "one iscsiSsnTSIH per session");
    }
}
