//! Real output of the binary against the JSON Schemas in docs/schemas/:
//! `verify --json` (to a file and to stdout with `-`) and `conformance
//! --jsonl` against the embedded target. Each document starts with the
//! common envelope (schema, tool_version, started_at, seed, args,
//! interrupted), and the seed the run printed is the seed it recorded.

mod common;

#[path = "../../testsuite/tests/support/json_schema.rs"]
mod json_schema;

use common::{iesp_test, json_lines, read_json};

#[test]
fn verify_report_file_validates() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("v.img");
    let json = dir.path().join("r.json");
    let (img_s, json_s) = (img.to_str().unwrap(), json.to_str().unwrap());
    let run = iesp_test(&[
        "verify",
        "--write",
        "--size",
        "4M",
        "--seed",
        "77",
        "--progress",
        "quiet",
        "--json",
        json_s,
        img_s,
    ]);
    assert_eq!(run.code, 0, "{}", run.text());
    let doc: serde_json::Value = read_json(&json);
    json_schema::assert_valid(
        &json_schema::validator("verify.schema.json"),
        "verify --json FILE",
        &doc,
    );
    assert_eq!(doc["schema"], "iesp-test/verify/2");
    assert_eq!(doc["seed"], 77);
    assert_eq!(doc["interrupted"], false);
    assert_eq!(doc["tool_version"], env!("CARGO_PKG_VERSION"));
    let args: Vec<&str> = doc["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert_eq!(
        &args[1..],
        &[
            "verify",
            "--write",
            "--size",
            "4M",
            "--seed",
            "77",
            "--progress",
            "quiet",
            "--json",
            json_s,
            img_s
        ]
    );
    // The envelope comes first in the file.
    let text = std::fs::read_to_string(&json).unwrap();
    assert!(
        text.starts_with("{\n  \"schema\": \"iesp-test/verify/2\",\n  \"tool_version\""),
        "{text}"
    );
}

/// With `--json -` stdout holds only the report (the human text goes to
/// stderr), and it validates.
#[test]
fn verify_json_to_stdout_validates() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("s.img");
    let run = iesp_test(&[
        "verify",
        "--write",
        "--size",
        "4M",
        "--progress",
        "quiet",
        "--json",
        "-",
        img.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{}", run.text());
    // stdout holds one JSON document (the human summary goes to stderr).
    let doc: serde_json::Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{}", run.text()));
    json_schema::assert_valid(
        &json_schema::validator("verify.schema.json"),
        "verify --json -",
        &doc,
    );
    // No --seed: the seed the run chose is recorded.
    assert!(doc["seed"].is_u64(), "{doc}");
    assert_eq!(doc["outcome"], "pass");
}

#[test]
fn conformance_jsonl_validates_line_by_line() {
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("r.jsonl");
    let tap = dir.path().join("r.tap");
    let junit = dir.path().join("r.xml");
    let run = iesp_test(&[
        "conformance",
        "--embedded",
        "--seed",
        "4660",
        "-t",
        "iSCSI.Login.*",
        "--format",
        "quiet",
        "--jsonl",
        jsonl.to_str().unwrap(),
        "--tap",
        tap.to_str().unwrap(),
        "--junit",
        junit.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{}", run.text());
    let text = std::fs::read_to_string(&jsonl).unwrap();
    let schema = json_schema::validator("conformance-jsonl.schema.json");
    let lines = json_lines(&jsonl);
    assert!(lines.len() > 3, "{text}");
    for (i, l) in lines.iter().enumerate() {
        json_schema::assert_valid(&schema, &format!("JSON line {}", i + 1), l);
    }
    assert_eq!(lines[0]["type"], "run");
    assert_eq!(lines[0]["schema"], "iesp-test/conformance-jsonl/3");
    assert_eq!(lines[0]["seed"], 4660);
    assert_eq!(lines.last().unwrap()["type"], "summary");
    // The same seed in the TAP comment and the JUnit properties.
    let tap = std::fs::read_to_string(&tap).unwrap();
    assert!(tap.lines().any(|l| l == "# seed: 4660"), "{tap}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains("<property name=\"seed\" value=\"4660\"/>"),
        "{xml}"
    );
}

#[test]
fn verify_state_file_validates_and_a_check_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("st.img");
    let state = dir.path().join("st.json");
    let (img_s, state_s) = (img.to_str().unwrap(), state.to_str().unwrap());
    let run = iesp_test(&[
        "verify",
        "--write",
        "--size",
        "4M",
        "--mode",
        "random",
        "--bytes",
        "8M",
        "--seed",
        "31",
        "--progress",
        "quiet",
        "--state-out",
        state_s,
        img_s,
    ]);
    assert_eq!(run.code, 0, "{}", run.text());
    let doc: serde_json::Value = read_json(&state);
    json_schema::assert_valid(
        &json_schema::validator("verify-state.schema.json"),
        "verify --state-out FILE",
        &doc,
    );
    assert_eq!(doc["schema"], "iesp-test/verify-state/2");
    assert_eq!(doc["seed"], 31);
    assert!(!doc["extents"].as_array().unwrap().is_empty(), "{doc}");
    let check = iesp_test(&[
        "verify",
        "--check",
        "--state-in",
        state_s,
        "--progress",
        "quiet",
        img_s,
    ]);
    assert_eq!(check.code, 0, "{}", check.text());
}
