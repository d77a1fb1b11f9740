"""A generated, labelled corpus for the sensitive-data detectors: what their precision and recall are measured on.

Each sample is a sentence with zero or more labelled spans. Positives are valid values of each kind (check digits
computed, issuer prefixes and number plans as published) written in the formats people write them in, inside
templates that vary the surrounding words. Negatives are the look-alikes a detector must refuse: dates, times,
version numbers, order and tracking numbers, prices, UUIDs, commit hashes, card numbers with a wrong check digit,
IBANs with a wrong check digit, words that merely start like key prefixes (``task-``, ``sk-learn``), and the word
"password" followed by placeholders. The same seed gives the same corpus; nothing here was tuned against the
detectors' output beyond fixing generator bugs (a generated "negative" that was in fact valid).

    from pii_corpus import corpus
    samples = corpus(seed=7, per_kind=200)   # [(text, [(kind, start, end), ...]), ...]
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable

Sample = tuple[str, list[tuple[str, int, int]]]

_NAMES = ["Alice", "Bob", "Chen", "Dara", "Emeka", "Fatima", "Giulia", "Hiro", "Ines", "Jonas"]
_LEADS = ["Please update my record:", "Customer note -", "From the ticket:", "As discussed,", "FYI", "Reminder:",
          "Can you check this?", "Forwarded message:"]
_TAILS = ["Thanks!", "Let me know.", "", "Regards, support.", "(sent from my phone)", "Urgent."]


def _luhn_digit(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        v = int(ch)
        if i % 2 == 0:
            v *= 2
            if v > 9:
                v -= 9
        total += v
    return str((10 - total % 10) % 10)


def _card(rng: random.Random) -> str:
    prefix, length, grouping = rng.choice([
        ("4", 16, (4, 4, 4, 4)), ("51", 16, (4, 4, 4, 4)), ("55", 16, (4, 4, 4, 4)), ("2221", 16, (4, 4, 4, 4)),
        ("34", 15, (4, 6, 5)), ("37", 15, (4, 6, 5)), ("6011", 16, (4, 4, 4, 4)), ("65", 16, (4, 4, 4, 4)),
        ("3530", 16, (4, 4, 4, 4)), ("4", 13, (13,))])
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    number = body + _luhn_digit(body)
    return _grouped(rng, number, grouping)


def _grouped(rng: random.Random, number: str, grouping: tuple[int, ...]) -> str:
    separator = rng.choice(["", " ", "-"]) if len(grouping) > 1 else ""
    parts, at = [], 0
    for size in grouping:
        parts.append(number[at:at + size])
        at += size
    return separator.join(parts)


def _iban(rng: random.Random) -> str:
    country, bban_len, letters = rng.choice([("GB", 18, 4), ("DE", 18, 0), ("FR", 23, 0), ("NL", 14, 4),
                                              ("ES", 20, 0), ("IT", 23, 1), ("CH", 17, 0), ("BE", 12, 0)])
    bban = "".join(rng.choice(string.ascii_uppercase) for _ in range(letters))
    bban += "".join(rng.choice(string.digits) for _ in range(bban_len - letters))
    check = 98 - int(_iban_number(bban + country + "00")) % 97
    compact = f"{country}{check:02d}{bban}"
    return " ".join(compact[i:i + 4] for i in range(0, len(compact), 4)) if rng.random() < 0.5 else compact


def _iban_number(text: str) -> str:
    return "".join(str(int(ch, 36)) for ch in text)


def _ssn(rng: random.Random) -> str:
    area = rng.choice([n for n in range(1, 900) if n != 666])
    return f"{area:03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"


def _phone(rng: random.Random) -> str:
    area, exchange, line = rng.randint(201, 989), rng.randint(200, 999), rng.randint(0, 9999)
    return rng.choice([
        f"+1 {area} {exchange} {line:04d}", f"({area}) {exchange}-{line:04d}", f"{area}-{exchange}-{line:04d}",
        f"{area}.{exchange}.{line:04d}", f"+44 20 {rng.randint(7000, 8999)} {rng.randint(1000, 9999)}",
        f"+49 30 {rng.randint(100000, 999999)}{rng.randint(10, 99)}",
        f"020 {rng.randint(7000, 8999)} {rng.randint(1000, 9999)}",
        f"+33 1 {rng.randint(10, 99)} {rng.randint(10, 99)} {rng.randint(10, 99)} {rng.randint(10, 99)}"])


def _email(rng: random.Random) -> str:
    user = rng.choice(_NAMES).lower() + rng.choice([".", "_", ""]) + rng.choice(["smith", "li", "okafor", "x", "92"])
    return f"{user}@{rng.choice(['example.com', 'mail.example.org', 'corp.example.co.uk', 'uni.example.edu'])}"


def _ip(rng: random.Random) -> str:
    if rng.random() < 0.7:
        return ".".join(str(rng.randint(1, 254)) for _ in range(4))
    groups = [f"{rng.randint(0, 65535):x}" for _ in range(8)]
    return ":".join(groups) if rng.random() < 0.5 else f"2001:db8::{groups[0]}:{groups[1]}"


def _token(rng: random.Random, alphabet: str, length: int) -> str:
    """Random characters of ``alphabet``; with a digit somewhere when the alphabet has digits (as keys do)."""
    while True:
        value = "".join(rng.choice(alphabet) for _ in range(length))
        if any(ch.isdigit() for ch in value) or not any(ch.isdigit() for ch in alphabet):
            return value


def _key(rng: random.Random) -> str:
    alnum = string.ascii_letters + string.digits
    return rng.choice([
        "sk-proj-" + _token(rng, alnum + "-_", 48), "sk-ant-api03-" + _token(rng, alnum + "-_", 60),
        "AKIA" + _token(rng, string.ascii_uppercase + string.digits, 16), "ghp_" + _token(rng, alnum, 36),
        "xoxb-" + _token(rng, string.digits, 12) + "-" + _token(rng, alnum, 24),
        "AIza" + _token(rng, alnum + "-_", 35), "glpat-" + _token(rng, alnum + "-_", 20),
        "sk_live_" + _token(rng, alnum, 24)])


POSITIVES: dict[str, tuple[Callable[[random.Random], str], list[str]]] = {
    "card": (_card, ["my card is {}", "charge {} please", "Visa: {}", "cc {} exp 09/27"]),
    "iban": (_iban, ["IBAN {}", "wire it to {} today", "account: {}"]),
    "us_ssn": (_ssn, ["SSN {}", "social security number {}", "ssn: {}"]),
    "phone": (_phone, ["call me at {}", "phone: {}", "my number is {}", "reach {} after 5pm"]),
    "email": (_email, ["mail {}", "contact: {}", "cc {} on the thread"]),
    "ip_address": (_ip, ["the server at {} is down", "blocked {}", "login from {}"]),
    "credential": (_key, ["use key {}", "OPENAI_API_KEY={}", "token: {}", "here is the secret {}"]),
}

# (text, why it is not sensitive): each generator returns one look-alike.
NEGATIVES: list[Callable[[random.Random], str]] = [
    lambda r: f"the meeting is on {r.randint(2000, 2030)}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}",
    lambda r: f"due {r.randint(1, 28):02d}/{r.randint(1, 12):02d}/{r.randint(2000, 2030)}",
    lambda r: f"at {r.randint(0, 23):02d}:{r.randint(0, 59):02d}:{r.randint(0, 59):02d} UTC",
    lambda r: f"upgrade to version {r.randint(1, 9)}.{r.randint(0, 20)}.{r.randint(0, 99)}",
    lambda r: f"order #{r.randint(10_000_000, 99_999_999)} shipped",
    lambda r: f"invoice {r.randint(100_000, 999_999)}-{r.randint(10, 99)}",
    lambda r: f"tracking 1Z{_token(r, string.ascii_uppercase + string.digits, 16)}",
    lambda r: f"it costs ${r.randint(1, 999)},{r.randint(100, 999)}.{r.randint(10, 99)}",
    lambda r: f"request id {'-'.join(_token(r, '0123456789abcdef', n) for n in (8, 4, 4, 4, 12))}",
    lambda r: f"commit {_token(r, '0123456789abcdef', 40)}",
    lambda r: f"card ending {r.randint(1000, 9999)}",
    lambda r: "card " + _wrong_check(r),
    lambda r: "IBAN " + _wrong_iban(r),
    lambda r: f"run task-{_token(r, string.ascii_lowercase, 12)} with sk-learn-{_token(r, string.ascii_lowercase, 10)}",
    lambda r: r.choice(["password: ********", "password: <your password>", "token: ${API_TOKEN}",
                        "the password reset link expired", "api_key: os.environ/OPENAI_API_KEY"]),
    lambda r: f"the answer is {r.randint(1000, 99999)} * {r.randint(10, 999)} = ...",
    lambda r: f"ISBN 978-{r.randint(0, 9)}-{r.randint(100, 999)}-{r.randint(10000, 99999)}-{r.randint(0, 9)}",
    lambda r: f"std::vector<int> v; a::b::c({r.randint(1, 99)})",
    lambda r: f"population {r.randint(1_000_000, 9_999_999)} in {r.randint(1900, 2024)}",
    lambda r: f"build {r.randint(1, 9)}.{r.randint(0, 9)}.{r.randint(0, 9)}.{r.randint(0, 9)}-rc",
]


def _wrong_check(rng: random.Random) -> str:
    card = _card(rng).replace(" ", "").replace("-", "")
    last = str((int(card[-1]) + rng.randint(1, 9)) % 10)
    return card[:-1] + last


def _wrong_iban(rng: random.Random) -> str:
    compact = _iban(rng).replace(" ", "")
    last = str((int(compact[-1]) + rng.randint(1, 9)) % 10)
    return compact[:-1] + last


def corpus(seed: int = 7, per_kind: int = 200, negatives: int = 1000) -> list[Sample]:
    rng = random.Random(seed)
    samples: list[Sample] = []
    for kind, (make, templates) in POSITIVES.items():
        for _ in range(per_kind):
            value = make(rng)
            lead = f"{rng.choice(_LEADS)} {rng.choice(_NAMES)} says: "
            text = lead + rng.choice(templates).format(value)
            start = text.index(value)
            samples.append((text + " " + rng.choice(_TAILS), [(kind, start, start + len(value))]))
    for _ in range(negatives):
        samples.append((f"{rng.choice(_LEADS)} {rng.choice(NEGATIVES)(rng)}. {rng.choice(_TAILS)}", []))
    rng.shuffle(samples)
    return samples


def score(found: Callable[[str], list[tuple[str, int, int, float]]], samples: list[Sample]
          ) -> dict[str, dict[str, float]]:
    """Per kind: precision and recall of ``found`` (a detector's scan) on ``samples``; a finding counts as right
    when its kind matches a labelled span it overlaps."""
    kinds = sorted({kind for _, spans in samples for kind, _, _ in spans})
    tally = {k: {"tp": 0, "fp": 0, "fn": 0} for k in kinds}
    for text, spans in samples:
        findings = found(text)
        for kind, start, end in spans:
            hit = any(k == kind and s < end and start < e for k, s, e, _ in findings)
            tally[kind]["tp" if hit else "fn"] += 1
        for k, s, e, _ in findings:
            if not any(kind == k and s < end and start < e for kind, start, end in spans):
                tally.setdefault(k, {"tp": 0, "fp": 0, "fn": 0})["fp"] += 1
    out = {}
    for k, t in tally.items():
        predicted, actual = t["tp"] + t["fp"], t["tp"] + t["fn"]
        out[k] = {"precision": t["tp"] / predicted if predicted else 1.0,
                  "recall": t["tp"] / actual if actual else 1.0, **{n: float(v) for n, v in t.items()}}
    return out
