//! Helpers for the `iesp-test` integration tests: run the binary, read its
//! JSON report, damage blocks behind its back, mount file systems (loop
//! devices: `iesp_testsupport::LoopDevice`).
#![allow(dead_code)]

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Output};

/// What a run of the binary left.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Everything it printed, for assertion messages.
    pub fn text(&self) -> String {
        format!(
            "exit {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `iesp-test ARGS` to completion.
pub fn iesp_test(args: &[&str]) -> Run {
    iesp_test_env(args, &[])
}

/// [`iesp_test`] with extra environment variables (after `IESP_LOG=warn`,
/// so `IESP_LOG` may be overridden).
pub fn iesp_test_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    let out: Output = Command::new(env!("CARGO_BIN_EXE_iesp-test"))
        .args(args)
        .env("IESP_LOG", "warn")
        .envs(env.iter().copied())
        .output()
        .expect("run iesp-test");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A sparse image file of `size` bytes named `name` in `dir`; its path.
pub fn image(dir: &Path, name: &str, size: u64) -> String {
    let p = dir.join(name);
    std::fs::File::create(&p)
        .and_then(|f| f.set_len(size))
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    p.to_str().expect("utf-8 path").to_owned()
}

/// The JSON document in the file at `path`.
pub fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}: {text}", path.display()))
}

/// The documents of the JSON lines file at `path`.
pub fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Runs `iesp-test verify ARGS` with quiet progress and a JSON report, and
/// returns the run and the report (`Null` if none was written).
pub fn verify(args: &[&str], json: &Path) -> (Run, serde_json::Value) {
    let _ = std::fs::remove_file(json);
    let mut all = vec![
        "verify",
        "--progress",
        "quiet",
        "--json",
        json.to_str().expect("utf-8 path"),
    ];
    all.extend_from_slice(args);
    let run = iesp_test(&all);
    let report = std::fs::read_to_string(json)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(serde_json::Value::Null);
    (run, report)
}

/// `(lba, class)` of every mismatch in a report, by LBA.
pub fn mismatches(report: &serde_json::Value) -> Vec<(u64, String)> {
    let mut v: Vec<(u64, String)> = report["mismatches"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| {
                    (
                        m["lba"].as_u64().unwrap_or(u64::MAX),
                        m["class"].as_str().unwrap_or("?").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

pub fn read_block(path: &Path, bs: u64, lba: u64) -> Vec<u8> {
    let f = std::fs::File::open(path).expect("open image");
    let mut b = vec![0u8; bs as usize];
    f.read_exact_at(&mut b, lba * bs).expect("read block");
    b
}

pub fn write_block(path: &Path, bs: u64, lba: u64, data: &[u8]) {
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open image for writing");
    f.write_all_at(data, lba * bs).expect("write block");
    f.sync_all().expect("sync image");
}

/// The five kinds of damage the detection tests do, at fixed LBAs, with
/// the class verify must report for each. `old` is an earlier copy of
/// block 40.
pub fn damage(path: &Path, bs: u64, old_40: &[u8]) -> Vec<(u64, String)> {
    // Flip one bit of the payload.
    let mut b = read_block(path, bs, 5);
    b[bs as usize / 2] ^= 0x08;
    write_block(path, bs, 5, &b);
    // Copy block 3 over block 10.
    let b3 = read_block(path, bs, 3);
    write_block(path, bs, 10, &b3);
    // Zero block 20.
    write_block(path, bs, 20, &vec![0u8; bs as usize]);
    // Foreign bytes in block 30.
    let foreign: Vec<u8> = (0..bs).map(|i| (i * 7 + 1) as u8).collect();
    write_block(path, bs, 30, &foreign);
    // An older copy of block 40.
    write_block(path, bs, 40, old_40);
    vec![
        (5, "torn".to_owned()),
        (10, "misdirected".to_owned()),
        (20, "zeros".to_owned()),
        (30, "foreign".to_owned()),
        (40, "stale".to_owned()),
    ]
}

/// A mount, unmounted on drop.
pub struct Mount {
    pub dir: tempfile::TempDir,
}

impl Mount {
    /// Mounts `dev` on a fresh directory; `None` when mounting is not
    /// possible here.
    pub fn new(dev: &Path) -> Option<Mount> {
        let dir = tempfile::tempdir().expect("mount point");
        let st = Command::new("mount")
            .arg(dev)
            .arg(dir.path())
            .status()
            .ok()?;
        st.success().then_some(Mount { dir })
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// The reference target (a 16 MiB RAM LUN of 512-byte blocks) behind a
/// rewriting proxy with `fault`; the target's runtime keeps both running
/// while the binary talks to them.
pub struct Faulty {
    /// Declared first: stopped before the target and its runtime.
    pub proxy: iesp_testsuite::proxy::Proxy,
    pub target: iesp_testsupport::BlockingTarget,
    /// The LUN through the proxy.
    pub url: String,
}

pub fn faulty(fault: iesp_testsuite::proxy::Fault) -> Faulty {
    let target = iesp_testsupport::BlockingTarget::ram(16 << 20, 512);
    let proxy = target
        .runtime()
        .block_on(iesp_testsuite::proxy::Proxy::start(target.addr(), fault))
        .unwrap();
    let url = format!("iscsi://{}/{}/0", proxy.addr, target.iqn());
    Faulty { proxy, target, url }
}
