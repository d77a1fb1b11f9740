"""Regenerate the shipped ``data/prices.json`` from LiteLLM's price list (a maintainer's step, not run by the gateway).

    pip download litellm==VERSION --no-deps -d /tmp/litellm-wheel
    unzip -j /tmp/litellm-wheel/litellm-*.whl litellm/model_prices_and_context_window_backup.json -d /tmp/litellm-wheel
    python -m mmproxy.prices.update /tmp/litellm-wheel/model_prices_and_context_window_backup.json --litellm VERSION

The prices are facts, LiteLLM's file is MIT-licensed; the shipped file keeps the providers a config can name
(their own prefixes, and the OpenAI-compatible hosts reached with an ``api_base``), chat and embedding models only.
"""

from __future__ import annotations

import argparse
import datetime
import json
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from mmproxy.prices.files import dumps, from_litellm

SHIPPED_PROVIDERS = frozenset({
    "openai", "azure", "anthropic", "gemini", "ollama", "mistral", "codestral", "deepseek", "xai",  # own prefixes
    "groq", "together_ai", "openrouter", "fireworks_ai", "fireworks_ai-embedding-models", "perplexity", "deepinfra",
    "cerebras", "sambanova", "nebius", "novita", "hyperbolic", "lambda_ai", "moonshot", "zai",
})
"""LiteLLM ``litellm_provider`` values kept."""

_BARE_KEYED = frozenset({"openai", "anthropic", "deepseek"})
"""Providers LiteLLM keys by the bare model id; other bare keys are its size-bucket price classes
(``together-ai-8.1b-21b``), which no config names."""


def is_shipped(name: str, spec: Mapping[str, Any]) -> bool:
    """Whether LiteLLM's entry ``name`` goes into the shipped table."""
    provider = spec.get("litellm_provider")
    return provider in SHIPPED_PROVIDERS and ("/" in name or provider in _BARE_KEYED)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mmproxy.prices.update", description=__doc__.split("\n")[0])
    parser.add_argument("litellm_json", help="LiteLLM's model_prices_and_context_window(_backup).json")
    parser.add_argument("--litellm", required=True, help="the litellm version the file comes from")
    parser.add_argument("--read", default=datetime.date.today().isoformat(), help="date read (default today)")
    parser.add_argument("--out", default=str(resources.files("mmproxy").joinpath("data/prices.json")))
    args = parser.parse_args(argv)
    raw = json.loads(Path(args.litellm_json).read_text(encoding="utf-8"))
    source = f"LiteLLM model_prices_and_context_window.json (litellm {args.litellm})"
    document = from_litellm(raw, source, args.read, keep=is_shipped)
    Path(args.out).write_text(dumps(document), encoding="utf-8")
    print(f"{args.out}: {len(document.models)} models")


if __name__ == "__main__":
    main()
