"""The cost-quality PNG of ``mmproxy router eval --plot``: one panel per task, cost as a share of the strongest
model's, quality on the other axis. Needs matplotlib (``pip install 'mmproxy[eval]'``)."""

from __future__ import annotations

from collections.abc import Sequence

from mmproxy.smart.evaluate import TaskReport


def plot(reports: Sequence[TaskReport], path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ValueError("--plot needs matplotlib: pip install 'mmproxy[eval]'") from None
    figure, axes = plt.subplots(1, len(reports), figsize=(4.2 * len(reports), 3.8), squeeze=False)
    for axis, report in zip(axes[0], reports, strict=True):
        strongest_cost = max(row.cost for row in report.rows if row.policy.startswith("only "))
        for name, points in report.curves.items():
            xs, ys = zip(*points, strict=True)
            axis.plot(xs, ys, label=name, linestyle="--" if name == "random" else "-")
        for row in report.rows:
            # a cascade scored on only part of this panel's records (those with answers) is not comparable here
            partial = row.policy.startswith("cascade") and f"({report.records} " not in row.policy
            if row.cost == row.cost and not row.policy.startswith("random") and not partial:
                # A cascade runs on the records holding every stage's answer: its cost is against its last stage's.
                own = row.saving.get("vs last stage alone")
                x = 1 - own if own is not None else row.cost / strongest_cost
                axis.scatter([x], [row.quality], s=18)
                axis.annotate(row.policy.split(" (")[0].replace("only ", "")[:22], (x, row.quality), fontsize=6)
        axis.set_title(f"{report.task} ({report.records})", fontsize=9)
        axis.set_xlabel("cost, share of the strongest model's")
        axis.set_ylabel("quality")
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
