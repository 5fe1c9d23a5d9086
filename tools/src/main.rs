//! `iesp-test`: iSCSI conformance and test toolkit.
//!
//! The command line only; what each subcommand does is in the library,
//! [`iesp_tools`] (see its Layout).

use iesp_tools::{conformance, exit, selftest, verify};

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// iSCSI conformance and test toolkit, with a fast, strict reference target.
#[derive(Parser, Debug)]
#[command(name = "iesp-test", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check the whole stack against the embedded reference target: discovery,
    /// login, and a write/read-back pass at several queue depths.
    Selftest(SelftestArgs),
    /// Write/read-verify a file, block device or iSCSI LUN: does it give
    /// back exactly what was written?
    Verify(Box<verify::cli::VerifyArgs>),
    /// Run the protocol-level conformance suite against a target:
    /// `iesp-test conformance iscsi://host/iqn/lun` (see --list).
    Conformance(Box<conformance::ConformanceArgs>),
}

#[derive(clap::Args, Debug)]
struct SelftestArgs {
    /// Size of the embedded target's RAM LUN (e.g. 64M, 1G).
    #[arg(long, default_value = "64M", value_parser = parse_size)]
    size: u64,
    /// Logical block size of the LUN: 512 or 4096.
    #[arg(long, default_value_t = 512, value_parser = parse_block_size)]
    block_size: u32,
    /// Queue depths for the write/read pass, comma-separated.
    #[arg(long, default_value = "1,8,32", value_delimiter = ',')]
    queue_depths: Vec<usize>,
    /// Bytes per command.
    #[arg(long, default_value = "64K", value_parser = parse_size_u32)]
    io_size: u32,
    /// Seed of the data pattern (random when not given; printed first).
    #[arg(long)]
    seed: Option<u64>,
}

fn parse_size(s: &str) -> Result<u64, String> {
    iesp_target::config::parse_size(s)
}

fn parse_size_u32(s: &str) -> Result<u32, String> {
    let n = parse_size(s)?;
    u32::try_from(n).map_err(|_| format!("{s} is too large"))
}

fn parse_block_size(s: &str) -> Result<u32, String> {
    iesp_target::config::parse_block_size(s)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("IESP_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("iesp-test: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILED);
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Selftest(a) => {
                let opts = selftest::Options {
                    size: a.size,
                    block_size: a.block_size,
                    queue_depths: a.queue_depths,
                    io_size: a.io_size,
                    seed: a.seed.unwrap_or_else(rand::random),
                };
                selftest::run(&opts).await.map(|_| ())
            }
            Command::Verify(a) => verify::cli::run(*a).await,
            Command::Conformance(a) => conformance::run(*a).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("iesp-test: {e:#}");
            ExitCode::from(exit::code_of(&e))
        }
    }
}
