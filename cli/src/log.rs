//! Logging for both binaries: one environment variable, one verbosity
//! flag set, colour only where a person reads it.
//!
//! - [`ENV`] (`IESP_LOG`) takes a `tracing` filter (`debug`,
//!   `iesp_target=trace,info`); when set it wins over `-v/-q`.
//! - `-v` is debug, `-vv` trace, `-q` errors only; the default is the
//!   binary's own (`warn` for iesp-test, whose results are its output;
//!   `info` for iesp-target, whose log is its output).
//! - Logs go to stderr. ANSI colour is used only when stderr is a terminal
//!   and `NO_COLOR` is unset or empty (<https://no-color.org>), so a log
//!   redirected to a file holds no escape bytes.

use std::io::IsTerminal;

/// The one log environment variable.
pub const ENV: &str = "IESP_LOG";

/// `-v/-vv/-q`, flattened into each binary's top-level arguments.
#[derive(clap::Args, Debug, Clone, Copy, Default)]
pub struct Verbosity {
    /// More log output on stderr: -v debug, -vv trace (IESP_LOG overrides).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Less output: errors only on stderr, no progress.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

impl Verbosity {
    /// The filter these flags ask for, given the binary's default level.
    pub fn filter(&self, default: &str) -> String {
        if self.quiet {
            return "error".into();
        }
        match self.verbose {
            0 => default.into(),
            1 => "debug".into(),
            _ => "trace".into(),
        }
    }
}

/// Whether output to stderr may carry ANSI escapes.
pub fn color_on_stderr() -> bool {
    use_color(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    )
}

/// `NO_COLOR` set to anything but the empty string.
pub fn no_color() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

/// The colour decision itself: only on a terminal, and never when
/// `NO_COLOR` (given as its value, if set) is non-empty.
pub fn use_color(is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Installs the global subscriber: [`ENV`] if set, else `fallback` (from
/// [`Verbosity::filter`] or a `--log` flag). An invalid filter is an error
/// naming where it came from.
pub fn init(fallback: &str) -> Result<(), String> {
    let (filter, source) = match std::env::var(ENV) {
        Ok(v) if !v.trim().is_empty() => (v, ENV),
        _ => (fallback.to_owned(), "the log level"),
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .map_err(|e| format!("invalid {source} `{filter}`: {e}"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(color_on_stderr())
        .try_init()
        .map_err(|e| format!("cannot install the logger: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        v: Verbosity,
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(use_color(true, None));
        assert!(use_color(true, Some(OsStr::new(""))));
        assert!(!use_color(true, Some(OsStr::new("1"))));
        assert!(!use_color(false, None));
        assert!(!use_color(false, Some(OsStr::new("1"))));
    }

    #[test]
    fn verbosity_maps_to_filters() {
        let f = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied()))
                .map(|c| c.v.filter("warn"))
        };
        assert_eq!(f(&[]).unwrap(), "warn");
        assert_eq!(f(&["-v"]).unwrap(), "debug");
        assert_eq!(f(&["-vv"]).unwrap(), "trace");
        assert_eq!(f(&["-vvv"]).unwrap(), "trace");
        assert_eq!(f(&["-q"]).unwrap(), "error");
        assert!(f(&["-q", "-v"]).is_err());
    }
}
