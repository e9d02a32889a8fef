//! Cache prefetch hints for the hot path.
//!
//! At an edge server's table sizes the state a request needs (its transaction bucket, the
//! credential, the registration state) is cold when the request arrives, and each lookup's miss
//! waits for the one before when they are taken in turn. Asking for the lines early lets the
//! misses overlap with each other and with the parse. A prefetch is a hint: it never faults and
//! changes no result, only when the bytes arrive.

const LINE: usize = 64;

/// Starts loading the cache line holding the start of `*at`.
#[inline(always)]
pub fn line<T: ?Sized>(at: &T) {
    hint((at as *const T).cast::<u8>());
}

/// Starts loading every cache line `*at` spans.
#[inline(always)]
pub fn lines<T>(at: &T) {
    let start = (at as *const T).cast::<u8>();
    let span = (start as usize % LINE) + std::mem::size_of::<T>();
    for i in 0..span.div_ceil(LINE).max(1) {
        hint(start.wrapping_add(i * LINE));
    }
}

#[inline(always)]
fn hint(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint that never faults, whatever the address.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
