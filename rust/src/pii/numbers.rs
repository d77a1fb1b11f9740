//! The byte walk: e-mail addresses at `@`, digit runs (cards, phone numbers, national identifiers,
//! IPv4), IBAN- and NINO-shaped words, IPv6 at `:`. Each candidate is read once and skipped past.

use std::net::Ipv6Addr;

use super::checks::{card_network, iban_valid, luhn, nino_valid, ssn_valid, verhoeff};
use super::{
    secret_at_separator, word_end, word_start, Detector, Finding, CARD, CA_SIN, CREDENTIAL, EMAIL,
    IBAN, IN_AADHAAR, IP_ADDRESS, PHONE, UK_NINO, US_SSN,
};

const MAX_GROUPS: usize = 8;
const MAX_DIGITS: usize = 24;

/// What a byte may start, as bits: most bytes of prose start nothing and are passed over by one table load.
const AT: u8 = 1;
const NUMBER: u8 = 2;
const LETTER: u8 = 4;
const COLON: u8 = 8;
const EQUALS: u8 = 16;
static STARTS: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = match b as u8 {
            b'@' => AT,
            b'0'..=b'9' | b'+' | b'(' => NUMBER,
            b'A'..=b'Z' => LETTER,
            b':' => COLON,
            b'=' => EQUALS,
            _ => 0,
        };
        b += 1;
    }
    table
};

pub(super) fn walk(d: &Detector, bytes: &[u8], found: &mut Vec<Finding>) {
    let numbers = [CARD, PHONE, US_SSN, CA_SIN, IN_AADHAAR, IP_ADDRESS]
        .iter()
        .any(|&k| d.on(k));
    let mut wanted = 0;
    if d.on(EMAIL) {
        wanted |= AT;
    }
    if numbers {
        wanted |= NUMBER;
    }
    if d.on(IBAN) || d.on(UK_NINO) {
        wanted |= LETTER;
    }
    let secrets = d.on(CREDENTIAL);
    if d.on(IP_ADDRESS) || secrets {
        wanted |= COLON;
    }
    if secrets {
        wanted |= EQUALS;
    }
    let n = bytes.len();
    let mut i = 0;
    while i < n {
        // Prose is mostly lower-case letters and spaces, which start nothing: eight bytes at a time past them.
        if i + 8 <= n {
            let word = u64::from_le_bytes(bytes[i..i + 8].try_into().expect("eight bytes"));
            if !may_start(word) {
                i += 8;
                continue;
            }
        }
        let class = STARTS[bytes[i] as usize] & wanted;
        if class == 0 {
            i += 1;
            continue;
        }
        let next = match class {
            AT => email(bytes, i, found),
            NUMBER if word_start(bytes, i) => number(d, bytes, i, found),
            LETTER if word_start(bytes, i) => letter_led(d, bytes, i, found),
            COLON => {
                found.extend(secrets.then(|| secret_at_separator(bytes, i)).flatten());
                if d.on(IP_ADDRESS) {
                    ipv6(bytes, i, found)
                } else {
                    None
                }
            }
            EQUALS => {
                found.extend(secret_at_separator(bytes, i));
                None
            }
            _ => None,
        };
        i = next.map_or(i + 1, |j| j.max(i + 1));
    }
}

/// Whether any byte of `word` is in `(` ..= `Z` (0x28-0x5A): every byte that starts something is (digits, capitals,
/// `@ : = + (`); lower-case letters, spaces and bytes of multi-byte characters are not. The SWAR range test from
/// "Bit Twiddling Hacks" (hasbetween), valid for bytes below 0x80; bytes above never count.
pub(super) fn may_start(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const LOW7: u64 = ONES * 127;
    const LOWER: u64 = 0x27; // exclusive bounds
    const UPPER: u64 = 0x5B;
    let low = word & LOW7;
    ((ONES * (127 + UPPER)).wrapping_sub(low)
        & !word
        & low.wrapping_add(ONES * (127 - LOWER))
        & (ONES * 128))
        != 0
}

// -- e-mail ---------------------------------------------------------------------------------------------

fn email(bytes: &[u8], at: usize, found: &mut Vec<Finding>) -> Option<usize> {
    let local = |b: u8| b.is_ascii_alphanumeric() || b"._%+-".contains(&b);
    let mut start = at;
    while start > 0 && local(bytes[start - 1]) && at - start < 64 {
        start -= 1;
    }
    while start < at && bytes[start] == b'.' {
        start += 1;
    }
    if start == at || bytes[at - 1] == b'.' {
        return None;
    }
    let mut end = at + 1;
    while end < bytes.len()
        && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'.' || bytes[end] == b'-')
    {
        end += 1;
    }
    while end > at + 1 && matches!(bytes[end - 1], b'.' | b'-') {
        end -= 1;
    }
    let domain = &bytes[at + 1..end];
    let tld = domain.rsplit(|&b| b == b'.').next()?;
    let labels_ok = domain
        .split(|&b| b == b'.')
        .all(|l| !l.is_empty() && l[0] != b'-');
    if !domain.contains(&b'.')
        || !labels_ok
        || tld.len() < 2
        || !tld.iter().all(u8::is_ascii_alphabetic)
    {
        return None;
    }
    found.push(Finding {
        kind: EMAIL,
        start,
        end,
        confidence: 0.99,
    });
    Some(end)
}

// -- numbers --------------------------------------------------------------------------------------------

/// A run of digits with the separators written numbers use, as its digit groups.
struct Number {
    start: usize,
    end: usize,
    digits: [u8; MAX_DIGITS],
    count: usize,
    groups: [u8; MAX_GROUPS],
    ngroups: usize,
    /// The separators between groups, all the same one (`0` when mixed).
    separator: u8,
    plus: bool,
    paren: bool,
}

impl Number {
    fn digits(&self) -> &[u8] {
        &self.digits[..self.count]
    }

    fn groups(&self) -> &[u8] {
        &self.groups[..self.ngroups]
    }

    fn grouped(&self, shape: &[u8], separators: &[u8]) -> bool {
        self.groups() == shape && separators.contains(&self.separator)
    }
}

fn read_number(bytes: &[u8], start: usize) -> Option<Number> {
    let mut n = Number {
        start,
        end: start,
        digits: [0; MAX_DIGITS],
        count: 0,
        groups: [0; MAX_GROUPS],
        ngroups: 0,
        separator: 0,
        plus: false,
        paren: false,
    };
    let mut j = start;
    if bytes[j] == b'+' {
        n.plus = true;
        j += 1;
    }
    if bytes.get(j) == Some(&b'(') {
        n.paren = true;
        j += 1;
    }
    if !bytes.get(j).is_some_and(u8::is_ascii_digit) {
        return None;
    }
    let mut group = 0u8;
    let mut last_digit = j;
    let mut pending: Option<u8> = None; // the separator seen since the last digit
    while j < bytes.len() {
        let b = bytes[j];
        if b.is_ascii_digit() {
            if let Some(sep) = pending.take() {
                if n.ngroups == MAX_GROUPS - 1 {
                    break;
                }
                n.groups[n.ngroups] = group;
                n.ngroups += 1;
                group = 0;
                let sep = if sep == b')' { b' ' } else { sep }; // "(415) 555" groups like "415 555"
                n.separator = if n.ngroups == 1 || n.separator == sep {
                    sep
                } else {
                    0
                };
            }
            if n.count == MAX_DIGITS {
                return None; // longer than any number these kinds have
            }
            n.digits[n.count] = b;
            n.count += 1;
            group += 1;
            last_digit = j;
        } else if matches!(b, b' ' | b'-' | b'.' | b'/' | b')') && pending.is_none() {
            pending = Some(b);
        } else if b == b' ' && pending == Some(b')') {
            // "(415) 555-2671": a space after the closing parenthesis
        } else {
            break;
        }
        j += 1;
    }
    n.groups[n.ngroups] = group;
    n.ngroups += 1;
    n.end = last_digit + 1;
    // "12345abc", "1.5x", "v2": digits glued to a word are not a number of these kinds.
    if !word_end(bytes, n.end) {
        return None;
    }
    Some(n)
}

fn number(d: &Detector, bytes: &[u8], start: usize, found: &mut Vec<Finding>) -> Option<usize> {
    let n = read_number(bytes, start)?;
    if let Some((kind, confidence)) = classify(d, bytes, &n) {
        found.push(Finding {
            kind,
            start: n.start,
            end: n.end,
            confidence,
        });
    }
    Some(n.end)
}

fn classify(d: &Detector, bytes: &[u8], n: &Number) -> Option<(u16, f64)> {
    let digits = n.digits();
    let count = digits.len();
    let plain = n.ngroups == 1 && !n.plus && !n.paren;
    if n.separator == b'.' && n.ngroups == 4 && !n.plus && !n.paren {
        // A four-part version ("build 1.2.8.0", "1.2.8.0-rc") is not an address.
        let version = (bytes.get(n.end) == Some(&b'-')
            && bytes.get(n.end + 1).is_some_and(u8::is_ascii_alphabetic))
            || context_within(bytes, n.start, &["version ", "build ", "release "], 10);
        return (d.on(IP_ADDRESS) && ipv4(n) && !version).then_some((IP_ADDRESS, 0.85));
    }
    if date_like(n) {
        return None;
    }
    if d.on(US_SSN) && !n.plus && !n.paren {
        if n.grouped(&[3, 2, 4], b"-") && ssn_valid(digits) {
            return Some((US_SSN, 0.95));
        }
        if n.grouped(&[3, 2, 4], b" ") && ssn_valid(digits) {
            return Some((US_SSN, 0.8));
        }
        if plain
            && count == 9
            && ssn_valid(digits)
            && context(bytes, n.start, &["ssn", "social security"])
        {
            return Some((US_SSN, 0.85));
        }
    }
    if d.on(CARD)
        && (13..=19).contains(&count)
        && !n.plus
        && !n.paren
        && card_grouping(n)
        && luhn(digits)
        && card_network(digits).is_some()
    {
        return Some((CARD, 0.99));
    }
    if d.on(CA_SIN)
        && (n.grouped(&[3, 3, 3], b" -")
            || (plain && count == 9 && context(bytes, n.start, &["sin", "social insurance"])))
        && luhn(digits)
        && digits[0] != b'0'
        && digits[0] != b'8'
    {
        return Some((CA_SIN, 0.9));
    }
    if d.on(IN_AADHAAR) && count == 12 && digits[0] >= b'2' && verhoeff(digits) {
        if n.grouped(&[4, 4, 4], b" -") {
            return Some((IN_AADHAAR, 0.95));
        }
        if plain && context(bytes, n.start, &["aadhaar", "aadhar", "uidai"]) {
            return Some((IN_AADHAAR, 0.9));
        }
    }
    if d.on(PHONE) {
        return phone(bytes, n);
    }
    None
}

fn ipv4(n: &Number) -> bool {
    let mut k = 0;
    n.groups().iter().all(|&g| {
        let part = &n.digits()[k..k + g as usize];
        k += g as usize;
        (1..=3).contains(&g)
            && (g == 1 || part[0] != b'0')
            && part.iter().fold(0u32, |a, &b| a * 10 + u32::from(b - b'0')) <= 255
    })
}

/// Dates and the like written with separators: 2024-01-15, 15/01/2024, 1.5.2024, 2024/1/5.
fn date_like(n: &Number) -> bool {
    if n.plus || n.paren || n.ngroups != 3 || !b"-/.".contains(&n.separator) {
        return false;
    }
    let g = n.groups();
    let year_first = g[0] == 4 && g[1] <= 2 && g[2] <= 2;
    let year_last = g[0] <= 2 && g[1] <= 2 && (g[2] == 4 || g[2] == 2);
    year_first || year_last
}

fn card_grouping(n: &Number) -> bool {
    let g = n.groups();
    n.ngroups == 1
        || (b" -".contains(&n.separator)
            && (g[..g.len() - 1].iter().all(|&x| x == 4) && g[g.len() - 1] <= 4
                || g == [4, 6, 5]
                || g == [4, 6, 4]))
}

fn phone(bytes: &[u8], n: &Number) -> Option<(u16, f64)> {
    let digits = n.digits();
    let count = digits.len();
    let g = n.groups();
    if n.plus {
        // E.164: a country code and at most 15 digits in all.
        return ((8..=15).contains(&count) && digits[0] != b'0').then_some((PHONE, 0.95));
    }
    let nanp_area = |k: usize| (b'2'..=b'9').contains(&digits[k]);
    if (g == [3, 3, 4] && (n.paren || b"-. ".contains(&n.separator)) && nanp_area(0))
        || (g == [1, 3, 3, 4] && digits[0] == b'1' && b"-. ".contains(&n.separator) && nanp_area(1))
    {
        return Some((PHONE, 0.9));
    }
    // National formats that start with a trunk 0: "020 7946 0958", "07700 900123", "01 23 45 67 89".
    if digits[0] == b'0'
        && (10..=11).contains(&count)
        && (2..=5).contains(&n.ngroups)
        && b" -.".contains(&n.separator)
        && n.separator != 0
    {
        return Some((PHONE, 0.8));
    }
    if n.ngroups == 1
        && (10..=12).contains(&count)
        && context(
            bytes,
            n.start,
            &[
                "phone", "tel", "call", "mobile", "cell", "whatsapp", "fax", "sms",
            ],
        )
    {
        return Some((PHONE, 0.75));
    }
    None
}

/// Whether one of `words` (lowercase) is within the 32 bytes before `at`.
fn context(bytes: &[u8], at: usize, words: &[&str]) -> bool {
    context_within(bytes, at, words, 32)
}

fn context_within(bytes: &[u8], at: usize, words: &[&str], window: usize) -> bool {
    let lower: Vec<u8> = bytes[at.saturating_sub(window)..at].to_ascii_lowercase();
    words
        .iter()
        .any(|w| lower.windows(w.len()).any(|x| x == w.as_bytes()))
}

// -- IBAN and UK National Insurance numbers -------------------------------------------------------------

fn letter_led(d: &Detector, bytes: &[u8], start: usize, found: &mut Vec<Finding>) -> Option<usize> {
    let at = |k: usize| bytes.get(start + k).copied().unwrap_or(0);
    if d.on(IBAN) && at(1).is_ascii_uppercase() && at(2).is_ascii_digit() && at(3).is_ascii_digit()
    {
        let mut compact = [0u8; 34];
        let mut len = 0;
        let mut j = start;
        let mut end = start;
        // Where the printed groups of four break: the IBAN may end at any of them ("... 7587 Let me").
        let mut breaks = [(0usize, 0usize); 9];
        let mut nbreaks = 0;
        while j < bytes.len() && len < 34 {
            let b = bytes[j];
            if b.is_ascii_uppercase() || b.is_ascii_digit() {
                compact[len] = b;
                len += 1;
                end = j + 1;
            } else if b == b' '
                && len % 4 == 0
                && bytes.get(j + 1).is_some_and(u8::is_ascii_alphanumeric)
            {
                if nbreaks < breaks.len() {
                    breaks[nbreaks] = (len, end);
                    nbreaks += 1;
                }
            } else {
                break;
            }
            j += 1;
        }
        let whole = word_end(bytes, end).then_some((len, end));
        for (len, end) in whole
            .into_iter()
            .chain(breaks[..nbreaks].iter().rev().copied())
        {
            if iban_valid(&compact[..len]) {
                found.push(Finding {
                    kind: IBAN,
                    start,
                    end,
                    confidence: 0.99,
                });
                return Some(end);
            }
        }
    }
    if d.on(UK_NINO) && at(1).is_ascii_uppercase() {
        // AB123456C or AB 12 34 56 C
        let mut digits = 0;
        let mut j = start + 2;
        while j < bytes.len() && digits < 6 {
            match bytes[j] {
                b'0'..=b'9' => digits += 1,
                b' ' if digits % 2 == 0 => {}
                _ => break,
            }
            j += 1;
        }
        if bytes.get(j) == Some(&b' ') {
            j += 1;
        }
        if digits == 6
            && j < bytes.len()
            && word_end(bytes, j + 1)
            && nino_valid([at(0), at(1)], bytes[j])
        {
            found.push(Finding {
                kind: UK_NINO,
                start,
                end: j + 1,
                confidence: 0.9,
            });
            return Some(j + 1);
        }
    }
    None
}

// -- IPv6 -----------------------------------------------------------------------------------------------

fn ipv6(bytes: &[u8], colon: usize, found: &mut Vec<Finding>) -> Option<usize> {
    let part = |b: u8| b.is_ascii_hexdigit() || b == b':' || b == b'.';
    let mut start = colon;
    while start > 0 && part(bytes[start - 1]) {
        start -= 1;
    }
    let mut end = colon;
    while end < bytes.len() && part(bytes[end]) {
        end += 1;
    }
    while end > colon && bytes[end - 1] == b'.' {
        end -= 1;
    }
    let candidate = &bytes[start..end];
    let colons = candidate.iter().filter(|&&b| b == b':').count();
    let hex = candidate.iter().filter(|b| b.is_ascii_hexdigit()).count();
    if colons < 2 || hex < 4 || !word_start(bytes, start) || !word_end(bytes, end) {
        return Some(end);
    }
    let text = std::str::from_utf8(candidate).ok()?;
    if text.parse::<Ipv6Addr>().is_ok() {
        found.push(Finding {
            kind: IP_ADDRESS,
            start,
            end,
            confidence: 0.9,
        });
    }
    Some(end)
}
