"""Routing rules: the `routing_rules` config section, compiled once by the Rust core, evaluated per request.

Why in Rust: the gateway decides a route for every request, and with a few hundred rules a Python
loop of regexes and substring tests costs tens of microseconds; the native matcher scans the text
once for all rules (one Aho-Corasick automaton for every keyword, one `RegexSet` for every regex).

Syntax (a YAML list; rules are tried in order and the **first match wins**)::

    routing_rules:
      - name: sensitive-stays-local          # required, unique; used in errors and decisions
        when: {tags_any: [pii, confidential], keywords_any: ["social security", "diagnosis"], match: any}
        route: {local_only: true}
      - name: code-to-frontier
        when: {model: [auto], regex: "(?i)\\b(def|class|fn|impl)\\b", min_tokens: 200}
        route: {tier: frontier}
      - name: tools-to-workhorse
        when: {has_tools: true}
        route: {model: gpt-4o-mini}
      - name: default                        # no `when`: matches every request
        route: {tier: economy}

`when` conditions (each key is one condition; `match: all` (default) needs every one, `match: any` one):

* `model`: list (or one string) of exact model names or `*` globs, against the body's `model`.
* `min_tokens` / `max_tokens`: inclusive bounds on the caller's estimated input tokens.
* `keywords_any` / `keywords_all`: case-insensitive substrings (Unicode lower-casing).
* `regex`: one pattern in Rust `regex` crate syntax (no look-around or back-references); unanchored.
* `in: last_user | system | any` (default `last_user`): the text that keywords and regex read. The
  last user message is the last `role: user` message's text (its `text` parts joined by newlines); the
  system prompt is every `system`/`developer` message's text. `any` means either text, tested
  separately (a keyword in each text counts for `keywords_all`; a regex never spans both).
* `has_tools`: non-empty `tools` or `functions`. `has_images`: an `image_url`/`input_image`/`image`
  content part in any message. `json_mode`: `response_format.type` is `json_object` or `json_schema`.
  Each is `true` or `false` (false matches their absence).
* `tags_any` / `tags_all`: exact strings from the body's `metadata.tags` list (LiteLLM's convention).
* `headers`: mapping of header name (case-insensitive) to an exact value or `{regex: ...}`; every
  listed header must match (it is one condition).
* `key` / `team`: lists of the calling virtual key (its `key_alias`, else its token, the sha256 hash) or
  team (`team_id`); never match when the caller has none (the master key).
* `pii_any`: a list of sensitive-data kinds (`card`, `email`, an operator's pattern or term name, …; `any`
  or `*` for any kind), of which one must be found; `pii_count: N`: at least N findings of any kind. Both
  read every text the request carries (every message of every role, tool results, tool call arguments),
  scanned once by the `privacy` section's detectors (mmproxy.privacy), and only when a rule reaches them.

`route` actions: exactly one of `model: <group>`, `tier: frontier|workhorse|economy` (the routing
strategy then picks within the tier), `local_only: true` (may be combined with `tier`: only deployments
inside the trust boundary, see Deployment.local); and/or `redact: true` (sensitive data replaced by
placeholders before the request leaves; alone, it keeps the requested model).

Compile errors (unknown keys, bad regexes, empty rules or lists, bad actions, duplicate names) raise
ValueError with a one-line message starting with the rule and the offending key, e.g.
``routing_rules[1] "code-to-frontier": when.regex: invalid regex "(": ...``. Evaluation raises
ValueError for a body that is not a JSON object with a `messages` list of objects. Bodies of 8 KiB or
more are evaluated with the GIL released.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from mmproxy import _native

__all__ = ["TIERS", "Decision", "RuleSet"]

TIERS = ("frontier", "workhorse", "economy")


class Decision(NamedTuple):
    """The first matching rule and its action; at most one of `model`/`tier`/`local_only` is set, except that
    `local_only` may come with a `tier`; none only when `redact` (the requested model, redacted)."""

    rule: str
    index: int  # type: ignore[assignment]  # the rule's position; shadows tuple.index, which nothing here calls
    model: str | None
    tier: str | None
    local_only: bool
    redact: bool


if TYPE_CHECKING:
    _NativeRuleSet = _native.RuleSet[Decision]
else:  # the native class takes no type arguments at runtime
    _NativeRuleSet = _native.RuleSet


class RuleSet(_NativeRuleSet):
    """A compiled, immutable list of routing rules; safe to share between threads.

    A subclass of the native rule set rather than a wrapper: the gateway evaluates on every request,
    and a Python frame in between would cost more than a whole decision over a few rules. Each rule's
    Decision is built once, at compile time, and returned as is.
    """

    __slots__ = ()

    @classmethod
    def compile(cls, rules: Sequence[Mapping[str, Any]], detector: _native.PiiDetector | None = None,
                min_confidence: float = 0.7) -> RuleSet:
        """Validate and compile `rules` (the parsed `routing_rules` list); ValueError names the bad rule.
        `pii_*` conditions run `detector` (None: the default kinds) and count findings of `min_confidence`."""
        try:
            spec = json.dumps(rules).encode()
        except (TypeError, ValueError) as e:
            raise ValueError(f"routing_rules: not plain YAML data: {e}") from None
        return cls(spec, Decision, detector, min_confidence)
