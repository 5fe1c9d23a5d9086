//! `iesp-test`: iSCSI conformance and test toolkit.
//!
//! The command line follows the conventions of docs/cli.md, shared with
//! `iesp-target` through [`iesp_cli`]: results on stdout, progress and
//! logs on stderr, `-` for stdout in every output flag, one size and one
//! duration grammar, global `-v/-vv/-q`, `IESP_LOG`, the exit codes of
//! [`iesp_cli::exit`], and a clean stop with reports on SIGINT/SIGTERM
//! ([`signal`]).
//!
//! What each subcommand does is in the library, [`iesp_tools`] (see its
//! Layout); this file is the top-level command line, completions, man
//! pages and exit codes.

use iesp_tools::{bench, conformance, exit, output, plot, selftest, signal, verify};

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use iesp_cli::log::Verbosity;
use iesp_cli::units;

/// iSCSI conformance and test toolkit, with a fast, strict reference target.
#[derive(Parser, Debug)]
#[command(
    name = "iesp-test",
    version,
    about,
    long_about = None,
    propagate_version = true,
    after_help = top_after_help(),
)]
struct Cli {
    #[command(flatten)]
    verbosity: Verbosity,
    #[command(subcommand)]
    command: Command,
}

/// The top-level `--help` epilogue: conventions, then the exit codes.
fn top_after_help() -> String {
    format!(
        "\
Results go to stdout; progress and logs to stderr (IESP_LOG=debug for more).
Sizes: 512, 512B, 4k, 4KiB, 1.5G, 1T. Durations: 500ms, 3, 1s, 2m, 1h30m.
See docs/cli.md, or `iesp-test man --out DIR` for the manual pages.

{}",
        iesp_cli::exit::HELP
    )
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check the whole stack against the embedded reference target: discovery,
    /// login, and a write/read-back pass at several queue depths.
    Selftest(SelftestArgs),
    /// Write/read-verify a file, block device or iSCSI LUN: does it give
    /// back exactly what was written?
    Verify(Box<verify::cli::VerifyArgs>),
    /// Random SCSI operations against a per-block model (fsx for a LUN),
    /// with an op log, replay and automatic shrinking.
    Fsx(Box<iesp_tools::fsx::cli::FsxArgs>),
    /// Run the protocol-level conformance suite against a target:
    /// `iesp-test conformance iscsi://host/iqn/lun` (see --list).
    Conformance(Box<conformance::ConformanceArgs>),
    /// Measure random-read (or write) IOPS and latency over block sizes and
    /// queue depths: `iesp-test bench TARGET`, `iesp-test bench merge A.json B.json`.
    Bench(Box<bench::cli::BenchCommand>),
    /// Real initiators against a target: qemu's block driver, iPXE sanboot
    /// with iBFT checks, the Linux kernel initiator in a VM.
    Interop(Box<iesp_tools::interop::InteropArgs>),
    /// Draw PNG charts of bench results: `iesp-test plot INPUT… -o DIR`.
    Plot(plot::PlotArgs),
    /// Print a shell completion script to stdout.
    Completions(CompletionsArgs),
    /// Write the manual pages (iesp-test.1 and one per subcommand).
    Man(ManArgs),
}

#[derive(clap::Args, Debug)]
#[command(after_help = iesp_cli::exit::HELP)]
struct SelftestArgs {
    /// Size of the embedded target's RAM LUN (e.g. 64M, 1G).
    #[arg(long, default_value = "64M", value_parser = units::parse_size_nonzero)]
    size: u64,
    /// Logical block size of the LUN: a power of two from 512 to 64k.
    #[arg(long, default_value = "512", value_parser = units::parse_block_size)]
    block_size: u32,
    /// Queue depths for the write/read pass, comma-separated.
    #[arg(long = "qd", alias = "queue-depths", default_value = "1,8,32", value_delimiter = ',',
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    queue_depths: Vec<u32>,
    /// Bytes per command.
    #[arg(long, default_value = "64K", value_parser = units::parse_size_u32)]
    io_size: u32,
    /// Seed of the data pattern (from the OS when not given; printed first).
    #[arg(long)]
    seed: Option<u64>,
}

/// `iesp-test completions SHELL`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  iesp-test completions bash > /etc/bash_completion.d/iesp-test
  iesp-test completions zsh > \"${fpath[1]}/_iesp-test\"
  iesp-test completions fish > ~/.config/fish/completions/iesp-test.fish")]
struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

/// `iesp-test man [--out DIR]`.
#[derive(clap::Args, Debug)]
struct ManArgs {
    /// Write iesp-test.1, iesp-test-SUBCOMMAND.1 and iesp-target.1 into DIR (created if
    /// missing); without it, print iesp-test.1 to stdout.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

/// The clap command, built (globals propagated), for completions and man
/// pages.
fn command() -> clap::Command {
    let mut c = Cli::command();
    c.build();
    c
}

/// Writes the completion script for `shell`.
fn completions(shell: clap_complete::Shell, out: &mut dyn Write) {
    clap_complete::generate(shell, &mut Cli::command(), "iesp-test", out);
}

/// Writes iesp-test.1 and one page per subcommand into `dir`; returns the
/// paths written.
fn man_pages(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let top = command();
    let mut written = Vec::new();
    let mut page = |name: String, cmd: clap::Command| -> std::io::Result<()> {
        let mut buf = Vec::new();
        clap_mangen::Man::new(cmd).render(&mut buf)?;
        let path = dir.join(format!("{name}.1"));
        output::write_output(&path, &buf)?;
        written.push(path);
        Ok(())
    };
    for sub in top.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = format!("iesp-test-{}", sub.get_name());
        let mut cmd = sub.clone().name(name.clone());
        if let Some(v) = top.get_version() {
            cmd = cmd.version(v.to_owned());
        }
        page(name, cmd)?;
    }
    page("iesp-test".into(), top.clone())?;
    // The reference target ships beside the tool; its page comes from its
    // own clap command, so it cannot drift from its flags.
    page("iesp-target".into(), iesp_target::cli::command())?;
    Ok(written)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // With the embedded target in this process, the suite provokes its
    // warnings on purpose (refused logins, dropped connections): they are
    // the cases' subject, not news. -v or IESP_LOG still show them.
    let embedded = match &cli.command {
        Command::Selftest(_) => true,
        Command::Conformance(a) => a.embedded,
        _ => false,
    };
    let default = if embedded {
        "warn,iesp_target=error"
    } else {
        "warn"
    };
    if let Err(e) = iesp_cli::log::init(&cli.verbosity.filter(default)) {
        eprintln!("iesp-test: error: {e}");
        return ExitCode::from(exit::USAGE);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("iesp-test: error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::IO);
        }
    };
    let result = rt.block_on(async {
        signal::install()
            .map_err(|e| exit::io(anyhow::anyhow!("installing signal handlers: {e}")))?;
        run(cli).await
    });
    let _ = std::io::stdout().flush();
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    match (result, signal::received()) {
        (Ok(()), None) => ExitCode::SUCCESS,
        (r, Some(s)) => {
            if let Err(e) = r {
                eprintln!("iesp-test: {e:#}");
            }
            ExitCode::from(s.exit_code())
        }
        (Err(e), None) => {
            eprintln!("iesp-test: error: {e:#}");
            ExitCode::from(exit::code_of(&e))
        }
    }
}

/// Runs a future that does not watch for signals itself: a signal drops it
/// (the process then exits 130/143 with no verdict printed).
async fn unless_signalled(
    work: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    tokio::select! {
        r = work => r,
        s = signal::wait() => Err(anyhow::anyhow!("interrupted by {s}: no verdict")),
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let verbosity = cli.verbosity;
    match cli.command {
        Command::Selftest(a) => {
            let seed = iesp_cli::seed::resolve(a.seed, "iesp-test selftest");
            let opts = selftest::Options {
                size: a.size,
                block_size: a.block_size,
                queue_depths: a.queue_depths.iter().map(|&q| q as usize).collect(),
                io_size: a.io_size,
                seed,
            };
            unless_signalled(async { selftest::run(&opts).await.map(|_| ()) }).await
        }
        Command::Verify(mut a) => {
            if verbosity.quiet {
                a.progress = output::ProgressMode::Quiet;
            }
            verify::cli::run(*a).await
        }
        Command::Fsx(mut a) => {
            if verbosity.quiet {
                a.progress = output::ProgressMode::Quiet;
            }
            iesp_tools::fsx::cli::run(*a).await
        }
        Command::Conformance(a) => conformance::run(*a, verbosity).await,
        Command::Bench(a) => bench::cli::run(*a, verbosity.quiet).await,
        Command::Interop(a) => iesp_tools::interop::run(*a, verbosity.quiet).await,
        Command::Plot(a) => plot::run(&a),
        Command::Completions(a) => {
            let mut out = std::io::stdout().lock();
            completions(a.shell, &mut out);
            out.flush()
                .map_err(|e| exit::io(anyhow::anyhow!("writing to stdout: {e}")))
        }
        Command::Man(a) => match a.out {
            None => {
                let mut buf = Vec::new();
                clap_mangen::Man::new(command())
                    .render(&mut buf)
                    .and_then(|()| std::io::stdout().lock().write_all(&buf))
                    .map_err(|e| exit::io(anyhow::anyhow!("writing to stdout: {e}")))
            }
            Some(dir) => {
                let pages = man_pages(&dir)
                    .map_err(|e| exit::usage(format!("--out {}: {e}", dir.display())))?;
                println!("wrote {} manual pages to {}", pages.len(), dir.display());
                Ok(())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    //! The command line as clap sees it: every flag that takes a size or a
    //! duration accepts the whole grammar and refuses the same mistakes;
    //! queue depth is `--qd`; completions and man pages exist.

    use super::*;
    use std::time::Duration;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("iesp-test").chain(args.iter().copied()))
    }

    /// `(subcommand args before the flag, flag, trailing positional args)`
    /// for every size flag, and how to read its value back.
    type Get = fn(&Cli) -> u64;

    fn verify_args(c: &Cli) -> &verify::cli::VerifyArgs {
        match &c.command {
            Command::Verify(v) => v,
            other => panic!("not verify: {other:?}"),
        }
    }

    fn selftest_args(c: &Cli) -> &SelftestArgs {
        match &c.command {
            Command::Selftest(s) => s,
            other => panic!("not selftest: {other:?}"),
        }
    }

    fn conformance_args(c: &Cli) -> &conformance::ConformanceArgs {
        match &c.command {
            Command::Conformance(a) => a,
            other => panic!("not conformance: {other:?}"),
        }
    }

    fn size_flags() -> Vec<(&'static [&'static str], &'static str, Get)> {
        vec![
            (&["verify", "f"], "--offset", |c| verify_args(c).offset),
            (&["verify", "f"], "--length", |c| {
                verify_args(c).length.unwrap_or(0)
            }),
            (&["verify", "f"], "--bytes", |c| {
                verify_args(c).bytes.unwrap_or(0)
            }),
            (&["verify", "f"], "--io-size", |c| verify_args(c).io_size),
            (&["verify", "f"], "--size", |c| {
                verify_args(c).size.unwrap_or(0)
            }),
            (&["selftest"], "--size", |c| selftest_args(c).size),
            (&["selftest"], "--io-size", |c| {
                u64::from(selftest_args(c).io_size)
            }),
        ]
    }

    type GetD = fn(&Cli) -> Duration;

    fn duration_flags() -> Vec<(&'static [&'static str], &'static str, GetD)> {
        vec![
            (&["verify", "f"], "--duration", |c| {
                verify_args(c).duration.unwrap_or_default()
            }),
            (&["verify", "f"], "--progress-interval", |c| {
                verify_args(c).progress_interval
            }),
            (&["conformance", "--embedded"], "--timeout", |c| {
                conformance_args(c).timeout
            }),
            (&["conformance", "--embedded"], "--silence", |c| {
                conformance_args(c).silence
            }),
            (&["conformance", "--embedded"], "--case-timeout", |c| {
                conformance_args(c).case_timeout
            }),
        ]
    }

    #[test]
    fn every_size_flag_takes_the_size_grammar() {
        // 1.5G is not a whole number of 64 KiB chunks for selftest, but
        // clap only parses here: the grammar is what is under test.
        let ok: [(&str, u64); 8] = [
            ("512", 512),
            ("512B", 512),
            ("512b", 512),
            ("4k", 4096),
            ("4KiB", 4096),
            ("64M", 64 << 20),
            ("1.5G", 3 << 29),
            ("1T", 1 << 40),
        ];
        for (pre, flag, get) in size_flags() {
            for (v, want) in ok {
                // selftest's --io-size is 32-bit: 1T does not fit.
                if want > u64::from(u32::MAX) && pre == ["selftest"] && flag == "--io-size" {
                    assert!(parse(&[pre, &[flag, v]].concat()).is_err());
                    continue;
                }
                let args = [pre, &[flag, v]].concat();
                let c = parse(&args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
                assert_eq!(get(&c), want, "{args:?}");
            }
            for bad in ["4x", "-1", "", "k", "1.5.5G", "99999999999T"] {
                let args = [pre, &[flag, bad]].concat();
                let e = parse(&args)
                    .err()
                    .unwrap_or_else(|| panic!("{args:?} was accepted"));
                // `-1` reads as an unknown flag to clap; refused either way.
                if bad != "-1" {
                    assert_eq!(
                        e.kind(),
                        clap::error::ErrorKind::ValueValidation,
                        "{args:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn block_size_flags() {
        for (pre, get) in [
            (
                &["verify", "f"][..],
                (|c: &Cli| verify_args(c).open.block_size.unwrap_or(0)) as fn(&Cli) -> u32,
            ),
            (&["selftest"][..], |c: &Cli| selftest_args(c).block_size),
        ] {
            for (v, want) in [("512", 512), ("4k", 4096), ("4KiB", 4096), ("64KiB", 65536)] {
                let c = parse(&[pre, &["--block-size", v]].concat()).unwrap();
                assert_eq!(get(&c), want);
            }
            for bad in ["1000", "256", "128k", "4x"] {
                assert!(
                    parse(&[pre, &["--block-size", bad]].concat()).is_err(),
                    "{bad}"
                );
            }
        }
    }

    #[test]
    fn every_duration_flag_takes_the_duration_grammar() {
        let ok = [
            ("500ms", Duration::from_millis(500)),
            ("3", Duration::from_secs(3)),
            ("0.5", Duration::from_millis(500)),
            ("1s", Duration::from_secs(1)),
            ("2m", Duration::from_secs(120)),
            ("1h30m", Duration::from_secs(5400)),
        ];
        for (pre, flag, get) in duration_flags() {
            for (v, want) in ok {
                let args = [pre, &[flag, v]].concat();
                let c = parse(&args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
                assert_eq!(get(&c), want, "{args:?}");
            }
            for bad in ["5x", "-1s", "", "s", "0"] {
                let args = [pre, &[flag, bad]].concat();
                assert!(parse(&args).is_err(), "{args:?} was accepted");
            }
        }
    }

    #[test]
    fn queue_depth_is_qd_and_q_is_quiet() {
        let c = parse(&["verify", "--qd", "16", "f"]).unwrap();
        assert_eq!(verify_args(&c).queue_depth, 16);
        assert!(!c.verbosity.quiet);
        let c = parse(&["verify", "--queue-depth", "4", "f"]).unwrap();
        assert_eq!(verify_args(&c).queue_depth, 4);
        let c = parse(&["-q", "verify", "f"]).unwrap();
        assert!(c.verbosity.quiet);
        let c = parse(&["verify", "f", "-q"]).unwrap();
        assert!(c.verbosity.quiet);
        assert!(parse(&["verify", "-q", "16", "f"]).is_err());
        let c = parse(&["selftest", "--qd", "1,4"]).unwrap();
        assert_eq!(selftest_args(&c).queue_depths, vec![1, 4]);
        let c = parse(&["-vv", "conformance", "--list"]).unwrap();
        assert_eq!(c.verbosity.verbose, 2);
    }

    #[test]
    fn the_command_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn help_shows_the_exit_codes() {
        let mut c = command();
        let top = c.render_long_help().to_string();
        assert!(top.contains("143  terminated (SIGTERM)"), "{top}");
        for sub in ["selftest", "verify", "conformance"] {
            let mut s = c
                .find_subcommand_mut(sub)
                .unwrap_or_else(|| panic!("{sub}"))
                .clone();
            let help = s.render_long_help().to_string();
            assert!(help.contains("130"), "{sub}: {help}");
        }
    }

    #[test]
    fn completions_for_every_shell_name_the_subcommands() {
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let mut out = Vec::new();
            completions(shell, &mut out);
            let text = String::from_utf8(out).unwrap();
            for word in ["verify", "conformance", "selftest", "qd", "json", "connect"] {
                assert!(text.contains(word), "{shell}: no {word}");
            }
        }
    }

    #[test]
    fn man_pages_for_every_subcommand() {
        let dir = tempfile::tempdir().unwrap();
        let pages = man_pages(dir.path()).unwrap();
        let names: Vec<String> = pages
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for want in [
            "iesp-test.1",
            "iesp-test-verify.1",
            "iesp-test-conformance.1",
            "iesp-test-selftest.1",
            "iesp-test-completions.1",
            "iesp-test-man.1",
            "iesp-target.1",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
        }
        let verify = std::fs::read_to_string(dir.path().join("iesp-test-verify.1")).unwrap();
        assert!(verify.contains(".TH iesp-test-verify"), "{verify}");
        assert!(verify.contains("qd"), "{verify}");
        let target = std::fs::read_to_string(dir.path().join("iesp-target.1")).unwrap();
        assert!(target.contains(".TH iesp-target"), "{target}");
        assert!(target.contains("nop"), "{target}");
    }
}
