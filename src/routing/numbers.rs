//! Dialled numbers -> E.164 (SPEC §3.6).
//!
//! Owns: the normalisation rules of `[numbers]` and the [`E164`] value type. Must not: allocate
//! or look anything up — a called or calling number is normalised once per INVITE on a worker.
//! Whether a number is *assigned* to someone is the store's business, not this module's.

use crate::config::NumbersConfig;
use std::fmt;

/// Most digits an E.164 number may have (ITU-T E.164 §6: country code + national number ≤ 15).
pub const MAX_DIGITS: usize = 15;
/// Fewest digits accepted: SPEC §3.6 "`+` and 8–15 digits".
pub const MIN_DIGITS: usize = 8;

/// Longest stripped input worth looking at: an international prefix (≤ 6 digits, config) plus
/// 15 digits. Anything longer cannot become a number or match a short code (≤ 15 digits).
const MAX_STRIPPED: usize = 24;

/// An E.164 number, `+` and 8–15 ASCII digits, stored inline.
///
/// `Copy` and allocation-free so a call can carry its numbers by value; the text is always
/// valid ASCII, so [`E164::as_str`] cannot fail.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct E164 {
    /// `+` then the digits; bytes past `len` are zero.
    buf: [u8; MAX_DIGITS + 1],
    len: u8,
}

impl E164 {
    /// The strict form the provisioning API takes (SPEC §3.6 "The API takes only E.164"):
    /// exactly `+` and 8–15 digits, no separators.
    pub fn parse(s: &str) -> Option<E164> {
        match s.as_bytes().split_first() {
            Some((b'+', digits)) => E164::from_digits(digits),
            _ => None,
        }
    }

    /// `+` followed by `digits`, if they are 8–15 ASCII digits.
    fn from_digits(digits: &[u8]) -> Option<E164> {
        E164::from_parts(&[], digits)
    }

    /// `+`, then `cc`, then `rest`; both must be digits and 8–15 of them together.
    fn from_parts(cc: &[u8], rest: &[u8]) -> Option<E164> {
        let n = cc.len() + rest.len();
        if !(MIN_DIGITS..=MAX_DIGITS).contains(&n) || !cc.iter().chain(rest).all(u8::is_ascii_digit)
        {
            return None;
        }
        let mut buf = [0u8; MAX_DIGITS + 1];
        buf[0] = b'+';
        buf[1..=cc.len()].copy_from_slice(cc);
        buf[1 + cc.len()..=n].copy_from_slice(rest);
        Some(E164 {
            buf,
            len: (n + 1) as u8,
        })
    }

    /// `+` and the digits, e.g. `+15551234567`.
    pub fn as_str(&self) -> &str {
        // Only `+` and ASCII digits are ever stored, so this is always Ok.
        std::str::from_utf8(&self.buf[..usize::from(self.len)]).unwrap_or_default()
    }

    /// The digits without the `+`, e.g. `15551234567`.
    pub fn digits(&self) -> &str {
        self.as_str().get(1..).unwrap_or_default()
    }
}

impl fmt::Display for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "E164({})", self.as_str())
    }
}

/// What a dialled string turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialled<'a> {
    /// A number in E.164.
    E164(E164),
    /// One of `numbers.short_codes` (SPEC §2: "dialled as they are, never normalised"); the
    /// string is the configured code, so it is canonical whatever separators were dialled.
    ShortCode(&'a str),
    /// Not a number (SPEC §3.4: the called number then gets `484`).
    Invalid,
}

/// The `[numbers]` section, ready for normalising.
#[derive(Clone, Debug)]
pub struct NumberPlan {
    country_code: String,
    international_prefix: String,
    national_prefix: String,
    short_codes: Vec<String>,
}

impl NumberPlan {
    /// Takes the validated config as is (config.rs checks that every field is digits only).
    pub fn new(config: &NumbersConfig) -> NumberPlan {
        NumberPlan {
            country_code: config.default_country_code.clone(),
            international_prefix: config.international_prefix.clone(),
            national_prefix: config.national_prefix.clone(),
            short_codes: config.short_codes.clone(),
        }
    }

    /// Normalises a dialled string: a SIP/tel URI user part (params after `;` such as
    /// `;phone-context=` are ignored) or a header's number.
    ///
    /// Rules in SPEC §3.6 order:
    /// 1. strip the visual separators ` `, `-`, `.`, `(`, `)` (RFC 3966 §5.1.1 visual
    ///    separators; `%2B` and `%20` escapes, RFC 3261 §19.1.2, are decoded);
    /// 2. exactly a short code -> [`Dialled::ShortCode`] (checked before anything else so `911`
    ///    is never read as a national number);
    /// 3. `+` and 8–15 digits -> kept;
    /// 4. `00` or `international_prefix` (the longer tried first: `0011` starts with `00`),
    ///    then 8–15 digits -> `+` and the digits; a matching prefix commits, so `0012` is not
    ///    retried as a national number;
    /// 5. `default_country_code = "1"` (NANP): 10 digits -> `+1…`; 11 digits starting `1` -> `+…`;
    /// 6. `national_prefix` and digits -> `+`, the country code and the digits;
    /// 7. anything else -> [`Dialled::Invalid`].
    ///
    /// The returned short code borrows from the plan, hence the shared lifetime.
    pub fn normalise<'a>(&'a self, raw: &'a [u8]) -> Dialled<'a> {
        // RFC 3966 / RFC 3261 §19.1.1: parameters of the user part (`;phone-context=`,
        // `;npdi`, `;rn=`) do not change the digits dialled.
        let user = match raw.iter().position(|&b| b == b';') {
            Some(i) => &raw[..i],
            None => raw,
        };
        let mut buf = [0u8; MAX_STRIPPED];
        let Some(s) = strip(user, &mut buf) else {
            return Dialled::Invalid;
        };
        if s.is_empty() {
            return Dialled::Invalid;
        }
        if let Some(code) = self.short_codes.iter().find(|c| c.as_bytes() == s) {
            return Dialled::ShortCode(code.as_str());
        }
        let found = match s.split_first() {
            Some((b'+', digits)) => E164::from_digits(digits),
            _ => self.national_or_international(s),
        };
        found.map_or(Dialled::Invalid, Dialled::E164)
    }

    /// Rules 4–6 on a stripped string without a leading `+`.
    fn national_or_international(&self, s: &[u8]) -> Option<E164> {
        if !s.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let intl = self.international_prefix.as_bytes();
        // The longer prefix first: Australia's "0011" also starts with "00".
        let (first, second): (&[u8], &[u8]) = if intl.len() >= 2 {
            (intl, b"00")
        } else {
            (b"00", intl)
        };
        for prefix in [first, second] {
            if let Some(rest) = s.strip_prefix(prefix).filter(|_| !prefix.is_empty()) {
                return E164::from_digits(rest);
            }
        }
        if self.country_code == "1" {
            // NANP: the national number is always 10 digits; a leading 1 is the trunk prefix.
            let nanp = match s.len() {
                10 => E164::from_parts(b"1", s),
                11 if s[0] == b'1' => E164::from_digits(s),
                _ => None,
            };
            if nanp.is_some() {
                return nanp;
            }
        }
        let national = self.national_prefix.as_bytes();
        if !national.is_empty() {
            if let Some(rest) = s.strip_prefix(national) {
                if !rest.is_empty() {
                    return E164::from_parts(self.country_code.as_bytes(), rest);
                }
            }
        }
        None
    }
}

/// Copies `user` into `buf` without visual separators, decoding `%2B` (`+`) and skipping
/// `%20` (space). `None` when the result would not fit (it could not be a number then).
fn strip<'b>(user: &[u8], buf: &'b mut [u8; MAX_STRIPPED]) -> Option<&'b [u8]> {
    let mut n = 0;
    let mut i = 0;
    while i < user.len() {
        let mut b = user[i];
        i += 1;
        if b == b'%' {
            match user.get(i..i + 2) {
                Some([b'2', b'B' | b'b']) => b = b'+',
                Some(b"20") => b = b' ',
                // Any other escape cannot be part of a number.
                _ => return None,
            }
            i += 2;
        }
        if matches!(b, b' ' | b'-' | b'.' | b'(' | b')') {
            continue;
        }
        *buf.get_mut(n)? = b;
        n += 1;
    }
    Some(&buf[..n])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(cc: &str, intl: &str, national: &str, short: &[&str]) -> NumberPlan {
        NumberPlan::new(&NumbersConfig {
            default_country_code: cc.to_string(),
            international_prefix: intl.to_string(),
            national_prefix: national.to_string(),
            short_codes: short.iter().map(|s| s.to_string()).collect(),
        })
    }

    fn nanp() -> NumberPlan {
        plan("1", "011", "", &["911", "933"])
    }

    fn uk() -> NumberPlan {
        plan("44", "00", "0", &["999", "112"])
    }

    fn e164(p: &NumberPlan, raw: &str) -> Option<String> {
        match p.normalise(raw.as_bytes()) {
            Dialled::E164(n) => Some(n.as_str().to_string()),
            _ => None,
        }
    }

    #[test]
    fn nanp_forms() {
        let p = nanp();
        for raw in [
            "5551234567",
            "(555) 123-4567",
            "555.123.4567",
            "1-555-123-4567",
            "15551234567",
            "+1 555 123 4567",
            "+15551234567",
            "011 1 555 123 4567",
            "0015551234567",
            "%2B15551234567",
            "+1%20555%201234567",
        ] {
            assert_eq!(e164(&p, raw).as_deref(), Some("+15551234567"), "{raw}");
        }
        assert_eq!(
            e164(&p, "011 44 20 7946 0958").as_deref(),
            Some("+442079460958")
        );
        assert_eq!(
            e164(&p, "0044 20 7946 0958").as_deref(),
            Some("+442079460958")
        );
        assert_eq!(e164(&p, "011-49-30-123456").as_deref(), Some("+4930123456"));
    }

    #[test]
    fn nanp_rejects() {
        let p = nanp();
        for raw in [
            "",
            "   ",
            "()-.",
            "1234567",           // 7-digit local dialling is not supported
            "555123456",         // 9 digits
            "25551234567",       // 11 digits not starting with 1
            "555123456789",      // 12 digits, no prefix
            "+1234567",          // 7 digits after +
            "+1234567890123456", // 16 digits
            "0111234567",        // international prefix, too few digits
            "00123",
            "555-CALL-NOW",
            "alice",
            "+1555123456a",
            "1+5551234567",
            "++15551234567",
            "%41",
            "%2",
            "5551234567%",
            "555 123 4567 555 123 4567 555",      // 23 digits
            "5551234567555123456755512345675551", // longer than the strip buffer
        ] {
            assert_eq!(p.normalise(raw.as_bytes()), Dialled::Invalid, "{raw}");
        }
        assert_eq!(p.normalise(b"\xff\xfe"), Dialled::Invalid);
    }

    #[test]
    fn bounds_of_e164() {
        let p = nanp();
        assert_eq!(e164(&p, "+12345678").as_deref(), Some("+12345678"));
        assert_eq!(
            e164(&p, "+123456789012345").as_deref(),
            Some("+123456789012345")
        );
        assert_eq!(e164(&p, "+1234567"), None);
        assert_eq!(e164(&p, "+1234567890123456"), None);
        assert_eq!(
            e164(&p, "011123456789012345").as_deref(),
            Some("+123456789012345")
        );
        assert_eq!(e164(&p, "0111234567890123456"), None);
    }

    #[test]
    fn short_codes_before_normalisation() {
        let p = nanp();
        assert_eq!(p.normalise(b"911"), Dialled::ShortCode("911"));
        assert_eq!(p.normalise(b"933"), Dialled::ShortCode("933"));
        assert_eq!(p.normalise(b"9-1-1"), Dialled::ShortCode("911"));
        assert_eq!(
            p.normalise(b"911;phone-context=+1"),
            Dialled::ShortCode("911")
        );
        assert_eq!(p.normalise(b"9111"), Dialled::Invalid);
        assert_eq!(p.normalise(b"+911"), Dialled::Invalid);
        assert_eq!(p.normalise(b"411"), Dialled::Invalid);
        // A short code that looks like a national number still stays a short code.
        let odd = plan("1", "011", "", &["5551234567"]);
        assert_eq!(
            odd.normalise(b"555-123-4567"),
            Dialled::ShortCode("5551234567")
        );
        let none = plan("1", "011", "", &[]);
        assert_eq!(none.normalise(b"911"), Dialled::Invalid);
    }

    #[test]
    fn uri_user_part_params() {
        let p = nanp();
        assert_eq!(
            e164(&p, "5551234567;phone-context=+1").as_deref(),
            Some("+15551234567")
        );
        assert_eq!(
            e164(&p, "+15551234567;npdi;rn=+15550000000").as_deref(),
            Some("+15551234567")
        );
        assert_eq!(p.normalise(b";phone-context=+1"), Dialled::Invalid);
    }

    #[test]
    fn national_prefix_plan() {
        let p = uk();
        assert_eq!(e164(&p, "020 7946 0958").as_deref(), Some("+442079460958"));
        assert_eq!(
            e164(&p, "(020) 7946-0958").as_deref(),
            Some("+442079460958")
        );
        assert_eq!(e164(&p, "00442079460958").as_deref(), Some("+442079460958"));
        assert_eq!(
            e164(&p, "+44 20 7946 0958").as_deref(),
            Some("+442079460958")
        );
        assert_eq!(e164(&p, "0015551234567").as_deref(), Some("+15551234567"));
        assert_eq!(p.normalise(b"999"), Dialled::ShortCode("999"));
        assert_eq!(p.normalise(b"112"), Dialled::ShortCode("112"));
        // Without the trunk prefix, or NANP-looking: not a number in this plan.
        assert_eq!(p.normalise(b"2079460958"), Dialled::Invalid);
        assert_eq!(p.normalise(b"15551234567"), Dialled::Invalid);
        assert_eq!(p.normalise(b"0"), Dialled::Invalid);
        assert_eq!(p.normalise(b"012345"), Dialled::Invalid); // +4412345: 7 digits
        assert_eq!(p.normalise(b"012345678901234"), Dialled::Invalid); // 16 digits with +44
        assert_eq!(
            e164(&p, "0123456789012").as_deref(),
            Some("+44123456789012")
        );
    }

    #[test]
    fn plan_without_national_prefix_outside_nanp() {
        let p = plan("49", "00", "", &[]);
        assert_eq!(p.normalise(b"030123456"), Dialled::Invalid);
        assert_eq!(e164(&p, "004930123456").as_deref(), Some("+4930123456"));
        // "00" is accepted even when international_prefix is something else.
        let q = plan("61", "0011", "0", &[]);
        assert_eq!(
            e164(&q, "0011 44 20 7946 0958").as_deref(),
            Some("+442079460958")
        );
        assert_eq!(
            e164(&q, "0044 20 7946 0958").as_deref(),
            Some("+442079460958")
        );
        assert_eq!(e164(&q, "02 9876 5432").as_deref(), Some("+61298765432"));
    }

    #[test]
    fn e164_strict_parse() {
        let n = E164::parse("+15551234567").unwrap();
        assert_eq!(n.as_str(), "+15551234567");
        assert_eq!(n.digits(), "15551234567");
        assert_eq!(n.to_string(), "+15551234567");
        assert_eq!(format!("{n:?}"), "E164(+15551234567)");
        assert_eq!(E164::parse("+12345678").unwrap().digits(), "12345678");
        assert!(E164::parse("+123456789012345").is_some());
        for bad in [
            "",
            "+",
            "15551234567",
            "+1 555 123 4567",
            "+1-555-123-4567",
            "+1234567",
            "+1234567890123456",
            "+1555123456x",
            " +15551234567",
            "+15551234567;x",
        ] {
            assert_eq!(E164::parse(bad), None, "{bad}");
        }
        // Copy and comparable by value.
        let m = n;
        assert_eq!(m, n);
        assert_eq!(std::mem::size_of::<E164>(), 17);
    }
}
