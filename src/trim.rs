//! Giving freed heap back to the OS after a burst of load.
//!
//! glibc keeps memory that threads freed in its arenas (one per thread up to
//! 8 per core): after 1,000 concurrent streams the process stayed ~40 MB
//! resident for good. `malloc_trim(0)` returns the free pages of every arena
//! to the kernel (`madvise(MADV_DONTNEED)`), not only the top of the main
//! heap. The worker pool calls it once the proxy is idle after a burst.
//!
//! This is the crate's only unsafe code: std has no way to reach the
//! allocator's trimming, and none of the crates already compiled in offers
//! it. musl and other libcs have no `malloc_trim` (musl's allocator returns
//! freed memory eagerly), so there it does nothing.

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
mod glibc {
    unsafe extern "C" {
        /// glibc, `<malloc.h>`: `int malloc_trim(size_t pad)`.
        fn malloc_trim(pad: usize) -> i32;
    }

    pub fn trim() {
        // SAFETY: malloc_trim takes no pointers, is thread-safe (it locks
        // each arena in turn), and only releases pages that hold no
        // allocation. The result (whether anything was released) is not
        // needed.
        unsafe {
            malloc_trim(0);
        }
    }
}

/// Return free heap pages to the OS where the allocator supports it.
pub fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    glibc::trim();
}
