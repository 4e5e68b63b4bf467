"""coupling_stats against numpy on fresh batches, and what it reports for known couplings."""

import numpy as np
import pytest
import torch

import immiscible_ops as io


def test_matches_numpy(gen):
    b, k = 20, 30
    x = torch.randn(b, 3, 4, generator=gen)
    noise = torch.randn(k, 3, 4, generator=gen)
    c = torch.randn(b, 5, generator=gen)
    index = torch.randperm(k, generator=gen)[:b]
    got = io.coupling_stats(x, noise, index, c)
    xn, nn = x.reshape(b, -1).numpy(), noise.reshape(k, -1).numpy()
    cn, ix = c.numpy(), index.numpy()
    before = np.linalg.norm(xn - nn[:b], axis=1).mean()
    after = np.linalg.norm(xn - nn[ix], axis=1).mean()
    assert got["distance_independent"] == pytest.approx(before, rel=1e-6)
    assert got["distance_coupled"] == pytest.approx(after, rel=1e-6)
    assert got["distance_reduction"] == pytest.approx(1 - after / before, rel=1e-5)
    assert got["moved"] == pytest.approx((ix != np.arange(b)).mean())
    unit = cn / np.linalg.norm(cn, axis=1, keepdims=True)
    owner = np.arange(k) * b // k  # the image whose condition slot j carries
    cos = 1 - unit @ unit[owner].T
    rows = np.arange(b)
    assert got["condition_distance_coupled"] == pytest.approx(cos[rows, ix].mean(), abs=1e-6)
    assert got["condition_distance_independent"] == pytest.approx(cos[rows, rows].mean(), abs=1e-6)
    assert got["condition_distance_random"] == pytest.approx(cos.mean(), abs=1e-6)


def test_known_couplings(gen):
    x = torch.randn(64, 16, generator=gen)
    noise = torch.randn(64, 16, generator=gen)
    same = io.coupling_stats(x, noise, torch.arange(64))
    assert same["moved"] == 0 and same["distance_reduction"] == 0
    coupled = io.coupling_stats(x, noise, io.assign(x, noise, precision="fp32"))
    assert coupled["distance_coupled"] < coupled["distance_independent"]
    assert 0 < coupled["distance_reduction"] < 1 and coupled["moved"] > 0.5
    # A condition cost keeps noise closer to the image's own condition than plain OT does.
    c = torch.randn(64, 8, generator=gen)
    plain = io.coupling_stats(x, noise, io.assign(x, noise), c)
    index = io.assign(x, noise, conditions=c, condition_target_r=0.1)
    aware = io.coupling_stats(x, noise, index, c)
    assert aware["condition_distance_coupled"] < plain["condition_distance_coupled"]
    assert aware["distance_reduction"] < plain["distance_reduction"]


@pytest.mark.parametrize("index,message", [
    (torch.arange(5), r"index: expected integer indices \[6\]"),
    (torch.arange(6).float(), "index: expected integer"),
    (torch.tensor([0, 1, 2, 3, 4, 9]), r"index: entries must lie in \[0, 6\)"),
])
def test_bad_index(gen, index, message):
    x = torch.randn(6, 3, generator=gen)
    with pytest.raises(ValueError, match=message):
        io.coupling_stats(x, torch.randn(6, 3, generator=gen), index)


def test_bad_conditions(gen):
    x = torch.randn(6, 3, generator=gen)
    with pytest.raises(ValueError, match="conditions: expected shape"):
        io.coupling_stats(x, torch.randn(6, 3, generator=gen), torch.arange(6), torch.randn(5, 2))
