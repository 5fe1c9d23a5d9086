//! The BER subset SNMPv2c needs (X.690 §8, RFC 3416): definite lengths of at
//! most four octets, INTEGER, OCTET STRING, NULL, OBJECT IDENTIFIER, the
//! SMI application types and the v2 exception values. Decoding never
//! panics and never allocates more than the input holds: every length is
//! checked against what is left.

/// A value in a variable binding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Integer(i64),
    Octets(Vec<u8>),
    Null,
    Oid(Vec<u32>),
    Counter32(u32),
    Gauge32(u32),
    TimeTicks(u32),
    Counter64(u64),
    NoSuchObject,
    NoSuchInstance,
    EndOfMibView,
}

/// Malformed input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Malformed;

pub const SEQUENCE: u8 = 0x30;
pub const INTEGER: u8 = 0x02;
pub const OCTETS: u8 = 0x04;
pub const NULL: u8 = 0x05;
pub const OID: u8 = 0x06;

/// Reads TLVs off a buffer.
pub struct Reader<'a>(pub &'a [u8]);

impl<'a> Reader<'a> {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The next TLV: its tag and contents.
    pub fn tlv(&mut self) -> Result<(u8, &'a [u8]), Malformed> {
        let (&tag, rest) = self.0.split_first().ok_or(Malformed)?;
        if tag & 0x1f == 0x1f {
            return Err(Malformed);
        }
        let (&first, mut rest) = rest.split_first().ok_or(Malformed)?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return Err(Malformed);
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |a, &b| (a << 8) | usize::from(b));
            rest = &rest[n..];
            len
        };
        if len > rest.len() {
            return Err(Malformed);
        }
        let (content, tail) = rest.split_at(len);
        self.0 = tail;
        Ok((tag, content))
    }

    /// The next TLV, which must have `tag`.
    pub fn expect(&mut self, tag: u8) -> Result<&'a [u8], Malformed> {
        match self.tlv()? {
            (t, c) if t == tag => Ok(c),
            _ => Err(Malformed),
        }
    }

    pub fn integer(&mut self) -> Result<i64, Malformed> {
        integer(self.expect(INTEGER)?)
    }
}

/// A two's complement INTEGER of 1 to 8 octets.
pub fn integer(c: &[u8]) -> Result<i64, Malformed> {
    if c.is_empty() || c.len() > 8 {
        return Err(Malformed);
    }
    let init = if c[0] & 0x80 != 0 { -1i64 } else { 0 };
    Ok(c.iter().fold(init, |a, &b| (a << 8) | i64::from(b)))
}

/// An OBJECT IDENTIFIER's arcs.
pub fn oid(c: &[u8]) -> Result<Vec<u32>, Malformed> {
    let mut arcs = Vec::with_capacity(c.len() + 1);
    let mut acc: u32 = 0;
    let mut first = true;
    let mut pending = false;
    for &b in c {
        if acc > (u32::MAX >> 7) {
            return Err(Malformed);
        }
        acc = (acc << 7) | u32::from(b & 0x7f);
        pending = true;
        if b & 0x80 == 0 {
            if first {
                let (x, y) = if acc < 80 {
                    (acc / 40, acc % 40)
                } else {
                    (2, acc - 80)
                };
                arcs.push(x);
                arcs.push(y);
                first = false;
            } else {
                arcs.push(acc);
            }
            acc = 0;
            pending = false;
        }
    }
    if pending || arcs.is_empty() {
        return Err(Malformed);
    }
    Ok(arcs)
}

/// Appends a TLV.
pub fn put(out: &mut Vec<u8>, tag: u8, content: &[u8]) {
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = (len as u32).to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (4 - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
}

pub fn int_bytes(v: i64) -> Vec<u8> {
    let b = v.to_be_bytes();
    let mut i = 0;
    while i < 7 && ((b[i] == 0 && b[i + 1] & 0x80 == 0) || (b[i] == 0xff && b[i + 1] & 0x80 != 0)) {
        i += 1;
    }
    b[i..].to_vec()
}

fn uint_bytes(v: u64) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(&v.to_be_bytes());
    let mut i = 0;
    while i < 8 && out[i] == 0 && out[i + 1] & 0x80 == 0 {
        i += 1;
    }
    out[i..].to_vec()
}

pub fn oid_bytes(arcs: &[u32]) -> Vec<u8> {
    let mut out = Vec::new();
    let (a, b) = (
        arcs.first().copied().unwrap_or(0),
        arcs.get(1).copied().unwrap_or(0),
    );
    let mut arc = |mut v: u32| {
        let mut tmp = [0u8; 5];
        let mut n = 0;
        loop {
            tmp[n] = (v & 0x7f) as u8;
            n += 1;
            v >>= 7;
            if v == 0 {
                break;
            }
        }
        for i in (0..n).rev() {
            out.push(tmp[i] | if i > 0 { 0x80 } else { 0 });
        }
    };
    arc(a.min(2) * 40 + b);
    for &v in arcs.iter().skip(2) {
        arc(v);
    }
    out
}

/// Appends a value's TLV.
pub fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Integer(i) => put(out, INTEGER, &int_bytes(*i)),
        Value::Octets(o) => put(out, OCTETS, o),
        Value::Null => put(out, NULL, &[]),
        Value::Oid(o) => put(out, OID, &oid_bytes(o)),
        Value::Counter32(c) => put(out, 0x41, &uint_bytes(u64::from(*c))),
        Value::Gauge32(g) => put(out, 0x42, &uint_bytes(u64::from(*g))),
        Value::TimeTicks(t) => put(out, 0x43, &uint_bytes(u64::from(*t))),
        Value::Counter64(c) => put(out, 0x46, &uint_bytes(*c)),
        Value::NoSuchObject => put(out, 0x80, &[]),
        Value::NoSuchInstance => put(out, 0x81, &[]),
        Value::EndOfMibView => put(out, 0x82, &[]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for v in [0i64, 1, 127, 128, -1, -129, i64::MAX, i64::MIN] {
            assert_eq!(integer(&int_bytes(v)), Ok(v), "{v}");
        }
        let o = vec![1, 3, 6, 1, 4, 1, 32473, 15, 4_000_000_000];
        assert_eq!(oid(&oid_bytes(&o)), Ok(o));
        let mut out = Vec::new();
        put(&mut out, OCTETS, &[7; 300]);
        let mut r = Reader(&out);
        assert_eq!(r.expect(OCTETS).map(<[u8]>::len), Ok(300));
        assert!(r.is_empty());
        assert!(Reader(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).tlv().is_err());
        assert!(oid(&[0x2b, 0x86]).is_err());
    }
}
