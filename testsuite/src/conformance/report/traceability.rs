//! The traceability table: spec section → the cases that check it, generated
//! from the suite itself (`iesp-test conformance --traceability FILE`) and
//! checked in as `docs/conformance-traceability.md`; a test keeps the
//! checked-in copy current.
//!
//! A case's `section` may name several sections and documents:
//! `RFC 7143 §11.8.4, §13.13` or `SPC-4 §6.6.1; SBC-4 §6.6.4`. Each section
//! gets its row.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::super::Suite;
use super::super::case::{Level, Profiles};

/// `(document, section)` pairs named by a section string: items are
/// separated by `,` or `;`; an item with a document name before its `§`
/// starts that document, one without continues the previous one; an item
/// without `§` is a document and a named part (`RFC 7143 Appendix C`), or
/// an appendix of the current document.
pub fn sections(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut doc = String::new();
    for item in s.split([',', ';']) {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        match item.find('§') {
            Some(at) => {
                let d = item[..at].trim();
                if !d.is_empty() {
                    doc = d.to_owned();
                }
                out.push((
                    doc.clone(),
                    format!("§{}", item[at..].trim_start_matches('§').trim()),
                ));
            }
            None if !doc.is_empty()
                && (item.starts_with("Appendix") || item.starts_with("Annex")) =>
            {
                out.push((doc.clone(), item.to_owned()));
            }
            None => {
                let mut words = item.splitn(3, ' ');
                doc = [words.next(), words.next()]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(" ");
                out.push((doc.clone(), words.next().unwrap_or("").trim().to_owned()));
            }
        }
    }
    out
}

/// Sort key: RFC 7143 first, then documents by name; sections by number.
fn key(doc: &str, sec: &str) -> (u8, String, Vec<u32>, String) {
    let rank = u8::from(doc != "RFC 7143");
    let nums = sec
        .trim_start_matches('§')
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(u32::MAX))
        .collect();
    (rank, doc.to_owned(), nums, sec.to_owned())
}

/// The Markdown document.
pub fn render(suite: &Suite) -> String {
    let mut rows: BTreeMap<(u8, String, Vec<u32>, String), Vec<String>> = BTreeMap::new();
    for c in &suite.cases {
        let all = if c.meta.profiles == Profiles::All {
            ", every profile"
        } else {
            ""
        };
        let cell = format!("`{}` ({}{all})", c.meta.id, c.meta.level);
        for (doc, sec) in sections(&c.meta.section) {
            rows.entry(key(&doc, &sec)).or_default().push(cell.clone());
        }
    }
    let n = suite.cases.len();
    let iscsi = suite
        .cases
        .iter()
        .filter(|c| c.meta.id.family == "iSCSI")
        .count();
    let mut s = String::new();
    s.push_str("# Conformance traceability: spec section → cases\n\n");
    s.push_str(
        "Generated from the built-in suite by\n`iesp-test conformance --traceability docs/conformance-traceability.md`;\n\
         do not edit by hand (`cargo test -p iesp-testsuite traceability` checks it is current).\n\n",
    );
    let _ = writeln!(
        s,
        "{n} cases ({iscsi} iSCSI-level, {} SCSI-level) cover {} sections.\n",
        n - iscsi,
        rows.len()
    );
    s.push_str("| Document | Section | Cases (level) |\n|---|---|---|\n");
    for ((_, doc, _, sec), cases) in &rows {
        let _ = writeln!(s, "| {doc} | {sec} | {} |", cases.join("<br>"));
    }
    s.push_str("\n## Cases per suite\n\n| Suite | Cases | MUST | SHOULD | MAY |\n|---|---:|---:|---:|---:|\n");
    for name in suite.suite_names() {
        let cs: Vec<_> = suite
            .cases
            .iter()
            .filter(|c| c.meta.id.suite_name() == name)
            .collect();
        let lv = |l: Level| cs.iter().filter(|c| c.meta.level == l).count();
        let _ = writeln!(
            s,
            "| {name} | {} | {} | {} | {} |",
            cs.len(),
            lv(Level::Must),
            lv(Level::Should),
            lv(Level::May)
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn section_strings_split() {
        assert_eq!(
            sections("RFC 7143 §11.8.4, §13.13"),
            vec![
                ("RFC 7143".into(), "§11.8.4".into()),
                ("RFC 7143".into(), "§13.13".into())
            ]
        );
        assert_eq!(
            sections("SPC-4 §6.6.1; SBC-4 §6.6.4"),
            vec![
                ("SPC-4".into(), "§6.6.1".into()),
                ("SBC-4".into(), "§6.6.4".into())
            ]
        );
        assert_eq!(
            sections("RFC 7143 Appendix C"),
            vec![("RFC 7143".into(), "Appendix C".into())]
        );
        assert!(key("RFC 7143", "§4.2.2.1") < key("RFC 7143", "§11.8"));
        assert!(key("RFC 7143", "§13.13") < key("SBC-4", "§5.1"));
    }

    /// The checked-in table is what the suite generates today.
    #[test]
    fn traceability_doc_is_current() {
        let suite = Suite::builtin().unwrap();
        let want = render(&suite);
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../docs/conformance-traceability.md");
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "{} is stale: regenerate it with `cargo run -p iesp-tools -- conformance --traceability docs/conformance-traceability.md`",
            path.display()
        );
    }
}
