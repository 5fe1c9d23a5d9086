//! The Rust cases: what a script cannot express — loops over R2Ts and
//! Data-In sequences, CHAP values computed from the challenge, windows
//! filled to their size, answers parsed and cross-checked.
//!
//! Each module lists its cases with [`Def`]; [`all`] gathers them. They
//! drive the same [`Ctx`] as scripts, so they get the same automatic
//! sequence numbers, traces and outcomes.

mod chap;
mod data;
mod scsi;
mod session;

use bytes::Bytes;

use super::case::{
    Body, Case, CaseFuture, CaseId, CaseMeta, Gate, Level, LoginMode, Profiles, RustBody, Setup,
};
use super::exec::{Ctx, Fail};
use super::transfer::{End, ScsiOutcome, ScsiRequest};

/// A Rust case's metadata, written as a constant-like literal.
pub struct Def {
    pub id: &'static str,
    pub section: &'static str,
    pub level: Level,
    pub summary: &'static str,
    pub gates: &'static [&'static str],
    pub destructive: bool,
    /// `"default"`, `"all"` or a comma-separated list.
    pub profiles: &'static str,
    pub setup: Setup,
    pub run: RustBody,
}

impl Def {
    /// A case in the default profile, logged in, needing nothing.
    pub fn new(
        id: &'static str,
        section: &'static str,
        level: Level,
        summary: &'static str,
        run: RustBody,
    ) -> Def {
        Def {
            id,
            section,
            level,
            summary,
            gates: &[],
            destructive: false,
            profiles: "default",
            setup: Setup::default(),
            run,
        }
    }

    pub fn gates(mut self, g: &'static [&'static str]) -> Def {
        self.gates = g;
        self
    }

    pub fn destructive(mut self) -> Def {
        self.destructive = true;
        self
    }

    pub fn profiles(mut self, p: &'static str) -> Def {
        self.profiles = p;
        self
    }

    pub fn login(mut self, l: LoginMode) -> Def {
        self.setup.login = l;
        self
    }

    /// The case. Ids and gates are constants of this crate; a mistake in
    /// one is caught by the suite's unit tests.
    fn into_case(self, module: &str) -> Case {
        let id = CaseId::parse(self.id).unwrap_or_else(|| panic!("invalid case id {}", self.id));
        let gates = self
            .gates
            .iter()
            .map(|g| Gate::parse(g).unwrap_or_else(|e| panic!("{}: {e}", self.id)))
            .collect();
        let profiles = match self.profiles {
            "default" => Profiles::Default,
            "all" => Profiles::All,
            list => Profiles::Named(list.split(',').map(str::to_owned).collect()),
        };
        Case {
            meta: CaseMeta {
                id,
                section: self.section.to_owned(),
                level: self.level,
                summary: self.summary.to_owned(),
                gates,
                destructive: self.destructive,
                profiles,
                setup: self.setup,
                origin: format!("testsuite/src/conformance/cases/{module}.rs"),
            },
            body: Body::Rust(self.run),
        }
    }
}

/// Every Rust case.
pub fn all() -> Vec<Case> {
    let mut out = Vec::new();
    for (module, defs) in [
        ("data", data::cases()),
        ("session", session::cases()),
        ("chap", chap::cases()),
        ("scsi", scsi::cases()),
    ] {
        out.extend(defs.into_iter().map(|d| d.into_case(module)));
    }
    out
}

/// `len` bytes of data that differ per `seed` and per position.
pub fn pattern(len: usize, seed: u8) -> Bytes {
    Bytes::from(
        (0..len)
            .map(|i| (i as u8).wrapping_mul(7) ^ seed ^ (i >> 8) as u8)
            .collect::<Vec<u8>>(),
    )
}

/// The CDB of a shorthand spec.
pub fn cdb(ctx: &Ctx, spec: &str) -> Result<Vec<u8>, Fail> {
    super::cdb::build(spec, ctx.block_size, &ctx.vars)
        .map(|b| b.bytes)
        .map_err(Fail::error)
}

/// Fails unless the command ended with GOOD (and no violations when they
/// were checked).
pub fn require_good(out: &ScsiOutcome, what: &str) -> Result<(), Fail> {
    if out.end != End::Status || out.status != Some(0) || out.response != 0 {
        return Err(Fail::check(format!(
            "{what}: expected GOOD, got {}",
            out.describe()
        )));
    }
    out.violations_fail().map_err(|e| e.context(what))
}

/// Fails if the exchange broke a rule of `section` (a prefix such as
/// `RFC 7143 §11.7.5`).
pub fn require_no_violation(out: &ScsiOutcome, section: &str, what: &str) -> Result<(), Fail> {
    let v: Vec<String> = out
        .violations
        .iter()
        .filter(|v| v.section.contains(section))
        .map(|v| v.message.clone())
        .collect();
    if v.is_empty() {
        Ok(())
    } else {
        Err(Fail::check(format!("{what}: {}", v.join("; "))))
    }
}

/// A write of `data` at `lba` with `configure` applied to the request.
pub async fn write(
    ctx: &mut Ctx,
    lba: u64,
    data: Bytes,
    configure: impl FnOnce(&mut ScsiRequest),
) -> Result<ScsiOutcome, Fail> {
    let blocks = data.len() as u64 / u64::from(ctx.block_size);
    let c = cdb(ctx, &format!("WRITE(16) lba={lba} blocks={blocks}"))?;
    let mut req = ScsiRequest::write(&c, ctx.lun, data);
    configure(&mut req);
    ctx.scsi(&req).await
}

/// A read of `blocks` at `lba`.
pub async fn read(
    ctx: &mut Ctx,
    lba: u64,
    blocks: u64,
    configure: impl FnOnce(&mut ScsiRequest),
) -> Result<ScsiOutcome, Fail> {
    let c = cdb(ctx, &format!("READ(16) lba={lba} blocks={blocks}"))?;
    let len = u32::try_from(blocks * u64::from(ctx.block_size))
        .map_err(|_| Fail::error("read too large"))?;
    let mut req = ScsiRequest::read(&c, ctx.lun, len);
    configure(&mut req);
    ctx.scsi(&req).await
}

/// Boxes an async case body.
pub fn boxed<'a>(
    f: impl std::future::Future<Output = Result<(), Fail>> + Send + 'a,
) -> CaseFuture<'a> {
    Box::pin(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rust_case_is_well_formed() {
        let cases = all();
        assert!(!cases.is_empty());
        for c in &cases {
            assert!(!c.meta.summary.is_empty(), "{}", c.meta.id);
            assert!(
                c.meta.section.starts_with("RFC ") || c.meta.section.starts_with("S"),
                "{}: section {:?}",
                c.meta.id,
                c.meta.section
            );
        }
    }

    #[test]
    fn patterns_differ_by_seed() {
        assert_ne!(pattern(64, 1), pattern(64, 2));
        assert_eq!(pattern(64, 1).len(), 64);
    }
}
