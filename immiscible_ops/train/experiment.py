"""Training-efficiency experiment: vanilla vs immiscible couplings, several seeds, one budget.

`python -m immiscible_ops.train experiment` (or benchmarks/training_efficiency.py) trains every
(dataset, coupling, seed), then writes results.json, results.md (tables) and curves.png. Runs that
already finished with the same configuration are reused, so an interrupted experiment continues.
"""

import argparse
import json
import multiprocessing
import os
import time
from collections import OrderedDict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from immiscible_ops.train import compare
from immiscible_ops.train.data import TOY_2D
from immiscible_ops.train.trainer import Config, train

# Presets. "cpu": sized for a shared 2-core CPU (tiny nets, few steps); "gpu": an H100/H200.
# Per dataset kind: training steps, batch, UNet widths, evaluation samples.
SCALES = {
    "cpu": {"points": dict(steps=400, batch_size=256, eval_samples=1000),
            "digits": dict(steps=300, batch_size=64, eval_samples=300, unet_widths=(16, 32)),
            "patches": dict(steps=80, batch_size=32, eval_samples=128, unet_widths=(16, 32))},
    "gpu": {"points": dict(steps=10000, batch_size=1024, eval_samples=5000),
            "digits": dict(steps=5000, batch_size=256, eval_samples=1000, unet_widths=(32, 64)),
            "patches": dict(steps=20000, batch_size=256, eval_samples=2000, unet_widths=(64, 128, 256))},
}
# Per objective, settings that replace the preset's (consistency training needs more steps to learn
# at one step; its curriculum is shortened from iCT's s1 = 1280, fitted to 400k steps, at cpu size).
OBJECTIVE_SCALES = {
    "cpu": {"consistency": {"points": dict(steps=1000, ct_s1=160),
                            "digits": dict(steps=800, ct_s1=160),
                            "patches": dict(steps=300, eval_samples=256, ct_s1=160)}},
    "gpu": {"consistency": {"points": dict(steps=20000),
                            "digits": dict(steps=20000),
                            "patches": dict(steps=100000)}},
}
IMAGE_DEFAULTS = dict(steps=500, batch_size=64, lr=1e-3)
# Arms of the conditional experiment that are the assign coupling with condition-aware options.
CONDITIONAL_ARMS = ("groups", "c2ot")
POINTS_DEFAULTS = dict(steps=1500, batch_size=256, lr=1e-3)


def run_configs(a) -> list:
    cfgs = []
    for data, objective in ((d, o) for d in a.datasets.split(",") for o in a.objectives.split(",")):
        points = data in TOY_2D
        base = dict(POINTS_DEFAULTS if points else IMAGE_DEFAULTS)
        kind = "points" if points else ("patches" if data == "patches" else "digits")
        base.update(SCALES[a.scale][kind])
        base.update(OBJECTIVE_SCALES[a.scale].get(objective, {}).get(kind, {}))
        base["sample_steps"] = tuple(a.sample_steps)
        # Taken out of base either way: widths reaches Config once, as its own keyword.
        scale_widths = base.pop("unet_widths", (32, 64))
        widths = tuple(int(w) for w in a.unet_widths.split(",")) if a.unet_widths else scale_widths
        if a.image_steps and not points:
            base["steps"] = a.image_steps
        if a.points_steps and points:
            base["steps"] = a.points_steps
        if a.batch_size:
            base["batch_size"] = a.batch_size
        base["eval_every"] = max(1, base["steps"] // a.evals)
        if objective == "consistency":
            # Explicit, so a run's curriculum does not hinge on --steps (finished() compares configs).
            base["ct_total_steps"] = base["steps"]
        for method in a.methods.split(","):
            cond = {}
            # getattr: callers that build the namespace themselves may predate these options.
            if getattr(a, "conditions", "none") == "derived":
                r = getattr(a, "condition_target_r", 0.2)
                cond = dict(conditions="derived", condition_groups=method == "groups",
                            condition_target_r=r if method == "c2ot" else None)
            elif method in CONDITIONAL_ARMS:
                raise ValueError(f"methods: {method!r} needs --conditions derived")
            for seed in (int(s) for s in a.seeds.split(",")):
                name = f"{Path(data).stem}-{objective}-{method}-s{seed}"
                coupling = "assign" if method in CONDITIONAL_ARMS else method
                cfgs.append(Config(data=data, out=str(Path(a.out) / name), coupling=coupling,
                                   seed=seed,
                                   objective=objective, device=a.device, unet_widths=widths,
                                   checkpoint_every=base["steps"], progress=a.progress,
                                   cache_dir=a.cache_dir, threads=a.threads, k=a.k,
                                   pool_factor=a.pool_factor,
                                   class_conditional=a.class_conditional and not points,
                                   **cond, **base))
    return cfgs


def finished(cfg: Config) -> bool:
    out = Path(cfg.out)
    if not (out / "summary.json").exists() or not (out / "config.json").exists():
        return False
    return json.loads((out / "config.json").read_text()) == json.loads(json.dumps(cfg.to_dict()))


def group_name(cfg: Config) -> str:
    return f"{Path(cfg.data).stem} / {cfg.objective}"


def arm(cfg: Config) -> str:
    """The experiment's name for a run's coupling: its coupling, or groups / c2ot for the
    condition-aware assign runs."""
    if cfg.condition_target_r is not None or cfg.condition_weight is not None:
        return "c2ot"
    return "groups" if cfg.condition_groups else cfg.coupling


def t_interval(values) -> tuple:
    """(mean, half-width of the 95% Student-t interval) over seeds."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    if v.size < 2:
        return float(v.mean()), float("nan")
    return float(v.mean()), float(stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size))


def summarize(cfgs: list, metric: str = None) -> dict:
    """Per dataset and coupling: curve, final quality mean/std, steps to reach vanilla, overhead;
    for `metric` (lower is better), by default fd on images and w2 on points."""
    chosen = metric
    table = OrderedDict()
    for cfg in cfgs:
        run = compare.read_run(Path(cfg.out))
        summary = json.loads((Path(cfg.out) / "summary.json").read_text())
        runs = table.setdefault(group_name(cfg), OrderedDict()).setdefault(arm(cfg), [])
        runs.append((run, summary))
    results = OrderedDict()
    for data, methods in table.items():
        first = next(iter(methods.values()))[0][0]
        metric = chosen or compare.default_metric(first)
        if metric not in first["eval"][-1]:
            continue
        res = OrderedDict(metric=metric, reference=first["reference"].get(metric), methods=OrderedDict())
        nfes = sorted({int(k.split("@")[1]) for k in first["eval"][-1] if k.startswith(metric + "@")})
        res["nfe"] = nfes
        vanilla_final, vanilla_by_nfe = None, {}
        if "none" in methods:
            _, mean, _ = compare.curve_stats([r for r, _ in methods["none"]], metric)
            vanilla_final = float(mean[-1])
            for n in nfes:
                _, mean, _ = compare.curve_stats([r for r, _ in methods["none"]], f"{metric}@{n}")
                vanilla_by_nfe[n] = float(mean[-1])
        for method, runs in methods.items():
            steps, mean, std = compare.curve_stats([r for r, _ in runs], metric)
            finals = np.array([r["eval"][-1][metric] for r, _ in runs])
            # Per-step timings skip the first 10 steps (allocator and thread-pool warm-up); medians,
            # because evaluation and other tenants of a shared machine inflate a few steps a lot.
            warm = [r["train"][10:] if len(r["train"]) > 20 else r["train"] for r, _ in runs]
            step_ms = np.mean([np.median([t["step_ms"] for t in w]) for w in warm])
            noise_ms = np.mean([np.median([t["noise_ms"] for t in w]) for w in warm])
            reach = None
            if vanilla_final is not None:
                hit = np.nonzero(mean <= vanilla_final)[0]
                reach = int(steps[hit[0]]) if hit.size else None
            reach_by_nfe = {}
            for n, target in vanilla_by_nfe.items():
                st, mu, _ = compare.curve_stats([r for r, _ in runs], f"{metric}@{n}")
                hit = np.nonzero(mu <= target)[0]
                reach_by_nfe[str(n)] = int(st[hit[0]]) if hit.size else None
            extra = {}
            if metric == "fd":
                extra["mmd_poly"] = float(np.mean([r["eval"][-1]["mmd_poly"] for r, _ in runs]))
            by_nfe = {n: t_interval([r["eval"][-1][f"{metric}@{n}"] for r, _ in runs]) for n in nfes}
            if "straightness" in first["eval"][-1]:
                extra["straightness"] = t_interval([r["eval"][-1]["straightness"] for r, _ in runs])
            res["methods"][method] = dict(
                final_by_nfe={str(n): v for n, v in by_nfe.items()},
                steps_to_vanilla_final_by_nfe=reach_by_nfe,
                seconds_to_vanilla_final_by_nfe={n: None if r is None else r * float(step_ms) / 1e3
                                                 for n, r in reach_by_nfe.items()},
                seconds_to_vanilla_final=None if reach is None else reach * float(step_ms) / 1e3,
                seeds=len(runs), steps=steps.tolist(), curve=mean.tolist(), curve_std=std.tolist(),
                final_mean=float(finals.mean()), final_std=float(finals.std(ddof=1)) if len(finals) > 1 else 0.0,
                steps_to_vanilla_final=reach, step_ms=float(step_ms), noise_ms=float(noise_ms),
                noise_pct=float(100 * noise_ms / step_ms), **extra)
        if "none" in res["methods"]:
            for m in res["methods"].values():
                m["effect_by_nfe"] = {}
                for n, (mu, hw) in m["final_by_nfe"].items():
                    mu0, hw0 = res["methods"]["none"]["final_by_nfe"][n]
                    overlap = abs(mu - mu0) <= hw + hw0
                    m["effect_by_nfe"][n] = "no effect" if overlap else ("better" if mu < mu0 else "worse")
            # Runs of one seed share initial weights and batch order, so per-seed differences
            # against none are paired: a tighter test than comparing the two intervals.
            vanilla = {r["config"].get("seed"): r for r, _ in methods["none"]}
            for method, runs in methods.items():
                pairs = [(r, vanilla[r["config"].get("seed")]) for r, _ in runs
                         if method != "none" and r["config"].get("seed") in vanilla]
                if len(pairs) >= 2:
                    res["methods"][method]["paired_diff_by_nfe"] = {
                        str(n): t_interval([r["eval"][-1][f"{metric}@{n}"] - v["eval"][-1][f"{metric}@{n}"]
                                            for r, v in pairs]) for n in nfes}
            base = res["methods"]["none"]["noise_ms"]
            for m in res["methods"].values():
                m["overhead_ms"] = m["noise_ms"] - base
                m["overhead_pct"] = 100 * m["overhead_ms"] / res["methods"]["none"]["step_ms"]
        results[data] = res
    return results


def markdown(results: dict, cfgs: list) -> str:
    lines = []
    for data, res in results.items():
        c = next(c for c in cfgs if group_name(c) == data)
        metric = res["metric"]
        floor = "" if res["reference"] is None else f"; real-vs-real floor {res['reference']:.4g}"
        lines.append(f"**{data}** ({c.steps} steps, batch {c.batch_size}, metric {metric}, "
                     f"lower is better{floor})\n")
        extra = " final MMD (poly) |" if metric == "fd" else ""
        lines.append(f"| coupling | seeds | final {metric} (mean +- std) |{extra} steps to vanilla's final "
                     "| noise ms/step | step ms | noise % of step | overhead vs none (ms, % of step) |")
        lines.append("|---|---|---|" + ("---|" if extra else "") + "---|---|---|---|---|")
        for method, m in res["methods"].items():
            reach = "not reached" if m["steps_to_vanilla_final"] is None else str(m["steps_to_vanilla_final"])
            mmd = f" {m['mmd_poly']:.4f} |" if extra else ""
            over = (f"{m['overhead_ms']:+.2f} ({m['overhead_pct']:+.1f}%)" if "overhead_ms" in m else "-")
            lines.append(f"| {method} | {m['seeds']} | {m['final_mean']:.4g} +- {m['final_std']:.2g} |{mmd} "
                         f"{reach} | {m['noise_ms']:.2f} | {m['step_ms']:.1f} | {m['noise_pct']:.1f} | {over} |")
        lines.append("")
        head = " | ".join(f"{metric} @ {n} steps" for n in res["nfe"])
        st = " straightness |" if any("straightness" in m for m in res["methods"].values()) else ""
        lines.append(f"Final {metric} by sampling steps (mean +- 95% t-interval over seeds; vs none: "
                     "better / worse where the intervals do not overlap, else no effect):\n")
        lines.append(f"| coupling | {head} |{st} seconds to vanilla's final |")
        lines.append("|---|" + "---|" * len(res["nfe"]) + ("---|" if st else "") + "---|")
        for method, m in res["methods"].items():
            cells = []
            for n in res["nfe"]:
                mu, hw = m["final_by_nfe"][str(n)]
                eff = m.get("effect_by_nfe", {}).get(str(n), "")
                cells.append(f"{mu:.4g} +- {hw:.2g}" + (f" ({eff})" if method != "none" and eff else ""))
            stc = ""
            if st:
                mu, hw = m.get("straightness", (float("nan"), float("nan")))
                stc = f" {mu:.3f} +- {hw:.2g} |"
            sec = m["seconds_to_vanilla_final"]
            lines.append(f"| {method} | " + " | ".join(cells) + f" |{stc} "
                         + ("not reached" if sec is None else f"{sec:.1f}") + " |")
        lines.append("")
        if any("paired_diff_by_nfe" in m for m in res["methods"].values()):
            lines.append(f"Final {metric} minus none's, paired by seed (same initial weights and batch order; "
                         "mean +- 95% t-interval over seeds; *marked* where the interval excludes 0):\n")
            lines.append("| coupling | " + " | ".join(f"diff @ {n} steps" for n in res["nfe"]) + " |")
            lines.append("|---|" + "---|" * len(res["nfe"]))
            for method, m in res["methods"].items():
                if "paired_diff_by_nfe" not in m:
                    continue
                cells = []
                for n in res["nfe"]:
                    mu, hw = m["paired_diff_by_nfe"][str(n)]
                    cell = f"{mu:+.4g} +- {hw:.2g}"
                    cells.append(f"*{cell}*" if abs(mu) > hw else cell)
                lines.append(f"| {method} | " + " | ".join(cells) + " |")
            lines.append("")
        if any(m.get("steps_to_vanilla_final_by_nfe") for m in res["methods"].values()):
            lines.append("Training steps (seconds: steps x median step time) until the seed-mean curve at each "
                         "sampling step count is at or below vanilla's final value at that count:\n")
            lines.append("| coupling | " + " | ".join(f"to vanilla @ {n} steps" for n in res["nfe"]) + " |")
            lines.append("|---|" + "---|" * len(res["nfe"]))
            for method, m in res["methods"].items():
                cells = []
                for n in res["nfe"]:
                    r = m["steps_to_vanilla_final_by_nfe"].get(str(n))
                    sec = m["seconds_to_vanilla_final_by_nfe"].get(str(n))
                    cells.append("not reached" if r is None else f"{r} ({sec:.1f} s)")
                lines.append(f"| {method} | " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines)


def plot(results: dict, cfgs: list, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(results)
    # With several step counts, a training-curve row at the fewest too (1 step for consistency).
    few = any(len(results[d]["nfe"]) > 1 for d in datasets)
    # With conditions, a row for what the couplings did to them (coupling_stats, every evaluation).
    conditional = any(c.conditions != "none" for c in cfgs)
    rows = (3 if few else 2) + conditional
    fig, axes = plt.subplots(rows, len(datasets), figsize=(4.5 * len(datasets), 3.75 * rows), squeeze=False)
    for col, data in enumerate(datasets):
        groups = OrderedDict()
        for cfg in cfgs:
            if group_name(cfg) == data:
                groups.setdefault(arm(cfg), []).append(compare.read_run(Path(cfg.out)))
        res = results[data]
        nmax, nmin = max(res["nfe"]), min(res["nfe"])
        compare.plot_groups(axes[0][col], groups, res["metric"],
                            title=f"{data}: training curve, {nmax} step{'s' if nmax > 1 else ''}")
        if few:
            compare.plot_groups(axes[1][col], groups, f"{res['metric']}@{nmin}",
                                title=f"{data}: training curve, {nmin} step{'s' if nmin > 1 else ''}")
        if conditional:
            compare.plot_groups(axes[rows - 2][col], groups, "coupling_condition_distance_coupled",
                                title=f"{data}: condition distance, image to its noise slot",
                                log=False)
        ax = axes[rows - 1][col]
        for i, (method, m) in enumerate(res["methods"].items()):
            xs = np.array(res["nfe"], dtype=float) * (1 + 0.04 * (i - 1.5))  # dodge the error bars
            mu = [m["final_by_nfe"][str(n)][0] for n in res["nfe"]]
            hw = [m["final_by_nfe"][str(n)][1] for n in res["nfe"]]
            ax.errorbar(xs, mu, yerr=hw, marker="o", ms=3, capsize=2, label=method)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("sampling steps (function evaluations)")
        ax.set_ylabel(f"final {res['metric']}")
        ax.set_title(f"{data}: quality vs steps (95% CI)", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def default_jobs(a) -> int:
    """Runs side by side: on the CPU as many as the cores hold at --threads each; one on a GPU."""
    if a.device != "cpu" or not a.threads:
        return 1
    return max(1, (os.cpu_count() or 1) // a.threads)


def train_timed(cfg: Config) -> tuple:
    t0 = time.time()
    s = train(cfg)
    return {k: s[k] for k in ("final", "step_ms", "noise_ms")}, time.time() - t0


def report(i: int, n: int, cfg: Config, s: dict, seconds: float):
    final = ", ".join(f"{k} {v:.4g}" for k, v in (s["final"] or {}).items())
    print(f"[{i + 1}/{n}] {cfg.out}: {final}; {seconds:.0f} s, "
          f"step {s['step_ms']:.1f} ms, noise {s['noise_ms']:.2f} ms", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m immiscible_ops.train experiment", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default="digits,gmm,patches", help="comma separated (default: %(default)s)")
    p.add_argument("--objectives", default="ddpm,flow,consistency",
                   help="comma separated: ddpm, flow, consistency (default: %(default)s)")
    p.add_argument("--scale", choices=tuple(SCALES), default="cpu",
                   help="preset sizes: cpu (2-core CPU) or gpu (an H100/H200)")
    p.add_argument("--sample-steps", type=int, nargs="+", default=[1, 2, 4, 8, 32],
                   help="sampling steps scored at every evaluation (default: %(default)s)")
    p.add_argument("--methods", default="none,assign,knn,flip", help="couplings (default: %(default)s)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--image-steps", type=int, default=None, help=f"default {IMAGE_DEFAULTS['steps']}")
    p.add_argument("--points-steps", type=int, default=None, help=f"default {POINTS_DEFAULTS['steps']}")
    p.add_argument("--batch-size", type=int, default=None, help="override both datasets' batch size")
    p.add_argument("--evals", type=int, default=5, help="evaluations per run")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads per run (default 1: fastest on a busy 2-core machine; 0: torch's default)")
    p.add_argument("--jobs", type=int, default=None,
                   help="runs side by side, each in its own process (default: on the CPU, the cores "
                        "divided by --threads; 1 on a GPU or with --threads 0)")
    p.add_argument("--unet-widths", default=None, help="override the preset's UNet widths")
    p.add_argument("--k", type=int, default=8, help="knn candidates per image")
    p.add_argument("--pool-factor", type=int, default=2, help="pool size / batch for pool")
    p.add_argument("--class-conditional", action="store_true",
                   help="class-conditional models and in-class assignment on labelled image data")
    p.add_argument("--conditions", choices=("none", "derived"), default="none",
                   help="derived: continuous per-sample conditions "
                   "(immiscible_ops.train.conditions); "
                   "adds the methods groups (assign within condition classes) and c2ot (assign "
                   "with the condition cost at --condition-target-r)")
    p.add_argument("--condition-target-r", type=float, default=0.2,
                   help="C2OT's target fraction r for the c2ot arm (default: %(default)s, C2OT's "
                   "ImageNet-32 setting)")
    p.add_argument("--metrics", default=None,
                   help="comma separated metrics to tabulate, lower is better (default: fd on "
                   "images, w2 on points); a dataset without one is left out of its table")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="runs/experiment")
    p.add_argument("--plot", default=None, help="PNG of the curves (default: OUT/curves.png)")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--progress", action="store_true", help="progress bar per run")
    a = p.parse_args(argv)
    if a.jobs is not None and a.jobs < 1:
        p.error(f"--jobs must be >= 1, got {a.jobs}")
    out = Path(a.out)
    cfgs = run_configs(a)
    t_start = time.time()
    todo = []
    for i, cfg in enumerate(cfgs):
        if finished(cfg):
            print(f"[{i + 1}/{len(cfgs)}] {cfg.out}: done before, reused", flush=True)
        else:
            todo.append((i, cfg))
    jobs = min(default_jobs(a) if a.jobs is None else a.jobs, max(1, len(todo)))
    if jobs == 1:
        for i, cfg in todo:
            report(i, len(cfgs), cfg, *train_timed(cfg))
    else:
        # Separate processes (spawned: no forked torch thread pools), one run each at a time.
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [(i, cfg, pool.submit(train_timed, cfg)) for i, cfg in todo]
            for i, cfg, fut in futures:
                report(i, len(cfgs), cfg, *fut.result())
    chosen = a.metrics.split(",") if a.metrics else [None]
    every = OrderedDict((m or "default", summarize(cfgs, m)) for m in chosen)
    md = "\n".join(markdown(results, cfgs) for results in every.values())
    results = next(iter(every.values()))
    (out / "results.json").write_text(json.dumps(every if a.metrics else results, indent=1))
    (out / "results.md").write_text(md)
    plot_path = Path(a.plot) if a.plot else out / "curves.png"
    plot(results, cfgs, plot_path)
    print(md)
    print(f"wrote {out / 'results.md'}, {out / 'results.json'}, {plot_path}; "
          f"{(time.time() - t_start) / 60:.1f} min")
    return 0
