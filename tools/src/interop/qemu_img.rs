//! `iesp-test interop qemu-img URL`: qemu's iSCSI block driver (libiscsi
//! inside qemu) against the target.
//!
//! Steps: `qemu-img info` (the LUN's size); `convert` of a 4 MiB random
//! file into the start of the LUN and of those 4 MiB back out, with the
//! sha256 of both (`sha256sum`); `compare` of file and LUN range; `qemu-io`
//! pattern writes at the first and the last 64 KiB of the LUN, read back
//! with the pattern check; a flush; and a negative control: reading the
//! first 64 KiB expecting the other pattern must be reported as a mismatch
//! by qemu-io (else the pattern checks prove nothing).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rand::{RngCore, SeedableRng};

use super::Context;
use super::qemu::{Ran, run_tool};
use super::report::Report;

/// Bytes converted in and out.
const CONVERT_BYTES: u64 = 4 << 20;
/// Bytes of each qemu-io pattern region.
const PATTERN_BYTES: u64 = 64 << 10;
/// The patterns at the start and at the end of the LUN.
const HEAD_PATTERN: u8 = 0xa5;
const TAIL_PATTERN: u8 = 0x5a;
/// Bound on each qemu-img / qemu-io run.
const TOOL_TIMEOUT: Duration = Duration::from_secs(60);
/// What qemu-io prints when a read does not hold the expected pattern.
pub const MISMATCH: &str = "Pattern verification failed";

/// A `--image-opts` value for the first `size` bytes of a file, commas
/// escaped as qemu wants.
fn limited_file(path: &Path, size: u64) -> String {
    format!(
        "driver=raw,size={size},file.filename={}",
        path.display().to_string().replace(',', ",,")
    )
}

/// A `--image-opts` value for the first `size` bytes of the LUN (qemu's
/// iscsi driver takes no URL there: portal, target and LUN one by one).
fn limited_lun(ctx: &Context, size: u64) -> String {
    let t = &ctx.target;
    let esc = |s: &str| s.replace(',', ",,");
    let mut s = format!(
        "driver=raw,size={size},file.driver=iscsi,file.transport=tcp,file.portal={},file.target={},file.lun={}",
        t.addr,
        esc(&t.iqn),
        t.lun
    );
    if let Some(u) = &t.url.user {
        s.push_str(&format!(
            ",file.user={},file.password-secret={CHAP_SECRET_ID}",
            esc(u)
        ));
    }
    s
}

/// The id of the `--object secret` that carries a CHAP password.
const CHAP_SECRET_ID: &str = "iesp-chap";

/// `qemu-img SUB` with the CHAP secret object when the URL has a password.
fn img(ctx: &Context, sub: &str) -> Command {
    let mut c = ctx.qemu.img();
    c.arg(sub);
    if let Some(p) = &ctx.target.url.password {
        c.arg("--object").arg(format!(
            "secret,id={CHAP_SECRET_ID},data={}",
            p.replace(',', ",,")
        ));
    }
    c
}

fn tool_result(what: &str, r: Result<Ran, String>) -> Result<String, String> {
    let r = r?;
    if r.ok {
        Ok(r.output)
    } else {
        Err(format!("{what} failed: {}", one_line(&r.output)))
    }
}

/// The output's lines joined with ` | ` (for a one-line step detail).
fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
}

fn sha256(path: &Path) -> Result<String, String> {
    let mut c = Command::new("sha256sum");
    c.arg(path);
    let out = tool_result("sha256sum", run_tool(c, TOOL_TIMEOUT))?;
    out.split_whitespace()
        .next()
        .map(str::to_owned)
        .ok_or_else(|| format!("sha256sum printed nothing for {}", path.display()))
}

/// `qemu-io -f raw -c CMD… URL`: Ok(output) when every command succeeded
/// and no pattern check failed.
fn qemu_io(ctx: &Context, cmds: &[String]) -> Result<String, String> {
    let mut c = ctx.qemu.io();
    c.args(["-f", "raw"]);
    for cmd in cmds {
        c.arg("-c").arg(cmd);
    }
    c.arg(&ctx.target.raw);
    let r = run_tool(c, TOOL_TIMEOUT)?;
    if r.output.contains(MISMATCH) {
        return Err(format!("mismatch: {}", one_line(&r.output)));
    }
    if !r.ok || r.output.contains("failed") || r.output.contains("error") {
        return Err(format!("qemu-io failed: {}", one_line(&r.output)));
    }
    Ok(one_line(&r.output))
}

/// Runs the check; the report says which steps passed.
pub fn check(ctx: &Context) -> anyhow::Result<Report> {
    let mut rep = ctx.report();
    let url = ctx.target.raw.clone();
    let dir = tempfile::tempdir()?;
    let src = dir.path().join("in.raw");
    let dst = dir.path().join("out.raw");

    // info: the size every later step needs.
    let mut size = 0u64;
    rep.run("info", || {
        let mut c = ctx.qemu.img();
        c.args(["info", "--output=json", &url]);
        let r = run_tool(c, TOOL_TIMEOUT)?;
        if !r.ok {
            return Err(format!("qemu-img info failed: {}", one_line(&r.output)));
        }
        let out = r.stdout;
        let v: serde_json::Value = serde_json::from_str(&out)
            .map_err(|e| format!("qemu-img info: not JSON ({e}): {}", one_line(&out)))?;
        size = v["virtual-size"].as_u64().unwrap_or(0);
        if size < CONVERT_BYTES.max(2 * PATTERN_BYTES) {
            return Err(format!(
                "LUN of {size} bytes: the check needs at least {CONVERT_BYTES}"
            ));
        }
        Ok(format!("{size} bytes"))
    });
    if !rep.passed {
        return Ok(rep);
    }

    let mut want = String::new();
    rep.run("convert in", || {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        let mut data = vec![0u8; CONVERT_BYTES as usize];
        rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed).fill_bytes(&mut data);
        std::fs::write(&src, &data).map_err(|e| format!("{}: {e}", src.display()))?;
        want = sha256(&src)?;
        let mut c = img(ctx, "convert");
        c.args(["-n", "-f", "raw", "--target-image-opts"])
            .arg(&src)
            .arg(limited_lun(ctx, CONVERT_BYTES));
        tool_result("qemu-img convert (file to LUN)", run_tool(c, TOOL_TIMEOUT))?;
        Ok(format!("{CONVERT_BYTES} bytes, sha256 {want}"))
    });
    rep.run("convert out", || {
        let mut c = img(ctx, "convert");
        c.arg("--image-opts")
            .arg(limited_lun(ctx, CONVERT_BYTES))
            .args(["-O", "raw"])
            .arg(&dst);
        tool_result("qemu-img convert (LUN to file)", run_tool(c, TOOL_TIMEOUT))?;
        let got = sha256(&dst)?;
        if got == want {
            Ok(format!("sha256 {got} matches"))
        } else {
            Err(format!("mismatch: sha256 {got}, wrote {want}"))
        }
    });
    rep.run("compare", || {
        let mut c = img(ctx, "compare");
        c.arg("--image-opts")
            .arg(limited_file(&src, CONVERT_BYTES))
            .arg(limited_lun(ctx, CONVERT_BYTES));
        let r = run_tool(c, TOOL_TIMEOUT)?;
        if r.ok {
            Ok(one_line(&r.output))
        } else {
            Err(format!("qemu-img compare: {}", one_line(&r.output)))
        }
    });

    let tail = size - PATTERN_BYTES;
    let write = |p: u8, off: u64| format!("write -P {p:#x} {off} {PATTERN_BYTES}");
    let read = |p: u8, off: u64| format!("read -P {p:#x} {off} {PATTERN_BYTES}");
    rep.run("qemu-io write", || {
        qemu_io(ctx, &[write(HEAD_PATTERN, 0), write(TAIL_PATTERN, tail)])
            .map(|_| format!("{HEAD_PATTERN:#x} at 0, {TAIL_PATTERN:#x} at {tail}"))
    });
    rep.run("flush", || qemu_io(ctx, &["flush".to_owned()]));
    rep.run("qemu-io read", || {
        qemu_io(ctx, &[read(HEAD_PATTERN, 0), read(TAIL_PATTERN, tail)])
            .map(|_| "both patterns read back".to_owned())
    });
    rep.run("negative control", || {
        match qemu_io(ctx, &[read(TAIL_PATTERN, 0)]) {
            Err(e) if e.starts_with("mismatch") => {
                Ok("a wrong-pattern read is reported as a mismatch".to_owned())
            }
            Err(e) => Err(e),
            Ok(_) => Err(format!(
                "reading {TAIL_PATTERN:#x} where {HEAD_PATTERN:#x} was written passed: the pattern checks prove nothing"
            )),
        }
    });
    Ok(rep)
}
