//! What a conformance case is, independent of how it is written: its stable
//! id, the requirement it checks, its gates and its body (a script or Rust).

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use super::exec::{Ctx, Fail};
use super::script::Step;

/// `Family.Suite.Case`, stable across releases: baselines, JUnit reports
/// and the traceability table key on it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CaseId {
    pub family: String,
    pub suite: String,
    pub name: String,
}

impl CaseId {
    pub fn new(family: &str, suite: &str, name: &str) -> CaseId {
        CaseId {
            family: family.to_owned(),
            suite: suite.to_owned(),
            name: name.to_owned(),
        }
    }

    /// Parses `Family.Suite.Case`.
    pub fn parse(s: &str) -> Option<CaseId> {
        let mut it = s.splitn(3, '.');
        let (f, su, n) = (it.next()?, it.next()?, it.next()?);
        let ok = |p: &str| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        (ok(f) && ok(su) && ok(n)).then(|| CaseId::new(f, su, n))
    }

    /// `Family.Suite`.
    pub fn suite_name(&self) -> String {
        format!("{}.{}", self.family, self.suite)
    }

    /// Whether a part is a valid id component.
    pub fn valid_part(p: &str) -> bool {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            && p.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
    }
}

impl fmt::Display for CaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.family, self.suite, self.name)
    }
}

/// The RFC 2119 level of the requirement a case checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    Must,
    Should,
    May,
}

impl Level {
    pub fn parse(s: &str) -> Option<Level> {
        match s {
            "MUST" => Some(Level::Must),
            "SHOULD" => Some(Level::Should),
            "MAY" => Some(Level::May),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Must => "MUST",
            Level::Should => "SHOULD",
            Level::May => "MAY",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A condition that must hold for a case to run; otherwise the case is a
/// skip whose reason names the condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gate {
    /// CHAP credentials were given (`--chap` or the URL's user part).
    Chap,
    /// No CHAP credentials were given: the target is taken to accept logins
    /// without authentication (cases that script the login themselves).
    NoChap,
    /// Mutual CHAP credentials were given.
    MutualChap,
    /// The run names a disk LUN (the URL's `/lun`).
    Lun,
    /// A capability the user declares with `--capability NAME` (for
    /// behaviour a target cannot be asked about, such as NOP-In pings).
    Declared(String),
    /// A negotiated value of the session the case runs in, checked after
    /// the automatic login: `InitialR2T=Yes`, `ErrorRecoveryLevel>=1`.
    Param {
        key: String,
        op: CmpOp,
        value: String,
    },
}

/// Comparison in a [`Gate::Param`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Ge,
    Le,
}

impl Gate {
    /// `chap`, `mutual-chap`, `lun`, `declared:NAME`,
    /// `param:Key=Value` (also `!=`, `>=`, `<=`).
    pub fn parse(s: &str) -> Result<Gate, String> {
        match s {
            "chap" => return Ok(Gate::Chap),
            "no-chap" => return Ok(Gate::NoChap),
            "mutual-chap" => return Ok(Gate::MutualChap),
            "lun" => return Ok(Gate::Lun),
            _ => {}
        }
        if let Some(name) = s.strip_prefix("declared:") {
            return if name.is_empty() {
                Err("declared: needs a capability name".to_owned())
            } else {
                Ok(Gate::Declared(name.to_owned()))
            };
        }
        if let Some(cond) = s.strip_prefix("param:") {
            for (tok, op) in [
                (">=", CmpOp::Ge),
                ("<=", CmpOp::Le),
                ("!=", CmpOp::Ne),
                ("=", CmpOp::Eq),
            ] {
                if let Some((k, v)) = cond.split_once(tok) {
                    if k.is_empty() || v.is_empty() {
                        break;
                    }
                    return Ok(Gate::Param {
                        key: k.to_owned(),
                        op,
                        value: v.to_owned(),
                    });
                }
            }
            return Err(format!(
                "invalid parameter gate {s:?} (expected param:Key=Value, !=, >= or <=)"
            ));
        }
        Err(format!(
            "unknown gate {s:?} (expected chap, no-chap, mutual-chap, lun, declared:NAME or param:Key=Value)"
        ))
    }
}

impl fmt::Display for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Gate::Chap => f.write_str("chap"),
            Gate::NoChap => f.write_str("no-chap"),
            Gate::MutualChap => f.write_str("mutual-chap"),
            Gate::Lun => f.write_str("lun"),
            Gate::Declared(n) => write!(f, "declared:{n}"),
            Gate::Param { key, op, value } => {
                let op = match op {
                    CmpOp::Eq => "=",
                    CmpOp::Ne => "!=",
                    CmpOp::Ge => ">=",
                    CmpOp::Le => "<=",
                };
                write!(f, "param:{key}{op}{value}")
            }
        }
    }
}

/// Which negotiation profiles a case runs under (each profile is a separate
/// suite in the reports).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Profiles {
    /// The default profile only.
    Default,
    /// Every profile: the case is about the data path, whose rules change
    /// with ImmediateData, InitialR2T, digests and segment sizes.
    All,
    /// The named profiles.
    Named(Vec<String>),
}

impl Profiles {
    pub fn includes(&self, profile: &str) -> bool {
        match self {
            Profiles::Default => profile == super::profile::DEFAULT,
            Profiles::All => true,
            Profiles::Named(list) => list.iter().any(|p| p == profile),
        }
    }
}

/// How the runner prepares the case before its first step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoginMode {
    /// Nothing: the case opens connections and logs in itself.
    None,
    /// A connection logged in to a normal session with the profile.
    Normal,
    /// A connection logged in to a discovery session.
    Discovery,
}

/// What the runner does after an automatic normal login.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Setup {
    pub login: LoginMode,
    /// Clear pending unit attentions with TEST UNIT READY (a new I_T nexus
    /// starts with POWER ON OCCURRED on most targets).
    pub clear_unit_attention: bool,
    /// Learn the block size and capacity with READ CAPACITY.
    pub capacity: bool,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            login: LoginMode::Normal,
            clear_unit_attention: true,
            capacity: true,
        }
    }
}

/// Everything about a case except its body.
#[derive(Clone, Debug)]
pub struct CaseMeta {
    pub id: CaseId,
    /// The section it checks: `RFC 7143 §11.13.5`, `SPC-4 §6.6.1`.
    pub section: String,
    pub level: Level,
    /// One line: the behaviour expected of the target.
    pub summary: String,
    pub gates: Vec<Gate>,
    /// Writes to the LUN (or resets the target for everyone): runs only
    /// with `--dataloss`.
    pub destructive: bool,
    pub profiles: Profiles,
    pub setup: Setup,
    /// Where it is defined: a script path or a Rust module.
    pub origin: String,
}

/// The future a Rust case returns.
pub type CaseFuture<'a> = Pin<Box<dyn Future<Output = Result<(), Fail>> + Send + 'a>>;

/// A Rust case body.
pub type RustBody = for<'a> fn(&'a mut Ctx) -> CaseFuture<'a>;

/// How a case is expressed.
#[derive(Clone)]
pub enum Body {
    /// Declarative steps from a TOML script.
    Script(Vec<Step>),
    /// Code, for what a script cannot express.
    Rust(RustBody),
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Body::Script(steps) => write!(f, "Script({} steps)", steps.len()),
            Body::Rust(_) => f.write_str("Rust"),
        }
    }
}

/// A case: metadata and body.
#[derive(Clone, Debug)]
pub struct Case {
    pub meta: CaseMeta,
    pub body: Body,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_and_print() {
        let id = CaseId::parse("iSCSI.Login.VersionMin").unwrap();
        assert_eq!(id.suite_name(), "iSCSI.Login");
        assert_eq!(id.to_string(), "iSCSI.Login.VersionMin");
        assert!(CaseId::parse("iSCSI.Login").is_none());
        assert!(CaseId::parse("iSCSI..X").is_none());
        assert!(CaseId::parse("a.b.c d").is_none());
    }

    #[test]
    fn gates_parse() {
        assert_eq!(Gate::parse("chap").unwrap(), Gate::Chap);
        assert_eq!(
            Gate::parse("param:ErrorRecoveryLevel>=1").unwrap(),
            Gate::Param {
                key: "ErrorRecoveryLevel".into(),
                op: CmpOp::Ge,
                value: "1".into()
            }
        );
        assert_eq!(
            Gate::parse("param:InitialR2T=Yes").unwrap().to_string(),
            "param:InitialR2T=Yes"
        );
        assert!(Gate::parse("param:=1").is_err());
        assert!(Gate::parse("chaps").is_err());
        assert!(Gate::parse("declared:").is_err());
    }

    #[test]
    fn profile_sets() {
        assert!(Profiles::Default.includes("default"));
        assert!(!Profiles::Default.includes("digests"));
        assert!(Profiles::All.includes("digests"));
        assert!(Profiles::Named(vec!["digests".into()]).includes("digests"));
    }
}
