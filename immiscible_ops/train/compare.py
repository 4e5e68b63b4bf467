"""Curves of several runs in one PNG: `python -m immiscible_ops.train compare RUN... --out x.png`."""

import argparse
import json
from collections import OrderedDict
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np


def read_run(run: Path) -> dict:
    """config, eval records and reference record of a run folder."""
    run = Path(run)
    log = run / "log.jsonl"
    if not log.exists():
        raise FileNotFoundError(f"compare: {run} is not a run folder (no {log})")
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    config = json.loads((run / "config.json").read_text()) if (run / "config.json").exists() else {}
    return {"config": config, "eval": [r for r in records if r["type"] == "eval"],
            "reference": next((r for r in records if r["type"] == "reference"), None),
            "train": [r for r in records if r["type"] == "train"]}


def default_metric(run: dict) -> str:
    keys = run["eval"][0].keys() if run["eval"] else ()
    return "fd" if "fd" in keys else "w2"


def curve_stats(runs: List[dict], metric: str):
    """(steps, mean, std) over runs at the eval steps they all share."""
    common = sorted(set.intersection(*[{r["step"] for r in run["eval"]} for run in runs]))
    values = np.array([[next(r[metric] for r in run["eval"] if r["step"] == s) for s in common]
                       for run in runs], dtype=float)
    return np.array(common), values.mean(0), values.std(0)


def plot_groups(ax, groups: Dict[str, List[dict]], metric: str, title: Optional[str] = None,
                log: bool = True):
    """One line per group (mean over its runs), a band of +-1 std where a group has several runs."""
    floor = None
    for i, (label, runs) in enumerate(groups.items()):
        steps, mean, std = curve_stats(runs, metric)
        n = len(runs)
        ax.plot(steps, mean, marker="o", ms=3, color=f"C{i}", label=f"{label} (n={n})" if n > 1 else label)
        if n > 1:
            ax.fill_between(steps, mean - std, mean + std, color=f"C{i}", alpha=0.2)
        ref = runs[0]["reference"]
        base = metric.split("@")[0]  # the floor does not depend on the sampling steps
        if ref and base in ref:
            floor = ref[base]
    if floor is not None:
        ax.axhline(floor, color="0.5", ls="--", lw=1, label="real vs real (floor)")
    ax.set_xlabel("training step")
    ax.set_ylabel(metric)
    ax.set_yscale("log" if log else "linear")
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m immiscible_ops.train compare",
                                description="Plot the evaluation curves of run folders into one PNG; "
                                "runs with the same label are averaged (band: +-1 std).")
    p.add_argument("runs", nargs="+", help="run folders (the --out of train)")
    p.add_argument("--out", default="compare.png", help="PNG to write")
    p.add_argument("--metric", default=None, help="fd | mmd_poly | mmd_rbf | w2 (default: fd or w2)")
    p.add_argument("--label", default="coupling",
                   help="config field(s) that name a curve, comma separated (default: %(default)s)")
    p.add_argument("--title", default=None)
    a = p.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [read_run(Path(r)) for r in a.runs]
    runs = [r for r in runs if r["eval"]]
    if not runs:
        raise SystemExit("compare: none of the runs has an evaluation yet")
    metric = a.metric or default_metric(runs[0])
    fields = a.label.split(",")
    groups: Dict[str, List[dict]] = OrderedDict()
    for r in runs:
        if metric not in r["eval"][0]:
            raise SystemExit(f"compare: a run has no metric {metric!r} (has {sorted(r['eval'][0])})")
        groups.setdefault(" ".join(str(r["config"].get(f, "?")) for f in fields), []).append(r)
    nfes = sorted({int(k.split("@")[1]) for k in runs[0]["eval"][-1] if k.startswith(metric + "@")})
    fig, axes = plt.subplots(1, 2 if len(nfes) > 1 else 1, figsize=(12 if len(nfes) > 1 else 6, 4),
                             squeeze=False)
    # Coupling statistics (coupling_*) can be 0, for none: a linear axis.
    plot_groups(axes[0][0], groups, metric, a.title, log=not metric.startswith("coupling_"))
    if len(nfes) > 1:
        # Quality against sampling steps at each run's last evaluation; mean +-1 std per label.
        ax = axes[0][1]
        for label, rs in groups.items():
            vals = np.array([[r["eval"][-1][f"{metric}@{n}"] for n in nfes] for r in rs])
            ax.errorbar(nfes, vals.mean(0), yerr=vals.std(0), marker="o", ms=3, capsize=2, label=label)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("sampling steps")
        ax.set_ylabel(f"final {metric}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=120)
    print(f"wrote {a.out}")
    return 0
