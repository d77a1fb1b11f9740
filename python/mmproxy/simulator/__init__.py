"""Provider simulator: a fake LLM upstream for mmproxy's tests, benchmarks and demo.

Wire formats, one module each: OpenAI (``openai``: chat, embeddings, models; ``batches``: Files and Batch),
Anthropic (``anthropic``: Messages; ``anthropic_batches``: Message Batches), Gemini (``gemini``: generateContent,
streaming, embeddings; ``gemini_batches``: batch mode) and Ollama (``ollama``). Batches are due ``batch_ms``
after creation and answered at the first read after that, by the same builders as the plain endpoints.

Behaviour comes from knobs (``Knobs``): server defaults from CLI flags or keyword options, per-model
overrides (``--model-knobs`` / ``POST /_sim/config``), and per request from an optional top-level
``"sim"`` object in the JSON body (a gateway forwards unknown body fields but not arbitrary headers):

    "sim": {"latency_ms": 0, "ttft_ms": 0, "chunk_delay_ms": 0, "tokens_per_s": 0, "chunks": 20,
            "tokens": 20, "embedding_dims": 256, "fault": "429[:secs]|500|502|503|400|400_context|401|404|
            timeout[:ms]|slow[:ms]|cut[:events]|hang|bad_json", "fault_rate": 1.0, "retry_after": 1,
            "fault_ms": 10000, "cut_after": 3, "content": "fixed text", "echo": false}

Fault precedence: ``sim.fault`` (``null`` = none) > a scripted ``POST /_sim/faults`` rule > the
configured ``fault``/``fault_rate``. Control API: ``/_sim/{faults,requests,stats,config,reset,health}``.
Token rule: prompt = ceil(len(compact sorted-key JSON of messages [+ tools]) / 4); completion = words.
"""

from .behaviour import Fault, KnobError, Knobs
from .cli import add_arguments, build_parser, main, run
from .control import SimConfig, SimState
from .server import SimApp, Simulator, ThreadedSimulator, make_config, run_in_thread, start_simulator

__all__ = [
    "Fault",
    "KnobError",
    "Knobs",
    "SimApp",
    "SimConfig",
    "SimState",
    "Simulator",
    "ThreadedSimulator",
    "add_arguments",
    "build_parser",
    "main",
    "make_config",
    "run",
    "run_in_thread",
    "start_simulator",
]
