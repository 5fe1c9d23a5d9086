//! `iesp-test verify` on regular files: passes, detection of every damage
//! class, reproducibility, random mode with trims and its state file, the
//! exit codes, and the refusal of a file that carries a file system.

mod common;

use common::{damage, iesp_test, image, mismatches, read_block, read_json, verify};

const BS: u64 = 4096;

#[test]
fn sequential_pass_on_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "a.img", 8 << 20);
    let json = dir.path().join("r.json");
    let (run, r) = verify(
        &[
            "--write",
            "--seed",
            "11",
            "--io-size",
            "256K",
            "--qd",
            "4",
            &img,
        ],
        &json,
    );
    assert_eq!(run.code, 0, "{}", run.text());
    assert_eq!(r["schema"], "iesp-test/verify/2");
    assert_eq!(r["outcome"], "pass");
    assert_eq!(r["seed"], 11);
    assert_eq!(r["blocks"], 2048);
    assert_eq!(r["distinct_verified"], 2048);
    assert_eq!(r["bytes_written"], 8 << 20);
    assert_eq!(r["bytes_read"], 8 << 20);
    assert_eq!(r["target"]["kind"], "file");
    assert!(
        run.stdout.starts_with("verify: seed 11, mode sequential\n"),
        "{}",
        run.text()
    );
    assert!(
        run.stdout.contains("verify: PASS (exit code 0)"),
        "{}",
        run.text()
    );
    // The check the summary suggests passes, taking seed and generation
    // from the headers.
    let (run, r) = verify(&["--check", &img], &json);
    assert_eq!(run.code, 0, "{}", run.text());
    assert_eq!(
        (r["seed"].as_u64(), r["generation"].as_u64()),
        (Some(11), Some(1))
    );
    assert_eq!(r["bytes_written"], 0);
}

#[test]
fn check_names_every_damaged_block_and_its_class() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "d.img", 4 << 20);
    let path = std::path::Path::new(&img);
    let json = dir.path().join("r.json");
    // Generation 1, keep block 40; then generation 2 over it.
    let (run, _) = verify(&["--write", "--seed", "5", &img], &json);
    assert_eq!(run.code, 0, "{}", run.text());
    let old_40 = read_block(path, BS, 40);
    let (run, _) = verify(
        &["--write", "--seed", "5", "--generation", "2", &img],
        &json,
    );
    assert_eq!(run.code, 0, "{}", run.text());
    let want = damage(path, BS, &old_40);

    let (run, r) = verify(&["--check", "--seed", "5", &img], &json);
    assert_eq!(run.code, 1, "{}", run.text());
    assert_eq!(r["outcome"], "mismatch");
    assert_eq!(r["generation"], 2, "generation taken from the first header");
    assert_eq!(mismatches(&r), want);
    assert_eq!(r["mismatch_count"], 5);
    assert_eq!(r["blocks_verified"], 1024 - 5);
    for c in ["torn", "misdirected", "zeros", "foreign", "stale"] {
        assert_eq!(r["mismatches_by_class"][c], 1, "{c}");
    }
    // The details: the misdirected block names where it belongs, the
    // stale one its generation, the torn one the first differing byte.
    let m = r["mismatches"].as_array().unwrap();
    let at = |lba: u64| m.iter().find(|x| x["lba"] == lba).unwrap();
    assert_eq!(at(10)["found_header"]["lba"], 3);
    assert_eq!(at(40)["found_header"]["generation"], 1);
    assert_eq!(at(40)["expected_header"]["generation"], 2);
    assert_eq!(at(5)["first_difference"], BS / 2);
    assert!(at(30)["found_header"].is_null());
    // The same on stdout, for a person.
    assert!(
        run.stdout
            .contains("MISMATCHES: 5 (1 foreign, 1 misdirected, 1 stale, 1 torn, 1 zeros)"),
        "{}",
        run.text()
    );
    assert!(
        run.stdout
            .contains("LBA 10: misdirected — holds the block written for LBA 3"),
        "{}",
        run.text()
    );
    assert!(
        run.stdout
            .contains("LBA 40: stale — holds generation 1 where 2 was written last"),
        "{}",
        run.text()
    );
    assert!(
        run.stderr.contains("5 mismatching blocks"),
        "{}",
        run.text()
    );
}

#[test]
fn the_same_seed_writes_the_same_image() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let a = image(dir.path(), "a.img", 2 << 20);
    let b = image(dir.path(), "b.img", 2 << 20);
    let c = image(dir.path(), "c.img", 2 << 20);
    for (img, seed) in [(&a, "77"), (&b, "77"), (&c, "78")] {
        let (run, _) = verify(
            &[
                "--write",
                "--seed",
                seed,
                "--block-size",
                "512",
                "-w",
                "3",
                img,
            ],
            &json,
        );
        assert_eq!(run.code, 0, "{}", run.text());
    }
    let (a, b, c) = (
        std::fs::read(a).unwrap(),
        std::fs::read(b).unwrap(),
        std::fs::read(c).unwrap(),
    );
    assert!(a == b, "two runs with seed 77 wrote different images");
    assert_ne!(a, c);
    // Random mode with one slot is reproducible too.
    let d = image(dir.path(), "d.img", 1 << 20);
    let e = image(dir.path(), "e.img", 1 << 20);
    for img in [&d, &e] {
        let args = [
            "--write",
            "--mode",
            "random",
            "--seed",
            "3",
            "-w",
            "1",
            "--qd",
            "1",
            "--verified-percent",
            "60",
            "--block-size",
            "512",
            img.as_str(),
        ];
        let (run, r) = verify(&args, &json);
        assert_eq!(run.code, 0, "{}", run.text());
        assert!(
            r["trims"].as_u64().unwrap() > 0 && r["writes_duplicate"].as_u64().unwrap() > 0,
            "{r}"
        );
    }
    assert!(
        std::fs::read(d).unwrap() == std::fs::read(e).unwrap(),
        "random mode with seed 3 and one slot is not reproducible"
    );
}

#[test]
fn random_mode_with_trims_and_a_state_file() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "r.img", 4 << 20);
    let json = dir.path().join("r.json");
    let state = dir.path().join("state.json");
    let st = state.to_str().unwrap();
    let args = [
        "--write",
        "--mode",
        "random",
        "--block-size",
        "512",
        "-w",
        "2",
        "--qd",
        "4",
        "--mix",
        "unique=60,duplicate=20,trim=20",
        "--verified-percent",
        "90",
        "--state-out",
        st,
        &img,
    ];
    let (run, r) = verify(&args, &json);
    assert_eq!(run.code, 0, "{}", run.text());
    assert_eq!(r["mode"], "random");
    assert!(r["verified_percent"].as_f64().unwrap() >= 90.0, "{r}");
    assert!(r["trims"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["trims_skipped"], 0);
    assert_eq!(r["trim"]["method"], "punch-hole");
    assert_eq!(r["trim"]["zeroes"], true);
    assert!(r["writes_duplicate"].as_u64().unwrap() > 0);
    assert!(
        run.stdout.contains(&format!("--check --state-in {st}")),
        "{}",
        run.text()
    );

    // The state file: what a later check expects.
    let s: serde_json::Value = read_json(&state);
    assert_eq!(s["schema"], "iesp-test/verify-state/2");
    assert_eq!(s["interrupted"], false);
    let extents = s["extents"].as_array().unwrap();
    let find = |kind: &str| -> u64 {
        extents
            .iter()
            .find(|e| e[2] == kind)
            .map(|e| e[0].as_u64().unwrap())
            .unwrap_or_else(|| panic!("no {kind} extent"))
    };
    let (unique, trimmed, dup) = (find("unique"), find("trimmed"), find("duplicate"));
    let (run, r) = verify(&["--check", "--state-in", st, &img], &json);
    assert_eq!(run.code, 0, "{}", run.text());
    assert!(r["blocks_verified"].as_u64().unwrap() > 0);

    // Damage one block of each kind: each is found.
    let p = std::path::Path::new(&img);
    let mut b = read_block(p, 512, unique);
    b[100] ^= 1;
    common::write_block(p, 512, unique, &b);
    common::write_block(p, 512, trimmed, &[0x5a; 512]);
    common::write_block(p, 512, dup, &[0; 512]);
    let (run, r) = verify(&["--check", "--state-in", st, &img], &json);
    assert_eq!(run.code, 1, "{}", run.text());
    let mut want = vec![
        (unique, "torn".to_owned()),
        (trimmed, "foreign".to_owned()),
        (dup, "zeros".to_owned()),
    ];
    want.sort();
    assert_eq!(mismatches(&r), want);
}

#[test]
fn exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "e.img", 1 << 20);
    let json = dir.path().join("r.json");
    // Usage: no --write, a check with nothing to go by, a misaligned range,
    // an unknown flag (clap).
    let (run, _) = verify(&[&img], &json);
    assert_eq!(run.code, 2, "{}", run.text());
    assert!(run.stderr.contains("add --write"), "{}", run.text());
    let (run, _) = verify(&["--check", &img], &json);
    assert_eq!(run.code, 2, "{}", run.text());
    assert!(run.stderr.contains("give --seed"), "{}", run.text());
    let (run, _) = verify(&["--write", "--offset", "100", &img], &json);
    assert_eq!(run.code, 2, "{}", run.text());
    assert_eq!(iesp_test(&["verify", "--no-such-flag", &img]).code, 2);
    // I/O: a target that cannot be opened.
    let (run, _) = verify(&["--write", "/nonexistent/dir/x.img"], &json);
    assert_eq!(run.code, 3, "{}", run.text());
    // A file created with --size, then a pass.
    let new = dir.path().join("new.img");
    let (run, r) = verify(&["--write", "--size", "1M", new.to_str().unwrap()], &json);
    assert_eq!(run.code, 0, "{}", run.text());
    assert_eq!(r["blocks"], 256);
    // --help documents the codes.
    let help = iesp_test(&["verify", "--help"]);
    assert_eq!(help.code, 0);
    for line in [
        "0    every block compared matched",
        "1    mismatch",
        "2    usage error",
        "3    I/O or connection error",
        "130  interrupted (SIGINT)",
        "143  terminated (SIGTERM)",
    ] {
        assert!(
            help.stdout.contains(line),
            "--help lacks {line:?}:\n{}",
            help.stdout
        );
    }
}

#[test]
fn a_file_with_a_file_system_is_refused() {
    let Some(mkfs) = iesp_testsupport::peers::tool_or_skip("mkfs.ext4") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "fs.img", 8 << 20);
    let st = std::process::Command::new(mkfs)
        .args(["-q", "-F", &img])
        .status()
        .unwrap();
    assert!(st.success());
    let before = std::fs::read(&img).unwrap();
    let json = dir.path().join("r.json");
    let (run, _) = verify(&["--write", &img], &json);
    assert_eq!(run.code, 2, "{}", run.text());
    assert!(
        run.stderr.contains("ext2/3/4 file system"),
        "{}",
        run.text()
    );
    assert!(run.stderr.contains("--force"), "{}", run.text());
    assert!(
        std::fs::read(&img).unwrap() == before,
        "a refused run wrote to the file"
    );
    // A check only reads: allowed (and finds no blocks of ours).
    let (run, _) = verify(&["--check", "--seed", "1", &img], &json);
    assert_eq!(run.code, 1, "{}", run.text());
    let (run, _) = verify(&["--write", "--force", &img], &json);
    assert_eq!(run.code, 0, "{}", run.text());
}

/// A missing file: a writing run is told how to create it, a check (which
/// never creates anything) is not.
#[test]
fn a_missing_file_is_named_with_the_right_hint() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("none.img");
    let img = img.to_str().unwrap();
    let json = dir.path().join("r.json");
    let (run, _) = verify(&["--write", img], &json);
    assert_eq!(run.code, 3, "{}", run.text());
    assert!(run.stderr.contains("give --size"), "{}", run.text());
    let (run, _) = verify(&["--check", "--seed", "1", img], &json);
    assert_eq!(run.code, 3, "{}", run.text());
    assert!(run.stderr.contains("no such file"), "{}", run.text());
    assert!(!run.stderr.contains("--size"), "{}", run.text());
}

/// A file of data with no signature (random bytes: an image, an archive)
/// is refused too, and loses nothing; one verify wrote before is not.
#[test]
fn a_file_holding_other_data_is_refused() {
    use rand::RngCore;
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("data.bin");
    let mut data = vec![0u8; 4 << 20];
    rand::rng().fill_bytes(&mut data[4096 * 3..]); // the file's blocks are 4 KiB
    std::fs::write(&img, &data).unwrap();
    let img = img.to_str().unwrap().to_owned();
    let json = dir.path().join("r.json");
    let (run, _) = verify(&["--write", &img], &json);
    assert_eq!(run.code, 2, "{}", run.text());
    assert!(
        run.stderr
            .contains("holds data iesp-test did not write (block 3,"),
        "{}",
        run.text()
    );
    assert!(run.stderr.contains("--force"), "{}", run.text());
    assert!(
        std::fs::read(&img).unwrap() == data,
        "a refused run wrote to the file"
    );
    let (run, _) = verify(&["--write", "--force", "--seed", "4", &img], &json);
    assert_eq!(run.code, 0, "{}", run.text());
    // Now it holds verify's blocks: writing again needs no --force.
    let (run, _) = verify(&["--write", "--seed", "5", &img], &json);
    assert_eq!(run.code, 0, "{}", run.text());
}

#[test]
fn limits_stop_the_writing_and_what_was_written_is_verified() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "l.img", 8 << 20);
    let json = dir.path().join("r.json");
    // --bytes: one worker writes a prefix of 2 MiB in 256 KiB commands,
    // then reads exactly that back.
    let (run, r) = verify(
        &[
            "--write",
            "--bytes",
            "2M",
            "--io-size",
            "256K",
            "--qd",
            "1",
            &img,
        ],
        &json,
    );
    assert_eq!(run.code, 0, "{}", run.text());
    assert_eq!(r["bytes_written"], 2 << 20);
    assert_eq!(r["bytes_read"], 2 << 20);
    assert_eq!(r["distinct_verified"], 512);
    assert!(r["stopped_by"].as_str().unwrap().contains("--bytes"), "{r}");
    // A partial image gets no check-by-seed suggestion; its state file
    // says which blocks a check can expect.
    assert!(r["check_command"].is_null(), "{r}");
    let state = dir.path().join("s.json");
    let st = state.to_str().unwrap();
    let (run, r) = verify(
        &[
            "--write",
            "--bytes",
            "1M",
            "-w",
            "2",
            "--qd",
            "1",
            "--io-size",
            "128K",
            "--state-out",
            st,
            &img,
        ],
        &json,
    );
    assert_eq!(run.code, 0, "{}", run.text());
    assert_eq!(
        r["check_command"],
        format!("iesp-test verify --check --state-in {st} {img}")
    );
    // (Commands already in flight when the limit is reached complete.)
    let written = r["bytes_written"].as_u64().unwrap() / BS;
    assert!((256..=256 + 32).contains(&written), "{r}");
    let (run, r) = verify(&["--check", "--state-in", st, &img], &json);
    assert_eq!(run.code, 0, "{}", run.text());
    assert_eq!(
        r["distinct_verified"], written,
        "what was written, in two stripes"
    );
    assert_eq!(r["blocks_unverifiable"], 2048 - written);
    // --duration repeats passes until the time is up.
    let (run, r) = verify(
        &["--write", "--duration", "1s", "--length", "1M", &img],
        &json,
    );
    assert_eq!(run.code, 0, "{}", run.text());
    assert!(r["bytes_written"].as_u64().unwrap() >= 1 << 20, "{r}");
    assert!(r["generation"].as_u64().unwrap() >= 1);
    assert!(
        r["stopped_by"].as_str().unwrap().contains("--duration"),
        "{r}"
    );
    // The last generation is what a check expects.
    let g = r["generation"].as_u64().unwrap().to_string();
    let seed = r["seed"].as_u64().unwrap().to_string();
    let (run, _) = verify(
        &[
            "--check",
            "--seed",
            &seed,
            "--generation",
            &g,
            "--length",
            "1M",
            &img,
        ],
        &json,
    );
    assert_eq!(run.code, 0, "{}", run.text());
}

#[test]
fn buffered_io_says_so_and_still_verifies() {
    // (tmpfs, the usual file system without O_DIRECT, has it since Linux
    // 6.6; the fallback on EINVAL is the same path as --buffered.)
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "t.img", 1 << 20);
    let json = dir.path().join("r.json");
    let (run, r) = verify(&["--write", "--buffered", &img], &json);
    assert_eq!(run.code, 0, "{}", run.text());
    assert_eq!(r["target"]["direct_io"], false);
    assert!(
        run.stdout
            .contains("note:   buffered I/O (--buffered): page cache dropped before reading back"),
        "{}",
        run.text()
    );
    assert!(!run.stdout.contains("O_DIRECT)"), "{}", run.text());
}
