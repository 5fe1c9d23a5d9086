//! A RAM disk, allocated lazily in chunks.
//!
//! The disk is split into 64 KiB chunks, each behind its own lock, so
//! commands on different parts of the disk never contend and a lock is held
//! only for one memcpy. A chunk is allocated on first write; an unallocated
//! chunk reads as zeroes, which makes a large RAM disk cheap until used and
//! gives thin provisioning for free: discarding a whole chunk frees it, a
//! partial discard zeroes the bytes (LBPRZ holds either way), and the unmap
//! granularity is the chunk. GET LBA STATUS reports a chunk deallocated
//! exactly when it holds no memory. Everything is in memory, so PRE-FETCH
//! always finds its blocks cached.

use std::io;
use std::sync::RwLock;

use super::{Backend, Extent, MapState, Provisioning};

const CHUNK: usize = 64 * 1024;

pub struct RamBackend {
    size: u64,
    chunks: Vec<RwLock<Option<Box<[u8]>>>>,
}

impl RamBackend {
    /// A RAM disk of `size` bytes. Panics (aborts) if even its chunk table
    /// cannot be allocated; [`RamBackend::try_new`] reports that instead.
    pub fn new(size: u64) -> RamBackend {
        let n = size.div_ceil(CHUNK as u64) as usize;
        RamBackend {
            size,
            chunks: (0..n).map(|_| RwLock::new(None)).collect(),
        }
    }

    /// A RAM disk of `size` bytes, refused (`InvalidInput`) when it is
    /// larger than this machine's memory and swap together, or
    /// (`OutOfMemory`) when its chunk table cannot be allocated: a RAM disk
    /// that could never be filled is a mistake to report, not to abort on.
    pub fn try_new(size: u64) -> io::Result<RamBackend> {
        if let Ok(info) = nix::sys::sysinfo::sysinfo() {
            let total = info.ram_total().saturating_add(info.swap_total());
            if size > total {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "a RAM disk of {} is larger than this machine's memory and swap ({} MiB)",
                        crate::config::format_size(size),
                        total >> 20
                    ),
                ));
            }
        }
        let n = usize::try_from(size.div_ceil(CHUNK as u64))
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "RAM disk too large"))?;
        let mut chunks = Vec::new();
        chunks.try_reserve_exact(n).map_err(|_| {
            io::Error::new(
                io::ErrorKind::OutOfMemory,
                format!(
                    "cannot allocate a RAM disk of {}",
                    crate::config::format_size(size)
                ),
            )
        })?;
        chunks.extend((0..n).map(|_| RwLock::new(None)));
        Ok(RamBackend { size, chunks })
    }

    /// Splits `[offset, offset+len)` into (chunk index, offset in chunk,
    /// length) pieces.
    fn pieces(offset: u64, len: usize) -> impl Iterator<Item = (usize, usize, usize)> {
        let mut pos = offset;
        let end = offset + len as u64;
        std::iter::from_fn(move || {
            if pos >= end {
                return None;
            }
            let idx = (pos / CHUNK as u64) as usize;
            let within = (pos % CHUNK as u64) as usize;
            let n = (CHUNK - within).min((end - pos) as usize);
            pos += n as u64;
            Some((idx, within, n))
        })
    }

    fn check(&self, offset: u64, len: usize) -> io::Result<()> {
        match offset.checked_add(len as u64) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "range beyond end of RAM disk",
            )),
        }
    }
}

fn poisoned() -> io::Error {
    io::Error::other("RAM disk chunk lock poisoned")
}

impl Backend for RamBackend {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.check(offset, buf.len())?;
        let mut done = 0;
        for (idx, within, n) in Self::pieces(offset, buf.len()) {
            let dst = &mut buf[done..done + n];
            match &*self.chunks[idx].read().map_err(|_| poisoned())? {
                Some(chunk) => dst.copy_from_slice(&chunk[within..within + n]),
                None => dst.fill(0),
            }
            done += n;
        }
        Ok(())
    }

    fn read_into(&self, buf: &mut bytes::BytesMut, offset: u64, len: usize) -> io::Result<()> {
        self.check(offset, len)?;
        buf.reserve(len);
        let start = buf.len();
        for (idx, within, n) in Self::pieces(offset, len) {
            match &*self.chunks[idx].read().map_err(|_| {
                buf.truncate(start);
                poisoned()
            })? {
                Some(chunk) => buf.extend_from_slice(&chunk[within..within + n]),
                None => buf.resize(buf.len() + n, 0),
            }
        }
        Ok(())
    }

    fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        self.check(offset, data.len())?;
        let mut done = 0;
        for (idx, within, n) in Self::pieces(offset, data.len()) {
            let mut slot = self.chunks[idx].write().map_err(|_| poisoned())?;
            let chunk = slot.get_or_insert_with(|| vec![0u8; CHUNK].into_boxed_slice());
            chunk[within..within + n].copy_from_slice(&data[done..done + n]);
            done += n;
        }
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        Ok(())
    }

    fn provisioning(&self) -> Option<Provisioning> {
        Some(Provisioning {
            zeroes: true,
            granularity: CHUNK as u64,
        })
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        let len = usize::try_from(len).map_err(|_| io::Error::other("discard too large"))?;
        self.check(offset, len)?;
        for (idx, within, n) in Self::pieces(offset, len) {
            let mut slot = self.chunks[idx].write().map_err(|_| poisoned())?;
            if n == CHUNK {
                *slot = None;
            } else if let Some(chunk) = slot.as_mut() {
                chunk[within..within + n].fill(0);
            }
        }
        Ok(())
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        // Allocating: the blocks stay mapped, as WRITE SAME without UNMAP
        // requires.
        let len = usize::try_from(len).map_err(|_| io::Error::other("range too large"))?;
        self.check(offset, len)?;
        for (idx, within, n) in Self::pieces(offset, len) {
            let mut slot = self.chunks[idx].write().map_err(|_| poisoned())?;
            match slot.as_mut() {
                Some(chunk) => chunk[within..within + n].fill(0),
                None => *slot = Some(vec![0u8; CHUNK].into_boxed_slice()),
            }
        }
        Ok(())
    }

    fn mapping(&self, offset: u64, len: u64) -> io::Result<Extent> {
        let len = usize::try_from(len).map_err(|_| io::Error::other("range too large"))?;
        self.check(offset, len.max(1))?;
        let allocated = |idx: usize| -> io::Result<bool> {
            let chunk = self
                .chunks
                .get(idx)
                .ok_or_else(|| io::Error::other("no chunk"))?;
            Ok(chunk.read().map_err(|_| poisoned())?.is_some())
        };
        let mut pieces = Self::pieces(offset, len.max(1));
        let Some((first, _, mut run)) = pieces.next() else {
            return Err(io::Error::other("empty range"));
        };
        let state = allocated(first)?;
        for (idx, _, n) in pieces {
            if allocated(idx)? != state {
                break;
            }
            run += n;
        }
        Ok(Extent {
            state: if state {
                MapState::Mapped
            } else {
                MapState::Deallocated
            },
            len: run as u64,
        })
    }

    fn prefetch(&self, _offset: u64, _len: u64) -> io::Result<bool> {
        Ok(true)
    }

    fn describe(&self) -> String {
        format!("ram:{}", crate::config::format_size(self.size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_zero_until_written_and_spans_chunks() {
        let ram = RamBackend::new(3 * CHUNK as u64 + 512);
        let mut buf = vec![0xffu8; 1024];
        ram.read_at(&mut buf, 100).unwrap();
        assert!(buf.iter().all(|b| *b == 0));
        let data: Vec<u8> = (0..CHUNK + 1000).map(|i| (i % 251) as u8).collect();
        ram.write_at(&data, CHUNK as u64 - 500).unwrap();
        let mut back = vec![0u8; data.len()];
        ram.read_at(&mut back, CHUNK as u64 - 500).unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn end_of_disk_is_enforced() {
        let ram = RamBackend::new(4096);
        assert!(ram.write_at(&[1; 512], 3584).is_ok());
        assert!(ram.write_at(&[1; 512], 3585).is_err());
        assert!(ram.read_at(&mut [0; 1], u64::MAX).is_err());
    }

    #[test]
    fn discard_zeroes_and_frees_whole_chunks() {
        let ram = RamBackend::new(2 * CHUNK as u64);
        ram.write_at(&vec![7u8; 2 * CHUNK], 0).unwrap();
        ram.discard(10, CHUNK as u64 - 10).unwrap();
        ram.discard(CHUNK as u64, CHUNK as u64).unwrap();
        let mut buf = vec![0u8; 2 * CHUNK];
        ram.read_at(&mut buf, 0).unwrap();
        assert!(buf[..10].iter().all(|b| *b == 7));
        assert!(buf[10..].iter().all(|b| *b == 0));
        let mapped = ram.mapping(0, 2 * CHUNK as u64).unwrap();
        assert_eq!((mapped.state, mapped.len), (MapState::Mapped, CHUNK as u64));
        let freed = ram.mapping(CHUNK as u64 + 512, 4096).unwrap();
        assert_eq!((freed.state, freed.len), (MapState::Deallocated, 4096));
    }

    #[test]
    fn write_zeroes_allocates_and_mapping_runs_stop_at_changes() {
        let ram = RamBackend::new(4 * CHUNK as u64);
        ram.write_at(&[9u8; 100], 10).unwrap();
        ram.write_zeroes(CHUNK as u64 + 5, 10).unwrap();
        let mut buf = vec![1u8; 20];
        ram.read_at(&mut buf, CHUNK as u64).unwrap();
        assert!(buf.iter().all(|b| *b == 0));
        // Chunks 0 and 1 mapped, 2 and 3 not.
        let e = ram.mapping(0, 4 * CHUNK as u64).unwrap();
        assert_eq!((e.state, e.len), (MapState::Mapped, 2 * CHUNK as u64));
        let e = ram.mapping(2 * CHUNK as u64, 2 * CHUNK as u64).unwrap();
        assert_eq!((e.state, e.len), (MapState::Deallocated, 2 * CHUNK as u64));
        // Asking past the end is an error, not a panic.
        assert!(ram.mapping(4 * CHUNK as u64, 1).is_err());
        assert!(ram.provisioning().is_some_and(|p| p.zeroes));
        assert!(ram.prefetch(0, 1).unwrap());
    }
}
