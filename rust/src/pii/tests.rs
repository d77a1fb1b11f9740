use super::*;

fn detector() -> Detector {
    Detector::new(None, &[], &[]).unwrap()
}

fn all() -> Detector {
    Detector::new(Some(&BUILTIN), &[], &[]).unwrap()
}

/// (kind, matched text) of every finding.
fn found(d: &Detector, text: &str) -> Vec<(String, String)> {
    d.scan(text)
        .into_iter()
        .map(|f| {
            (
                d.kinds()[f.kind as usize].clone(),
                text[f.start..f.end].to_string(),
            )
        })
        .collect()
}

fn one(d: &Detector, text: &str, kind: &str, value: &str) {
    assert_eq!(
        found(d, text),
        vec![(kind.to_string(), value.to_string())],
        "in {text:?}"
    );
}

fn none(d: &Detector, text: &str) {
    assert_eq!(found(d, text), vec![], "in {text:?}");
}

#[test]
fn emails() {
    let d = detector();
    one(
        &d,
        "write to jane.doe+billing@example.co.uk today",
        "email",
        "jane.doe+billing@example.co.uk",
    );
    one(&d, "<a.b@sub.example.org>.", "email", "a.b@sub.example.org");
    none(&d, "@mention and user@localhost and a@b.c1 and x@-bad.com");
}

#[test]
fn cards_need_luhn_and_an_issuer() {
    let d = detector();
    one(
        &d,
        "card 4111 1111 1111 1111 exp 12/28",
        "card",
        "4111 1111 1111 1111",
    );
    one(&d, "amex 3782-822463-10005.", "card", "3782-822463-10005");
    one(&d, "5555555555554444", "card", "5555555555554444");
    none(&d, "order 4111111111111112 shipped"); // Luhn fails
    none(&d, "id 9111111111111111"); // no issuer
}

#[test]
fn phone_numbers_by_number_plan() {
    let d = detector();
    one(&d, "call +1 415 555 2671 now", "phone", "+1 415 555 2671");
    one(&d, "Tel: (415) 555-2671", "phone", "(415) 555-2671");
    one(&d, "415.555.2671", "phone", "415.555.2671");
    one(&d, "+44 20 7946 0958", "phone", "+44 20 7946 0958");
    one(&d, "ring 020 7946 0958", "phone", "020 7946 0958");
    one(&d, "mobile: 4155552671", "phone", "4155552671");
    none(&d, "order 4155552671 shipped"); // ten plain digits without a context word
    none(&d, "on 2024-01-15 at 12:30:45 the build 1.2.3 ran"); // dates, times, versions
    none(&d, "between 1990-2000, 3-4 times, 12/31/2024, 155-2671");
}

#[test]
fn us_ssn() {
    let d = detector();
    one(&d, "SSN 123-45-6789.", "us_ssn", "123-45-6789");
    one(&d, "ssn: 123456789", "us_ssn", "123456789");
    none(&d, "666-12-3456 and 123-00-4567 and 123456789");
}

#[test]
fn ibans_by_check_digits() {
    let d = detector();
    one(
        &d,
        "IBAN GB82 WEST 1234 5698 7654 32, thanks",
        "iban",
        "GB82 WEST 1234 5698 7654 32",
    );
    one(
        &d,
        "DE89370400440532013000",
        "iban",
        "DE89370400440532013000",
    );
    one(
        &d,
        "IBAN BE68 5390 0754 7034 Urgent",
        "iban",
        "BE68 5390 0754 7034",
    ); // a word after a last full group
    none(&d, "GB82 WEST 1234 5698 7654 33"); // a changed digit
}

#[test]
fn ip_addresses() {
    let d = detector();
    one(&d, "from 192.168.10.1:8080", "ip_address", "192.168.10.1");
    one(
        &d,
        "host 2001:db8:85a3::8a2e:370:7334 down",
        "ip_address",
        "2001:db8:85a3::8a2e:370:7334",
    );
    none(
        &d,
        "999.1.1.1 and std::vector and 12:30:45 and 00:1A:2B:3C:4D:5E and a::b",
    );
}

#[test]
fn credentials() {
    let d = detector();
    one(
        &d,
        "key sk-proj-Abc123def456ghi789JKL012 ok",
        "credential",
        "sk-proj-Abc123def456ghi789JKL012",
    );
    one(
        &d,
        "AKIAIOSFODNN7EXAMPLE",
        "credential",
        "AKIAIOSFODNN7EXAMPLE",
    );
    one(
        &d,
        "token ghp_aBcD1234567890aBcD1234567890aBcD1234",
        "credential",
        "ghp_aBcD1234567890aBcD1234567890aBcD1234",
    );
    one(
        &d,
        "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlLXZhbHVl",
        "credential",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlLXZhbHVl",
    );
    one(
        &d,
        "db password: Tr0ub4dor&3 please",
        "credential",
        "Tr0ub4dor&3",
    );
    one(
        &d,
        "{\"api_key\": \"q8F2kLmZ91xR\"}",
        "credential",
        "q8F2kLmZ91xR",
    );
    none(
        &d,
        "ask-me-anything task-runner sk-learn-tutorial-for-beginners",
    );
    none(
        &d,
        "password: ******** and password: <redacted> and token: ${TOKEN} and pwd: /home/me",
    );
    none(&d, "the password_reset_url is here; tokens: 5");
}

#[test]
fn private_keys_span_their_block() {
    let d = detector();
    let key = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nabc\n-----END RSA PRIVATE KEY-----";
    one(&d, &format!("here:\n{key}\nthanks"), "private_key", key);
    none(
        &d,
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
    );
}

#[test]
fn national_identifiers_are_opt_in() {
    let on = all();
    one(&on, "NINO AB 12 34 56 C", "uk_nino", "AB 12 34 56 C");
    one(&on, "SIN 130 692 544", "ca_sin", "130 692 544");
    one(
        &on,
        "aadhaar 2345 6789 0124",
        "in_aadhaar",
        "2345 6789 0124",
    );
    let default = detector();
    none(&default, "NINO AB 12 34 56 C");
}

#[test]
fn operator_patterns_and_terms() {
    let d = Detector::new(
        None,
        &[("employee_id", r"\bEMP-\d{6}\b")],
        &[("project", vec!["Bluebird", "Project X"])],
    )
    .unwrap();
    assert_eq!(
        found(
            &d,
            "EMP-123456 works on bluebird and project x, not bluebirds"
        ),
        vec![
            ("employee_id".to_string(), "EMP-123456".to_string()),
            ("project".to_string(), "bluebird".to_string()),
            ("project".to_string(), "project x".to_string()),
        ]
    );
    assert!(Detector::new(None, &[("card", "x")], &[]).is_err());
    assert!(Detector::new(None, &[("x", "(")], &[]).is_err());
    assert!(Detector::new(Some(&["nope"]), &[], &[]).is_err());
}

#[test]
fn offsets_are_bytes_of_utf8_text() {
    let d = detector();
    let text = "café → jane@example.com";
    let f = d.scan(text)[0];
    assert_eq!(&text[f.start..f.end], "jane@example.com");
}

#[test]
fn the_eight_byte_skip_sees_every_byte_that_may_start_a_finding() {
    for b in 0u8..=255 {
        for at in 0..8 {
            let mut word = *b"abcdefgh";
            word[at] = b;
            let interesting = (0x28..=0x5A).contains(&b);
            assert_eq!(
                super::numbers::may_start(u64::from_le_bytes(word)),
                interesting,
                "byte {b:#x} at {at}"
            );
        }
    }
}

#[test]
fn secret_words_before_a_separator_or_is() {
    let d = detector();
    one(
        &d,
        "my password is Tr0ub4dor&3 ok",
        "credential",
        "Tr0ub4dor&3",
    );
    one(&d, "API_KEY=q8F2kLmZ91xR", "credential", "q8F2kLmZ91xR");
    one(
        &d,
        "client_secret : 'zX9-ab12CD34'",
        "credential",
        "zX9-ab12CD34",
    );
    none(&d, "ratio=1.5 and key: value and note: hello");
}
