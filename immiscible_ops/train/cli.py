"""Command line: `python -m immiscible_ops.train [train] ...`, `... experiment ...`, `... compare ...`."""

import argparse
import sys
from typing import List, Optional

from immiscible_ops.train.objectives import OBJECTIVES
from immiscible_ops.train.trainer import CONDITION_SOURCES, COUPLINGS, Config

SUBCOMMANDS = ("train", "experiment", "compare")


def add_train_args(p: argparse.ArgumentParser):
    d = Config()
    g = p.add_argument_group("data")
    g.add_argument("--data", default=d.data, help="digits | gmm | moons | checkerboard | a folder of "
                   "PNG/JPG images (labels from subfolders) | a .npy/.npz array (default: %(default)s)")
    g.add_argument("--image-size", type=int, default=d.image_size, help="resize images to this square size")
    g.add_argument("--n-points", type=int, default=d.n_points, help="size of a 2-D toy dataset")
    g.add_argument("--test-fraction", type=float, default=d.test_fraction, help="held-out share for evaluation")
    g = p.add_argument_group("noise coupling")
    g.add_argument("--coupling", choices=COUPLINGS, default=d.coupling)
    g.add_argument("--precision", default=d.precision, help="distance precision for assign/pool")
    g.add_argument("--solver", default=d.solver, help="assignment solver: auto | exact | auction")
    g.add_argument("--pool-factor", type=int, default=d.pool_factor, help="noise pool size / batch (pool)")
    g.add_argument("--k", type=int, default=d.k, help="noise candidates per image; the nearest is kept (knn)")
    g.add_argument("--assignment-scope", choices=("rank", "global"), default=d.assignment_scope,
                   help="under DDP: assign within each process's batch or over the global batch")
    g.add_argument("--class-conditional", action="store_true",
                   help="condition on labels and assign noise within each class")
    g.add_argument("--conditions", choices=CONDITION_SOURCES, default=d.conditions,
                   help="derived: a continuous condition per sample, derived from the sample "
                   "(immiscible_ops.train.conditions), fed to the model by a projection")
    g.add_argument("--condition-groups", action="store_true",
                   help="with --conditions derived: couple within condition classes (the data's "
                   "labels; angular sectors for 2-D points)")
    g.add_argument("--condition-weight", type=float, default=d.condition_weight,
                   help="C2OT: add W x condition distance to the coupling cost")
    g.add_argument("--condition-target-r", type=float, default=d.condition_target_r,
                   help="C2OT: pick the weight so that a fraction R of pairs is at most as "
                   "costly as "
                   "the independent pair")
    g.add_argument("--condition-metric", choices=("cosine", "sqeuclidean"),
                   default=d.condition_metric)
    g = p.add_argument_group("objective")
    g.add_argument("--objective", choices=OBJECTIVES, default=d.objective,
                   help="ddpm: epsilon-prediction, DDIM sampling; flow: linear-path flow matching "
                   "(x_t = (1-t) x + t noise, velocity target noise - x), Euler sampling; "
                   "consistency: improved consistency training (iCT) from scratch, sampled in "
                   "one or a few consistency steps")
    g.add_argument("--t-sampling", choices=("uniform", "logit-normal"), default=d.t_sampling,
                   help="flow: distribution of t in training")
    g.add_argument("--ct-s0", type=int, default=d.ct_s0,
                   help="consistency: discretization steps at the start of the curriculum (iCT: 10)")
    g.add_argument("--ct-s1", type=int, default=d.ct_s1,
                   help="consistency: discretization steps at the end of the curriculum (iCT: 1280)")
    g.add_argument("--ct-total-steps", type=int, default=d.ct_total_steps,
                   help="consistency: the curriculum's length K (default: --steps; set it to extend "
                   "a run with --resume --steps without changing its curriculum)")
    g = p.add_argument_group("model and optimisation")
    g.add_argument("--steps", type=int, default=d.steps)
    g.add_argument("--batch-size", type=int, default=d.batch_size, help="global batch (all processes)")
    g.add_argument("--lr", type=float, default=d.lr)
    g.add_argument("--warmup", type=int, default=d.warmup)
    g.add_argument("--ema-decay", type=float, default=d.ema_decay)
    g.add_argument("--grad-clip", type=float, default=d.grad_clip)
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument("--unet-widths", default=",".join(map(str, d.unet_widths)),
                   help="channels per UNet level, comma separated")
    g.add_argument("--layers-per-block", type=int, default=d.layers_per_block)
    g.add_argument("--mlp-hidden", type=int, default=d.mlp_hidden)
    g.add_argument("--mlp-depth", type=int, default=d.mlp_depth)
    g.add_argument("--train-timesteps", type=int, default=d.train_timesteps)
    g.add_argument("--beta-schedule", default=d.beta_schedule)
    g = p.add_argument_group("run")
    g.add_argument("--out", default=d.out, help="run folder: logs, samples, checkpoint")
    g.add_argument("--device", default=d.device, help="cpu | cuda | cuda:N")
    g.add_argument("--sample-steps", type=int, nargs="+", default=list(d.sample_steps),
                   help="sampling steps (function evaluations) at evaluation, e.g. 1 2 4 8 32; "
                   "each is scored, the largest also under the bare metric names")
    g.add_argument("--eval-every", type=int, default=d.eval_every)
    g.add_argument("--eval-samples", type=int, default=d.eval_samples)
    g.add_argument("--feature-epochs", type=int, default=d.feature_epochs,
                   help="epochs of the metric's feature classifier (trained once, cached)")
    g.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    g.add_argument("--log-every", type=int, default=d.log_every, help="progress-bar refresh (steps)")
    g.add_argument("--resume", nargs="?", const="auto", default=None,
                   help="continue from a checkpoint (default: OUT/checkpoint.pt)")
    g.add_argument("--no-progress", dest="progress", action="store_false")
    g.add_argument("--threads", type=int, default=None, help="CPU threads per process (default: torch's)")
    g.add_argument("--cache-dir", default=None, help="where the metric's classifier is cached "
                   "(default: $IMMISCIBLE_CACHE or ~/.cache/immiscible_ops)")


def config_from_args(a: argparse.Namespace) -> Config:
    fields = Config.__dataclass_fields__
    kw = {k: v for k, v in vars(a).items() if k in fields}
    try:
        kw["unet_widths"] = tuple(int(w) for w in str(a.unet_widths).split(",") if w)
    except ValueError:
        raise ValueError(f"--unet-widths: expected comma-separated integers, got {a.unet_widths!r}") from None
    kw["sample_steps"] = tuple(kw.get("sample_steps", Config().sample_steps))
    return Config(**kw)


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of `python -m immiscible_ops.train` (and the immiscible-train script)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv and argv[0] in SUBCOMMANDS else "train"
    if command == "experiment":
        from immiscible_ops.train import experiment

        return experiment.main(argv)
    if command == "compare":
        from immiscible_ops.train import compare

        return compare.main(argv)
    p = argparse.ArgumentParser(prog="python -m immiscible_ops.train",
                                description="DDPM, flow-matching or consistency training with immiscible "
                                "noise coupling. "
                                "Other commands: experiment, compare (each with --help).")
    add_train_args(p)
    args = p.parse_args(argv)
    from immiscible_ops.train.trainer import train

    try:
        summary = train(config_from_args(args))
    except (ValueError, FileNotFoundError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if summary["final"]:
        print("final: " + ", ".join(f"{k} {v:.4g}" for k, v in summary["final"].items()))
    return 0
