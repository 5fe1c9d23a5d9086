//! Negotiation profiles: the login a case runs under.
//!
//! The data path's rules change with what was negotiated (RFC 7143 §13.10
//! InitialR2T, §13.11 ImmediateData, §13.1 digests, §13.12–§13.14 segment
//! and burst sizes, §12.1.3 CHAP), so data-path cases run once per profile,
//! each run a separate suite in the reports (`iSCSI.R2T@digests`). A target
//! that declines a profile's values (answers `HeaderDigest=None` to a
//! CRC32C-only offer, say) turns that profile's cases into skips that say
//! so.

use iesp_initiator::LoginOptions;
use iesp_proto::negotiation::{Digest, SessionParams};

/// The profile every case runs under.
pub const DEFAULT: &str = "default";

/// One login profile.
#[derive(Clone, Copy, Debug)]
pub struct Profile {
    pub name: &'static str,
    pub summary: &'static str,
    /// Needs CHAP credentials.
    pub needs_chap: bool,
    apply: fn(&mut LoginOptions),
    check: fn(&SessionParams) -> Result<(), String>,
}

impl Profile {
    /// Applies the profile to login options.
    pub fn apply(&self, o: &mut LoginOptions) {
        (self.apply)(o);
    }

    /// Whether the negotiated parameters are the profile's; `Err` says
    /// what the target did not accept.
    pub fn check(&self, p: &SessionParams) -> Result<(), String> {
        (self.check)(p)
    }
}

fn yes(b: bool) -> &'static str {
    if b { "Yes" } else { "No" }
}

fn r2t_imm(o: &mut LoginOptions, imm: bool, r2t: bool) {
    o.immediate_data = imm;
    o.initial_r2t = r2t;
}

fn check_r2t_imm(p: &SessionParams, imm: bool, r2t: bool) -> Result<(), String> {
    if p.immediate_data != imm || p.initial_r2t != r2t {
        return Err(format!(
            "the target negotiated ImmediateData={} InitialR2T={} (profile asks {} / {})",
            yes(p.immediate_data),
            yes(p.initial_r2t),
            yes(imm),
            yes(r2t)
        ));
    }
    Ok(())
}

/// Every profile, default first.
pub const ALL: &[Profile] = &[
    Profile {
        name: DEFAULT,
        summary: "ImmediateData=Yes, InitialR2T=No, no digests, MaxRecvDataSegmentLength 262144",
        needs_chap: false,
        apply: |o| r2t_imm(o, true, false),
        check: |_| Ok(()),
    },
    Profile {
        name: "immediate-r2t",
        summary: "ImmediateData=Yes, InitialR2T=Yes",
        needs_chap: false,
        apply: |o| r2t_imm(o, true, true),
        check: |p| check_r2t_imm(p, true, true),
    },
    Profile {
        name: "unsolicited",
        summary: "ImmediateData=No, InitialR2T=No (unsolicited Data-Out only)",
        needs_chap: false,
        apply: |o| r2t_imm(o, false, false),
        check: |p| check_r2t_imm(p, false, false),
    },
    Profile {
        name: "r2t-only",
        summary: "ImmediateData=No, InitialR2T=Yes (every byte solicited)",
        needs_chap: false,
        apply: |o| r2t_imm(o, false, true),
        check: |p| check_r2t_imm(p, false, true),
    },
    Profile {
        name: "digests",
        summary: "HeaderDigest=CRC32C, DataDigest=CRC32C",
        needs_chap: false,
        // CRC32C first, None allowed: a target that declines digests still
        // logs in, and the profile's cases become skips that say so.
        apply: |o| {
            o.header_digest = vec![Digest::Crc32c, Digest::None];
            o.data_digest = vec![Digest::Crc32c, Digest::None];
        },
        check: |p| {
            if p.header_digest != Digest::Crc32c || p.data_digest != Digest::Crc32c {
                return Err(format!(
                    "the target negotiated HeaderDigest={} DataDigest={} to an offer of CRC32C,None",
                    p.header_digest.token(),
                    p.data_digest.token()
                ));
            }
            Ok(())
        },
    },
    Profile {
        name: "small-mrdsl",
        summary: "MaxRecvDataSegmentLength 512, MaxBurstLength 4096, FirstBurstLength 1024, MaxOutstandingR2T 1",
        needs_chap: false,
        apply: |o| {
            o.max_recv_data_segment_length = 512;
            o.max_burst_length = 4096;
            o.first_burst_length = 1024;
            o.max_outstanding_r2t = 1;
        },
        check: |p| {
            if p.initiator_mrdsl != 512 || p.max_burst_length > 4096 {
                return Err(format!(
                    "the session has MaxRecvDataSegmentLength {} and MaxBurstLength {} (profile asks 512 / ≤ 4096)",
                    p.initiator_mrdsl, p.max_burst_length
                ));
            }
            Ok(())
        },
    },
    Profile {
        name: "chap",
        summary: "AuthMethod=CHAP with the credentials given on the command line",
        needs_chap: true,
        apply: |_| {},
        check: |_| Ok(()),
    },
];

/// A profile by name.
pub fn by_name(name: &str) -> Option<&'static Profile> {
    ALL.iter().find(|p| p.name == name)
}

/// The names, for messages.
pub fn names() -> Vec<&'static str> {
    ALL.iter().map(|p| p.name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_apply_and_check() {
        let mut o = LoginOptions::new("iqn.i", Some("iqn.t"));
        by_name("r2t-only").unwrap().apply(&mut o);
        assert!(!o.immediate_data && o.initial_r2t);
        let mut p = SessionParams {
            immediate_data: true,
            initial_r2t: false,
            ..SessionParams::default()
        };
        assert!(by_name("r2t-only").unwrap().check(&p).is_err());
        assert!(by_name(DEFAULT).unwrap().check(&p).is_ok());
        p.header_digest = Digest::Crc32c;
        let e = by_name("digests").unwrap().check(&p).unwrap_err();
        assert!(e.contains("DataDigest=None"), "{e}");
        assert_eq!(ALL[0].name, DEFAULT);
        assert!(by_name("nope").is_none());
        let mut seen = std::collections::BTreeSet::new();
        assert!(
            names().into_iter().all(|n| seen.insert(n)),
            "profile names are unique"
        );
    }
}
