//! Personal data in free text (rating comments): finds e-mail addresses, phone numbers,
//! payment card numbers and IBANs and replaces each with a typed placeholder (`[email]`,
//! `[phone]`, `[card]`, `[iban]`), before an event reaches Kafka.
//!
//! Candidates are found with regular expressions and then checked where a checksum exists
//! (IBAN: ISO 13616 mod-97; card: Luhn), so that order numbers, dates, amounts and scores
//! stay as written. Order matters: IBANs first (they contain long digit runs), then e-mail,
//! cards, phones. Placeholders contain no digits or `@`, so redacting twice changes nothing.
//!
//! Architecture invariant: no I/O; the collector and the producer library both call
//! [`redact`] at the point where an event is encoded for Kafka.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::{Captures, Regex};

/// What was replaced in one text, by type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub email: u32,
    pub phone: u32,
    pub card: u32,
    pub iban: u32,
}

impl Counts {
    pub fn total(&self) -> u32 {
        self.email + self.phone + self.card + self.iban
    }
    /// `(type, count)` for each type, in a fixed order (metric label values).
    pub fn by_type(&self) -> [(&'static str, u32); 4] {
        [
            ("email", self.email),
            ("phone", self.phone),
            ("card", self.card),
            ("iban", self.iban),
        ]
    }
    pub fn add(&mut self, o: Counts) {
        self.email += o.email;
        self.phone += o.phone;
        self.card += o.card;
        self.iban += o.iban;
    }
}

pub const EMAIL: &str = "[email]";
pub const PHONE: &str = "[phone]";
pub const CARD: &str = "[card]";
pub const IBAN: &str = "[iban]";

// IBAN: country, check digits, then the BBAN written as groups of four (with or without
// single spaces) and a last group of 1-3; validated with mod-97 below.
static IBAN_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b[A-Z]{2}[0-9]{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,3})?\b")
        .expect("IBAN pattern")
});
static EMAIL_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)[A-Z0-9._%+\-]+@[A-Z0-9\-]+(?:\.[A-Z0-9\-]+)*\.[A-Z]{2,}").expect("e-mail")
});
// Card: 13-19 digits, optionally grouped by single spaces or dashes; validated with Luhn.
static CARD_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b[0-9](?:[ \-]?[0-9]){12,18}\b").expect("card pattern"));
// Phone, international: `+` or `00`, a country code, then digit groups separated by a
// space, dot or dash, an area code possibly in parentheses (+1 (415) 555-2671).
static PHONE_INTL_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:\+|\b00)[1-9][0-9]{0,3}(?:[ .\-]?(?:\([0-9]{1,4}\)|[0-9]{1,5})){1,6}")
        .expect("international phone pattern")
});
// Phone, Dutch national: a trunk 0 and nine digits, grouped the ways Dutch numbers are
// written: mobile 06 (06-12345678, 06 1234 5678, 06 12 34 56 78), two-digit area codes
// (020-1234567, 010 123 4567) and three-digit ones (0591-123456, 0591 123 456).
static PHONE_NL_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"\b0(?:6[ \-]?(?:[0-9]{8}|[0-9]{4} [0-9]{4}|[0-9]{2}(?: [0-9]{2}){3})",
        r"|[1-9][0-9][ \-]?(?:[0-9]{7}|[0-9]{3} [0-9]{4})",
        r"|[1-9][0-9]{2}[ \-]?(?:[0-9]{6}|[0-9]{3} [0-9]{3}))\b"
    ))
    .expect("Dutch phone pattern")
});

/// `text` with every e-mail address, phone number, card number and IBAN replaced by its
/// placeholder, and how many of each were replaced. Borrowed when nothing was found.
pub fn redact(text: &str) -> (Cow<'_, str>, Counts) {
    let mut counts = Counts::default();
    let mut out: Cow<'_, str> = Cow::Borrowed(text);
    out = replace(out, &IBAN_RE, IBAN, &mut counts.iban, iban_valid);
    out = replace(out, &EMAIL_RE, EMAIL, &mut counts.email, |_| true);
    out = replace(out, &CARD_RE, CARD, &mut counts.card, luhn_valid);
    out = replace(out, &PHONE_INTL_RE, PHONE, &mut counts.phone, |m| {
        digits(m).count() >= 8
    });
    out = replace(out, &PHONE_NL_RE, PHONE, &mut counts.phone, |_| true);
    (out, counts)
}

/// The kind of personal data `value` contains, if any (for identifiers that must be
/// pseudonymous, like `customer_ref`): `email`, `phone`, `card` or `iban`.
pub fn personal_data_kind(value: &str) -> Option<&'static str> {
    let (_, c) = redact(value);
    c.by_type()
        .into_iter()
        .find(|(_, n)| *n > 0)
        .map(|(t, _)| t)
}

fn replace<'a>(
    text: Cow<'a, str>,
    re: &Regex,
    placeholder: &str,
    count: &mut u32,
    valid: impl Fn(&str) -> bool,
) -> Cow<'a, str> {
    if !re.is_match(&text) {
        return text;
    }
    let mut n = 0;
    let replaced = re.replace_all(&text, |c: &Captures| {
        let m = &c[0];
        if valid(m) {
            n += 1;
            placeholder.to_string()
        } else {
            m.to_string()
        }
    });
    if n == 0 {
        return text;
    }
    *count += n;
    Cow::Owned(replaced.into_owned())
}

fn digits(s: &str) -> impl Iterator<Item = u32> + '_ {
    s.chars().filter_map(|c| c.to_digit(10))
}

/// Luhn checksum over the digits of `s` (separators ignored).
pub fn luhn_valid(s: &str) -> bool {
    let d: Vec<u32> = digits(s).collect();
    if !(13..=19).contains(&d.len()) {
        return false;
    }
    let sum: u32 = d
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &x)| {
            if i % 2 == 1 {
                let y = x * 2;
                if y > 9 {
                    y - 9
                } else {
                    y
                }
            } else {
                x
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// ISO 13616 check: move the first four characters to the end, letters to 10..35, the
/// number mod 97 must be 1. Spaces ignored; 15-34 characters.
pub fn iban_valid(s: &str) -> bool {
    let c: Vec<char> = s
        .chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if !(15..=34).contains(&c.len()) || !c.iter().all(|c| c.is_ascii_alphanumeric()) {
        return false;
    }
    let mut rem: u32 = 0;
    for ch in c[4..].iter().chain(&c[..4]) {
        let v = ch.to_digit(36).expect("alphanumeric");
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> String {
        redact(s).0.into_owned()
    }

    #[test]
    fn emails() {
        assert_eq!(
            r("mail me at jan.de-vries+test@example.co.uk please"),
            "mail me at [email] please"
        );
        assert_eq!(r("A.B@Sub.Example.NL"), "[email]");
        assert_eq!(redact("x@y.com and z@w.org").1.email, 2);
    }

    #[test]
    fn dutch_phones() {
        for (input, want) in [
            ("bel 06-12345678 even", "bel [phone] even"),
            ("bel 0612345678", "bel [phone]"),
            ("bel 06 1234 5678.", "bel [phone]."),
            ("+31 6 12345678", "[phone]"),
            ("+31612345678", "[phone]"),
            ("tel: 0031 6 12345678", "tel: [phone]"),
            ("0031612345678", "[phone]"),
            ("kantoor 020-1234567", "kantoor [phone]"),
            ("kantoor 010 123 4567!", "kantoor [phone]!"),
            ("+31 20 123 4567", "[phone]"),
            ("06 12 34 56 78", "[phone]"),
            ("0591-123456", "[phone]"),
        ] {
            assert_eq!(r(input), want, "{input}");
        }
    }

    #[test]
    fn international_phones() {
        for (input, want) in [
            ("call +44 20 7946 0958 today", "call [phone] today"),
            ("call +1 (415) 555-2671.", "call [phone]."),
            ("+14155552671", "[phone]"),
            ("+49 30 901820", "[phone]"),
            ("+33 1 42 68 53 00", "[phone]"),
        ] {
            assert_eq!(r(input), want, "{input}");
        }
    }

    #[test]
    fn cards() {
        // Test numbers of the card schemes; each passes Luhn.
        for (input, want) in [
            ("card 4111 1111 1111 1111 thanks", "card [card] thanks"),
            ("4111-1111-1111-1111", "[card]"),
            ("4111111111111111", "[card]"),
            ("amex 3782 822463 10005", "amex [card]"),
            ("5555 5555 5555 4444", "[card]"),
        ] {
            assert_eq!(r(input), want, "{input}");
        }
        // One digit off: Luhn fails, left alone.
        assert_eq!(r("4111 1111 1111 1112"), "4111 1111 1111 1112");
        assert_eq!(
            redact("4111111111111111").1,
            Counts {
                card: 1,
                ..Counts::default()
            }
        );
    }

    #[test]
    fn ibans() {
        for (input, want) in [
            ("iban NL91 ABNA 0417 1643 00 please", "iban [iban] please"),
            ("NL91ABNA0417164300", "[iban]"),
            ("nl91abna0417164300", "[iban]"),
            ("DE89 3704 0044 0532 0130 00", "[iban]"),
            ("DE89370400440532013000.", "[iban]."),
            ("GB82 WEST 1234 5698 7654 32", "[iban]"),
            ("BE68 5390 0754 7034", "[iban]"),
        ] {
            assert_eq!(r(input), want, "{input}");
        }
        // Wrong check digits: left alone (and not mistaken for anything else).
        assert_eq!(r("NL92 ABNA 0417 1643 00"), "NL92 ABNA 0417 1643 00");
        assert_eq!(redact("NL91ABNA0417164300").1.iban, 1);
    }

    #[test]
    fn negatives_stay_as_written() {
        for s in [
            "order 123456789 arrived late",
            "order #A-10023, ticket 4839201",
            "bestelnummer 2024031512",
            "on 2024-03-15 at 14:30",
            "on 15-03-2024 and 03/15/2024",
            "paid € 1.234,56 and $99.99, refund 1,234.00",
            "score 9/10, 4 out of 5 stars, NPS 10",
            "version 1.2.3, room 101, postcode 1012 AB",
            "tracking 3SABCD1234567",
            "4111 1111 1111 1112",
            "order 1234567890123456",
            "NL92ABNA0417164300",
            "an @mention and user@localhost",
            "100% better than 50 years ago, 1 000 000 customers",
        ] {
            let (out, c) = redact(s);
            assert_eq!(out, s, "{s} must stay as written");
            assert_eq!(c, Counts::default(), "{s}");
        }
    }

    #[test]
    fn mixed_and_idempotent() {
        let s = "Mail jan@example.nl or call 06-12345678; refund to NL91 ABNA 0417 1643 00, card 4111 1111 1111 1111";
        let (out, c) = redact(s);
        assert_eq!(
            out,
            "Mail [email] or call [phone]; refund to [iban], card [card]"
        );
        assert_eq!(
            c,
            Counts {
                email: 1,
                phone: 1,
                card: 1,
                iban: 1
            }
        );
        let (again, c2) = redact(&out);
        assert_eq!(again, out);
        assert_eq!(c2.total(), 0);
    }

    #[test]
    fn personal_identifiers() {
        assert_eq!(personal_data_kind("jan@example.nl"), Some("email"));
        assert_eq!(personal_data_kind("+31612345678"), Some("phone"));
        assert_eq!(personal_data_kind("0612345678"), Some("phone"));
        assert_eq!(personal_data_kind("cust-48213"), None);
        assert_eq!(
            personal_data_kind("c7f3a9e2-11d4-4e5b-9a61-2f0c8d1b7e44"),
            None
        );
    }
}
