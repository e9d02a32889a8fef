//! A fixed number of iterations of the REGISTER parse path (scan, request validation, top Via,
//! digest credentials) on the fixture of `bench/scan.rs`, for instruction counting where a
//! criterion run's iteration count varies:
//!
//!     cargo build --release --example parse_instructions
//!     valgrind --tool=callgrind target/release/examples/parse_instructions 100000
//!
//! Divide the difference of two runs' totals (e.g. 100000 and 200000) by the difference of
//! their counts: start-up cancels out.

use sipedge::sip::headers::{parse_digest_credentials, request_headers, top_via};
use sipedge::sip::scan::{scan, HeaderName};
use std::hint::black_box;

const REGISTER: &[u8] = include_bytes!("fixtures/register.sip");

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let mut sum = 0u64;
    for _ in 0..n {
        let Ok(msg) = scan(black_box(REGISTER)) else {
            continue;
        };
        let (Ok(rh), Ok(via)) = (request_headers(&msg), top_via(&msg)) else {
            continue;
        };
        let Some(Ok(cred)) = msg
            .header(HeaderName::Authorization)
            .map(parse_digest_credentials)
        else {
            continue;
        };
        sum += u64::from(rh.cseq.seq) + via.branch.map_or(0, <[u8]>::len) as u64;
        sum += cred.response.len() as u64;
    }
    println!("{n} iterations, checksum {sum}");
}
