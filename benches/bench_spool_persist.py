"""What it costs that an answer never leaves before its ledger row is on disk: the two ways compared.

A request's row goes to the ledger's spool (``mmproxy.spend.spool``), which writes a turn of the event loop's rows
at the turn's end. An answer must not leave before that write (a SIGKILL in between loses a row already answered),
so either the handler yields once before answering (the write then goes first), or it writes what is buffered itself
(``Ledger.persist``). Here 64 concurrent "requests" each spool a realistic row and take one turn, as a gateway's do;
CPU per request for: neither (the floor, unsafe), the yield, the write.

    python benches/bench_spool_persist.py
"""

import asyncio
import tempfile
import time
from pathlib import Path

import uvloop

from mmproxy.spend.spool import Spool

ROW = ("req-000000000001", 1796650000.123, "chat", "ab" * 32, "alias", None, "gpt-4o-mini", "gpt-4o-mini", "dep-1",
       "openai", "economy", None, False, 182, 96, 0, 0, 0.0000849, 0.0, "miss", 812.5, 211.0, 0.31, 200, None, 0, 0,
       None, None, None)


async def _per_request_us(mode: str, n: int = 200_000, concurrency: int = 64) -> float:
    spool = Spool(Path(tempfile.mkdtemp()), "bench")
    done = 0

    async def request() -> None:
        nonlocal done
        while done < n:
            done += 1
            spool.append(ROW)
            if mode == "yield":
                await asyncio.sleep(0)
            elif mode == "write":
                spool.write()
            await asyncio.sleep(0)  # the request's own awaits: one turn per request in every mode

    began = time.process_time()
    await asyncio.gather(*(request() for _ in range(concurrency)))
    spool.close()
    return (time.process_time() - began) / n * 1e6


def main() -> None:
    print("| round | neither (unsafe), µs | yield, µs | write (Ledger.persist), µs |")
    print("|---|---|---|---|")
    for round_ in range(1, 4):
        figures = [uvloop.run(_per_request_us(mode)) for mode in ("none", "yield", "write")]
        print(f"| {round_} | " + " | ".join(f"{f:.2f}" for f in figures) + " |")


if __name__ == "__main__":
    main()
