//! SendTargets discovery (RFC 7143 §4.3, §13.3, Appendix C).
//!
//! [`discover`] opens a discovery session (SessionType=Discovery), sends
//! `SendTargets=All` in a Text Request, follows the target's continuation
//! (a Text Response with C=1 or F=0 carries a TTT; an empty Text Request
//! echoing it fetches the rest, §11.10, §11.11), logs out and returns the
//! targets with their addresses. The exchange runs on a [`RawConnection`]
//! and is reusable on one logged in by hand ([`send_targets`]).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use iesp_proto::bhs::{Lun, RESERVED_TAG};
use iesp_proto::pdu::{
    LogoutReason, LogoutRequest, LogoutResponse, Pdu, TextRequest, TextResponse,
};
use iesp_proto::serial;
use iesp_proto::text::{self, KeyValue, TextAccumulator};

use crate::login::{self, LoginError, LoginOptions, LoginOutcome};
use crate::raw::{RawConnection, Received};
use crate::url::DEFAULT_PORT;

/// One target a SendTargets answer lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoveredTarget {
    /// TargetName.
    pub name: String,
    /// Its TargetAddress entries, in the order received.
    pub addresses: Vec<TargetAddress>,
}

/// A `TargetAddress=domainname[:port][,portal-group-tag]` value (§13.8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetAddress {
    /// Host name or address; IPv6 without brackets.
    pub host: String,
    /// The port (3260 when absent).
    pub port: u16,
    /// The portal group tag, when given.
    pub portal_group_tag: Option<u16>,
}

impl TargetAddress {
    /// Parses a TargetAddress value; `None` when it is malformed.
    pub fn parse(value: &str) -> Option<TargetAddress> {
        let (addr, tag) = match value.rsplit_once(',') {
            Some((a, t)) => (a, Some(t.parse::<u16>().ok()?)),
            None => (value, None),
        };
        let (host, port) = if let Some(v6) = addr.strip_prefix('[') {
            let (h, rest) = v6.split_once(']')?;
            let port = match rest {
                "" => DEFAULT_PORT,
                p => p.strip_prefix(':')?.parse().ok()?,
            };
            (h, port)
        } else {
            match addr.split_once(':') {
                Some((h, p)) => (h, p.parse().ok()?),
                None => (addr, DEFAULT_PORT),
            }
        };
        if host.is_empty() {
            return None;
        }
        Some(TargetAddress {
            host: host.to_owned(),
            port,
            portal_group_tag: tag,
        })
    }

    /// The socket address, when the host is an IP address.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        let ip: IpAddr = self.host.parse().ok()?;
        Some(SocketAddr::new(ip, self.port))
    }
}

/// Why discovery failed.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("discovery login failed: {0}")]
    Login(#[from] LoginError),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the target closed the connection")]
    Closed,
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// Discovers the targets behind `addr` with a default discovery login.
pub async fn discover(
    addr: SocketAddr,
    initiator_name: &str,
) -> Result<Vec<DiscoveredTarget>, DiscoveryError> {
    discover_with(addr, &LoginOptions::discovery(initiator_name)).await
}

/// Discovers with the given login options (CHAP, digests, …); the target
/// name in them is ignored.
pub async fn discover_with(
    addr: SocketAddr,
    opts: &LoginOptions,
) -> Result<Vec<DiscoveredTarget>, DiscoveryError> {
    let mut opts = opts.clone();
    opts.target_name = None;
    let mut conn = login::connect(addr, &opts).await?;
    let outcome = login::login(&mut conn, &opts).await?;
    let mut seq = Sequence::from(&outcome);
    let targets = send_targets(&mut conn, &mut seq, "All", opts.timeout).await?;
    logout(&mut conn, &mut seq, opts.timeout).await?;
    Ok(targets)
}

/// Sequence numbers of a connection driven by hand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sequence {
    /// CmdSN of the next non-immediate request.
    pub cmd_sn: u32,
    /// StatSN expected next.
    pub exp_stat_sn: u32,
    /// Next ITT to use.
    pub itt: u32,
}

impl From<&LoginOutcome> for Sequence {
    fn from(o: &LoginOutcome) -> Sequence {
        Sequence {
            cmd_sn: o.cmd_sn,
            exp_stat_sn: o.exp_stat_sn,
            itt: 1,
        }
    }
}

impl Sequence {
    fn next_itt(&mut self) -> u32 {
        let itt = self.itt;
        self.itt = self.itt.wrapping_add(1);
        if self.itt == RESERVED_TAG {
            self.itt = 0;
        }
        itt
    }

    fn ack(&mut self, stat_sn: u32) {
        let next = stat_sn.wrapping_add(1);
        if serial::gt(next, self.exp_stat_sn) {
            self.exp_stat_sn = next;
        }
    }
}

async fn recv(
    conn: &mut RawConnection,
    timeout: Duration,
) -> Result<iesp_proto::framing::Frame, DiscoveryError> {
    match conn.recv_skipping_pings(timeout).await {
        Received::Frame(f) => Ok(f),
        Received::Timeout => Err(DiscoveryError::Timeout(timeout)),
        Received::Closed => Err(DiscoveryError::Closed),
        Received::Malformed(e) => Err(DiscoveryError::Protocol(e.to_string())),
    }
}

/// Sends `SendTargets=<value>` and collects the whole answer.
pub async fn send_targets(
    conn: &mut RawConnection,
    seq: &mut Sequence,
    value: &str,
    timeout: Duration,
) -> Result<Vec<DiscoveredTarget>, DiscoveryError> {
    let pairs = text_exchange(conn, seq, &[KeyValue::new("SendTargets", value)], timeout).await?;
    parse_send_targets(&pairs)
}

/// One Text Request exchange on a raw connection (non-immediate, one
/// CmdSN), following continuations; returns the whole answer.
pub async fn text_exchange(
    conn: &mut RawConnection,
    seq: &mut Sequence,
    pairs: &[KeyValue],
    timeout: Duration,
) -> Result<Vec<KeyValue>, DiscoveryError> {
    let itt = seq.next_itt();
    let mut acc = TextAccumulator::new();
    let mut data = Bytes::from(text::encode_to_vec(pairs));
    let mut ttt = RESERVED_TAG;
    loop {
        let req = TextRequest {
            immediate: false,
            final_bit: true,
            continue_bit: false,
            lun: Lun(0),
            itt,
            ttt,
            cmd_sn: seq.cmd_sn,
            exp_stat_sn: seq.exp_stat_sn,
        };
        seq.cmd_sn = seq.cmd_sn.wrapping_add(1);
        conn.send_pdu(&Pdu::TextRequest(req), std::mem::take(&mut data))
            .await?;
        let frame = recv(conn, timeout).await?;
        let rsp: TextResponse = match frame.pdu() {
            Pdu::TextResponse(r) => r,
            Pdu::Reject(r) => {
                return Err(DiscoveryError::Protocol(format!(
                    "the target rejected the Text Request: {}",
                    r.reason
                )));
            }
            _ => {
                return Err(DiscoveryError::Protocol(format!(
                    "expected a Text Response, got {:?}",
                    frame.bhs.opcode()
                )));
            }
        };
        seq.ack(rsp.stat_sn);
        if rsp.itt != itt {
            return Err(DiscoveryError::Protocol(format!(
                "Text Response ITT {:#x}, the request's was {itt:#x}",
                rsp.itt
            )));
        }
        if rsp.final_bit && rsp.continue_bit {
            return Err(DiscoveryError::Protocol(
                "Text Response with both F and C set (RFC 7143 §11.11.1)".to_owned(),
            ));
        }
        let whole = acc
            .push(&frame.data, rsp.continue_bit)
            .map_err(|e| DiscoveryError::Protocol(format!("Text Response: {e}")))?;
        if rsp.final_bit {
            let whole = whole.unwrap_or_default();
            return text::decode(&whole)
                .map_err(|e| DiscoveryError::Protocol(format!("Text Response: {e}")));
        }
        if rsp.ttt == RESERVED_TAG {
            return Err(DiscoveryError::Protocol(
                "Text Response continues (F=0) without a TTT (RFC 7143 §11.11.4)".to_owned(),
            ));
        }
        ttt = rsp.ttt;
    }
}

/// Groups a SendTargets answer: each TargetName followed by its
/// TargetAddress keys (§13.3, Appendix C).
pub fn parse_send_targets(pairs: &[KeyValue]) -> Result<Vec<DiscoveredTarget>, DiscoveryError> {
    let mut out: Vec<DiscoveredTarget> = Vec::new();
    for kv in pairs {
        match kv.key.as_str() {
            "TargetName" => out.push(DiscoveredTarget {
                name: kv.value.clone(),
                addresses: Vec::new(),
            }),
            "TargetAddress" => {
                let addr = TargetAddress::parse(&kv.value).ok_or_else(|| {
                    DiscoveryError::Protocol(format!("malformed TargetAddress={}", kv.value))
                })?;
                let last = out.last_mut().ok_or_else(|| {
                    DiscoveryError::Protocol(format!(
                        "TargetAddress={} before any TargetName",
                        kv.value
                    ))
                })?;
                last.addresses.push(addr);
            }
            // TargetAlias and the like may accompany the entries.
            _ => {}
        }
    }
    Ok(out)
}

/// Logs out (close the session, §11.14) and waits for the response.
pub async fn logout(
    conn: &mut RawConnection,
    seq: &mut Sequence,
    timeout: Duration,
) -> Result<LogoutResponse, DiscoveryError> {
    let req = LogoutRequest {
        immediate: false,
        reason: LogoutReason::CLOSE_SESSION,
        itt: seq.next_itt(),
        cid: 0,
        cmd_sn: seq.cmd_sn,
        exp_stat_sn: seq.exp_stat_sn,
    };
    seq.cmd_sn = seq.cmd_sn.wrapping_add(1);
    conn.send_pdu(&Pdu::LogoutRequest(req), Bytes::new())
        .await?;
    let frame = recv(conn, timeout).await?;
    match frame.pdu() {
        Pdu::LogoutResponse(r) => {
            seq.ack(r.stat_sn);
            Ok(r)
        }
        _ => Err(DiscoveryError::Protocol(format!(
            "expected a Logout Response, got {:?}",
            frame.bhs.opcode()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_address_forms() {
        let a = TargetAddress::parse("127.0.0.1:3261,1").unwrap();
        assert_eq!(
            (a.host.as_str(), a.port, a.portal_group_tag),
            ("127.0.0.1", 3261, Some(1))
        );
        assert_eq!(a.socket_addr(), Some("127.0.0.1:3261".parse().unwrap()));
        let a = TargetAddress::parse("[::1]:3262,7").unwrap();
        assert_eq!((a.host.as_str(), a.port), ("::1", 3262));
        assert_eq!(a.socket_addr(), Some("[::1]:3262".parse().unwrap()));
        let a = TargetAddress::parse("storage.example").unwrap();
        assert_eq!((a.port, a.portal_group_tag), (3260, None));
        assert_eq!(a.socket_addr(), None);
        let a = TargetAddress::parse("[fe80::1]").unwrap();
        assert_eq!(a.port, 3260);
        for bad in ["", ":3260", "h:port", "h:1,tag", "[::1", "[::1]x"] {
            assert_eq!(TargetAddress::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn send_targets_grouping() {
        let kv = |k: &str, v: &str| KeyValue::new(k, v);
        let got = parse_send_targets(&[
            kv("TargetName", "iqn.a"),
            kv("TargetAddress", "10.0.0.1:3260,1"),
            kv("TargetAddress", "[::1]:3260,2"),
            kv("TargetName", "iqn.b"),
        ])
        .unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].name, "iqn.a");
        assert_eq!(got[0].addresses.len(), 2);
        assert_eq!(got[0].addresses[1].portal_group_tag, Some(2));
        assert!(got[1].addresses.is_empty());
        assert!(parse_send_targets(&[kv("TargetAddress", "10.0.0.1")]).is_err());
        assert!(parse_send_targets(&[kv("TargetName", "x"), kv("TargetAddress", "a:b")]).is_err());
    }
}
