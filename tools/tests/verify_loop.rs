//! `iesp-test verify` on a real block device: a loop device over a file
//! (as root). O_DIRECT, BLKSSZGET/BLKGETSIZE64 and BLKDISCARD are used for
//! real; the refusals (file system signature, mounted, held open
//! exclusively) are tested on it.

mod common;

use std::os::unix::fs::OpenOptionsExt;

use common::{Mount, verify};
use iesp_testsupport::LoopDevice;

fn backing(dir: &std::path::Path, size: u64) -> std::path::PathBuf {
    let p = dir.join("loop.img");
    std::fs::File::create(&p).unwrap().set_len(size).unwrap();
    p
}

fn loop_or_skip(dir: &std::path::Path, size: u64) -> Option<LoopDevice> {
    LoopDevice::attach_or_skip(&backing(dir, size))
}

#[test]
fn sequential_and_random_on_a_loop_device() {
    let dir = tempfile::tempdir().unwrap();
    let Some(dev) = loop_or_skip(dir.path(), 16 << 20) else {
        return;
    };
    let json = dir.path().join("r.json");
    let (run, r) = verify(
        &[
            "--write",
            "--seed",
            "21",
            "-w",
            "2",
            "--qd",
            "4",
            "--io-size",
            "128K",
            dev.as_str(),
        ],
        &json,
    );
    assert_eq!(run.code, 0, "{}", run.text());
    assert_eq!(r["target"]["kind"], "block-device");
    assert_eq!(r["target"]["block_size"], 512, "BLKSSZGET of a loop device");
    assert_eq!(r["target"]["blocks"], 32768, "BLKGETSIZE64 / 512");
    assert_eq!(r["target"]["direct_io"], true);
    assert_eq!(r["distinct_verified"], 32768);
    let (run, _) = verify(&["--check", dev.as_str()], &json);
    assert_eq!(run.code, 0, "{}", run.text());

    // Random mode with BLKDISCARD trims: the device promises nothing about
    // trimmed blocks, so they are not compared, and nothing mismatches.
    let args = [
        "--write",
        "--mode",
        "random",
        "-w",
        "2",
        "--qd",
        "2",
        "--mix",
        "unique=70,duplicate=10,trim=20",
        "--length",
        "4M",
        "--verified-percent",
        "80",
        "--duration",
        "60s",
        dev.as_str(),
    ];
    let (run, r) = verify(&args, &json);
    assert_eq!(run.code, 0, "{}", run.text());
    assert_eq!(r["trim"]["method"], "discard");
    assert_eq!(r["trim"]["zeroes"], false);
    assert!(
        r["trims"].as_u64().unwrap() > 0,
        "no BLKDISCARD happened: {r}"
    );
    assert_eq!(r["trims_skipped"], 0);
    assert!(r["verified_percent"].as_f64().unwrap() >= 80.0, "{r}");
}

#[test]
fn a_loop_device_with_a_file_system_is_refused_until_forced() {
    let Some(mkfs) = iesp_testsupport::peers::tool_or_skip("mkfs.ext4") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let Some(dev) = loop_or_skip(dir.path(), 16 << 20) else {
        return;
    };
    let st = std::process::Command::new(mkfs)
        .args(["-q", dev.as_str()])
        .status()
        .unwrap();
    assert!(st.success());
    let json = dir.path().join("r.json");
    let (run, r) = verify(&["--write", dev.as_str()], &json);
    assert_eq!(run.code, 2, "{}", run.text());
    assert!(r.is_null(), "a refused run writes no report");
    assert!(
        run.stderr.contains(&format!(
            "refusing to write to {}: it carries an ext2/3/4 file system",
            dev.as_str()
        )),
        "{}",
        run.text()
    );

    // Mounted: refused, and the message says where.
    if let Some(m) = Mount::new(dev.path()) {
        let (run, _) = verify(&["--write", dev.as_str()], &json);
        assert_eq!(run.code, 2, "{}", run.text());
        let mp = m.dir.path().to_str().unwrap();
        assert!(
            run.stderr.contains(&format!("it is mounted on {mp}")),
            "{}",
            run.text()
        );
        // A check only reads: allowed while mounted.
        let (run, _) = verify(
            &["--check", "--seed", "1", "--length", "64K", dev.as_str()],
            &json,
        );
        assert_eq!(run.code, 1, "{}", run.text());
        drop(m);
    } else {
        eprintln!("SKIPPED (part): cannot mount here");
    }

    let (run, _) = verify(
        &["--write", "--force", "--length", "1M", dev.as_str()],
        &json,
    );
    assert_eq!(run.code, 0, "{}", run.text());
}

#[test]
fn a_loop_device_held_open_exclusively_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let Some(dev) = loop_or_skip(dir.path(), 4 << 20) else {
        return;
    };
    // What a mounted file system or another tool does: O_EXCL on the device.
    let holder = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_EXCL.bits())
        .open(dev.path())
        .unwrap();
    let json = dir.path().join("r.json");
    let (run, _) = verify(&["--write", dev.as_str()], &json);
    assert_eq!(run.code, 2, "{}", run.text());
    assert!(run.stderr.contains("in use"), "{}", run.text());
    assert!(run.stderr.contains("EBUSY"), "{}", run.text());
    drop(holder);
    let (run, _) = verify(&["--write", dev.as_str()], &json);
    assert_eq!(run.code, 0, "{}", run.text());
}
