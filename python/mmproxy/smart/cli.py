"""``mmproxy router train|eval`` and ``mmproxy cascade fit``: learned routing from routing records, offline."""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import orjson

if TYPE_CHECKING:
    from mmproxy.smart.evaluate import TaskReport
    from mmproxy.smart.model import QualityModel
    from mmproxy.smart.records import Price, Record

SHIPPED = Path(str(resources.files("mmproxy"))) / "data" / "smart"
SHIPPED_ROUTER = SHIPPED / "router.npz"
SHIPPED_CASCADE = SHIPPED / "cascade.npz"


class ProgressEmbedder:
    """The local embedder, fed in slices so a long run shows how far it is (on stderr)."""

    def __init__(self, label: str) -> None:
        from mmproxy.cache.embedder import LocalEmbedder

        self._inner = LocalEmbedder()
        self.dim = self._inner.dim
        self._label = label

    def embed(self, texts: list[str]) -> np.ndarray:
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        step = 256
        for start in range(0, len(texts), step):
            out[start:start + step] = self._inner.embed(texts[start:start + step])
            if len(texts) > step:
                progress(self._label, min(start + step, len(texts)), len(texts))
        return out


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    router = commands.add_parser("router", help="train and evaluate the learned router on routing records")
    actions = router.add_subparsers(dest="action", required=True)
    train = actions.add_parser("train", help="fit the router's quality model on a records file, or extend a model "
                               "with the gateway's own rated traffic")
    _records_args(train, required=False)
    train.add_argument("--candidates", nargs="+", help="record model names to route between (default: all)")
    train.add_argument("--base", help="extend this router model with rated requests from --ledger (no --records)")
    train.add_argument("--ledger", help="the gateway's database_url (default: ./mmproxy.db, the gateway's default)")
    train.add_argument("--router", help="with --base: the learned router's model_name in the gateway config")
    train.add_argument("--out", required=True, help="model file to write (.npz)")
    train.add_argument("--l2", type=float, default=10.0, help="logistic regression's L2 penalty (default 10)")
    train.add_argument("--k", type=int, default=30, help="neighbours per prediction (default 30)")

    evaluate = actions.add_parser("eval", help="score routing policies on a records file, offline")
    evaluate.add_argument("records", help="routing records (JSON lines)")
    evaluate.add_argument("--prices", help="models.json with per-1M prices (default: those stored in the model)")
    evaluate.add_argument("--part", choices=("all", "fit", "check"), default="all",
                          help="score only one part of the split by prompt id (default all)")
    evaluate.add_argument("--split", type=float, default=0.7, help="share of prompts in the fit part (0.7)")
    evaluate.add_argument("--model", default=str(SHIPPED_ROUTER), help="router model (default: the shipped one)")
    evaluate.add_argument("--cascade", default=str(SHIPPED_CASCADE), help="cascade file (default: shipped; "
                          "'none' to skip)")
    point = evaluate.add_mutually_exclusive_group()
    point.add_argument("--strong-share", type=float, help="operating point: share of calls to the strongest "
                       "model (default 0.5)")
    point.add_argument("--cost-weight", type=float, help="operating point: λ, quality one strongest call is worth")
    point.add_argument("--min-quality", type=float, help="operating point: cheapest model predicted to reach this")
    evaluate.add_argument("--gateway", metavar="URL", help="also send every record to a running gateway (its "
                          "upstreams `mmproxy simulate --replay` of the same records) and score what it did")
    evaluate.add_argument("--gateway-model", default="smart", help="the virtual model asked (default smart)")
    evaluate.add_argument("--api-key", help="the gateway key (default: $MMPROXY_API_KEY)")
    evaluate.add_argument("--json", action="store_true", help="print the table as JSON")
    evaluate.add_argument("--plot", help="write a cost-quality PNG here")

    verify = commands.add_parser("verify", help="evaluate agreement-based acceptance (consensus) on records")
    verify_actions = verify.add_subparsers(dest="action", required=True)
    agreement = verify_actions.add_parser("eval", help="selective accuracy against coverage, and the cost")
    agreement.add_argument("records", help="routing records (JSON lines) where several models answered")
    agreement.add_argument("--prices", required=True, help="models.json with per-1M prices of the record models")
    agreement.add_argument("--members", nargs="+", required=True, help="record model names asked together")
    agreement.add_argument("--min-agreement", type=float, default=1.0,
                           help="share of answers that must agree with the majority (default 1.0: all)")
    agreement.add_argument("--gateway", metavar="URL", help="also send every record to a running gateway's "
                           "consensus model (its members on `mmproxy simulate --replay` of the same records)")
    agreement.add_argument("--gateway-model", default="agreed", help="the consensus model asked (default agreed)")
    agreement.add_argument("--api-key", help="the gateway key (default: $MMPROXY_API_KEY)")
    agreement.add_argument("--json", action="store_true", help="print the table as JSON")

    cascade = commands.add_parser("cascade", help="fit a cascade's scorers and thresholds")
    cascade_actions = cascade.add_subparsers(dest="action", required=True)
    fit = cascade_actions.add_parser("fit", help="fit scorers and choose stage thresholds on a records file")
    _records_args(fit)
    fit.add_argument("--stages", nargs="+", required=True, help="record model names, cheapest first")
    fit.add_argument("--model", default=str(SHIPPED_ROUTER), help="router model giving each stage's prior")
    fit.add_argument("--out", required=True, help="cascade file to write (.npz)")
    goal = fit.add_mutually_exclusive_group()
    goal.add_argument("--quality", type=float, help="quality to reach at least cost (default: last stage's)")
    goal.add_argument("--budget", type=float, help="best quality within this share of the last stage's cost")


def _records_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--records", required=required, help="routing records (JSON lines)")
    parser.add_argument("--prices", required=required, help="models.json with per-1M prices of the record models")
    parser.add_argument("--part", choices=("all", "fit"), default="all",
                        help="train on all records or only the fit part of the split by prompt id (default all)")
    parser.add_argument("--split", type=float, default=0.7, help="share of prompts in the fit part (0.7)")


def run(args: argparse.Namespace) -> None:
    from mmproxy.smart.records import RecordsError

    try:
        if args.command == "router" and args.action == "train":
            _train(args)
        elif args.command == "router":
            _evaluate(args)
        elif args.command == "verify":
            _evaluate_agreement(args)
        else:
            _fit_cascade(args)
    except (RecordsError, ValueError, OSError) as exc:
        print(f"mmproxy: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _part(records: list[Record], part: str, share: float) -> list[Record]:
    from mmproxy.smart.records import split

    if part == "all":
        return records
    fit, check = split(records, share)
    return fit if part == "fit" else check


def _provenance(args: argparse.Namespace, records: list[Record]) -> dict[str, object]:
    return {"records": Path(args.records).name, "part": args.part, "split": args.split, "rows": len(records)}


def _train(args: argparse.Namespace) -> None:
    from mmproxy.smart.records import load_prices, load_records
    from mmproxy.smart.train import train_router

    if args.base:
        _extend(args)
        return
    if not args.records or not args.prices:
        raise ValueError("router train needs --records and --prices (or --base, --router and --ledger)")

    records = _part(load_records(args.records), args.part, args.split)
    prices = load_prices(args.prices)
    candidates = args.candidates or sorted({name for r in records for name in r.models})
    missing = [c for c in candidates if c not in prices]
    if missing:
        raise ValueError(f"--prices has no price for {', '.join(missing)}")
    model = train_router(records, candidates, ProgressEmbedder("embedding prompts"), prices, l2=args.l2, k=args.k,
                         meta=_provenance(args, records))
    model.save(args.out)
    print(f"router model for {', '.join(candidates)} trained on {len(records)} records: {args.out}")


def _extend(args: argparse.Namespace) -> None:
    """The base model's training set plus the router's rated requests from the ledger, refitted."""
    import asyncio

    from mmproxy.db import open_database
    from mmproxy.smart.feedback import rated_rows
    from mmproxy.smart.model import QualityModel
    from mmproxy.smart.records import load_prices
    from mmproxy.smart.train import fit_router

    if not args.router:
        raise ValueError("--base needs --router: the learned router's model_name")
    base = QualityModel.load(args.base)

    async def read() -> list[dict[str, object]]:
        db = open_database(args.ledger, Path("mmproxy.db").resolve())
        await db.start()
        try:
            return await db.rated_decisions(args.router, 1_000_000)
        finally:
            await db.close()

    rated = rated_rows(asyncio.run(read()), base.candidates, base.data.vectors.shape[1])
    if rated is None:
        raise ValueError(f"the ledger holds no rated request of {args.router!r} with prompt features: give the "
                         "router learn: true and send scores to /v1/feedback")
    prices = load_prices(args.prices) if args.prices else _stored_prices(base)
    meta = {key: value for key, value in base.meta.items() if key not in ("reference", "typical")}
    model = fit_router(base.candidates, base.data + rated, prices, l2=args.l2, k=args.k,
                       meta=dict(meta, rated_requests=len(rated), base=Path(args.base).name))
    model.save(args.out)
    print(f"router model for {', '.join(base.candidates)}: {len(base.data)} rows of {Path(args.base).name} and "
          f"{len(rated)} rated requests of {args.router!r}: {args.out}")


def _stored_prices(model: QualityModel) -> dict[str, Price]:
    from mmproxy.smart.records import Price

    stored = model.meta.get("prices")
    if not isinstance(stored, dict):
        raise ValueError("the model stores no prices: pass --prices")
    return {name: Price(float(p[0]), float(p[1])) for name, p in stored.items()}


def _fit_cascade(args: argparse.Namespace) -> None:
    from mmproxy.smart.model import QualityModel
    from mmproxy.smart.records import load_prices, load_records
    from mmproxy.smart.train import train_cascade

    records = _part(load_records(args.records), args.part, args.split)
    prices = load_prices(args.prices)
    model = QualityModel.load(args.model)
    plan = train_cascade(records, args.stages, model, ProgressEmbedder("embedding"), prices,
                         min_quality=args.quality, max_cost=args.budget, meta=_provenance(args, records))
    plan.save(args.out)
    meta = plan.meta
    print(f"cascade {' -> '.join(plan.stages)} on {meta['records']} records: thresholds "
          f"{', '.join(f'{t:.3f}' for t in plan.thresholds)}; quality {meta['fitted_quality']:.3f} "
          f"(last stage alone {meta['last_stage_quality']:.3f}) at {meta['fitted_cost_share']:.1%} of its cost "
          f"(out-of-fold scores): {args.out}")


def _evaluate(args: argparse.Namespace) -> None:
    from mmproxy.smart.cascade import CascadePlan
    from mmproxy.smart.evaluate import evaluate
    from mmproxy.smart.model import QualityModel
    from mmproxy.smart.records import load_prices, load_records
    from mmproxy.smart.router import LearnedRouter

    model = QualityModel.load(args.model)
    cascade = None if args.cascade == "none" else CascadePlan.load(args.cascade)
    prices = load_prices(args.prices) if args.prices else _stored_prices(model)
    records = _part(load_records(args.records), args.part, args.split)
    missing = [c for c in model.candidates if c not in prices]
    if missing:
        raise ValueError(f"no price for {', '.join(missing)}")
    share = args.strong_share
    if share is None and args.cost_weight is None and args.min_quality is None:
        share = 0.5
    router = LearnedRouter(model, range(len(model.candidates)),
                           np.array([prices[c].input for c in model.candidates]),
                           np.array([prices[c].output for c in model.candidates]),
                           cost_weight=args.cost_weight, strong_share=share, min_quality=args.min_quality)
    reports = evaluate(records, router, ProgressEmbedder("embedding"), prices, cascade)
    if args.gateway:
        import asyncio
        import os

        from mmproxy.smart.evaluate import gateway_rows, through_gateway

        usable = [r for r in records if all(c in r.models for c in model.candidates)]
        answers = asyncio.run(through_gateway(usable, args.gateway, args.gateway_model,
                                              args.api_key or os.environ.get("MMPROXY_API_KEY"), _progress))
        strongest = max(model.candidates, key=lambda c: prices[c].input + prices[c].output)
        rows = gateway_rows(answers, args.gateway_model, strongest)
        for report in reports:
            if report.task in rows:
                report.rows.append(rows[report.task])
    if args.json:
        print(orjson.dumps([{"task": r.task, "records": r.records, "policies": [row.as_dict() for row in r.rows]}
                            for r in reports], option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY).decode())
    else:
        print(_table(reports))
    if args.plot:
        from mmproxy.smart.plot import plot

        plot(reports, args.plot)
        print(f"cost-quality curves: {args.plot}", file=sys.stderr)


def _evaluate_agreement(args: argparse.Namespace) -> None:
    from mmproxy.smart.consensus_eval import evaluate_agreement, through_gateway
    from mmproxy.smart.records import load_prices, load_records

    records, prices = load_records(args.records), load_prices(args.prices)
    missing = [m for m in args.members if m not in prices]
    if missing:
        raise ValueError(f"--prices has no price for {', '.join(missing)}")
    rows = evaluate_agreement(records, args.members, prices, ProgressEmbedder("embedding answers"),
                              args.min_agreement)
    gateway = None
    if args.gateway:
        import asyncio
        import os

        gateway = asyncio.run(through_gateway(records, args.members, args.gateway, args.gateway_model,
                                              args.min_agreement,
                                              args.api_key or os.environ.get("MMPROXY_API_KEY"), _progress))
    if args.json:
        out: dict[str, object] = {"offline": [r.as_dict() for r in rows]}
        if gateway is not None:
            out["gateway"] = [r.as_dict() for r in gateway]
        print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
        return
    for label, table in (("offline", rows), ("through the gateway", gateway or [])):
        if not table:
            continue
        print(f"\n{label}: accept when {args.min_agreement:.0%} of {', '.join(args.members)} agree")
        print(f"  {'task':<10} {'records':>7} {'coverage':>9} {'accepted acc.':>13} {'majority acc.':>13} "
              f"{'$/query':>10}  each member alone: accuracy, $/query")
        for r in table:
            alone = "; ".join(f"{m.split('/')[-1]} {r.member_accuracy[m]:.3f}, {_num(r.member_cost[m], '.6f')}"
                              for m in args.members)
            selective = "-" if r.selective_accuracy is None else f"{r.selective_accuracy:.3f}"
            print(f"  {r.task:<10} {r.records:>7} {r.coverage:>9.1%} {selective:>13} {r.majority_accuracy:>13.3f} "
                  f"{r.cost:>10.6f}  {alone}")


def progress(label: str, done: int, total: int) -> None:
    """A progress bar on stderr when it is a terminal, ended by a line break once ``done`` reaches ``total``."""
    if sys.stderr.isatty():
        bar = "#" * (30 * done // total)
        print(f"\r{label}: [{bar:<30}] {done}/{total}", end="\n" if done == total else "", file=sys.stderr,
              flush=True)


def _progress(done: int, total: int) -> None:
    progress("through the gateway", done, total)


def _table(reports: list[TaskReport]) -> str:
    lines = []
    for report in reports:
        lines.append(f"\n{report.task} ({report.records} records)")
        lines.append(f"  {'policy':<44} {'quality':>8} {'$/query':>10} {'$/success':>10} {'strong':>7} "
                     f"{'APGR':>6}  savings at 50/80/95% of the strongest's quality")
        for row in report.rows:
            saving = "  ".join("-" if v is None else (f"{v:.1%}" if "quality" not in k else f"q {v:.3f}")
                               for k, v in row.saving.items())
            cps = row.cost_per_success
            lines.append(
                f"  {row.policy:<44} {_num(row.quality, '.3f'):>8} {_num(row.cost, '.6f'):>10} "
                f"{_num(cps, '.6f'):>10} {_num(row.strong_share, '.1%'):>7} {_num(row.apgr, '.3f'):>6}  {saving}")
    return "\n".join(lines)


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None or value != value else format(value, spec)
