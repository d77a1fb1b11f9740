"""Type stubs for the Rust extension `mmproxy._native` (sources in rust/src)."""

__version__: str
IGNORED_FIELDS: list[str]
"""Top-level request fields that `request_hash` leaves out (they cannot change the answer)."""

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

def verify_pair(a: str, b: str) -> str:
    """Returns "same", "reworded", or why one text's cached answer does not serve the other (e.g. "number",
    "negation", "direction", "substitution"); symmetric. See mmproxy/cache/matcher.py."""

class RuleSet:
    """Compiled `routing_rules` (syntax in mmproxy/rules.py); immutable and thread-safe."""

    def __init__(self, spec: bytes) -> None:
        """Compile a JSON list of rules; ValueError starting with the rule's index, name and key."""

    @property
    def uses_headers(self) -> bool:
        """Whether any rule has a `headers` condition (otherwise headers need not be passed)."""

    def actions(self) -> list[tuple[str, str | None, str | None, bool]]:
        """(name, model, tier, local_only) of every rule, in order."""

    def __len__(self) -> int: ...
    def evaluate(
        self,
        body: bytes,
        headers: list[tuple[str, str]] | tuple[()] = ...,
        key: str | None = None,
        team: str | None = None,
        input_tokens: int = 0,
    ) -> int | None:
        """Index of the first rule matching the raw chat body and context; ValueError on a malformed body."""
