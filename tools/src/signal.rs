//! SIGINT and SIGTERM: stop cleanly, report, exit 130 or 143.
//!
//! [`install`] replaces the default (kill the process) with a flag every
//! long-running command watches: verify stops issuing commands, lets the
//! ones in flight complete, and writes its summary, JSON report and state
//! file marked `"interrupted": true`; conformance stops after the case in
//! progress and writes its reports likewise. The process then exits with
//! 128 + the signal number ([`Signal::exit_code`]). A second signal
//! while stopping exits at once with the same code.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;

/// A stop request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    Int,
    Term,
}

impl Signal {
    /// `SIGINT` / `SIGTERM`.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Int => "SIGINT",
            Signal::Term => "SIGTERM",
        }
    }

    /// 130 / 143 (see [`iesp_cli::exit`]).
    pub fn exit_code(self) -> u8 {
        match self {
            Signal::Int => iesp_cli::exit::SIGINT,
            Signal::Term => iesp_cli::exit::SIGTERM,
        }
    }
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

static STATE: OnceLock<watch::Sender<Option<Signal>>> = OnceLock::new();

/// Set once STATE holds a signal: [`received`] is polled before every
/// command (bench, verify), and a relaxed load is cheaper than the watch
/// channel's lock.
static RECEIVED: AtomicBool = AtomicBool::new(false);

fn state() -> &'static watch::Sender<Option<Signal>> {
    STATE.get_or_init(|| watch::channel(None).0)
}

/// Installs the handlers; call once, inside the runtime, before any I/O.
pub fn install() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    tokio::spawn(async move {
        loop {
            let s = tokio::select! {
                _ = int.recv() => Signal::Int,
                _ = term.recv() => Signal::Term,
            };
            if let Some(first) = *state().borrow() {
                eprintln!("iesp-test: {s} again while stopping: exiting now");
                std::process::exit(i32::from(first.exit_code()));
            }
            eprintln!(
                "iesp-test: {s}: stopping (commands in flight complete, reports are written; send it again to exit now)"
            );
            state().send_replace(Some(s));
            RECEIVED.store(true, Ordering::Release);
        }
    });
    Ok(())
}

/// The first signal received, if any.
pub fn received() -> Option<Signal> {
    if !RECEIVED.load(Ordering::Acquire) {
        return None;
    }
    *state().borrow()
}

/// Waits for a signal (returns at once if one was received already).
pub async fn wait() -> Signal {
    let mut rx = state().subscribe();
    loop {
        if let Some(s) = *rx.borrow_and_update() {
            return s;
        }
        if rx.changed().await.is_err() {
            // The sender is static and never dropped.
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        assert_eq!(Signal::Int.exit_code(), 130);
        assert_eq!(Signal::Term.exit_code(), 143);
        assert_eq!(Signal::Term.to_string(), "SIGTERM");
    }
}
