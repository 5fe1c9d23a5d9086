//! A regular file or a block device as a logical unit.
//!
//! Positional I/O (`pread`/`pwrite`) on one shared descriptor: thread-safe
//! without a lock. A missing file is created sparse at the requested size.
//! Discard punches holes in files (`fallocate(PUNCH_HOLE)`); on block devices
//! it is not offered yet.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Path, PathBuf};

use super::Backend;

pub struct FileBackend {
    file: File,
    path: PathBuf,
    size: u64,
    block_device: bool,
}

impl FileBackend {
    /// Opens `path`; a regular file that does not exist is created with
    /// `size` bytes (sparse). An existing file smaller than `size` is
    /// extended; without `size` an existing file or device is used whole.
    pub fn open(path: &Path, size: Option<u64>, read_only: bool) -> io::Result<FileBackend> {
        let exists = path.exists();
        if !exists && size.is_none() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "{} does not exist; give a size to create it",
                    path.display()
                ),
            ));
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .create(!read_only && !exists)
            .truncate(false)
            .open(path)?;
        let block_device = file.metadata()?.file_type().is_block_device();
        let mut actual = file.seek(SeekFrom::End(0))?;
        if let Some(want) = size {
            if want > actual {
                if block_device || read_only {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "{} holds {actual} bytes, fewer than the {want} asked for",
                            path.display()
                        ),
                    ));
                }
                file.set_len(want)?;
            }
            actual = want;
        }
        Ok(FileBackend {
            file,
            path: path.to_owned(),
            size: actual,
            block_device,
        })
    }
}

impl Backend for FileBackend {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(data, offset)
    }

    fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        if self.block_device {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "discard on block devices",
            ));
        }
        use nix::fcntl::{FallocateFlags, fallocate};
        let flags = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
        fallocate(&self.file, flags, offset as i64, len as i64).map_err(io::Error::from)
    }

    fn discard_zeroes(&self) -> bool {
        !self.block_device
    }

    fn write_cache(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        let kind = if self.block_device { "dev" } else { "file" };
        format!("{kind}:{}", self.path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_sparse_file_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lun.img");
        let b = FileBackend::open(&path, Some(1 << 20), false).unwrap();
        assert_eq!(b.size(), 1 << 20);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 1 << 20);
        b.write_at(&[0xab; 4096], 8192).unwrap();
        let mut buf = [0u8; 4096];
        b.read_at(&mut buf, 8192).unwrap();
        assert!(buf.iter().all(|x| *x == 0xab));
        b.discard(8192, 4096).unwrap();
        b.read_at(&mut buf, 8192).unwrap();
        assert!(buf.iter().all(|x| *x == 0));
    }

    #[test]
    fn missing_file_without_size_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = FileBackend::open(&dir.path().join("nope"), None, false)
            .err()
            .unwrap();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn existing_file_keeps_its_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lun.img");
        FileBackend::open(&path, Some(65536), false)
            .unwrap()
            .write_at(b"persist", 512)
            .unwrap();
        let again = FileBackend::open(&path, None, false).unwrap();
        assert_eq!(again.size(), 65536);
        let mut buf = [0u8; 7];
        again.read_at(&mut buf, 512).unwrap();
        assert_eq!(&buf, b"persist");
    }
}
