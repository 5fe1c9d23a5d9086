//! The block-device ioctls the local device needs, behind safe functions.
//!
//! From `<linux/fs.h>`: `BLKSSZGET` (`_IO(0x12, 104)`, logical block size
//! as an `int`), `BLKGETSIZE64` (`_IOR(0x12, 114, size_t)`, size in bytes),
//! `BLKDISCARD` (`_IO(0x12, 119)`) and `BLKZEROOUT` (`_IO(0x12, 127)`), the
//! last two taking a `uint64_t[2]` of byte offset and length. This is the only module of the crate with `unsafe`: each call
//! passes a pointer to a live, correctly typed local for the duration of the
//! call, which is all these ioctls read or write.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, BorrowedFd};

use nix::libc::c_int;

nix::ioctl_read_bad!(blksszget, 0x1268, c_int);
nix::ioctl_read!(blkgetsize64, 0x12, 114, u64);
nix::ioctl_write_ptr_bad!(blkdiscard, 0x1277, [u64; 2]);
nix::ioctl_write_ptr_bad!(blkzeroout, 0x127f, [u64; 2]);

/// `BLKSSZGET`: the logical block size.
pub fn logical_block_size(fd: BorrowedFd<'_>) -> nix::Result<u32> {
    let mut size: c_int = 0;
    // SAFETY: `size` is a valid, writable c_int for the whole call.
    unsafe { blksszget(fd.as_raw_fd(), &mut size) }?;
    u32::try_from(size).map_err(|_| nix::Error::EINVAL)
}

/// `BLKGETSIZE64`: the capacity in bytes.
pub fn size_bytes(fd: BorrowedFd<'_>) -> nix::Result<u64> {
    let mut size: u64 = 0;
    // SAFETY: `size` is a valid, writable u64 (size_t on 64-bit Linux).
    unsafe { blkgetsize64(fd.as_raw_fd(), &mut size) }?;
    Ok(size)
}

/// `BLKDISCARD` of `len` bytes at `offset` (both multiples of the logical
/// block size).
pub fn discard(fd: BorrowedFd<'_>, offset: u64, len: u64) -> nix::Result<()> {
    let range: [u64; 2] = [offset, len];
    // SAFETY: `range` is a valid [u64; 2] the kernel only reads.
    unsafe { blkdiscard(fd.as_raw_fd(), &range) }?;
    Ok(())
}

/// `BLKZEROOUT` of `len` bytes at `offset`: the range reads back as zeros
/// (the kernel may deallocate it or write zeros).
pub fn zero_out(fd: BorrowedFd<'_>, offset: u64, len: u64) -> nix::Result<()> {
    let range: [u64; 2] = [offset, len];
    // SAFETY: `range` is a valid [u64; 2] the kernel only reads.
    unsafe { blkzeroout(fd.as_raw_fd(), &range) }?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn not_a_block_device() {
        let f = tempfile::tempfile().unwrap();
        assert_eq!(logical_block_size(f.as_fd()), Err(nix::Error::ENOTTY));
        assert_eq!(size_bytes(f.as_fd()), Err(nix::Error::ENOTTY));
        assert_eq!(discard(f.as_fd(), 0, 512), Err(nix::Error::ENOTTY));
        assert_eq!(zero_out(f.as_fd(), 0, 512), Err(nix::Error::ENOTTY));
    }
}
