//! The process's allocator: mimalloc, told to keep freed memory, for blocks under 4 MiB; larger
//! ones mapped and reused by size ([`large`]); with a count of the bytes live on the heap and
//! their high-water mark, so that memory can be told apart from what the allocator keeps
//! ([`live_bytes`], [`peak_bytes`]; `cace bench` reports both beside RSS).
//!
//! Large tensors (a `[64, 10, 7, 7, 512]` activation is 64 MB) are allocated and freed many
//! times per step. glibc returns them to the OS each time and the kernel then zeroes fresh
//! pages on every use: a third of a training step went to page faults. mimalloc, told never to
//! purge freed memory ([`init_runtime`]), reuses memory instead (purging after a delay, even
//! 1 s, cost 40 % of a step), but placed the large blocks so that it held 40–50 % more than was
//! live; [`large`] keeps them by size instead (BENCHMARKS.md, issue 16).
//!
//! Not under `cargo fuzz` (which sets `cfg(fuzzing)`): there the system allocator lets the
//! sanitizer's malloc hooks see every allocation, so libFuzzer reports a single huge one
//! (`-malloc_limit_mb`) instead of mimalloc reserving it unseen; the counts stay 0.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use mimalloc::MiMalloc;

#[cfg(unix)]
mod large;

#[cfg(not(fuzzing))]
#[global_allocator]
static GLOBAL: Counting = Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// mimalloc and [`large`], counting the bytes they hand out. Two relaxed atomic operations per
/// call: nothing measurable beside the work a tensor allocation is made for.
struct Counting;

fn grew(n: usize) {
    let now = LIVE.fetch_add(n, Relaxed) + n;
    if now > PEAK.load(Relaxed) {
        PEAK.fetch_max(now, Relaxed);
    }
}

fn shrank(n: usize) {
    LIVE.fetch_sub(n, Relaxed);
}

/// Whether a request goes to [`large`] (page alignment is all a mapping guarantees).
#[cfg(unix)]
fn is_large(size: usize, align: usize) -> bool {
    size >= large::MIN && align <= 4096
}

/// Elsewhere everything goes to mimalloc.
#[cfg(not(unix))]
fn is_large(_: usize, _: usize) -> bool {
    false
}

#[cfg(not(unix))]
mod large {
    pub fn alloc(_: usize, _: bool) -> *mut u8 {
        unreachable!("is_large is false")
    }
    pub fn free(_: *mut u8, _: usize) {
        unreachable!("is_large is false")
    }
    pub fn mapped_len(n: usize) -> usize {
        n
    }
}

// SAFETY: requests are forwarded unchanged to mimalloc's `GlobalAlloc`, or served by `large`
// (page-aligned blocks of at least the size asked); a block is returned to the one that made
// it, told apart by the same test on its layout. The counters are updated only for calls that
// succeeded.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = if is_large(layout.size(), layout.align()) {
            large::alloc(layout.size(), false)
        } else {
            unsafe { MiMalloc.alloc(layout) }
        };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = if is_large(layout.size(), layout.align()) {
            large::alloc(layout.size(), true)
        } else {
            unsafe { MiMalloc.alloc_zeroed(layout) }
        };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_large(layout.size(), layout.align()) {
            large::free(ptr, layout.size());
        } else {
            unsafe { MiMalloc.dealloc(ptr, layout) };
        }
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let (old, align) = (layout.size(), layout.align());
        let (was_large, now_large) = (is_large(old, align), is_large(new_size, align));
        if !was_large && !now_large {
            let p = unsafe { MiMalloc.realloc(ptr, layout, new_size) };
            if !p.is_null() {
                shrank(old);
                grew(new_size);
            }
            return p;
        }
        if was_large && now_large && large::mapped_len(old) == large::mapped_len(new_size) {
            shrank(old);
            grew(new_size);
            return ptr; // the mapping already holds `new_size` bytes
        }
        // SAFETY: the layout is valid (same alignment, size checked non-zero by the caller).
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, align) };
        let p = unsafe { self.alloc(new_layout) };
        if !p.is_null() {
            // SAFETY: both blocks hold at least `min(old, new_size)` bytes and do not overlap.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, p, old.min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        p
    }
}

/// Bytes currently allocated on the heap (requested sizes, all threads).
pub fn live_bytes() -> usize {
    LIVE.load(Relaxed)
}

/// The most [`live_bytes`] has been since the start or the last [`reset_peak`].
pub fn peak_bytes() -> usize {
    PEAK.load(Relaxed)
}

/// Starts a new high-water mark at the current live bytes.
pub fn reset_peak() {
    PEAK.store(LIVE.load(Relaxed), Relaxed);
}

/// Process-wide settings for fast numeric work; call once at start-up (the `cace` binary does).
pub fn init_runtime() {
    // -1 = never purge. `MIMALLOC_PURGE_DELAY` in the environment (read by mimalloc itself)
    // takes precedence.
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
}

/// `mi_option_purge_delay`, which libmimalloc-sys does not export: it sits right before
/// `mi_option_use_numa_nodes` in both bundled mimalloc versions (v2 and v3 `mimalloc.h`).
/// libmimalloc-sys is pinned in Cargo.toml, and a test checks the index by its default (1000 ms
/// in the bundled mimalloc v3, `src/options.c`; 10 ms in v2).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t =
    libmimalloc_sys::mi_option_use_numa_nodes - 1;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purge_delay_option_index() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return; // the environment sets the option; its default cannot be seen
        }
        let get = || unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        // options.c: purge_delay defaults to 1000 ms (v3) or 10 ms (v2); its neighbours default to
        // 1 (eager_commit_delay) and 0 (use_numa_nodes), so another index would not give these.
        let default = get();
        assert!(
            default == 1000 || default == 10,
            "the option index no longer names mi_option_purge_delay (default {default})"
        );
        init_runtime();
        assert_eq!(get(), -1);
    }

    /// One GiB reserved (never touched) moves the counts by a GiB; other tests allocate and
    /// free concurrently, so the checks leave them half of it. (`realloc` is not exercised
    /// here: on a large block it copies, touching the pages.)
    #[test]
    #[cfg(not(fuzzing))]
    fn counts_what_is_allocated_and_freed() {
        let _serial = crate::rng_lock(); // held by the tests that measure heap peaks, too
        const GIB: usize = 1 << 30;
        let before = live_bytes();
        let v: Vec<u8> = std::hint::black_box(Vec::with_capacity(GIB));
        let during = live_bytes();
        assert!(during >= before + GIB / 2, "{before} → {during}");
        assert!(peak_bytes() >= before + GIB / 2);
        drop(v);
        let after = live_bytes();
        assert!(after + GIB / 2 <= during, "{during} → {after}");
        reset_peak();
        assert!(peak_bytes() < during);
    }
}
