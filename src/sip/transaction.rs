//! RFC 3261 §17.2 server transactions for non-INVITE requests, in the form a stateless-fast
//! registrar needs.
//!
//! Owns: matching a request to an existing transaction (§17.2.3) and remembering, until Timer J
//! fires, how it was answered. What is remembered is a small *recipe* (the caller's type: a
//! status code plus the few values that made the response, e.g. the nonce), not the response
//! bytes: the response is regenerated from the retransmitted request, which is byte-identical,
//! so the answer is too. That keeps a transaction at ~56 bytes in the table and 24 in the expiry
//! queue, so 64·T1 of state at tens of thousands of requests per second stays affordable. Time is passed in.

use super::headers::RequestHeaders;
use super::scan::Method;
use std::collections::VecDeque;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};

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
        let mut g = Gather {
            buf: [0; GATHER_BYTES],
            len: 0,
            ha: self.a.build_hasher(),
            hb: self.b.build_hasher(),
        };
        //= https://www.rfc-editor.org/rfc/rfc3261#section-17.2.3
        //# the method of the request matches the one that created the transaction, except
        //# for ACK, where the method of the request that created the transaction is INVITE.
        let method: &[u8] = match req.method {
            Method::Ack => b"INVITE",
            Method::Other => req.cseq.method_raw,
            m => m.as_str().as_bytes(),
        };
        match req.via.branch {
            Some(branch) if branch.starts_with(MAGIC_COOKIE) => {
                //# 1. the branch parameter in the request is equal to the one in the top Via
                //# header field of the request that created the transaction, and
                //# 2. the sent-by value in the top Via of the request is equal to the one in
                //# the request that created the transaction
                g.feed(branch);
                g.feed(req.via.host);
                g.feed(&req.via.port.unwrap_or(0).to_be_bytes());
                g.feed(method);
            }
            _ => {
                //= https://www.rfc-editor.org/rfc/rfc3261#section-17.2.3
                //# the Request-URI, To tag, From tag, Call-ID, CSeq, and top Via header field
                //# match those of the INVITE request which created the transaction
                g.feed(request_uri);
                g.feed(req.to.tag.unwrap_or_default());
                g.feed(req.from.tag.unwrap_or_default());
                g.feed(req.call_id);
                g.feed(&req.cseq.seq.to_be_bytes());
                g.feed(req.via.raw);
                g.feed(method);
            }
        }
        g.finish()
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

/// The key is already a keyed hash: the map only needs its low bits.
#[derive(Default)]
pub struct PassThroughHasher(u64);

impl Hasher for PassThroughHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    /// `TxnKey` hashes as its two halves; the table keeps the last, `lo`.
    fn write_u64(&mut self, i: u64) {
        self.0 = i;
    }
}

/// griddle: hashbrown with incremental resizing. At tens of thousands of requests a second the
/// table holds millions of transactions (Timer J is 32 s); a plain map's doubling rehashes them all
/// at once, stalling the worker for milliseconds (it showed as the p999 of processing latency).
type KeyMap<V> = griddle::HashMap<TxnKey, V, BuildHasherDefault<PassThroughHasher>>;

/// Completed non-INVITE server transactions awaiting Timer J.
pub struct ServerTransactions<R: Copy> {
    map: KeyMap<R>,
    /// Insertion order = expiry order (every entry lives the same Timer J).
    order: VecDeque<(TxnKey, u64)>,
    max_entries: usize,
    timer_j_ms: u64,
}

impl<R: Copy> ServerTransactions<R> {
    /// `max_entries` bounds memory under floods: past it the oldest transaction is forgotten
    /// early (a late retransmission of it is then processed again, which the registrar's own
    /// CSeq/nonce rules make harmless).
    pub fn new(max_entries: usize, timer_j_ms: u64) -> Self {
        let initial = max_entries.min(1 << 16);
        ServerTransactions {
            map: KeyMap::with_capacity_and_hasher(initial, Default::default()),
            order: VecDeque::with_capacity(initial),
            max_entries: max_entries.max(1),
            timer_j_ms,
        }
    }

    /// The recipe of the answer already given to this transaction, if any.
    pub fn lookup(&self, key: TxnKey) -> Option<R> {
        self.map.get(&key).copied()
    }

    /// Records the final answer; Timer J starts now.
    pub fn complete(&mut self, key: TxnKey, recipe: R, now_ms: u64) {
        if self.map.len() >= self.max_entries {
            if let Some((old, _)) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
        if self.map.insert(key, recipe).is_none() {
            self.order.push_back((key, now_ms + self.timer_j_ms));
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
            match self.order.front() {
                Some(&(key, at)) if at <= now_ms => {
                    self.order.pop_front();
                    self.map.remove(&key);
                }
                _ => return false,
            }
        }
        self.order.front().is_some_and(|&(_, at)| at <= now_ms)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
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
}
