"""The gateway the fuzz tests share (the simulator behind it, a master key, the SQLite ledger on: the default),
and IEEE floats for Hypothesis."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from collections.abc import Iterator

import pytest

from tests.conftest import MASTER_KEY, UPSTREAM_KEY, Process, start_gateway

CHAT_MODELS = ["gpt-4o", "claude"]


@pytest.fixture(scope="package")
def fuzz_gateway(simulator: Process, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    base = f"{simulator.url}/v1"
    config = {
        "model_list": [
            {"model_name": "gpt-4o", "litellm_params": {"model": "openai/sim-frontier", "api_base": base,
                                                        "api_key": UPSTREAM_KEY},
             "model_info": {"input_cost_per_token": 2.5e-06, "output_cost_per_token": 1e-05}},
            {"model_name": "claude", "litellm_params": {"model": "anthropic/sim-claude", "api_base": simulator.url,
                                                        "api_key": UPSTREAM_KEY}},
            {"model_name": "embed", "litellm_params": {"model": "openai/sim-embed", "api_base": base,
                                                       "api_key": UPSTREAM_KEY}, "model_info": {"mode": "embedding"}},
        ],
        "general_settings": {"master_key": MASTER_KEY},
        "router_settings": {"cooldown_time": 0},
    }
    process = start_gateway(tmp_path_factory.mktemp("fuzz"), config)
    yield process
    process.stop()


@pytest.fixture(autouse=True)
def ieee_floats() -> None:
    """Subnormal floats as IEEE 754 defines them, which Hypothesis generates (and refuses to without): an
    in-process ONNX Runtime session with ``session.set_denormal_as_zero`` (the cache tests' embedder) leaves this
    thread flushing them to zero. glibc's ``fesetenv(FE_DFL_ENV)`` puts the default environment back."""
    if sys.float_info.min / 2 == 0.0:
        libm = ctypes.CDLL(ctypes.util.find_library("m"))
        libm.fesetenv(ctypes.c_void_p(-1))  # FE_DFL_ENV is ((const fenv_t *) -1)
    assert sys.float_info.min / 2 > 0.0
