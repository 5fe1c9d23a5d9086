//! `iesp-test interop`: real initiators as test drivers against any target.
//!
//! - [`qemu_img`] — qemu's block driver (libiscsi): `qemu-img info`,
//!   `convert` in and out with a sha256 match, `compare`, `qemu-io`
//!   patterns at both ends of the LUN and a flush, with a negative control.
//! - [`ipxe`] — iPXE `sanboot` in a VM from a boot sector
//!   ([`bootsector`]) that checks the iBFT iPXE publishes.
//! - [`linux`] — the Linux kernel initiator (`iscsistart`) in a VM booted
//!   from an initramfs ([`initramfs`]) that runs `iesp-test verify`, `dd`
//!   with O_DIRECT, `mkfs.ext4` and `e2fsck` on the LUN.
//!
//! Shared: [`assets`] (the Debian packages, fetched once into a cache),
//! [`qemu`] (running the unpacked qemu, VMs with a watched serial console),
//! [`relay`] (the per-connection relay qemu's `guestfwd` starts),
//! [`report`] (per-step progress, summary, JSON).
//!
//! Every check writes to the LUN, so each needs `--write`. Exit codes:
//! 0 all steps passed, 1 a step failed, 2 usage, 3 the check could not run
//! (a missing asset, a program that does not start).

pub mod assets;
pub mod bootsector;
pub mod initramfs;
pub mod ipxe;
pub mod linux;
pub mod qemu;
pub mod qemu_img;
pub mod relay;
pub mod report;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::Subcommand;
use iesp_cli::units;
use iesp_initiator::url::IscsiUrl;

use crate::exit;

/// The JSON document's name and version.
pub const OUTPUT: &str = "interop";
pub const VERSION: u32 = 1;

/// `iesp-test interop …`.
#[derive(clap::Args, Debug)]
#[command(after_help = iesp_cli::exit::HELP)]
pub struct InteropArgs {
    #[command(subcommand)]
    pub command: InteropCommand,
}

#[derive(Subcommand, Debug)]
pub enum InteropCommand {
    /// qemu's iSCSI block driver: info, convert in/out with a sha256 match,
    /// compare, qemu-io patterns at both ends, flush, and a wrong-pattern
    /// control.
    QemuImg(CommonArgs),
    /// iPXE sanboot in a VM: a boot sector checks the iBFT (initiator IQN,
    /// target IQN, address, port) against the URL.
    Ipxe(IpxeArgs),
    /// The Linux kernel initiator (iscsistart) in a VM: verify --write and
    /// --check, dd O_DIRECT, mkfs.ext4 + e2fsck on the LUN.
    Linux(LinuxArgs),
    /// Download and unpack the Debian packages the checks use (idempotent).
    Fetch(FetchArgs),
    /// Internal: copy stdin/stdout to a TCP address (qemu's guestfwd relay).
    #[command(hide = true)]
    Relay(RelayArgs),
}

/// Flags every check takes.
#[derive(clap::Args, Debug, Clone)]
pub struct CommonArgs {
    /// The LUN: iscsi://host[:port]/target-iqn/lun (its contents are destroyed).
    pub url: String,
    /// Allow writing to the LUN (required: every check writes).
    #[arg(long)]
    pub write: bool,
    /// Asset cache directory (default $IESP_CACHE, else ~/.cache/iesp-test).
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Download missing assets first (as `iesp-test interop fetch`).
    #[arg(long)]
    pub fetch: bool,
    /// Write the report as JSON (iesp-test/interop/1) to PATH (`-` = stdout).
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// How long a VM may take to reach each marker on its console.
    #[arg(long, default_value = "60s", value_parser = units::parse_duration_nonzero)]
    pub timeout: Duration,
}

/// The NIC iPXE boots from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Nic {
    E1000,
    Virtio,
}

/// `iesp-test interop ipxe`.
#[derive(clap::Args, Debug, Clone)]
pub struct IpxeArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// The emulated network card.
    #[arg(long, value_enum, default_value = "e1000")]
    pub nic: Nic,
    /// The initiator IQN iPXE logs in with (and the iBFT must name).
    #[arg(long, default_value = "iqn.2010-04.org.ipxe:iesp-test")]
    pub initiator_iqn: String,
    /// Negative control: do not write the boot sector (the check must fail
    /// with "no marker").
    #[arg(long, hide = true)]
    pub skip_boot_sector: bool,
}

/// `iesp-test interop linux`.
#[derive(clap::Args, Debug, Clone)]
pub struct LinuxArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// The initiator IQN iscsistart logs in with.
    #[arg(long, default_value = "iqn.2026-11.org.iesp-test:linux-guest")]
    pub initiator_iqn: String,
    /// Bytes the guest's verify writes and checks (slirp is slow: keep it small).
    #[arg(long, default_value = "4M", value_parser = units::parse_size_nonzero)]
    pub bytes: u64,
    /// The iesp-test binary put in the guest (default: this one, with the
    /// shared libraries it links; a static build needs none).
    #[arg(long, value_name = "PATH")]
    pub guest_tool: Option<PathBuf>,
    /// Seed of the guest's verify data (printed; from the OS when not given).
    #[arg(long)]
    pub seed: Option<u64>,
}

/// `iesp-test interop fetch`.
#[derive(clap::Args, Debug, Clone)]
pub struct FetchArgs {
    /// Asset cache directory (default $IESP_CACHE, else ~/.cache/iesp-test).
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Only the qemu set (enough for qemu-img and ipxe), not the Linux guest.
    #[arg(long)]
    pub qemu_only: bool,
}

/// `iesp-test interop relay ADDR`.
#[derive(clap::Args, Debug, Clone)]
pub struct RelayArgs {
    /// host:port to connect to.
    pub addr: SocketAddr,
}

/// The parsed target of a check.
#[derive(Clone, Debug)]
pub struct Target {
    pub url: IscsiUrl,
    /// The URL as qemu / libiscsi take it (password included).
    pub raw: String,
    /// The address the relay connects to.
    pub addr: SocketAddr,
    pub iqn: String,
    pub lun: u16,
}

impl Target {
    pub fn parse(s: &str) -> anyhow::Result<Target> {
        let url = IscsiUrl::from_str(s).map_err(|e| exit::usage(format!("{s}: {e}")))?;
        let (Some(iqn), Some(lun)) = (url.target_name().map(str::to_owned), url.lun()) else {
            return Err(exit::usage(format!(
                "{s}: a discovery URL; the checks need iscsi://host[:port]/target-iqn/lun"
            )));
        };
        let addr = (url.host.as_str(), url.port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| exit::usage(format!("{s}: cannot resolve host {}", url.host)))?;
        Ok(Target {
            raw: url.to_string_with_password(),
            url,
            addr,
            iqn,
            lun,
        })
    }
}

fn cache_of(dir: &Option<PathBuf>) -> assets::Cache {
    assets::Cache::new(&dir.clone().unwrap_or_else(assets::default_cache_dir))
}

/// Fetches `sets` into `cache` with a line per set on stderr.
fn fetch_sets(cache: &assets::Cache, sets: &[assets::Set], quiet: bool) -> anyhow::Result<()> {
    for &set in sets {
        let f = assets::fetch(cache, set).map_err(exit::io)?;
        if !quiet {
            if f.downloaded {
                eprintln!(
                    "interop fetch: {} packages downloaded and unpacked into {} in {:.1} s",
                    set.name(),
                    cache.root(set).display(),
                    f.seconds
                );
            } else {
                eprintln!(
                    "interop fetch: {} packages already in {}",
                    set.name(),
                    cache.root(set).display()
                );
            }
        }
    }
    Ok(())
}

/// Runs `iesp-test interop …`.
pub async fn run(args: InteropArgs, quiet: bool) -> anyhow::Result<()> {
    match args.command {
        InteropCommand::Relay(r) => relay::run(r.addr),
        InteropCommand::Fetch(f) => {
            let cache = cache_of(&f.cache);
            let sets: &[assets::Set] = if f.qemu_only {
                &[assets::Set::Qemu]
            } else {
                &[assets::Set::Qemu, assets::Set::Guest]
            };
            tokio::task::spawn_blocking({
                let cache = cache.clone();
                let sets = sets.to_vec();
                move || fetch_sets(&cache, &sets, quiet)
            })
            .await??;
            println!("interop assets ready in {}", cache.dir().display());
            Ok(())
        }
        InteropCommand::QemuImg(c) => {
            let ctx = Context::new(&c, "qemu-img", &[assets::Set::Qemu], quiet).await?;
            let json = c.json.clone();
            let report = tokio::task::spawn_blocking(move || qemu_img::check(&ctx)).await??;
            finish(report, &json)
        }
        InteropCommand::Ipxe(a) => {
            let ctx = Context::new(&a.common, "ipxe", &[assets::Set::Qemu], quiet).await?;
            let report = ipxe::check(&ctx, &a).await?;
            finish(report, &a.common.json)
        }
        InteropCommand::Linux(a) => {
            let ctx = Context::new(
                &a.common,
                "linux",
                &[assets::Set::Qemu, assets::Set::Guest],
                quiet,
            )
            .await?;
            let report = linux::check(&ctx, &a).await?;
            finish(report, &a.common.json)
        }
    }
}

/// What a check needs besides its own flags: the target, the cache, qemu.
#[derive(Clone, Debug)]
pub struct Context {
    pub target: Target,
    pub cache: assets::Cache,
    pub qemu: qemu::Qemu,
    pub timeout: Duration,
    pub quiet: bool,
    /// The report's name for the check.
    pub check: &'static str,
}

impl Context {
    /// Checks the flags and output path, fetches assets with `--fetch`,
    /// and finds qemu.
    async fn new(
        c: &CommonArgs,
        check: &'static str,
        sets: &[assets::Set],
        quiet: bool,
    ) -> anyhow::Result<Context> {
        let target = Target::parse(&c.url)?;
        if !c.write {
            return Err(exit::usage(format!(
                "interop {check} writes to {} (its contents are destroyed): add --write",
                target.url
            )));
        }
        crate::output::check_outputs(&[("--json", c.json.as_deref())]).map_err(exit::usage)?;
        let cache = cache_of(&c.cache);
        if c.fetch {
            let (cache, sets) = (cache.clone(), sets.to_vec());
            tokio::task::spawn_blocking(move || fetch_sets(&cache, &sets, quiet)).await??;
        }
        let qemu = qemu::Qemu::locate(&cache).map_err(|e| exit::io(e.into()))?;
        Ok(Context {
            target,
            cache,
            qemu,
            timeout: c.timeout,
            quiet,
            check,
        })
    }

    /// A new report for this check.
    pub fn report(&self) -> report::Report {
        report::Report::new(self.check, self.target.url.to_string(), self.quiet)
    }
}

/// Prints the summary, writes the JSON, and turns a failed check into exit 1.
fn finish(mut r: report::Report, json: &Option<PathBuf>) -> anyhow::Result<()> {
    r.finish();
    if let Some(path) = json {
        let env = iesp_cli::envelope::Envelope::for_process(OUTPUT, VERSION, None)
            .interrupted(crate::signal::received().is_some());
        env.write(path, &r)
            .map_err(|e| exit::io(anyhow::anyhow!("--json {}: {e}", path.display())))?;
    }
    crate::output::say_str(&r.summary());
    if r.passed {
        Ok(())
    } else {
        let failed: Vec<&str> = r
            .steps
            .iter()
            .filter(|s| !s.ok)
            .map(|s| s.name.as_str())
            .collect();
        Err(exit::failed(anyhow::anyhow!(
            "interop {}: failed: {}",
            r.check,
            failed.join(", ")
        )))
    }
}
