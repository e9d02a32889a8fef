//! Zeroed tables the kernel may back with 2 MB pages.
//!
//! The transaction index is the one large table a request reads at a random place: 8–32 MB per
//! worker at 8k–31k registrations/s (Timer J holds 32 s of transactions). With 4 KB pages each
//! lookup is also a TLB miss, and on a VM a page walk is two-dimensional; its prefetch was a
//! fifth of `on_datagram`'s samples at sipp 8k/s (perf/RESULTS.md, session 14). A 2 MB-aligned
//! mapping advised `MADV_HUGEPAGE` lets that index sit in a handful of TLB entries.
//!
//! Transparent huge pages stay off for the rest of the process (`runtime::limit_huge_pages`):
//! the allocator's arenas would otherwise zero 2 MB inside page faults whenever they are given
//! back and touched again. That prctl leaves advised mappings like these alone on kernels that
//! know `PR_THP_DISABLE_EXCEPT_ADVISED` (6.18+); elsewhere these tables get 4 KB pages, as
//! before. Nothing here is needed for correctness: a failed advice only costs TLB misses.

use std::ptr::NonNull;

/// A huge page on x86-64 and aarch64 (4 KB base pages).
const HUGE: usize = 2 << 20;

/// Types for which all-zero bytes are a valid value, so a fresh anonymous mapping (which the
/// kernel zeroes) is an initialised table.
///
/// # Safety
/// Every field must accept all-zero bits: integers, arrays of them, and structs of those.
pub unsafe trait Zeroable: Copy {}

/// A fixed-length, zero-initialised slice in its own anonymous mapping: aligned to 2 MB and
/// advised for huge pages when it is at least that large. Pages are faulted in on first touch.
pub struct ZeroedSlice<T: Zeroable> {
    ptr: NonNull<T>,
    len: usize,
    /// The mapping's length in bytes (0: nothing mapped).
    mapped: usize,
}

// SAFETY: owns its elements like a `Box<[T]>`; the mapping is private to it.
unsafe impl<T: Zeroable + Send> Send for ZeroedSlice<T> {}
// SAFETY: shared access hands out only `&[T]`.
unsafe impl<T: Zeroable + Sync> Sync for ZeroedSlice<T> {}

impl<T: Zeroable> ZeroedSlice<T> {
    /// `len` zeroed elements. Aborts like `Vec` when the memory cannot be had.
    pub fn new(len: usize) -> ZeroedSlice<T> {
        let bytes = len
            .checked_mul(std::mem::size_of::<T>())
            .expect("table size overflows");
        assert!(std::mem::align_of::<T>() <= 4096, "page alignment suffices");
        if bytes == 0 {
            return ZeroedSlice {
                ptr: NonNull::dangling(),
                len,
                mapped: 0,
            };
        }
        let (ptr, mapped) = if bytes >= HUGE {
            map_huge(bytes.next_multiple_of(HUGE))
        } else {
            (map(bytes), bytes)
        };
        ZeroedSlice {
            ptr: ptr.cast(),
            len,
            mapped,
        }
    }
}

fn oom(bytes: usize) -> ! {
    std::alloc::handle_alloc_error(std::alloc::Layout::from_size_align(bytes, 4096).unwrap())
}

fn map(bytes: usize) -> NonNull<u8> {
    // SAFETY: a fresh private anonymous mapping at an address of the kernel's choosing.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        oom(bytes);
    }
    NonNull::new(p.cast()).unwrap_or_else(|| oom(bytes))
}

/// `bytes` (a multiple of `HUGE`) mapped at a `HUGE`-aligned address and advised for huge pages:
/// maps a page more than asked and gives back the unaligned ends.
fn map_huge(bytes: usize) -> (NonNull<u8>, usize) {
    let over = map(bytes + HUGE).as_ptr();
    let lead = (over as usize).next_multiple_of(HUGE) - over as usize;
    let tail = HUGE - lead;
    // SAFETY: both ranges lie inside the mapping just made, and nothing refers to them.
    unsafe {
        if lead > 0 {
            libc::munmap(over.cast(), lead);
        }
        let p = over.add(lead);
        if tail > 0 {
            libc::munmap(p.add(bytes).cast(), tail);
        }
        // Advice only: without it the table works the same on 4 KB pages.
        libc::madvise(p.cast(), bytes, libc::MADV_HUGEPAGE);
        (NonNull::new_unchecked(p), bytes)
    }
}

impl<T: Zeroable> Drop for ZeroedSlice<T> {
    fn drop(&mut self) {
        if self.mapped > 0 {
            // SAFETY: unmaps exactly the mapping `new` made; the slice is gone with `self`.
            unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.mapped) };
        }
    }
}

impl<T: Zeroable> std::ops::Deref for ZeroedSlice<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: `len` initialised (zeroed, `Zeroable`) elements live at `ptr` while `self` does.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Zeroable> std::ops::DerefMut for ZeroedSlice<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // SAFETY: integers.
    unsafe impl Zeroable for [u64; 8] {}

    #[test]
    fn small_and_empty_tables_are_zeroed_and_writable() {
        let empty = ZeroedSlice::<[u64; 8]>::new(0);
        assert!(empty.is_empty());
        let mut t = ZeroedSlice::<[u64; 8]>::new(100);
        assert_eq!(t.len(), 100);
        assert!(t.iter().all(|e| *e == [0; 8]));
        t[99][7] = 5;
        assert_eq!(t[99][7], 5);
    }

    #[test]
    fn large_tables_are_aligned_for_huge_pages_and_backed_by_them_where_thp_allows() {
        let len = (3 * HUGE) / 64 + 1;
        let mut t = ZeroedSlice::<[u64; 8]>::new(len);
        assert_eq!(t.as_ptr() as usize % HUGE, 0);
        assert_eq!(t.mapped, 4 * HUGE, "rounded up to whole huge pages");
        for e in t.iter_mut().step_by(HUGE / 64) {
            e[0] = 1;
        }
        assert_eq!(t.iter().filter(|e| e[0] == 1).count(), 4);
        // Whether the kernel backs the range with huge pages depends on the machine's THP
        // setting; where it is not `never`, an advised, aligned range gets them.
        let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled");
        if thp.is_ok_and(|s| !s.contains("[never]")) {
            let huge_kb = anon_huge_kb(t.as_ptr() as usize);
            assert!(
                huge_kb >= 2048,
                "AnonHugePages of the mapping: {huge_kb} kB"
            );
        }
    }

    /// `AnonHugePages` of the mapping starting at `start`, from /proc/self/smaps.
    fn anon_huge_kb(start: usize) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ') {
                if let Some((lo, _)) = range.split_once('-') {
                    if let Ok(lo) = usize::from_str_radix(lo, 16) {
                        inside = lo == start;
                        continue;
                    }
                }
            }
            if inside {
                if let Some(kb) = line.strip_prefix("AnonHugePages:") {
                    return kb.trim().trim_end_matches(" kB").trim().parse().unwrap();
                }
            }
        }
        0
    }
}
