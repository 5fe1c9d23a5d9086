//! Per-field matchers of `expect` steps: equal, not equal, ranges, lists,
//! any, absent/present (text keys) and capture into a variable.
//!
//! In a script a matcher is a plain value (equality) or a table:
//! `{ ne = 0xffffffff }`, `{ range = [1, "${MaxBurstLength}"] }`,
//! `{ le = "$MaxBurstLength" }`, `{ in = [0, 5] }`, `{ any = true }`,
//! `{ capture = "ttt", ne = 0xffffffff }`. Text keys also take
//! `{ absent = true }` / `{ present = true }` and compare strings, or
//! numbers when the bound is numeric.
//!
//! A failed match is a [`Mismatch`]: the field, what was expected and what
//! arrived, printed one per line in the failure report.

use std::fmt;

use super::value::{Vars, eval_int, interpolate, parse_int};

/// One expected-versus-actual difference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// `R2t.DesiredDataTransferLength`, `LoginResponse key HeaderDigest`.
    pub what: String,
    pub expected: String,
    pub actual: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: expected {}, got {}",
            self.what, self.expected, self.actual
        )
    }
}

/// A bound: an integer expression or a literal string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bound {
    /// A number, `$var` or `${expr}`, evaluated when matching. Symbolic
    /// names (`AbortTask`, `GOOD`) are resolved by the field's symbol table.
    Int(String),
    /// A string (text key values); `${…}` is interpolated.
    Str(String),
}

impl Bound {
    fn from_toml(v: &toml::Value) -> Result<Bound, String> {
        match v {
            toml::Value::Integer(i) if *i >= 0 => Ok(Bound::Int(i.to_string())),
            toml::Value::Integer(i) => Err(format!("negative value {i}")),
            toml::Value::Boolean(b) => Ok(Bound::Int(u8::from(*b).to_string())),
            toml::Value::String(s) => Ok(Bound::Str(s.clone())),
            other => Err(format!("expected a number or string, got {other}")),
        }
    }

    fn int(&self, vars: &Vars, sym: &dyn Fn(&str) -> Option<u64>) -> Result<u64, String> {
        let s = match self {
            Bound::Int(s) | Bound::Str(s) => s,
        };
        if let Some(v) = sym(s) {
            return Ok(v);
        }
        // `0x020b (InvalidDuringLogin)`: a number with its name for reports.
        let s = match s.split_once(" (") {
            Some((n, rest)) if rest.ends_with(')') && !s.starts_with("${") => n,
            _ => s,
        };
        eval_int(s, vars)
    }

    fn text(&self, vars: &Vars) -> Result<String, String> {
        match self {
            Bound::Int(s) => Ok(s.clone()),
            Bound::Str(s) if s.starts_with('$') && !s.starts_with("${") => {
                match vars.get(&s[1..]) {
                    Some(v) => Ok(v.to_string()),
                    None => Err(format!("unknown variable {}", &s[1..])),
                }
            }
            Bound::Str(s) => interpolate(s, vars),
        }
    }

    fn is_numeric(&self) -> bool {
        match self {
            Bound::Int(_) => true,
            Bound::Str(s) => s.starts_with('$') || parse_int(s).is_some(),
        }
    }

    fn describe(&self) -> String {
        match self {
            Bound::Int(s) | Bound::Str(s) => s.clone(),
        }
    }
}

/// One test of a matcher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Test {
    Eq(Bound),
    Ne(Bound),
    Ge(Bound),
    Le(Bound),
    Gt(Bound),
    Lt(Bound),
    Range(Bound, Bound),
    In(Vec<Bound>),
    NotIn(Vec<Bound>),
    /// Text keys: the key must not be in the payload.
    Absent,
    /// Text keys: the key must be in the payload (any value).
    Present,
}

/// A matcher: every test must hold; then the value is captured.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Matcher {
    pub tests: Vec<Test>,
    pub capture: Option<String>,
    /// Text keys: an absent key is accepted (an optional answer, §6.2.2).
    pub optional: bool,
}

impl Matcher {
    /// Equality with a literal number.
    pub fn eq_int(v: u64) -> Matcher {
        Matcher {
            tests: vec![Test::Eq(Bound::Int(v.to_string()))],
            capture: None,
            optional: false,
        }
    }

    /// Matches anything (and captures nothing).
    pub fn any() -> Matcher {
        Matcher::default()
    }

    /// From a script value (see the module docs).
    pub fn from_toml(v: &toml::Value) -> Result<Matcher, String> {
        let t = match v {
            toml::Value::Table(t) => t,
            toml::Value::String(s) if s == "any" || s == "*" => return Ok(Matcher::any()),
            other => {
                return Ok(Matcher {
                    tests: vec![Test::Eq(Bound::from_toml(other)?)],
                    capture: None,
                    optional: false,
                });
            }
        };
        let mut m = Matcher::default();
        let list = |v: &toml::Value| -> Result<Vec<Bound>, String> {
            match v {
                toml::Value::Array(a) => a.iter().map(Bound::from_toml).collect(),
                other => Err(format!("expected a list, got {other}")),
            }
        };
        for (k, v) in t {
            match k.as_str() {
                "eq" => m.tests.push(Test::Eq(Bound::from_toml(v)?)),
                "ne" => m.tests.push(Test::Ne(Bound::from_toml(v)?)),
                "ge" => m.tests.push(Test::Ge(Bound::from_toml(v)?)),
                "le" => m.tests.push(Test::Le(Bound::from_toml(v)?)),
                "gt" => m.tests.push(Test::Gt(Bound::from_toml(v)?)),
                "lt" => m.tests.push(Test::Lt(Bound::from_toml(v)?)),
                "range" => {
                    let b = list(v)?;
                    let [lo, hi] = <[Bound; 2]>::try_from(b)
                        .map_err(|_| "range takes [low, high]".to_owned())?;
                    m.tests.push(Test::Range(lo, hi));
                }
                "in" => m.tests.push(Test::In(list(v)?)),
                "not_in" => m.tests.push(Test::NotIn(list(v)?)),
                "any" => {}
                "absent" if v.as_bool() == Some(true) => m.tests.push(Test::Absent),
                "present" if v.as_bool() == Some(true) => m.tests.push(Test::Present),
                "optional" => m.optional = v.as_bool().ok_or("optional is true or false")?,
                "capture" => {
                    let name = v.as_str().ok_or("capture takes a variable name")?;
                    m.capture = Some(name.to_owned());
                }
                other => {
                    return Err(format!(
                        "unknown matcher {other:?} (expected eq, ne, ge, le, gt, lt, range, in, not_in, any, absent, present, optional, capture)"
                    ));
                }
            }
        }
        Ok(m)
    }

    /// What the matcher expects, for reports.
    pub fn describe(&self) -> String {
        if self.tests.is_empty() {
            return "any".to_owned();
        }
        let parts: Vec<String> = self
            .tests
            .iter()
            .map(|t| match t {
                Test::Eq(b) => b.describe(),
                Test::Ne(b) => format!("≠ {}", b.describe()),
                Test::Ge(b) => format!("≥ {}", b.describe()),
                Test::Le(b) => format!("≤ {}", b.describe()),
                Test::Gt(b) => format!("> {}", b.describe()),
                Test::Lt(b) => format!("< {}", b.describe()),
                Test::Range(a, b) => format!("{}..={}", a.describe(), b.describe()),
                Test::In(l) => format!(
                    "one of [{}]",
                    l.iter().map(Bound::describe).collect::<Vec<_>>().join(", ")
                ),
                Test::NotIn(l) => format!(
                    "none of [{}]",
                    l.iter().map(Bound::describe).collect::<Vec<_>>().join(", ")
                ),
                Test::Absent => "absent".to_owned(),
                Test::Present => "present".to_owned(),
            })
            .collect();
        parts.join(" and ")
    }

    /// Checks an integer field; captures it on success.
    pub fn check_int(
        &self,
        what: &str,
        actual: u64,
        vars: &mut Vars,
        sym: &dyn Fn(&str) -> Option<u64>,
    ) -> Result<(), MatchError> {
        self.check_int_masked(what, actual, u64::MAX, vars, sym)
    }

    /// As [`Matcher::check_int`] for a field `mask` wide: expected values of
    /// equality tests are cut to the field's width, so `${CmdSN + 1}` matches
    /// a 32-bit field that wrapped to 0 (serial arithmetic, RFC 1982).
    pub fn check_int_masked(
        &self,
        what: &str,
        actual: u64,
        mask: u64,
        vars: &mut Vars,
        sym: &dyn Fn(&str) -> Option<u64>,
    ) -> Result<(), MatchError> {
        let int =
            |b: &Bound, vars: &Vars| -> Result<u64, MatchError> { Ok(b.int(vars, sym)? & mask) };
        for t in &self.tests {
            let ok = match t {
                Test::Eq(b) => actual == int(b, vars)?,
                Test::Ne(b) => actual != int(b, vars)?,
                Test::Ge(b) => actual >= b.int(vars, sym)?,
                Test::Le(b) => actual <= b.int(vars, sym)?,
                Test::Gt(b) => actual > b.int(vars, sym)?,
                Test::Lt(b) => actual < b.int(vars, sym)?,
                Test::Range(lo, hi) => (lo.int(vars, sym)?..=hi.int(vars, sym)?).contains(&actual),
                Test::In(l) => {
                    let mut any = false;
                    for b in l {
                        any |= actual == int(b, vars)?;
                    }
                    any
                }
                Test::NotIn(l) => {
                    let mut none = true;
                    for b in l {
                        none &= actual != int(b, vars)?;
                    }
                    none
                }
                Test::Absent | Test::Present => true,
            };
            if !ok {
                return Err(MatchError::Mismatch(Mismatch {
                    what: what.to_owned(),
                    expected: self.describe_resolved(vars, sym),
                    actual: show_int(actual),
                }));
            }
        }
        if let Some(c) = &self.capture {
            vars.set_int(c, actual);
        }
        Ok(())
    }

    /// Checks a text key's value (`None`: the key is not there).
    pub fn check_str(
        &self,
        what: &str,
        actual: Option<&str>,
        vars: &mut Vars,
    ) -> Result<(), MatchError> {
        let no_sym = |_: &str| None;
        for t in &self.tests {
            let ok = match (t, actual) {
                (Test::Absent, a) => a.is_none(),
                (Test::Present, a) => a.is_some(),
                (_, None) => false,
                (Test::Eq(b), Some(a)) => str_eq(b, a, vars)?,
                (Test::Ne(b), Some(a)) => !str_eq(b, a, vars)?,
                (Test::In(l), Some(a)) => {
                    let mut any = false;
                    for b in l {
                        any |= str_eq(b, a, vars)?;
                    }
                    any
                }
                (Test::NotIn(l), Some(a)) => {
                    let mut none = true;
                    for b in l {
                        none &= !str_eq(b, a, vars)?;
                    }
                    none
                }
                (Test::Ge(b) | Test::Le(b) | Test::Gt(b) | Test::Lt(b), Some(a)) => {
                    let Some(n) = parse_int(a) else {
                        return Err(MatchError::Mismatch(Mismatch {
                            what: what.to_owned(),
                            expected: self.describe_resolved(vars, &no_sym),
                            actual: format!("{a:?} (not a number)"),
                        }));
                    };
                    let bound = b.int(vars, &no_sym)?;
                    match t {
                        Test::Ge(_) => n >= bound,
                        Test::Le(_) => n <= bound,
                        Test::Gt(_) => n > bound,
                        _ => n < bound,
                    }
                }
                (Test::Range(lo, hi), Some(a)) => match parse_int(a) {
                    Some(n) => (lo.int(vars, &no_sym)?..=hi.int(vars, &no_sym)?).contains(&n),
                    None => false,
                },
            };
            if !ok {
                return Err(MatchError::Mismatch(Mismatch {
                    what: what.to_owned(),
                    expected: self.describe_resolved(vars, &no_sym),
                    actual: actual.map_or_else(|| "absent".to_owned(), |a| format!("{a:?}")),
                }));
            }
        }
        if let (Some(c), Some(a)) = (&self.capture, actual) {
            match parse_int(a) {
                Some(n) => vars.set_int(c, n),
                None => vars.set_str(c, a),
            }
        }
        Ok(())
    }

    /// The description with variables replaced by their values, so a report
    /// says `≤ 4096 ($MaxBurstLength)` rather than only the name.
    fn describe_resolved(&self, vars: &Vars, sym: &dyn Fn(&str) -> Option<u64>) -> String {
        let d = self.describe();
        let mut resolved = Vec::new();
        for t in &self.tests {
            let bounds: Vec<&Bound> = match t {
                Test::Eq(b)
                | Test::Ne(b)
                | Test::Ge(b)
                | Test::Le(b)
                | Test::Gt(b)
                | Test::Lt(b) => vec![b],
                Test::Range(a, b) => vec![a, b],
                Test::In(l) | Test::NotIn(l) => l.iter().collect(),
                Test::Absent | Test::Present => vec![],
            };
            for b in bounds {
                let s = b.describe();
                if s.starts_with('$')
                    && let Ok(v) = b.int(vars, sym)
                {
                    resolved.push(format!("{s}={}", show_int(v)));
                }
            }
        }
        if resolved.is_empty() {
            d
        } else {
            format!("{d} ({})", resolved.join(", "))
        }
    }
}

fn str_eq(b: &Bound, actual: &str, vars: &Vars) -> Result<bool, MatchError> {
    if b.is_numeric()
        && let Some(n) = parse_int(actual)
    {
        let no_sym = |_: &str| None;
        return Ok(n == b.int(vars, &no_sym)?);
    }
    Ok(b.text(vars)? == actual)
}

/// A match that did not hold, or one that could not be evaluated (an
/// unknown variable: a script error, reported as a harness error).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MatchError {
    Mismatch(Mismatch),
    Eval(String),
}

impl From<String> for MatchError {
    fn from(s: String) -> Self {
        MatchError::Eval(s)
    }
}

/// `4096 (0x1000)` for numbers above 9, `7` otherwise.
pub fn show_int(v: u64) -> String {
    if v > 9 {
        format!("{v} ({v:#x})")
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(src: &str) -> Matcher {
        let v: toml::Table = toml::from_str(&format!("m = {src}")).unwrap();
        Matcher::from_toml(&v["m"]).unwrap()
    }

    #[test]
    fn integer_matchers() {
        let mut vars = Vars::default();
        vars.set_int("MaxBurstLength", 4096);
        let none = |_: &str| None;
        assert!(m("5").check_int("f", 5, &mut vars, &none).is_ok());
        assert!(m("\"0x5\"").check_int("f", 5, &mut vars, &none).is_ok());
        assert!(
            m("{ ne = 0xffffffff }")
                .check_int("f", 1, &mut vars, &none)
                .is_ok()
        );
        assert!(
            m("{ range = [1, \"$MaxBurstLength\"] }")
                .check_int("f", 4096, &mut vars, &none)
                .is_ok()
        );
        let err = m("{ le = \"$MaxBurstLength\" }").check_int(
            "R2t.DesiredDataTransferLength",
            8192,
            &mut vars,
            &none,
        );
        let MatchError::Mismatch(mm) = err.unwrap_err() else {
            panic!()
        };
        assert_eq!(mm.what, "R2t.DesiredDataTransferLength");
        assert_eq!(
            mm.expected,
            "≤ $MaxBurstLength ($MaxBurstLength=4096 (0x1000))"
        );
        assert_eq!(mm.actual, "8192 (0x2000)");
        assert!(
            m("{ in = [1, 2] }")
                .check_int("f", 3, &mut vars, &none)
                .is_err()
        );
        assert!(
            m("{ not_in = [1, 2] }")
                .check_int("f", 3, &mut vars, &none)
                .is_ok()
        );
        assert!(m("\"any\"").check_int("f", 99, &mut vars, &none).is_ok());
        assert!(
            m("{ capture = \"ttt\", ne = 0xffffffff }")
                .check_int("f", 0x42, &mut vars, &none)
                .is_ok()
        );
        assert_eq!(vars.int("ttt"), Ok(0x42));
        // A capture does not happen on a mismatch.
        assert!(
            m("{ capture = \"x\", eq = 1 }")
                .check_int("f", 2, &mut vars, &none)
                .is_err()
        );
        assert!(vars.get("x").is_none());
        // Symbols.
        let sym = |s: &str| (s == "AbortTask").then_some(1);
        assert!(
            m("\"AbortTask\"")
                .check_int("Function", 1, &mut vars, &sym)
                .is_ok()
        );
        // An unknown variable is an evaluation error, not a mismatch.
        assert!(matches!(
            m("\"$nope\"").check_int("f", 1, &mut vars, &none),
            Err(MatchError::Eval(_))
        ));
    }

    #[test]
    fn string_matchers() {
        let mut vars = Vars::default();
        vars.set_int("lim", 8192);
        assert!(
            m("\"None\"")
                .check_str("k", Some("None"), &mut vars)
                .is_ok()
        );
        assert!(
            m("\"None\"")
                .check_str("k", Some("CRC32C"), &mut vars)
                .is_err()
        );
        assert!(
            m("{ in = [\"None\", \"CRC32C\"] }")
                .check_str("k", Some("CRC32C"), &mut vars)
                .is_ok()
        );
        assert!(
            m("{ absent = true }")
                .check_str("k", None, &mut vars)
                .is_ok()
        );
        assert!(
            m("{ absent = true }")
                .check_str("k", Some("x"), &mut vars)
                .is_err()
        );
        assert!(
            m("{ present = true }")
                .check_str("k", None, &mut vars)
                .is_err()
        );
        assert!(
            m("{ le = \"$lim\" }")
                .check_str("k", Some("4096"), &mut vars)
                .is_ok()
        );
        assert!(
            m("{ le = \"$lim\" }")
                .check_str("k", Some("0x4000"), &mut vars)
                .is_err()
        );
        assert!(
            m("{ le = 10 }")
                .check_str("k", Some("ten"), &mut vars)
                .is_err()
        );
        // Numbers compare numerically whatever their notation.
        assert!(
            m("65536")
                .check_str("k", Some("0x10000"), &mut vars)
                .is_ok()
        );
        assert!(m("\"x\"").check_str("k", None, &mut vars).is_err());
        assert!(
            m("{ capture = \"mrdsl\" }")
                .check_str("k", Some("4096"), &mut vars)
                .is_ok()
        );
        assert_eq!(vars.int("mrdsl"), Ok(4096));
    }

    #[test]
    fn bad_matchers_are_refused() {
        let v: toml::Table = toml::from_str("a = { around = 3 }\nb = { range = [1] }").unwrap();
        assert!(
            Matcher::from_toml(&v["a"])
                .unwrap_err()
                .contains("unknown matcher")
        );
        assert!(Matcher::from_toml(&v["b"]).is_err());
    }
}
