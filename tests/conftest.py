"""Shared fixtures: fresh random inputs every run, with the seed printed on failure."""

import os

import torch

# Without a GPU, the Triton kernels run through Triton's interpreter on CPU tensors. The flag is
# read when triton is first imported (by immiscible_ops), so it is set here, before any test module.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def gen(request):
    """A torch.Generator seeded from os.urandom (set IMMISCIBLE_TEST_SEED to replay a failure)."""
    seed = int(os.environ.get("IMMISCIBLE_TEST_SEED", int.from_bytes(os.urandom(4), "little")))
    request.node.user_properties.append(("seed", seed))
    g = torch.Generator().manual_seed(seed)
    return g


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for name, value in item.user_properties:
            if name == "seed":
                report.sections.append(("seed", f"IMMISCIBLE_TEST_SEED={value} reproduces this run"))


def scipy_optimum(cost: torch.Tensor) -> float:
    """scipy's optimal total on a 2-D cost (float64), the ground truth every solver is held to."""
    from scipy.optimize import linear_sum_assignment

    c = cost.double().numpy()
    rows, cols = linear_sum_assignment(c)
    return float(c[rows, cols].sum())


def assert_valid_assignment(row_to_col: torch.Tensor, n: int, m: int) -> None:
    """row_to_col [..., n]: indices in [0, m), distinct within each problem."""
    assert row_to_col.dtype == torch.long
    assert row_to_col.shape[-1] == n
    flat = row_to_col.reshape(-1, n)
    assert bool(((flat >= 0) & (flat < m)).all())
    for r in flat:
        assert r.unique().numel() == n


def make_cost(kind: str, n: int, m: int, gen: torch.Generator) -> torch.Tensor:
    """Fresh float64 cost [n, m] of a named family."""
    if kind == "uniform":
        return torch.rand(n, m, generator=gen, dtype=torch.float64)
    if kind == "integer_ties":
        return torch.randint(0, 4, (n, m), generator=gen).double()
    if kind == "all_equal":
        return torch.full((n, m), 3.25, dtype=torch.float64)
    if kind == "offset":
        return 1e4 + 1e-3 * torch.rand(n, m, generator=gen, dtype=torch.float64)
    if kind == "negative":
        return -5.0 + torch.randn(n, m, generator=gen, dtype=torch.float64)
    if kind == "l2_highdim":
        x = 0.5 * torch.randn(n, 512, generator=gen, dtype=torch.float64)
        z = torch.randn(m, 512, generator=gen, dtype=torch.float64)
        return torch.cdist(x, z)
    if kind == "large_range":
        return torch.exp(20 * torch.rand(n, m, generator=gen, dtype=torch.float64))
    raise KeyError(kind)


@pytest.fixture(scope="session")
def np_rng():
    return np.random.default_rng()


def tiny_train_config(tmp_path, name="run", **kw):
    """A trainer config that trains in about a second: tiny nets, few steps, small evaluation."""
    from immiscible_ops.train.trainer import Config

    base = dict(out=str(tmp_path / name), steps=4, batch_size=8, eval_every=4, checkpoint_every=4,
                eval_samples=24, sample_steps=2, unet_widths=(8, 16), mlp_hidden=32, mlp_depth=1,
                n_points=200, feature_epochs=1, warmup=2, progress=False,
                cache_dir=str(tmp_path / "cache"), threads=1)
    base.update(kw)
    return Config(**base)


def run_knn_interpreted(body: str, timeout: float = 600) -> str:
    """Runs `body` in a fresh interpreter with TRITON_INTERPRET=1 (it must be set before triton
    loads), with torch, numpy as np and immiscible_ops.knn, reference, triton_knn imported;
    returns its stdout."""
    import subprocess
    import sys
    import textwrap

    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1")
    code = ("import torch, numpy as np\nfrom immiscible_ops import knn, reference, triton_knn\n"
            + textwrap.dedent(body))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


def train_records(run, kind):
    """The JSONL log records of one kind ("train", "eval", ...) of a trainer run folder."""
    import json
    from pathlib import Path

    return [r for r in map(json.loads, Path(run, "log.jsonl").read_text().splitlines())
            if r["type"] == kind]


def assert_resumed_identically(full_out, part_out, keys=("ema",)):
    """A run killed and resumed (part_out) logged and saved exactly what the straight run did."""
    from pathlib import Path

    assert [r["loss"] for r in train_records(full_out, "train")] == \
        [r["loss"] for r in train_records(part_out, "train")]
    assert train_records(full_out, "eval") == train_records(part_out, "eval")
    ca = torch.load(Path(full_out, "checkpoint.pt"), weights_only=False)
    cb = torch.load(Path(part_out, "checkpoint.pt"), weights_only=False)
    for key in keys:
        for name, t in ca[key].items():
            assert torch.equal(t, cb[key][name]), (key, name)
    return ca, cb
