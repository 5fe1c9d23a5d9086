//! Exit codes, the same for every subcommand of both binaries (docs/cli.md,
//! README "Exit codes"):
//!
//! | code | meaning |
//! | ---: | --- |
//! | 0 | pass: the check ran to the end and found nothing wrong |
//! | 1 | data or conformance failure: the check ran and found a defect |
//! | 2 | usage: bad command line, bad configuration, bad output path |
//! | 3 | I/O or connection error: the check could not run to a verdict |
//! | 130 | interrupted by SIGINT (128 + 2) |
//! | 143 | terminated by SIGTERM (128 + 15) |

/// The check ran and found nothing wrong.
pub const PASS: u8 = 0;
/// The check ran and found a data or conformance defect.
pub const FAILED: u8 = 1;
/// Bad command line, configuration or output path (clap uses 2 as well).
pub const USAGE: u8 = 2;
/// An I/O or connection error kept the check from reaching a verdict.
pub const IO: u8 = 3;
/// Stopped by SIGINT.
pub const SIGINT: u8 = 130;
/// Stopped by SIGTERM.
pub const SIGTERM: u8 = 143;

/// The table above, for `--help` texts (`after_help`).
pub const HELP: &str = "\
Exit status:
  0    pass
  1    data or conformance failure
  2    usage error (command line, configuration, output path)
  3    I/O or connection error
  130  interrupted (SIGINT)
  143  terminated (SIGTERM)";
