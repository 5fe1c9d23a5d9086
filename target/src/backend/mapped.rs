//! READs and WRITEs of a file LU copied from and into a shared mapping of
//! the file (issue 16), instead of one `pread` or `pwrite` each.
//!
//! A `pread` of 4 KiB from the page cache costs a system call, a page
//! cache lookup and an atime check besides the copy; a `pwrite` adds the
//! file system's write path (ext4: `write_begin`/`write_end` per page) —
//! half the target's CPU per 4 KiB WRITE. Through the mapping a READ or a
//! WRITE is the copy alone (a WRITE to a page that writeback cleaned takes
//! one write fault, in which the file system reserves the block). Linux has
//! one page cache, so the mapping, `pread`, `pwrite`, hole punching and
//! `fdatasync` all see the same pages: SYNCHRONIZE CACHE and FUA
//! (`fdatasync` after the copy) make mapped writes durable exactly as
//! written ones. A READ's copy is made while the READ runs, so a later
//! WRITE cannot change what the READ returns.
//!
//! ## A file that shrinks under the mapping
//!
//! Touching a mapped page past the end of the file raises SIGBUS, and so
//! does a write fault the file system cannot back (no space left for a
//! block of a sparse file). Either would end the process: a backing file
//! truncated by someone else, or a full file system, must cost the
//! commands that fail, never the target. So the first mapping installs a
//! SIGBUS handler: a fault inside a registered mapping gets an anonymous
//! zero page mapped over the faulting page (the copy goes on, into or out
//! of that page) and marks the mapping faulted. The READ or WRITE then
//! sees the mark and is done again with `pread` or `pwrite`, which reports
//! the short file or the full file system as an error (CHECK CONDITION);
//! every later command of that LU uses them too, as the mapping now holds
//! pages that are not the file's. A SIGBUS anywhere else goes to the
//! handler that was there before (Rust's stack-overflow check, else the default action).
//! The handler only loads atomics and calls `mmap`.
//!
//! Regular files only: a block device may change size or vanish, and its
//! `pread` path is what the I/O workers expect.

use std::fs::File;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::BytesMut;
use nix::libc;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

/// Mappings that can be registered at once; a file LU beyond them is read
/// with `pread`.
const SLOTS: usize = 64;

/// One registered mapping: `[start, end)` of the address space (0..0
/// while none is published); `taken` reserves the slot.
struct Slot {
    taken: AtomicBool,
    start: AtomicUsize,
    end: AtomicUsize,
    faulted: AtomicBool,
}

static REGISTRY: [Slot; SLOTS] = [const {
    Slot {
        taken: AtomicBool::new(false),
        start: AtomicUsize::new(0),
        end: AtomicUsize::new(0),
        faulted: AtomicBool::new(false),
    }
}; SLOTS];

/// The SIGBUS action before ours, set once before ours is installed.
static PREVIOUS: OnceLock<SigAction> = OnceLock::new();

/// A shared mapping of a whole file, registered with the SIGBUS guard.
pub struct Mapping {
    start: usize,
    len: usize,
    writable: bool,
    slot: &'static Slot,
}

impl std::fmt::Debug for Mapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mapping({} bytes)", self.len)
    }
}

impl Mapping {
    /// Maps the first `len` bytes of `file`, for writing too when
    /// `writable` (the file must be open for writing then); `None` when the
    /// mapping, the registry or the handler is not available (the caller
    /// uses `pread` and `pwrite`).
    pub fn new(file: &File, len: u64, writable: bool) -> Option<Mapping> {
        let len = usize::try_from(len).ok().filter(|&l| l > 0)?;
        if !install_handler() {
            return None;
        }
        let slot = REGISTRY.iter().find(|s| {
            s.taken
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        })?;
        let prot = if writable {
            rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE
        } else {
            rustix::mm::ProtFlags::READ
        };
        // SAFETY: a fresh mapping chosen by the kernel (no address given),
        // of an open descriptor; it aliases no Rust object. It is only
        // accessed through `copy_into` and `copy_from`, whose faults the
        // guard handles.
        #[allow(unsafe_code)]
        let mapped = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                rustix::mm::MapFlags::SHARED,
                file,
                0,
            )
        };
        let Ok(ptr) = mapped else {
            slot.taken.store(false, Ordering::Release);
            return None;
        };
        let start = ptr as usize;
        slot.faulted.store(false, Ordering::Relaxed);
        slot.end.store(start + len, Ordering::Relaxed);
        slot.start.store(start, Ordering::Release);
        Some(Mapping {
            start,
            len,
            writable,
            slot,
        })
    }

    /// Whether `[offset, offset+len)` may be copied now: inside the
    /// mapping, which has not faulted.
    fn usable(&self, offset: u64, len: usize) -> Option<usize> {
        let offset = usize::try_from(offset).ok()?;
        let inside = offset.checked_add(len).is_some_and(|end| end <= self.len);
        (inside && !self.faulted()).then_some(offset)
    }

    /// Copies `data` into the file at `offset`; false if the range is
    /// outside the mapping, the mapping is read-only, or a fault (a file
    /// shrunk under it, no space for a block) stopped it: the caller writes
    /// with `pwrite` then (all of `data`: some of it may have reached the
    /// file, the rest an anonymous page).
    pub fn copy_from(&self, data: &[u8], offset: u64) -> bool {
        if !self.writable {
            return false;
        }
        let Some(offset) = self.usable(offset, data.len()) else {
            return false;
        };
        // SAFETY: the range lies inside the live, writable mapping (checked
        // above). Other threads may copy into or out of the same pages at
        // once (commands of other sessions): plain bytes, racy but not
        // undefined, as with `pwrite` and `pread`. Faults are the guard's.
        #[allow(unsafe_code)]
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                (self.start + offset) as *mut u8,
                data.len(),
            );
        }
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
        !self.faulted()
    }

    /// Appends `[offset, offset+len)` of the file to `buf`; false (and
    /// `buf` as it was) if the range is outside the mapping or the file
    /// shrank under it: the caller reads with `pread` then.
    pub fn copy_into(&self, buf: &mut BytesMut, offset: u64, len: usize) -> bool {
        let Some(offset) = self.usable(offset, len) else {
            return false;
        };
        let before = buf.len();
        // SAFETY: `[offset, offset+len)` lies inside the live mapping
        // (checked above; it is unmapped only on drop). The file's pages
        // may change while they are copied (a concurrent WRITE of another
        // session), which makes the bytes racy, not the read: they are
        // plain `u8`s. A page past the end of a shrunk file faults, and the
        // guard maps zeroes there (module docs).
        #[allow(unsafe_code)]
        let src = unsafe { std::slice::from_raw_parts((self.start + offset) as *const u8, len) };
        buf.extend_from_slice(src);
        // A fault on this thread ran the handler inside the copy (the
        // compiler fence keeps the load after it); one on another thread
        // marked the mapping before replacing any page this copy read.
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
        if self.faulted() {
            buf.truncate(before);
            return false;
        }
        true
    }

    /// Whether the file shrank under the mapping (from then on every read
    /// goes through `pread`).
    pub fn faulted(&self) -> bool {
        self.slot.faulted.load(Ordering::SeqCst)
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        self.slot.start.store(0, Ordering::Release);
        self.slot.end.store(0, Ordering::Release);
        // SAFETY: the mapping made in `new`, unmapped once; no slice of it
        // outlives `copy_into`.
        #[allow(unsafe_code)]
        let _ = unsafe { rustix::mm::munmap(self.start as *mut _, self.len) };
        self.slot.taken.store(false, Ordering::Release);
    }
}

/// Installs the SIGBUS guard once; whether it is in place.
fn install_handler() -> bool {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(|| {
        // Cached now, so the handler only loads it.
        page_size();
        let ours = SigAction::new(
            SigHandler::SigAction(on_sigbus),
            SaFlags::SA_SIGINFO | SaFlags::SA_ONSTACK | SaFlags::SA_NODEFER,
            SigSet::empty(),
        );
        // The previous action is needed before ours can run: read it by
        // installing ours, then publish it. A SIGBUS in between (none can
        // come from a mapping yet) finds no previous action and takes the
        // default.
        // SAFETY: `on_sigbus` is async-signal-safe (module docs).
        #[allow(unsafe_code)]
        match unsafe { sigaction(Signal::SIGBUS, &ours) } {
            Ok(previous) => {
                let _ = PREVIOUS.set(previous);
                true
            }
            Err(_) => false,
        }
    })
}

/// The SIGBUS handler (module docs).
extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler.
    #[allow(unsafe_code)]
    let addr = unsafe { (*info).si_addr() } as usize;
    for slot in &REGISTRY {
        let start = slot.start.load(Ordering::Acquire);
        if start == 0 || addr < start || addr >= slot.end.load(Ordering::Acquire) {
            continue;
        }
        let page = addr & !(page_size() - 1);
        // Marked before the page is replaced: a copy on another thread
        // that reads or writes the replacement page must then see the mark
        // when it checks after its copy (and redo the command), never take
        // the zero page for the file's data or lose a write in it.
        slot.faulted.store(true, Ordering::SeqCst);
        // SAFETY: replaces one page of our own registered mapping (which
        // nothing else aliases) with an anonymous zero page; `mmap` is a system call,
        // safe in a signal handler.
        #[allow(unsafe_code)]
        let r = unsafe {
            libc::mmap(
                page as *mut libc::c_void,
                page_size(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if r != libc::MAP_FAILED {
            return;
        }
        break;
    }
    // Not ours: what was there before.
    match PREVIOUS.get().map(SigAction::handler) {
        // The previous handler, called as the kernel would have.
        Some(SigHandler::SigAction(f)) => f(sig, info, ctx),
        Some(SigHandler::Handler(f)) => f(sig),
        _ => {
            // The default action: the fault repeats when we return.
            let dfl = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
            // SAFETY: restoring the default disposition.
            #[allow(unsafe_code)]
            let _ = unsafe { sigaction(Signal::SIGBUS, &dfl) };
        }
    }
}

fn page_size() -> usize {
    static PAGE: AtomicUsize = AtomicUsize::new(0);
    match PAGE.load(Ordering::Relaxed) {
        0 => {
            let p = rustix::param::page_size();
            PAGE.store(p, Ordering::Relaxed);
            p
        }
        p => p,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    fn file_with(bytes: usize) -> (tempfile::NamedTempFile, File) {
        let f = tempfile::NamedTempFile::new().unwrap();
        let data: Vec<u8> = (0..bytes).map(|i| (i * 13 % 251) as u8).collect();
        f.as_file().write_all_at(&data, 0).unwrap();
        let file = f.reopen().unwrap();
        (f, file)
    }

    #[test]
    fn copies_what_the_file_holds_and_sees_later_writes() {
        let (_f, file) = file_with(256 << 10);
        let m = Mapping::new(&file, 256 << 10, false).expect("mapping");
        let mut buf = BytesMut::new();
        assert!(m.copy_into(&mut buf, 12_345, 4096));
        let want: Vec<u8> = (12_345..12_345 + 4096)
            .map(|i| (i * 13 % 251) as u8)
            .collect();
        assert_eq!(&buf[..], &want[..]);
        // pwrite through the descriptor: the mapping sees it at once.
        file.write_all_at(&[0xee; 100], 12_345).unwrap();
        let mut again = BytesMut::new();
        assert!(m.copy_into(&mut again, 12_345, 4096));
        assert!(again[..100].iter().all(|&b| b == 0xee));
        assert_eq!(&again[100..], &want[100..]);
        // Outside the mapping: refused, nothing appended.
        assert!(!m.copy_into(&mut again, (256 << 10) - 10, 11));
        assert!(!m.copy_into(&mut again, u64::MAX, 1));
        assert_eq!(again.len(), 4096);
        // A read-only mapping takes no writes.
        assert!(!m.copy_from(&[1; 16], 0));
    }

    /// Writes through a writable mapping reach the file (`pread` and the
    /// file's length see them) and survive `fdatasync`; a write past a
    /// truncation fails without ending the process.
    #[test]
    fn writes_reach_the_file_and_a_shrunk_file_fails_them() {
        let (f, file) = file_with(1 << 20);
        let m = Mapping::new(&file, 1 << 20, true).expect("mapping");
        assert!(m.copy_from(&[0xa5; 5000], 70_000));
        file.sync_data().unwrap();
        let mut back = vec![0u8; 5002];
        f.as_file().read_exact_at(&mut back, 69_999).unwrap();
        assert_eq!(back[0], (69_999 * 13 % 251) as u8);
        assert!(back[1..5001].iter().all(|&b| b == 0xa5));
        assert_eq!(back[5001], (75_000 * 13 % 251) as u8);
        assert!(!m.copy_from(&[1; 2], (1 << 20) - 1));
        f.as_file().set_len(8192).unwrap();
        assert!(!m.copy_from(&[0x11; 4096], 600 << 10));
        assert!(m.faulted());
        assert_eq!(f.as_file().metadata().unwrap().len(), 8192);
    }

    /// A file truncated under the mapping costs the reads, not the
    /// process: the copy reports failure (and appends nothing) instead of
    /// a SIGBUS ending the test binary; the mapping stays faulted.
    #[test]
    fn a_file_shrunk_under_the_mapping_fails_reads_instead_of_the_process() {
        let (f, file) = file_with(1 << 20);
        let m = Mapping::new(&file, 1 << 20, false).expect("mapping");
        let mut buf = BytesMut::from(&b"kept"[..]);
        assert!(m.copy_into(&mut buf, 900 << 10, 8192));
        f.as_file().set_len(4096).unwrap();
        buf.truncate(4);
        assert!(!m.copy_into(&mut buf, 900 << 10, 8192));
        assert_eq!(&buf[..], b"kept");
        assert!(m.faulted());
        // Every later read falls back, even where the file still is.
        assert!(!m.copy_into(&mut buf, 0, 512));
        // Another mapping is not affected.
        let (_g, other) = file_with(64 << 10);
        let n = Mapping::new(&other, 64 << 10, false).expect("mapping");
        assert!(n.copy_into(&mut buf, 0, 512));
        assert!(!n.faulted());
    }
}
