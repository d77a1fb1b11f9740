"""``mmproxy bench`` output: the text tables, the JSON document and the HTML/PNG report.

Every table is built once as rows (``Table``) and rendered as text for the terminal or as HTML for the
report, so both always show the same figures.  The plots need matplotlib, imported only when a report is
asked for (``pip install 'mmproxy[eval]'``).
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmproxy.bench.figures import DISTRIBUTIONS, QUANTILES, Load

if TYPE_CHECKING:
    from matplotlib.figure import Figure

STAT_COLUMNS = (*(f"p{q}" for q in QUANTILES), "max", "mean")
RATIO_ROWS = (("req/s", "req_s", None), *((f"latency {c}", "latency_ms", c) for c in ("p50", "p90", "p99")),
              *((f"TTFT {c}", "ttft_ms", c) for c in ("p50", "p99")))


@dataclass
class Run:
    """One target at one load: its figures (rounds merged) and, for the latency CDF, every latency."""

    target: str
    load: Load
    figures: dict[str, Any]
    latencies_ms: list[float]
    probe: bool = False  # the concurrency probe of a rate sweep

    @property
    def label(self) -> str:
        return f"{self.target} {self.load.label}" + (" (probe)" if self.probe else "")


@dataclass
class Table:
    title: str
    header: tuple[str, ...]
    rows: Sequence[tuple[str, ...]]

    def text(self) -> str:
        widths = [max(len(r[i]) for r in (self.header, *self.rows)) for i in range(len(self.header))]
        lines = [self.title]
        for row in (self.header, *self.rows):
            lines.append("  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in
                                   enumerate(zip(row, widths, strict=True))).rstrip())
        return "\n".join(lines)

    def html(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in self.rows)
        return f"<h3>{html.escape(self.title)}</h3><table><tr>{head}</tr>{body}</table>"


def number(value: float | None) -> str:
    """A figure for a table: 3 significant digits below 100, thousands separators above."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if abs(value) >= 1 else f"{value:.3f}"


def run_table(run: Run) -> Table:
    """One run's percentile table, under a title with its throughput, errors and the client's own cost."""
    f = run.figures
    errors = ", ".join(f"{k} {v}" for k, v in f["errors_by_class"].items()) or "none"
    elapsed = f"{f['elapsed_s']:.1f}" if f["elapsed_s"] >= 1 else number(f["elapsed_s"])
    title = (f"{run.label}: {f['requests']:,} ok in {elapsed} s = {number(f['req_s'])} req/s, "
             f"{number(f['output_tokens_per_s'])} output tok/s; errors: {errors}")
    if f["dropped"]:
        title += f"; {f['dropped']:,} arrivals dropped at the in-flight cap"
    if not f["requests"] and f["unfinished"]:
        title += f"; {f['unfinished']:,} still unanswered when the window closed"
    if f["client_cpu_us_per_req"] is not None:
        title += f"; client CPU {number(f['client_cpu_us_per_req'])} µs/req"
    rows = [(label, *(number(f[key][c]) for c in STAT_COLUMNS)) for key, label in DISTRIBUTIONS.items() if f[key]]
    return Table(title, ("", *STAT_COLUMNS), rows)


def load_table(runs: list[Run]) -> Table:
    """One row per run: how throughput and latency move with the load (sweeps and --rate lists)."""
    rows = []
    for run in runs:
        f = run.figures
        ttft = f["ttft_ms"] or {}
        rows.append((run.label, number(f["req_s"]), number(f["output_tokens_per_s"]),
                     number(f["latency_ms"]["p50"] if f["latency_ms"] else None),
                     number(f["latency_ms"]["p99"] if f["latency_ms"] else None),
                     number(ttft.get("p50")), number(ttft.get("p99")), str(f["errors"])))
    return Table("By load", ("run", "req/s", "out tok/s", "p50 ms", "p99 ms", "TTFT p50", "TTFT p99", "errors"), rows)


def _compared(a: Run, b: Run) -> list[tuple[str, float | None, float | None]]:
    """(label, A's value, B's value) for each compared figure."""
    def value(run: Run, key: str, stat: str | None) -> float | None:
        return run.figures[key] if stat is None else (run.figures[key] or {}).get(stat)

    return [(label, value(a, key, stat), value(b, key, stat)) for label, key, stat in RATIO_ROWS]


def ratios(a: Run, b: Run) -> dict[str, float | None]:
    """B ÷ A for throughput and latency percentiles (None where either side has no figure)."""
    return {label: vb / va if va and vb is not None else None for label, va, vb in _compared(a, b)}


def compare_pairs(runs: list[Run]) -> list[tuple[Run, Run, dict[str, float | None]]]:
    """With two targets, A's and B's run at each load and B ÷ A of their figures (nothing with one target)."""
    by_key = {(r.target, r.load): r for r in runs}
    loads = dict.fromkeys(r.load for r in runs)
    return [(a, b, ratios(a, b)) for load in loads
            if (a := by_key.get(("A", load))) is not None and (b := by_key.get(("B", load))) is not None]


def ratio_table(a: Run, b: Run, values: dict[str, float | None], urls: dict[str, str]) -> Table:
    rows = []
    for label, va, vb in _compared(a, b):
        ratio = values[label]
        rows.append((label, number(va), number(vb), "-" if ratio is None else f"{ratio:.2f}x"))
    title = f"Compare at {a.load.label}: B ÷ A (A: {urls[a.target]}, B: {urls[b.target]})"
    return Table(title, ("", a.target, b.target, "B/A"), rows)


def tables(runs: list[Run], pairs: list[tuple[Run, Run, dict[str, float | None]]], urls: dict[str, str]
           ) -> list[Table]:
    """Everything the terminal and the HTML report show, in order (``urls``: each target's, by name)."""
    out = [run_table(run) for run in runs]
    if len({run.load for run in runs}) > 1:
        out.append(load_table(runs))
    out += [ratio_table(a, b, values, urls) for a, b, values in pairs]
    return out


# -- plots ------------------------------------------------------------------------------------------------------
def _pyplot() -> tuple[Any, Any]:
    """pyplot (headless) and matplotlib.ticker, or a ValueError naming the extra to install."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib import ticker
    except ImportError:
        raise ValueError("--report needs matplotlib: pip install 'mmproxy[eval]'") from None
    return plt, ticker


def require_plotting(path: Path) -> None:
    """Fail before any load is sent when ``path`` is not a report this can write (ValueError says why)."""
    if path.suffix.lower() not in (".png", ".html"):
        raise ValueError("--report must name a .png or .html file")
    _pyplot()


def figure(runs: list[Run]) -> Figure:
    """Latency CDF of every run; with several loads, throughput and TTFT (or latency) against the load."""
    plt, ticker = _pyplot()
    swept = [r for r in runs if not r.probe]
    by_load = len({r.load for r in swept}) > 1
    fig, axes = plt.subplots(1, 3 if by_load else 1, figsize=(15 if by_load else 6, 4.2), squeeze=False)
    cdf = axes[0][0]
    for run in runs:
        values = sorted(run.latencies_ms)
        if values:
            cdf.plot(values, [(i + 1) / len(values) for i in range(len(values))], label=run.label)
    every = [v for run in runs for v in run.latencies_ms if v > 0]
    wide = bool(every) and max(every) > 50 * min(every)  # a log axis only where a linear one would hide the fast end
    cdf.set(xlabel="latency (ms, log scale)" if wide else "latency (ms)", ylabel="share of requests",
            title="Latency CDF")
    if wide:
        cdf.set_xscale("log")
        cdf.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    cdf.grid(alpha=0.3)
    cdf.legend(fontsize=7)
    if by_load:
        for target in dict.fromkeys(r.target for r in swept):
            points = [r for r in swept if r.target == target]
            asked = [r.load.rate if r.load.rate is not None else r.load.concurrency for r in points]
            axes[0][1].plot(asked, [r.figures["req_s"] for r in points], marker="o", label=target)
            key = "ttft_ms" if all(r.figures["ttft_ms"] for r in points) else "latency_ms"
            axes[0][2].plot(asked, [(r.figures[key] or {}).get("p50", math.nan) for r in points], marker="o",
                            label=f"{target} p50")
            axes[0][2].plot(asked, [(r.figures[key] or {}).get("p99", math.nan) for r in points], marker="x",
                            linestyle="--", label=f"{target} p99")
            axes[0][2].set(title="TTFT against load" if key == "ttft_ms" else "Latency against load",
                           ylabel="ms")
        rated = any(r.load.rate for r in swept)
        load_name = "asked rate (req/s)" if rated else "concurrency"
        if rated:
            top = max(r.load.rate or 0.0 for r in swept)
            axes[0][1].plot([0, top], [0, top], color="grey", linestyle=":", label="asked")
        axes[0][1].set(xlabel=load_name, ylabel="completed req/s", title="Throughput against load")
        axes[0][2].set(xlabel=load_name)
        for ax in axes[0][1:]:
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def png_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    _pyplot()[0].close(fig)
    return buf.getvalue()


def write_report(path: Path, runs: list[Run], all_tables: list[Table], title: str) -> None:
    """A PNG of the plots, or (``.html``) a self-contained page: the PNG inline as base64 and the tables."""
    image = png_bytes(figure(runs))
    if path.suffix.lower() == ".png":
        path.write_bytes(image)
        return
    encoded = base64.b64encode(image).decode()
    body = "".join(t.html() for t in all_tables)
    path.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:1em}"
        "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}td:first-child{text-align:left}"
        f"</style></head><body><h1>{html.escape(title)}</h1>"
        f"<img alt='latency CDF and load curves' src='data:image/png;base64,{encoded}'>{body}</body></html>",
        encoding="utf-8",
    )
