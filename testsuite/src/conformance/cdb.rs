//! The CDB shorthand of scripts: `READ(10) lba=0 blocks=8`,
//! `INQUIRY page=0x83 alloc=255`, `TEST UNIT READY`, `hex:12 00 00 00 60 00`.
//!
//! A spec is a command name (SPC-4/SBC-4 spelling, as
//! [`ScsiOpcode::from_name`] reads it, plus `READ CAPACITY(16)`,
//! `GET LBA STATUS` and `REPORT SUPPORTED OPERATION CODES`) followed by
//! `key=value` parameters, or `hex:` and the raw bytes. The builder lays the
//! fields out itself (rather than through the typed `Cdb`) so that a script
//! can also build CDBs no device should accept: `byteN=V` sets any byte
//! after the fields are placed. It also says which way data flows and how
//! much: the ExpectedDataTransferLength a correct initiator would send
//! (`len=` and `dir=` override it).

use iesp_proto::scsi::ScsiOpcode;

use super::value::{Vars, eval_int, parse_hex};

/// Which way a command moves data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    None,
    /// Data-In: the target sends (a read).
    In,
    /// Data-Out: the initiator sends (a write).
    Out,
}

/// A built CDB.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltCdb {
    pub bytes: Vec<u8>,
    pub dir: Dir,
    /// Bytes the command transfers (the SCSI transfer length in bytes).
    pub len: u32,
}

/// Splits a spec into words, keeping `${…}` together.
fn words(spec: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut depth = 0;
    let mut chars = spec.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek() == Some(&'{') {
            depth += 1;
        } else if c == '}' && depth > 0 {
            depth -= 1;
        }
        if c.is_whitespace() && depth == 0 {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push(c);
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Builds the CDB a spec describes; `block_size` turns block counts into
/// transfer lengths.
pub fn build(spec: &str, block_size: u32, vars: &Vars) -> Result<BuiltCdb, String> {
    let spec = spec.trim();
    if let Some(hex) = spec.strip_prefix("hex:") {
        let (hex_part, params) = match hex.split_once(';') {
            Some((h, p)) => (h, p),
            None => (hex, ""),
        };
        let bytes = parse_hex(hex_part)?;
        if bytes.is_empty() || bytes.len() > 16 {
            return Err(format!(
                "a CDB has 1 to 16 bytes, {spec:?} has {}",
                bytes.len()
            ));
        }
        let mut b = BuiltCdb {
            bytes,
            dir: Dir::None,
            len: 0,
        };
        for w in words(params) {
            apply_override(&mut b, &w, vars)?;
        }
        return Ok(b);
    }
    let ws = words(spec);
    let name: Vec<&str> = ws
        .iter()
        .take_while(|w| !w.contains('='))
        .map(String::as_str)
        .collect();
    let params: Vec<&String> = ws.iter().skip(name.len()).collect();
    let name = name.join(" ");
    let mut p = Params::default();
    let mut overrides = Vec::new();
    for w in &params {
        let (k, v) = w
            .split_once('=')
            .ok_or_else(|| format!("expected key=value, got {w:?} in {spec:?}"))?;
        if k.starts_with("byte") || k == "len" || k == "dir" {
            overrides.push(w.as_str());
            continue;
        }
        let v = eval_int(v, vars).map_err(|e| format!("{k} in {spec:?}: {e}"))?;
        p.set(k, v).map_err(|e| format!("{e} in {spec:?}"))?;
    }
    let mut b = layout(&name, &p, block_size).map_err(|e| format!("{e} in {spec:?}"))?;
    for o in overrides {
        apply_override(&mut b, o, vars)?;
    }
    Ok(b)
}

fn apply_override(b: &mut BuiltCdb, w: &str, vars: &Vars) -> Result<(), String> {
    let (k, v) = w
        .split_once('=')
        .ok_or_else(|| format!("expected key=value, got {w:?}"))?;
    match k {
        "dir" => {
            b.dir = match v {
                "in" => Dir::In,
                "out" => Dir::Out,
                "none" => Dir::None,
                _ => return Err(format!("dir is in, out or none, not {v:?}")),
            }
        }
        "len" => {
            b.len =
                u32::try_from(eval_int(v, vars)?).map_err(|_| format!("len {v} is too large"))?
        }
        _ => {
            let n: usize = k
                .strip_prefix("byte")
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| format!("unknown CDB override {k:?}"))?;
            let val = u8::try_from(eval_int(v, vars)?)
                .map_err(|_| format!("{k}={v} does not fit a byte"))?;
            let len = b.bytes.len();
            let byte = b
                .bytes
                .get_mut(n)
                .ok_or_else(|| format!("{k}: the CDB has only {len} bytes"))?;
            *byte = val;
        }
    }
    Ok(())
}

#[derive(Default)]
struct Params {
    lba: u64,
    blocks: Option<u64>,
    alloc: Option<u64>,
    page: Option<u64>,
    subpage: u64,
    flags: Vec<(&'static str, u64)>,
    sa: Option<u64>,
    options: u64,
    opcode: u64,
    /// REPORT SUPPORTED OPERATION CODES: the requested service action.
    rsa: u64,
    param_len: u64,
    select: u64,
    pc: u64,
    control: u64,
}

impl Params {
    fn set(&mut self, k: &str, v: u64) -> Result<(), String> {
        match k {
            "lba" => self.lba = v,
            "blocks" => self.blocks = Some(v),
            "alloc" => self.alloc = Some(v),
            "page" => self.page = Some(v),
            "subpage" => self.subpage = v,
            "sa" => self.sa = Some(v),
            "options" => self.options = v,
            "opcode" => self.opcode = v,
            "rsa" => self.rsa = v,
            "param_len" => self.param_len = v,
            "select" => self.select = v,
            "pc" => self.pc = v,
            "control" => self.control = v,
            "fua" | "dpo" | "bytchk" | "immed" | "start" | "loej" | "dbd" | "llbaa" | "desc"
            | "evpd" | "unmap" | "anchor" | "rctd" | "pmi" | "prevent" | "ndob" | "type"
            | "scope" | "power" => {
                let k: &'static str = match k {
                    "fua" => "fua",
                    "dpo" => "dpo",
                    "bytchk" => "bytchk",
                    "immed" => "immed",
                    "start" => "start",
                    "loej" => "loej",
                    "dbd" => "dbd",
                    "llbaa" => "llbaa",
                    "desc" => "desc",
                    "evpd" => "evpd",
                    "unmap" => "unmap",
                    "anchor" => "anchor",
                    "rctd" => "rctd",
                    "pmi" => "pmi",
                    "prevent" => "prevent",
                    "ndob" => "ndob",
                    "type" => "type",
                    "scope" => "scope",
                    _ => "power",
                };
                self.flags.push((k, v));
            }
            _ => return Err(format!("unknown CDB parameter {k:?}")),
        }
        Ok(())
    }

    fn flag(&self, name: &str) -> u64 {
        self.flags
            .iter()
            .rev()
            .find(|(k, _)| *k == name)
            .map_or(0, |(_, v)| *v)
    }
}

fn put_be(b: &mut [u8], at: usize, len: usize, v: u64) {
    for i in 0..len {
        b[at + i] = (v >> (8 * (len - 1 - i))) as u8;
    }
}

/// Lays out a named command.
fn layout(name: &str, p: &Params, bs: u32) -> Result<BuiltCdb, String> {
    let norm: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    // Commands behind a service action, named by what they do.
    let (op, sa) = match norm.as_str() {
        "READCAPACITY16" => (0x9e, Some(0x10)),
        "GETLBASTATUS" => (0x9e, Some(0x12)),
        "REPORTSUPPORTEDOPERATIONCODES" | "RSOC" => (0xa3, Some(0x0c)),
        "REPORTSUPPORTEDTASKMANAGEMENTFUNCTIONS" => (0xa3, Some(0x0d)),
        _ => {
            let op = match ScsiOpcode::from_name(name) {
                Some(op) => op.0,
                None => {
                    let raw = name
                        .strip_prefix("0x")
                        .and_then(|h| u8::from_str_radix(h, 16).ok());
                    raw.ok_or_else(|| format!("unknown SCSI command {name:?}"))?
                }
            };
            (op, None)
        }
    };
    let sa = p.sa.or(sa);
    let op_code = ScsiOpcode(op);
    let len = op_code.cdb_len().unwrap_or(16);
    let mut b = vec![0u8; len];
    b[0] = op;
    let bs = u64::from(bs);
    let blocks = p.blocks.unwrap_or(1);
    let fl = |n: &str| p.flag(n);
    let rw_flags = (fl("dpo") << 4 | fl("fua") << 3) as u8;
    let alloc = p.alloc;
    let (dir, xfer): (Dir, u64) = match op {
        0x00 => (Dir::None, 0), // TEST UNIT READY
        0x03 => {
            // REQUEST SENSE
            b[1] = fl("desc") as u8 & 1;
            let a = alloc.unwrap_or(252);
            b[4] = a as u8;
            (Dir::In, a)
        }
        0x08 | 0x0a => {
            // READ(6) / WRITE(6): 21-bit LBA, 0 blocks means 256.
            put_be(&mut b, 1, 3, p.lba & 0x1f_ffff);
            b[4] = blocks as u8;
            let n = if blocks == 0 { 256 } else { blocks };
            (if op == 0x08 { Dir::In } else { Dir::Out }, n * bs)
        }
        0x12 => {
            // INQUIRY
            let evpd = p.page.is_some() as u64 | fl("evpd");
            b[1] = evpd as u8 & 1;
            b[2] = p.page.unwrap_or(0) as u8;
            let a = alloc.unwrap_or(if evpd != 0 { 255 } else { 96 });
            put_be(&mut b, 3, 2, a);
            (Dir::In, a)
        }
        0x15 | 0x55 => {
            // MODE SELECT(6)/(10): PF=1.
            b[1] = 0x10;
            if op == 0x15 {
                b[4] = p.param_len as u8;
            } else {
                put_be(&mut b, 7, 2, p.param_len);
            }
            (Dir::Out, p.param_len)
        }
        0x16 | 0x17 => (Dir::None, 0), // RESERVE(6) / RELEASE(6)
        0x1a => {
            // MODE SENSE(6)
            b[1] = (fl("dbd") << 3) as u8;
            b[2] = ((p.pc & 3) << 6 | p.page.unwrap_or(0x3f) & 0x3f) as u8;
            b[3] = p.subpage as u8;
            let a = alloc.unwrap_or(255);
            b[4] = a as u8;
            (Dir::In, a)
        }
        0x1b => {
            // START STOP UNIT
            b[1] = fl("immed") as u8 & 1;
            b[4] = ((fl("power") & 0xf) << 4 | (fl("loej") & 1) << 1 | fl("start") & 1) as u8;
            (Dir::None, 0)
        }
        0x1e => {
            b[4] = fl("prevent") as u8 & 3;
            (Dir::None, 0)
        }
        0x25 => {
            // READ CAPACITY(10)
            put_be(&mut b, 2, 4, p.lba);
            b[8] = fl("pmi") as u8 & 1;
            (Dir::In, 8)
        }
        0x28 | 0x2a | 0x2e | 0x2f | 0x34 | 0x35 | 0x41 => {
            // READ/WRITE/WRITE AND VERIFY/VERIFY/PRE-FETCH/SYNCHRONIZE CACHE/WRITE SAME (10)
            b[1] = match op {
                0x2e | 0x2f => rw_flags & 0x10 | ((fl("bytchk") & 3) << 1) as u8,
                0x34 | 0x35 => ((fl("immed") & 1) << 1) as u8,
                0x41 => ((fl("unmap") & 1) << 3) as u8,
                _ => rw_flags,
            };
            put_be(&mut b, 2, 4, p.lba);
            put_be(
                &mut b,
                7,
                2,
                p.blocks
                    .unwrap_or(if matches!(op, 0x34 | 0x35) { 0 } else { 1 }),
            );
            match op {
                0x28 => (Dir::In, blocks * bs),
                0x2a | 0x2e => (Dir::Out, blocks * bs),
                0x2f if fl("bytchk") != 0 => (Dir::Out, blocks * bs),
                0x41 => (Dir::Out, bs),
                _ => (Dir::None, 0),
            }
        }
        0x42 => {
            // UNMAP
            b[1] = fl("anchor") as u8 & 1;
            put_be(&mut b, 7, 2, p.param_len);
            (Dir::Out, p.param_len)
        }
        0x5a => {
            // MODE SENSE(10)
            b[1] = (fl("llbaa") << 4 | fl("dbd") << 3) as u8;
            b[2] = ((p.pc & 3) << 6 | p.page.unwrap_or(0x3f) & 0x3f) as u8;
            b[3] = p.subpage as u8;
            let a = alloc.unwrap_or(512);
            put_be(&mut b, 7, 2, a);
            (Dir::In, a)
        }
        0x5e => {
            // PERSISTENT RESERVE IN
            b[1] = sa.unwrap_or(0) as u8 & 0x1f;
            let a = alloc.unwrap_or(1024);
            put_be(&mut b, 7, 2, a);
            (Dir::In, a)
        }
        0x5f => {
            // PERSISTENT RESERVE OUT
            b[1] = sa.unwrap_or(0) as u8 & 0x1f;
            b[2] = ((fl("scope") & 0xf) << 4 | fl("type") & 0xf) as u8;
            put_be(&mut b, 5, 4, p.param_len);
            (Dir::Out, p.param_len)
        }
        0x88 | 0x8a | 0x8e | 0x8f | 0x90 | 0x91 | 0x93 => {
            // (16) variants
            b[1] = match op {
                0x8e | 0x8f => rw_flags & 0x10 | ((fl("bytchk") & 3) << 1) as u8,
                0x90 | 0x91 => ((fl("immed") & 1) << 1) as u8,
                0x93 => ((fl("unmap") & 1) << 3 | (fl("ndob") & 1)) as u8,
                _ => rw_flags,
            };
            put_be(&mut b, 2, 8, p.lba);
            put_be(
                &mut b,
                10,
                4,
                p.blocks
                    .unwrap_or(if matches!(op, 0x90 | 0x91) { 0 } else { 1 }),
            );
            match op {
                0x88 => (Dir::In, blocks * bs),
                0x8a | 0x8e => (Dir::Out, blocks * bs),
                0x8f if fl("bytchk") != 0 => (Dir::Out, blocks * bs),
                0x93 if fl("ndob") == 0 => (Dir::Out, bs),
                _ => (Dir::None, 0),
            }
        }
        0x89 => {
            // COMPARE AND WRITE: verify data then write data.
            b[1] = rw_flags;
            put_be(&mut b, 2, 8, p.lba);
            b[13] = blocks as u8;
            (Dir::Out, 2 * blocks * bs)
        }
        0x9e => {
            // SERVICE ACTION IN(16): READ CAPACITY(16), GET LBA STATUS
            b[1] = sa.unwrap_or(0x10) as u8 & 0x1f;
            put_be(&mut b, 2, 8, p.lba);
            let a = alloc.unwrap_or(if sa == Some(0x12) { 24 } else { 32 });
            put_be(&mut b, 10, 4, a);
            (Dir::In, a)
        }
        0xa0 => {
            // REPORT LUNS
            b[2] = p.select as u8;
            let a = alloc.unwrap_or(4096);
            put_be(&mut b, 6, 4, a);
            (Dir::In, a)
        }
        0xa3 => {
            // MAINTENANCE IN: REPORT SUPPORTED OPERATION CODES / TMFs
            b[1] = sa.unwrap_or(0x0c) as u8 & 0x1f;
            b[2] = ((fl("rctd") & 1) << 7 | p.options & 7) as u8;
            b[3] = p.opcode as u8;
            put_be(&mut b, 4, 2, p.rsa);
            let a = alloc.unwrap_or(8192);
            put_be(&mut b, 6, 4, a);
            (Dir::In, a)
        }
        0xa8 | 0xaa | 0xae | 0xaf => {
            // (12) variants
            b[1] = match op {
                0xae | 0xaf => rw_flags & 0x10 | ((fl("bytchk") & 3) << 1) as u8,
                _ => rw_flags,
            };
            put_be(&mut b, 2, 4, p.lba);
            put_be(&mut b, 6, 4, blocks);
            match op {
                0xa8 => (Dir::In, blocks * bs),
                0xaa | 0xae => (Dir::Out, blocks * bs),
                0xaf if fl("bytchk") != 0 => (Dir::Out, blocks * bs),
                _ => (Dir::None, 0),
            }
        }
        _ => (Dir::None, alloc.unwrap_or(0)),
    };
    if let Some(last) = b.last_mut() {
        *last = p.control as u8;
    }
    let len =
        u32::try_from(xfer).map_err(|_| format!("transfer length {xfer} does not fit 32 bits"))?;
    Ok(BuiltCdb { bytes: b, dir, len })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(spec: &str) -> BuiltCdb {
        let mut v = Vars::default();
        v.set_int("block_size", 512);
        build(spec, 512, &v).unwrap()
    }

    #[test]
    fn reads_and_writes() {
        let r = b("READ(10) lba=0x01020304 blocks=8 fua=1");
        assert_eq!(r.bytes, vec![0x28, 0x08, 1, 2, 3, 4, 0, 0, 8, 0]);
        assert_eq!((r.dir, r.len), (Dir::In, 4096));
        let w = b("WRITE(16) lba=5 blocks=${block_size / 256}");
        assert_eq!(w.bytes[0], 0x8a);
        assert_eq!(&w.bytes[2..10], &[0, 0, 0, 0, 0, 0, 0, 5]);
        assert_eq!(&w.bytes[10..14], &[0, 0, 0, 2]);
        assert_eq!((w.dir, w.len), (Dir::Out, 1024));
        let r6 = b("READ(6) lba=1 blocks=0");
        assert_eq!(r6.len, 256 * 512);
        let v = b("VERIFY(10) lba=0 blocks=2");
        assert_eq!((v.dir, v.len), (Dir::None, 0));
        let v = b("VERIFY(10) lba=0 blocks=2 bytchk=1");
        assert_eq!((v.bytes[1], v.dir, v.len), (0x02, Dir::Out, 1024));
        let s = b("SYNCHRONIZE CACHE(10)");
        assert_eq!(s.bytes, vec![0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn allocation_length_commands() {
        let i = b("INQUIRY");
        assert_eq!(i.bytes, vec![0x12, 0, 0, 0, 96, 0]);
        assert_eq!((i.dir, i.len), (Dir::In, 96));
        let v = b("INQUIRY page=0x83 alloc=300");
        assert_eq!(v.bytes, vec![0x12, 1, 0x83, 0x01, 0x2c, 0]);
        let rc = b("READ CAPACITY(16)");
        assert_eq!(rc.bytes[..2], [0x9e, 0x10]);
        assert_eq!(rc.bytes[13], 32);
        let rl = b("REPORT LUNS alloc=16");
        assert_eq!(rl.bytes, vec![0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0]);
        let ms = b("MODE SENSE(10) page=0x08 dbd=1");
        assert_eq!(&ms.bytes[..4], &[0x5a, 0x08, 0x08, 0]);
        assert_eq!(ms.len, 512);
        let rsoc = b("REPORT SUPPORTED OPERATION CODES options=1 opcode=0x28");
        assert_eq!(&rsoc.bytes[..4], &[0xa3, 0x0c, 0x01, 0x28]);
    }

    #[test]
    fn raw_and_overrides() {
        let h = b("hex:12 00 00 00 24 00");
        assert_eq!((h.bytes.len(), h.dir, h.len), (6, Dir::None, 0));
        let h = b("hex:12 00 00 00 24 00; dir=in len=36");
        assert_eq!((h.dir, h.len), (Dir::In, 36));
        let o = b("TEST UNIT READY byte5=0x40");
        assert_eq!(o.bytes, vec![0, 0, 0, 0, 0, 0x40]);
        let u = b("0xd0");
        assert_eq!(
            u.bytes.len(),
            16,
            "group 6 is vendor-specific: 16 bytes assumed"
        );
        let mut v = Vars::default();
        v.set_int("x", 1);
        assert!(build("NOT A COMMAND", 512, &v).is_err());
        assert!(build("READ(10) lba", 512, &v).is_err());
        assert!(build("READ(10) frobnicate=1", 512, &v).is_err());
        assert!(build("TEST UNIT READY byte9=1", 512, &v).is_err());
    }
}
