"""Global scope with C2OT conditions on 2 gloo CPU processes: the same noise as one process
solving the concatenated batch, and a disagreement about conditions raised on every rank."""

import datetime
import os
import socket
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from immiscible_ops import assign

WORLD = 2
SIZES = [7, 4]  # uneven on purpose
SHAPE = (2, 3, 3)
SEED_HIGH = 2**63 - 1


def cases():
    return {
        "weight": dict(condition_weight=4.0),
        "target_r": dict(condition_target_r=0.2),
        "pool_sq": dict(method="pool", pool_factor=2, condition_target_r=0.3,
                        condition_metric="sqeuclidean"),
        "groups": dict(condition_weight=2.0, groups="labels"),
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, port, data, out_dir):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=WORLD, timeout=datetime.timedelta(seconds=60))
    from immiscible_ops import immiscible_noise

    offset = sum(SIZES[:rank])
    part = slice(offset, offset + SIZES[rank])
    x, c, labels = data["x"][part], data["c"][part], data["labels"][part]
    results = {}
    try:
        for name, kwargs in cases().items():
            kwargs = dict(kwargs, precision="fp32")
            if kwargs.get("groups") == "labels":
                kwargs["groups"] = labels
            gen = torch.Generator().manual_seed(100 + rank)
            results[name] = immiscible_noise(x, scope="global", generator=gen, conditions=c,
                                             **kwargs)
        bad = {  # rank 1 deviates; every rank must raise, none may hang
            "given": dict(conditions=None, condition_weight=None),
            "width": dict(conditions=c[:, :3]),
            "weight": dict(condition_weight=5.0),
            "nan": dict(conditions=c.clone().fill_(float("nan"))),
        }
        for name, change in bad.items():
            kwargs = dict(conditions=c, condition_weight=4.0)
            if rank == 1:
                kwargs.update(change)
            kwargs = {k: v for k, v in kwargs.items() if v is not None}
            try:
                immiscible_noise(x, scope="global", **kwargs)
                results[f"bad_{name}"] = "no error"
            except ValueError as e:
                results[f"bad_{name}"] = str(e)
        after = immiscible_noise(x, scope="global", conditions=c, condition_weight=1.0)
        results["after"] = after.shape
    finally:
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
        dist.destroy_process_group()


def _launch(data, tmp_path, timeout=120):
    ctx = mp.start_processes(_worker, args=(_free_port(), data, str(tmp_path)), nprocs=WORLD,
                             join=False, start_method="spawn")
    deadline = time.monotonic() + timeout
    try:
        while not ctx.join(timeout=1):
            if time.monotonic() > deadline:
                pytest.fail(f"distributed workers did not finish within {timeout}s (hang)")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.terminate()
    return [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]


def _single_process(data, kwargs):
    """Rank 0's seed, the concatenated batch, one local assign."""
    x = data["x"]
    seed = int(torch.randint(0, SEED_HIGH, (1,), generator=torch.Generator().manual_seed(100)))
    pool_size = kwargs.get("pool_factor", 1) * len(x) if kwargs.get("method") == "pool" else len(x)
    pool = torch.randn((pool_size, *SHAPE), generator=torch.Generator().manual_seed(seed))
    akw = {k: v for k, v in kwargs.items() if k.startswith("condition_")}
    groups = data["labels"] if kwargs.get("groups") == "labels" else None
    return pool[assign(x, pool, precision="fp32", conditions=data["c"], groups=groups, **akw)]


def test_global_conditions_equal_single_process(tmp_path):
    total = sum(SIZES)
    data = {"x": torch.randn(total, *SHAPE), "c": torch.randn(total, 5),
            "labels": torch.randint(0, 2, (total,))}
    out = _launch(data, tmp_path)
    for name, kwargs in cases().items():
        got = torch.cat([out[r][name] for r in range(WORLD)])
        assert torch.equal(got, _single_process(data, kwargs)), name
    expect = {"given": "options", "width": "options", "weight": "options",
              "nan": "conditions: contains NaN"}
    for r in range(WORLD):
        for name, text in expect.items():
            assert text in out[r][f"bad_{name}"], (r, name, out[r][f"bad_{name}"])
        assert out[r]["after"] == (SIZES[r], *SHAPE)
