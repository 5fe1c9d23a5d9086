//! Values in scripts: variables, `${…}` expressions, durations.
//!
//! A script value is a TOML integer or boolean, or a string that is one of:
//! a number (`4096`, `0xffffffff`), a variable (`$ttt`), an expression
//! (`${MaxBurstLength + 512}`, `${block_size * 8}`, `${cmd_sn - 1}`) or, for
//! text keys, a string with `${…}` parts interpolated
//! (`InitiatorName=${initiator}`). Arithmetic is on u64 with wrapping, so
//! `${cmd_sn - 1}` written into a 32-bit field gives the serial-number
//! predecessor. Names may contain dots (`r2t.TTT`).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// A variable's value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Var {
    Int(u64),
    Str(String),
}

impl fmt::Display for Var {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Var::Int(n) => write!(f, "{n}"),
            Var::Str(s) => f.write_str(s),
        }
    }
}

/// The variables of a running case.
#[derive(Clone, Debug, Default)]
pub struct Vars(BTreeMap<String, Var>);

impl Vars {
    pub fn set_int(&mut self, name: &str, v: u64) {
        self.0.insert(name.to_owned(), Var::Int(v));
    }

    pub fn set_str(&mut self, name: &str, v: impl Into<String>) {
        self.0.insert(name.to_owned(), Var::Str(v.into()));
    }

    pub fn get(&self, name: &str) -> Option<&Var> {
        self.0.get(name)
    }

    pub fn int(&self, name: &str) -> Result<u64, String> {
        match self.0.get(name) {
            Some(Var::Int(n)) => Ok(*n),
            Some(Var::Str(s)) => {
                parse_int(s).ok_or_else(|| format!("variable {name} is {s:?}, not a number"))
            }
            None => Err(format!("unknown variable {name}")),
        }
    }
}

/// Parses `123`, `0x7b`, `0X7B`.
pub fn parse_int(s: &str) -> Option<u64> {
    let t = s.trim();
    if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        let h: String = h.chars().filter(|c| *c != '_').collect();
        u64::from_str_radix(&h, 16).ok()
    } else {
        let d: String = t.chars().filter(|c| *c != '_').collect();
        d.parse().ok()
    }
}

/// Evaluates an integer value: a number, `$name` or `${expr}`.
pub fn eval_int(s: &str, vars: &Vars) -> Result<u64, String> {
    let t = s.trim();
    if let Some(inner) = t.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
        return eval_expr(inner, vars);
    }
    if let Some(name) = t.strip_prefix('$') {
        return vars.int(name);
    }
    parse_int(t).ok_or_else(|| format!("{s:?} is not a number, $variable or ${{expression}}"))
}

/// Replaces every `${expr}` in `s` by its value (a string variable stays a
/// string; an expression gives its decimal value).
pub fn interpolate(s: &str, vars: &Vars) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unclosed ${{ in {s:?}"))?;
        let inner = after[..end].trim();
        match vars.get(inner) {
            Some(v) => out.push_str(&v.to_string()),
            None => out.push_str(&eval_expr(inner, vars)?.to_string()),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// For messages: every `${expr}` and `$name` in `s` replaced by its value,
/// never failing. What cannot be evaluated (a variable the case never set,
/// a bad expression) is shown as `⟨expr: why⟩`, so a report never prints a
/// raw placeholder.
pub fn expand(s: &str, vars: &Vars) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(body) = after.strip_prefix('{') {
            let Some(end) = body.find('}') else {
                out.push_str(&format!("⟨{}: unclosed⟩", body.trim()));
                return out;
            };
            let inner = body[..end].trim();
            match vars.get(inner) {
                Some(v) => out.push_str(&v.to_string()),
                None => match eval_expr(inner, vars) {
                    Ok(v) => out.push_str(&v.to_string()),
                    Err(_) => out.push_str(&format!("⟨{inner}: not set⟩")),
                },
            }
            rest = &body[end + 1..];
        } else {
            let n = after
                .char_indices()
                .find(|&(_, c)| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
                .map_or(after.len(), |(i, _)| i);
            // A trailing '.' ends the sentence, not the name.
            let name = after[..n].trim_end_matches('.');
            if name.is_empty() {
                out.push('$');
                rest = after;
                continue;
            }
            match vars.get(name) {
                Some(v) => out.push_str(&v.to_string()),
                None => out.push_str(&format!("⟨{name}: not set⟩")),
            }
            rest = &after[name.len()..];
        }
    }
    out.push_str(rest);
    out
}

/// Does `s` hold a `${…}` or `$name` placeholder (what [`expand`] removes)?
pub fn has_placeholder(s: &str) -> bool {
    s.match_indices('$').any(|(i, _)| {
        s[i + 1..]
            .chars()
            .next()
            .is_some_and(|c| c == '{' || c.is_ascii_alphabetic() || c == '_')
    })
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Num(u64),
    Name(String),
    Op(char),
}

fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
    let mut toks = Vec::new();
    let b: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_whitespace() {
            i += 1;
        } else if matches!(c, '+' | '-' | '*' | '/' | '(' | ')') {
            toks.push(Tok::Op(c));
            i += 1;
        } else if c.is_ascii_digit() {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == '_') {
                i += 1;
            }
            let lit: String = b[start..i].iter().collect();
            toks.push(Tok::Num(
                parse_int(&lit).ok_or_else(|| format!("bad number {lit:?} in {s:?}"))?,
            ));
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == '_' || b[i] == '.') {
                i += 1;
            }
            toks.push(Tok::Name(b[start..i].iter().collect()));
        } else {
            return Err(format!("unexpected {c:?} in expression {s:?}"));
        }
    }
    Ok(toks)
}

/// `expr := term (('+'|'-') term)*`, `term := atom (('*'|'/') atom)*`,
/// `atom := number | name | '(' expr ')'`.
pub fn eval_expr(s: &str, vars: &Vars) -> Result<u64, String> {
    let toks = tokenize(s)?;
    let mut pos = 0;
    let v = expr(&toks, &mut pos, vars, s)?;
    if pos != toks.len() {
        return Err(format!("trailing input in expression {s:?}"));
    }
    Ok(v)
}

fn expr(t: &[Tok], pos: &mut usize, vars: &Vars, src: &str) -> Result<u64, String> {
    let mut v = term(t, pos, vars, src)?;
    while let Some(Tok::Op(op @ ('+' | '-'))) = t.get(*pos) {
        *pos += 1;
        let r = term(t, pos, vars, src)?;
        v = if *op == '+' {
            v.wrapping_add(r)
        } else {
            v.wrapping_sub(r)
        };
    }
    Ok(v)
}

fn term(t: &[Tok], pos: &mut usize, vars: &Vars, src: &str) -> Result<u64, String> {
    let mut v = atom(t, pos, vars, src)?;
    while let Some(Tok::Op(op @ ('*' | '/'))) = t.get(*pos) {
        *pos += 1;
        let r = atom(t, pos, vars, src)?;
        v = if *op == '*' {
            v.wrapping_mul(r)
        } else {
            v.checked_div(r)
                .ok_or_else(|| format!("division by zero in {src:?}"))?
        };
    }
    Ok(v)
}

fn atom(t: &[Tok], pos: &mut usize, vars: &Vars, src: &str) -> Result<u64, String> {
    let tok = t
        .get(*pos)
        .ok_or_else(|| format!("incomplete expression {src:?}"))?;
    *pos += 1;
    match tok {
        Tok::Num(n) => Ok(*n),
        Tok::Name(n) => vars.int(n),
        Tok::Op('(') => {
            let v = expr(t, pos, vars, src)?;
            match t.get(*pos) {
                Some(Tok::Op(')')) => {
                    *pos += 1;
                    Ok(v)
                }
                _ => Err(format!("missing ) in {src:?}")),
            }
        }
        Tok::Op(c) => Err(format!("unexpected {c:?} in {src:?}")),
    }
}

/// Parses `250ms`, `2s`, `1.5s`, `1m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else {
        return Err(format!("duration {s:?} needs a unit: ms, s or m"));
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration"))?;
    if !(0.0..=3600.0 * 24.0).contains(&(v * scale)) {
        return Err(format!("duration {s:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(v * scale))
}

/// Formats a duration the way [`parse_duration`] reads it.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Parses hex bytes, spaces and underscores allowed: `"28 00 0a"`.
pub fn parse_hex(s: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = s
        .bytes()
        .filter(|b| !b.is_ascii_whitespace() && *b != b'_' && *b != b':')
        .collect();
    let digits = digits.strip_prefix(b"0x").unwrap_or(&digits);
    if digits.len() % 2 != 0 {
        return Err(format!("odd number of hex digits in {s:?}"));
    }
    digits
        .chunks(2)
        .map(|p| {
            std::str::from_utf8(p)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad hex in {s:?}"))
        })
        .collect()
}

/// Lower-case hex of `b`, cut after `max` bytes with an ellipsis.
pub fn hex(b: &[u8], max: usize) -> String {
    let mut s: String = b.iter().take(max).map(|x| format!("{x:02x}")).collect();
    if b.len() > max {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        let mut v = Vars::default();
        v.set_int("cmd_sn", 0);
        v.set_int("MaxBurstLength", 4096);
        v.set_int("r2t.TTT", 7);
        v.set_str("initiator", "iqn.x");
        v
    }

    #[test]
    fn integers_and_expressions() {
        let v = vars();
        assert_eq!(eval_int("0x10", &v), Ok(16));
        assert_eq!(eval_int("1_000", &v), Ok(1000));
        assert_eq!(eval_int("$r2t.TTT", &v), Ok(7));
        assert_eq!(eval_int("${MaxBurstLength + 512}", &v), Ok(4608));
        assert_eq!(eval_int("${2 + 3 * 4}", &v), Ok(14));
        assert_eq!(eval_int("${(2 + 3) * 4}", &v), Ok(20));
        assert_eq!(
            eval_int("${cmd_sn - 1}", &v).map(|n| n as u32),
            Ok(0xffff_ffff)
        );
        assert!(
            eval_int("${nope}", &v)
                .unwrap_err()
                .contains("unknown variable nope")
        );
        assert!(eval_int("${1 +}", &v).is_err());
        assert!(eval_int("${4 / 0}", &v).is_err());
        assert!(eval_int("twelve", &v).is_err());
    }

    #[test]
    fn interpolation() {
        let v = vars();
        assert_eq!(
            interpolate("InitiatorName=${initiator}", &v).unwrap(),
            "InitiatorName=iqn.x"
        );
        assert_eq!(
            interpolate("MaxBurstLength=${MaxBurstLength * 2}", &v).unwrap(),
            "MaxBurstLength=8192"
        );
        assert_eq!(interpolate("plain", &v).unwrap(), "plain");
        assert!(interpolate("x=${oops", &v).is_err());
    }

    #[test]
    fn durations_and_hex() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("5").is_err());
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_secs(2)), "2s");
        assert_eq!(parse_hex("28 00 0a_ff"), Ok(vec![0x28, 0, 0x0a, 0xff]));
        assert!(parse_hex("abc").is_err());
        assert_eq!(hex(&[1, 2, 3], 2), "0102…");
    }

    #[test]
    fn messages_expand_every_placeholder() {
        let mut v = Vars::default();
        v.set_int("blocks", 2048);
        v.set_int("block_size", 512);
        v.set_str("target", "iqn.t");
        v.set_int("w.ITT", 7);
        assert_eq!(
            expand(
                "lba=$blocks n=${1048576 / block_size} ${target} ITT $w.ITT.",
                &v
            ),
            "lba=2048 n=2048 iqn.t ITT 7."
        );
        assert_eq!(
            expand("x=$nope, ${nope + 1}", &v),
            "x=⟨nope: not set⟩, ⟨nope + 1: not set⟩"
        );
        assert_eq!(
            expand("costs $ 5 and ${oops", &v),
            "costs $ 5 and ⟨oops: unclosed⟩"
        );
        assert!(!has_placeholder(&expand("$a $b ${c}", &v)));
        assert!(has_placeholder("lba=$blocks") && has_placeholder("${x}"));
        assert!(!has_placeholder("costs $ 5"));
    }
}
