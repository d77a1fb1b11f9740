"""Token counting for the gateway: exact for OpenAI encodings, estimated for private tokenizers.

Thin typed layer over the Rust extension (`rust/src/tokenizer`, `rust/src/chat.rs`). Counts match
tiktoken's `encode_ordinary`: special-token text such as `<|endoftext|>` in user input is ordinary text.
Inputs of 8 KiB or more are processed with the GIL released.
"""

from typing import NamedTuple

from mmproxy import _native

__all__ = ["ENCODINGS", "TokenCount", "count", "count_chat", "encode", "encoding_for_model", "warm"]

ENCODINGS = ("o200k_base", "cl100k_base")


class TokenCount(NamedTuple):
    """Input tokens of a chat request; `exact` is False when `count` is an estimate."""

    # The field shadows tuple.count(value), which nobody calls on a TokenCount; callers read .count.
    count: int  # type: ignore[assignment]
    exact: bool


def count(text: str, encoding: str = "o200k_base") -> int:
    """Number of tokens of `text` in `encoding`, without building the token list."""
    return _native.count_tokens(text, encoding)


def encode(text: str, encoding: str = "o200k_base") -> list[int]:
    """Token ids of `text` (mainly for tests; `count` is cheaper)."""
    return _native.encode(text, encoding)


def encoding_for_model(model: str) -> str | None:
    """Encoding of an OpenAI model name (`provider/` prefix ignored); None when it has no public tokenizer."""
    return _native.encoding_for_model(model)


def count_chat(body: bytes, model: str) -> TokenCount:
    """Input tokens of a raw OpenAI chat request body, per the OpenAI cookbook's message accounting.

    Images, tool definitions and JSON schemas are counted by documented approximations (see
    rust/src/chat.rs). For models without a public tokenizer (Claude, Gemini, unknown) the result is an
    **estimate**: o200k_base counts scaled up (x1.25 for Claude, x1.10 otherwise), with `exact=False`.
    Raises ValueError for a body that is not a JSON object with a `messages` array.
    """
    tokens, exact = _native.count_chat_tokens(body, model)
    return TokenCount(tokens, exact)


def warm() -> int:
    """Build both rank maps now (~15 ms, once per process) so the first request does not pay for it."""
    return _native.warm()
