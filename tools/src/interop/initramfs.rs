//! The Linux guest's initramfs, written as an uncompressed cpio archive
//! (the "newc" format the kernel unpacks, see the kernel's
//! Documentation/driver-api/early-userspace/buffer-format.rst) from the
//! unpacked Debian packages of [`Set::Guest`](super::assets::Set::Guest):
//!
//! - `/init`: the guest's script (written by [`super::linux`]);
//! - busybox (static) for the shell and `insmod`, `ip`, `dd`, `cmp`;
//! - `iscsistart`, `mke2fs`, `e2fsck` and the shared libraries of the
//!   packages (top level of `lib/` and `usr/lib/x86_64-linux-gnu`);
//! - the kernel modules the iSCSI initiator and virtio-net need, flat in
//!   `/m`, loaded by `/init` in [`MODULES`] order (no depmod needed);
//! - `/iesp-test`, the tool itself (debug info stripped when `strip` is
//!   there), with the host's copies of the libraries it links (they
//!   replace the packages' copies, so the tool runs with the glibc it was
//!   built against; a static build needs none).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::assets::{AssetError, Cache, Set};

/// The modules, in load order: SCSI and the iSCSI initiator (crc32c_generic
/// is needed by iscsi_tcp's digests but not declared as its dependency),
/// the disk driver, then virtio-net.
pub const MODULES: &[&str] = &[
    "scsi_common",
    "scsi_mod",
    "scsi_transport_iscsi",
    "libiscsi",
    "libiscsi_tcp",
    "crc32c_generic",
    "iscsi_tcp",
    "crct10dif_common",
    "crc-t10dif",
    "crc64",
    "crc64-rocksoft",
    "t10-pi",
    "sd_mod",
    "virtio_ring",
    "virtio",
    "virtio_pci_legacy_dev",
    "virtio_pci_modern_dev",
    "virtio_pci",
    "failover",
    "net_failover",
    "virtio_net",
];

/// One archive member.
enum Entry {
    Dir,
    /// Contents, mode bits.
    File(Vec<u8>, u32),
    Symlink(String),
}

/// An archive being assembled: path (without leading `/`) to member.
pub struct Initramfs {
    entries: BTreeMap<String, Entry>,
}

impl Initramfs {
    fn new() -> Initramfs {
        Initramfs {
            entries: BTreeMap::new(),
        }
    }

    fn dirs_for(&mut self, path: &str) {
        let mut p = String::new();
        for part in path.split('/').filter(|s| !s.is_empty()) {
            if !p.is_empty() {
                self.entries.entry(p.clone()).or_insert(Entry::Dir);
                p.push('/');
            }
            p.push_str(part);
        }
        if !p.is_empty() {
            self.entries.entry(p).or_insert(Entry::Dir);
        }
    }

    fn add(&mut self, path: &str, e: Entry) {
        let path = path.trim_start_matches('/').to_owned();
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dirs_for(parent);
        }
        self.entries.insert(path, e);
    }

    pub fn file(&mut self, path: &str, data: Vec<u8>, mode: u32) {
        self.add(path, Entry::File(data, mode));
    }

    /// A file or symlink of the host at `path` in the archive.
    fn copy(&mut self, path: &str, from: &Path) -> std::io::Result<()> {
        let meta = std::fs::symlink_metadata(from)?;
        if meta.file_type().is_symlink() {
            let to = std::fs::read_link(from)?;
            self.add(path, Entry::Symlink(to.display().to_string()));
        } else {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o7777;
            self.add(path, Entry::File(std::fs::read(from)?, mode));
        }
        Ok(())
    }

    /// Every file and symlink directly in `dir` (of the guest root) as
    /// `dir/NAME`.
    fn copy_dir_top(&mut self, root: &Path, dir: &str) -> std::io::Result<()> {
        let Ok(rd) = std::fs::read_dir(root.join(dir)) else {
            return Ok(());
        };
        for e in rd.flatten() {
            let ft = e.file_type()?;
            if ft.is_file() || ft.is_symlink() {
                let name = e.file_name().to_string_lossy().into_owned();
                self.copy(&format!("{dir}/{name}"), &e.path())?;
            }
        }
        Ok(())
    }

    /// The archive bytes (cpio newc, then the trailer).
    pub fn to_cpio(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (ino, (path, e)) in (1u32..).zip(self.entries.iter()) {
            let (mode, data): (u32, &[u8]) = match e {
                Entry::Dir => (0o040755, &[]),
                Entry::File(d, m) => (0o100000 | m, d),
                Entry::Symlink(t) => (0o120777, t.as_bytes()),
            };
            header(&mut out, ino, mode, data.len(), path);
            out.extend_from_slice(data);
            pad4(&mut out);
        }
        header(&mut out, 0, 0, 0, "TRAILER!!!");
        out
    }
}

/// One newc header and the name, padded.
fn header(out: &mut Vec<u8>, ino: u32, mode: u32, size: usize, name: &str) {
    let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
    let fields = [
        ino,
        mode,
        0,
        0,
        nlink,
        0,
        size as u32,
        0,
        0,
        0,
        0,
        name.len() as u32 + 1,
        0,
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while out.len() % 4 != 0 {
        out.push(0);
    }
}

/// The shared libraries `exe` loads, as `ldd` lists them (none for a
/// static build or when `ldd` is missing).
fn linked_libraries(exe: &Path) -> Vec<PathBuf> {
    let Ok(out) = Command::new("ldd").arg(exe).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .find(|w| w.starts_with('/'))
                .map(PathBuf::from)
        })
        .collect()
}

/// The tool's bytes, without debug info when `strip` can do it.
fn tool_bytes(exe: &Path, scratch: &Path) -> std::io::Result<Vec<u8>> {
    let stripped = scratch.join("iesp-test.stripped");
    let ok = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&stripped)
        .arg(exe)
        .status()
        .is_ok_and(|s| s.success());
    std::fs::read(if ok { &stripped } else { exe })
}

/// The guest's kernel image and initramfs bytes around `init`.
pub struct Guest {
    pub kernel: PathBuf,
    pub initramfs: Vec<u8>,
}

/// Finds the kernel file named `name` (`iscsi_tcp`) under `modules`.
fn find_module(dir: &Path, name: &str) -> Option<PathBuf> {
    let want = format!("{name}.ko");
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        if p.is_dir() {
            if let Some(f) = find_module(&p, name) {
                return Some(f);
            }
        } else if p.file_name().is_some_and(|n| n == want.as_str()) {
            return Some(p);
        }
    }
    None
}

/// Builds the initramfs with `init` as `/init` and `tool` as `/iesp-test`.
pub fn build(cache: &Cache, init: &str, tool: &Path, scratch: &Path) -> anyhow::Result<Guest> {
    let set = Set::Guest;
    let root = cache.root(set);
    let kernel = cache.find(set, "boot", "vmlinuz-", "linux-image-amd64")?;
    let version = kernel
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("vmlinuz-"))
        .unwrap_or_default()
        .to_owned();
    let mods = root.join("lib/modules").join(&version).join("kernel");
    let mut fs = Initramfs::new();
    for d in ["proc", "sys", "dev", "tmp", "mnt", "usr/bin", "usr/sbin"] {
        fs.dirs_for(d);
    }
    fs.file("init", init.as_bytes().to_vec(), 0o755);
    let busybox = cache.file(set, "bin/busybox", "busybox-static")?;
    fs.copy("bin/busybox", &busybox)?;
    for (bin, pkg) in [
        ("sbin/iscsistart", "open-iscsi"),
        ("sbin/mke2fs", "e2fsprogs"),
        ("sbin/e2fsck", "e2fsprogs"),
    ] {
        fs.copy(bin, &cache.file(set, bin, pkg)?)?;
    }
    for dir in ["lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64"] {
        fs.copy_dir_top(&root, dir)?;
    }
    for m in MODULES {
        let path = find_module(&mods, m).ok_or_else(|| AssetError {
            what: format!("kernel module {m}"),
            package: format!("linux-image-{version}"),
            path: mods.clone(),
            cache: cache.dir().to_path_buf(),
        })?;
        fs.copy(&format!("m/{m}.ko"), &path)?;
    }
    fs.file("iesp-test", tool_bytes(tool, scratch)?, 0o755);
    for lib in linked_libraries(tool) {
        // The host's file, not a symlink to it (the guest has no host).
        let data = std::fs::read(&lib)?;
        fs.file(&lib.display().to_string(), data, 0o755);
    }
    Ok(Guest {
        kernel,
        initramfs: fs.to_cpio(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_newc_layout() {
        let mut fs = Initramfs::new();
        fs.file("a/b/init", b"hi".to_vec(), 0o755);
        fs.add("a/l", Entry::Symlink("b/init".into()));
        let c = fs.to_cpio();
        assert!(c.starts_with(b"070701"));
        assert_eq!(c.len() % 4, 0);
        let text = String::from_utf8_lossy(&c);
        // Parents come before children; the trailer ends it.
        let (a, b, init) = (
            text.find("a\0").unwrap(),
            text.find("a/b\0").unwrap(),
            text.find("a/b/init\0").unwrap(),
        );
        assert!(a < b && b < init);
        assert!(text.contains("TRAILER!!!"));
        // The file's mode and size fields.
        assert!(text.contains(&format!("{:08x}", 0o100755)));
    }
}
