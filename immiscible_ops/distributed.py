"""Global noise assignment across the ranks of a torch.distributed job (NCCL on GPU, gloo on CPU).

`immiscible_ops.immiscible_noise` couples each rank's batch with its own noise (local scope, the
default). `immiscible_noise_global` solves ONE assignment problem for the whole job:

  1. all-gather a small descriptor per rank (batch size, trailing shape, dtype, options, seed):
     ranks that disagree all raise the same ValueError instead of hanging in a later collective;
  2. every rank regenerates the same noise pool from rank 0's seed (noise never travels): B_total
     draws for "assign" and "flip", pool_size (default pool_factor * B_total) for "pool" (the
     descriptor refuses ranks whose devices would draw different streams from one seed, see
     random_stream_fingerprint); and computes the distance rows of its OWN images to the whole
     pool: images never leave their rank, not even quantized;
  3. the rows (fp32, or fp16/bf16 with cost_precision) are gathered on the solving rank, which
     runs linear_assignment on its device and broadcasts the permutation;
  4. each rank takes the pool rows assigned to its images.

Bytes per step for W ranks, batch b per rank, B = W*b, pool K (B, or the "pool" size), s bytes
per cost entry (4 fp32, 2 fp16): each rank sends b*K*s (the solver receives (B-b)*K*s), plus B*8
for the permutation and W*16*8 for descriptors. All-gathering fp16 images instead would move
B*D*2 to every rank: for D = 4*64*64 latents, b = 128, 8 ranks and a pool of K = 2B: 0.5 MB of
fp16 cost rows vs 32 MB of images.
Memory per rank: the K x D pool (as the same method on one device with the whole batch).
"""

import math
import zlib
from typing import Optional

import torch
import torch.distributed as dist

from immiscible_ops._checks import (
    COST_PRECISIONS,
    GLOBAL_DTYPES,
    GLOBAL_MAX_DIMS,
    SEED_HIGH,
    check_finite,
    check_global,
)
from immiscible_ops.ops import condition_cost, group_mask, linear_assignment, pairwise_distance

# descriptor: ok, b, ndim, dtype, has_groups, options hash, seed, random-stream fingerprint,
# trailing dims (padded with -1)
_HEAD = 8
_DESC_LEN = _HEAD + GLOBAL_MAX_DIMS


def random_stream_fingerprint(device: torch.device) -> int:
    """crc32 of what torch.randn's output on `device` depends on besides seed and shape. On
    CUDA the Philox offsets of each thread follow the launch grid, which torch sizes from the SM
    count and threads per SM once a tensor is large: two GPU models, or two MIG profiles of one,
    draw different pools from one seed. On CPU the vectorized path (AVX2/AVX512 vs scalar) can
    change the last bits. And any torch release may change either."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        what = ("cuda", props.multi_processor_count, props.max_threads_per_multi_processor,
                props.major, props.minor)
    else:
        what = (device.type, torch.backends.cpu.get_cpu_capability())
    return zlib.crc32(repr((torch.__version__, *what)).encode())


def _options_hash(method: str, pool_factor: int, pool_size, cost_precision: str,
                  kwargs: dict, conditions) -> int:
    pool = (pool_factor, pool_size) if method == "pool" else (1, None)
    width = None if conditions is None else math.prod(conditions.shape[1:])
    text = repr((method, pool, cost_precision, sorted(kwargs.items()), width))
    return zlib.crc32(text.encode())


def _descriptor(x, groups, conditions, method, pool_factor, pool_size, cost_precision, kwargs,
                generator) -> torch.Tensor:
    desc = torch.full((_DESC_LEN,), -1, dtype=torch.int64)
    error = None
    try:
        check_global(x, groups, method, pool_factor, pool_size, cost_precision, kwargs,
                     conditions)
    except ValueError as e:
        error = e
        desc[0] = 0
        return desc, error
    seed = torch.randint(0, SEED_HIGH, (1,), generator=generator,
                         device=generator.device if generator is not None else x.device)
    desc[:_HEAD] = torch.tensor([1, x.shape[0], x.dim(), GLOBAL_DTYPES.index(x.dtype),
                                 groups is not None,
                                 _options_hash(method, pool_factor, pool_size, cost_precision,
                                               kwargs, conditions), 0,
                                 random_stream_fingerprint(x.device)])
    desc[6] = seed.cpu()[0]
    desc[_HEAD:_HEAD + x.dim() - 1] = torch.tensor(x.shape[1:], dtype=torch.int64)
    return desc, None


def _check_agreement(table: torch.Tensor, error: Optional[ValueError]) -> None:
    """table [W, _DESC_LEN]: raise the same ValueError on every rank if any rank is off."""
    bad = [r for r in range(table.shape[0]) if table[r, 0] != 1]
    if bad:
        if error is not None:
            raise error
        raise ValueError(f"x: invalid arguments on rank(s) {bad}; see the error raised there")
    fields = {2: "number of dims", 3: "dtype", 4: "groups given or not", 5: "options (method, "
              "pool_factor, cost_precision, metric, precision, solver, tol, validate, "
              "conditions given or not and their width, condition_weight, condition_target_r, "
              "condition_metric)"}
    for col, what in fields.items():
        if (table[:, col] != table[0, col]).any():
            raise ValueError(f"x: ranks disagree on {what}: {table[:, col].tolist()}")
    shapes = table[:, _HEAD:]
    if (shapes != shapes[0]).any():
        shown = [tuple(s for s in row.tolist() if s >= 0) for row in shapes]
        raise ValueError(f"x: ranks disagree on the shape after the batch dim: {shown}")
    if (table[:, 7] != table[0, 7]).any():
        raise ValueError(
            "x: the ranks' devices draw different random streams from one seed (fingerprints "
            f"{table[:, 7].tolist()}): every rank regenerates the shared noise pool with "
            "torch.randn, whose CUDA output depends on the GPU's SM count and threads per SM (GPU model, MIG "
            "profile) and on the torch version, so the pools would differ and the coupling would "
            "be wrong. Use one GPU model and torch version on every rank of the group, or "
            "immiscible_noise on each rank (local scope).")


def immiscible_noise_global(x: torch.Tensor, *, group=None, method: str = "assign",
                            generator: Optional[torch.Generator] = None,
                            groups: Optional[torch.Tensor] = None,
                            conditions: Optional[torch.Tensor] = None, pool_factor: int = 2,
                            pool_size: Optional[int] = None, cost_precision: str = "fp32",
                            **assign_kwargs) -> torch.Tensor:
    """Collective: x [b_r, ...] on each rank of `group` -> noise like x from one assignment of the
    concatenated batch (rank order, B = sum(b_r)) to a shared pool of B draws (for method "pool":
    pool_size >= B draws for the whole job, default pool_factor * B); method "assign" | "pool" |
    "flip", groups [b_r] and conditions [b_r, ...] (with condition_weight= or condition_target_r=)
    as in immiscible_noise: slot j of the pool carries the condition of image j of the
    concatenated batch, and target r is C2OT's fraction over the whole job's cost."""
    world = dist.get_world_size(group)
    rank = dist.get_rank(group)
    src = dist.get_global_rank(group, 0) if group not in (None, dist.GroupMember.WORLD) else 0
    device = x.device if isinstance(x, torch.Tensor) else torch.device("cpu")

    desc, error = _descriptor(x, groups, conditions, method, pool_factor, pool_size, cost_precision,
                              assign_kwargs, generator)
    table = [torch.empty_like(desc, device=device) for _ in range(world)]
    dist.all_gather(table, desc.to(device), group=group)
    table = torch.stack(table).cpu()
    _check_agreement(table, error)

    sizes = table[:, 1].tolist()
    b, total, bmax = sizes[rank], sum(sizes), max(sizes)
    offset = sum(sizes[:rank])
    if method == "pool":
        pool_size = pool_factor * total if pool_size is None else pool_size
        if pool_size < total:  # every rank holds the same table: all raise, none hangs
            raise ValueError(f"pool_size: a pool of {pool_size} is smaller than the job's "
                             f"batch of {total}")
    else:
        pool_size = total
    gen = torch.Generator(device=device).manual_seed(int(table[0, 6]))
    pool = torch.randn((pool_size, *x.shape[1:]), generator=gen, device=device, dtype=x.dtype)
    if total == 0:
        return pool[:0]
    target = pool.reshape(pool_size, -1)
    if method == "flip":
        target = target.flip(-1)

    metric = assign_kwargs.get("metric", "l2")
    precision = assign_kwargs.get("precision", "fp16")
    rows = torch.zeros((bmax, pool_size), dtype=COST_PRECISIONS[cost_precision], device=device)
    if b:
        rows[:b] = pairwise_distance(x.reshape(b, -1), target, metric=metric, precision=precision)
    labels = _gather_rows(groups.to(torch.int64) if groups is not None else None, b, bmax,
                          sizes, group, device)
    conds = None
    if conditions is not None:
        width = math.prod(conditions.shape[1:])
        conds = _gather_rows(conditions.reshape(b, width).float(), b, bmax, sizes, group, device)

    gathered = [torch.empty_like(rows) for _ in range(world)] if rank == 0 else None
    dist.gather(rows, gathered, dst=src, group=group)

    # status, then the permutation: a failed solve must release the other ranks, not hang them.
    perm = torch.zeros(total + 1, dtype=torch.int64, device=device)
    message = [None]
    if rank == 0:
        cost = torch.cat([r[:n] for r, n in zip(gathered, sizes, strict=True)]).float()
        validate = assign_kwargs.get("validate", True)
        try:
            if conds is not None:
                if validate:
                    check_finite("conditions", conds)
                cost, _ = condition_cost(cost, conds, assign_kwargs.get("condition_weight"),
                                         assign_kwargs.get("condition_target_r"),
                                         assign_kwargs.get("condition_metric", "cosine"))
            if labels is not None:
                cost.masked_fill_(~group_mask(labels, pool_size), float("inf"))
            perm[1:] = linear_assignment(cost, solver=assign_kwargs.get("solver", "auto"),
                                         tol=assign_kwargs.get("tol"), validate=validate)
        except ValueError as e:
            perm[0] = 1
            message = [str(e)]
    dist.broadcast(perm, src=src, group=group)
    if int(perm[0]):
        dist.broadcast_object_list(message, src=src, group=group)
        raise ValueError(f"x: the global assignment failed on rank 0 of the group: {message[0]}")
    return pool[perm[1 + offset:1 + offset + b]]


def _gather_rows(t: Optional[torch.Tensor], b: int, bmax: int, sizes: list, group,
                 device) -> Optional[torch.Tensor]:
    """Every rank's t [b_r, ...] (labels, conditions: small next to the cost rows), concatenated
    in rank order on every rank; None when t is None (all ranks agree on that)."""
    if t is None:
        return None
    padded = torch.zeros((bmax, *t.shape[1:]), dtype=t.dtype, device=device)
    padded[:b] = t
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded, group=group)
    return torch.cat([p[:n] for p, n in zip(parts, sizes, strict=True)])
