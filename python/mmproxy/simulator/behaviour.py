"""Wire-format-neutral behaviour: knobs, faults, deterministic content, embeddings, stream timing.

Everything here is shared by the OpenAI routes and the later Anthropic/Gemini/Ollama ones, so a
knob or fault behaves identically whichever API a gateway speaks to the simulator.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
import sys
import time
from array import array
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from functools import lru_cache
from typing import Any

import orjson


class KnobError(ValueError):
    """A knob or fault spec failed validation; ``param`` names the offending field for error bodies."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(slots=True, frozen=True)
class Knobs:
    """How a simulated deployment behaves. Server defaults <- per-model overrides <- request ``sim``."""

    latency_ms: float = 0.0
    ttft_ms: float = 0.0
    chunk_delay_ms: float = 0.0
    tokens_per_s: float = 0.0
    chunks: int = 20
    tokens: int = 20
    embedding_dims: int = 256
    fault: str | None = None
    fault_rate: float = 1.0
    retry_after: float = 1.0
    fault_ms: float = 10_000.0
    cut_after: int = 3
    content: str | None = None
    echo: bool = False
    batch_ms: float = 200.0
    usage: bool = True

    def merged(self, overrides: Mapping[str, Any], where: str = "sim") -> Knobs:
        """Return a copy with ``overrides`` validated and applied (raises KnobError naming ``where.key``)."""
        if not isinstance(overrides, Mapping):
            raise KnobError(f"'{where}' must be an object", where)
        if not overrides:
            return self
        clean = {name: _coerce(name, value, f"{where}.{name}") for name, value in overrides.items()}
        if clean.get("fault") is not None:
            parse_fault_spec(clean["fault"], f"{where}.fault")
            # An explicit fault always fires unless the same object also gives a rate.
            clean.setdefault("fault_rate", 1.0)
        return replace(self, **clean)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def chunk_delay_s(self, tokens_per_chunk: float) -> float:
        """Gap between content events: ``tokens_per_s`` (if set) wins over ``chunk_delay_ms``."""
        if self.tokens_per_s > 0:
            return tokens_per_chunk / self.tokens_per_s
        return self.chunk_delay_ms / 1000.0


KNOB_HELP: dict[str, str] = {
    "latency_ms": "delay before a non-streaming response",
    "ttft_ms": "stream: delay before the first event (time to first token)",
    "chunk_delay_ms": "stream: delay between content events",
    "tokens_per_s": "stream: pace content events at this many tokens/s (overrides chunk_delay_ms)",
    "chunks": "stream: number of content events (0 = one per token)",
    "tokens": "completion length in tokens (words) before max_tokens capping",
    "embedding_dims": "embedding size when the request gives no 'dimensions'",
    "fault": "inject a fault: KIND[:PARAM], KIND in " + ", ".join(
        ("429", "500", "502", "503", "400", "400_context", "400_policy", "401", "404", "timeout", "slow", "cut",
         "hang", "bad_json", "safety", "safety_prompt")
    ),
    "fault_rate": "probability that --fault applies to a request",
    "retry_after": "Retry-After seconds sent with 429/503 faults",
    "fault_ms": "delay of timeout/slow faults, in ms",
    "cut_after": "cut fault: events sent before the connection is dropped",
    "content": "fixed reply text instead of generated words",
    "echo": "reply with the last user message's text",
    "batch_ms": "batches: time from creation to completion, in ms",
    "usage": "false: an OpenAI-compatible server that reports no usage (none in the body, no usage chunk)",
}

_DEFAULTS = Knobs()
_KNOB_NAMES = frozenset(f.name for f in fields(Knobs))


def _coerce(name: str, value: Any, param: str) -> Any:
    """Validate one knob value against the type of its default."""
    if name not in _KNOB_NAMES:
        raise KnobError(f"Unknown simulator knob '{name}'", param)
    default = getattr(_DEFAULTS, name)
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    elif value is None or isinstance(value, str):  # str | None knobs
        return value
    raise KnobError(f"Invalid value for '{param}': {value!r}", param)


# --- faults ---------------------------------------------------------------------------------------

# Faults answered with an error status before any work; the wire module renders the body.
STATUS_FAULTS: dict[str, int] = {
    "400": 400, "400_context": 400, "400_policy": 400, "401": 401, "404": 404,
    "429": 429, "500": 500, "502": 502, "503": 503,
}
# Faults that change how a normal reply is delivered.
TRANSPORT_FAULTS = frozenset({"timeout", "slow", "cut", "hang", "bad_json"})
# Faults that change what a 200 says; only wire formats with the concept render them (Gemini: the answer
# stopped with finishReason SAFETY / the prompt blocked by promptFeedback.blockReason), others ignore them.
CONTENT_FAULTS = frozenset({"safety", "safety_prompt"})
FAULT_KINDS = frozenset(STATUS_FAULTS) | TRANSPORT_FAULTS | CONTENT_FAULTS


@dataclass(slots=True, frozen=True)
class Fault:
    """A resolved fault for one request."""

    kind: str
    retry_after: float
    delay_ms: float
    cut_after: int

    @property
    def status(self) -> int:
        return STATUS_FAULTS.get(self.kind, 0)


def parse_fault_spec(spec: str, param: str = "fault") -> tuple[str, float | None]:
    """Split ``KIND[:PARAM]``; PARAM is retry-after s (429/503), delay ms (timeout/slow) or events (cut)."""
    kind, _, arg = spec.partition(":")
    if kind not in FAULT_KINDS:
        raise KnobError(f"Unknown fault kind '{kind}' (expected one of {sorted(FAULT_KINDS)})", param)
    if not arg:
        return kind, None
    try:
        value = float(arg)
    except ValueError:
        raise KnobError(f"Invalid fault parameter in '{spec}'", param) from None
    if not math.isfinite(value) or value < 0:
        raise KnobError(f"Invalid fault parameter in '{spec}'", param)
    return kind, value


def fault_from_knobs(knobs: Knobs) -> Fault | None:
    """Resolve ``knobs.fault`` (already validated) into a Fault; the inline PARAM beats the knob."""
    if knobs.fault is None:
        return None
    kind, arg = parse_fault_spec(knobs.fault)
    return Fault(
        kind=kind,
        retry_after=arg if arg is not None and kind in ("429", "503") else knobs.retry_after,
        delay_ms=arg if arg is not None and kind in ("timeout", "slow") else knobs.fault_ms,
        cut_after=int(arg) if arg is not None and kind == "cut" else knobs.cut_after,
    )


def format_seconds(value: float) -> str:
    """Render seconds for Retry-After without a useless '.0'."""
    return str(int(value)) if value == int(value) else f"{value:g}"


# --- deterministic content ------------------------------------------------------------------------

_WORDS = (
    "the quick brown fox jumps over a lazy dog while gateway routes every request through fast "
    "reliable proxy layers so latency stays low and throughput high model tokens stream back to "
    "clients in small chunks each carrying part of an answer about systems networks caches queues "
    "retries fallbacks budgets keys teams logs metrics traces and careful engineering choices"
).split()


def _build_corpus(size: int = 4096) -> tuple[str, ...]:
    """A fixed pseudo-random word stream; replies are windows into it, so generation is O(tokens)."""
    rng = random.Random(20240607)
    out: list[str] = []
    for i in range(size):
        word = rng.choice(_WORDS)
        out.append(" " + (word + "." if i % 13 == 12 else word))
    return tuple(out)


_CORPUS = _build_corpus()


def canonical_json(obj: Any) -> bytes:
    """Compact, key-sorted JSON: a gateway re-serialising the body leaves it (and the seed) unchanged."""
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


def content_seed(canonical: bytes) -> int:
    """Stable 64-bit seed of canonical JSON bytes."""
    return int.from_bytes(hashlib.blake2b(canonical, digest_size=8).digest(), "little")


def corpus_tokens(seed: int, count: int) -> list[str]:
    """``count`` word tokens (leading space except the first) chosen by ``seed``."""
    start = seed % len(_CORPUS)
    toks = list(_CORPUS[start:start + count])
    while len(toks) < count:
        toks.extend(_CORPUS[: count - len(toks)])
    if toks:
        toks[0] = toks[0].lstrip()
    return toks


_TOKEN_RE = re.compile(r"\s*\S+|\s+")


def split_tokens(text: str) -> list[str]:
    """Cut text into word tokens whose concatenation is exactly ``text``."""
    return _TOKEN_RE.findall(text)


def limit_tokens(tokens: list[str], max_tokens: int | None, stop: list[str]) -> tuple[list[str], str]:
    """Apply stop sequences then the max_tokens cap; returns (tokens, finish_reason)."""
    if stop:
        text = "".join(tokens)
        cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
        if cut >= 0:
            kept: list[str] = []
            used = 0
            for tok in tokens:
                if used + len(tok) > cut:
                    if cut > used:
                        kept.append(tok[: cut - used])
                    break
                kept.append(tok)
                used += len(tok)
            tokens = kept
            if max_tokens is None or len(tokens) <= max_tokens:
                return tokens, "stop"
    if max_tokens is not None and len(tokens) > max_tokens:
        return tokens[:max_tokens], "length"
    return tokens, "stop"


def group(items: list[str], parts: int) -> list[str]:
    """Join ``items`` into ``parts`` nearly equal consecutive pieces (0 = one piece per item)."""
    n = len(items)
    if parts <= 0 or parts >= n:
        return list(items)
    out = []
    for i in range(parts):
        out.append("".join(items[i * n // parts:(i + 1) * n // parts]))
    return out


def approx_tokens(chars: int) -> int:
    """The documented token rule: one token per 4 characters, rounded up."""
    return (chars + 3) // 4


# --- embeddings -----------------------------------------------------------------------------------


_WORD = re.compile(r"\w+")


@lru_cache(maxsize=4096)
def embedding_vector(key: bytes, dims: int) -> array[float]:
    """Deterministic unit float32 vector for ``key`` (cached: benchmarks repeat inputs).

    A bag of words: the sum of one fixed random vector per lower-cased word, normalised, so texts that
    share most of their words point the same way (a semantic cache has something to find) while the
    vector still depends only on the text. Input without words (token arrays) hashes as a whole.
    """
    words = _WORD.findall(key.decode("utf-8", "replace").lower())
    total = [0.0] * dims
    for word in words or [key]:
        for i, v in enumerate(_word_vector(word if isinstance(word, bytes) else word.encode(), dims)):
            total[i] += v
    norm = math.sqrt(sum(v * v for v in total)) or 1.0
    return array("f", [v / norm for v in total])


@lru_cache(maxsize=16384)
def _word_vector(word: bytes, dims: int) -> array[int]:
    raw = array("h", hashlib.shake_256(word).digest(2 * dims))
    if sys.byteorder == "big":
        raw.byteswap()
    return raw


def float32_le_bytes(vec: array[float]) -> bytes:
    """Little-endian float32 bytes, the layout of OpenAI's base64 embeddings."""
    if sys.byteorder == "big":
        vec = array("f", vec)
        vec.byteswap()
    return vec.tobytes()


# --- stream timing --------------------------------------------------------------------------------


def schedule(n_head: int, n_body: int, n_tail: int, knobs: Knobs, tokens: int, per_round: int = 1
             ) -> list[float]:
    """Due times (s after the response headers) of a stream's events.

    Head events (e.g. the role delta) and the first body round go out at TTFT, later body rounds one
    chunk delay apart (``per_round`` events share a round, e.g. n choices), tail events straight after.
    """
    ttft = knobs.ttft_ms / 1000.0
    rounds = max(1, n_body // max(1, per_round))
    delay = knobs.chunk_delay_s(tokens / rounds if n_body else 0.0)
    due = [ttft] * n_head
    due.extend(ttft + (i // per_round) * delay for i in range(n_body))
    last = due[-1] if due else ttft
    due.extend([last] * n_tail)
    return due


def fake_value(schema: Any, seed: int, depth: int = 0) -> Any:
    """A deterministic value satisfying a (simple) JSON schema, for tool-call arguments."""
    if not isinstance(schema, dict) or depth > 4:
        return None
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][seed % len(schema["enum"])]
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props = schema.get("properties")
        if not isinstance(props, dict):
            return {}
        return {name: fake_value(sub, seed + i, depth + 1) for i, (name, sub) in enumerate(props.items())}
    if kind == "array":
        return [fake_value(schema.get("items", {}), seed, depth + 1)]
    if kind == "integer":
        return seed % 100
    if kind == "number":
        return (seed % 1000) / 10
    if kind == "boolean":
        return bool(seed & 1)
    if kind == "null":
        return None
    return corpus_tokens(seed, 1)[0].rstrip(".")


# --- provider prompt caches -------------------------------------------------------------------------


class PromptCache:
    """The providers' prompt caches as the simulator plays them: prefixes per model, five-minute TTL.

    A prompt is a list of pieces in cache order (tools, system, then messages or content blocks); a
    prefix is the first k pieces, its tokens ``approx_tokens`` of their summed lengths. Prefixes shorter
    than ``MIN_TOKENS`` are never cached, as with the real providers.
    """

    MIN_TOKENS = 1024
    TTL_S = 300.0

    def __init__(self) -> None:
        self._until: dict[bytes, float] = {}

    def _prefixes(self, model: str, pieces: list[bytes]) -> list[tuple[bytes, int]]:
        digest = hashlib.blake2b(model.encode(), digest_size=16)
        chars = 0
        out = []
        for piece in pieces:
            digest.update(len(piece).to_bytes(8, "little"))
            digest.update(piece)
            chars += len(piece)
            out.append((digest.copy().digest(), approx_tokens(chars)))
        return out

    def _cached(self, key: bytes, now: float) -> bool:
        until = self._until.get(key)
        if until is None or until < now:
            return False
        self._until[key] = now + self.TTL_S  # a read refreshes the entry
        return True

    def implicit(self, model: str, pieces: list[bytes]) -> int:
        """OpenAI and Gemini: cached tokens of the longest prefix seen before, in 128-token steps."""
        now = time.monotonic()
        cached = 0
        for key, tokens in self._prefixes(model, pieces):
            if tokens < self.MIN_TOKENS:
                continue
            if self._cached(key, now):
                cached = tokens
            self._until[key] = now + self.TTL_S
        return cached - cached % 128

    def explicit(self, model: str, pieces: list[bytes], marks: list[int]) -> tuple[int, int]:
        """Anthropic: (read, written) tokens for breakpoints after the pieces at ``marks``.

        The longest cached prefix ending at or before the last breakpoint is read; the prefix up to the
        last breakpoint is written (what the read did not cover) when long enough.
        """
        if not marks:
            return 0, 0
        now = time.monotonic()
        prefixes = self._prefixes(model, pieces)
        last = max(marks)
        read = 0
        for key, tokens in prefixes[: last + 1]:
            if tokens >= self.MIN_TOKENS and self._cached(key, now):
                read = tokens
        key, tokens = prefixes[last]
        if tokens < self.MIN_TOKENS or read == tokens:
            return read, 0
        for mark in marks:
            mark_key, mark_tokens = prefixes[mark]
            if mark_tokens >= self.MIN_TOKENS:
                self._until[mark_key] = now + self.TTL_S
        return read, tokens - read
