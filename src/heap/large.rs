//! Large blocks (≥ [`MIN`]): mapped from the OS, and on free kept for the next request of the
//! same size, within a bound on what the process holds.
//!
//! Why our own: a training step allocates and frees ~135 blocks of only four sizes (at batch
//! 64: 61, 31, 15 and 6 MB, 37 of 61 MB), the same each step. mimalloc, never purging, placed
//! them first-fit in its arenas and held 2.4–2.6 GB for a 400-video run whose live heap peaked
//! at 1.75 GB (40–50 % more); purging after a delay returned that memory only by faulting it in
//! again every step (1 s: +60 % epoch time). What the pattern needs is exact reuse by size — a
//! caching allocator like PyTorch's on the GPU — which no allocator crate offers for the CPU.
//!
//! A request with no kept block of its size (nor one up to [`OVER`] times larger to cut)
//! lengthens the largest shorter kept block rather than mapping a new one: only the added
//! bytes are fresh pages ([`Cache::grow`], Linux).
//!
//! The bound: blocks mapped (live + kept) never exceed the highest live total of large blocks
//! so far by more than a sixteenth of it or the block being mapped. A request with no kept
//! block of its size drops the least recently kept blocks until the new mapping fits under
//! that mark, so sizes that stop recurring (the last batch of an epoch, evaluation) are
//! returned to the OS rather than kept beside the ones in use.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// Requests from this size on are served here.
pub const MIN: usize = 4 << 20;

/// Mapped lengths are multiples of this (the x86-64 transparent huge page): sizes that differ
/// by less map the same length and share blocks, and the kernel aligns such mappings to it.
const GRAIN: usize = 2 << 20;

/// Kept blocks at most (more are unmapped, oldest first).
const SLOTS: usize = 128;

/// A request with no kept block of its size takes the smallest kept block up to this many
/// times larger.
const OVER: usize = 4;

/// What may be mapped beyond the high-water mark of blocks in use: 1/SLACK of it. The sizes
/// of a step peak at different moments, so with none a step maps and drops blocks every time
/// (400-video run: 1.82–1.87 GB peak RSS, 5,300 page faults, epochs 9.0–10.6 s); with 1/16:
/// 1.91–1.93 GB, 3,900 faults, 8.8–9.4 s; 1/8: 2.02 GB, 2,500, 8.7–9.1 s; mimalloc alone:
/// 2.45–2.66 GB, 1,800, 8.7–9.4 s (BENCHMARKS.md, issue 16).
const SLACK: usize = 16;

#[derive(Clone, Copy)]
struct Kept {
    ptr: usize,
    len: usize,
    /// When it was kept (a count of frees), for oldest-first dropping.
    at: u64,
    /// Start of the mapping it is part of (its own `ptr` unless cut from a larger block).
    origin: usize,
}

struct Cache {
    kept: [Option<Kept>; SLOTS],
    kept_bytes: usize,
    frees: u64,
    /// Blocks handed out that were cut from inside a mapping: `(ptr, origin)`, so that on
    /// free they join the kept parts of the same mapping beside them.
    pieces: [Option<(usize, usize)>; SLOTS],
}

/// Where [`alloc`]'s block comes from.
#[derive(Debug, PartialEq)]
enum Found {
    /// A kept block (cut to size).
    Kept(*mut u8),
    /// A kept block of this many bytes, lengthened.
    Grown(*mut u8, usize),
    /// None: a fresh mapping.
    None,
}

static CACHE: Mutex<Cache> = Mutex::new(Cache::new());

/// Mapped lengths of the large blocks in use, and their highest total.
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// The mapped length for a request of `size` bytes.
pub fn mapped_len(size: usize) -> usize {
    size.div_ceil(GRAIN) * GRAIN
}

fn lock() -> std::sync::MutexGuard<'static, Cache> {
    // Nothing panics while holding it; a poisoned lock still guards consistent data.
    CACHE.lock().unwrap_or_else(|e| e.into_inner())
}

/// A block of at least `size` bytes, aligned to the page; zeroed when `zeroed`. Null when the
/// OS refuses.
pub fn alloc(size: usize, zeroed: bool) -> *mut u8 {
    let need = mapped_len(size);
    let found = {
        let mut cache = lock();
        let found = match cache.take(need) {
            Some(ptr) => Found::Kept(ptr),
            None => cache.grow(need, LIVE.load(Relaxed), PEAK.load(Relaxed)),
        };
        if let Found::None = found {
            cache.make_room(LIVE.load(Relaxed), PEAK.load(Relaxed), need);
        }
        found
    };
    // The bytes of the block that held earlier contents (the rest are fresh zero pages).
    let (ptr, used) = match found {
        Found::Kept(ptr) => (ptr, size),
        Found::Grown(ptr, old) => (ptr, old.min(size)),
        Found::None => (map(need), 0),
    };
    if zeroed && !ptr.is_null() {
        // SAFETY: the block is `need ≥ size ≥ used` bytes, mapped, and owned by no one else.
        unsafe { std::ptr::write_bytes(ptr, 0, used) };
    }
    if !ptr.is_null() {
        let now = LIVE.fetch_add(need, Relaxed) + need;
        PEAK.fetch_max(now, Relaxed);
    }
    ptr
}

/// Takes back a block [`alloc`] returned for `size` bytes.
pub fn free(ptr: *mut u8, size: usize) {
    let len = mapped_len(size);
    LIVE.fetch_sub(len, Relaxed);
    lock().keep(ptr, len);
}

impl Cache {
    const fn new() -> Self {
        Self {
            kept: [None; SLOTS],
            kept_bytes: 0,
            frees: 0,
            pieces: [None; SLOTS],
        }
    }

    /// The most recently kept block of `need` bytes, else the smallest kept one of up to
    /// [`OVER`] times that, cut to `need`: a block is always as long as its request's
    /// [`mapped_len`], so a free needs no record of where it came from. The tail stays kept as a
    /// block of its own (its pages are already faulted in; unmapping them cost the next large
    /// request fresh pages: ResNet-50's fine-tuning step, whose sizes vary, faulted ~390 huge
    /// pages a step); a tail too short for any request here is unmapped.
    fn take(&mut self, need: usize) -> Option<*mut u8> {
        let exact = (self.kept.iter().enumerate())
            .filter_map(|(i, k)| k.filter(|k| k.len == need).map(|k| (k.at, i)))
            .max();
        let larger = || {
            (self.kept.iter().enumerate())
                .filter_map(|(i, k)| {
                    k.filter(|k| k.len > need && k.len <= OVER * need)
                        .map(|k| (k.len, i))
                })
                .min()
        };
        let i = match exact {
            Some((_, i)) => i,
            None => larger()?.1,
        };
        let k = self.kept[i].take().expect("found above");
        self.kept_bytes -= k.len;
        // Both ends are multiples of GRAIN: no huge page is split.
        let tail = (k.ptr + need, k.len - need);
        if tail.1 >= MIN {
            // The slot just emptied holds it.
            self.kept[i] = Some(Kept {
                ptr: tail.0,
                len: tail.1,
                at: k.at,
                origin: k.origin,
            });
            self.kept_bytes += tail.1;
        } else if tail.1 > 0 {
            unmap(tail.0 as *mut u8, tail.1);
        }
        self.hand_out(k.ptr, k.origin);
        Some(k.ptr as *mut u8)
    }

    /// Records a block handed out from inside the mapping that starts at `origin` (nothing for
    /// a mapping's start), so that [`Cache::keep`] joins it to that mapping's kept parts.
    fn hand_out(&mut self, ptr: usize, origin: usize) {
        if origin != ptr
            && let Some(slot) = self.pieces.iter_mut().find(|p| p.is_none())
        {
            *slot = Some((ptr, origin));
        }
    }

    /// Keeps a freed block of `len` bytes (dropping the oldest when every slot is taken),
    /// joined with the kept parts of the same mapping on either side: a block cut for a smaller
    /// request comes back whole once its pieces are free, instead of the larger size being
    /// mapped (and faulted in) again while the pieces sit kept (evaluation batches faulted ~100
    /// huge pages each that way; BENCHMARKS.md, issue 16).
    fn keep(&mut self, ptr: *mut u8, len: usize) {
        self.frees += 1;
        let (mut ptr, mut len) = (ptr as usize, len);
        let piece = self
            .pieces
            .iter()
            .position(|p| p.is_some_and(|p| p.0 == ptr));
        let origin = piece.map_or(ptr, |i| self.pieces[i].take().expect("found").1);
        while let Some(i) = self.kept.iter().position(|k| {
            k.is_some_and(|k| k.origin == origin && (k.ptr == ptr + len || k.ptr + k.len == ptr))
        }) {
            let k = self.kept[i].take().expect("found");
            self.kept_bytes -= k.len;
            (ptr, len) = (ptr.min(k.ptr), len + k.len);
        }
        if self.kept.iter().all(Option::is_some) {
            self.drop_oldest();
        }
        let slot = self.kept.iter_mut().find(|k| k.is_none());
        *slot.expect("a slot is free") = Some(Kept {
            ptr,
            len,
            at: self.frees,
            origin,
        });
        self.kept_bytes += len;
    }

    /// With no kept block to take for `need` bytes: the largest kept block shorter than that,
    /// moved and lengthened to `need` by the kernel (`mremap`, which moves its page tables, not
    /// its bytes), after room is made for the `need - len` new bytes. Only those are fresh
    /// pages: an evaluation, whose sizes peak at different moments than its kept blocks allow,
    /// otherwise mapped ~290 MB anew a batch (~145 huge-page faults; BENCHMARKS.md, issue 16).
    #[cfg(target_os = "linux")]
    fn grow(&mut self, need: usize, live: usize, peak: usize) -> Found {
        let Some(i) = (self.kept.iter().enumerate())
            .filter_map(|(i, k)| k.filter(|k| k.len < need).map(|k| (k.len, i)))
            .max()
            .map(|(_, i)| i)
        else {
            return Found::None;
        };
        let k = self.kept[i].take().expect("found above");
        self.kept_bytes -= k.len;
        self.make_room(live + k.len, peak, need - k.len);
        // SAFETY: `k` is a kept block (a whole mapping or a GRAIN-aligned part of one), owned
        // by no one; the kernel may move it.
        let p = unsafe { libc::mremap(k.ptr as *mut _, k.len, need, libc::MREMAP_MAYMOVE) };
        if p == libc::MAP_FAILED {
            unmap(k.ptr as *mut u8, k.len);
            return Found::None;
        }
        // Lengthened where it was: still a part of its mapping (a piece when not its start).
        if p as usize == k.ptr {
            self.hand_out(k.ptr, k.origin);
        }
        Found::Grown(p.cast(), k.len)
    }

    #[cfg(not(target_os = "linux"))]
    fn grow(&mut self, _: usize, _: usize, _: usize) -> Found {
        Found::None
    }

    /// Drops kept blocks, oldest first, until a new mapping of `need` bytes beside `live`
    /// bytes in use keeps the total under the high-water mark `peak` of blocks in use and a
    /// [`SLACK`]th of it.
    fn make_room(&mut self, live: usize, peak: usize, need: usize) {
        let mark = (peak + peak / SLACK).max(live + need);
        while live + self.kept_bytes + need > mark && self.drop_oldest() {}
    }

    /// Unmaps the oldest kept block; false when none is kept.
    fn drop_oldest(&mut self) -> bool {
        let Some(slot) = self
            .kept
            .iter_mut()
            .filter(|k| k.is_some())
            .min_by_key(|k| k.map_or(u64::MAX, |k| k.at))
        else {
            return false;
        };
        let k = slot.take().expect("filtered on is_some");
        self.kept_bytes -= k.len;
        unmap(k.ptr as *mut u8, k.len);
        true
    }
}

fn map(len: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping at an address of the kernel's choice; it aliases
    // nothing.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return std::ptr::null_mut();
    }
    // Huge pages where the system allows them on request: 1/512 of the page faults when the
    // block is first written. Advice only; its failure changes nothing.
    #[cfg(target_os = "linux")]
    // SAFETY: the range was just mapped.
    unsafe {
        libc::madvise(p, len, libc::MADV_HUGEPAGE)
    };
    p.cast()
}

fn unmap(ptr: *mut u8, len: usize) {
    // SAFETY: `ptr..ptr + len` is a whole mapping made by `map`, or the tail of one, and no
    // longer handed out.
    unsafe { libc::munmap(ptr.cast(), len) };
    #[cfg(test)]
    let _ = tests::UNMAPPED.try_with(|u| u.borrow_mut().push((ptr as usize, len)));
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: usize = 1 << 20;

    thread_local! {
        /// What [`unmap`] unmapped on this thread. (Asking the kernel is racy: the other tests'
        /// allocations may map a freed range again at once.)
        pub static UNMAPPED: std::cell::RefCell<Vec<(usize, usize)>> =
            const { std::cell::RefCell::new(Vec::new()) };
    }

    fn unmapped(ptr: *mut u8, len: usize) -> bool {
        UNMAPPED.with(|u| u.borrow().contains(&(ptr as usize, len)))
    }

    /// Whether every page of `ptr..ptr + len` is mapped (`mincore` fails on unmapped ones).
    fn mapped(ptr: *mut u8, len: usize) -> bool {
        let mut pages = vec![0u8; len.div_ceil(4096)];
        // SAFETY: `pages` holds one byte per page of the range.
        unsafe { libc::mincore(ptr.cast(), len, pages.as_mut_ptr().cast()) == 0 }
    }

    /// A cache of its own (the process's is shared with every test): reuse by exact size, most
    /// recent first; else a block up to 4× larger, cut to size with its tail kept (and a tail
    /// under [`MIN`] unmapped); never one more than 4× larger.
    #[test]
    fn reuses_by_size_and_cuts_larger_blocks() {
        let mut c = Cache::new();
        let (a, b, big) = (map(6 * MB), map(6 * MB), map(32 * MB));
        c.keep(a, 6 * MB);
        c.keep(big, 32 * MB);
        c.keep(b, 6 * MB);
        assert_eq!(
            c.take(6 * MB),
            Some(b),
            "the most recently kept of the size"
        );
        assert_eq!(c.take(6 * MB), Some(a));
        assert_eq!(c.take(6 * MB), None, "32 MB is more than 4× 6 MB");
        assert_eq!(c.kept_bytes, 32 * MB);
        assert_eq!(c.take(16 * MB), Some(big), "cut to 16 MB");
        assert_eq!(c.kept_bytes, 16 * MB, "the tail is kept");
        let tail = big.wrapping_add(16 * MB);
        assert_eq!(c.take(14 * MB), Some(tail), "and serves the next request");
        assert_eq!(
            c.kept_bytes, 0,
            "its 2 MB tail, too short to serve, unmapped"
        );
        assert!(mapped(big, 30 * MB) && unmapped(big.wrapping_add(30 * MB), 2 * MB));
        for (p, len) in [(a, 6 * MB), (b, 6 * MB), (big, 16 * MB), (tail, 14 * MB)] {
            unmap(p, len);
        }
    }

    /// Pieces cut from one mapping join again as they are freed, in any order, with the
    /// mapping's kept parts beside them; the whole block then serves its own size again.
    #[test]
    fn cut_pieces_join_their_mapping_again() {
        let mut c = Cache::new();
        let big = map(32 * MB);
        c.keep(big, 32 * MB);
        let head = c.take(16 * MB).expect("cut from 32 MB");
        let middle = c.take(8 * MB).expect("cut from the 16 MB tail");
        assert_eq!((head, middle), (big, big.wrapping_add(16 * MB)));
        assert_eq!(c.kept_bytes, 8 * MB, "the last 8 MB kept");
        c.keep(middle, 8 * MB);
        assert_eq!(
            c.take(16 * MB),
            Some(middle),
            "middle and end joined: 16 MB"
        );
        c.keep(middle, 16 * MB);
        c.keep(head, 16 * MB);
        assert_eq!(c.kept.iter().flatten().count(), 1, "one block again");
        assert_eq!(c.take(32 * MB), Some(big), "whole, by exact size");
        assert_eq!(c.kept_bytes, 0);
        assert!(
            c.pieces.iter().all(Option::is_none),
            "no piece left on record"
        );
        unmap(big, 32 * MB);
    }

    /// With no block to take, the largest shorter one is lengthened: its bytes stay (moved,
    /// not copied), the rest reads zero, and room is made for the new bytes only.
    #[cfg(target_os = "linux")]
    #[test]
    fn lengthens_the_largest_shorter_block_in_place_of_a_new_mapping() {
        let (mut c, mut tight) = (Cache::new(), Cache::new());
        for cache in [&mut c, &mut tight] {
            let (small, mid) = (map(4 * MB), map(8 * MB));
            // SAFETY: `mid` is 8 MB, mapped, and ours.
            unsafe { std::ptr::write_bytes(mid, 0x5A, 8 * MB) };
            cache.keep(small, 4 * MB);
            cache.keep(mid, 8 * MB);
        }
        assert_eq!(
            c.grow(2 * MB, 0, 64 * MB),
            Found::None,
            "none shorter than 2 MB"
        );
        assert_eq!(c.kept_bytes, 12 * MB);
        let Found::Grown(p, 8_388_608) = c.grow(12 * MB, 0, 64 * MB) else {
            panic!("the 8 MB block should be lengthened");
        };
        // SAFETY: `p` is the 12 MB block just made, ours.
        let bytes = unsafe { std::slice::from_raw_parts(p, 12 * MB) };
        assert!(bytes[..8 * MB].iter().all(|&b| b == 0x5A), "contents moved");
        assert!(
            bytes[8 * MB..].iter().all(|&b| b == 0),
            "new bytes read zero"
        );
        assert_eq!(
            c.kept_bytes,
            4 * MB,
            "room enough: the 4 MB block stays kept"
        );

        // Peak 12 MB: the 8 MB block grown by 4 beside the kept 4 would pass 12 + 1/16.
        let Found::Grown(q, _) = tight.grow(12 * MB, 0, 12 * MB) else {
            panic!("the 8 MB block should be lengthened");
        };
        assert_eq!(tight.kept_bytes, 0, "the kept 4 MB block made room");
        assert_eq!(
            UNMAPPED.with(|u| u.borrow().last().map(|u| u.1)),
            Some(4 * MB)
        );
        while c.drop_oldest() {}
        unmap(p, 12 * MB);
        unmap(q, 12 * MB);
    }

    /// Room for a new mapping: the oldest kept blocks go until live + kept + new fits under
    /// the high-water mark, and no further; a full table drops its oldest.
    #[test]
    fn makes_room_oldest_first_under_the_high_water_mark() {
        let mut c = Cache::new();
        let blocks: Vec<_> = (0..3).map(|_| map(4 * MB)).collect();
        for &p in &blocks {
            c.keep(p, 4 * MB);
        }
        // 20 MB in use, peak 28 (+ 1/16 = 29.75): a 4 MB mapping fits beside 4 of the 12 kept.
        c.make_room(20 * MB, 28 * MB, 4 * MB);
        assert_eq!(c.kept_bytes, 4 * MB);
        assert!(unmapped(blocks[0], 4 * MB) && unmapped(blocks[1], 4 * MB));
        assert_eq!(c.take(4 * MB), Some(blocks[2]), "the newest was kept");
        c.keep(blocks[2], 4 * MB);
        c.make_room(0, 8 * MB, 4 * MB);
        assert_eq!(c.kept_bytes, 4 * MB, "nothing dropped when there is room");

        let mut full = Cache::new();
        let first = map(GRAIN);
        full.keep(first, GRAIN);
        for _ in 1..SLOTS {
            full.keep(map(GRAIN), GRAIN);
        }
        full.keep(map(GRAIN), GRAIN);
        assert_eq!(full.kept_bytes, SLOTS * GRAIN);
        assert!(unmapped(first, GRAIN), "the oldest went for the newest");
        while full.drop_oldest() {}
        assert_eq!(full.kept_bytes, 0);
        c.make_room(0, 0, 4 * MB);
        assert_eq!(c.kept_bytes, 0);
    }

    /// Through the process's allocator, with other tests allocating at the same time: what is
    /// asked zeroed is zero even in a reused block, and reallocation across the 4 MiB line keeps
    /// the contents both ways.
    #[test]
    fn the_allocator_zeroes_reused_blocks_and_keeps_contents_across_the_line() {
        for _ in 0..4 {
            drop(vec![0xABu8; 6 * MB]);
            let v = vec![0u8; 6 * MB];
            assert!(v.iter().all(|&b| b == 0));
        }
        let mut v: Vec<u32> = (0..(MB / 4) as u32).collect(); // 1 MiB: mimalloc
        v.extend(MB as u32 / 4..(3 * MB) as u32); // 12 MiB: mapped
        assert!(v.iter().enumerate().all(|(i, &x)| x == i as u32));
        v.truncate(MB / 2);
        v.shrink_to_fit(); // 2 MiB: back to mimalloc
        assert!(v.iter().enumerate().all(|(i, &x)| x == i as u32));
        // More than page alignment: mimalloc serves it.
        let layout = std::alloc::Layout::from_size_align(8 * MB, 1 << 16).unwrap();
        // SAFETY: non-zero size; freed with the same layout.
        unsafe {
            let p = std::alloc::alloc(layout);
            assert!(!p.is_null() && (p as usize).is_multiple_of(1 << 16));
            std::alloc::dealloc(p, layout);
        }
    }
}
