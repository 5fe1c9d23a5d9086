//! The TARGET flags verify, fsx and bench share: how a file, block device
//! or iSCSI LUN is opened (docs/cli.md "iSCSI connections").
//!
//! One clap struct, flattened into each command, so the three spell, parse
//! and document `--block-size`, `--buffered`, `--connect-timeout`,
//! `--strict`, `--digests` and `--initiator-name` the same way, and one
//! place turns them into [`OpenOptions`].

use std::time::Duration;

use clap::Args;
use iesp_cli::units;

use crate::device::{DEFAULT_INITIATOR, OpenOptions};

/// How to open TARGET.
#[derive(Args, Clone, Debug)]
pub struct TargetArgs {
    /// Block size of a regular file (default 4096); devices and LUNs
    /// report their own.
    #[arg(long, value_parser = units::parse_block_size)]
    pub block_size: Option<u32>,
    /// Use the page cache instead of O_DIRECT for local targets.
    #[arg(long)]
    pub buffered: bool,
    /// iSCSI: how long a TCP connect may take (a portal that never answers
    /// fails with exit 3 after this).
    #[arg(long, default_value = "10s", value_parser = units::parse_duration_nonzero)]
    pub connect_timeout: Duration,
    /// iSCSI: fail (exit 3) when the target answers a login key outside
    /// the legal range, instead of clamping it with a warning.
    #[arg(long)]
    pub strict: bool,
    /// iSCSI: ask for CRC32C header and data digests (as the URL keys
    /// header_digest=crc32c&data_digest=crc32c do).
    #[arg(long)]
    pub digests: bool,
    /// iSCSI initiator name.
    #[arg(long, default_value = DEFAULT_INITIATOR)]
    pub initiator_name: String,
}

impl TargetArgs {
    /// The open options: writing or not, `--force`, and the size of a
    /// regular file to create when missing.
    pub fn open_options(&self, write: bool, force: bool, create_size: Option<u64>) -> OpenOptions {
        OpenOptions {
            write,
            force,
            file_block_size: self.block_size,
            create_size,
            direct: !self.buffered,
            initiator_name: self.initiator_name.clone(),
            connect_timeout: self.connect_timeout,
            strict_negotiation: self.strict,
            poll_us: 0,
        }
    }

    /// TARGET as opened: with `--digests`, the URL asks for both digests.
    /// Err (a usage message) for `--digests` on a target that is not
    /// `iscsi://`.
    pub fn target(&self, target: &str) -> Result<String, String> {
        if !self.digests {
            return Ok(target.to_owned());
        }
        if !target.starts_with("iscsi://") {
            return Err(format!("--digests is for iscsi:// targets, not {target}"));
        }
        Ok(with_digests(target))
    }
}

/// The URL with `header_digest=crc32c&data_digest=crc32c` in its query
/// (replacing the URL's own digest keys).
fn with_digests(url: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut keys: Vec<&str> = query
        .split('&')
        .filter(|k| {
            !k.is_empty() && !k.starts_with("header_digest=") && !k.starts_with("data_digest=")
        })
        .collect();
    keys.extend(["header_digest=crc32c", "data_digest=crc32c"]);
    format!("{base}?{}", keys.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        t: TargetArgs,
    }

    fn args(a: &[&str]) -> TargetArgs {
        Cli::try_parse_from(std::iter::once("x").chain(a.iter().copied()))
            .expect("parses")
            .t
    }

    #[test]
    fn digests_replace_the_urls_own_keys() {
        let t = args(&["--digests"]);
        assert_eq!(
            t.target("iscsi://h/iqn.x:t/0?header_digest=none&foo=1")
                .unwrap(),
            "iscsi://h/iqn.x:t/0?foo=1&header_digest=crc32c&data_digest=crc32c"
        );
        assert_eq!(
            t.target("iscsi://h/iqn.x:t/0").unwrap(),
            "iscsi://h/iqn.x:t/0?header_digest=crc32c&data_digest=crc32c"
        );
        assert!(t.target("/tmp/x.img").unwrap_err().contains("iscsi://"));
        assert_eq!(args(&[]).target("/tmp/x.img").unwrap(), "/tmp/x.img");
    }

    #[test]
    fn flags_become_open_options() {
        let o = args(&[
            "--buffered",
            "--strict",
            "--block-size",
            "512",
            "--connect-timeout",
            "3s",
        ])
        .open_options(true, false, Some(1 << 20));
        assert!(o.write && !o.force && !o.direct && o.strict_negotiation);
        assert_eq!(o.file_block_size, Some(512));
        assert_eq!(o.create_size, Some(1 << 20));
        assert_eq!(o.connect_timeout, Duration::from_secs(3));
        assert_eq!(o.initiator_name, DEFAULT_INITIATOR);
    }
}
