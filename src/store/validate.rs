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
}
