"""Type stubs for the Rust extension `mmproxy._native` (sources in rust/src)."""

from collections.abc import Callable, Mapping, Sequence
from typing import Generic, Literal, TypeAlias, TypeVar

_D = TypeVar("_D")

NearMissVerdict: TypeAlias = Literal[
    "same",
    "reworded",
    "negation",
    "number",
    "number order",
    "number unit",
    "unit",
    "question word",
    "asked quantity",
    "direction",
    "swapped",
    "too different",
    "opposite",
    "substitution",
    "insertion",
]
"""Every verdict of the near-miss check (rust/src/nearmiss): "same", "reworded", or why a cached answer to
one text does not serve the other."""

__version__: str
IGNORED_FIELDS: list[str]
"""Top-level request fields that `request_hash` leaves out (they cannot change the answer)."""
PROMPT_FEATURE_NAMES: list[str]
"""Names of `prompt_features`' values, in order: "chars", "words", "lines", "digit_share", "numbers", "math",
"code", "reasoning", "creative", "constraints", "question_marks", "choices", "non_ascii", "upper"."""

def count_tokens(text: str, encoding: str = "o200k_base") -> int:
    """Exact token count of `text` (tiktoken `encode_ordinary` semantics); ValueError on unknown encoding."""

def encode(text: str, encoding: str = "o200k_base") -> list[int]:
    """Token ids of `text`, identical to tiktoken's `encode_ordinary`."""

def encoding_for_model(model: str) -> str | None:
    """`"o200k_base"`/`"cl100k_base"` for OpenAI models (a `provider/` prefix is ignored), else None."""

def warm() -> int:
    """Build both rank maps now instead of on first use; returns the number of tokens loaded."""

def count_chat_tokens(body: bytes, model: str) -> tuple[int, bool]:
    """(input tokens, exact) of a raw OpenAI chat request body; ValueError if the body is malformed.

    exact is False when the model's tokenizer is not public: the count is then an o200k-based estimate.
    """

def request_hash(body: bytes, namespace: str = "") -> str:
    """32-hex-char canonical cache key of a chat request body; ValueError on invalid JSON."""

def prefix_hashes(body: bytes) -> list[int]:
    """One rolling u64 hash per message, covering the tools and that message's whole prefix."""

def near_miss_verdict(a: str, b: str) -> NearMissVerdict:
    """Returns "same", "reworded", or why one text's cached answer does not serve the other (e.g. "number",
    "negation", "direction", "substitution"); symmetric. See mmproxy/cache/matcher.py."""

def near_miss_words(a: str, b: str) -> tuple[NearMissVerdict, list[str], list[str]]:
    """`near_miss_verdict`'s verdict, with the lower-cased content words only `a` has and only `b` has; both
    lists are empty unless the verdict is "substitution", "insertion" or "reworded" (a synonym may explain
    those)."""

def prompt_features(text: str) -> list[float]:
    """Cheap, deterministic features of a prompt, each in [0, 1], in the order of `PROMPT_FEATURE_NAMES`; the
    learned router reads them beside a sentence embedding, which blurs a prompt's size and surface form.

    Log-scaled characters, words and lines; the share of digits and the number of numbers; counts of math
    (phrases such as "how many", LaTeX, operators between operands like "3 + 4"), code, reasoning, creative and
    answer-constraint markers, matched ASCII-case-insensitively, prose ones only at a word start; question
    marks; lines opening with an answer-option label ("A. ", "(b) ", A to J); the shares of letters that are
    non-ASCII (a rough script signal) and upper case. All zeros for "". Definitions in rust/src/features.rs.
    """

class RuleSet(Generic[_D]):
    """Compiled `routing_rules` (syntax in mmproxy/rules.py); immutable and thread-safe.

    Generic over the type of decision the `decision` factory makes, which `decide` hands back as is.
    Subclassed by `mmproxy.rules.RuleSet`, which passes its `Decision` type as `decision`. Not subscriptable
    at runtime: `RuleSet[X]` is for type checkers only.
    """

    def __init__(
        self,
        spec: bytes,
        decision: Callable[[str, int, str | None, str | None, bool, bool], _D],
        detector: PiiDetector | None = None,
        min_confidence: float = 0.7,
    ) -> None:
        """Compile a JSON list of rules; ValueError starting with the rule's index, name and key.

        `decision(name, index, model, tier, local_only, redact)` is called once per rule; `decide` returns its
        results. `pii_any`/`pii_count` conditions run `detector` (None: the default kinds), counting findings of at
        least `min_confidence`; the detector is shared, not copied.
        """

    @property
    def decisions(self) -> tuple[_D, ...]:
        """Every rule's decision, in rule order."""

    def __len__(self) -> int: ...
    def decide(
        self,
        body: bytes,
        *,
        headers: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        key: str | None = None,
        team: str | None = None,
        input_tokens: int = 0,
    ) -> tuple[_D | None, str | None]:
        """The decision of the first rule matching the raw chat body and context (or None), and what the
        sensitive-data conditions found: `kind:count` pairs sorted by kind (`card:1,email:2`, never the values), or
        None when no rule ran the detectors or they found nothing. ValueError on a malformed body.

        Only the headers some rule reads are looked at: a multidict (aiohttp's CIMultiDictProxy) is asked
        for each by `getall`, so every value counts; a mapping or (name, value) pairs are matched
        case-insensitively.
        """

class PiiDetector:
    """Sensitive-data detectors (rust/src/pii), compiled once: built-in kinds, operator regexes and word lists.

    `kinds`: the built-ins to run (None: the defaults, which leave out national ids beyond the US SSN);
    `patterns`: (kind, regex) pairs; `terms`: (kind, words) pairs, words matched whole in any case. ValueError
    names an unknown kind or a bad pattern.
    """

    def __init__(
        self,
        kinds: Sequence[str] | None = None,
        patterns: Sequence[tuple[str, str]] = (),
        terms: Sequence[tuple[str, Sequence[str]]] = (),
    ) -> None: ...
    @property
    def kinds(self) -> list[str]:
        """Every kind's name: the built-ins (enabled or not), then the operator's."""

    def scan(self, text: str) -> list[tuple[str, int, int, float]]:
        """(kind, start, end, confidence) of each finding in `text`, in order, never overlapping; character
        offsets, so `text[start:end]` is the value."""

