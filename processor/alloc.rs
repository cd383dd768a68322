//! The heap, counted: a global allocator over mimalloc that keeps the
//! number of live bytes. The binary installs it; `vigil bench` reads it to
//! tell what retained state costs, and `/metrics` exports it
//! (`vigil_heap_bytes`).
//!
//! Each thread counts into its own cell and moves the sum into the shared
//! count once it reaches [`FLUSH`] bytes either way, and when the thread
//! ends: an atomic add on every allocation and free took a fifth of the CPU
//! samples in a profile of `vigil bench`. The shared count is therefore
//! behind by less than [`FLUSH`] bytes per running thread.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use mimalloc::MiMalloc as Inner;

static LIVE: AtomicI64 = AtomicI64::new(0);
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Bytes a thread counts on its own before it adds them to [`LIVE`].
const FLUSH: i64 = 64 * 1024;

/// A thread's uncounted bytes; given to [`LIVE`] when the thread ends.
struct Pending(Cell<i64>);

impl Drop for Pending {
    fn drop(&mut self) {
        LIVE.fetch_add(self.0.replace(0), Ordering::Relaxed);
    }
}

thread_local! {
    // Const-initialised: no lazy initialiser runs inside the allocator. The
    // destructor is registered with the C runtime (`__cxa_thread_atexit_impl`),
    // which allocates from libc, not from here.
    static PENDING: Pending = const { Pending(Cell::new(0)) };
}

/// Counts `delta` bytes allocated (or freed, negative).
#[inline]
fn count(delta: i64) {
    let counted = PENDING.try_with(|p| {
        let sum = p.0.get() + delta;
        if sum.abs() >= FLUSH {
            p.0.set(0);
            LIVE.fetch_add(sum, Ordering::Relaxed);
        } else {
            p.0.set(sum);
        }
    });
    // The thread's cell is gone (its destructors are running): count directly.
    if counted.is_err() {
        LIVE.fetch_add(delta, Ordering::Relaxed);
    }
}

/// The counting allocator; `#[global_allocator]` in the binary.
pub struct Counting;

// SAFETY: every call is forwarded unchanged to mimalloc; the
// counter has no effect on the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `alloc`'s contract, forwarded as is.
        let p = unsafe { Inner.alloc(layout) };
        if !p.is_null() {
            count(layout.size() as i64);
            if !INSTALLED.load(Ordering::Relaxed) {
                INSTALLED.store(true, Ordering::Relaxed); // once: a store per call dirties a shared line
            }
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { Inner.alloc_zeroed(layout) };
        if !p.is_null() {
            count(layout.size() as i64);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator (that is, from mimalloc) with `layout`.
        unsafe { Inner.dealloc(ptr, layout) };
        count(-(layout.size() as i64));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `dealloc` and `alloc`.
        let p = unsafe { Inner.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            count(new_size as i64 - layout.size() as i64);
        }
        p
    }
}

/// Returns the memory freed so far to the OS now rather than after
/// mimalloc's purge delay (1 s of idling). `vigil bench` calls it between
/// setting a measurement up and timing it: the setup frees a gigabyte of
/// generated events, and without this their purging (`madvise` calls and
/// the TLB shootdowns they cause) lands in the first 0.1–0.2 s of the timed
/// run, on the thread that ingests.
pub fn release_freed() {
    // SAFETY: `mi_collect` takes no pointers; it only walks mimalloc's own
    // structures, and is sound to call at any time from any thread.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

/// Live heap bytes, or `None` when the counting allocator is not installed
/// (the library's own tests and benches). Behind by less than 64 KiB per
/// running thread.
pub fn live_bytes() -> Option<i64> {
    INSTALLED.load(Ordering::Relaxed).then(|| LIVE.load(Ordering::Relaxed))
}
