//! Memory shared by processes, in a memfd: the one copy that the queue's ring and the lock's
//! mutex live in.
//!
//! A forked child inherits the mapping itself. A spawned or forkserver child is another
//! image, which inherits nothing: it is sent the memfd (`SCM_RIGHTS`, see `fds.rs`) and maps
//! it, and a mapping of the same memfd is the same memory, at another address. So every
//! mapping is made from a memfd, which costs nothing more than an anonymous shared mapping
//! (both are shmem pages).
//!
//! The memfd is sealed at its size (`F_SEAL_SHRINK`, `F_SEAL_GROW`, then `F_SEAL_SEAL`), and
//! a process that is given one maps it only if it is sealed so and of the size expected: no
//! one can shrink it under a mapping, which would turn a read into a SIGBUS.
//!
//! This file is the same in demo-lock and demo-queue, so that each crate can be copied out
//! alone; a test in the xtask checks that the copies stay identical.

#![allow(dead_code)] // Each crate uses its own part of this file.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;

use crate::robust;

const SEALS: libc::c_int = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;

/// A mapping of a memfd, `len` bytes, zeroed when new.
pub struct SharedMemory {
    ptr: NonNull<u8>,
    len: usize,
    fd: OwnedFd,
    /// Asked when this process lets go: whether the first page must stay mapped, because a
    /// thread of this process holds a robust mutex that lies there (see `robust.rs`).
    pinned: fn(&SharedMemory) -> bool,
}

// SAFETY: the mapping is plain memory; what lies in it, and how it may be reached from
// several threads, is the owner's business (it hands out only what is Sync).
unsafe impl Send for SharedMemory {}
// SAFETY: as for Send.
unsafe impl Sync for SharedMemory {}

impl SharedMemory {
    /// A new memfd of `len` bytes (at least 1), named `name` (in /proc/PID/maps), mapped.
    pub fn new(
        name: &CStr,
        len: usize,
        pinned: fn(&SharedMemory) -> bool,
    ) -> io::Result<SharedMemory> {
        let len = len.max(1);
        let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
        // SAFETY: memfd_create reads the name and returns a new descriptor or -1.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), flags) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just opened, and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let size = libc::off_t::try_from(len).map_err(io::Error::other)?;
        // SAFETY: ftruncate and fcntl(F_ADD_SEALS) change only the file behind `fd`.
        let sized = unsafe {
            libc::ftruncate(fd.as_raw_fd(), size) == 0
                && libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, SEALS) == 0
        };
        if !sized {
            return Err(io::Error::last_os_error());
        }
        SharedMemory::map(fd, len, pinned)
    }

    /// Maps a memfd that another process made with `new`, `len` bytes: an error unless it is
    /// sealed at its size and is `len` bytes long.
    pub fn adopt(
        fd: OwnedFd,
        len: usize,
        pinned: fn(&SharedMemory) -> bool,
    ) -> io::Result<SharedMemory> {
        let len = len.max(1);
        let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, why.to_string());
        // SAFETY: fcntl(F_GET_SEALS) only reads the seals of the file behind `fd`.
        let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
        if seals < 0 || seals & SEALS != SEALS {
            return Err(bad(
                "the shared memory sent is not a memfd sealed at its size",
            ));
        }
        let stat = nix::sys::stat::fstat(fd.as_fd())?;
        if u64::try_from(stat.st_size).ok() != Some(len as u64) {
            return Err(bad("the shared memory sent is not of this object's size"));
        }
        SharedMemory::map(fd, len, pinned)
    }

    fn map(fd: OwnedFd, len: usize, pinned: fn(&SharedMemory) -> bool) -> io::Result<Self> {
        // SAFETY: a new shared mapping of `fd`, at an address the kernel picks, touches no
        // memory that Rust knows about. The file is `len` bytes long and sealed so, so every
        // byte of the mapping stays backed by it.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(SharedMemory {
            ptr: NonNull::new(ptr.cast()).expect("mmap succeeded, so not null"),
            len,
            fd,
            pinned,
        })
    }

    /// Where the mapping starts: page-aligned, `len` bytes.
    #[inline]
    pub fn ptr(&self) -> NonNull<u8> {
        self.ptr
    }

    /// The memfd, to send to another process.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for SharedMemory {
    /// Unmaps this process's view only; other processes keep theirs. A pinned first page
    /// stays mapped for good: one page, deliberately leaked.
    fn drop(&mut self) {
        let page = robust::page_size();
        let len = self.len.next_multiple_of(page);
        let keep = if (self.pinned)(self) { page } else { 0 };
        if keep < len {
            // SAFETY: the mapping is ours, page-aligned, `len` bytes long, and nothing
            // borrows from it any more; a pinned first page is left alone.
            unsafe { libc::munmap(self.ptr.as_ptr().add(keep).cast(), len - keep) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

    fn never(_: &SharedMemory) -> bool {
        false
    }

    fn word(memory: &SharedMemory) -> &AtomicU64 {
        // SAFETY: the mapping is page-aligned, at least 8 bytes, and any bytes are a u64.
        unsafe { memory.ptr().cast::<AtomicU64>().as_ref() }
    }

    #[test]
    fn a_memfd_mapped_twice_is_the_same_memory() {
        let first = SharedMemory::new(c"test", 4096, never).unwrap();
        let copy = first.fd().try_clone_to_owned().unwrap();
        let second = SharedMemory::adopt(copy, 4096, never).unwrap();
        assert_ne!(first.ptr(), second.ptr(), "two mappings");
        word(&first).store(42, SeqCst);
        assert_eq!(word(&second).load(SeqCst), 42);
    }

    #[test]
    fn only_a_memfd_sealed_at_the_size_expected_is_mapped() {
        let memory = SharedMemory::new(c"test", 4096, never).unwrap();
        let copy = || memory.fd().try_clone_to_owned().unwrap();
        let err = SharedMemory::adopt(copy(), 8192, never).err().unwrap();
        assert!(err.to_string().contains("size"), "{err}");
        // The seals hold: the size cannot change under a mapping.
        // SAFETY: ftruncate changes only the file behind the descriptor, if it may.
        assert_ne!(unsafe { libc::ftruncate(copy().as_raw_fd(), 0) }, 0);
        // SAFETY: memfd_create reads the name and returns a new descriptor or -1.
        let unsealed = unsafe { libc::memfd_create(c"test".as_ptr(), libc::MFD_CLOEXEC) };
        // SAFETY: `unsealed` was just opened, and nothing else owns it.
        let unsealed = unsafe { OwnedFd::from_raw_fd(unsealed) };
        // SAFETY: as above.
        assert_eq!(unsafe { libc::ftruncate(unsealed.as_raw_fd(), 4096) }, 0);
        let err = SharedMemory::adopt(unsealed, 4096, never).err().unwrap();
        assert!(err.to_string().contains("sealed"), "{err}");
        let (socket, _) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(SharedMemory::adopt(socket.into(), 4096, never).is_err());
    }
}
