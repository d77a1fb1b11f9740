"""Load a LiteLLM-format ``config.yaml`` into typed settings.

An existing LiteLLM config must run unchanged, so every key LiteLLM knows is
accepted; those mmproxy does not implement yet produce a start-up warning
instead of being silently ignored. Errors name the offending key in one line.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

from mmproxy import litellm_names
from mmproxy._native import PiiDetector
from mmproxy.prices import files as price_files
from mmproxy.privacy import DEFAULT_MIN_CONFIDENCE, Privacy
from mmproxy.providers import REGISTRY
from mmproxy.registry import ModelTable, entries, shipped
from mmproxy.rules import TIERS, RuleSet

# Keys LiteLLM documents that mmproxy accepts but does not act on yet.
_LITELLM_PARAMS_LATER = {
    "max_retries": "per-deployment retries are not implemented; use router_settings.num_retries",
    "organization": "is not sent upstream yet",
    "region_name": "only applies to providers not supported yet",
    "tags": "tag routing is not implemented yet",
    "order": "deployment ordering is not implemented yet",
    "max_parallel_requests": "is not enforced yet",
    "extra_headers": "extra upstream headers are not sent yet",
}
_PRICE_KEYS = price_files.PRICES  # LiteLLM's names, read in model_info, litellm_params and price files alike
_LITELLM_PARAMS_DONE = {
    "model", "api_base", "api_key", "api_version", "timeout", "stream_timeout", "weight", "drop_params", "rpm", "tpm",
    "auto_prompt_cache", *_PRICE_KEYS,
}
_LITELLM_SETTINGS_DONE = {
    "drop_params", "num_retries", "request_timeout", "fallbacks", "context_window_fallbacks",
    "content_policy_fallbacks", "cache", "cache_params",
}
_CACHE_TYPES = {"local": False, "redis": False, "semantic": True, "redis-semantic": True}  # -> semantic layer
_CACHE_PARAMS_DONE = {
    "type", "host", "port", "password", "url", "ttl", "namespace", "mode", "max_bytes", "shared", "cache_sampled",
    "cache_n", "cache_tools", "similarity_threshold", "embedding_model", "redis_semantic_cache_embedding_model",
    "semantic_capacity", "semantic_path", "verify", "supported_call_types", "synonym_threshold", "max_error_rate",
    "error_confidence", "explore_rate", "answer_equivalence", "answer_similarity", "judge_model",
    "embedder_threads", "embedder_precision",
}
_ROUTER_SETTINGS_DONE = {
    "routing_strategy", "num_retries", "retry_after", "timeout", "allowed_fails", "cooldown_time", "fallbacks",
    "context_window_fallbacks", "content_policy_fallbacks", "redis_host", "redis_port", "redis_password",
    "redis_url",
}
_FALLBACK_KINDS = ("fallbacks", "context_window_fallbacks", "content_policy_fallbacks")
ROUTING_STRATEGIES = ("simple-shuffle", "least-busy", "latency-based-routing", "usage-based-routing",
                      "usage-based-routing-v2", "cost-based-routing")

_MODEL_INFO_DONE = {"id", "max_input_tokens", "mode", "tier", "strengths", "batch_discount", "trusted",
                    *_PRICE_KEYS}
_MODEL_INFO_MODES = {"chat", "embedding", "completion"}

_GENERAL_DONE = {"master_key", "max_request_size_mb", "database_url", "disable_spend_logs", "disable_metrics",
                 "spool_dir", "budget_on_unpriced_models", "max_file_size_mb", "request_body_timeout",
                 "idle_timeout", "price_file", "ui_log_prompts"}
_TOP_LEVEL = {
    "model_list",
    "general_settings",
    "litellm_settings",
    "router_settings",
    "environment_variables",
    "routing_rules",
    "privacy",
}
_PRIVACY_KEYS = {"kinds", "patterns", "terms", "min_confidence", "redact"}


_BARE_PREFIXES = (
    (("gpt-", "o1", "o3", "o4", "chatgpt-", "text-embedding-", "davinci", "babbage"), "openai"),
    (("claude-",), "anthropic"),
)


class ConfigError(Exception):
    """A config problem; the message is one line and names the key."""


def provider_of(model: str) -> tuple[str, str]:
    """LiteLLM's reading of a ``litellm_params.model`` string: the provider its prefix names when that provider is
    registered, else the one a bare well-known name implies ("" when none), and the model the provider is sent."""
    provider, _, upstream_model = model.partition("/")
    if upstream_model and provider in REGISTRY:
        return provider, upstream_model
    return next((name for prefixes, name in _BARE_PREFIXES if model.startswith(prefixes)), ""), model


def wildcard_regex(pattern: str) -> re.Pattern[str]:
    """LiteLLM's reading of a ``model_name`` with a ``*``: the name literal but each ``*``, which matches anything
    (also nothing); a requested name is matched from its start."""
    return re.compile(re.escape(pattern).replace(r"\*", "(.*)"))


def wildcard_candidates(name: str) -> tuple[str, ...]:
    """What a requested ``name`` is matched against the wildcards as, in order: itself, then with the provider a
    bare well-known name implies (``gpt-4o`` as ``openai/gpt-4o``), as LiteLLM tries them."""
    implied = provider_of(name)[0]
    return (name, f"{implied}/{name}") if implied else (name,)


@dataclass(frozen=True, slots=True)
class Deployment:
    """One upstream model endpoint that serves a public ``model_name``."""

    model_name: str
    provider: str
    upstream_model: str
    api_base: str
    api_key: str | None = field(repr=False)
    api_version: str | None
    drop_params: bool
    id: str
    timeout: float
    stream_timeout: float
    weight: float
    mode: str
    input_cost_per_token: float | None
    output_cost_per_token: float | None
    cache_read_cost_per_token: float | None  # prompt tokens read from the provider's prompt cache
    cache_write_cost_per_token: float | None  # prompt tokens written to it (Anthropic bills these above input)
    max_input_tokens: int | None
    tier: str | None
    strengths: tuple[str, ...]
    rpm: int | None
    tpm: int | None
    auto_prompt_cache: bool = False  # place cache_control breakpoints on repeated prefixes ("prompt_caching")
    batch_discount: float | None = None  # fraction off the standard price for batch requests (0.5: half price)
    # The model runs inside the operator's trust boundary, where `local_only` rules may send a request:
    # model_info.trusted, else the provider's "local" capability (Ollama).
    local: bool = False
    json_output: bool = False  # it can be asked for a JSON object answer (the provider's "json_output" capability)

    @property
    def serves_embeddings(self) -> bool:
        """Whether ``/v1/embeddings`` may use it: declared so, or named like an embedding model."""
        return self.mode == "embedding" or "embed" in self.upstream_model


@dataclass(frozen=True, slots=True)
class Wildcard:
    """A ``model_list`` entry whose ``model_name`` has a ``*`` (LiteLLM's wildcard routing): a requested name it
    matches is served by a deployment made from the entry at request time (``wildcard_deployment``), with the
    matched parts put in place of the ``*`` of its ``litellm_params.model``."""

    model_name: str  # the pattern: openai/*, *, gpt-4*
    model: str  # litellm_params.model as written: openai/*, *, anthropic/claude-*
    id: str  # every deployment made from it shares this id, as LiteLLM's do
    entry: dict[str, Any] = field(repr=False, compare=False)
    table: ModelTable = field(repr=False, compare=False)  # the prices its models are looked up in
    drop_params: bool = False
    default_timeout: float | None = None


@dataclass(frozen=True, slots=True)
class RouterSettings:
    """Retries, fallbacks and cooldowns (LiteLLM's ``router_settings``; some also in ``litellm_settings``)."""

    routing_strategy: str = "simple-shuffle"
    num_retries: int = 0
    retry_after: float = 0.0  # minimum wait before retrying, seconds
    allowed_fails: int = 3  # failures within a minute before a cooldown
    cooldown_time: float = 5.0
    # model group -> groups to try, in order, when it fails (generic / context too long / content policy)
    fallbacks: dict[str, list[str]] = field(default_factory=dict)
    context_window_fallbacks: dict[str, list[str]] = field(default_factory=dict)
    content_policy_fallbacks: dict[str, list[str]] = field(default_factory=dict)
    redis_url: str | None = field(default=None, repr=False)  # limits and cooldowns shared by instances


CACHED_ENDPOINTS = frozenset(("chat", "messages", "embeddings", "responses"))


@dataclass(frozen=True, slots=True)
class CacheSettings:
    """The response cache (LiteLLM's ``litellm_settings.cache`` / ``cache_params``, plus mmproxy's keys)."""

    redis_url: str | None = field(default=None, repr=False)  # None: in-process LRU
    ttl: float = 3600.0
    namespace: str = "mmproxy"
    max_bytes: int = 256 * 1024 * 1024
    default_on: bool = True  # LiteLLM's mode: default_off caches only requests that ask ("use-cache")
    shared: bool = False  # entries shared by every key and team instead of isolated per caller
    # LiteLLM caches every request its key matches, sampled or not: so do these defaults (a LiteLLM config keeps
    # its hits); false is the stricter rule, a fresh answer for requests that ask for variety or act.
    cache_sampled: bool = True  # requests that set temperature > 0 or top_p < 1
    cache_n: bool = True  # requests for n > 1 choices
    cache_tools: bool = True  # requests with tools
    semantic: bool = False
    embedding_model: str | None = None  # a model_name of an embedding deployment; None: the local embedder
    similarity_threshold: float | None = None  # None: the matcher's default for the local embedder
    verify: bool = True  # the near-miss checks after the similarity search
    synonym_threshold: float | None = None  # local embedder: accept replaced words this close in context
    semantic_capacity: int = 100_000  # entries per (model group, namespace) index
    semantic_path: str | None = None  # directory the semantic index is persisted to
    # The verified semantic cache (mmproxy.cache.error_bound): set max_error_rate to bound the error rate of
    # served semantic hits instead of using a fixed threshold; similarity_threshold is then the least cosine
    # a cached prompt needs to be considered at all (default 0.7).
    max_error_rate: float | None = None
    error_confidence: float = 0.95  # how sure the bound must be
    explore_rate: float = 0.05  # share of would-be hits forwarded anyway, to keep measuring them
    answer_equivalence: str = "exact"  # "exact" | "embedding" | "judge" (mmproxy.cache.answers)
    answer_similarity: float = 0.9  # embedding equivalence: least cosine of two free-text answers
    judge_model: str | None = None  # judge equivalence: the model group asked
    # The local embedder (also the learned routers'): intra-op threads per worker, and "int8" or "float32"
    # (mmproxy.cache.embedder). One thread fits a worker that shares its core with its event loop.
    embedder_threads: int = 1
    embedder_precision: str = "int8"
    endpoints: frozenset[str] = CACHED_ENDPOINTS  # the endpoints it serves (LiteLLM's supported_call_types)


@dataclass(frozen=True, slots=True)
class SmartRouterSettings:
    """A virtual model routed by the learned router (a ``model_list`` entry with a ``router`` block): each request
    goes to the candidate group the quality model and the policy choose (``mmproxy.smart``)."""

    model_name: str
    candidates: tuple[str, ...]  # model groups (model_name values)
    learned_as: dict[str, str]  # candidate group -> the quality model's name for it (default: its upstream model)
    model: str | None = None  # quality model file; None: the shipped one
    strong_share: float | None = None  # exactly one of these three sets the policy (mmproxy.smart.policy)
    cost_weight: float | None = None
    min_quality: float | None = None
    window: int = 2000  # recent requests strong_share calibration reads
    learn: bool = False  # keep each routed prompt's features (not its text) in the ledger, to learn from feedback
    retrain_every: float | None = None  # seconds between retraining on rated requests (needs learn)
    retrain_min: int = 50  # new rated requests a retraining waits for


@dataclass(frozen=True, slots=True)
class CascadeStage:
    """One stage of a cascade: the group asked, and how its answer is judged (every stage but the last)."""

    model: str  # a model group
    scorer: str | None = None  # "learned" | "consistency" | "judge"; None for the last stage
    threshold: float | None = None  # the score an answer must reach; None: the plan's (learned) or the default
    samples: int = 3  # consistency: answers asked for
    judge: str | None = None  # judge: the group that grades the answer
    learned_as: str | None = None  # learned: the stage's model name in the plan (default: its upstream model)


@dataclass(frozen=True, slots=True)
class CascadeSettings:
    """A virtual model answered by a cascade (a ``model_list`` entry with a ``cascade`` block)."""

    model_name: str
    stages: tuple[CascadeStage, ...]
    plan: str | None = None  # learned scorers and thresholds; None: the shipped plan
    router_model: str | None = None  # quality model giving the learned scorer its prior; None: the shipped one


@dataclass(frozen=True, slots=True)
class VerifySettings:
    """A virtual model whose answers a second model verifies (a ``model_list`` entry with a ``verify`` block)."""

    model_name: str
    generator: str  # the group that answers
    verifier: str  # the group that checks, seeing only the question and the answer
    on_reject: str = "flag"  # "flag" (answer with the verdict) | "regenerate" (once, with the critique) | "escalate"
    escalate_to: str | None = None  # for "escalate": the group asked instead


@dataclass(frozen=True, slots=True)
class ConsensusSettings:
    """A virtual model answered by several models at once (a ``model_list`` entry with a ``consensus`` block)."""

    model_name: str
    members: tuple[str, ...]  # groups asked in parallel
    quorum: int  # answers needed before the deadline
    deadline: float  # seconds
    min_agreement: float  # share of answers that must agree with the majority
    on_disagreement: str = "flag"  # "flag" | "escalate" | "error"
    escalate_to: str | None = None
    judge: str | None = None  # a group that compares free-text answers (None: the local embedding does)


@dataclass(frozen=True, slots=True)
class Persona:
    name: str
    model: str  # the group that reviews
    prompt: str | None = None  # None: the built-in prompt of a known persona (security, performance, architecture)


@dataclass(frozen=True, slots=True)
class ReviewSettings:
    """A virtual model whose answer is a merged review by several personas (a ``model_list`` entry with a
    ``review`` block)."""

    model_name: str
    personas: tuple[Persona, ...]
    deadline: float = 120.0  # seconds; a persona still running then is left out


DEFAULT_TIMEOUT_S = 600.0
DEFAULT_MAX_REQUEST_MB = 32.0
DEFAULT_MAX_FILE_MB = 512.0  # OpenAI's limit for one file
DEFAULT_BODY_TIMEOUT_S = 60.0
DEFAULT_IDLE_TIMEOUT_S = 75.0


@dataclass(slots=True)
class Config:
    deployments: list[Deployment]
    master_key: str | None = field(repr=False)
    max_request_bytes: int
    warnings: list[str]
    router: RouterSettings = field(default_factory=RouterSettings)
    rules: RuleSet | None = None
    privacy: Privacy | None = None  # the sensitive-data detectors, when the config or a rule needs them
    # None: SQLite in the working directory (``mmproxy.db``), else ``sqlite:///path`` or ``postgresql://...``
    database_url: str | None = field(default=None, repr=False)
    spend_logs: bool = True  # the per-request ledger (LiteLLM: general_settings.disable_spend_logs)
    metrics: bool = True  # GET /metrics
    cache: CacheSettings | None = None
    access_log: str | None = None  # "text" | "json": one line per request on stdout (``serve --access-log``)
    smart_routers: dict[str, SmartRouterSettings] = field(default_factory=dict)
    cascades: dict[str, CascadeSettings] = field(default_factory=dict)
    verifiers: dict[str, VerifySettings] = field(default_factory=dict)
    consensus: dict[str, ConsensusSettings] = field(default_factory=dict)
    reviews: dict[str, ReviewSettings] = field(default_factory=dict)
    spool_dir: str = "mmproxy-spool"  # ledger rows on disk until committed (mmproxy.spend.spool); per worker
    grace_period: float = 30.0  # seconds SIGTERM leaves in-flight requests (``serve --grace-period``)
    # A key with a budget asking for a model without a price: "refuse" (a budget must never be bypassed in
    # silence: its spend would stay 0) or "allow" (served, counted at 0).
    budget_on_unpriced_models: str = "refuse"
    # A file upload (batch input) is streamed to disk, never held in memory; this bounds its size.
    max_file_bytes: int = int(DEFAULT_MAX_FILE_MB * 1024 * 1024)
    # nginx's defaults: a body that stops arriving, and a connection idle between requests (or that never sends
    # a whole request line and headers), are given up on after these many seconds.
    request_body_timeout: float = DEFAULT_BODY_TIMEOUT_S
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT_S
    ui_log_prompts: bool = False  # the dashboard's live log shows the start of each request's last user message
    wildcards: list[Wildcard] = field(default_factory=list)  # entries whose model_name has a '*'


def load_config(path: str | os.PathLike[str]) -> Config:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config {path} is not valid YAML{where}") from None
    return parse_config(raw if raw is not None else {})


def parse_config(raw: Any) -> Config:
    if not isinstance(raw, dict):
        raise ConfigError("config: the top level must be a mapping")
    warnings: list[str] = []
    for key in raw:
        if key not in _TOP_LEVEL:
            warnings.append(f"{key}: unknown top-level key, ignored" + _did_you_mean(key, _TOP_LEVEL))

    env_vars = _mapping(raw, "environment_variables")
    for name, value in env_vars.items():
        os.environ.setdefault(str(name), str(value))
    missing = [(where, var) for var, where in _environment_references(raw) if var not in os.environ]
    if missing:  # all of them at once, not one per run
        raise ConfigError("; ".join(f"{where}: environment variable {var} is not set" for where, var in missing))

    general = _mapping(raw, "general_settings")
    for key in general:
        if key not in _GENERAL_DONE:
            warnings.append(_not_done("general_settings", key, _GENERAL_DONE, litellm_names.GENERAL_SETTINGS))
    master_key = _optional_secret(general, "master_key", "general_settings.master_key")
    max_mb = _number(general, "max_request_size_mb", "general_settings.max_request_size_mb")
    max_request_bytes = int((max_mb if max_mb is not None else DEFAULT_MAX_REQUEST_MB) * 1024 * 1024)
    file_mb = _number(general, "max_file_size_mb", "general_settings.max_file_size_mb", positive=True)
    max_file_bytes = int((file_mb if file_mb is not None else DEFAULT_MAX_FILE_MB) * 1024 * 1024)
    body_timeout = _number(general, "request_body_timeout", "general_settings.request_body_timeout", positive=True)
    idle_timeout = _number(general, "idle_timeout", "general_settings.idle_timeout", positive=True)
    database_url = _optional_secret(general, "database_url", "general_settings.database_url")
    if database_url is not None and not database_url.startswith(("sqlite://", "postgresql://", "postgres://")):
        raise ConfigError("general_settings.database_url: must start with postgresql:// or sqlite:///")
    spend_logs = not _flag(general, "disable_spend_logs", "general_settings.disable_spend_logs")
    metrics = not _flag(general, "disable_metrics", "general_settings.disable_metrics")
    spool_dir = general.get("spool_dir", "mmproxy-spool")
    if not isinstance(spool_dir, str) or not spool_dir:
        raise ConfigError("general_settings.spool_dir: must be a directory path")
    unpriced = general.get("budget_on_unpriced_models", "refuse")
    if unpriced not in ("refuse", "allow"):
        raise ConfigError("general_settings.budget_on_unpriced_models: must be refuse or allow")
    price_table = _price_table(general.get("price_file"), warnings)

    litellm_settings = _mapping(raw, "litellm_settings")
    for key in litellm_settings:
        if key not in _LITELLM_SETTINGS_DONE:
            warnings.append(_not_done("litellm_settings", key, _LITELLM_SETTINGS_DONE))
    drop_params = _flag(litellm_settings, "drop_params", "litellm_settings.drop_params") or False
    router_settings = _mapping(raw, "router_settings")
    for key in router_settings:
        if key not in _ROUTER_SETTINGS_DONE:
            warnings.append(_not_done("router_settings", key, _ROUTER_SETTINGS_DONE))
    default_timeout = (_number(router_settings, "timeout", "router_settings.timeout", positive=True)
                       or _number(litellm_settings, "request_timeout", "litellm_settings.request_timeout",
                                  positive=True))

    model_list = raw.get("model_list") or []
    if not isinstance(model_list, list):
        raise ConfigError("model_list: must be a list of deployments")
    deployments: list[Deployment] = []
    wildcards: list[Wildcard] = []
    seen_ids: set[str] = set()
    smart_entries: list[tuple[int, dict[str, Any]]] = []
    for index, entry in enumerate(model_list):
        if isinstance(entry, dict) and _VIRTUAL_KINDS & set(entry):
            smart_entries.append((index, entry))
            continue
        where = f"model_list[{index}]"
        entry = _entry(entry, where, warnings)
        wildcard = _wildcard_model(entry)
        deployment = _parse_deployment(entry, where, warnings, drop_params, default_timeout, price_table, wildcard)
        if deployment is None:
            continue
        if deployment.id in seen_ids:
            info = entry.get("model_info")
            if isinstance(info, dict) and info.get("id") is not None:
                raise ConfigError(f"{where}.model_info.id: duplicate id {deployment.id!r}")
            # The same model twice, differing only in what the generated id leaves out (an api_key: LiteLLM's
            # multi-key load balancing): the later ones are told apart by their position among the same.
            twins = sum(1 for seen in seen_ids if seen == deployment.id or seen.startswith(f"{deployment.id}-"))
            deployment = replace(deployment, id=f"{deployment.id}-{twins + 1}")
        seen_ids.add(deployment.id)
        if wildcard is not None:
            wildcards.append(Wildcard(deployment.model_name, entry["litellm_params"]["model"], deployment.id, entry,
                                      price_table, drop_params, default_timeout))
            continue
        deployments.append(deployment)
        if deployment.input_cost_per_token is None and deployment.output_cost_per_token is None:
            warnings.append(f"{where} ({deployment.model_name}, {deployment.upstream_model}): no price "
                            "known, so its requests cost 0 and keys with a budget may not use it "
                            "(general_settings.budget_on_unpriced_models); set model_info.input_cost_per_token "
                            "and output_cost_per_token")
    virtual = _parse_virtual_models(smart_entries, deployments)
    router = _parse_router(router_settings, litellm_settings, {d.model_name for d in deployments},
                           [wildcard_regex(w.model_name) for w in wildcards], warnings)
    privacy = _parse_privacy(raw.get("privacy"), raw.get("routing_rules"))
    rules = _parse_rules(raw.get("routing_rules"), deployments, privacy, warnings)
    cache = _parse_cache(litellm_settings, {d.model_name for d in deployments if d.mode == "embedding"},
                         {d.model_name for d in deployments}, warnings)
    return Config(deployments, master_key, max_request_bytes, warnings, router, rules, privacy, database_url,
                  spend_logs, metrics, cache, smart_routers=virtual["router"], cascades=virtual["cascade"],
                  verifiers=virtual["verify"], consensus=virtual["consensus"], reviews=virtual["review"],
                  spool_dir=spool_dir, budget_on_unpriced_models=unpriced, max_file_bytes=max_file_bytes,
                  request_body_timeout=body_timeout or DEFAULT_BODY_TIMEOUT_S,
                  idle_timeout=idle_timeout or DEFAULT_IDLE_TIMEOUT_S, wildcards=wildcards,
                  ui_log_prompts=bool(_flag(general, "ui_log_prompts", "general_settings.ui_log_prompts")))


_SMART_ROUTER_KEYS = {"candidates", "learned_as", "model", "strong_share", "cost_weight", "min_quality", "window",
                      "learn", "retrain_every", "retrain_min"}


_VIRTUAL_KINDS = frozenset(("router", "cascade", "verify", "consensus", "review"))
KNOWN_PERSONAS = ("security", "performance", "architecture")


def _parse_virtual_models(entries: list[tuple[int, dict[str, Any]]],
                          deployments: list[Deployment]) -> dict[str, dict[str, Any]]:
    """The ``model_list`` entries with a ``router``, ``cascade``, ``verify`` or ``consensus`` block instead of
    ``litellm_params``, by kind and name."""
    groups = {d.model_name for d in deployments}
    upstream: dict[str, str] = {}  # a group's model: its first deployment's, as the virtual models read it
    for deployment in deployments:
        upstream.setdefault(deployment.model_name, deployment.upstream_model)
    parsed: dict[str, dict[str, Any]] = {kind: {} for kind in _VIRTUAL_KINDS}
    for index, entry in entries:
        where = f"model_list[{index}]"
        name = entry.get("model_name")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}.model_name: required, a non-empty string")
        if name in groups or any(name in models for models in parsed.values()):
            raise ConfigError(f"{where}.model_name: {name!r} is already a model; a virtual model needs a name of "
                              "its own")
        kinds = sorted(_VIRTUAL_KINDS & set(entry))
        if len(kinds) > 1:
            raise ConfigError(f"{where}: one of {', '.join(kinds)}, not both")
        kind = kinds[0]
        kwhere = f"{where}.{kind}"
        if kind == "cascade":
            parsed[kind][name] = _parse_cascade(name, entry[kind], kwhere, groups)
        elif kind == "router":
            parsed[kind][name] = _parse_smart_router(name, entry[kind], kwhere, groups)
        elif kind == "verify":
            parsed[kind][name] = _parse_verify(name, entry[kind], kwhere, groups, upstream)
        elif kind == "review":
            parsed[kind][name] = _parse_review(name, entry[kind], kwhere, groups)
        else:
            parsed[kind][name] = _parse_consensus(name, entry[kind], kwhere, groups)
    return parsed


_VERIFY_KEYS = {"generator", "verifier", "on_reject", "escalate_to", "allow_same_model"}
_CONSENSUS_KEYS = {"members", "quorum", "deadline", "min_agreement", "on_disagreement", "escalate_to", "judge"}


def _group(block: dict[str, Any], key: str, where: str, groups: set[str], required: bool = True) -> str | None:
    value = block.get(key)
    if value is None and not required:
        return None
    if value not in groups:
        raise ConfigError(f"{where}.{key}: {value!r} is not a model_name in model_list")
    return str(value)


def _choice(block: dict[str, Any], key: str, where: str, options: tuple[str, ...]) -> str:
    value = block.get(key, options[0])
    if value not in options:
        raise ConfigError(f"{where}.{key}: one of {', '.join(options)}")
    return str(value)


def _parse_verify(name: str, raw: Any, where: str, groups: set[str], upstream: dict[str, str]) -> VerifySettings:
    block = _block(raw, where, _VERIFY_KEYS, "generator and verifier")
    generator = _group(block, "generator", where, groups)
    verifier = _group(block, "verifier", where, groups)
    assert generator is not None and verifier is not None
    if upstream[generator] == upstream[verifier] and not _flag(block, "allow_same_model", f"{where}.allow_same_model"):
        raise ConfigError(f"{where}.verifier: the same model as the generator ({upstream[generator]}) would grade its "
                          "own answer; pick another model, or set allow_same_model: true")
    on_reject = _choice(block, "on_reject", where, ("flag", "regenerate", "escalate"))
    escalate_to = _group(block, "escalate_to", where, groups, required=on_reject == "escalate")
    return VerifySettings(name, generator, verifier, on_reject, escalate_to)


_REVIEW_KEYS = {"personas", "deadline"}
_PERSONA_KEYS = {"name", "model", "prompt"}


def _parse_review(name: str, raw: Any, where: str, groups: set[str]) -> ReviewSettings:
    block = _block(raw, where, _REVIEW_KEYS, "personas")
    personas = block.get("personas")
    if not isinstance(personas, list) or not personas:
        raise ConfigError(f"{where}.personas: required, a list of {{name, model[, prompt]}}")
    parsed = []
    for i, raw_persona in enumerate(personas):
        pwhere = f"{where}.personas[{i}]"
        persona = _block(raw_persona, pwhere, _PERSONA_KEYS, "name and model")
        persona_name, prompt = persona.get("name"), persona.get("prompt")
        if not isinstance(persona_name, str) or not persona_name:
            raise ConfigError(f"{pwhere}.name: required, e.g. security")
        if prompt is None and persona_name not in KNOWN_PERSONAS:
            raise ConfigError(f"{pwhere}.prompt: required for a persona other than {', '.join(KNOWN_PERSONAS)}")
        if prompt is not None and not isinstance(prompt, str):
            raise ConfigError(f"{pwhere}.prompt: the reviewer's instructions, a string")
        model = _group(persona, "model", pwhere, groups)
        assert model is not None
        parsed.append(Persona(persona_name, model, prompt))
    if len({p.name for p in parsed}) != len(parsed):
        raise ConfigError(f"{where}.personas: each persona needs a name of its own")
    deadline = _number(block, "deadline", f"{where}.deadline", positive=True) or 120.0
    return ReviewSettings(name, tuple(parsed), deadline)


def _parse_consensus(name: str, raw: Any, where: str, groups: set[str]) -> ConsensusSettings:
    block = _block(raw, where, _CONSENSUS_KEYS, "members")
    members = block.get("members")
    if not isinstance(members, list) or len(members) < 2:
        raise ConfigError(f"{where}.members: required, a list of at least two model_name values")
    for member in members:
        if member not in groups:
            raise ConfigError(f"{where}.members: {member!r} is not a model_name in model_list")
    quorum = _integer(block, "quorum", f"{where}.quorum") or len(members) // 2 + 1
    if not 1 <= quorum <= len(members):
        raise ConfigError(f"{where}.quorum: between 1 and the number of members ({len(members)})")
    deadline = _number(block, "deadline", f"{where}.deadline", positive=True) or 30.0
    agreement = _number(block, "min_agreement", f"{where}.min_agreement")
    if agreement is not None and agreement > 1:
        raise ConfigError(f"{where}.min_agreement: a share between 0 and 1")
    on_disagreement = _choice(block, "on_disagreement", where, ("flag", "escalate", "error"))
    escalate_to = _group(block, "escalate_to", where, groups, required=on_disagreement == "escalate")
    judge = _group(block, "judge", where, groups, required=False)
    return ConsensusSettings(name, tuple(members), quorum, deadline, 0.5 if agreement is None else agreement,
                             on_disagreement, escalate_to, judge)


_CASCADE_KEYS = {"stages", "plan", "router_model"}
_STAGE_KEYS = {"model", "scorer", "threshold", "samples", "judge", "learned_as"}
SCORERS = ("learned", "consistency", "judge")


def _block(block: Any, where: str, known: set[str], what: str) -> dict[str, Any]:
    """A virtual model's mapping, every key in it known."""
    if not isinstance(block, dict):
        raise ConfigError(f"{where}: must be a mapping with {what}")
    unknown = sorted(set(block) - known)
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key (known: {', '.join(sorted(known))})")
    return block


def _parse_cascade(name: str, raw: Any, where: str, groups: set[str]) -> CascadeSettings:
    block = _block(raw, where, _CASCADE_KEYS, "stages")
    stages = block.get("stages")
    if not isinstance(stages, list) or len(stages) < 2:
        raise ConfigError(f"{where}.stages: required, a list of at least two stages, cheapest first")
    parsed = []
    for i, stage in enumerate(stages):
        swhere = f"{where}.stages[{i}]"
        stage = _block({"model": stage} if isinstance(stage, str) else stage, swhere, _STAGE_KEYS, "model")
        model = stage.get("model")
        if model not in groups:
            raise ConfigError(f"{swhere}.model: {model!r} is not a model_name in model_list")
        last = i == len(stages) - 1
        scorer = stage.get("scorer", None if last else "learned")
        if last and scorer is not None:
            raise ConfigError(f"{swhere}.scorer: the last stage's answer is always accepted; it has no scorer")
        if not last and scorer not in SCORERS:
            raise ConfigError(f"{swhere}.scorer: one of {', '.join(SCORERS)}")
        threshold = _number(stage, "threshold", f"{swhere}.threshold")
        if threshold is not None and threshold > 1:
            raise ConfigError(f"{swhere}.threshold: a score between 0 and 1")
        samples = _integer(stage, "samples", f"{swhere}.samples")
        if samples is not None and (scorer != "consistency" or samples < 2):
            raise ConfigError(f"{swhere}.samples: at least 2, and for the consistency scorer only")
        judge = stage.get("judge")
        if (judge is not None or scorer == "judge") and (scorer != "judge" or judge not in groups):
            raise ConfigError(f"{swhere}.judge: a model_name in model_list, for the judge scorer only")
        learned_as = stage.get("learned_as")
        if learned_as is not None and not isinstance(learned_as, str):
            raise ConfigError(f"{swhere}.learned_as: the stage's model name in the cascade plan")
        parsed.append(CascadeStage(model, scorer, threshold, samples or 3, judge, learned_as))
    for key in ("plan", "router_model"):
        if block.get(key) is not None and not isinstance(block[key], str):
            raise ConfigError(f"{where}.{key}: a path to a file")
    return CascadeSettings(name, tuple(parsed), block.get("plan"), block.get("router_model"))


def _parse_smart_router(name: str, raw: Any, rwhere: str, groups: set[str]) -> SmartRouterSettings:
    block = _block(raw, rwhere, _SMART_ROUTER_KEYS, "candidates")
    candidates = block.get("candidates")
    if not isinstance(candidates, list) or len(candidates) < 2 or not all(isinstance(c, str) for c in candidates):
        raise ConfigError(f"{rwhere}.candidates: required, a list of at least two model_name values")
    for candidate in candidates:
        if candidate not in groups:
            raise ConfigError(f"{rwhere}.candidates: {candidate!r} is not a model_name in model_list")
    learned = block.get("learned_as") or {}
    if not isinstance(learned, dict) or not all(isinstance(v, str) and k in candidates
                                                for k, v in learned.items()):
        raise ConfigError(f"{rwhere}.learned_as: a mapping of candidate -> model name in the router model")
    model = block.get("model")
    if model is not None and not isinstance(model, str):
        raise ConfigError(f"{rwhere}.model: a path to a router model file")
    policy = {key: _number(block, key, f"{rwhere}.{key}") for key in ("strong_share", "cost_weight", "min_quality")}
    chosen = [key for key, value in policy.items() if value is not None]
    if len(chosen) > 1:
        raise ConfigError(f"{rwhere}: set one of strong_share, cost_weight and min_quality, "
                          f"not {' and '.join(chosen)}")
    if not chosen:
        policy["strong_share"] = 0.5
    for key in ("strong_share", "min_quality"):
        value = policy[key]
        if value is not None and not 0 <= value <= 1:
            raise ConfigError(f"{rwhere}.{key}: a number between 0 and 1")
    window = _integer(block, "window", f"{rwhere}.window") or 2000
    learn = bool(_flag(block, "learn", f"{rwhere}.learn"))
    retrain_every = _number(block, "retrain_every", f"{rwhere}.retrain_every", positive=True)
    if retrain_every is not None and not learn:
        raise ConfigError(f"{rwhere}.retrain_every: needs learn: true (retraining reads the features it keeps)")
    retrain_min = _integer(block, "retrain_min", f"{rwhere}.retrain_min") or 50
    return SmartRouterSettings(name, tuple(candidates), dict(learned), model, policy["strong_share"],
                               policy["cost_weight"], policy["min_quality"], window, learn, retrain_every,
                               retrain_min)


def _parse_cache(litellm: dict[str, Any], embedding_models: set[str], models: set[str],
                 warnings: list[str]) -> CacheSettings | None:
    if not _flag(litellm, "cache", "litellm_settings.cache"):
        if "cache_params" in litellm:
            warnings.append("litellm_settings.cache_params: set litellm_settings.cache: true to enable the cache")
        return None
    params = _mapping(litellm, "cache_params")
    where = "litellm_settings.cache_params"
    for key in params:
        if key not in _CACHE_PARAMS_DONE:
            warnings.append(_not_done(where, key, _CACHE_PARAMS_DONE))
    kind = params.get("type", "local")
    if kind not in _CACHE_TYPES:
        raise ConfigError(f"{where}.type: must be one of {', '.join(_CACHE_TYPES)}")
    endpoints = _cached_endpoints(params.get("supported_call_types"), where, warnings)
    # Redis from url, else host/port/password, else LiteLLM's REDIS_URL / REDIS_HOST / ... variables.
    redis_url = _optional_secret(params, "url", f"{where}.url")
    host = _optional_secret(params, "host", f"{where}.host")
    if redis_url is None and (host is not None or kind.startswith("redis")):
        redis_url = os.environ.get("REDIS_URL") if host is None else None
        if redis_url is None:
            port = _integer(params, "port", f"{where}.port") or int(os.environ.get("REDIS_PORT", "6379"))
            password = _optional_secret(params, "password", f"{where}.password") or os.environ.get("REDIS_PASSWORD")
            redis_url = _redis_url(host or os.environ.get("REDIS_HOST", "127.0.0.1"), port, password)
    mode = params.get("mode", "default_on")
    if mode not in ("default_on", "default_off"):
        raise ConfigError(f"{where}.mode: must be default_on or default_off")
    embedding_model = params.get("embedding_model", params.get("redis_semantic_cache_embedding_model"))
    if embedding_model is not None and embedding_model not in embedding_models:
        raise ConfigError(f"{where}.embedding_model: {embedding_model!r} is not the model_name of an embedding "
                          "deployment (model_info.mode: embedding); leave it unset for the built-in local embedder")
    threshold = _number(params, "similarity_threshold", f"{where}.similarity_threshold")
    if threshold is not None and not 0.0 < threshold <= 1.0:
        raise ConfigError(f"{where}.similarity_threshold: must be a cosine similarity in (0, 1]")
    namespace = params.get("namespace", "mmproxy")
    if not isinstance(namespace, str) or not namespace:
        raise ConfigError(f"{where}.namespace: must be a non-empty string")
    path = params.get("semantic_path")
    if path is not None and not isinstance(path, str):
        raise ConfigError(f"{where}.semantic_path: must be a directory path")
    threads = _integer(params, "embedder_threads", f"{where}.embedder_threads")
    if threads is not None and threads < 1:
        raise ConfigError(f"{where}.embedder_threads: must be at least 1")
    precision = params.get("embedder_precision", "int8")
    if precision not in ("int8", "float32"):
        raise ConfigError(f"{where}.embedder_precision: must be int8 or float32")
    defaults = CacheSettings()
    verified = _parse_verified(params, where, _CACHE_TYPES[kind], models, defaults)
    return CacheSettings(**verified,
        redis_url=redis_url,
        ttl=_number(params, "ttl", f"{where}.ttl", positive=True) or defaults.ttl,
        namespace=namespace,
        max_bytes=_integer(params, "max_bytes", f"{where}.max_bytes") or defaults.max_bytes,
        default_on=mode == "default_on",
        shared=bool(_flag(params, "shared", f"{where}.shared")),
        cache_sampled=_flag(params, "cache_sampled", f"{where}.cache_sampled") is not False,
        cache_n=_flag(params, "cache_n", f"{where}.cache_n") is not False,
        cache_tools=_flag(params, "cache_tools", f"{where}.cache_tools") is not False,
        semantic=_CACHE_TYPES[kind],
        embedding_model=embedding_model,
        similarity_threshold=threshold,
        verify=_flag(params, "verify", f"{where}.verify") is not False,
        synonym_threshold=_number(params, "synonym_threshold", f"{where}.synonym_threshold"),
        semantic_capacity=_integer(params, "semantic_capacity", f"{where}.semantic_capacity")
        or defaults.semantic_capacity,
        semantic_path=path,
        endpoints=endpoints,
        embedder_threads=threads or defaults.embedder_threads,
        embedder_precision=precision,
    )


def _parse_verified(params: dict[str, Any], where: str, semantic: bool, models: set[str],
                    defaults: CacheSettings) -> dict[str, Any]:
    """The verified semantic cache's keys of ``cache_params``, checked; empty unless ``max_error_rate`` is set."""
    bound = _number(params, "max_error_rate", f"{where}.max_error_rate")
    if bound is None:
        for key in ("error_confidence", "explore_rate", "answer_equivalence", "answer_similarity", "judge_model"):
            if key in params:
                raise ConfigError(f"{where}.{key}: applies to the verified semantic cache; set max_error_rate")
        return {}
    if not semantic:
        raise ConfigError(f"{where}.max_error_rate: needs a semantic cache (type: semantic or redis-semantic)")
    if not 0.0 < bound < 0.5:
        raise ConfigError(f"{where}.max_error_rate: must be an error rate in (0, 0.5), such as 0.01")
    confidence = _number(params, "error_confidence", f"{where}.error_confidence")
    if confidence is not None and not 0.5 <= confidence < 1.0:
        raise ConfigError(f"{where}.error_confidence: must be in [0.5, 1), such as 0.95")
    explore = _number(params, "explore_rate", f"{where}.explore_rate")
    if explore is not None and not 0.0 < explore <= 1.0:
        raise ConfigError(f"{where}.explore_rate: must be in (0, 1]")
    equivalence = params.get("answer_equivalence", defaults.answer_equivalence)
    if equivalence not in ("exact", "embedding", "judge"):
        raise ConfigError(f"{where}.answer_equivalence: must be exact, embedding or judge")
    similarity = _number(params, "answer_similarity", f"{where}.answer_similarity")
    if similarity is not None and not 0.0 < similarity <= 1.0:
        raise ConfigError(f"{where}.answer_similarity: must be a cosine similarity in (0, 1]")
    judge = params.get("judge_model")
    if (equivalence == "judge") != (judge is not None):
        raise ConfigError(f"{where}.judge_model: set it exactly when answer_equivalence is judge")
    if judge is not None and judge not in models:
        raise ConfigError(f"{where}.judge_model: {judge!r} is not a model_name of model_list")
    return {"max_error_rate": bound,
            "error_confidence": confidence if confidence is not None else defaults.error_confidence,
            "explore_rate": explore if explore is not None else defaults.explore_rate,
            "answer_equivalence": equivalence,
            "answer_similarity": similarity if similarity is not None else defaults.answer_similarity,
            "judge_model": judge}


# LiteLLM's call types, by the endpoint that serves them here.
_CALL_TYPES = {
    "completion": "chat", "acompletion": "chat", "embedding": "embeddings", "aembedding": "embeddings",
    "anthropic_messages": "messages", "responses": "responses", "aresponses": "responses",
}


def _cached_endpoints(calls: Any, where: str, warnings: list[str]) -> frozenset[str]:
    """The endpoints ``supported_call_types`` lets the cache serve (all of them when it is unset)."""
    if calls is None:
        return CACHED_ENDPOINTS
    if not isinstance(calls, list) or not all(isinstance(c, str) for c in calls):
        raise ConfigError(f"{where}.supported_call_types: must be a list of call types such as [acompletion]")
    unknown = [c for c in calls if c not in _CALL_TYPES]
    if unknown:
        warnings.append(f"{where}.supported_call_types: {', '.join(unknown)} not served by mmproxy, ignored")
    return frozenset(_CALL_TYPES[c] for c in calls if c in _CALL_TYPES)


def _parse_privacy(raw: Any, rules: Any) -> Privacy | None:
    """The ``privacy`` section's detectors, compiled once and shared by the rules and redaction; the default ones
    when only rules need them. None when nothing does."""
    if raw is None:
        return Privacy(PiiDetector()) if _rules_need_detectors(rules) else None
    if not isinstance(raw, dict):
        raise ConfigError("privacy: must be a mapping")
    for key in raw:
        if key not in _PRIVACY_KEYS:
            raise ConfigError(f"privacy.{key}: unknown key; expected {', '.join(sorted(_PRIVACY_KEYS))}"
                              + _did_you_mean(key, _PRIVACY_KEYS))
    kinds = raw.get("kinds")
    if kinds is not None and (not isinstance(kinds, list) or not all(isinstance(k, str) for k in kinds)):
        raise ConfigError("privacy.kinds: must be a list of kind names")
    patterns = _named(raw, "patterns", lambda v: isinstance(v, str), "a regular expression")
    terms = _named(raw, "terms", lambda v: isinstance(v, list) and all(isinstance(w, str) for w in v),
                   "a list of words")
    try:
        detector = PiiDetector(kinds, list(patterns.items()), list(terms.items()))
    except ValueError as exc:
        raise ConfigError(f"privacy: {exc}") from None
    least = _number(raw, "min_confidence", "privacy.min_confidence")
    if least is not None and least > 1:
        raise ConfigError("privacy.min_confidence: must be between 0 and 1")
    redact = raw.get("redact", False)
    if redact is True:
        always: frozenset[str] | None = frozenset()
    elif redact is False:
        always = None
    elif isinstance(redact, list) and redact and all(isinstance(k, str) for k in redact):
        unknown = [k for k in redact if k not in detector.kinds]
        if unknown:
            raise ConfigError(f"privacy.redact: unknown kind {unknown[0]!r}; expected one of "
                              f"{', '.join(detector.kinds)}")
        always = frozenset(redact)
    else:
        raise ConfigError("privacy.redact: must be true, false or a list of kinds")
    return Privacy(detector, DEFAULT_MIN_CONFIDENCE if least is None else least, always)


def _rules_need_detectors(rules: Any) -> bool:
    """Whether some rule redacts or has a ``pii_*`` condition (a malformed list is the rule compiler's to word)."""
    for rule in rules if isinstance(rules, list) else ():
        if isinstance(rule, dict):
            route, when = rule.get("route"), rule.get("when")
            if (isinstance(route, dict) and route.get("redact")) or (
                    isinstance(when, dict) and ("pii_any" in when or "pii_count" in when)):
                return True
    return False


def _named(raw: dict[str, Any], key: str, valid: Any, what: str) -> dict[str, Any]:
    """A ``{kind name: definition}`` mapping of the privacy section, each definition checked by ``valid``."""
    value = raw.get(key) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"privacy.{key}: must be a mapping of kind name to {what}")
    for name, definition in value.items():
        if not isinstance(name, str) or not name or not valid(definition):
            raise ConfigError(f"privacy.{key}.{name}: must be {what}")
    return value


def _parse_rules(raw: Any, deployments: list[Deployment], privacy: Privacy | None,
                 warnings: list[str]) -> RuleSet | None:
    """Compile ``routing_rules`` once, at start-up: a rule that does not compile stops the gateway."""
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise ConfigError("routing_rules: must be a list of rules")
    try:
        rules = (RuleSet.compile(raw) if privacy is None
                 else RuleSet.compile(raw, privacy.detector, privacy.min_confidence))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    models = {d.model_name for d in deployments}
    tiers = {d.tier for d in deployments}
    for index, rule in enumerate(raw):
        route = rule.get("route") or {}
        where = f"routing_rules[{index}] {rule.get('name')!r}"
        if route.get("model") is not None and route["model"] not in models:
            raise ConfigError(f"{where}: route.model: {route['model']!r} is not a model_name in model_list")
        if route.get("tier") is not None and route["tier"] not in tiers:
            warnings.append(f"{where}: route.tier: no deployment has model_info.tier {route['tier']!r}")
    return rules


def _parse_router(router: dict[str, Any], litellm: dict[str, Any], models: set[str],
                  patterns: list[re.Pattern[str]], warnings: list[str]) -> RouterSettings:
    def setting(key: str) -> tuple[dict[str, Any], str]:
        section = router if key in router else litellm
        return section, f"{'router_settings' if section is router else 'litellm_settings'}.{key}"

    section, where = setting("num_retries")
    retries = _integer(section, "num_retries", where) or 0
    lists: dict[str, dict[str, list[str]]] = {}
    for kind in _FALLBACK_KINDS:
        section, where = setting(kind)
        lists[kind] = _fallbacks(section.get(kind), where, models, patterns, warnings)
    strategy = router.get("routing_strategy", "simple-shuffle")
    if strategy not in ROUTING_STRATEGIES:
        raise ConfigError(f"router_settings.routing_strategy: must be one of {', '.join(ROUTING_STRATEGIES)}")
    allowed = _integer(router, "allowed_fails", "router_settings.allowed_fails")
    cooldown = _number(router, "cooldown_time", "router_settings.cooldown_time")
    redis_url = _optional_secret(router, "redis_url", "router_settings.redis_url")
    host = _optional_secret(router, "redis_host", "router_settings.redis_host")
    if redis_url is None and host is not None:
        port = _integer(router, "redis_port", "router_settings.redis_port") or 6379
        redis_url = _redis_url(host, port, _optional_secret(router, "redis_password", "router_settings.redis_password"))
    if redis_url is not None and not redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError("router_settings.redis_url: must start with redis://, rediss:// or unix://")
    return RouterSettings(
        redis_url=redis_url,
        routing_strategy=strategy,
        num_retries=retries,
        retry_after=_number(router, "retry_after", "router_settings.retry_after") or 0.0,
        allowed_fails=3 if allowed is None else max(1, allowed),
        cooldown_time=5.0 if cooldown is None else cooldown,
        **lists,
    )


def _fallbacks(value: Any, where: str, models: set[str], patterns: list[re.Pattern[str]],
               warnings: list[str]) -> dict[str, list[str]]:
    """LiteLLM's shape: a list of one-key mappings, ``[{"gpt-4o": ["claude", "gemini"]}]``. A fallback may be a
    name a wildcard serves (``patterns``); the model falling back must be a model group. A name that is neither
    is left out with a warning, as LiteLLM starts with it too."""
    if value is None:
        return {}
    if not isinstance(value, list):
        raise ConfigError(f"{where}: must be a list like [{{model: [fallback, ...]}}]")
    out: dict[str, list[str]] = {}
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise ConfigError(f"{where}[{i}]: must be a mapping of a model to its fallbacks")
        for model, targets in item.items():
            targets = [targets] if isinstance(targets, str) else targets
            if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
                raise ConfigError(f"{where}[{i}].{model}: must be a list of model names")
            known = [t for t in targets if t in models or any(
                p.match(name) for name in wildcard_candidates(t) for p in patterns)]
            unknown = [name for name in (model, *targets) if name not in models and name not in known]
            if unknown:
                warnings.append(f"{where}[{i}].{model}: {', '.join(map(repr, unknown))} not a model_name in "
                                "model_list; left out")
            if model not in models:
                continue
            if known:
                out.setdefault(str(model), []).extend(known)
    return out


_ENTRY_KEYS = {"model_name", "litellm_params", "model_info", "rpm", "tpm"}


def _entry(entry: Any, where: str, warnings: list[str]) -> dict[str, Any]:
    """A ``model_list`` entry as a mapping with ``litellm_params``. One without them is served as the model its
    ``model_name`` names, with a warning: the name alone says what is meant (LiteLLM 1.108 stops at start on such
    an entry with a KeyError)."""
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: must be a mapping with model_name and litellm_params")
    for key in entry:
        if key not in _ENTRY_KEYS:
            warnings.append(_not_done(where, key, _ENTRY_KEYS))
    model_name = entry.get("model_name")
    if entry.get("litellm_params") is not None or not isinstance(model_name, str) or not model_name:
        return entry
    warnings.append(f"{where}: no litellm_params; served as model {model_name!r}")
    return {**entry, "litellm_params": {"model": model_name}}


def _wildcard_model(entry: dict[str, Any]) -> str | None:
    """For an entry whose ``model_name`` has a ``*``, the model its one check at start parses: its own, unless a
    ``*`` stands where the provider would be named (``model: "*"``: each request's provider is the one the requested
    name implies, as in LiteLLM); that is checked as OpenAI's. None for any other entry."""
    name, params = entry.get("model_name"), entry.get("litellm_params")
    if not isinstance(name, str) or "*" not in name or not isinstance(params, dict):
        return None
    model = params.get("model")
    if not isinstance(model, str) or not model:
        return None  # the check names what is missing
    per_request = "*" in model and "/" not in model.partition("*")[0]
    return f"openai/{model}" if per_request and not provider_of(model)[0] and not params.get("api_base") else model


def wildcard_deployment(wildcard: Wildcard, model: str) -> Deployment | None:
    """The deployment of ``wildcard`` that serves ``model`` (its ``litellm_params.model`` with the ``*`` filled
    in), priced from the registry like any configured model; None when no supported provider serves ``model``."""
    entry = {**wildcard.entry, "litellm_params": {**wildcard.entry["litellm_params"], "model": model}}
    try:
        deployment = _parse_deployment(entry, wildcard.model_name, [], wildcard.drop_params, wildcard.default_timeout,
                                       wildcard.table)
    except ConfigError:
        return None
    return None if deployment is None else replace(deployment, id=wildcard.id)


def _parse_deployment(
    entry: dict[str, Any], where: str, warnings: list[str], drop_params: bool, default_timeout: float | None,
    table: ModelTable, model: str | None = None,
) -> Deployment | None:
    """One deployment of ``entry``; ``model`` stands in for its ``litellm_params.model`` when given."""
    model_name = entry.get("model_name")
    if not isinstance(model_name, str) or not model_name:
        raise ConfigError(f"{where}.model_name: required, a non-empty string")
    params = entry.get("litellm_params")
    if not isinstance(params, dict):
        raise ConfigError(f"{where}.litellm_params: required, a mapping")
    info = entry.get("model_info") or {}
    if not isinstance(info, dict):
        raise ConfigError(f"{where}.model_info: must be a mapping")
    pwhere = f"{where}.litellm_params"
    iwhere = f"{where}.model_info"

    model = model or params.get("model")
    if not isinstance(model, str) or not model:
        raise ConfigError(f"{pwhere}.model: required, a string such as openai/gpt-4o-mini")
    provider, upstream_model = provider_of(model)
    api_base = _optional_secret(params, "api_base", f"{pwhere}.api_base")
    if not provider:
        prefix, _, rest = model.partition("/")
        if rest and prefix in litellm_names.PROVIDERS and prefix not in litellm_names.OPENAI_COMPATIBLE:
            # bedrock/, vertex_ai/, cohere/...: an api_base does not make their API OpenAI's.
            warnings.append(f"{pwhere}.model: provider {prefix!r} of {model!r} is not supported yet (its API is not "
                            f"OpenAI's); deployment of {model_name!r} skipped")
            return None
        if not api_base:
            warnings.append(
                f"{pwhere}.model: provider of {model!r} is not supported yet; deployment of {model_name!r} skipped"
            )
            return None
        provider = "openai_compatible"
        if rest and prefix in litellm_names.OPENAI_COMPATIBLE:
            upstream_model = rest  # LiteLLM sends fireworks_ai/<model> upstream as <model>
    defaults = REGISTRY[provider]
    api_base = (api_base or (os.environ.get(defaults.base_env) if defaults.base_env else None)
                or defaults.api_base or "").rstrip("/")
    if not api_base:
        raise ConfigError(f"{pwhere}.api_base: required for {model!r}")
    if not api_base.startswith(("http://", "https://")):
        raise ConfigError(f"{pwhere}.api_base: must start with http:// or https://")

    api_key = _optional_secret(params, "api_key", f"{pwhere}.api_key")
    if api_key is None and defaults.key_env:
        api_key = os.environ.get(defaults.key_env)
    api_version = _optional_secret(params, "api_version", f"{pwhere}.api_version")
    if api_version is None and defaults.api_version is not None:
        api_version = (os.environ.get(defaults.version_env) if defaults.version_env else None) or defaults.api_version
    flag = _flag(params, "drop_params", f"{pwhere}.drop_params")
    auto_prompt_cache = bool(_flag(params, "auto_prompt_cache", f"{pwhere}.auto_prompt_cache"))
    if auto_prompt_cache and "prompt_caching" not in defaults.capabilities:
        warnings.append(f"{pwhere}.auto_prompt_cache: {provider} takes no cache_control breakpoints (OpenAI and "
                        "Gemini cache prefixes on their own); ignored")
        auto_prompt_cache = False

    for key in params:
        if key in _LITELLM_PARAMS_DONE:
            continue
        if key in _LITELLM_PARAMS_LATER:
            warnings.append(f"{pwhere}.{key}: {_LITELLM_PARAMS_LATER[key]}")
        else:
            warnings.append(_not_done(pwhere, key, _LITELLM_PARAMS_DONE))
    for key in info:
        if key not in _MODEL_INFO_DONE:
            warnings.append(_not_done(iwhere, key, _MODEL_INFO_DONE))

    timeout = _number(params, "timeout", f"{pwhere}.timeout", positive=True) or default_timeout or DEFAULT_TIMEOUT_S
    stream_timeout = _number(params, "stream_timeout", f"{pwhere}.stream_timeout", positive=True) or timeout
    weight = _number(params, "weight", f"{pwhere}.weight", positive=True) or 1.0
    # LiteLLM also reads rpm and tpm beside litellm_params, on the entry itself.
    rpm = _integer(params, "rpm", f"{pwhere}.rpm") or _integer(entry, "rpm", f"{where}.rpm")
    tpm = _integer(params, "tpm", f"{pwhere}.tpm") or _integer(entry, "tpm", f"{where}.tpm")

    mode = info.get("mode", "chat")
    if mode not in _MODEL_INFO_MODES:
        raise ConfigError(f"{iwhere}.mode: must be one of {', '.join(sorted(_MODEL_INFO_MODES))}")
    dep_id = info.get("id")
    if dep_id is not None and (not isinstance(dep_id, (str, int)) or isinstance(dep_id, bool)):
        raise ConfigError(f"{iwhere}.id: must be a string")
    if dep_id is None:
        # Stable across restarts and instances so logs and headers can be joined.
        digest = hashlib.sha256(f"{model_name}\0{model}\0{api_base}".encode()).hexdigest()
        dep_id = f"dep-{digest[:12]}"

    # Shipped defaults for known models (the host's own price first) fill what model_info leaves out. The context
    # window is not defaulted: a pre-call rejection must come from a limit the operator chose, not from an estimate.
    shipped = table.lookup(model)
    prices = _prices(params, info, pwhere, iwhere)
    batch_discount = _number(info, "batch_discount", f"{iwhere}.batch_discount")
    if batch_discount is not None and batch_discount >= 1:
        raise ConfigError(f"{iwhere}.batch_discount: the fraction taken off the price, below 1 (0.5: half price)")
    if batch_discount is None and shipped is not None:
        batch_discount = shipped.batch_discount
    strengths = info.get("strengths")
    if strengths is not None and (not isinstance(strengths, list) or not all(isinstance(x, str) for x in strengths)):
        raise ConfigError(f"{iwhere}.strengths: must be a list of tags such as code, math, long-context")
    if shipped is not None:
        for key in _PRICE_KEYS:
            if prices[key] is None:
                prices[key] = getattr(shipped, key)
        strengths = list(shipped.strengths) if strengths is None else strengths
    return Deployment(
        model_name=model_name,
        provider=provider,
        upstream_model=upstream_model,
        api_base=api_base,
        api_key=api_key,
        api_version=api_version,
        drop_params=drop_params if flag is None else flag,
        id=str(dep_id),
        timeout=timeout,
        stream_timeout=stream_timeout,
        weight=weight,
        mode=mode,
        input_cost_per_token=prices["input_cost_per_token"],
        output_cost_per_token=prices["output_cost_per_token"],
        cache_read_cost_per_token=prices["cache_read_input_token_cost"],
        cache_write_cost_per_token=prices["cache_creation_input_token_cost"],
        max_input_tokens=_integer(info, "max_input_tokens", f"{iwhere}.max_input_tokens"),
        tier=_tier(info, iwhere) or (shipped.tier if shipped is not None else None),
        strengths=tuple(strengths or ()),
        rpm=rpm,
        tpm=tpm,
        auto_prompt_cache=auto_prompt_cache,
        batch_discount=batch_discount,
        local=_trusted(info, iwhere, "local" in defaults.capabilities),
        json_output="json_output" in defaults.capabilities,
    )


def _price_table(path: Any, warnings: list[str]) -> ModelTable:
    """The shipped price table, with ``general_settings.price_file`` (mmproxy's or LiteLLM's shape) over it."""
    if path is None:
        return shipped()
    if not isinstance(path, str) or not path:
        raise ConfigError("general_settings.price_file: must be the path of a price file")
    try:
        document = price_files.read(path)
    except OSError as exc:
        raise ConfigError(f"general_settings.price_file: cannot read {path}: {exc.strerror}") from None
    except price_files.PriceFileError as exc:
        raise ConfigError(f"general_settings.price_file: {path}: {exc}") from None
    warnings.extend(f"general_settings.price_file: {warning}" for warning in document.warnings)
    return shipped().overlaid([entries(document.as_json())])


def _prices(params: dict[str, Any], info: dict[str, Any], pwhere: str, iwhere: str) -> dict[str, float | None]:
    """Per-token prices; ``model_info`` wins over ``litellm_params`` (LiteLLM accepts both places)."""
    prices: dict[str, float | None] = {}
    for key in _PRICE_KEYS:
        value = _number(info, key, f"{iwhere}.{key}")
        prices[key] = _number(params, key, f"{pwhere}.{key}") if value is None else value
    return prices


def _redis_url(host: str, port: int, password: str | None) -> str:
    """LiteLLM's separate host/port/password keys as one URL (the password quoted)."""
    auth = f":{quote(password, safe='')}@" if password else ""
    return f"redis://{auth}{host}:{port}/0"


def _mapping(raw: dict[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: must be a mapping")
    return value


def _did_you_mean(key: object, known: Collection[str]) -> str:
    close = difflib.get_close_matches(str(key), list(known), n=1, cutoff=0.8)
    return f"; did you mean {close[0]!r}?" if close else ""


# LiteLLM keys close enough to one mmproxy reads to pass for its misspelling (callbacks ~ fallbacks).
_LITELLM_LOOKALIKES = frozenset({"callbacks"})


def _not_done(where: str, key: object, known: Collection[str], litellm: Collection[str] | None = None) -> str:
    """The warning for a key mmproxy does not read: a likely misspelling of one it does; one LiteLLM reads (any,
    when ``litellm``, LiteLLM's own keys of the section, is not given) is not implemented yet; any other is
    unknown."""
    hint = "" if key in _LITELLM_LOOKALIKES else _did_you_mean(key, known)
    if hint or (litellm is not None and key not in litellm):
        return f"{where}.{key}: unknown key, ignored{hint}"
    return f"{where}.{key}: not implemented yet, ignored"


def _environment_references(raw: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """Every ``os.environ/VAR`` under a key mmproxy reads, with where it is: so all missing variables are named at
    once. Keys it ignores are left alone, as LiteLLM would read them only when their feature runs."""
    sections: list[tuple[str, Any, Collection[str]]] = [
        ("general_settings", raw.get("general_settings"), _GENERAL_DONE),
        ("router_settings", raw.get("router_settings"), _ROUTER_SETTINGS_DONE)]
    litellm = raw.get("litellm_settings")
    if isinstance(litellm, dict):
        sections.append(("litellm_settings.cache_params", litellm.get("cache_params"), _CACHE_PARAMS_DONE))
    models = raw.get("model_list")
    for index, entry in enumerate(models if isinstance(models, list) else ()):
        if isinstance(entry, dict):
            sections.append((f"model_list[{index}].litellm_params", entry.get("litellm_params"),
                             _LITELLM_PARAMS_DONE))
    for where, section, known in sections:
        if isinstance(section, dict):
            for key, value in section.items():
                if key in known and isinstance(value, str) and value.startswith("os.environ/"):
                    yield value.removeprefix("os.environ/"), f"{where}.{key}"


def _optional_secret(section: dict[str, Any], key: str, where: str) -> str | None:
    """A string value that may be LiteLLM's ``os.environ/VAR`` indirection (keys, URLs)."""
    value = section.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{where}: must be a string")
    if value.startswith("os.environ/"):
        var = value.removeprefix("os.environ/")
        resolved = os.environ.get(var)
        if resolved is None:
            raise ConfigError(f"{where}: environment variable {var} is not set")
        return resolved
    return value


def _tier(info: dict[str, Any], where: str) -> str | None:
    tier = info.get("tier")
    if tier is not None and tier not in TIERS:
        raise ConfigError(f"{where}.tier: must be one of {', '.join(TIERS)}")
    return tier


def _trusted(info: dict[str, Any], where: str, local_provider: bool) -> bool:
    """Whether a deployment is inside the trust boundary: ``model_info.trusted`` (a self-hosted vLLM, an on-prem
    Azure), else whether its provider runs models locally."""
    trusted = _flag(info, "trusted", f"{where}.trusted")
    return local_provider if trusted is None else trusted


def _flag(section: dict[str, Any], key: str, where: str) -> bool | None:
    value = section.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise ConfigError(f"{where}: must be true or false")


def _number(section: dict[str, Any], key: str, where: str, *, positive: bool = False) -> float | None:
    value = section.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ConfigError(f"{where}: must be a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: must be a number")
    if value < 0 or (positive and value == 0):
        raise ConfigError(f"{where}: must be {'positive' if positive else 'non-negative'}")
    return float(value)


def _integer(section: dict[str, Any], key: str, where: str) -> int | None:
    value = _number(section, key, where)
    if value is None:
        return None
    if value != int(value):
        raise ConfigError(f"{where}: must be a whole number")
    return int(value)
