"""mmproxy.tokens against tiktoken, offline.

The reference encoders are real `tiktoken.Encoding`s built from the installed tiktoken's own
`pat_str` (tiktoken_ext/openai_public.py) and the vocabulary files vendored in rust/assets, with no
special tokens, so they behave like `encode_ordinary`. Nothing is downloaded.
"""

import hashlib
import json
import os
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from unittest import mock

import pytest
import tiktoken
import tiktoken_ext.openai_public as openai_public
from tiktoken.load import load_tiktoken_bpe

from mmproxy import tokens
from mmproxy.tokens import TokenCount

ASSETS = Path(__file__).resolve().parents[1] / "rust" / "assets"
EXPECTED_SHA256 = {
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
}
N_RANDOM = 1200


def _reference(name: str) -> tiktoken.Encoding:
    def local(_url: str, expected_hash: str) -> dict[bytes, int]:
        return load_tiktoken_bpe(str(ASSETS / f"{name}.tiktoken"), expected_hash=expected_hash)

    # An empty TIKTOKEN_CACHE_DIR stops tiktoken from copying the local file into its cache.
    no_cache = mock.patch.dict(os.environ, {"TIKTOKEN_CACHE_DIR": ""})
    with mock.patch.object(openai_public, "load_tiktoken_bpe", local), no_cache:
        spec = openai_public.ENCODING_CONSTRUCTORS[name]()
    return tiktoken.Encoding(
        name=name, pat_str=spec["pat_str"], mergeable_ranks=spec["mergeable_ranks"], special_tokens={}
    )


@pytest.fixture(scope="module", params=tokens.ENCODINGS)
def ref(request: pytest.FixtureRequest) -> tiktoken.Encoding:
    return _reference(request.param)


# --- deterministic varied text -------------------------------------------------------------------

SCRIPTS = [
    "日本語のテキストです。東京は大きい都市。",
    "中文文本，包括标点符号！还有数字１２３。",  # noqa: RUF001
    "한국어 문장입니다. 띄어쓰기도 있어요.",
    "النص العربي مع علامات الترقيم، والأرقام ١٢٣.",
    "हिन्दी पाठ में मात्राएँ और संयुक्ताक्षर हैं।",
    "Русский текст: Ёлка, ЪЫЬ, ПРОПИСНЫЕ буквы.",
    "Ελληνικά: Καλημέρα κόσμε, ΑΒΓ αβγ ς.",
    "Crème brûlée, naïve façade, Ångström, Œuvre, ǅemal, ǈ ǋ.",
    "e\u0301 a\u0308 o\u0302\u0323 Z\u0335\u0321a\u0336\u0317l\u0338go \u0301\u0301A",
    "ไทย ภาษา สวัสดีครับ",
    "עברית עם ניקוד: שָׁלוֹם",
    "ᏣᎳᎩ ᎦᏬᏂᎯᏍᏗ, ꓐꓳꓟ, ⰀⰁⰂ, \U00011f04\U00011f05, \u1c89\u1c8a",  # noqa: RUF001
    "ＡＢＣ ｆｕｌｌｗｉｄｔｈ ５０％",  # noqa: RUF001
]
CODE = [
    'def f(x: int) -> str:\n    """Doc."""\n    return f"{x!r:>10}"  # comment\n',
    "const add = (a, b) => { return a + b; };\nconsole.log(`sum=${add(1, 2)}`);\n",
    'fn main() {\n\tlet v: Vec<u8> = vec![0x1F, 0b1010];\n\tprintln!("{:?}", v);\n}\n',
    '{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "n": 1.5e-3}',
    "<div class=\"a b\" id='x'>&nbsp;<br/>Text</div>\r\n<!-- c -->",
    "SELECT id, name FROM users WHERE age >= 18 AND name LIKE '%o''s%';",
    "path/to//file.txt ../up/./here C:\\Windows\\system32 https://example.com/a?b=c&d=e#f",
    "x+=1;y-=2;z*=3;a//=4;b**=5;c<<=6;d>>=7;e&&f||g!==h===i",
]
WHITESPACE = [
    " ",
    "  ",
    "   ",
    "\t",
    "\t\t",
    "\n",
    "\n\n",
    "\r\n",
    "\r\n\r\n",
    " \n ",
    "\u00a0",
    "\u3000",
    "\u2003",
    "\x0b",
    "\x0c",
    "\u0085",
    "\u2028",
]
CONTRACTIONS = [
    "'s",
    "'t",
    "'re",
    "'ve",
    "'m",
    "'ll",
    "'d",
    "'S",
    "'T",
    "'RE",
    "'Ve",
    "'LL",
    "'lL",
    "'D",
    "'x",
    "''",
    "'",
    "'\u017f",  # long s: case-folds to s in the regexes
]
WORDS = [
    "hello",
    "World",
    "CamelCaseWord",
    "ALLCAPS",
    "HTTPServer",
    "iPhone",
    "McDonald",
    "don",
    "I",
    "we",
    "XMLHttpRequest",
    "snake_case_name",
    "kebab-case",
    "ÉCOLE",
    "Straße",
    "ǅungla",
    "ΣΊΣΥΦΟΣ",
]
EMOJI = [
    "😀",
    "👍🏽",
    "👩‍👩‍👧‍👦",
    "🏳️‍🌈",
    "🇯🇵",
    "🇺🇸🇬🇧",
    "❤️",
    "🧑🏿‍🚀",
    "✊🏾",
    "🫠",
    "1️⃣",
    "#️⃣",
    "©️",
]
NUMBERS = [
    "0",
    "7",
    "42",
    "123",
    "1234",
    "12345678901234567890",
    "3.14159",
    "-2.5e10",
    "1,000,000",
    "٣٤٥٦",
    "²³",
    "½¼",
    "Ⅻ",
]
REPEATS = [
    "a" * 5000,
    "!" * 4,
    "!" * 37,
    "1" * 1000,
    " " * 300,
    "\n" * 50,
    "ab" * 700,
    "😀" * 200,
    "\t " * 100,
    "ー" * 120,
]


def _random_unicode(rng: random.Random, n: int) -> str:
    chars = []
    for _ in range(n):
        r = rng.random()
        if r < 0.4:
            cp = rng.randrange(0x20, 0x250)
        elif r < 0.7:
            cp = rng.randrange(0x250, 0x3000)
        elif r < 0.85:
            cp = rng.randrange(0x3000, 0x10000)
        else:
            cp = rng.randrange(0x10000, 0x110000)
        if 0xD800 <= cp < 0xE000:  # surrogates cannot be in valid UTF-8
            cp = 0xFFFD
        chars.append(chr(cp))
    return "".join(chars)


def _fragment(rng: random.Random) -> str:
    kind = rng.randrange(10)
    if kind == 0:
        return rng.choice(SCRIPTS)
    if kind == 1:
        return rng.choice(CODE)
    if kind == 2:
        return rng.choice(WHITESPACE) * rng.randint(1, 4)
    if kind == 3:
        return rng.choice(WORDS) + rng.choice(CONTRACTIONS)
    if kind == 4:
        return rng.choice(EMOJI)
    if kind == 5:
        return rng.choice(NUMBERS)
    if kind == 6:
        return _random_unicode(rng, rng.randint(1, 12))
    if kind == 7:
        return rng.choice(WORDS).upper() if rng.random() < 0.5 else rng.choice(WORDS)
    if kind == 8:
        return "".join(rng.choice("!?.,;:'\"()[]{}<>/\\|-_=+*&^%$#@~`") for _ in range(rng.randint(1, 6)))
    return rng.choice(SCRIPTS)[: rng.randint(1, 10)]


def _varied_strings() -> list[str]:
    rng = random.Random(20240611)
    out = list(SCRIPTS + CODE + WHITESPACE + NUMBERS + EMOJI + REPEATS)
    out += [w + c for w in ("it", "HE", "x", " ") for c in CONTRACTIONS]
    out += ["trailing spaces   ", "   leading", "tabs\t\tinside\t", "line\r\nbreaks\r\n", "end\n\n  ", "  \n  "]
    while len(out) < N_RANDOM:
        parts = [_fragment(rng) for _ in range(rng.randint(1, 8))]
        seps = ["", " ", "\n", "\t", "  "]
        out.append("".join(p + rng.choice(seps) for p in parts))
    return out


STRINGS = _varied_strings()


# --- tests ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", tokens.ENCODINGS)
def test_vendored_vocab_hash(name: str) -> None:
    assert hashlib.sha256((ASSETS / f"{name}.tiktoken").read_bytes()).hexdigest() == EXPECTED_SHA256[name]


def test_ids_and_counts_match_tiktoken(ref: tiktoken.Encoding) -> None:
    assert len(STRINGS) >= 1000
    mismatches = []
    for text in STRINGS:
        want = ref.encode_ordinary(text)
        got = tokens.encode(text, ref.name)
        if got != want or tokens.count(text, ref.name) != len(want):
            mismatches.append(text)
    assert not mismatches, f"{len(mismatches)} mismatches, first: {mismatches[0]!r}"


def test_large_mixed_text_matches(ref: tiktoken.Encoding) -> None:
    text = "".join(STRINGS[:400])  # > 8 KiB: the GIL-released path
    assert len(text.encode()) > 8 * 1024
    assert tokens.encode(text, ref.name) == ref.encode_ordinary(text)
    assert tokens.count(text, ref.name) == len(ref.encode_ordinary(text))


def test_concurrent_counts_agree(ref: tiktoken.Encoding) -> None:
    text = "".join(STRINGS[:400])  # large enough to run with the GIL released
    want = len(ref.encode_ordinary(text))
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(lambda _: tokens.count(text, ref.name), range(16))) == [want] * 16


def test_special_tokens_are_ordinary_text(ref: tiktoken.Encoding) -> None:
    text = "a <|endoftext|> b <|fim_prefix|><|endofprompt|>"
    assert tokens.encode(text, ref.name) == ref.encode_ordinary(text)
    assert len(tokens.encode("<|endoftext|>", ref.name)) > 1


def test_lone_surrogates_like_tiktoken(ref: tiktoken.Encoding) -> None:
    text = "a\ud800b \ud83d\ude00 c\udfff"
    assert tokens.encode(text, ref.name) == ref.encode_ordinary(text)
    assert tokens.count(text, ref.name) == len(ref.encode_ordinary(text))


def test_unknown_encoding() -> None:
    with pytest.raises(ValueError, match="unknown encoding"):
        tokens.count("x", "p50k_base")


def test_warm_loads_both_vocabularies() -> None:
    assert tokens.warm() == 100_256 + 199_998


@pytest.mark.parametrize(
    ("model", "want"),
    [
        ("gpt-4o", "o200k_base"),
        ("gpt-4o-mini-2024-07-18", "o200k_base"),
        ("gpt-4.1-nano", "o200k_base"),
        ("gpt-4.5-preview", "o200k_base"),
        ("gpt-5", "o200k_base"),
        ("o1-preview", "o200k_base"),
        ("o3", "o200k_base"),
        ("o4-mini", "o200k_base"),
        ("chatgpt-4o-latest", "o200k_base"),
        ("openai/gpt-4o", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-4-turbo", "cl100k_base"),
        ("gpt-3.5-turbo-0125", "cl100k_base"),
        ("azure/gpt-35-turbo", "cl100k_base"),
        ("text-embedding-3-large", "cl100k_base"),
        ("text-embedding-ada-002", "cl100k_base"),
        ("claude-3-5-sonnet-20241022", None),
        ("anthropic/claude-opus-4", None),
        ("gemini-1.5-pro", None),
        ("mistral-large", None),
    ],
)
def test_encoding_for_model(model: str, want: str | None) -> None:
    assert tokens.encoding_for_model(model) == want
    if want is not None:  # agrees with tiktoken's own table
        assert tiktoken.encoding_name_for_model(model.split("/")[-1].replace("gpt-35", "gpt-3.5")) == want


# --- chat accounting ------------------------------------------------------------------------------


def _cookbook_messages(messages: list[dict], enc: tiktoken.Encoding) -> int:
    """The OpenAI cookbook's num_tokens_from_messages (gpt-4o / gpt-4 variant)."""
    num_tokens = 0
    for message in messages:
        num_tokens += 3
        for key, value in message.items():
            num_tokens += len(enc.encode_ordinary(value))
            if key == "name":
                num_tokens += 1
    return num_tokens + 3


def _cookbook_tools(functions: list[dict], enc: tiktoken.Encoding, func_init: int) -> int:
    """The OpenAI cookbook's num_tokens_for_tools (function-definition part)."""
    prop_init, prop_key, enum_init, enum_item, func_end = 3, 3, -3, 3, 12
    total = 0
    for f in functions:
        total += func_init
        function = f["function"]
        desc = function["description"].removesuffix(".")
        total += len(enc.encode_ordinary(function["name"] + ":" + desc))
        properties = function["parameters"]["properties"]
        if properties:
            total += prop_init
            for key, prop in properties.items():
                total += prop_key
                if "enum" in prop:
                    total += enum_init
                    for item in prop["enum"]:
                        total += enum_item + len(enc.encode_ordinary(item))
                line = f"{key}:{prop['type']}:{prop['description'].removesuffix('.')}"
                total += len(enc.encode_ordinary(line))
    if functions:
        total += func_end
    return total


def _random_messages(rng: random.Random) -> list[dict]:
    messages = [{"role": "system", "content": rng.choice(STRINGS)}]
    for _ in range(rng.randint(1, 6)):
        msg = {"role": rng.choice(["user", "assistant"]), "content": rng.choice(STRINGS)}
        if rng.random() < 0.3:
            msg["name"] = rng.choice(["alice", "bob_2", "Zoë"])
        messages.append(msg)
    return messages


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the current weather in a given location.",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                    "unit": {"type": "string", "description": "Unit.", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["location"],
            },
        },
    },
    {
        "type": "function",
        "function": {"name": "noop", "description": "Does nothing", "parameters": {"type": "object", "properties": {}}},
    },
]


@pytest.mark.parametrize(("model", "func_init"), [("gpt-4o", 7), ("gpt-4", 10)])
def test_chat_count_matches_cookbook(model: str, func_init: int) -> None:
    enc = _reference(tokens.encoding_for_model(model) or "")
    rng = random.Random(7)
    for i in range(200):
        messages = _random_messages(rng)
        body: dict = {"model": model, "messages": messages}
        want = _cookbook_messages(messages, enc)
        if i % 2:
            body["tools"] = TOOLS
            want += _cookbook_tools(TOOLS, enc, func_init)
        assert tokens.count_chat(json.dumps(body).encode(), model) == TokenCount(want, True)


def test_chat_content_parts_and_images() -> None:
    enc = _reference("o200k_base")
    text = "Describe these images."
    parts = [
        {"type": "text", "text": text},
        {"type": "image_url", "image_url": {"url": "https://x/a.png", "detail": "low"}},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 5000}},
    ]
    body = json.dumps({"messages": [{"role": "user", "content": parts}]}).encode()
    want = 3 + len(enc.encode_ordinary("user")) + len(enc.encode_ordinary(text)) + 85 + 765 + 3
    assert tokens.count_chat(body, "gpt-4o") == (want, True)


def test_chat_tool_calls_and_tool_messages_are_counted() -> None:
    base = {"role": "assistant", "content": None}
    call = {
        **base,
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}],
    }
    without = tokens.count_chat(json.dumps({"messages": [base]}).encode(), "gpt-4o").count
    with_call = tokens.count_chat(json.dumps({"messages": [call]}).encode(), "gpt-4o").count
    assert with_call > without
    tool_msg = {"role": "tool", "tool_call_id": "c1", "content": "sunny"}
    assert tokens.count_chat(json.dumps({"messages": [tool_msg]}).encode(), "gpt-4o").count > 3 + 3


@pytest.mark.parametrize(
    ("model", "percent"),
    [("claude-3-5-sonnet", 125), ("anthropic/claude-opus-4-1", 125), ("gemini-2.5-pro", 110), ("mystery-model", 110)],
)
def test_chat_estimate_for_private_tokenizers(model: str, percent: int) -> None:
    messages = [{"role": "user", "content": STRINGS[5]}, {"role": "assistant", "content": STRINGS[40]}]
    body = json.dumps({"messages": messages}).encode()
    o200k = _cookbook_messages(messages, _reference("o200k_base"))
    got = tokens.count_chat(body, model)
    assert got.exact is False
    assert got.count == -(-o200k * percent // 100)


def test_chat_large_body_releases_gil_and_counts() -> None:
    enc = _reference("o200k_base")
    messages = [{"role": "user", "content": s} for s in STRINGS[:300]]
    body = json.dumps({"messages": messages}).encode()
    assert len(body) > 8 * 1024
    assert tokens.count_chat(body, "gpt-4o") == (_cookbook_messages(messages, enc), True)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "not valid JSON"),
        (b"{", "not valid JSON"),
        (b"[]", "must be a JSON object"),
        (b"{}", "no `messages`"),
        (b'{"messages": "hi"}', "must be an array"),
        (b'{"messages": [1]}', "must be an object"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[" * 10_000 + b"]" * 10_000, "must be a JSON object|recursion limit"),
        (b'{"messages": ' + b"[" * 10_000 + b"]" * 10_000 + b"}", "recursion limit"),
    ],
)
def test_chat_malformed_body_raises_value_error(body: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tokens.count_chat(body, "gpt-4o")
