"""Privacy routing: the sensitive-data detectors a config compiles once, and redaction per request.

The detectors are the Rust core's (rust/src/pii): built-in kinds (cards by Luhn and issuer, IBANs by
mod 97, SSNs, phone numbers by number plan, e-mail, IP addresses, credentials, private keys, opt-in
national ids) and the operator's own patterns and word lists. Routing rules read them through the
`pii_any`/`pii_count` conditions (mmproxy.rules); this module adds redaction::

    privacy:
      kinds: [email, phone, card, iban, us_ssn, ip_address, credential, private_key]  # default: these
      patterns: {employee_id: "EMP-\\d{6}"}     # operator kinds by regex (Rust `regex` syntax)
      terms: {project: [Bluebird, Nightjar]}    # operator kinds by word list (whole words, any case)
      min_confidence: 0.7                       # a finding below it does not count
      redact: [credential, private_key]         # redacted from every request (true: every kind)

Redaction (a rule's `route: {redact: true}`, or `privacy.redact`) replaces each finding in the request
with a typed placeholder (`[EMAIL_1]`, `[CARD_1]`; one value, one placeholder within a request) before
anything leaves, and puts the values back where the answer echoes a placeholder, streams included. The
mapping lives in the request's memory only: the ledger and the headers get kinds and counts, the cache
neither looks up nor stores a redacted request (its answer holds the restored values, and two requests
differing only in a redacted value would share a key), and nothing is logged.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterator
from typing import Any

import orjson

from mmproxy._native import PiiDetector
from mmproxy.providers.base import StreamTranslator

__all__ = ["DEFAULT_MIN_CONFIDENCE", "Privacy", "Redaction"]

DEFAULT_MIN_CONFIDENCE = 0.7
_PLACEHOLDER = re.compile(r"\[[A-Z0-9_]+_[0-9]+\]")
_NOT_TAG = re.compile(r"[^A-Z0-9]+")


class Privacy:
    """A config's detectors, compiled once and shared with its routing rules, and what every request redacts."""

    __slots__ = ("always", "detector", "min_confidence")

    def __init__(self, detector: PiiDetector, min_confidence: float = DEFAULT_MIN_CONFIDENCE,
                 always: frozenset[str] | None = None) -> None:
        self.detector = detector
        self.min_confidence = min_confidence
        self.always = always  # kinds redacted from every request; None: none, empty: every kind

    def redaction(self, kinds: Collection[str] | None = None) -> Redaction:
        """A request's redaction of ``kinds`` (None: every kind the detectors find)."""
        return Redaction(self, kinds)


class Redaction:
    """One request's placeholders: which value each stands for, in this request's memory only."""

    __slots__ = ("_detector", "_kinds", "_min", "_numbers", "originals", "placeholders")

    def __init__(self, privacy: Privacy, kinds: Collection[str] | None) -> None:
        self._detector = privacy.detector
        self._min = privacy.min_confidence
        self._kinds = frozenset(kinds) if kinds else None
        self._numbers: dict[str, int] = {}  # placeholders made so far, per kind
        self.placeholders: dict[tuple[str, str], str] = {}  # (kind, value) -> placeholder
        self.originals: dict[str, str] = {}  # placeholder -> value

    # -- the request ----------------------------------------------------------------
    def text(self, text: str) -> str:
        """``text`` with each finding of the redacted kinds replaced by its placeholder."""
        kinds, least = self._kinds, self._min
        found = [f for f in self._detector.scan(text) if f[3] >= least and (kinds is None or f[0] in kinds)]
        if not found:
            return text
        pieces: list[str] = []
        at = 0
        for kind, start, end, _ in found:
            pieces += (text[at:start], self._placeholder(kind, text[start:end]))
            at = end
        pieces.append(text[at:])
        return "".join(pieces)

    def value(self, value: Any) -> Any:
        """A JSON value with every string in it redacted (keys are field names, left alone): whatever the
        client API's shape, every text the request carries is covered, tool results and arguments included.
        A ``data:`` URL (an inline image or file) is left whole: a chance match inside base64 would break it."""
        if isinstance(value, str):
            return value if value.startswith("data:") else self.text(value)
        if isinstance(value, list):
            return [self.value(v) for v in value]
        if isinstance(value, dict):
            return {k: self.value(v) for k, v in value.items()}
        return value

    def summary(self) -> str | None:
        """What was redacted as ``kind:count`` pairs sorted by kind (distinct values), never the values."""
        counts: dict[str, int] = {}
        for kind, _ in self.placeholders:
            counts[kind] = counts.get(kind, 0) + 1
        return ",".join(f"{kind}:{n}" for kind, n in sorted(counts.items())) or None

    def _placeholder(self, kind: str, value: str) -> str:
        placeholder = self.placeholders.get((kind, value))
        if placeholder is None:
            number = self._numbers[kind] = self._numbers.get(kind, 0) + 1
            placeholder = f"[{_NOT_TAG.sub('_', kind.upper())}_{number}]"
            self.placeholders[kind, value] = placeholder
            self.originals[placeholder] = value
        return placeholder

    # -- the answer -----------------------------------------------------------------
    def restore(self, text: str) -> str:
        """``text`` with every placeholder of this request replaced by its value (others left as they are)."""
        originals = self.originals
        return _PLACEHOLDER.sub(lambda m: originals.get(m.group(), m.group()), text)

    def restore_escaped(self, text: str) -> str:
        """``text`` inside a JSON document (a tool call's ``arguments``) with the values back, JSON-escaped."""
        originals = self.originals

        def value(m: re.Match[str]) -> str:
            original = originals.get(m.group())
            return m.group() if original is None else orjson.dumps(original).decode()[1:-1]

        return _PLACEHOLDER.sub(value, text)

    def restore_json(self, body: bytes) -> bytes:
        """A whole JSON answer with the values back: each inside a JSON string, so each goes in escaped."""
        return self.restore_escaped(body.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")

    def answers(self, translate: Callable[[bytes], tuple[bytes, Any]]) -> Callable[[bytes], tuple[bytes, Any]]:
        """``translate`` (an upstream answer into the client's), with the values restored in what it returns."""

        def restored(body: bytes) -> tuple[bytes, Any]:
            answer, usage = translate(body)
            return self.restore_json(answer), usage

        return restored

    def stream(self, inner: StreamTranslator | None) -> StreamTranslator:
        """A translator restoring values in OpenAI chat chunks, after ``inner`` (None: the upstream's own)."""
        return RestoringStream(self, inner)

    def held(self, tail: str) -> int:
        """How many characters at the end of ``tail`` may begin a placeholder, so must wait for the next chunk."""
        start = tail.rfind("[")
        if start < 0 or "]" in tail[start:]:
            return 0
        piece = tail[start:]
        return len(piece) if any(p.startswith(piece) for p in self.originals) else 0


class RestoringStream(StreamTranslator):
    """Puts the values back into a stream of OpenAI chat chunks: the text (``delta.content``) and each tool call's
    ``arguments`` (JSON-escaped there).

    A placeholder may be split across chunks: text that could be the start of one is held back, at most one
    placeholder's length per choice and per tool call, and goes out with the next piece of the same text (or with
    the choice's last chunk, the one with a ``finish_reason``, or before ``[DONE]``). Events without text pass as
    they came, byte for byte.
    """

    __slots__ = ("_done", "_held", "_inner", "_last", "_pending", "_redaction", "_usage")

    _CONTENT = -1  # the slot of a choice's text; a tool call's is its index

    def __init__(self, redaction: Redaction, inner: StreamTranslator | None) -> None:
        self._redaction = redaction
        self._inner = inner
        self._pending = b""
        self._held: dict[tuple[int, int], str] = {}  # (choice, slot) -> text that may begin a placeholder
        self._last: dict[str, Any] = {}  # the last chunk's id, model..., for a chunk of held text at the end
        self._done = False
        self._usage: dict[str, Any] | None = None

    @property
    def complete(self) -> bool:  # type: ignore[override]
        return self._inner.complete if self._inner is not None else self._done

    @property
    def failed(self) -> bool:  # type: ignore[override]
        return self._inner is not None and self._inner.failed

    @property
    def usage(self) -> dict[str, Any] | None:  # type: ignore[override]
        return self._inner.usage if self._inner is not None else self._usage

    def feed(self, data: bytes) -> bytes:
        if self._inner is not None:
            data = self._inner.feed(data)
        data = self._pending + data.replace(b"\r\n", b"\n")
        end = data.rfind(b"\n\n")
        if end < 0:
            self._pending = data
            return b""
        self._pending = data[end + 2:]
        return b"".join(self._event(event) for event in _events(data[:end + 2]))

    def _event(self, event: bytes) -> bytes:
        if not event.startswith(b"data:"):
            return event
        payload = event[5:].strip()
        if payload == b"[DONE]":
            self._done = True
            return self._flush() + event
        if b"[" not in payload and not self._held and b'"usage"' not in payload:
            return event
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return event
        if not isinstance(chunk, dict):
            return event
        if isinstance(chunk.get("usage"), dict):
            self._usage = chunk["usage"]
            if not chunk.get("choices"):
                return event
        self._last = {k: chunk[k] for k in ("id", "object", "created", "model") if k in chunk}
        for choice in chunk.get("choices") or ():
            if isinstance(choice, dict):
                self._restore_choice(choice)
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def _restore_choice(self, choice: dict[str, Any]) -> None:
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            return
        index = choice.get("index", 0)
        final = bool(choice.get("finish_reason"))
        content = delta.get("content")
        text = self._take((index, self._CONTENT), content if isinstance(content, str) else None, final)
        if text is not None:
            delta["content"] = self._redaction.restore(text)
        calls = delta.get("tool_calls")
        seen: set[int] = set()
        for call in calls if isinstance(calls, list) else ():
            function = call.get("function") if isinstance(call, dict) else None
            if not isinstance(function, dict) or not isinstance(call.get("index", 0), int):
                continue
            seen.add(call.get("index", 0))
            arguments = function.get("arguments")
            text = self._take((index, call.get("index", 0)), arguments if isinstance(arguments, str) else None,
                              final)
            if text is not None:
                function["arguments"] = self._redaction.restore_escaped(text)
        if final:  # the choice's last chunk: what its tool calls still hold goes out with it
            rest = [{"index": slot, "function": {"arguments": self._redaction.restore_escaped(self._held.pop(key))}}
                    for key in sorted(self._held) if key[0] == index and (slot := key[1]) >= 0 and slot not in seen]
            if rest:
                delta["tool_calls"] = [*(calls if isinstance(calls, list) else ()), *rest]

    def _take(self, key: tuple[int, int], piece: str | None, final: bool) -> str | None:
        """The text of ``key`` to send now (None: nothing): what was held plus ``piece``, less what may begin a
        placeholder (held until the next piece, unless this is the choice's last chunk)."""
        held = self._held.pop(key, "")
        if piece is None:
            if key[1] == self._CONTENT and held:
                return held  # a chunk without text: the held text goes out in it
            if held:
                self._held[key] = held
            return None
        text = held + piece
        keep = 0 if final else self._redaction.held(text)
        if keep:
            self._held[key] = text[-keep:]
            text = text[:-keep]
        return text

    def _flush(self) -> bytes:
        """Held text that no later chunk took (the stream ended mid-way through a possible placeholder)."""
        if not self._held:
            return b""
        choices: dict[int, dict[str, Any]] = {}
        for (index, slot), text in sorted(self._held.items()):
            delta = choices.setdefault(index, {"index": index, "delta": {}, "finish_reason": None})["delta"]
            if slot == self._CONTENT:
                delta["content"] = self._redaction.restore(text)
            else:
                delta.setdefault("tool_calls", []).append(
                    {"index": slot, "function": {"arguments": self._redaction.restore_escaped(text)}})
        self._held.clear()
        return b"data: " + orjson.dumps({**self._last, "choices": list(choices.values())}) + b"\n\n"


def _events(data: bytes) -> Iterator[bytes]:
    """The complete events in ``data`` (each with its blank-line terminator)."""
    for event in data.split(b"\n\n"):
        if event:
            yield event + b"\n\n"
