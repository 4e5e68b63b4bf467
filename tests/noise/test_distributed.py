"""immiscible_noise_global on 2 gloo CPU processes vs a single-process solve of the whole batch."""

import datetime
import os
import socket
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from immiscible_ops import assign, linear_assignment, pairwise_distance

WORLD = 2
SIZES = [3, 5]  # uneven on purpose
SHAPE = (3, 5, 7)
SEED_HIGH = 2**63 - 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_seed(rank: int) -> int:
    return 100 + rank


def cases():
    """(name, kwargs) run in order on every rank."""
    return [
        ("assign", dict()),
        ("pool", dict(method="pool", pool_factor=3)),
        ("pool_size", dict(method="pool", pool_size=13)),  # any K >= B for the job (B = 8)
        ("flip", dict(method="flip")),
        ("groups", dict(groups="labels")),
        ("fp16_cost", dict(cost_precision="fp16", precision="fp32")),
        ("l1_exact", dict(metric="l1", precision="fp32", solver="exact")),
    ]


def _worker(rank, port, scenario, data, out_dir):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=WORLD, timeout=datetime.timedelta(seconds=60))
    from immiscible_ops import immiscible_noise
    from immiscible_ops.distributed import immiscible_noise_global

    offset = sum(SIZES[:rank])
    x = data["x"][offset:offset + SIZES[rank]]
    labels = data["labels"][offset:offset + SIZES[rank]]
    results = {}
    try:
        if scenario == "match":
            for name, kwargs in cases():
                kwargs = dict(kwargs)
                if kwargs.get("groups") == "labels":
                    kwargs["groups"] = labels
                gen = torch.Generator().manual_seed(rank_seed(rank))
                results[name] = immiscible_noise_global(x, generator=gen, **kwargs)
            gen = torch.Generator().manual_seed(rank_seed(rank))
            results["scope"] = immiscible_noise(x, scope="global", generator=gen)
            gen = torch.Generator().manual_seed(rank_seed(rank))
            results["channels_last"] = immiscible_noise(
                x.contiguous(memory_format=torch.channels_last), scope="global", generator=gen)
        else:
            bad = {  # rank 1's deviation -> every rank must raise
                "shape": dict(x=x[:, :, :4]),
                "dtype": dict(x=x.double()),
                "ndim": dict(x=x.reshape(x.shape[0], -1)),
                "options": dict(kwargs=dict(metric="l1")),
                "invalid_arg": dict(kwargs=dict(method="knn")),
                "groups": dict(kwargs=dict(groups=labels)),
                "pool_size": dict(kwargs=dict(method="pool", pool_size=9)),
            }
            for name, change in bad.items():
                xr = change.get("x", x) if rank == 1 else x
                kwargs = change.get("kwargs", {}) if rank == 1 else {}
                try:
                    immiscible_noise_global(xr, **kwargs)
                    results[name] = "no error"
                except ValueError as e:
                    results[name] = str(e)
            try:  # agreed on by both ranks, but smaller than the job's batch of 8
                immiscible_noise_global(x, method="pool", pool_size=7)
                results["pool_too_small"] = "no error"
            except ValueError as e:
                results["pool_too_small"] = str(e)
            # Rank 1 on a device whose randn stream differs (another GPU model or MIG profile).
            import immiscible_ops.distributed as distributed

            real = distributed.random_stream_fingerprint
            if rank == 1:
                distributed.random_stream_fingerprint = lambda device: real(device) ^ 1
            try:
                immiscible_noise_global(x)
                results["random_stream"] = "no error"
            except ValueError as e:
                results["random_stream"] = str(e)
            finally:
                distributed.random_stream_fingerprint = real
            # The group is still usable after every failure.
            results["after"] = immiscible_noise_global(x).shape
    finally:
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
        dist.destroy_process_group()


def launch(scenario, data, tmp_path, timeout=120):
    ctx = mp.start_processes(_worker, args=(free_port(), scenario, data, str(tmp_path)),
                             nprocs=WORLD, join=False, start_method="spawn")
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


def fresh_data():
    total = sum(SIZES)
    return {"x": torch.randn(total, *SHAPE) * 1.4 + 0.1, "labels": torch.randint(0, 3, (total,))}


def single_process(data, name, kwargs):
    """The same problem solved on one process: rank 0's seed, the concatenated batch."""
    x = data["x"]
    seed = int(torch.randint(0, SEED_HIGH, (1,), generator=torch.Generator().manual_seed(rank_seed(0))))
    pool_size = len(x)
    if kwargs.get("method") == "pool":
        pool_size = kwargs.get("pool_size", kwargs.get("pool_factor", 2) * len(x))
    pool = torch.randn((pool_size, *SHAPE), generator=torch.Generator().manual_seed(seed))
    target = pool.reshape(pool_size, -1).flip(-1).reshape(pool.shape) if kwargs.get("method") == "flip" else pool
    akw = {k: v for k, v in kwargs.items() if k in ("metric", "precision", "solver")}
    if name == "groups":
        return pool[assign(x, target, groups=data["labels"])]
    if name == "fp16_cost":
        cost = pairwise_distance(x.reshape(len(x), -1), target.reshape(pool_size, -1))
        return pool[linear_assignment(cost.half().float())]
    return pool[assign(x, target, **akw)]


def test_global_equals_single_process(tmp_path):
    data = fresh_data()
    out = launch("match", data, tmp_path)
    for name, kwargs in cases():
        got = torch.cat([out[r][name] for r in range(WORLD)])
        want = single_process(data, name, kwargs)
        assert got.shape == data["x"].shape, name
        assert torch.equal(got, want), name
    for r in range(WORLD):
        assert torch.equal(out[r]["scope"], out[r]["assign"])
        assert torch.equal(out[r]["channels_last"], out[r]["assign"])
        assert out[r]["channels_last"].is_contiguous(memory_format=torch.channels_last)
    # Distinct noise across ranks: one global assignment, not two local ones.
    got = torch.cat([out[r]["assign"] for r in range(WORLD)]).reshape(sum(SIZES), -1)
    assert torch.unique(got, dim=0).shape[0] == sum(SIZES)


def test_mismatch_raises_on_every_rank(tmp_path):
    out = launch("mismatch", fresh_data(), tmp_path)
    expect = {"shape": "shape after the batch", "dtype": "dtype", "ndim": "number of dims",
              "options": "options", "groups": "groups given", "pool_size": "options",
              "pool_too_small": "pool_size: a pool of 7 is smaller than the job's batch of 8",
              "random_stream": "draw different random streams"}
    for r in range(WORLD):
        for name, text in expect.items():
            assert text in out[r][name], (r, name, out[r][name])
        assert out[r]["after"] == (SIZES[r], *SHAPE)
    assert out[1]["invalid_arg"].startswith("method:")
    assert "rank(s) [1]" in out[0]["invalid_arg"]
