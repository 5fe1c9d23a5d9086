//! The observability endpoints of `iesp-target`: where the Prometheus
//! endpoint ([`crate::metrics`]) and the SNMP agent ([`crate::snmp`])
//! listen, and binding them with clear errors.
//!
//! Both are off by default (`--metrics ADDR`, `--snmp ADDR`, or the
//! `[observability]` table of the configuration file). Neither
//! authenticates its clients (SNMP v2c's community is a password sent in
//! clear), so a non-loopback address needs `--allow-remote-endpoints`
//! (`allow_remote = true`), and the target then warns on stderr. An address
//! already in use, or one that cannot be bound, is a usage error (exit 2)
//! naming the flag: the operator asked for an endpoint that cannot exist.

use std::net::SocketAddr;

/// The community SNMP requests must carry when none is configured.
pub const DEFAULT_COMMUNITY: &str = "public";

/// Where the endpoints listen; `None` is off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoints {
    pub metrics: Option<SocketAddr>,
    pub snmp: Option<SocketAddr>,
    /// The read-only community of the SNMP agent.
    pub snmp_community: String,
    /// Whether a non-loopback address is allowed.
    pub allow_remote: bool,
    /// Whether the target counts at all (`--statistics off`): off leaves
    /// the endpoints serving zeros, for measuring what counting costs.
    pub statistics: bool,
}

impl Default for Endpoints {
    fn default() -> Self {
        Endpoints {
            metrics: None,
            snmp: None,
            snmp_community: DEFAULT_COMMUNITY.to_owned(),
            allow_remote: false,
            statistics: true,
        }
    }
}

impl Endpoints {
    /// Refuses a non-loopback address without `allow_remote`; with it,
    /// returns the warnings to print.
    pub fn check(&self) -> Result<Vec<String>, String> {
        let mut warnings = Vec::new();
        for (flag, addr) in [("--metrics", self.metrics), ("--snmp", self.snmp)] {
            let Some(addr) = addr else { continue };
            if addr.ip().is_loopback() {
                continue;
            }
            if !self.allow_remote {
                return Err(format!(
                    "{flag} {addr} is not a loopback address: the endpoint is unauthenticated; \
                     add --allow-remote-endpoints to serve it anyway"
                ));
            }
            warnings.push(format!(
                "warning: {flag} listens on {addr}, reachable from other hosts, with no authentication"
            ));
        }
        Ok(warnings)
    }
}

/// Binds the metrics endpoint's TCP listener; the error names the flag.
pub async fn bind_metrics(addr: SocketAddr) -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| bind_error("--metrics", addr, &e))
}

/// Binds the SNMP agent's UDP socket; the error names the flag.
pub async fn bind_snmp(addr: SocketAddr) -> Result<tokio::net::UdpSocket, String> {
    tokio::net::UdpSocket::bind(addr)
        .await
        .map_err(|e| bind_error("--snmp", addr, &e))
}

fn bind_error(flag: &str, addr: SocketAddr, e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::AddrInUse {
        format!("{flag} {addr}: address already in use (another process listens there)")
    } else {
        format!("{flag} {addr}: cannot listen: {e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_addresses_need_the_flag_and_warn() {
        let mut e = Endpoints {
            metrics: Some("0.0.0.0:9100".parse().unwrap()),
            ..Endpoints::default()
        };
        assert!(e.check().unwrap_err().contains("--allow-remote-endpoints"));
        e.allow_remote = true;
        assert_eq!(e.check().unwrap().len(), 1);
        e.metrics = Some("[::1]:9100".parse().unwrap());
        assert!(e.check().unwrap().is_empty());
    }
}
