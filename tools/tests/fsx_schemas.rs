//! `iesp-test fsx` output against docs/schemas/: the `--json` report of a
//! passing run and of a failing, shrunk one, and every line of the op log
//! and of the shrunk reproducer.

mod common;

#[path = "../../testsuite/tests/support/json_schema.rs"]
mod json_schema;

use common::{iesp_test, image, json_lines, read_json};

#[test]
fn fsx_report_and_op_logs_validate() {
    let dir = tempfile::tempdir().unwrap();
    let report = json_schema::validator("fsx.schema.json");
    let log_schema = json_schema::validator("fsx-log.schema.json");
    let json = dir.path().join("r.json");
    let log = dir.path().join("ops.jsonl");
    let img = image(dir.path(), "f.img", 4 << 20);
    let (json_s, log_s) = (json.to_str().unwrap(), log.to_str().unwrap());
    let run = iesp_test(&[
        "fsx",
        "--write",
        "--seed",
        "12",
        "--ops",
        "800",
        "--progress",
        "quiet",
        "--json",
        json_s,
        "--log",
        log_s,
        &img,
    ]);
    assert_eq!(run.code, 0, "{}", run.text());
    let doc = read_json(&json);
    json_schema::assert_valid(&report, "fsx --json (pass)", &doc);
    assert_eq!(
        (doc["schema"].as_str(), doc["seed"].as_u64()),
        (Some("iesp-test/fsx/1"), Some(12))
    );
    let lines = json_lines(&log);
    assert_eq!(lines.len(), 801, "header + 800 ops");
    for (n, l) in lines.iter().enumerate() {
        json_schema::assert_valid(&log_schema, &format!("fsx --log line {}", n + 1), l);
    }
    assert_eq!(lines[0]["schema"], "iesp-test/fsx-log/1");

    // A failure, shrunk.
    let shrunk = dir.path().join("min.jsonl");
    let run = iesp_test(&[
        "fsx",
        "--write",
        "--seed",
        "3",
        "--ops",
        "20000",
        "--progress",
        "quiet",
        "--json",
        json_s,
        "--shrink-log",
        shrunk.to_str().unwrap(),
        "--fault",
        "stale-read@40",
        "memory:256",
    ]);
    assert_eq!(run.code, 1, "{}", run.text());
    let doc = read_json(&json);
    json_schema::assert_valid(&report, "fsx --json (mismatch)", &doc);
    assert_eq!(doc["failure"]["kind"], "mismatch");
    for (n, l) in json_lines(&shrunk).iter().enumerate() {
        json_schema::assert_valid(&log_schema, &format!("shrunk log line {}", n + 1), l);
    }
}
