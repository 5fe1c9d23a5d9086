//! The per-step report every interop check produces: a progress line on
//! stderr as each phase ends, a summary on stdout, an optional JSON
//! document (`iesp-test/interop/1`, docs/schemas/interop.schema.json).

use std::time::{Duration, Instant};

use serde::Serialize;

/// The outcome of one phase.
#[derive(Clone, Debug, Serialize)]
pub struct Step {
    pub name: String,
    pub ok: bool,
    pub seconds: f64,
    /// What the step saw (a size, a hash, an IQN) or why it failed.
    pub detail: String,
}

/// A check's report, also the body of its JSON document.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// `qemu-img`, `ipxe` or `linux`.
    pub check: String,
    /// The target, password masked.
    pub url: String,
    pub passed: bool,
    pub seconds: f64,
    pub steps: Vec<Step>,
    /// The end of the guest's console when a VM step failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub console_tail: Option<String>,
    #[serde(skip)]
    started: Option<Instant>,
    #[serde(skip)]
    quiet: bool,
}

impl Report {
    pub fn new(check: &str, url: String, quiet: bool) -> Report {
        Report {
            check: check.to_owned(),
            url,
            passed: true,
            seconds: 0.0,
            steps: Vec::new(),
            console_tail: None,
            started: Some(Instant::now()),
            quiet,
        }
    }

    /// Records a step that took `took`, and prints its progress line.
    pub fn step(&mut self, name: &str, took: Duration, result: Result<String, String>) -> bool {
        let ok = result.is_ok();
        let detail = result.unwrap_or_else(|e| e);
        if !self.quiet {
            eprintln!(
                "interop {}: {name}: {} ({:.1} s){}",
                self.check,
                if ok { "ok" } else { "FAILED" },
                took.as_secs_f64(),
                if detail.is_empty() {
                    String::new()
                } else {
                    format!(": {}", first_line(&detail))
                }
            );
        }
        self.passed &= ok;
        self.steps.push(Step {
            name: name.to_owned(),
            ok,
            seconds: took.as_secs_f64(),
            detail,
        });
        ok
    }

    /// Runs `f` as step `name`.
    pub fn run(&mut self, name: &str, f: impl FnOnce() -> Result<String, String>) -> bool {
        let t = Instant::now();
        let r = f();
        self.step(name, t.elapsed(), r)
    }

    /// Stops the clock.
    pub fn finish(&mut self) {
        if let Some(t) = self.started {
            self.seconds = t.elapsed().as_secs_f64();
        }
    }

    /// The human summary.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "interop {} {}: {} in {:.1} s\n",
            self.check,
            self.url,
            if self.passed { "PASS" } else { "FAIL" },
            self.seconds
        );
        for st in &self.steps {
            s.push_str(&format!(
                "  {:<4} {:<24} {:>6.1} s  {}\n",
                if st.ok { "ok" } else { "FAIL" },
                st.name,
                st.seconds,
                first_line(&st.detail)
            ));
        }
        if let Some(t) = &self.console_tail {
            s.push_str("--- console tail ---\n");
            s.push_str(t);
            s.push('\n');
        }
        s
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}
