//! `cargo fuzz run scan`: the scanner, the request/response validation and every typed header
//! parser on arbitrary bytes. Nothing may panic; a successful scan borrows only from its input.
//!
//! Seed it with the torture messages as a read-only second corpus (libFuzzer writes new inputs
//! into the first directory only, so shared/ is never touched):
//! `cargo fuzz run scan fuzz/corpus/scan ../shared/torture/rfc4475`
#![no_main]

use libfuzzer_sys::fuzz_target;
use sipedge::sip::headers::{
    contacts, find_param, name_addrs, parse_contacts, parse_cseq, parse_digest_credentials,
    parse_name_addr, parse_u32, parse_uri, parse_via, request_headers, response_headers, top_via,
    via_parms,
};
use sipedge::sip::scan::{scan, HeaderName, MAX_HEADERS};

fn within(outer: &[u8], inner: &[u8]) -> bool {
    let o = outer.as_ptr_range();
    let i = inner.as_ptr_range();
    inner.is_empty() || (o.start <= i.start && i.end <= o.end)
}

fn typed(value: &[u8]) {
    let _ = parse_via(value);
    for v in via_parms(value).take(MAX_HEADERS) {
        let _ = v;
    }
    for n in name_addrs(value).take(MAX_HEADERS) {
        let _ = n;
    }
    if let Ok(u) = parse_uri(value) {
        let _ = find_param(u.params, b"transport");
    }
    if let Ok(n) = parse_name_addr(value) {
        let _ = find_param(n.params, b"tag");
    }
    let _ = parse_cseq(value);
    let _ = parse_contacts(value);
    let _ = parse_digest_credentials(value);
    let _ = parse_u32(value);
}

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = scan(data) {
        assert!(msg.len <= data.len());
        assert!(msg.headers.len() <= MAX_HEADERS);
        assert!(within(data, msg.body));
        for h in msg.headers.iter() {
            assert!(within(data, h.value));
            assert_eq!(HeaderName::parse(h.raw_name), h.name);
            typed(h.value);
        }
        let _ = top_via(&msg);
        let _ = contacts(&msg);
        let _ = request_headers(&msg);
        let _ = response_headers(&msg);
    }
    // The typed parsers also take raw bytes that never went through the scanner.
    typed(data);
});
