//! iSCSI URLs in the libiscsi form.
//!
//! ```text
//! iscsi://[user[%password]@]host[:port]/target-iqn/lun[?key=value&…]
//! iscsi://[user[%password]@]host[:port][/]              (discovery)
//! ```
//!
//! The de-facto convention of libiscsi (`iscsi-ls`, `iscsi-inq`, qemu),
//! parsed the way libiscsi parses it so that a URL valid there is valid
//! here:
//!
//! - the user part ends at the first `@` of the URL; the password follows
//!   the first `%` in it, or else the first `:`; user and password are taken
//!   as written (no percent-decoding: `%` is the separator);
//! - the host is an IPv4 address, a name, or an IPv6 address in brackets
//!   (`[::1]`); the port defaults to 3260 (RFC 7143 §13.8 well-known port);
//! - the target name is percent-decoded (`%3a` → `:`), here strictly: a `%`
//!   must be followed by two hex digits and the result must be UTF-8;
//! - the LUN is a decimal number (at most 16383, the flat-addressing range
//!   SAM-5 §4.7 gives a single-level LUN);
//! - query keys libiscsi knows are honoured — `header_digest=crc32c|none`,
//!   our own `data_digest=crc32c|none` (libiscsi has no such key),
//!   `target_user` and `target_password` (mutual CHAP) — and others are
//!   ignored, as libiscsi ignores them.
//!
//! [`Display`](fmt::Display) masks the password;
//! [`IscsiUrl::to_string_with_password`] does not. Both percent-encode the
//! target name where needed so that the output parses back to the same URL.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use iesp_proto::negotiation::Digest;

use crate::chap::ChapCredentials;

/// The well-known iSCSI port (RFC 7143 §13.8).
pub const DEFAULT_PORT: u16 = 3260;

/// The largest LUN number a URL may carry (flat addressing, SAM-5 §4.7.7).
pub const MAX_URL_LUN: u16 = 16383;

/// A parsed `iscsi://` URL.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct IscsiUrl {
    /// Host name or address, without IPv6 brackets.
    pub host: String,
    /// TCP port; [`DEFAULT_PORT`] when the URL has none.
    pub port: u16,
    /// The target name and LUN; `None` for the discovery form.
    pub target: Option<UrlTarget>,
    /// CHAP user name (the part before `%` or `:`).
    pub user: Option<String>,
    /// CHAP secret.
    pub password: Option<String>,
    /// Mutual CHAP: the name the target must answer with (`?target_user=`).
    pub target_user: Option<String>,
    /// Mutual CHAP: the target's secret (`?target_password=`).
    pub target_password: Option<String>,
    /// `?header_digest=crc32c|none`.
    pub header_digest: Option<Digest>,
    /// `?data_digest=crc32c|none` (an iesp-test key; libiscsi has none).
    pub data_digest: Option<Digest>,
}

/// The `/target-iqn/lun` part of a URL.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UrlTarget {
    /// The target's iSCSI name, percent-decoded.
    pub name: String,
    /// The logical unit number.
    pub lun: u16,
}

/// Why a string is not an iSCSI URL.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error(
        "not an iSCSI URL: it must start with iscsi:// (iscsi://[user[%password]@]host[:port]/target-iqn/lun)"
    )]
    Scheme,
    #[error("the URL has no host")]
    EmptyHost,
    #[error("invalid port {0:?}: expected a number from 1 to 65535")]
    Port(String),
    #[error("invalid IPv6 address {0:?} (write it in brackets: [::1]:3260)")]
    Ipv6(String),
    #[error("unexpected {0:?} after the host (expected :port or /target-iqn/lun)")]
    AfterHost(String),
    #[error("the target name is empty (expected /target-iqn/lun)")]
    EmptyTarget,
    #[error("no LUN after the target name (expected /target-iqn/lun)")]
    MissingLun,
    #[error("invalid LUN {0:?}: expected a decimal number from 0 to 16383")]
    Lun(String),
    #[error("invalid percent-encoding in the target name {0:?}")]
    PercentEncoding(String),
    #[error("invalid header_digest {0:?}: expected crc32c or none")]
    HeaderDigest(String),
    #[error("invalid data_digest {0:?}: expected crc32c or none")]
    DataDigest(String),
}

impl IscsiUrl {
    /// A discovery URL for `addr`.
    pub fn discovery(addr: SocketAddr) -> IscsiUrl {
        IscsiUrl {
            host: addr.ip().to_string(),
            port: addr.port(),
            target: None,
            user: None,
            password: None,
            target_user: None,
            target_password: None,
            header_digest: None,
            data_digest: None,
        }
    }

    /// A URL for LUN `lun` of target `name` at `addr`.
    pub fn new(addr: SocketAddr, name: &str, lun: u16) -> IscsiUrl {
        IscsiUrl {
            target: Some(UrlTarget {
                name: name.to_owned(),
                lun,
            }),
            ..IscsiUrl::discovery(addr)
        }
    }

    /// The target name, if this is not a discovery URL.
    pub fn target_name(&self) -> Option<&str> {
        self.target.as_ref().map(|t| t.name.as_str())
    }

    /// The LUN, if this is not a discovery URL.
    pub fn lun(&self) -> Option<u16> {
        self.target.as_ref().map(|t| t.lun)
    }

    /// The initiator's CHAP credentials, when both user and password are
    /// present and non-empty (libiscsi ignores one without the other).
    pub fn chap(&self) -> Option<ChapCredentials> {
        match (&self.user, &self.password) {
            (Some(u), Some(p)) if !u.is_empty() && !p.is_empty() => {
                Some(ChapCredentials::new(u.as_str(), p.as_bytes()))
            }
            _ => None,
        }
    }

    /// The credentials the target must prove for mutual CHAP, when given
    /// and one-way CHAP is configured too.
    pub fn mutual_chap(&self) -> Option<ChapCredentials> {
        self.chap()?;
        match (&self.target_user, &self.target_password) {
            (Some(u), Some(p)) if !u.is_empty() && !p.is_empty() => {
                Some(ChapCredentials::new(u.as_str(), p.as_bytes()))
            }
            _ => None,
        }
    }

    /// The socket address, when the host is an IP address or `localhost`
    /// (loopback). Other names need [`IscsiUrl::resolve`]; nothing here
    /// looks anything up.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        let ip = match self.host.parse::<IpAddr>() {
            Ok(ip) => ip,
            Err(_) if self.host.eq_ignore_ascii_case("localhost") => {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            }
            Err(_) => return None,
        };
        Some(SocketAddr::new(ip, self.port))
    }

    /// The socket address: the literal address, or the first address the
    /// system resolver gives for the host name.
    pub async fn resolve(&self) -> std::io::Result<SocketAddr> {
        if let Some(addr) = self.socket_addr() {
            return Ok(addr);
        }
        tokio::net::lookup_host((self.host.as_str(), self.port))
            .await?
            .next()
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("{} has no address", self.host),
                )
            })
    }

    /// The URL with its password in clear.
    pub fn to_string_with_password(&self) -> String {
        let mut s = String::new();
        // Writing to a String cannot fail.
        let _ = self.write(&mut s, true);
        s
    }

    fn write(&self, f: &mut impl fmt::Write, reveal: bool) -> fmt::Result {
        f.write_str("iscsi://")?;
        if let Some(user) = &self.user {
            f.write_str(user)?;
            if let Some(pw) = &self.password {
                f.write_str("%")?;
                f.write_str(if reveal { pw } else { "***" })?;
            }
            f.write_str("@")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)?;
        } else {
            write!(f, "{}:{}", self.host, self.port)?;
        }
        if let Some(t) = &self.target {
            f.write_str("/")?;
            percent_encode(f, &t.name)?;
            write!(f, "/{}", t.lun)?;
        }
        let mut sep = '?';
        let mut query = |f: &mut dyn fmt::Write, k: &str, v: &str| {
            let r = write!(f, "{sep}{k}={v}");
            sep = '&';
            r
        };
        if let Some(d) = self.header_digest {
            let v = match d {
                Digest::Crc32c => "crc32c",
                Digest::None => "none",
            };
            query(f, "header_digest", v)?;
        }
        if let Some(d) = self.data_digest {
            let v = match d {
                Digest::Crc32c => "crc32c",
                Digest::None => "none",
            };
            query(f, "data_digest", v)?;
        }
        if let Some(u) = &self.target_user {
            query(f, "target_user", u)?;
        }
        if let Some(p) = &self.target_password {
            query(f, "target_password", if reveal { p } else { "***" })?;
        }
        Ok(())
    }
}

impl fmt::Display for IscsiUrl {
    /// The URL with the passwords masked as `***`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, false)
    }
}

impl fmt::Debug for IscsiUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IscsiUrl({self})")
    }
}

impl FromStr for IscsiUrl {
    type Err = UrlError;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let rest = url.strip_prefix("iscsi://").ok_or(UrlError::Scheme)?;
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        // libiscsi: the first '@' ends the user part, wherever it is.
        let (userinfo, rest) = match rest.split_once('@') {
            Some((u, r)) => (Some(u), r),
            None => (None, rest),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(u) => match u.split_once('%').or_else(|| u.split_once(':')) {
                Some((user, pw)) => (Some(user.to_owned()), Some(pw.to_owned())),
                None => (Some(u.to_owned()), None),
            },
        };
        let (authority, path) = match rest.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (rest, None),
        };
        let (host, port) = parse_authority(authority)?;
        let target = match path {
            None | Some("") => None,
            Some(path) => Some(parse_path(path)?),
        };
        let mut parsed = IscsiUrl {
            host,
            port,
            target,
            user,
            password,
            target_user: None,
            target_password: None,
            header_digest: None,
            data_digest: None,
        };
        for pair in query.unwrap_or_default().split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "header_digest" => {
                    parsed.header_digest = Some(match value {
                        "crc32c" => Digest::Crc32c,
                        "none" => Digest::None,
                        other => return Err(UrlError::HeaderDigest(other.to_owned())),
                    })
                }
                "data_digest" => {
                    parsed.data_digest = Some(match value {
                        "crc32c" => Digest::Crc32c,
                        "none" => Digest::None,
                        other => return Err(UrlError::DataDigest(other.to_owned())),
                    })
                }
                "target_user" => parsed.target_user = Some(value.to_owned()),
                "target_password" => parsed.target_password = Some(value.to_owned()),
                // Unknown keys are ignored, as libiscsi ignores them.
                _ => {}
            }
        }
        Ok(parsed)
    }
}

fn parse_authority(authority: &str) -> Result<(String, u16), UrlError> {
    if authority.is_empty() {
        return Err(UrlError::EmptyHost);
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (addr, after) = v6
            .split_once(']')
            .ok_or_else(|| UrlError::Ipv6(authority.to_owned()))?;
        addr.parse::<Ipv6Addr>()
            .map_err(|_| UrlError::Ipv6(addr.to_owned()))?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| UrlError::AfterHost(p.to_owned()))?,
            ),
        };
        (addr, port)
    } else {
        match authority.split_once(':') {
            Some((_, p)) if p.contains(':') => return Err(UrlError::Ipv6(authority.to_owned())),
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(UrlError::EmptyHost);
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|n| *n != 0 && p.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| UrlError::Port(p.to_owned()))?,
    };
    Ok((host.to_owned(), port))
}

fn parse_path(path: &str) -> Result<UrlTarget, UrlError> {
    let (name, lun) = path.split_once('/').ok_or(UrlError::MissingLun)?;
    if name.is_empty() {
        return Err(UrlError::EmptyTarget);
    }
    let lun_num = lun
        .parse::<u16>()
        .ok()
        .filter(|n| *n <= MAX_URL_LUN && !lun.is_empty() && lun.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| UrlError::Lun(lun.to_owned()))?;
    Ok(UrlTarget {
        name: percent_decode(name)?,
        lun: lun_num,
    })
}

fn percent_decode(s: &str) -> Result<String, UrlError> {
    let bad = || UrlError::PercentEncoding(s.to_owned());
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b != b'%' {
            out.push(b);
            continue;
        }
        let hi = bytes
            .next()
            .and_then(|c| (c as char).to_digit(16))
            .ok_or_else(bad)?;
        let lo = bytes
            .next()
            .and_then(|c| (c as char).to_digit(16))
            .ok_or_else(bad)?;
        out.push((hi * 16 + lo) as u8);
    }
    String::from_utf8(out).map_err(|_| bad())
}

/// Writes `s` with the bytes that would not survive parsing percent-encoded.
fn percent_encode(f: &mut impl fmt::Write, s: &str) -> fmt::Result {
    for b in s.bytes() {
        let keep = b.is_ascii_graphic() && !matches!(b, b'%' | b'/' | b'?' | b'@' | b'&' | b'#');
        if keep {
            f.write_char(char::from(b))?;
        } else {
            write!(f, "%{b:02X}")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    fn parse(s: &str) -> IscsiUrl {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn full_form_with_defaults() {
        let u = parse("iscsi://127.0.0.1/iqn.2026-11.org.example:disk/3");
        assert_eq!(u.host, "127.0.0.1");
        assert_eq!(u.port, 3260);
        assert_eq!(u.target_name(), Some("iqn.2026-11.org.example:disk"));
        assert_eq!(u.lun(), Some(3));
        assert_eq!(u.user, None);
        assert_eq!(u.socket_addr(), Some("127.0.0.1:3260".parse().unwrap()));
    }

    #[test]
    fn user_and_password_with_percent_or_colon() {
        let u = parse("iscsi://alice%s3cret@10.0.0.1:3261/iqn.x:t/0");
        assert_eq!(u.user.as_deref(), Some("alice"));
        assert_eq!(u.password.as_deref(), Some("s3cret"));
        assert_eq!(u.port, 3261);
        let c = u.chap().unwrap();
        assert_eq!(c.user, "alice");
        assert_eq!(c.secret, b"s3cret");
        // libiscsi falls back to ':' when there is no '%'.
        let u = parse("iscsi://bob:pw@host/iqn.x:t/1");
        assert_eq!(
            (u.user.as_deref(), u.password.as_deref()),
            (Some("bob"), Some("pw"))
        );
        // '%' wins over ':' and the password keeps its ':'.
        let u = parse("iscsi://carol%a:b@host/iqn.x:t/1");
        assert_eq!(u.password.as_deref(), Some("a:b"));
        // A user without a password is kept but gives no credentials.
        let u = parse("iscsi://dave@host/iqn.x:t/1");
        assert_eq!(u.user.as_deref(), Some("dave"));
        assert_eq!(u.chap(), None);
    }

    #[test]
    fn ipv6_in_brackets() {
        let u = parse("iscsi://[::1]:3262/iqn.x:t/7");
        assert_eq!(u.host, "::1");
        assert_eq!(u.port, 3262);
        assert_eq!(u.socket_addr(), Some("[::1]:3262".parse().unwrap()));
        let u = parse("iscsi://[fe80::1]/iqn.x:t/0");
        assert_eq!(u.port, DEFAULT_PORT);
        assert_eq!(
            "iscsi://::1/iqn.x:t/0".parse::<IscsiUrl>(),
            Err(UrlError::Ipv6("::1".into()))
        );
        assert_eq!(
            "iscsi://[::g]/iqn.x:t/0".parse::<IscsiUrl>(),
            Err(UrlError::Ipv6("::g".into()))
        );
        assert_eq!(
            "iscsi://[::1/iqn.x:t/0".parse::<IscsiUrl>(),
            Err(UrlError::Ipv6("[::1".into()))
        );
        assert_eq!(
            "iscsi://[::1]x/iqn.x:t/0".parse::<IscsiUrl>(),
            Err(UrlError::AfterHost("x".into()))
        );
    }

    #[test]
    fn discovery_form() {
        for s in ["iscsi://127.0.0.1:3261", "iscsi://127.0.0.1:3261/"] {
            let u = parse(s);
            assert_eq!(u.target, None, "{s}");
            assert_eq!(u.port, 3261);
            assert_eq!(u.to_string(), "iscsi://127.0.0.1:3261");
        }
        assert_eq!(
            parse("iscsi://localhost").socket_addr().map(|a| a.port()),
            Some(3260)
        );
        assert_eq!(parse("iscsi://example.invalid").socket_addr(), None);
    }

    #[test]
    fn target_name_is_percent_decoded() {
        let u = parse("iscsi://h/iqn.2026-11.test%3Adisk%2fa/0");
        assert_eq!(u.target_name(), Some("iqn.2026-11.test:disk/a"));
        // Display re-encodes what would not parse back.
        assert_eq!(u.to_string(), "iscsi://h:3260/iqn.2026-11.test:disk%2Fa/0");
        assert_eq!(parse(&u.to_string()), u);
        for bad in [
            "iscsi://h/iqn%zz/0",
            "iscsi://h/iqn%4/0",
            "iscsi://h/iqn%ff/0",
        ] {
            assert!(
                matches!(bad.parse::<IscsiUrl>(), Err(UrlError::PercentEncoding(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn invalid_forms() {
        let cases: &[(&str, UrlError)] = &[
            ("http://h/iqn.x/0", UrlError::Scheme),
            ("iscsi:/h/iqn.x/0", UrlError::Scheme),
            ("iscsi://", UrlError::EmptyHost),
            ("iscsi:///iqn.x/0", UrlError::EmptyHost),
            ("iscsi://:3260/iqn.x/0", UrlError::EmptyHost),
            ("iscsi://h:/iqn.x/0", UrlError::Port(String::new())),
            ("iscsi://h:0/iqn.x/0", UrlError::Port("0".into())),
            ("iscsi://h:65536/iqn.x/0", UrlError::Port("65536".into())),
            ("iscsi://h:+1/iqn.x/0", UrlError::Port("+1".into())),
            ("iscsi://h//0", UrlError::EmptyTarget),
            ("iscsi://h/iqn.x", UrlError::MissingLun),
            ("iscsi://h/iqn.x/", UrlError::Lun(String::new())),
            ("iscsi://h/iqn.x/one", UrlError::Lun("one".into())),
            ("iscsi://h/iqn.x/-1", UrlError::Lun("-1".into())),
            ("iscsi://h/iqn.x/16384", UrlError::Lun("16384".into())),
            ("iscsi://h/iqn.x/0/1", UrlError::Lun("0/1".into())),
            (
                "iscsi://h/iqn.x/0?header_digest=md5",
                UrlError::HeaderDigest("md5".into()),
            ),
            (
                "iscsi://h/iqn.x/0?data_digest=md5",
                UrlError::DataDigest("md5".into()),
            ),
        ];
        for (s, want) in cases {
            assert_eq!(s.parse::<IscsiUrl>().as_ref(), Err(want), "{s}");
        }
        // Errors read well.
        assert_eq!(
            UrlError::MissingLun.to_string(),
            "no LUN after the target name (expected /target-iqn/lun)"
        );
    }

    #[test]
    fn query_keys() {
        let u = parse(
            "iscsi://u%p@h/iqn.x:t/2?header_digest=crc32c&target_user=tu&target_password=tp&iser",
        );
        assert_eq!(u.header_digest, Some(Digest::Crc32c));
        let m = u.mutual_chap().unwrap();
        assert_eq!((m.user.as_str(), m.secret.as_slice()), ("tu", &b"tp"[..]));
        // Mutual CHAP needs one-way CHAP too.
        let u = parse("iscsi://h/iqn.x:t/2?target_user=tu&target_password=tp");
        assert_eq!(u.mutual_chap(), None);
    }

    #[test]
    fn display_masks_passwords() {
        let u = parse("iscsi://u%hunter2@[::1]:3000/iqn.x:t/5?target_user=tu&target_password=tp");
        assert_eq!(
            u.to_string(),
            "iscsi://u%***@[::1]:3000/iqn.x:t/5?target_user=tu&target_password=***"
        );
        let clear = u.to_string_with_password();
        assert_eq!(
            clear,
            "iscsi://u%hunter2@[::1]:3000/iqn.x:t/5?target_user=tu&target_password=tp"
        );
        assert_eq!(parse(&clear), u);
        assert!(!format!("{u:?}").contains("hunter2"));
    }

    #[test]
    fn constructors() {
        let addr: SocketAddr = "127.0.0.1:3999".parse().unwrap();
        let u = IscsiUrl::new(addr, "iqn.x:t", 4);
        assert_eq!(u.to_string(), "iscsi://127.0.0.1:3999/iqn.x:t/4");
        assert_eq!(u.socket_addr(), Some(addr));
        assert_eq!(
            IscsiUrl::discovery(addr).to_string(),
            "iscsi://127.0.0.1:3999"
        );
    }

    #[test]
    fn data_digest_key_round_trips() {
        let u: IscsiUrl = "iscsi://h/iqn.x/0?header_digest=crc32c&data_digest=crc32c"
            .parse()
            .unwrap();
        assert_eq!(u.data_digest, Some(Digest::Crc32c));
        assert_eq!(u.header_digest, Some(Digest::Crc32c));
        let back: IscsiUrl = u.to_string().parse().unwrap();
        assert_eq!(back, u);
        let o = crate::login::LoginOptions::from_url(&u, "iqn.i");
        assert_eq!(o.data_digest, vec![Digest::Crc32c]);
    }
}
