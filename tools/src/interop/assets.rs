//! The Debian packages the interop checks run, fetched once into a cache.
//!
//! Nothing is installed on the host: `apt-get download` puts the `.deb`
//! files in `CACHE/interop/SET/debs`, `dpkg-deb -x` unpacks them into
//! `CACHE/interop/SET/root`, and a stamp file naming the packages marks a
//! finished set (so [`fetch`] is idempotent and an interrupted fetch is
//! redone). Two sets:
//!
//! - [`Set::Qemu`]: qemu 7.2 (the host's qemu-utils may be a newer build
//!   without the iscsi block driver, and installing Debian's qemu-system-x86
//!   would replace it), its firmware (SeaBIOS, iPXE ROMs) and the few
//!   libraries it needs that a host may lack; run with `LD_LIBRARY_PATH`
//!   into the unpacked tree.
//! - [`Set::Guest`]: what the Linux guest's initramfs is made of: a Debian
//!   kernel and its modules, busybox-static, open-iscsi's `iscsistart`,
//!   e2fsprogs and their libraries.
//!
//! A missing file is an [`AssetError`] naming the package and the command
//! that fetches it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// qemu's own packages, pinned to one version (that of `qemu-block-extra`,
/// which only exists for the Debian-built qemu).
const QEMU_PINNED: &[&str] = &[
    "qemu-system-x86",
    "qemu-system-common",
    "qemu-utils",
    "qemu-block-extra",
];

/// Firmware and the libraries the unpacked qemu loads that a plain host
/// lacks.
const QEMU_UNPINNED: &[&str] = &[
    "qemu-system-data",
    "ipxe-qemu",
    "seabios",
    "libcapstone4",
    "libfdt1",
    "libslirp0",
    "libvdeplug2",
    "libiscsi7",
];

/// The guest's packages besides the kernel (resolved from
/// `linux-image-amd64`).
const GUEST_PACKAGES: &[&str] = &[
    "busybox-static",
    "open-iscsi",
    "libopeniscsiusr",
    "libssl3",
    "libkmod2",
    "libzstd1",
    "liblzma5",
    "libc6",
    "e2fsprogs",
    "libext2fs2",
    "libcom-err2",
    "libblkid1",
    "libuuid1",
    "libss2",
];

/// The kernel metapackage whose dependency names the kernel image.
const KERNEL_META: &str = "linux-image-amd64";

/// One downloadable set of packages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Set {
    Qemu,
    Guest,
}

impl Set {
    pub fn name(self) -> &'static str {
        match self {
            Set::Qemu => "qemu",
            Set::Guest => "guest",
        }
    }
}

/// A required asset is not in the cache.
#[derive(Debug, thiserror::Error)]
#[error(
    "{what} missing from {}: it comes from Debian package {package}; fetch it with `iesp-test interop fetch --cache {}` (or add --fetch)",
    path.display(),
    cache.display()
)]
pub struct AssetError {
    pub what: String,
    pub package: String,
    pub path: PathBuf,
    pub cache: PathBuf,
}

/// The cache directory and the paths inside it.
#[derive(Clone, Debug)]
pub struct Cache {
    dir: PathBuf,
}

/// The default cache: `$IESP_CACHE`, else `~/.cache/iesp-test`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("IESP_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    PathBuf::from(home).join(".cache/iesp-test")
}

impl Cache {
    /// The cache at `dir` (made absolute: qemu is given paths into it).
    pub fn new(dir: &Path) -> Cache {
        let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        Cache { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn set_dir(&self, set: Set) -> PathBuf {
        self.dir.join("interop").join(set.name())
    }

    /// Where a set's packages are unpacked.
    pub fn root(&self, set: Set) -> PathBuf {
        self.set_dir(set).join("root")
    }

    /// The single firmware directory for qemu's `-L`.
    pub fn firmware_dir(&self) -> PathBuf {
        self.set_dir(Set::Qemu).join("fw")
    }

    fn stamp(&self, set: Set) -> PathBuf {
        self.set_dir(set).join("complete")
    }

    /// Whether `set` was fetched completely.
    pub fn has(&self, set: Set) -> bool {
        self.stamp(set).is_file()
    }

    /// `rel` inside `set`'s root, or the error naming `package`.
    pub fn file(&self, set: Set, rel: &str, package: &str) -> Result<PathBuf, AssetError> {
        let path = self.root(set).join(rel);
        if self.has(set) && path.exists() {
            Ok(path)
        } else {
            Err(AssetError {
                what: rel.rsplit('/').next().unwrap_or(rel).to_owned(),
                package: package.to_owned(),
                path,
                cache: self.dir.clone(),
            })
        }
    }

    /// The first entry of `dir` (in `set`'s root) whose name starts with
    /// `prefix`, or the error naming `package`.
    pub fn find(
        &self,
        set: Set,
        dir: &str,
        prefix: &str,
        package: &str,
    ) -> Result<PathBuf, AssetError> {
        let base = self.root(set).join(dir);
        let mut names: Vec<PathBuf> = std::fs::read_dir(&base)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(prefix))
            })
            .collect();
        names.sort();
        match names.pop() {
            Some(p) if self.has(set) => Ok(p),
            _ => Err(AssetError {
                what: format!("{dir}/{prefix}*"),
                package: package.to_owned(),
                path: base.join(format!("{prefix}*")),
                cache: self.dir.clone(),
            }),
        }
    }
}

/// Runs a command to completion; its stderr (or stdout) in the error.
fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run {shown}: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(5).collect();
        anyhow::bail!(
            "{shown} failed ({}): {}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The candidate version of `package` (`apt-cache policy`).
fn candidate(package: &str) -> anyhow::Result<String> {
    let out = run(Command::new("apt-cache").args(["policy", package]))?;
    out.lines()
        .find_map(|l| l.trim().strip_prefix("Candidate:").map(str::trim))
        .filter(|v| !v.is_empty() && *v != "(none)")
        .map(str::to_owned)
        .ok_or_else(|| {
            anyhow::anyhow!("Debian package {package} has no candidate version (apt-get update?)")
        })
}

/// The kernel image package `linux-image-amd64` depends on.
fn kernel_package() -> anyhow::Result<String> {
    let out = run(Command::new("apt-cache").args(["depends", KERNEL_META]))?;
    out.lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Depends:")
                .map(str::trim)
                .filter(|p| p.starts_with("linux-image-"))
        })
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("cannot resolve {KERNEL_META} to a kernel image package"))
}

/// The `apt-get download` arguments of a set.
fn package_args(set: Set) -> anyhow::Result<Vec<String>> {
    Ok(match set {
        Set::Qemu => {
            let v = candidate("qemu-block-extra")?;
            QEMU_PINNED
                .iter()
                .map(|p| format!("{p}={v}"))
                .chain(QEMU_UNPINNED.iter().map(|p| (*p).to_owned()))
                .collect()
        }
        Set::Guest => std::iter::once(kernel_package()?)
            .chain(GUEST_PACKAGES.iter().map(|p| (*p).to_owned()))
            .collect(),
    })
}

/// What [`fetch`] did for one set.
#[derive(Debug)]
pub struct Fetched {
    pub set: Set,
    /// False when the set was already complete.
    pub downloaded: bool,
    pub seconds: f64,
}

/// Downloads and unpacks `set` unless it is complete already.
pub fn fetch(cache: &Cache, set: Set) -> anyhow::Result<Fetched> {
    let start = Instant::now();
    if cache.has(set) {
        return Ok(Fetched {
            set,
            downloaded: false,
            seconds: 0.0,
        });
    }
    let dir = cache.set_dir(set);
    let debs = dir.join("debs");
    let root = dir.join("root");
    for d in [&debs, &root] {
        if d.exists() {
            std::fs::remove_dir_all(d)
                .map_err(|e| anyhow::anyhow!("clearing {}: {e}", d.display()))?;
        }
        std::fs::create_dir_all(d).map_err(|e| anyhow::anyhow!("{}: {e}", d.display()))?;
    }
    let packages = package_args(set)?;
    run(Command::new("apt-get")
        .arg("download")
        .args(&packages)
        .current_dir(&debs))
    .map_err(|e| anyhow::anyhow!("downloading the {} packages: {e}", set.name()))?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(&debs)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    files.sort();
    for deb in &files {
        run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&root))?;
    }
    if set == Set::Qemu {
        link_firmware(&root, &cache.firmware_dir())?;
    }
    // The unpacked tree is what runs; the archives only take room.
    let _ = std::fs::remove_dir_all(&debs);
    std::fs::write(cache.stamp(set), packages.join("\n") + "\n")?;
    Ok(Fetched {
        set,
        downloaded: true,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// One directory of symlinks to the BIOS, option ROMs and qemu's own blobs.
fn link_firmware(root: &Path, fw: &Path) -> anyhow::Result<()> {
    if fw.exists() {
        std::fs::remove_dir_all(fw)?;
    }
    std::fs::create_dir_all(fw)?;
    for src in ["usr/share/qemu", "usr/share/seabios", "usr/lib/ipxe/qemu"] {
        for e in std::fs::read_dir(root.join(src))
            .map_err(|e| anyhow::anyhow!("{src} in the qemu packages: {e}"))?
            .flatten()
        {
            let link = fw.join(e.file_name());
            if !link.exists() {
                std::os::unix::fs::symlink(e.path(), &link)?;
            }
        }
    }
    Ok(())
}
