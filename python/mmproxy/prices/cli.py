"""``mmproxy prices import FILE``: check a price file (LiteLLM's shape or mmproxy's) and write it in mmproxy's,
ready for ``general_settings.price_file``."""

from __future__ import annotations

import argparse
import datetime
import sys
from collections import Counter
from pathlib import Path

from mmproxy.prices.files import PriceFileError, dumps, read


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    prices = commands.add_parser("prices", help="price files for general_settings.price_file")
    actions = prices.add_subparsers(dest="action", required=True)
    convert = actions.add_parser("import", help="check a price file in LiteLLM's model_prices_and_context_window.json "
                                 "shape and write it as an mmproxy price file: exit 2 naming every broken entry")
    convert.add_argument("file", help="the price file to read")
    convert.add_argument("--out", default="-", help="the mmproxy price file to write (default: standard output)")


def run(args: argparse.Namespace) -> None:
    try:
        document = read(args.file)
    except OSError as exc:
        print(f"mmproxy: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        raise SystemExit(2) from None
    except PriceFileError as exc:
        print(f"mmproxy: {args.file}: {len(exc.problems)} problem(s), nothing written:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        raise SystemExit(2) from None
    document.read = document.read or datetime.date.today().isoformat()
    if args.out == "-":
        sys.stdout.write(dumps(document))
    else:
        Path(args.out).write_text(dumps(document), encoding="utf-8")
    for warning in document.warnings:
        print(f"mmproxy: warning: {warning}", file=sys.stderr)
    modes = Counter(entry.get("mode", "chat") for entry in document.models.values())
    summary = ", ".join(f"{count} {mode}" for mode, count in sorted(modes.items()))
    print(f"mmproxy: {len(document.models)} models ({summary}) written to {args.out}", file=sys.stderr)
    if document.skipped:
        left = ", ".join(f"{mode} {count}" for mode, count in document.skipped.most_common())
        print(f"mmproxy: left out {sum(document.skipped.values())} entries of modes the gateway does not serve "
              f"({left})", file=sys.stderr)
