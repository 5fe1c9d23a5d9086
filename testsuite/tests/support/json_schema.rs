//! Validates real output against the JSON Schemas (draft 2020-12) in
//! `docs/schemas/`. Shared by the testsuite's and the tools' integration
//! tests (`#[path]`-included, one copy). The schemas' `$id`s live under
//! [`BASE`]; references between them are answered from the files on disk,
//! never from the network. Formats (`date-time`) are checked.

use std::path::PathBuf;

use serde_json::Value;

/// The `$id` prefix of every schema in docs/schemas/.
pub const BASE: &str = "https://iesp-test.github.io/schemas/";

/// docs/schemas/ of this checkout.
pub fn dir() -> PathBuf {
    // Both including crates sit one level below the workspace root.
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/schemas")
}

fn load(name: &str) -> Result<Value, String> {
    let path = dir().join(name);
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Answers `$ref`s to sibling schemas from docs/schemas/.
struct Files;

impl jsonschema::Retrieve for Files {
    fn retrieve(
        &self,
        uri: &jsonschema::Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let s = uri.as_str();
        let name = s
            .strip_prefix(BASE)
            .ok_or_else(|| format!("{s}: not one of docs/schemas/ (no network here)"))?;
        Ok(load(name)?)
    }
}

/// The compiled schema `docs/schemas/<name>`.
pub fn validator(name: &str) -> jsonschema::Validator {
    let schema = load(name).unwrap_or_else(|e| panic!("{e}"));
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .with_retriever(Files)
        .build(&schema)
        .unwrap_or_else(|e| panic!("docs/schemas/{name} does not compile: {e}"))
}

/// Panics with every violation when `doc` does not validate.
pub fn assert_valid(v: &jsonschema::Validator, what: &str, doc: &Value) {
    let errors: Vec<String> = v
        .iter_errors(doc)
        .map(|e| format!("  at {}: {e}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{what} does not validate against its schema:\n{}\n{}",
        errors.join("\n"),
        serde_json::to_string_pretty(doc).unwrap_or_default()
    );
}
