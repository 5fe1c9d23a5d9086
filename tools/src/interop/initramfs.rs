//! The initramfs.
