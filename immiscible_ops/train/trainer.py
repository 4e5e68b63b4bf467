"""DDPM, flow-matching or consistency training (objectives.py) with immiscible noise coupling,
evaluation at several sampling step counts, checkpoints that resume bit-exactly, and JSONL/CSV
logs; runs on one process or under torchrun (DDP)."""

import copy
import csv
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import torch
import torch.distributed as dist

from immiscible_ops.noise import immiscible_noise
from immiscible_ops.ops import assign
from immiscible_ops.stats import coupling_stats
from immiscible_ops.train import conditions as conditions_mod
from immiscible_ops.train import data as data_mod
from immiscible_ops.train import metrics, models, objectives

COUPLINGS = ("none", "assign", "pool", "knn", "flip")
GROUPED = ("assign", "pool", "flip")  # couplings that take class groups; knn is per image anyway
CONDITION_SOURCES = ("none", "derived")
# Fields that may change between a run and its resumption: they do not alter the training path.
RESUMABLE_CHANGES = {"out", "steps", "resume", "eval_every", "eval_samples", "sample_steps",
                     "checkpoint_every", "log_every", "progress", "cache_dir", "device", "threads"}


@dataclass
class Config:
    """Everything a run depends on; saved in every checkpoint and in out/config.json."""

    data: str = "digits"
    out: str = "runs/default"
    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 100
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    seed: int = 0
    device: str = "cpu"
    objective: str = "ddpm"
    t_sampling: str = "uniform"
    coupling: str = "none"
    precision: str = "fp16"
    solver: str = "auto"
    pool_factor: int = 2
    k: int = 8
    assignment_scope: str = "rank"
    class_conditional: bool = False
    conditions: str = "none"
    condition_groups: bool = False
    condition_weight: Optional[float] = None
    condition_target_r: Optional[float] = None
    condition_metric: str = "cosine"
    image_size: Optional[int] = None
    n_points: int = 8000
    test_fraction: float = 0.2
    unet_widths: Tuple[int, ...] = (32, 64)
    layers_per_block: int = 1
    mlp_hidden: int = 128
    mlp_depth: int = 3
    train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    ct_s0: int = objectives.ICT_S0
    ct_s1: int = objectives.ICT_S1
    ct_total_steps: Optional[int] = None
    sample_steps: Tuple[int, ...] = (20,)
    eval_every: int = 200
    eval_samples: int = 1000
    feature_epochs: int = 15
    checkpoint_every: int = 500
    log_every: int = 10
    resume: Optional[str] = None
    progress: bool = True
    cache_dir: Optional[str] = None
    threads: Optional[int] = None

    def validate(self):
        if isinstance(self.sample_steps, int):
            self.sample_steps = (self.sample_steps,)
        self.sample_steps = tuple(int(n) for n in self.sample_steps)
        if not self.sample_steps or min(self.sample_steps) <= 0:
            raise ValueError(f"sample_steps: expected positive integers, got {self.sample_steps}")
        if self.objective not in objectives.OBJECTIVES:
            raise ValueError(f"objective: expected one of {', '.join(objectives.OBJECTIVES)}, got {self.objective!r}")
        if self.t_sampling not in objectives.T_SAMPLINGS:
            raise ValueError(f"t_sampling: expected one of {', '.join(objectives.T_SAMPLINGS)}, "
                             f"got {self.t_sampling!r}")
        if self.coupling not in COUPLINGS:
            raise ValueError(f"coupling: unknown coupling {self.coupling!r}; expected one of {', '.join(COUPLINGS)}")
        self._validate_conditions()
        if self.assignment_scope not in ("rank", "global"):
            raise ValueError(f"assignment_scope: expected rank or global, got {self.assignment_scope!r}")
        for name in ("steps", "batch_size", "eval_every", "checkpoint_every", "log_every",
                     "eval_samples", "train_timesteps", "ct_s0"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: expected a positive integer, got {getattr(self, name)}")
        if self.ct_s1 < self.ct_s0:
            raise ValueError(f"ct_s1: expected at least ct_s0 ({self.ct_s0}), got {self.ct_s1}")
        if self.ct_total_steps is not None and self.ct_total_steps <= 0:
            raise ValueError(f"ct_total_steps: expected a positive integer, got {self.ct_total_steps}")
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"test_fraction: expected a value in (0, 1), got {self.test_fraction}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay: expected a value in [0, 1), got {self.ema_decay}")
        return self

    def _validate_conditions(self):
        if self.conditions not in CONDITION_SOURCES:
            raise ValueError(f"conditions: expected one of {', '.join(CONDITION_SOURCES)}, "
                             f"got {self.conditions!r}")
        derived = self.conditions == "derived"
        if derived and self.class_conditional:
            raise ValueError("conditions: derived conditions and class_conditional exclude each "
                             "other (the model takes one kind of condition)")
        for name in ("condition_groups", "condition_weight", "condition_target_r"):
            if getattr(self, name) not in (None, False) and not derived:
                raise ValueError(f"{name}: needs conditions 'derived'")
        if self.condition_weight is not None and self.condition_target_r is not None:
            raise ValueError("condition_weight, condition_target_r: give one, not both")
        if self.condition_weight is not None and not (0 <= self.condition_weight < math.inf):
            raise ValueError("condition_weight: expected a finite number >= 0, got "
                             f"{self.condition_weight}")
        if self.condition_target_r is not None and not 0 < self.condition_target_r <= 1:
            raise ValueError("condition_target_r: expected a fraction in (0, 1], got "
                             f"{self.condition_target_r}")
        weighted = self.condition_weight is not None or self.condition_target_r is not None
        if (weighted or self.condition_groups) and self.coupling not in GROUPED:
            raise ValueError("coupling: condition-aware coupling needs one of "
                             f"{', '.join(GROUPED)}, "
                             f"got {self.coupling!r}")
        if self.condition_metric not in ("cosine", "sqeuclidean"):
            raise ValueError("condition_metric: expected cosine or sqeuclidean, got "
                             f"{self.condition_metric!r}")

    def training_dict(self) -> dict:
        return {k: v for k, v in self.to_dict().items() if k not in RESUMABLE_CHANGES}

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["unet_widths"] = list(self.unet_widths)
        d["sample_steps"] = [self.sample_steps] if isinstance(self.sample_steps, int) else list(self.sample_steps)
        return d


def noise_kwargs(cfg: Config) -> dict:
    """Options immiscible_noise takes for the chosen coupling."""
    if cfg.coupling in ("assign", "flip"):
        return {"precision": cfg.precision, "solver": cfg.solver, **condition_kwargs(cfg)}
    if cfg.coupling == "pool":
        return {"precision": cfg.precision, "solver": cfg.solver, "pool_factor": cfg.pool_factor,
                **condition_kwargs(cfg)}
    if cfg.coupling == "knn":
        return {"k": cfg.k}
    return {}


def condition_kwargs(cfg: Config) -> dict:
    """The C2OT keywords of immiscible_noise (the conditions themselves travel per batch)."""
    if cfg.condition_weight is None and cfg.condition_target_r is None:
        return {}
    if cfg.condition_weight is not None:
        return {"condition_weight": cfg.condition_weight, "condition_metric": cfg.condition_metric}
    return {"condition_target_r": cfg.condition_target_r, "condition_metric": cfg.condition_metric}


class Dist:
    """Process-group facts; single-process when not launched by torchrun."""

    def __init__(self, device: str):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", local)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.owns_group = False
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
            self.owns_group = True

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self):
        if self.world > 1:
            dist.barrier()

    def gather(self, obj):
        if self.world == 1:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def close(self):
        if self.owns_group:
            dist.destroy_process_group()


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def batch_indices(step: int, batch: int, n: int, seed: int) -> torch.Tensor:
    """Global batch of a step: consecutive slices of seeded per-epoch permutations, a pure
    function of the step so resuming needs no data-loader state."""
    pos = torch.arange(step * batch, (step + 1) * batch)
    epochs, offsets = pos // n, pos % n
    out = torch.empty(batch, dtype=torch.long)
    for e in epochs.unique().tolist():
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + e))
        sel = epochs == e
        out[sel] = perm[offsets[sel]]
    return out


class Logger:
    """Every record to log.jsonl, train/eval records also to train.csv/eval.csv; on resume the
    records past the checkpoint's step are dropped, so the files read like one run."""

    def __init__(self, out: Path, resume_step: Optional[int]):
        self.out = out
        self.jsonl = out / "log.jsonl"
        self.headers = {}
        records = []
        if resume_step is not None and self.jsonl.exists():
            records = [r for r in map(json.loads, self.jsonl.read_text().splitlines())
                       if r.get("step", 0) <= resume_step]
        for kind in ("train", "eval"):
            (out / f"{kind}.csv").unlink(missing_ok=True)
        self.jsonl.write_text("")
        for r in records:
            self.log(r)

    def log(self, record: dict):
        with open(self.jsonl, "a") as f:
            f.write(json.dumps(record) + "\n")
        kind = record["type"]
        if kind not in ("train", "eval"):
            return
        path = self.out / f"{kind}.csv"
        new = kind not in self.headers
        if new:
            self.headers[kind] = [k for k in record if k != "type"]
        with open(path, "a", newline="") as f:
            w = csv.DictWriter(f, self.headers[kind], extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(record)


class Evaluator:
    """Samples the EMA model at each of cfg.sample_steps and scores the samples against held-out
    data: keys "<metric>@<steps>" for every step count, the bare "<metric>" for the largest, and
    the objective's diagnostics at the largest step count (flow: "straightness")."""

    def __init__(self, cfg: Config, train: data_mod.Dataset, test: data_mod.Dataset, device, log,
                 conditioner: Optional[conditions_mod.DerivedConditions] = None):
        self.cfg, self.device = cfg, device
        self.kind = test.kind
        n = min(cfg.eval_samples, test.x.shape[0])
        self.real = test.x[:n]
        self.labels = test.labels[:n] if (cfg.class_conditional and test.labels is not None) else None
        # Derived conditions: sample i is generated for held-out sample i's condition.
        self.conditioner = conditioner
        if conditioner is not None:
            self.labels = conditioner(self.real)
            self.classes = conditioner.classes(self.real) if self.kind == "points" else None
        self.reference = {}
        if self.kind == "image":
            self.net = metrics.feature_extractor(train, cache_dir=cfg.cache_dir, epochs=cfg.feature_epochs,
                                                 seed=0, device=device, log=log)
            self.real_features = metrics.extract(self.net, self.real)
            # The metric's floor: real training images scored like samples.
            floor = train.x[torch.randperm(train.x.shape[0], generator=torch.Generator().manual_seed(1))[:n]]
            self.reference = metrics.image_metrics(self.net, self.real_features, floor)
        else:
            floor = train.x[torch.randperm(train.x.shape[0], generator=torch.Generator().manual_seed(1))[:n]]
            self.reference = {"w2": metrics.w2_distance(floor, self.real)}

    def score(self, x):
        if self.kind == "image":
            out = metrics.image_metrics(self.net, self.real_features, x)
        else:
            out = {"w2": metrics.w2_distance(x, self.real)}
        if self.conditioner is not None:
            adherence = self.conditioner.adherence(x, self.labels)
            out.update(adherence=adherence, cond_error=1 - adherence)
            if self.kind == "points":
                out["w2_cond"] = conditions_mod.per_condition_w2(x, self.real, self.classes,
                                                                 metrics.w2_distance)
        return out

    def __call__(self, model, objective):
        labels = None if self.labels is None else self.labels.to(self.device)
        was_training = model.training
        model.eval()
        scores, best = {}, None
        largest = max(self.cfg.sample_steps)
        for n in sorted(set(self.cfg.sample_steps)):
            # The same starting noise at every step count: differences are the solver's alone.
            g = torch.Generator(self.device).manual_seed(self.cfg.seed + 12345)
            x = objective.sample(model, self.real.shape, steps=n, generator=g, device=self.device,
                                 labels=labels, clip=1.0 if self.kind == "image" else None).cpu()
            for k, v in self.score(x).items():
                scores[f"{k}@{n}"] = v
                if n == largest:
                    scores[k] = v
            if n == largest:
                best = x
        g = torch.Generator(self.device).manual_seed(self.cfg.seed + 12345)
        scores.update(objective.diagnostics(model, self.real.shape, steps=largest, generator=g,
                                            device=self.device, labels=labels))
        model.train(was_training)
        return scores, best


def save_samples(path: Path, x: torch.Tensor, kind: str, real: Optional[torch.Tensor] = None):
    """PNG: an image grid (images) or a scatter plot over the real data (points)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "image":
        from PIL import Image

        x = x[:64]
        n, c, h, w = x.shape
        cols = int(math.ceil(math.sqrt(n)))
        rows = int(math.ceil(n / cols))
        grid = torch.full((c, rows * (h + 1) + 1, cols * (w + 1) + 1), -1.0)
        for i in range(n):
            r, q = divmod(i, cols)
            grid[:, 1 + r * (h + 1):1 + r * (h + 1) + h, 1 + q * (w + 1):1 + q * (w + 1) + w] = x[i]
        arr = ((grid.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
        img = Image.fromarray(arr[..., 0] if c == 1 else arr[..., :3])
        scale = max(1, 256 // img.width)  # small images are unreadable at native size
        img.resize((img.width * scale, img.height * scale), Image.NEAREST).save(path)
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 4))
    if real is not None:
        ax.scatter(real[:, 0], real[:, 1], s=2, c="0.75", label="held-out data")
    ax.scatter(x[:, 0], x[:, 1], s=2, c="C0", label="samples")
    ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize=7, markerscale=4)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _load_data(cfg: Config):
    ds = data_mod.load_dataset(cfg.data, n_points=cfg.n_points, image_size=cfg.image_size, seed=cfg.seed)
    if cfg.class_conditional and ds.labels is None:
        raise ValueError(f"class_conditional: data {cfg.data!r} has no labels (image folders need one "
                         "subfolder per class; .npz files a y or labels array)")
    # The split's seed is fixed, not cfg.seed: every seed of an experiment scores on the same test set.
    return ds.split(cfg.test_fraction, seed=0)


def coupling_record(cfg: Config, x0, conditions, groups, step: int, kw: dict) -> dict:
    """coupling_stats of the current batch (conditions: the derived ones, or None) against a
    fresh draw from its own generator (the training noise stream is untouched, so resumed runs
    stay bit-exact), keys "coupling_*": the batch's own assignment for assign/pool/flip (flip's
    against the reversed noise), the identity for none, nothing for knn (no assignment)."""
    if cfg.coupling == "knn":
        return {}
    g = torch.Generator(x0.device).manual_seed(cfg.seed * 1_000_003 + step)
    pool = cfg.pool_factor * x0.shape[0] if cfg.coupling == "pool" else x0.shape[0]
    noise = torch.randn((pool, *x0.shape[1:]), generator=g, device=x0.device, dtype=x0.dtype)
    if cfg.coupling == "none":
        index = torch.arange(x0.shape[0], device=x0.device)
    else:
        target = noise
        if cfg.coupling == "flip":
            target = noise.reshape(pool, -1).flip(-1).reshape(noise.shape)
        options = {k: v for k, v in kw.items() if k != "pool_factor"}
        weighted = "condition_weight" in options or "condition_target_r" in options
        index = assign(x0, target, groups=groups, conditions=conditions if weighted else None,
                       **options)
    stats = coupling_stats(x0, noise, index, conditions,
                           condition_metric=cfg.condition_metric)
    return {f"coupling_{k}": v for k, v in stats.items()}


def _ema_update(ema, model, decay):
    with torch.no_grad():
        e = list(ema.parameters())
        p = list(model.parameters())
        torch._foreach_lerp_(e, p, 1.0 - decay)
        for eb, mb in zip(ema.buffers(), model.buffers(), strict=True):
            eb.copy_(mb)


def _differences(saved: dict, now: dict) -> str:
    """"key: checkpoint A vs now B" for every key whose value differs, or "" when none does."""
    keys = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    return ", ".join(f"{k}: checkpoint {saved.get(k)!r} vs now {now.get(k)!r}" for k in keys)


def _check_resume(ckpt: dict, cfg: Config, world: int, fingerprint: str, path: Path,
                  objective_state: dict):
    # A field missing from an older checkpoint had its default then (fields are only ever added
    # with the default that keeps the old behaviour), so such checkpoints still resume.
    detail = _differences({**Config().training_dict(), **ckpt["config"]}, cfg.training_dict())
    if detail:
        raise ValueError(f"resume: checkpoint {path} is from a different configuration ({detail})")
    if ckpt["world_size"] != world:
        raise ValueError(f"resume: checkpoint {path} was written by {ckpt['world_size']} processes, "
                         f"this run has {world}; the noise generators are per process")
    if ckpt["data_fingerprint"] != fingerprint:
        raise ValueError(f"resume: checkpoint {path} was trained on different data "
                         f"(fingerprint {ckpt['data_fingerprint']} vs {fingerprint})")
    detail = _differences(ckpt.get("objective", {}), objective_state)
    if detail:
        raise ValueError(f"resume: checkpoint {path} was trained with different objective settings ({detail}); "
                         "a consistency run's curriculum follows --ct-total-steps (default --steps): "
                         "pass the checkpoint's value to extend it")


def train(cfg: Config) -> dict:
    """Runs (or resumes) cfg; returns a summary with the last evaluation and timings."""
    cfg.validate()
    if cfg.threads:
        # One thread per process is much faster than two on a shared 2-core machine: OpenMP
        # workers spin-wait while other processes hold the cores (81 vs 909 ms per UNet step).
        torch.set_num_threads(cfg.threads)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if cfg.batch_size % world:
        raise ValueError(f"batch_size: {cfg.batch_size} is not divisible by the world size {world}")
    ctx = Dist(cfg.device)
    try:
        return _train(cfg, ctx)
    finally:
        ctx.close()


def _noise_function(cfg: Config, ctx: Dist):
    """immiscible_noise, or its global form when one assignment spans all ranks."""
    if cfg.assignment_scope != "global" or ctx.world == 1:
        return immiscible_noise
    from immiscible_ops._checks import GLOBAL_METHODS
    from immiscible_ops.distributed import immiscible_noise_global

    if cfg.coupling not in GLOBAL_METHODS:
        raise ValueError(f"assignment_scope: global needs a coupling among "
                         f"{', '.join(GLOBAL_METHODS)}, got {cfg.coupling!r} (it has no "
                         "cross-image coupling; use rank)")
    return immiscible_noise_global


def _load_checkpoint(cfg: Config, out: Path):
    """(checkpoint dict, its path), or (None, None) for a fresh run."""
    if not cfg.resume:
        return None, None
    path = out / "checkpoint.pt" if cfg.resume == "auto" else Path(cfg.resume)
    if not path.exists():
        raise FileNotFoundError(f"resume: no checkpoint at {path.resolve()}")
    return torch.load(path, map_location="cpu", weights_only=False), path


@dataclass
class _State:
    """What a checkpoint holds besides the configuration: weights, optimizer, noise generator."""

    model: torch.nn.Module
    ema: torch.nn.Module
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    gen: torch.Generator
    step: int = 0


def _build_state(cfg: Config, ctx: Dist, train_set: data_mod.Dataset, num_classes: int,
                 ckpt: Optional[dict], condition_dim: int = 0) -> _State:
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    model = models.build_model(train_set.kind, tuple(train_set.x.shape[1:]), num_classes,
                               unet_widths=tuple(cfg.unet_widths),
                               layers_per_block=cfg.layers_per_block,
                               mlp_hidden=cfg.mlp_hidden, mlp_depth=cfg.mlp_depth,
                               condition_dim=condition_dim).to(ctx.device)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(1, cfg.warmup)))
    gen = torch.Generator(ctx.device).manual_seed(cfg.seed * 7919 + 104729 * (ctx.rank + 1))
    state = _State(model, ema, opt, sched, gen)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        ema.load_state_dict(ckpt["ema"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["lr_schedule"])
        gen.set_state(ckpt["rng"]["noise"][ctx.rank])
        torch.set_rng_state(ckpt["rng"]["torch_cpu"])
        state.step = ckpt["step"]
    return state


def _save_checkpoint(state: _State, cfg: Config, ctx: Dist, out: Path, fingerprint: str,
                     objective) -> None:
    """Collective (every rank's noise generator state is gathered); rank 0 writes."""
    states = ctx.gather(state.gen.get_state())
    if not ctx.main:
        return
    blob = {"model": state.model.state_dict(), "ema": state.ema.state_dict(),
            "optimizer": state.opt.state_dict(), "lr_schedule": state.sched.state_dict(),
            "step": state.step, "config": cfg.training_dict(), "full_config": cfg.to_dict(),
            "world_size": ctx.world, "data_fingerprint": fingerprint,
            "objective": objective.state(),
            "rng": {"noise": states, "torch_cpu": torch.get_rng_state()}}
    tmp = out / "checkpoint.pt.tmp"
    torch.save(blob, tmp)
    os.replace(tmp, out / "checkpoint.pt")  # a kill mid-write leaves the last good checkpoint


def _evaluate(evaluator: Evaluator, logger: Logger, state: _State, objective, out: Path,
              kind: str, stats: dict) -> dict:
    """Scores the EMA model; stats (coupling_record) go to the log beside the scores, and the
    returned scores, the summary's "final", keep sample quality only."""
    scores, samples = evaluator(state.ema, objective)
    logger.log({"type": "eval", "step": state.step, **scores, **stats})
    save_samples(out / "samples" / f"step_{state.step:06d}.png", samples, kind,
                 evaluator.real if kind == "points" else None)
    return scores


def _progress_bar(cfg: Config, ctx: Dist, step: int):
    if not (ctx.main and cfg.progress):
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=cfg.steps, initial=step, desc=f"{cfg.objective} {cfg.coupling}",
                dynamic_ncols=True)


def _optimizer_step(state: _State, net, objective, cfg: Config, x0, noise, y) -> float:
    """One loss, backward, clipped update and EMA update; returns the loss (a GPU sync point)."""
    loss = objective.loss(net, x0, noise, y, state.gen, step=state.step)
    state.opt.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(state.model.parameters(), cfg.grad_clip)
    state.opt.step()
    state.sched.step()
    _ema_update(state.ema, state.model, min(cfg.ema_decay, (1 + state.step) / (10 + state.step)))
    state.step += 1
    return loss.item()


class _Timings:
    """Step and noise times: a window of log_every steps for the progress bar, and run totals."""

    def __init__(self):
        self.totals = {"step_s": 0.0, "noise_s": 0.0, "n": 0}
        self.reset_window()

    def reset_window(self):
        self.window = {"loss": 0.0, "step_s": 0.0, "noise_s": 0.0, "n": 0}

    def add(self, step_s: float, noise_s: float, loss: float):
        for acc in (self.window, self.totals):
            acc["step_s"] += step_s
            acc["noise_s"] += noise_s
            acc["n"] += 1
        self.window["loss"] += loss

    def postfix(self, batch_size: int) -> dict:
        w, n = self.window, self.window["n"]
        return {"loss": f"{w['loss'] / n:.4f}", "img_s": f"{batch_size * n / w['step_s']:.0f}",
                "noise_ms": f"{w['noise_s'] / n * 1e3:.2f}"}

    def mean_ms(self, key: str) -> float:
        return self.totals[key] / max(1, self.totals["n"]) * 1e3


def _train(cfg: Config, ctx: Dist) -> dict:
    noise_fn = _noise_function(cfg, ctx)
    device = ctx.device
    out = Path(cfg.out)
    say = (lambda msg: print(msg, flush=True)) if ctx.main else (lambda msg: None)
    ckpt, resume_path = _load_checkpoint(cfg, out)

    train_set, test_set = _load_data(cfg)
    fingerprint = train_set.fingerprint()
    objective = objectives.build_objective(cfg.objective, t_sampling=cfg.t_sampling,
                                           train_timesteps=cfg.train_timesteps,
                                           beta_schedule=cfg.beta_schedule,
                                           data_std=float(train_set.x.std()),
                                           total_steps=cfg.ct_total_steps or cfg.steps,
                                           ct_s0=cfg.ct_s0, ct_s1=cfg.ct_s1)
    if ckpt is not None:
        _check_resume(ckpt, cfg, ctx.world, fingerprint, resume_path, objective.state())
    if ctx.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
    x_all = train_set.x.to(device)
    use_labels = cfg.class_conditional
    y_all = train_set.labels.to(device) if use_labels else None
    num_classes = train_set.num_classes if use_labels else 0
    conditioner, groups_all, condition_dim = None, None, 0
    if cfg.conditions == "derived":
        conditioner = conditions_mod.DerivedConditions(train_set.kind, train_set.x)
        y_all, use_labels = conditioner(train_set.x).to(device), True
        condition_dim = conditioner.dim
        if cfg.condition_groups:
            classes = train_set.labels
            if classes is None:
                classes = conditioner.classes(train_set.x)
            groups_all = classes.to(device)
    elif use_labels:
        groups_all = y_all
    weighted = bool(condition_kwargs(cfg))

    state = _build_state(cfg, ctx, train_set, num_classes, ckpt, condition_dim)
    if ckpt is not None:
        say(f"resumed from {resume_path} at step {state.step}")
    net = state.model
    if ctx.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            state.model, device_ids=[device.index] if device.type == "cuda" else None)

    logger = Logger(out, state.step if ckpt is not None else None) if ctx.main else None
    evaluator = Evaluator(cfg, train_set, test_set, device, say, conditioner) if ctx.main else None
    if ctx.main and ckpt is None:
        logger.log({"type": "reference", "step": 0, **evaluator.reference,
                    "n_train": int(train_set.x.shape[0]), "n_test": int(test_set.x.shape[0]),
                    "world_size": ctx.world})
    kw = noise_kwargs(cfg)
    per_rank = cfg.batch_size // ctx.world
    bar = _progress_bar(cfg, ctx, state.step)
    state.model.train()
    timings = _Timings()
    last_scores = None
    while state.step < cfg.steps:
        t0 = time.perf_counter()
        idx = batch_indices(state.step, cfg.batch_size, x_all.shape[0], cfg.seed)
        idx = idx[ctx.rank * per_rank:(ctx.rank + 1) * per_rank].to(device)
        x0 = x_all[idx]
        y = y_all[idx] if use_labels else None
        _sync(device)
        tn = time.perf_counter()
        groups = groups_all[idx] if (groups_all is not None and cfg.coupling in GROUPED) else None
        noise = noise_fn(x0, method=cfg.coupling, generator=state.gen, groups=groups,
                         **({"conditions": y} if weighted else {}), **kw)
        _sync(device)
        noise_s = time.perf_counter() - tn
        loss_value = _optimizer_step(state, net, objective, cfg, x0, noise, y)
        step_s = time.perf_counter() - t0
        timings.add(step_s, noise_s, loss_value)
        step = state.step
        if ctx.main:
            # Every step's loss goes to the log: resume tests compare them one by one.
            logger.log({"type": "train", "step": step, "loss": loss_value,
                        "lr": state.sched.get_last_lr()[0], "step_ms": step_s * 1e3,
                        "noise_ms": noise_s * 1e3, "images_per_s": cfg.batch_size / step_s})
            if bar is not None:
                bar.update(1)
                if step % cfg.log_every == 0:
                    bar.set_postfix(**timings.postfix(cfg.batch_size))
        if step % cfg.log_every == 0:
            timings.reset_window()
        if ctx.main and (step % cfg.eval_every == 0 or step == cfg.steps):
            stats = coupling_record(cfg, x0, y if conditioner is not None else None, groups,
                                    step, kw)
            last_scores = _evaluate(evaluator, logger, state, objective, out, train_set.kind,
                                    stats)
            if bar is not None:
                bar.write(f"step {step}: "
                          + ", ".join(f"{k} {v:.4g}" for k, v in last_scores.items()))
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            _save_checkpoint(state, cfg, ctx, out, fingerprint, objective)
    if bar is not None:
        bar.close()
    ctx.barrier()
    summary = {"step": state.step, "final": last_scores,
               "step_ms": timings.mean_ms("step_s"), "noise_ms": timings.mean_ms("noise_s"),
               "reference": evaluator.reference if evaluator else None}
    if ctx.main:
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary
