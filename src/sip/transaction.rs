//! RFC 3261 §17.2 server transactions for non-INVITE requests, in the form a stateless-fast
//! registrar needs.
//!
//! Owns: matching a request to an existing transaction (§17.2.3) and remembering, until Timer J
//! fires, how it was answered. What is remembered is a small *recipe* (the caller's type: a
//! status code plus the few values that made the response, e.g. the nonce), not the response
//! bytes: the response is regenerated from the retransmitted request, which is byte-identical,
//! so the answer is too. That keeps a transaction at ~64 bytes in the ring plus ~16 in the index,
//! so 64·T1 of state at tens of thousands of requests per second stays affordable. Time is
//! passed in.

use super::headers::{RequestHeaders, Via};
use super::scan::Method;
use crate::hugemem::{Zeroable, ZeroedSlice};
use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher};

//= https://www.rfc-editor.org/rfc/rfc3261#section-17.1.1.1
//# T1 ... 500ms default
pub const T1_MS: u64 = 500;
//= https://www.rfc-editor.org/rfc/rfc3261#section-17.2.2
//# Timer J ... 64*T1 for UDP, zero seconds for reliable transports
pub const TIMER_J_UDP_MS: u64 = 64 * T1_MS;

/// A transaction's identity, a keyed 128-bit hash of what §17.2.3 compares. Two `u64`s, not a
/// `u128`: 8-byte alignment keeps a table entry (key + recipe) from padding out to 16.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TxnKey {
    hi: u64,
    lo: u64,
}

impl TxnKey {
    pub const fn new(v: u128) -> TxnKey {
        TxnKey {
            hi: (v >> 64) as u64,
            lo: v as u64,
        }
    }

    /// 64 of the key's bits (e.g. to derive a To-tag that a retransmission gets again).
    pub fn low(self) -> u64 {
        self.lo
    }
}

/// Keys the hashes with per-process random state, so nobody can aim collisions at the table.
#[derive(Default)]
pub struct TxnKeyHasher {
    // Two independently seeded hashers give 128 bits (foldhash: SipHash was a visible cost here).
    a: foldhash::quality::RandomState,
    b: foldhash::quality::RandomState,
}

const MAGIC_COOKIE: &[u8] = b"z9hG4bK";

impl TxnKeyHasher {
    pub fn key(&self, req: &RequestHeaders<'_>, request_uri: &[u8]) -> TxnKey {
        let method = matching_method(req.method).unwrap_or(req.cseq.method_raw);
        match req.via.branch {
            Some(branch) if branch.starts_with(MAGIC_COOKIE) => {
                //# 1. the branch parameter in the request is equal to the one in the top Via
                //# header field of the request that created the transaction, and
                //# 2. the sent-by value in the top Via of the request is equal to the one in
                //# the request that created the transaction
                self.rfc3261_key(branch, &req.via, method)
            }
            _ => {
                //= https://www.rfc-editor.org/rfc/rfc3261#section-17.2.3
                //# the Request-URI, To tag, From tag, Call-ID, CSeq, and top Via header field
                //# match those of the INVITE request which created the transaction
                let mut g = self.gather();
                g.feed(request_uri);
                g.feed(req.to.tag.unwrap_or_default());
                g.feed(req.from.tag.unwrap_or_default());
                g.feed(req.call_id);
                g.feed(&req.cseq.seq.to_be_bytes());
                g.feed(req.via.raw);
                g.feed(method);
                g.finish()
            }
        }
    }

    /// The key of a request with an RFC 3261 branch, from its top Via and method alone: the
    /// same key [`TxnKeyHasher::key`] gives once the whole request is parsed, known before
    /// that. `None` for an RFC 2543 branch (whose key needs the other headers) and for an
    /// extension method (whose key takes the CSeq's spelling of it).
    pub fn early_key(&self, via: &Via<'_>, method: Method) -> Option<TxnKey> {
        let branch = via.branch.filter(|b| b.starts_with(MAGIC_COOKIE))?;
        Some(self.rfc3261_key(branch, via, matching_method(method)?))
    }

    fn rfc3261_key(&self, branch: &[u8], via: &Via<'_>, method: &[u8]) -> TxnKey {
        let mut g = self.gather();
        g.feed(branch);
        g.feed(via.host);
        g.feed(&via.port.unwrap_or(0).to_be_bytes());
        g.feed(method);
        g.finish()
    }

    fn gather(&self) -> Gather {
        Gather {
            buf: [0; GATHER_BYTES],
            len: 0,
            ha: self.a.build_hasher(),
            hb: self.b.build_hasher(),
        }
    }
}

//= https://www.rfc-editor.org/rfc/rfc3261#section-17.2.3
//# the method of the request matches the one that created the transaction, except
//# for ACK, where the method of the request that created the transaction is INVITE.
/// The method a request's transaction is matched by; `None` for an extension method, which is
/// matched by its CSeq spelling.
fn matching_method(method: Method) -> Option<&'static [u8]> {
    match method {
        Method::Ack => Some(b"INVITE"),
        Method::Other => None,
        m => Some(m.as_str().as_bytes()),
    }
}

/// Room for a usual RFC 3261 key (branch, host, port, method: ~60 bytes) in one piece.
const GATHER_BYTES: usize = 128;

/// The key's fields, each prefixed with its length (so no two field lists hash alike by running
/// together), gathered into one buffer: hashing one slice costs each hasher a few wide steps
/// where feeding it field by field cost a step per field and per separator. Fields that do not
/// fit are passed on as they come; the split depends only on the field lengths, so equal field
/// lists still give equal keys.
struct Gather {
    buf: [u8; GATHER_BYTES],
    len: usize,
    ha: foldhash::quality::FoldHasher,
    hb: foldhash::quality::FoldHasher,
}

impl Gather {
    fn feed(&mut self, bytes: &[u8]) {
        let prefix = (bytes.len() as u32).to_le_bytes();
        if self.len + prefix.len() + bytes.len() > GATHER_BYTES {
            self.spill();
        }
        if prefix.len() + bytes.len() > GATHER_BYTES {
            for h in [&mut self.ha, &mut self.hb] {
                h.write(&prefix);
                h.write(bytes);
            }
            return;
        }
        let at = self.len;
        self.buf[at..at + prefix.len()].copy_from_slice(&prefix);
        self.buf[at + prefix.len()..at + prefix.len() + bytes.len()].copy_from_slice(bytes);
        self.len = at + prefix.len() + bytes.len();
    }

    fn spill(&mut self) {
        let gathered = &self.buf[..self.len];
        self.ha.write(gathered);
        self.hb.write(gathered);
        self.len = 0;
    }

    fn finish(&mut self) -> TxnKey {
        self.spill();
        TxnKey {
            hi: self.ha.finish(),
            lo: self.hb.finish(),
        }
    }
}

/// One remembered transaction. The ring holds them in completion order, which is Timer J
/// order (every entry lives the same Timer J).
#[derive(Clone, Copy)]
struct Done<R> {
    key: TxnKey,
    recipe: R,
    expires_at: u64,
}

/// Eight index slots in one cache line: a tag of each key (the low 32 bits of its hash) and where
/// its entry is in the ring, as the low 32 bits of its sequence number plus one (0: empty). A
/// slot whose entry has left the ring is dead and is reused: expiry never touches the index.
///
/// A key's bucket is its hash's low bits, so its tag names its bucket in any index of up to
/// 2^32 buckets: a growing index re-indexes bucket by bucket, reading neither the ring nor the
/// keys, and both buckets an old one splits into are written in order.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Bucket {
    tags: [u32; SLOTS],
    at: [u32; SLOTS],
}

const SLOTS: usize = 8;

/// The index starts this small (64 KiB) and doubles as the ring grows, to at most
/// `max_entries / 4` buckets (half full at the cap).
const MIN_BUCKETS: usize = 1024;

/// Old buckets split per completion while the index grows. The index grows when the ring holds
/// four entries per bucket, so the old index is dropped before the ring has grown by a quarter,
/// and no completion pays for more than one bucket's entries.
const SPLITS_PER_COMPLETION: usize = 1;

/// The most buckets an index may have: a tag must name its bucket.
const MAX_BUCKETS: usize = 1 << 31;

// SAFETY: integers only; all-zero is the empty bucket.
unsafe impl Zeroable for Bucket {}

/// The buckets live in their own mapping, on 2 MB pages where the kernel allows (`hugemem`): a
/// lookup is then a cache miss but rarely also a TLB miss.
struct Index {
    buckets: ZeroedSlice<Bucket>,
    mask: usize,
}

impl Index {
    fn new(buckets: usize) -> Index {
        Index {
            buckets: ZeroedSlice::new(buckets),
            mask: buckets - 1,
        }
    }
    fn bucket(&self, key: TxnKey) -> &Bucket {
        &self.buckets[tag_of(key) as usize & self.mask]
    }
}

fn tag_of(key: TxnKey) -> u32 {
    key.lo as u32
}

/// The ring's live window: sequence numbers `base .. base + len`.
#[derive(Clone, Copy)]
struct Window {
    base: u64,
    len: usize,
}

impl Window {
    /// The ring offset a slot's `at` names, if that entry is still in the ring. (`at` keeps 32
    /// bits of the sequence number; an entry 2^32 completions old could alias a live one, which
    /// the full key compare after it catches.)
    fn offset(self, at: u32) -> Option<usize> {
        if at == 0 {
            return None;
        }
        let off = at.wrapping_sub(1).wrapping_sub(self.base as u32) as usize;
        (off < self.len).then_some(off)
    }

    /// Writes the key tagged `tag` at ring slot `at` into its bucket: an empty or dead slot if
    /// there is one, else over the oldest entry there (which is then forgotten before its
    /// Timer J, like the flood cap does: a late retransmission of it is processed again).
    fn place(self, index: &mut Index, tag: u32, at: u32) {
        let b = &mut index.buckets[tag as usize & index.mask];
        let mut victim = 0;
        let mut oldest = usize::MAX;
        for k in 0..SLOTS {
            match self.offset(b.at[k]) {
                None => {
                    victim = k;
                    break;
                }
                Some(off) if off < oldest => {
                    oldest = off;
                    victim = k;
                }
                Some(_) => {}
            }
        }
        b.tags[victim] = tag;
        b.at[victim] = at;
    }
}

/// Entries per ring chunk (256 KiB of 64-byte entries).
const CHUNK: usize = 4096;

/// A FIFO in fixed-size chunks: growing it never copies what it holds (a `VecDeque` doubles by
/// moving everything, a stall of milliseconds at a million entries), and a chunk emptied at the
/// front is kept for the next one needed at the back, so a steady ring allocates nothing
/// (`tests/no_alloc.rs`).
struct Ring<T> {
    chunks: VecDeque<Vec<T>>,
    /// Index of the first entry in `chunks[0]`.
    head: usize,
    len: usize,
    spare: Option<Vec<T>>,
    primed: bool,
}

impl<T> Ring<T> {
    fn new() -> Ring<T> {
        Ring {
            chunks: VecDeque::new(),
            head: 0,
            len: 0,
            spare: None,
            primed: false,
        }
    }
    fn len(&self) -> usize {
        self.len
    }
    fn get(&self, off: usize) -> &T {
        let i = self.head + off;
        &self.chunks[i / CHUNK][i % CHUNK]
    }
    fn get_mut(&mut self, off: usize) -> &mut T {
        let i = self.head + off;
        &mut self.chunks[i / CHUNK][i % CHUNK]
    }
    fn front(&self) -> Option<&T> {
        (self.len > 0).then(|| self.get(0))
    }
    fn push_back(&mut self, v: T) {
        if self.chunks.back().is_none_or(|c| c.len() == CHUNK) {
            let chunk = self
                .spare
                .take()
                .unwrap_or_else(|| Vec::with_capacity(CHUNK));
            self.chunks.push_back(chunk);
            if !self.primed {
                // The first chunk comes with a spare: a window that straddles a chunk boundary
                // needs two, and then a steady ring never allocates again.
                self.primed = true;
                self.spare = Some(Vec::with_capacity(CHUNK));
            }
        }
        if let Some(c) = self.chunks.back_mut() {
            c.push(v);
            self.len += 1;
        }
    }
    /// Drops the first entry; false if there was none.
    fn pop_front(&mut self) -> bool {
        if self.len == 0 {
            return false;
        }
        self.head += 1;
        self.len -= 1;
        if self.head == CHUNK || self.len == 0 {
            if let Some(mut c) = self.chunks.pop_front() {
                c.clear();
                self.spare = Some(c);
            }
            self.head = 0;
        }
        true
    }
}

/// Completed non-INVITE server transactions awaiting Timer J.
///
/// Entries sit in a ring in completion order, so Timer J pops them off the front without a
/// lookup; a hash index of cache-line buckets finds them. A lookup of a new request (the common
/// case) reads one bucket; a retransmission reads the bucket and its ring entry. (A hash map
/// with a separate expiry queue paid a random access for every expiry as well: at its 2 M-entry
/// cap, `remove` was the largest single cost of a registration in a native profile.)
pub struct ServerTransactions<R: Copy> {
    ring: Ring<Done<R>>,
    /// Sequence number of `ring[0]`.
    base: u64,
    index: Index,
    /// While the index grows: the one before, still searched until each of its buckets has been
    /// split into the new one (`split ..` are left), one per completion.
    old: Option<Index>,
    split: usize,
    max_buckets: usize,
    max_entries: usize,
    timer_j_ms: u64,
}

impl<R: Copy> ServerTransactions<R> {
    /// `max_entries` bounds memory under floods: past it the oldest transaction is forgotten
    /// early (a late retransmission of it is then processed again, which the registrar's own
    /// CSeq/nonce rules make harmless).
    pub fn new(max_entries: usize, timer_j_ms: u64) -> Self {
        let max_entries = max_entries.max(1);
        let max_buckets = max_entries
            .div_ceil(SLOTS / 2)
            .next_power_of_two()
            .min(MAX_BUCKETS);
        ServerTransactions {
            ring: Ring::new(),
            base: 0,
            index: Index::new(MIN_BUCKETS.min(max_buckets)),
            old: None,
            split: 0,
            max_buckets,
            max_entries,
            timer_j_ms,
        }
    }

    fn window(&self) -> Window {
        Window {
            base: self.base,
            len: self.ring.len(),
        }
    }

    fn find(&self, key: TxnKey) -> Option<usize> {
        let w = self.window();
        let tag = tag_of(key);
        let search = |index: &Index| {
            let b = index.bucket(key);
            (0..SLOTS).find_map(|k| {
                let off = w.offset(b.at[k]).filter(|_| b.tags[k] == tag)?;
                (self.ring.get(off).key == key).then_some(off)
            })
        };
        search(&self.index).or_else(|| self.old.as_ref().and_then(search))
    }

    /// Starts loading the index bucket `key` is looked up in. At a busy worker's table size
    /// (32 MB of index at 40k transactions/s × Timer J) a lookup is a cache miss, the largest
    /// single cost of a registration in a native profile; issued early, while the request is
    /// still being parsed, the line arrives in the meantime.
    pub fn prefetch(&self, key: TxnKey) {
        crate::prefetch::line(self.index.bucket(key));
        if let Some(old) = &self.old {
            crate::prefetch::line(old.bucket(key));
        }
    }

    /// The recipe of the answer already given to this transaction, if any.
    pub fn lookup(&self, key: TxnKey) -> Option<R> {
        self.find(key).map(|off| self.ring.get(off).recipe)
    }

    /// Records the final answer; Timer J starts now. Completing a transaction again replaces
    /// its recipe and keeps its Timer J.
    pub fn complete(&mut self, key: TxnKey, recipe: R, now_ms: u64) {
        if let Some(off) = self.find(key) {
            self.ring.get_mut(off).recipe = recipe;
            return;
        }
        if self.ring.len() >= self.max_entries {
            self.pop_front();
        }
        let seq = self.base + self.ring.len() as u64;
        self.ring.push_back(Done {
            key,
            recipe,
            expires_at: now_ms + self.timer_j_ms,
        });
        let buckets = self.index.buckets.len();
        if self.old.is_none() && self.ring.len() * 2 > buckets * SLOTS && buckets < self.max_buckets
        {
            // Grow: new entries go to the new index at once, the old buckets split into it one
            // per completion (no stall re-indexing them all at once).
            self.old = Some(std::mem::replace(&mut self.index, Index::new(buckets * 2)));
            self.split = 0;
        }
        let w = self.window();
        w.place(&mut self.index, tag_of(key), (seq as u32).wrapping_add(1));
        if self.old.is_some() {
            self.split_some(SPLITS_PER_COMPLETION);
        }
    }

    /// Re-indexes the live entries of the next `budget` old buckets. Old bucket `b`'s entries
    /// go to new buckets `b` and `b + old length`: two streams in order, where re-indexing in
    /// ring order wrote one random bucket per entry.
    fn split_some(&mut self, budget: usize) {
        let w = self.window();
        let Some(old) = &self.old else { return };
        let end = (self.split + budget).min(old.buckets.len());
        for b in &old.buckets[self.split..end] {
            for k in 0..SLOTS {
                if w.offset(b.at[k]).is_some() {
                    w.place(&mut self.index, b.tags[k], b.at[k]);
                }
            }
        }
        self.split = end;
        if end == old.buckets.len() {
            self.old = None;
        }
    }

    fn pop_front(&mut self) {
        if self.ring.pop_front() {
            self.base += 1;
        }
    }

    /// Forgets transactions whose Timer J has fired.
    pub fn expire(&mut self, now_ms: u64) {
        self.expire_some(now_ms, usize::MAX);
    }

    /// Forgets at most `budget` expired transactions; true if more are due. Calling this with a
    /// small budget on every loop turn spreads the work instead of stalling once per tick.
    pub fn expire_some(&mut self, now_ms: u64, budget: usize) -> bool {
        for _ in 0..budget {
            match self.ring.front() {
                Some(d) if d.expires_at <= now_ms => self.pop_front(),
                _ => return false,
            }
        }
        self.ring.front().is_some_and(|d| d.expires_at <= now_ms)
    }

    pub fn len(&self) -> usize {
        self.ring.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ring.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_until_timer_j_then_forgets() {
        let mut t = ServerTransactions::<u16>::new(100, TIMER_J_UDP_MS);
        let k = TxnKey::new(42);
        assert_eq!(t.lookup(k), None);
        t.complete(k, 401, 1_000);
        assert_eq!(t.lookup(k), Some(401));
        t.expire(1_000 + TIMER_J_UDP_MS - 1);
        assert_eq!(t.lookup(k), Some(401));
        t.expire(1_000 + TIMER_J_UDP_MS);
        assert_eq!(t.lookup(k), None);
        assert!(t.is_empty());
    }

    #[test]
    fn expiry_can_be_spread_over_calls() {
        let mut t = ServerTransactions::<u16>::new(100, 10);
        for i in 0..5u128 {
            t.complete(TxnKey::new(i), 200, 0);
        }
        assert!(t.expire_some(10, 2));
        assert_eq!(t.len(), 3);
        assert!(!t.expire_some(10, 3));
        assert!(t.is_empty());
    }

    #[test]
    fn bounded_under_floods() {
        let mut t = ServerTransactions::<u16>::new(3, TIMER_J_UDP_MS);
        for i in 0..10u128 {
            t.complete(TxnKey::new(i), 200, 0);
        }
        assert_eq!(t.len(), 3);
        assert_eq!(t.lookup(TxnKey::new(9)), Some(200));
        assert_eq!(t.lookup(TxnKey::new(0)), None);
    }

    /// The key known from the top Via before the parse is the key of the parsed request, for
    /// every method it is given for; RFC 2543 branches and extension methods get none.
    #[test]
    fn early_key_is_the_parsed_requests_key() {
        use crate::sip::headers::{request_headers, top_via};
        use crate::sip::scan::scan;
        let h = TxnKeyHasher::default();
        let request = |method: &str, branch: &str| {
            format!(
                "{method} sip:sbc.test SIP/2.0\r\n\
                 Via: SIP/2.0/UDP 10.0.0.9:5062;rport;branch={branch}, SIP/2.0/UDP 10.0.0.1\r\n\
                 Via: SIP/2.0/UDP 10.0.0.2;branch=z9hG4bKlower\r\n\
                 From: <sip:u@sbc.test>;tag=f\r\nTo: <sip:u@sbc.test>\r\nCall-ID: c1\r\n\
                 CSeq: 7 {cseq}\r\nContent-Length: 0\r\n\r\n",
                cseq = if method == "ACK" { "ACK" } else { method }
            )
        };
        for method in [
            "REGISTER", "INVITE", "ACK", "OPTIONS", "BYE", "CANCEL", "PUBLISH",
        ] {
            for branch in ["z9hG4bK-a1", "rfc2543branch"] {
                let text = request(method, branch);
                let msg = scan(text.as_bytes()).unwrap();
                let req = request_headers(&msg).unwrap();
                let early = h.early_key(&top_via(&msg).unwrap(), req.method);
                let rfc3261 = branch.starts_with("z9hG4bK") && req.method != Method::Other;
                assert_eq!(early.is_some(), rfc3261, "{method} {branch}");
                if let Some(k) = early {
                    assert_eq!(k, h.key(&req, b"sip:sbc.test"), "{method} {branch}");
                }
            }
        }
    }

    /// Spread-out keys, as the keyed hash gives them.
    fn key(i: u64) -> TxnKey {
        let x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        TxnKey {
            hi: x.rotate_left(29) ^ i,
            lo: x,
        }
    }

    #[test]
    fn every_transaction_is_found_while_the_index_grows() {
        let mut t = ServerTransactions::<u64>::new(1 << 20, TIMER_J_UDP_MS);
        for i in 0..3_000 {
            t.complete(key(i), i, 0);
            // Everything so far, including what sits in the index being left behind.
            for j in (0..=i).step_by(7).chain([i]) {
                assert_eq!(t.lookup(key(j)), Some(j), "{j} after {i}");
            }
        }
        for i in 3_000..100_000 {
            t.complete(key(i), i, 1);
        }
        assert!(t.index.buckets.len() > MIN_BUCKETS, "the index grew");
        // The last growth (at 65,536 entries) split its 16,384 old buckets by 81,920.
        assert!(t.old.is_none(), "the old index was dropped once split");
        assert!((0..100_000).all(|i| t.lookup(key(i)) == Some(i)));
        assert_eq!(t.lookup(key(100_000)), None);
        // Timer J of the first 3,000 fires first, then the rest.
        assert!(!t.expire_some(TIMER_J_UDP_MS, usize::MAX));
        assert_eq!(t.len(), 97_000);
        assert_eq!(t.lookup(key(2_999)), None);
        assert_eq!(t.lookup(key(3_000)), Some(3_000));
        t.expire(TIMER_J_UDP_MS + 1);
        assert!(t.is_empty());
        assert!((0..100_000).all(|i| t.lookup(key(i)).is_none()));
    }

    #[test]
    fn a_full_bucket_forgets_its_oldest() {
        let mut t = ServerTransactions::<u64>::new(1000, TIMER_J_UDP_MS);
        let same_bucket = |i: u64| TxnKey { hi: i, lo: 7 };
        for i in 0..=SLOTS as u64 {
            t.complete(same_bucket(i), i, 0);
        }
        assert_eq!(t.lookup(same_bucket(0)), None);
        assert!((1..=SLOTS as u64).all(|i| t.lookup(same_bucket(i)) == Some(i)));
        // Expired entries free their slots without the index being touched.
        t.expire(TIMER_J_UDP_MS);
        for i in 100..100 + SLOTS as u64 {
            t.complete(same_bucket(i), i, TIMER_J_UDP_MS);
        }
        assert!((100..100 + SLOTS as u64).all(|i| t.lookup(same_bucket(i)) == Some(i)));
    }

    #[test]
    fn completing_again_replaces_the_recipe_and_keeps_timer_j() {
        let mut t = ServerTransactions::<u16>::new(100, TIMER_J_UDP_MS);
        t.complete(key(1), 401, 0);
        t.complete(key(1), 200, 5_000);
        assert_eq!((t.lookup(key(1)), t.len()), (Some(200), 1));
        t.expire(TIMER_J_UDP_MS);
        assert_eq!(t.lookup(key(1)), None);
    }

    #[test]
    fn the_ring_keeps_order_across_chunks_and_reuses_them() {
        let mut r = Ring::new();
        let mut next_out = 0;
        for i in 0..3 * CHUNK + 5 {
            r.push_back(i);
            if i % 3 == 0 {
                assert_eq!(r.front(), Some(&next_out));
                assert!(r.pop_front());
                next_out += 1;
            }
        }
        assert_eq!(r.len(), 3 * CHUNK + 5 - next_out);
        for off in 0..r.len() {
            assert_eq!(*r.get(off), next_out + off);
        }
        while r.pop_front() {}
        assert_eq!((r.len(), r.front()), (0, None));
        assert!(
            r.chunks.is_empty() && r.spare.is_some(),
            "the last chunk kept for reuse"
        );
    }
}
