//! Embeds the built-in case scripts (`cases/**/*.toml`) in the library, so
//! `iesp-test conformance` carries its suite without files next to it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(&p, out);
        } else if p.extension().is_some_and(|x| x == "toml") {
            out.push(p);
        }
    }
}

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let cases = root.join("cases");
    println!("cargo:rerun-if-changed={}", cases.display());
    let mut files = Vec::new();
    collect(&cases, &mut files);
    files.sort();
    let mut src = String::from(
        "/// Built-in case scripts: path under `testsuite/cases/` and contents.\npub const SCRIPTS: &[(&str, &str)] = &[\n",
    );
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
        let rel = f
            .strip_prefix(&cases)
            .expect("under cases/")
            .to_string_lossy()
            .replace('\\', "/");
        writeln!(
            src,
            "    ({rel:?}, include_str!({:?})),",
            f.display().to_string()
        )
        .expect("write to a String");
    }
    // New files in a subdirectory change that directory's mtime.
    for d in std::fs::read_dir(&cases).into_iter().flatten().flatten() {
        if d.path().is_dir() {
            println!("cargo:rerun-if-changed={}", d.path().display());
        }
    }
    src.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("builtin_scripts.rs");
    std::fs::write(out, src).expect("write builtin_scripts.rs");
}
