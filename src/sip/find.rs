//! Short byte searches, inlined, 16 bytes at a time.
//!
//! Per header line the scanner looks for the line end (CR or LF) and the colon, and the header
//! parsers for the end of each quoted string: each a few dozen bytes away. `memchr` answers each in ~60-90 instructions, most of them dispatch and AVX2
//! set-up meant for long haystacks; here an SSE2 compare of 16 bytes (part of every x86_64 CPU)
//! answers in a handful. The last block is read overlapping the previous one, so no byte is
//! ever read outside the slice; haystacks under 16 bytes fall back to a byte loop.

/// The first CR or LF in `s`.
#[inline(always)]
pub(crate) fn eol(s: &[u8]) -> Option<usize> {
    two(b'\r', b'\n', s)
}

/// The first `a` or `b` in `s`.
#[inline(always)]
pub(crate) fn two(a: u8, b: u8, s: &[u8]) -> Option<usize> {
    find_by(s, |c| c == a || c == b, Needles::Two(a, b))
}

/// The first `b` in `s`.
#[inline(always)]
pub(crate) fn byte(b: u8, s: &[u8]) -> Option<usize> {
    find_by(s, |c| c == b, Needles::Byte(b))
}

#[derive(Clone, Copy)]
enum Needles {
    Two(u8, u8),
    Byte(u8),
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn find_by(s: &[u8], scalar: impl Fn(u8) -> bool, needles: Needles) -> Option<usize> {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };
    if s.len() < 16 {
        return s.iter().position(|&b| scalar(b));
    }
    // Bit i of the mask: byte i of the 16 at `at` is a needle.
    let mask_at = |at: usize| -> u32 {
        debug_assert!(at + 16 <= s.len());
        // SAFETY: SSE2 is part of every x86_64 CPU, and `at + 16 <= s.len()` (callers below),
        // so the unaligned load reads inside `s`.
        unsafe {
            let v = _mm_loadu_si128(s.as_ptr().add(at).cast::<__m128i>());
            let hits = match needles {
                Needles::Two(a, b) => _mm_or_si128(
                    _mm_cmpeq_epi8(v, _mm_set1_epi8(a as i8)),
                    _mm_cmpeq_epi8(v, _mm_set1_epi8(b as i8)),
                ),
                Needles::Byte(b) => _mm_cmpeq_epi8(v, _mm_set1_epi8(b as i8)),
            };
            _mm_movemask_epi8(hits) as u32
        }
    };
    let mut at = 0;
    while at + 16 <= s.len() {
        let m = mask_at(at);
        if m != 0 {
            return Some(at + m.trailing_zeros() as usize);
        }
        at += 16;
    }
    if at == s.len() {
        return None;
    }
    // The tail: the last 16 bytes, without the ones already searched.
    let last = s.len() - 16;
    let m = mask_at(last) >> (at - last);
    (m != 0).then(|| at + m.trailing_zeros() as usize)
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn find_by(s: &[u8], scalar: impl Fn(u8) -> bool, _needles: Needles) -> Option<usize> {
    s.iter().position(|&b| scalar(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every answer equals a plain search: all lengths around the 16-byte steps, needles at
    /// every position, none at all.
    #[test]
    fn agrees_with_a_plain_search() {
        for len in 0..70 {
            for hit in 0..=len {
                let mut s: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
                if hit < len {
                    s[hit] = if hit % 2 == 0 { b'\r' } else { b'\n' };
                }
                let want = s.iter().position(|&b| b == b'\r' || b == b'\n');
                assert_eq!(eol(&s), want, "eol len {len} hit {hit}");
                if hit < len {
                    s[hit] = b':';
                }
                assert_eq!(byte(b':', &s), s.iter().position(|&b| b == b':'));
                assert_eq!(eol(&s), None);
            }
        }
    }
}
