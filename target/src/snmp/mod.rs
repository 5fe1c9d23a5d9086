//! The SNMP v2c agent (`--snmp ADDR`): read-only, one community, over UDP.
//!
//! It serves the iSCSI-MIB (RFC 4544) objects our counters map to and our
//! own subtree `1.3.6.1.4.1.32473.15` (IESP-TARGET-MIB; 32473 is the
//! enterprise number RFC 5612 reserves for documentation, a placeholder
//! until the project registers one). GetRequest, GetNextRequest and
//! GetBulkRequest are answered; SetRequest gets `noAccess`; a request
//! with another community, another version or malformed BER is dropped
//! without an answer (as RFC 3584 §4.1 has agents do with unknown
//! communities). The codec is [`ber`], a small built-in subset.

pub mod ber;
pub mod mib;

use std::future::Future;
use std::io;
use std::sync::Arc;

use ber::{Malformed, Reader, Value};

use crate::server::Target;

const GET: u8 = 0xa0;
const GET_NEXT: u8 = 0xa1;
const RESPONSE: u8 = 0xa2;
const SET: u8 = 0xa3;
const GET_BULK: u8 = 0xa5;

/// error-status noAccess (RFC 3416 §3).
const NO_ACCESS: i64 = 6;
/// error-status tooBig.
const TOO_BIG: i64 = 1;

/// Variable bindings a response may carry at most.
const MAX_BINDINGS: usize = 128;
/// The largest response sent (fits a UDP datagram on loopback).
const MAX_RESPONSE: usize = 60_000;

/// Answers one datagram; `None` drops it. `snapshot` gives the MIB, sorted
/// by OID, when the request is valid.
pub fn answer(
    packet: &[u8],
    community: &str,
    snapshot: impl FnOnce() -> Vec<(Vec<u32>, Value)>,
) -> Option<Vec<u8>> {
    let req = parse(packet).ok()?;
    if req.version != 1 || req.community != community.as_bytes() {
        return None;
    }
    let mut error = (0i64, 0i64);
    let mut out: Vec<(Vec<u32>, Value)> = Vec::new();
    match req.kind {
        SET => {
            error = (NO_ACCESS, 1);
            out = req
                .bindings
                .iter()
                .map(|o| (o.clone(), Value::Null))
                .collect();
        }
        GET | GET_NEXT | GET_BULK => {
            let mib = snapshot();
            let get = |o: &Vec<u32>| match mib.binary_search_by(|(k, _)| k.cmp(o)) {
                Ok(i) => (o.clone(), mib[i].1.clone()),
                Err(_) => (o.clone(), Value::NoSuchObject),
            };
            let next = |o: &Vec<u32>| {
                let i = mib.partition_point(|(k, _)| k <= o);
                mib.get(i)
                    .cloned()
                    .unwrap_or_else(|| (o.clone(), Value::EndOfMibView))
            };
            match req.kind {
                GET => out = req.bindings.iter().map(get).collect(),
                GET_NEXT => out = req.bindings.iter().map(next).collect(),
                _ => {
                    let non_rep = (req.field2.max(0) as usize).min(req.bindings.len());
                    let reps = (req.field3.max(0) as usize).min(MAX_BINDINGS);
                    out.extend(req.bindings[..non_rep].iter().map(next));
                    let mut cursor: Vec<Vec<u32>> = req.bindings[non_rep..].to_vec();
                    'rep: for _ in 0..reps {
                        let mut all_end = true;
                        for c in cursor.iter_mut() {
                            if out.len() >= MAX_BINDINGS {
                                break 'rep;
                            }
                            let (o, v) = next(c);
                            all_end &= v == Value::EndOfMibView;
                            *c = o.clone();
                            out.push((o, v));
                        }
                        if all_end || cursor.is_empty() {
                            break;
                        }
                    }
                }
            }
        }
        _ => return None,
    }
    let mut rsp = encode(&req, error, &out);
    if rsp.len() > MAX_RESPONSE {
        let empty: Vec<(Vec<u32>, Value)> = Vec::new();
        rsp = encode(&req, (TOO_BIG, 0), &empty);
    }
    Some(rsp)
}

struct Request {
    version: i64,
    community: Vec<u8>,
    kind: u8,
    request_id: i64,
    field2: i64,
    field3: i64,
    bindings: Vec<Vec<u32>>,
}

fn parse(packet: &[u8]) -> Result<Request, Malformed> {
    let mut msg = Reader(Reader(packet).expect(ber::SEQUENCE)?);
    let version = msg.integer()?;
    let community = msg.expect(ber::OCTETS)?.to_vec();
    let (kind, pdu) = msg.tlv()?;
    let mut pdu = Reader(pdu);
    let request_id = pdu.integer()?;
    let field2 = pdu.integer()?;
    let field3 = pdu.integer()?;
    let mut list = Reader(pdu.expect(ber::SEQUENCE)?);
    let mut bindings = Vec::new();
    while !list.is_empty() {
        let mut vb = Reader(list.expect(ber::SEQUENCE)?);
        bindings.push(ber::oid(vb.expect(ber::OID)?)?);
        vb.tlv()?;
        if bindings.len() > MAX_BINDINGS {
            return Err(Malformed);
        }
    }
    Ok(Request {
        version,
        community,
        kind,
        request_id,
        field2,
        field3,
        bindings,
    })
}

fn encode(req: &Request, error: (i64, i64), bindings: &[(Vec<u32>, Value)]) -> Vec<u8> {
    let mut list = Vec::new();
    for (o, v) in bindings {
        let mut vb = Vec::new();
        ber::put(&mut vb, ber::OID, &ber::oid_bytes(o));
        ber::put_value(&mut vb, v);
        ber::put(&mut list, ber::SEQUENCE, &vb);
    }
    let mut pdu = Vec::new();
    ber::put(&mut pdu, ber::INTEGER, &ber::int_bytes(req.request_id));
    ber::put(&mut pdu, ber::INTEGER, &ber::int_bytes(error.0));
    ber::put(&mut pdu, ber::INTEGER, &ber::int_bytes(error.1));
    ber::put(&mut pdu, ber::SEQUENCE, &list);
    let mut msg = Vec::new();
    ber::put(&mut msg, ber::INTEGER, &ber::int_bytes(req.version));
    ber::put(&mut msg, ber::OCTETS, &req.community);
    ber::put(&mut msg, RESPONSE, &pdu);
    let mut out = Vec::new();
    ber::put(&mut out, ber::SEQUENCE, &msg);
    out
}

/// Serves SNMP on `socket` until `shutdown` completes.
pub async fn serve_snmp(
    socket: tokio::net::UdpSocket,
    target: Arc<Target>,
    community: String,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let mut buf = vec![0u8; 65_536];
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                let (n, peer) = match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::debug!("snmp recv: {e}");
                        continue;
                    }
                };
                if let Some(rsp) = answer(&buf[..n], &community, || mib::snapshot(&target)) {
                    let _ = socket.send_to(&rsp, peer).await;
                }
            }
            () = &mut shutdown => return Ok(()),
        }
    }
}
