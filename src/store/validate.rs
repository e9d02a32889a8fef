//! Validation of provisioning input, shared by the store, the REST API and the CLI.
//!
//! Owns: what a well-formed username, password, hash, realm, tenant, codec list and caller-id
//! list is. Each function returns the normalised value or a one-line problem (without the field
//! name: the caller knows which field it checked).

/// Usernames: 1..=64 of `[A-Za-z0-9._~+-]` (no `@`, `:` or whitespace, which digest and SIP URIs
/// give meaning to).
pub fn username(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 64 {
        return Err(format!(
            "must be 1 to 64 characters, got {}",
            s.chars().count()
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._~+-".contains(*c)))
    {
        return Err(format!(
            "invalid character {c:?} (allowed: letters, digits and . _ ~ + -)"
        ));
    }
    Ok(s.to_string())
}

/// Passwords: 8..=128 printable characters (no control characters).
pub fn password(s: &str) -> Result<(), String> {
    let n = s.chars().count();
    if !(8..=128).contains(&n) {
        return Err(format!("must be 8 to 128 characters, got {n}"));
    }
    if s.chars().any(char::is_control) {
        return Err("must not contain control characters".to_string());
    }
    Ok(())
}

/// An MD5 HA1/HA1b: exactly 32 hex digits; returned lower-cased.
pub fn md5_hash(s: &str) -> Result<String, String> {
    if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("must be 32 hex digits (an MD5 hash)".to_string());
    }
    Ok(s.to_ascii_lowercase())
}

/// Realm names are hostname-like: dot-separated labels of letters, digits and `-` (not at either
/// end of a label), at most 253 characters; returned lower-cased.
pub fn realm_name(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 253 {
        return Err(format!(
            "must be a host name of 1 to 253 characters, got {s:?}"
        ));
    }
    for label in s.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!(
                "must be a host name (letters, digits, '-' and '.'), got {s:?}"
            ));
        }
    }
    Ok(s.to_ascii_lowercase())
}

/// Tenant names: 1..=64 of `[A-Za-z0-9._-]`.
pub fn tenant_name(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 64 {
        return Err(format!(
            "must be 1 to 64 characters, got {}",
            s.chars().count()
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._-".contains(*c)))
    {
        return Err(format!(
            "invalid character {c:?} (allowed: letters, digits and . _ -)"
        ));
    }
    Ok(s.to_string())
}

pub fn max_calls(n: u32) -> Result<u32, String> {
    if n == 0 {
        return Err("must be at least 1".to_string());
    }
    Ok(n)
}

pub fn max_cps(x: f64) -> Result<f64, String> {
    if !(x.is_finite() && x > 0.0) {
        return Err(format!("must be a number greater than 0, got {x}"));
    }
    Ok(x)
}

/// Codec names accepted in `codecs`, in their canonical (RTP/AVP, RFC 3551 / IANA) spelling.
pub const CODECS: [&str; 14] = [
    "PCMU",
    "PCMA",
    "G722",
    "G729",
    "G723",
    "G726-32",
    "GSM",
    "iLBC",
    "opus",
    "AMR",
    "AMR-WB",
    "speex",
    "telephone-event",
    "CN",
];

/// Codec names, case-insensitive, each at most once; returned in canonical spelling. An empty
/// list means "no restriction".
pub fn codecs(list: &[String]) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for name in list {
        let canonical = CODECS
            .iter()
            .find(|c| c.eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| format!("unknown codec {name:?} (known: {})", CODECS.join(", ")))?;
        if out.iter().any(|c| c == canonical) {
            return Err(format!("{name:?} is listed twice"));
        }
        out.push(canonical.to_string());
    }
    Ok(out)
}

/// An E.164 number: `+` then 8 to 15 digits, the first not 0.
pub fn e164(s: &str) -> Result<String, String> {
    let digits = s
        .strip_prefix('+')
        .ok_or_else(|| format!("{s:?} must be E.164: '+' then 8 to 15 digits"))?;
    if !(8..=15).contains(&digits.len())
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || digits.starts_with('0')
    {
        return Err(format!("{s:?} must be E.164: '+' then 8 to 15 digits"));
    }
    Ok(s.to_string())
}

/// Caller ids a credential may present, each E.164, each at most once. Empty: no restriction.
pub fn allowed_cli(list: &[String]) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for number in list {
        let number = e164(number.trim())?;
        if out.contains(&number) {
            return Err(format!("{number:?} is listed twice"));
        }
        out.push(number);
    }
    Ok(out)
}

/// Trunk names: 1..=64 of `[A-Za-z0-9._-]` (the same alphabet as tenant names).
pub fn trunk_name(s: &str) -> Result<String, String> {
    tenant_name(s)
}

/// An IP network `ADDR/LEN` with no host bits set, or a bare address (taken as `/32` or
/// `/128`); returned in canonical form, e.g. `198.51.100.0/24`. `/0` is refused: it would make
/// every address on the internet a trusted trunk source.
pub fn cidr(s: &str) -> Result<String, String> {
    use std::net::IpAddr;
    let not =
        || format!("{s:?} is not a CIDR (e.g. 198.51.100.0/24, 2001:db8::/32 or 203.0.113.7)");
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let ip: IpAddr = addr.parse().map_err(|_| not())?;
    let max: u8 = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None => max,
        Some(l) if !l.is_empty() && l.len() <= 3 && l.bytes().all(|b| b.is_ascii_digit()) => {
            l.parse::<u8>().map_err(|_| not())?
        }
        Some(_) => return Err(not()),
    };
    if len > max {
        return Err(format!("{s:?}: prefix length {len} is over {max}"));
    }
    if len == 0 {
        return Err(format!(
            "{s:?} would trust every address; give the trunk's own networks"
        ));
    }
    let network = match ip {
        IpAddr::V4(v4) => {
            let mask = u32::MAX << (32 - u32::from(len));
            IpAddr::V4((u32::from(v4) & mask).into())
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX << (128 - u32::from(len));
            IpAddr::V6((u128::from(v6) & mask).into())
        }
    };
    if network != ip {
        return Err(format!(
            "{s:?} has host bits set (the network is {network}/{len})"
        ));
    }
    Ok(format!("{ip}/{len}"))
}

/// Transports a SIP URI may name in `;transport=` (SPEC §2 `sip.listen`).
const URI_TRANSPORTS: [&str; 3] = ["udp", "tcp", "tls"];

/// A `sip:` or `sips:` URI as a destination (RFC 3261 §19.1.1): an optional user part, a host
/// name, IPv4 address or `[IPv6]` reference, an optional port, and `;name[=value]` parameters.
/// No password in the user part, no `?headers`, no whitespace; at most 512 bytes.
pub fn sip_uri(s: &str) -> Result<String, String> {
    let fail = |why: &str| Err(format!("{s:?} is not a SIP URI: {why}"));
    if s.len() > 512 {
        return Err(format!("must be at most 512 bytes, got {}", s.len()));
    }
    if let Some(c) = s.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return fail(&format!("invalid character {c:?}"));
    }
    if !s.is_ascii() {
        return fail("non-ASCII characters must be %-escaped");
    }
    let lower = s.to_ascii_lowercase();
    let rest = if lower.starts_with("sip:") {
        &s[4..]
    } else if lower.starts_with("sips:") {
        &s[5..]
    } else {
        return fail("it must start with sip: or sips:");
    };
    // The user part may hold ';' (RFC 3261 user-unreserved) but never '@'; the host part and
    // its parameters never hold '@'.
    let (user, hostpart) = match rest.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, rest),
    };
    if let Some(user) = user {
        if user.is_empty() || user.contains('@') {
            return fail("empty or invalid user part");
        }
        if user.contains(':') {
            return fail("a password in the URI is not allowed");
        }
        let ok = user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.!~*'()%&=+$,;?/".contains(&b));
        if !ok {
            return fail("invalid character in the user part");
        }
    }
    if hostpart.contains('?') {
        return fail("URI headers (?...) are not allowed");
    }
    let (hostport, params) = match hostpart.split_once(';') {
        Some((h, p)) => (h, Some(p)),
        None => (hostpart, None),
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let Some((addr, after)) = v6.split_once(']') else {
            return fail("unterminated [IPv6] reference");
        };
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return fail("invalid IPv6 address");
        }
        match after {
            "" => (hostport, None),
            p if p.starts_with(':') => (&hostport[..hostport.len() - p.len()], Some(&p[1..])),
            _ => return fail("junk after the IPv6 reference"),
        }
    } else {
        match hostport.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return fail("no host");
    }
    if !host.starts_with('[') && realm_name(host).is_err() {
        return fail(&format!("invalid host {host:?}"));
    }
    if let Some(p) = port {
        let ok = !p.is_empty()
            && p.len() <= 5
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u32>().is_ok_and(|n| (1..=65535).contains(&n));
        if !ok {
            return fail(&format!("invalid port {p:?}"));
        }
    }
    for param in params.into_iter().flat_map(|p| p.split(';')) {
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (param, None),
        };
        let token = |t: &str| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.!~*'()%[]/:&+$".contains(&b))
        };
        if !token(name) || value.is_some_and(|v| !token(v)) {
            return fail(&format!("invalid parameter {param:?}"));
        }
        if name.eq_ignore_ascii_case("transport") {
            let v = value.unwrap_or_default().to_ascii_lowercase();
            if !URI_TRANSPORTS.contains(&v.as_str()) {
                return fail(&format!(
                    "transport must be one of {}",
                    URI_TRANSPORTS.join(", ")
                ));
            }
        }
    }
    Ok(s.to_string())
}

/// The placeholder a number's `uri` route replaces with the E.164 number (SPEC §3.5).
pub const NUMBER_PLACEHOLDER: &str = "{number}";

/// A `uri` route: a SIP URI once every `{number}` is replaced by an E.164 number.
pub fn uri_template(s: &str) -> Result<String, String> {
    let filled = s.replace(NUMBER_PLACEHOLDER, "+15551230000");
    if filled.contains('{') || filled.contains('}') {
        return Err(format!(
            "{s:?}: the only placeholder is {NUMBER_PLACEHOLDER}"
        ));
    }
    sip_uri(&filled)?;
    Ok(s.to_string())
}

/// The most bytes the `Name: value` lines of a number's headers may take together (SPEC §3.5).
pub const HEADERS_MAX_BYTES: usize = 1024;

/// A number's extra INVITE headers (SPEC §3.5, seed 002): `X-` is prepended to a name without it
/// (case-insensitive); the final name is `[A-Za-z0-9-]{1,50}`; values have no CR, LF or other
/// control character but tab; all `Name: value` lines together, without their CRLFs, are at most
/// [`HEADERS_MAX_BYTES`]; no name twice (case-insensitive). Errors are `(name as given, problem)`.
pub fn number_headers(
    headers: &[(String, String)],
) -> Result<Vec<(String, String)>, (String, String)> {
    let mut out: Vec<(String, String)> = Vec::with_capacity(headers.len());
    let mut total = 0usize;
    for (given, value) in headers {
        let fail = |problem: String| Err((given.clone(), problem));
        if given.is_empty() {
            return fail("empty header name".to_string());
        }
        let name = if given.len() >= 2 && given[..2].eq_ignore_ascii_case("x-") {
            given.clone()
        } else {
            format!("X-{given}")
        };
        if name.len() > 50 {
            return fail(format!("header name {name:?} is over 50 characters"));
        }
        if let Some(c) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return fail(format!(
                "invalid character {c:?} in header name (allowed: letters, digits and -)"
            ));
        }
        if value.contains(['\r', '\n']) {
            return fail("value must not contain CR or LF".to_string());
        }
        if value.chars().any(|c| c.is_control() && c != '\t') {
            return fail("value must not contain control characters".to_string());
        }
        if out.iter().any(|(n, _)| n.eq_ignore_ascii_case(&name)) {
            return fail(format!("header {name:?} is given twice"));
        }
        total += name.len() + 2 + value.len();
        out.push((name, value.clone()));
    }
    if total > HEADERS_MAX_BYTES {
        return Err((
            String::new(),
            format!("the header lines take {total} bytes, over the limit of {HEADERS_MAX_BYTES}"),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        assert!(username("alice").is_ok());
        assert!(username("a.b_c~d+e-f9").is_ok());
        assert!(username("").is_err());
        assert!(username(&"a".repeat(65)).is_err());
        assert!(username(&"a".repeat(64)).is_ok());
        for bad in ["a@b", "a:b", "a b", "a\tb", "ä"] {
            assert!(username(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn passwords() {
        assert!(password("12345678").is_ok());
        assert!(password("1234567").is_err());
        assert!(password(&"x".repeat(128)).is_ok());
        assert!(password(&"x".repeat(129)).is_err());
        assert!(password("abc\ndefgh").is_err());
        assert!(password("with space ok").is_ok());
    }

    #[test]
    fn hashes() {
        assert_eq!(md5_hash(&"AB".repeat(16)).unwrap(), "ab".repeat(16));
        assert!(md5_hash(&"a".repeat(31)).is_err());
        assert!(md5_hash(&"g".repeat(32)).is_err());
        assert!(md5_hash(&"a".repeat(64)).is_err());
    }

    #[test]
    fn realms() {
        assert_eq!(realm_name("Example.COM").unwrap(), "example.com");
        assert!(realm_name("sipedge.local").is_ok());
        assert!(realm_name("198.51.100.1").is_ok());
        for bad in ["", "a..b", "-a.b", "a-.b", "a b", "a_b", "a/b", "."] {
            assert!(realm_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn codec_lists() {
        let v = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            codecs(&v(&["pcmu", "OPUS", "Telephone-Event"])).unwrap(),
            v(&["PCMU", "opus", "telephone-event"])
        );
        assert!(codecs(&v(&["pcmu", "PCMU"])).is_err());
        assert!(codecs(&v(&["mp3"])).is_err());
        assert!(codecs(&[]).unwrap().is_empty());
    }

    #[test]
    fn caller_ids() {
        assert_eq!(e164("+15551230000").unwrap(), "+15551230000");
        for bad in [
            "15551230000",
            "+1555",
            "+1234567890123456",
            "+1555123000a",
            "+05551230000",
            "+",
        ] {
            assert!(e164(bad).is_err(), "{bad}");
        }
        let v = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(allowed_cli(&v(&["+15551230000", "+15551230000"])).is_err());
    }

    #[test]
    fn cidrs() {
        assert_eq!(cidr("198.51.100.0/24").unwrap(), "198.51.100.0/24");
        assert_eq!(cidr("203.0.113.7").unwrap(), "203.0.113.7/32");
        assert_eq!(cidr("2001:DB8::/32").unwrap(), "2001:db8::/32");
        assert_eq!(cidr("::1").unwrap(), "::1/128");
        for bad in [
            "",
            "x",
            "198.51.100.0/",
            "198.51.100.0/33",
            "198.51.100.1/24",
            "0.0.0.0/0",
            "::/0",
            "198.51.100.0/+8",
            "198.51.100.0/24/1",
            "2001:db8::/129",
        ] {
            assert!(cidr(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sip_uris() {
        for ok in [
            "sip:pbx.example.com",
            "SIP:pbx.example.com:5061;transport=TLS",
            "sips:alice@pbx.example.com",
            "sip:+15551230000@198.51.100.20:5060;transport=udp;lr",
            "sip:[2001:db8::1]:5060",
            "sip:alice;x=1@pbx.example.com",
        ] {
            assert_eq!(sip_uri(ok).as_deref(), Ok(ok), "{ok}");
        }
        for bad in [
            "",
            "pbx.example.com",
            "tel:+15551230000",
            "sip:",
            "sip:@pbx.example.com",
            "sip:alice:secret@pbx.example.com",
            "sip:pbx.example.com:0",
            "sip:pbx.example.com:70000",
            "sip:pbx.example.com:",
            "sip:pbx example.com",
            "sip:pbx.example.com;transport=carrier-pigeon",
            "sip:pbx.example.com?subject=x",
            "sip:[2001:db8::1",
            "sip:[not-v6]",
            "sip:pbx..example.com",
            "sip:pbx.example.com\r\nVia: x",
        ] {
            assert!(sip_uri(bad).is_err(), "{bad}");
        }
        assert!(sip_uri(&format!("sip:{}.example.com", "a".repeat(600))).is_err());
        assert!(uri_template("sip:{number}@pbx.example.com:5061;transport=tls").is_ok());
        assert!(uri_template("sip:pbx.example.com").is_ok());
        assert!(uri_template("sip:{user}@pbx.example.com").is_err());
        assert!(uri_template("sip:{number}").is_err());
    }

    #[test]
    fn headers() {
        let h = |xs: &[(&str, &str)]| {
            xs.iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            number_headers(&h(&[("Account", "42"), ("x-ok", "a\tb"), ("X-Y", "")])).unwrap(),
            h(&[("X-Account", "42"), ("x-ok", "a\tb"), ("X-Y", "")])
        );
        let field = |xs: &[(&str, &str)]| number_headers(&h(xs)).unwrap_err().0;
        assert_eq!(field(&[("", "v")]), "");
        assert_eq!(field(&[("A_B", "v")]), "A_B");
        assert_eq!(field(&[("A", "v\n")]), "A");
        assert_eq!(field(&[("A", "v\r")]), "A");
        assert_eq!(field(&[("A", "v\u{0}")]), "A");
        assert_eq!(field(&[("A", "1"), ("X-A", "2")]), "X-A");
        let name48 = "N".repeat(48);
        assert!(number_headers(&h(&[(&name48, "v")])).is_ok());
        let name49 = "N".repeat(49);
        assert_eq!(field(&[(&name49, "v")]), name49);
        // "X-A: " is 5 bytes: 1019 bytes of value is exactly 1024.
        assert!(number_headers(&h(&[("A", &"v".repeat(1019))])).is_ok());
        assert_eq!(field(&[("A", &"v".repeat(1020))]), "");
    }
}
