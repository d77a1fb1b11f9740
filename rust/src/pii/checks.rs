//! Check digits and number-plan facts the detectors validate candidates with: what turns "a run of
//! digits" into "a card number" with near-certainty.

/// Luhn (mod 10) over ASCII digits: payment cards and Canadian SINs.
pub fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, &d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(d - b'0');
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    !digits.is_empty() && sum.is_multiple_of(10)
}

/// Verhoeff over ASCII digits: India's Aadhaar numbers.
pub fn verhoeff(digits: &[u8]) -> bool {
    const D: [[u8; 10]; 10] = [
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
        [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
        [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
        [4, 0, 1, 2, 3, 9, 5, 6, 7, 8],
        [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
        [6, 5, 9, 8, 7, 1, 0, 4, 3, 2],
        [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
        [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
        [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
    ];
    const P: [[u8; 10]; 8] = [
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        [1, 5, 7, 6, 2, 8, 3, 0, 9, 4],
        [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
        [8, 9, 1, 6, 0, 4, 3, 5, 2, 7],
        [9, 4, 5, 3, 1, 2, 6, 8, 7, 0],
        [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
        [2, 7, 9, 3, 8, 0, 6, 4, 1, 5],
        [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
    ];
    let mut c = 0u8;
    for (i, &d) in digits.iter().rev().enumerate() {
        c = D[c as usize][P[i % 8][(d - b'0') as usize] as usize];
    }
    !digits.is_empty() && c == 0
}

/// The card network whose issuer prefix and length `digits` has, if any (IIN ranges as the networks
/// publish them: Visa 4; Mastercard 51-55 and 2221-2720; Amex 34, 37; Discover 6011, 644-649, 65;
/// JCB 3528-3589; Diners 300-305, 36, 38-39; UnionPay 62).
pub fn card_network(digits: &[u8]) -> Option<&'static str> {
    let n = digits.len();
    let prefix = |k: usize| -> u32 {
        digits[..k.min(n)]
            .iter()
            .fold(0, |acc, &d| acc * 10 + u32::from(d - b'0'))
    };
    let (p1, p2, p3, p4) = (prefix(1), prefix(2), prefix(3), prefix(4));
    if p1 == 4 && matches!(n, 13 | 16 | 19) {
        return Some("visa");
    }
    if ((51..=55).contains(&p2) || (2221..=2720).contains(&p4)) && n == 16 {
        return Some("mastercard");
    }
    if (p2 == 34 || p2 == 37) && n == 15 {
        return Some("amex");
    }
    if (p4 == 6011 || (644..=649).contains(&p3) || p2 == 65) && (16..=19).contains(&n) {
        return Some("discover");
    }
    if (3528..=3589).contains(&p4) && (16..=19).contains(&n) {
        return Some("jcb");
    }
    if ((300..=305).contains(&p3) || p2 == 36 || p2 == 38 || p2 == 39) && (14..=19).contains(&n) {
        return Some("diners");
    }
    if p2 == 62 && (16..=19).contains(&n) {
        return Some("unionpay");
    }
    None
}

/// A US Social Security number the SSA could issue: area not 000, 666 or 9xx; group not 00; serial
/// not 0000.
pub fn ssn_valid(digits: &[u8]) -> bool {
    if digits.len() != 9 {
        return false;
    }
    let area = &digits[..3];
    area != b"000"
        && area != b"666"
        && area[0] != b'9'
        && &digits[3..5] != b"00"
        && &digits[5..] != b"0000"
}

/// IBAN length per country (the SWIFT registry), for the countries most traffic carries; others
/// are checked by the mod-97 rule alone within the 15-34 range.
pub fn iban_length(country: &[u8]) -> Option<usize> {
    Some(match country {
        b"AD" => 24,
        b"AE" => 23,
        b"AT" => 20,
        b"BE" => 16,
        b"BG" => 22,
        b"BR" => 29,
        b"CH" => 21,
        b"CY" => 28,
        b"CZ" => 24,
        b"DE" => 22,
        b"DK" => 18,
        b"EE" => 20,
        b"ES" => 24,
        b"FI" => 18,
        b"FR" => 27,
        b"GB" => 22,
        b"GR" => 27,
        b"HR" => 21,
        b"HU" => 28,
        b"IE" => 22,
        b"IL" => 23,
        b"IS" => 26,
        b"IT" => 27,
        b"LI" => 21,
        b"LT" => 20,
        b"LU" => 20,
        b"LV" => 21,
        b"MC" => 27,
        b"MT" => 31,
        b"NL" => 18,
        b"NO" => 15,
        b"PL" => 28,
        b"PT" => 25,
        b"RO" => 24,
        b"SA" => 24,
        b"SE" => 24,
        b"SI" => 19,
        b"SK" => 24,
        b"SM" => 27,
        b"TR" => 26,
        b"UA" => 29,
        _ => return None,
    })
}

/// The IBAN check: the first four characters moved to the end, letters as 10..35, mod 97 == 1.
/// `compact` holds only uppercase ASCII letters and digits.
pub fn iban_valid(compact: &[u8]) -> bool {
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    if let Some(expected) = iban_length(&compact[..2]) {
        if compact.len() != expected {
            return false;
        }
    }
    let mut rem = 0u32;
    for &c in compact[4..].iter().chain(&compact[..4]) {
        match c {
            b'0'..=b'9' => rem = (rem * 10 + u32::from(c - b'0')) % 97,
            b'A'..=b'Z' => rem = (rem * 100 + u32::from(c - b'A' + 10)) % 97,
            _ => return false,
        }
    }
    rem == 1
}

/// A UK National Insurance number's letters: the prefixes HMRC never issues are refused, and the
/// suffix is A-D.
pub fn nino_valid(prefix: [u8; 2], suffix: u8) -> bool {
    const NEVER_FIRST: &[u8] = b"DFIQUV";
    const NEVER_SECOND: &[u8] = b"DFIOQUV";
    const NEVER_PAIR: [&[u8; 2]; 6] = [b"BG", b"GB", b"NK", b"KN", b"TN", b"NT"];
    !NEVER_FIRST.contains(&prefix[0])
        && !NEVER_SECOND.contains(&prefix[1])
        && !NEVER_PAIR.iter().any(|p| **p == prefix)
        && &prefix != b"ZZ"
        && (b'A'..=b'D').contains(&suffix)
}

/// Shannon entropy in bits per character: a secret value looks random, a word does not.
pub fn entropy(text: &[u8]) -> f64 {
    let mut counts = [0u32; 256];
    for &b in text {
        counts[b as usize] += 1;
    }
    let n = text.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_accepts_published_test_cards_and_refuses_a_changed_digit() {
        for card in [
            "4111111111111111",
            "5555555555554444",
            "378282246310005",
            "6011111111111117",
        ] {
            assert!(luhn(card.as_bytes()), "{card}");
        }
        assert!(!luhn(b"4111111111111112"));
    }

    #[test]
    fn card_networks_by_prefix_and_length() {
        assert_eq!(card_network(b"4111111111111111"), Some("visa"));
        assert_eq!(card_network(b"2223000048400011"), Some("mastercard"));
        assert_eq!(card_network(b"378282246310005"), Some("amex"));
        assert_eq!(card_network(b"3782822463100050"), None); // Amex is 15 digits
        assert_eq!(card_network(b"9111111111111111"), None);
    }

    #[test]
    fn verhoeff_and_ssn_and_nino() {
        assert!(verhoeff(b"2363"));
        assert!(!verhoeff(b"2364"));
        assert!(ssn_valid(b"123456789"));
        assert!(!ssn_valid(b"666123456") && !ssn_valid(b"900123456") && !ssn_valid(b"123006789"));
        assert!(nino_valid(*b"AB", b'C'));
        assert!(
            !nino_valid(*b"GB", b'A') && !nino_valid(*b"AB", b'E') && !nino_valid(*b"DA", b'A')
        );
    }

    #[test]
    fn iban_check_digits() {
        assert!(iban_valid(b"GB82WEST12345698765432"));
        assert!(iban_valid(b"DE89370400440532013000"));
        assert!(!iban_valid(b"GB82WEST12345698765433"));
        assert!(!iban_valid(b"DE8937040044053201300")); // one short for Germany
    }

    #[test]
    fn entropy_separates_random_from_words() {
        assert!(entropy(b"x7Gq2LpZ9vRkT4mW") > 3.5);
        assert!(entropy(b"aaaaaaaaaaaa") < 0.1);
    }
}
