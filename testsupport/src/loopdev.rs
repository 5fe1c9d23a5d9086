//! Loop devices over image files (`losetup`, util-linux), so tests can
//! exercise the block-device paths (BLKDISCARD, BLKZEROOUT, O_DIRECT on a
//! real device) without a spare disk.
//!
//! [`LoopDevice`] is RAII: `losetup --find --show FILE` on attach,
//! `losetup --detach` on drop (also while a failing test unwinds).
//! Attaching needs root (or a container with `/dev/loop-control`);
//! [`LoopDevice::attach_or_skip`] applies the workspace's missing-peer
//! policy to that as well: a test fails under CI and is skipped with a
//! `SKIPPED:` line elsewhere, never silently.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::peers::{PeerError, in_ci, run_tool, tool_or_skip};

/// Bound on each `losetup` call: it only talks to the local kernel.
const LOSETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// A loop device attached to a file; detached on drop.
///
/// The kernel completes a detach when the last opener closes the device,
/// so `/dev/loopN` may stay listed for a moment after the drop.
#[derive(Debug)]
pub struct LoopDevice {
    /// `/dev/loopN`.
    path: PathBuf,
    /// Cleared by [`LoopDevice::detach`], so `Drop` does not detach twice
    /// (the number may already belong to another test's device).
    attached: bool,
}

impl LoopDevice {
    /// Attaches `file` to the first free loop device.
    pub fn attach(file: &Path) -> Result<LoopDevice, PeerError> {
        let file_arg = file.to_str().ok_or_else(|| PeerError::InvalidArgument {
            tool: "losetup".into(),
            reason: format!("image path is not UTF-8: {}", file.display()),
        })?;
        let out = run_tool("losetup", &["--find", "--show", file_arg], LOSETUP_TIMEOUT)?
            .ensure_success()?;
        let printed = out.stdout.trim();
        if !printed.starts_with("/dev/loop") {
            return Err(PeerError::Parse {
                tool: "losetup".into(),
                reason: "no /dev/loopN path printed".into(),
                raw: out.combined(),
            });
        }
        Ok(LoopDevice {
            path: PathBuf::from(printed),
            attached: true,
        })
    }

    /// [`LoopDevice::attach`] under the missing-peer policy: `None` after a
    /// `SKIPPED:` line when `losetup` is missing or this machine cannot
    /// attach loop devices (not root).
    ///
    /// # Panics
    ///
    /// In either case when [`in_ci`] is true: CI installs util-linux and
    /// runs as root, so a skip there would hide a broken set-up.
    #[track_caller]
    pub fn attach_or_skip(file: &Path) -> Option<LoopDevice> {
        tool_or_skip("losetup")?;
        match LoopDevice::attach(file) {
            Ok(dev) => Some(dev),
            Err(e) if in_ci() => panic!("cannot attach a loop device under CI: {e}"),
            Err(e) => {
                eprintln!("SKIPPED: cannot attach a loop device here (not root?): {e}");
                None
            }
        }
    }

    /// `/dev/loopN`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `/dev/loopN` as a string, for command lines (`losetup` printed it,
    /// so it is UTF-8).
    pub fn as_str(&self) -> &str {
        self.path.to_str().unwrap_or("/dev/loop?")
    }

    /// Detaches now and reports failure (`Drop` detaches silently).
    pub fn detach(mut self) -> Result<(), PeerError> {
        self.attached = false;
        run_tool("losetup", &["--detach", self.as_str()], LOSETUP_TIMEOUT)?
            .ensure_success()
            .map(drop)
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        if self.attached {
            let _ = run_tool("losetup", &["--detach", self.as_str()], LOSETUP_TIMEOUT);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peers::create_sparse_file;

    /// The loop devices attached to `image`, from `losetup --associated`
    /// (by file, not by device number: parallel tests reuse numbers).
    fn attached_to(image: &Path) -> Vec<PathBuf> {
        let out = run_tool(
            "losetup",
            &["--associated", image.to_str().unwrap()],
            LOSETUP_TIMEOUT,
        )
        .unwrap()
        .ensure_success()
        .unwrap();
        // "/dev/loop3: [2049]:1234 (/tmp/…/lun-x.img)"
        out.stdout
            .lines()
            .filter_map(|l| l.split_once(':').map(|(dev, _)| PathBuf::from(dev)))
            .collect()
    }

    /// Waits until no loop device is attached to `image`: the kernel
    /// detaches a device still open somewhere (udev, a closing reader)
    /// only when the last opener closes it.
    fn gone_soon(image: &Path) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !attached_to(image).is_empty() {
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    #[test]
    fn attaches_reads_through_and_detaches_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let image = create_sparse_file(dir.path(), 4 << 20).unwrap();
        std::fs::write(&image, vec![0xc3u8; 4096]).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&image)
            .unwrap()
            .set_len(4 << 20)
            .unwrap();
        let Some(dev) = LoopDevice::attach_or_skip(&image) else {
            return;
        };
        let path = dev.path().to_owned();
        assert!(dev.as_str().starts_with("/dev/loop"), "{path:?}");
        assert_eq!(attached_to(&image), std::slice::from_ref(&path));
        let mut head = [0u8; 16];
        std::io::Read::read_exact(&mut std::fs::File::open(&path).unwrap(), &mut head).unwrap();
        assert_eq!(head, [0xc3; 16], "the device shows the file's bytes");
        drop(dev);
        assert!(gone_soon(&image), "{path:?} still attached after drop");
    }

    #[test]
    fn explicit_detach_and_a_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let image = create_sparse_file(dir.path(), 1 << 20).unwrap();
        let Some(dev) = LoopDevice::attach_or_skip(&image) else {
            return;
        };
        let path = dev.path().to_owned();
        assert_eq!(attached_to(&image), [path]);
        dev.detach().unwrap();
        assert!(gone_soon(&image), "still attached after detach");
        let err = LoopDevice::attach(&dir.path().join("no-such.img")).unwrap_err();
        assert!(matches!(err, PeerError::Failed { .. }), "{err}");
    }
}
