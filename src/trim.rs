//! Giving memory the proxy no longer uses back to the OS: freed heap after
//! (and during) a burst of load, and the dead part of a worker's stack once
//! a stream is under way.
//!
//! glibc keeps memory that threads freed in its arenas (one per thread up to
//! 8 per core): after 1,000 concurrent streams the process stayed ~40 MB
//! resident for good. `malloc_trim(0)` returns the free pages of every arena
//! to the kernel (`madvise(MADV_DONTNEED)`), not only the top of the main
//! heap. The worker pool calls it while busy (rate-limited) and once the
//! proxy is idle after a burst.
//!
//! A thread keeps every stack page it ever touched. Making the upstream call
//! touches ~25 KB of a worker's stack (ureq's connect and call frames; stack
//! probes touch each page of a frame as it is entered), and a stream then
//! runs for seconds or minutes far above that depth: at 1,000 streams, ~20 MB
//! of dead stack. [`release_stack_below`] gives those pages back.
//!
//! This is the crate's only unsafe code: std has no way to reach the
//! allocator's trimming or `madvise`, and none of the crates already compiled
//! in offers them. musl and other libcs have no `malloc_trim` (musl's
//! allocator returns freed memory eagerly), so there it does nothing.

use std::cell::Cell;

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

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
mod linux {
    unsafe extern "C" {
        /// `<sys/mman.h>`: `int madvise(void *addr, size_t len, int advice)`.
        fn madvise(addr: *mut u8, len: usize, advice: i32) -> i32;
        /// `<unistd.h>`: `int getpagesize(void)`.
        fn getpagesize() -> i32;
    }
    /// The same value on every Linux architecture this builds for.
    const MADV_DONTNEED: i32 = 4;

    pub fn page_size() -> usize {
        // SAFETY: no arguments, no side effects.
        let n = unsafe { getpagesize() };
        usize::try_from(n)
            .ok()
            .filter(|n| n.is_power_of_two())
            .unwrap_or(4096)
    }

    /// Drop the pages of `[lo, hi)` (page-aligned) of the calling thread's
    /// own stack, all of it below the stack pointer.
    pub fn discard(lo: usize, hi: usize) {
        // SAFETY: the caller guarantees that [lo, hi) lies inside the
        // calling thread's stack mapping (above its guard page) and below
        // its stack pointer and red zone. Nothing lives there: Rust keeps
        // no data below the stack pointer, no other thread may point into a
        // frame that has returned, and a signal handler that runs later
        // only finds zeroed pages, which is what MADV_DONTNEED leaves on
        // private anonymous memory. The call takes no lock and cannot fail
        // in a way that matters (the pages then simply stay).
        unsafe {
            madvise(lo as *mut u8, hi - lo, MADV_DONTNEED);
        }
    }
}

/// Return free heap pages to the OS where the allocator supports it.
pub fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    glibc::trim();
}

thread_local! {
    /// For a thread that called [`mark_stack`]: the lowest address
    /// [`release_stack_below`] may release from (0: not marked).
    static STACK_FLOOR: Cell<usize> = const { Cell::new(0) };
}

/// An address in the caller's frame. A `&mut` to a local: `&0u8` would be
/// promoted to a static and point into the binary.
#[inline(always)]
fn stack_address() -> usize {
    let mut marker = 0u8;
    std::hint::black_box(&mut marker) as *mut u8 as usize
}

/// Let [`release_stack_below`] work on this thread, whose stack was created
/// with `stack_size` bytes. Call it first thing in the thread's function.
///
/// The floor is half the stack below this frame: the thread's TLS, its
/// start-up frames and the guard page take far less than that, so the floor
/// is inside the stack's mapping whatever the libc does with them, and no
/// frame goes below it while stacks stay well under half full (a deeper one
/// only keeps its pages).
#[inline(never)]
pub fn mark_stack(stack_size: usize) {
    let here = stack_address();
    STACK_FLOOR.with(|f| f.set(here.saturating_sub(stack_size / 2)));
}

/// Stack kept resident under [`release_stack_below`]'s own frame: the frames
/// it calls (`madvise` and its wrapper: tens of bytes in a release build, a
/// few hundred unoptimized) with room to spare.
const MARGIN: usize = 2048;

/// Give the OS the pages of this thread's stack below the current frame
/// (frames that have returned, such as the upstream call's), down to the
/// floor set by [`mark_stack`]. They come back zeroed if a later call goes
/// that deep again. Does nothing on a thread that did not call
/// [`mark_stack`], or off Linux.
#[inline(never)]
pub fn release_stack_below() {
    let floor = STACK_FLOOR.with(Cell::get);
    if floor == 0 {
        return;
    }
    let here = stack_address();
    #[cfg(target_os = "linux")]
    {
        let page = linux::page_size();
        // Both on this thread's stack (a frame deeper than the floor only
        // skips the release).
        debug_assert!(here.abs_diff(floor) < 1 << 20, "not a stack address");
        // Keep `MARGIN` under this frame: the red zone (128 bytes on
        // x86-64) and the frames of the call into the kernel, which must not
        // lose their page while it runs. (A whole page used to be kept,
        // which kept one more page of every streaming worker.)
        let hi = here.saturating_sub(MARGIN) & !(page - 1);
        let lo = floor.saturating_add(page - 1) & !(page - 1);
        if lo < hi {
            linux::discard(lo, hi);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = here;
}

/// Helpers for tests of code that releases stack.
#[cfg(test)]
pub(crate) mod testing {
    /// An address in the caller's frame.
    #[inline(always)]
    pub fn here() -> usize {
        super::stack_address()
    }

    /// Resident kB of the mapping that holds `addr`, from /proc/self/smaps;
    /// the mapping must be a thread stack of 512 KiB.
    pub fn resident_kb_at(addr: usize) -> usize {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for line in smaps.lines() {
            let first = line.split_whitespace().next().unwrap_or("");
            if let Some((a, b)) = first.split_once('-')
                && let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
            {
                inside = a <= addr && addr < b;
                if inside {
                    assert!(b - a <= 512 * 1024, "{addr:#x} is not on a 512 KiB stack");
                }
                continue;
            }
            if inside && let Some(rest) = line.strip_prefix("Rss:") {
                return rest.trim().trim_end_matches("kB").trim().parse().unwrap();
            }
        }
        panic!("no mapping holds {addr:#x}");
    }

    /// Touch about `kb` KiB of stack below the caller, then return.
    #[inline(never)]
    pub fn go_deep(kb: usize) {
        let mut block = [0u8; 1024];
        std::hint::black_box(&mut block);
        if kb > 1 {
            go_deep(kb - 1);
        }
        std::hint::black_box(&block);
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    fn stack_rss_after(mark: bool, release: bool) -> (usize, usize) {
        std::thread::Builder::new()
            .stack_size(512 * 1024)
            .spawn(move || {
                if mark {
                    mark_stack(512 * 1024);
                }
                let here = stack_address();
                go_deep(160);
                let deep = resident_kb_at(here);
                if release {
                    release_stack_below();
                }
                let after = resident_kb_at(here);
                // The thread goes on working over the released pages.
                go_deep(160);
                (deep, after)
            })
            .unwrap()
            .join()
            .unwrap()
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_marked_thread_gives_back_its_dead_stack() {
        let (deep, after) = stack_rss_after(true, true);
        assert!(deep >= 160, "the deep call touched {deep} kB");
        assert!(
            after + 128 <= deep,
            "stack resident {deep} kB before the release, {after} kB after"
        );
    }

    #[test]
    fn an_unmarked_thread_keeps_its_stack() {
        let (deep, after) = stack_rss_after(false, true);
        assert!(after + 16 > deep, "{deep} kB before, {after} kB after");
    }
}
