"""Consistency training (iCT): the boundary condition, the noise grid and curriculum, the loss
(coupled noise in both branches, the formula), one- and multistep sampling, and a short run that
trains, scores at 1 and 2 steps and resumes bit-exactly. Tiny models: seconds on a CPU."""

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("sklearn")

from conftest import assert_resumed_identically, tiny_train_config  # noqa: E402

from immiscible_ops.train import cli, models, objectives, trainer  # noqa: E402
from immiscible_ops.train.objectives import Consistency, ict_curriculum, karras_sigmas  # noqa: E402
from immiscible_ops.train.trainer import train  # noqa: E402


def tiny(tmp_path, name="run", **kw):
    return tiny_train_config(tmp_path, name, **{"sample_steps": (1, 2), "objective": "consistency",
                                                "ct_s0": 2, "ct_s1": 8, **kw})


def records(run, kind):
    return [r for r in map(json.loads, Path(run, "log.jsonl").read_text().splitlines()) if r["type"] == kind]


def random_ct(gen, total_steps=100):
    sigma_data = 0.2 + 2 * float(torch.rand((), generator=gen))
    return Consistency(sigma_data, total_steps)


# ---------------------------------------------------------------------------------------------
# Parameterization, grid, curriculum


@pytest.mark.parametrize("shape", [(7, 3), (5, 3, 8, 8)])
def test_boundary_condition_is_exact(gen, shape):
    """f(x, sigma_min) = x bit for bit, whatever the network outputs; not so above sigma_min."""
    ct = random_ct(gen)
    x = torch.randn(shape, generator=gen) * 3
    junk = torch.randn(shape, generator=gen) * 1e4

    def net(xin, t, labels):
        return junk

    at_min = ct.denoise(net, x, torch.full((shape[0],), ct.sigma_min), None)
    assert torch.equal(at_min, x)
    # The lowest level of every training grid is sigma_min exactly, so the teacher at index 0 is x.
    for n in (2, 11, 161, 1281):
        s = ct.grid(n)[0].to(torch.float32)
        assert torch.equal(ct.denoise(net, x, s[:1].expand(shape[0]), None), x)
    above = ct.denoise(net, x, torch.full((shape[0],), ct.sigma_min * 2), None)
    assert not torch.allclose(above, x)


def test_boundary_condition_with_real_models(gen):
    ct = random_ct(gen)
    for kind, shape in (("points", (2,)), ("image", (1, 8, 8))):
        net = models.build_model(kind, shape, 0, unet_widths=(8, 16), mlp_hidden=16, mlp_depth=1)
        x = torch.randn(6, *shape, generator=gen)
        with torch.no_grad():
            assert torch.equal(ct.denoise(net, x, torch.full((6,), ct.sigma_min), None), x)


def test_skip_and_out_coefficients(gen):
    """c_skip -> 0 and f -> sigma_data * F(...) at large sigma (the output is the network's)."""
    ct = random_ct(gen)
    x = torch.randn(4, 2, generator=gen, dtype=torch.float64)
    out = torch.randn(4, 2, generator=gen, dtype=torch.float64)
    sigma = torch.tensor([ct.sigma_max] * 4, dtype=torch.float64)
    seen = {}

    def net(xin, t, labels):
        seen["xin"], seen["t"] = xin, t
        return out

    f = ct.denoise(net, x, sigma, None)
    sd = ct.sigma_data
    c_skip = sd ** 2 / ((ct.sigma_max - ct.sigma_min) ** 2 + sd ** 2)
    c_out = (ct.sigma_max - ct.sigma_min) * sd / math.sqrt(ct.sigma_max ** 2 + sd ** 2)
    assert torch.allclose(f, c_skip * x + c_out * out)
    assert torch.allclose(seen["xin"], x / math.sqrt(ct.sigma_max ** 2 + sd ** 2))
    # The time input does not depend on the data's scale: iCT's 250 log(sigma) in CIFAR units.
    assert torch.allclose(seen["t"], torch.full((4,), 250 * math.log(objectives.ICT_SIGMA_MAX), dtype=torch.float64))


def test_noise_range_scales_with_the_data(gen):
    ct = random_ct(gen)
    ratio = ct.sigma_data / 0.5
    assert math.isclose(ct.sigma_min, 0.002 * ratio) and math.isclose(ct.sigma_max, 80 * ratio)
    assert math.isclose(ct.p_mean, -1.1 + math.log(ratio)) and ct.p_std == 2.0
    with pytest.raises(ValueError, match="sigma_data"):
        Consistency(0.0, 10)
    with pytest.raises(ValueError, match="s0, s1"):
        Consistency(0.5, 10, s0=20, s1=10)


@pytest.mark.parametrize("n", [2, 3, 11, 1281])
def test_karras_grid(n):
    s = karras_sigmas(n, 0.002, 80.0, 7.0)
    assert s.shape == (n,) and s[0] == 0.002 and s[-1] == 80.0 and bool((s[1:] > s[:-1]).all())
    i = torch.arange(n, dtype=torch.float64)
    ref = (0.002 ** (1 / 7) + i / (n - 1) * (80 ** (1 / 7) - 0.002 ** (1 / 7))) ** 7
    assert torch.allclose(s, ref, rtol=1e-12)


def test_curriculum_at_known_steps():
    # iCT: K = 800, s0 = 10, s1 = 1280: log2(128) + 1 = 8 stages of K' = 100 steps.
    expect = {0: 11, 99: 11, 100: 21, 199: 21, 200: 41, 350: 81, 400: 161, 500: 321, 600: 641,
              699: 641, 700: 1281, 799: 1281, 10 ** 6: 1281}
    assert {k: ict_curriculum(k, 800) for k in expect} == expect
    # The CPU preset's s1 = 160 over 1000 steps: 5 stages of 200.
    assert [ict_curriculum(k, 1000, 10, 160) for k in (0, 199, 200, 400, 600, 800, 999)] == \
        [11, 11, 21, 41, 81, 161, 161]
    # s1 / s0 not a power of two: floor(log2(floor(s1/s0))) + 1 stages, capped at s1.
    assert [ict_curriculum(k, 90, 10, 50) for k in (0, 29, 30, 60, 89)] == [11, 11, 21, 41, 41]
    # Fewer steps than stages: one step per stage, never a zero division.
    assert [ict_curriculum(k, 3, 10, 1280) for k in range(4)] == [11, 21, 41, 81]
    ct = Consistency(0.5, 800)
    assert ct.num_levels(150) == 21


def test_index_distribution_is_discretized_lognormal():
    ct = Consistency(0.5, 100)
    s, p, w = ct.grid(1281)
    assert p.shape == (1280,) and math.isclose(float(p.sum()), 1.0, rel_tol=1e-12) and bool((p >= 0).all())
    # P(sigma_i) ~ erf((ln s_{i+1} - Pm) / (sqrt 2 Ps)) - erf((ln s_i - Pm) / (sqrt 2 Ps)).
    e = torch.erf((s.log() + 1.1) / (math.sqrt(2) * 2.0))
    assert torch.allclose(p, (e[1:] - e[:-1]) / (e[-1] - e[0]), rtol=1e-10)
    # The median noise level sits near exp(P_mean) = 0.33.
    mid = s[int(torch.searchsorted(p.cumsum(0), torch.tensor(0.5, dtype=torch.float64)))]
    assert 0.25 < float(mid) < 0.45
    assert torch.allclose(w, 1 / (s[1:] - s[:-1]))


# ---------------------------------------------------------------------------------------------
# The loss


class Recorder:
    """A stand-in network that records what it was fed and answers a fixed function of it."""

    def __init__(self):
        self.calls = []
        self.lin = torch.nn.Linear(2, 2).double()

    def __call__(self, xin, t, labels):
        self.calls.append({"xin": xin.detach().clone(), "t": t.detach().clone(), "grad": torch.is_grad_enabled()})
        return self.lin(xin) + torch.tanh(t)[:, None]


def test_loss_uses_the_same_coupled_noise_in_both_branches(gen):
    ct = random_ct(gen)
    x0 = torch.randn(9, 2, generator=gen, dtype=torch.float64)
    noise = torch.randn(9, 2, generator=gen, dtype=torch.float64)
    net = Recorder()
    loss = ct.loss(net, x0, noise, None, torch.Generator().manual_seed(3), step=0)
    teacher, student = net.calls
    assert not teacher["grad"] and student["grad"]  # stop-gradient teacher, same network
    for call in (teacher, student):
        sigma = ct.scale * torch.exp(call["t"] / 250)
        xt = call["xin"] * torch.sqrt(sigma ** 2 + ct.sigma_data ** 2)[:, None]
        # x_t - x0 = sigma * z with z exactly the noise passed in.
        assert torch.allclose((xt - x0) / sigma[:, None], noise, atol=1e-6)
    s_lo = ct.scale * torch.exp(teacher["t"] / 250)
    s_hi = ct.scale * torch.exp(student["t"] / 250)
    sig = ct.grid(ct.num_levels(0))[0]
    lo_idx = (sig[None, :] - s_lo[:, None]).abs().argmin(1)
    assert torch.allclose(sig[lo_idx], s_lo, rtol=1e-9)
    assert torch.allclose(sig[lo_idx + 1], s_hi, rtol=1e-9)  # adjacent levels n, n+1
    loss.backward()
    assert net.lin.weight.grad is not None and float(net.lin.weight.grad.abs().sum()) > 0


def test_loss_formula(gen):
    """lambda(sigma_n) * (sqrt(|f(x + s_{n+1} z) - f(x + s_n z)|^2 + c^2) - c), c = 0.00054 sqrt(d)."""
    ct = random_ct(gen)
    x0 = torch.randn(6, 3, 4, 4, generator=gen, dtype=torch.float64)
    noise = torch.randn(6, 3, 4, 4, generator=gen, dtype=torch.float64)
    net = lambda xin, t, labels: torch.sin(xin * 3) + t[:, None, None, None] / 1000  # noqa: E731
    loss = ct.loss(net, x0, noise, None, torch.Generator().manual_seed(5), step=7)
    s, p, w = ct.grid(ct.num_levels(7))
    i = torch.multinomial(p, 6, replacement=True, generator=torch.Generator().manual_seed(5))
    lo, hi = s[i], s[i + 1]
    b = lambda v: v[:, None, None, None]  # noqa: E731
    d = (ct.denoise(net, x0 + b(hi) * noise, hi) - ct.denoise(net, x0 + b(lo) * noise, lo)).flatten(1)
    c = 0.00054 * math.sqrt(48) * ct.sigma_data / 0.5
    ref = (w[i] * (torch.sqrt(d.pow(2).sum(1) + c * c) - c)).mean()
    assert torch.allclose(loss, ref, rtol=1e-10)


def test_trainer_feeds_the_coupled_noise_to_both_branches(tmp_path, monkeypatch):
    """End to end: the noise immiscible_noise returned for the batch is the z of both x + sigma z."""
    seen = {"noise": [], "denoise": []}
    real_noise = trainer.immiscible_noise

    def noise_spy(x0, **kw):
        z = real_noise(x0, **kw)
        seen["noise"].append((x0.clone(), z.clone()))
        return z

    real_denoise = Consistency.denoise

    def denoise_spy(self, net, x, sigma, labels=None):
        seen["denoise"].append((x.detach().clone(), sigma.clone()))
        return real_denoise(self, net, x, sigma, labels)

    monkeypatch.setattr(trainer, "immiscible_noise", noise_spy)
    monkeypatch.setattr(Consistency, "denoise", denoise_spy)
    train(tiny(tmp_path, data="gmm", coupling="assign", steps=1, eval_every=10, checkpoint_every=10))
    (x0, z), = seen["noise"]
    teacher, student = seen["denoise"][:2]  # the training step's calls come before evaluation's
    for x, sigma in (teacher, student):
        assert torch.allclose((x - x0) / sigma[:, None], z, atol=1e-3, rtol=1e-3)
    assert bool((student[1] > teacher[1]).all())


# ---------------------------------------------------------------------------------------------
# Sampling


def test_sample_sigmas():
    ct = Consistency(1.0, 10)
    assert ct.sample_sigmas(1) == [ct.sigma_max]
    assert ct.sample_sigmas(2) == pytest.approx([ct.sigma_max, 0.821 * 2])
    s4 = ct.sample_sigmas(4)
    assert len(s4) == 4 and s4[0] == pytest.approx(ct.sigma_max) and s4[-1] == pytest.approx(0.821 * 2)
    assert all(a > b for a, b in zip(s4, s4[1:], strict=False))
    with pytest.raises(ValueError, match="steps"):
        ct.sample_sigmas(0)


def test_one_and_two_step_sampling(gen):
    """1 step: f(sigma_max z, sigma_max); 2 steps: then f(x + sqrt(tau^2 - sigma_min^2) z', tau)."""
    ct = random_ct(gen)
    lin = torch.nn.Linear(3, 3)
    model = lambda xin, t, labels: lin(xin) + t[:, None] / 500  # noqa: E731
    seed = int(torch.randint(0, 2 ** 31, (), generator=gen))
    one = ct.sample(model, (5, 3), steps=1, generator=torch.Generator().manual_seed(seed), device="cpu")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        ref = ct.denoise(model, ct.sigma_max * torch.randn(5, 3, generator=g), torch.full((5,), ct.sigma_max))
        assert torch.equal(one, ref)
        two = ct.sample(model, (5, 3), steps=2, generator=torch.Generator().manual_seed(seed), device="cpu")
        tau = 0.821 * ct.scale
        x = ref + math.sqrt(tau ** 2 - ct.sigma_min ** 2) * torch.randn(5, 3, generator=g)
        assert torch.equal(two, ct.denoise(model, x, torch.full((5,), tau)))
    clipped = ct.sample(model, (5, 3), steps=2, generator=torch.Generator().manual_seed(seed), device="cpu",
                        clip=0.5)
    assert float(clipped.abs().max()) <= 0.5


# ---------------------------------------------------------------------------------------------
# Through the trainer


def test_short_run_trains_scores_one_and_two_steps_and_resumes_bit_identically(tmp_path):
    # s0 = 2, s1 = 8 over 6 steps: the number of levels changes at steps 2 and 4, across the resume.
    kw = dict(data="digits", coupling="assign", steps=6, checkpoint_every=3, eval_every=3,
              ct_total_steps=6)
    full = tiny(tmp_path, "full", **kw)
    summary = train(full)
    ev = records(full.out, "eval")
    assert [r["step"] for r in ev] == [3, 6]
    assert {"fd@1", "fd@2", "fd", "mmd_poly@1"} <= set(ev[-1]) and ev[-1]["fd"] == ev[-1]["fd@2"]
    assert all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in records(full.out, "train"))
    assert summary["final"]["fd@1"] == ev[-1]["fd@1"]
    part = tiny(tmp_path, "part", **{**kw, "steps": 3})
    train(part)
    train(tiny(tmp_path, "part", **kw, resume="auto"))
    ca, cb = assert_resumed_identically(full.out, part.out, keys=("model", "ema"))
    assert ca["objective"] == cb["objective"] == {"sigma_data": ca["objective"]["sigma_data"],
                                                  "total_steps": 6, "s0": 2, "s1": 8}


def test_resume_with_another_curriculum_is_refused(tmp_path):
    # Without --ct-total-steps the curriculum follows --steps: extending a run would change it.
    train(tiny(tmp_path, "r", data="gmm", steps=2, eval_every=2, checkpoint_every=2))
    with pytest.raises(ValueError, match="total_steps: checkpoint 2 vs now 4"):
        train(tiny(tmp_path, "r", data="gmm", steps=4, eval_every=2, checkpoint_every=2, resume="auto"))
    with pytest.raises(ValueError, match="ct_s1"):
        tiny(tmp_path, ct_s0=8, ct_s1=4).validate()


def test_cli_consistency_on_digits(tmp_path):
    out = tmp_path / "cli"
    rc = cli.main(["--objective", "consistency", "--data", "digits", "--steps", "2", "--batch-size", "8",
                   "--sample-steps", "1", "2", "--eval-every", "2", "--eval-samples", "16",
                   "--unet-widths", "8,16", "--feature-epochs", "1", "--ct-s1", "20",
                   "--cache-dir", str(tmp_path / "cache"), "--out", str(out), "--no-progress",
                   "--threads", "1"])
    assert rc == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["objective"] == "consistency" and cfg["ct_s1"] == 20 and cfg["sample_steps"] == [1, 2]
    assert {"fd@1", "fd@2"} <= set(records(out, "eval")[-1])


def test_experiment_presets_for_consistency():
    import argparse

    from immiscible_ops.train import experiment

    a = argparse.Namespace(datasets="gmm,digits,patches", objectives="consistency,flow", scale="cpu",
                           sample_steps=[1, 2], methods="none,assign", seeds="0", image_steps=None,
                           points_steps=None, batch_size=None, evals=5, unet_widths=None, device="cpu",
                           out="/tmp/x", progress=False, cache_dir=None, threads=1, k=8, pool_factor=2,
                           class_conditional=False)
    cfgs = {(Path(c.data).stem, c.objective): c for c in experiment.run_configs(a)}
    for data, steps in (("gmm", 1000), ("digits", 800), ("patches", 300)):
        c = cfgs[(data, "consistency")]
        assert (c.steps, c.ct_s1, c.ct_total_steps, c.eval_every) == (steps, 160, steps, steps // 5)
    assert cfgs[("patches", "flow")].steps == 80 and cfgs[("patches", "flow")].ct_total_steps is None


def test_experiment_reports_each_step_count(tmp_path, capsys):
    from immiscible_ops.train import experiment

    argv = ["--datasets", "gmm", "--objectives", "consistency", "--methods", "none,flip", "--seeds", "0,1",
            "--points-steps", "4", "--evals", "2", "--batch-size", "16", "--sample-steps", "1", "2",
            "--out", str(tmp_path / "exp"), "--cache-dir", str(tmp_path / "cache")]
    assert experiment.main(argv) == 0
    res = json.loads((tmp_path / "exp" / "results.json").read_text())["gmm / consistency"]
    assert res["nfe"] == [1, 2]
    for m in res["methods"].values():
        assert set(m["steps_to_vanilla_final_by_nfe"]) == {"1", "2"} and m["seeds"] == 2
    assert res["methods"]["none"]["steps_to_vanilla_final_by_nfe"]["1"] is not None
    assert "paired_diff_by_nfe" not in res["methods"]["none"]
    diff = res["methods"]["flip"]["paired_diff_by_nfe"]["2"]
    runs = {(c, s): json.loads(Path(tmp_path / "exp" / f"gmm-consistency-{c}-s{s}" / "summary.json").read_text())
            for c in ("none", "flip") for s in (0, 1)}
    d = [runs[("flip", s)]["final"]["w2@2"] - runs[("none", s)]["final"]["w2@2"] for s in (0, 1)]
    assert math.isclose(diff[0], sum(d) / 2, rel_tol=1e-9)
    assert "minus none's, paired by seed" in (tmp_path / "exp" / "results.md").read_text()
    md = (tmp_path / "exp" / "results.md").read_text()
    assert "to vanilla @ 1 steps" in md and "| flip |" in md
    assert (tmp_path / "exp" / "curves.png").stat().st_size > 1000
    capsys.readouterr()


def test_ddp_two_gloo_processes(tmp_path):
    """Two forwards per step (teacher without grad, then student) run under DDP."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", f"--master-port={port}",
           "-m", "immiscible_ops.train", "--objective", "consistency", "--data", "gmm", "--coupling", "assign",
           "--steps", "4", "--batch-size", "16", "--eval-every", "4", "--eval-samples", "16",
           "--sample-steps", "1", "2", "--mlp-hidden", "16", "--mlp-depth", "1", "--n-points", "200",
           "--ct-s0", "2", "--ct-s1", "4", "--no-progress", "--threads", "1", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = torch.load(out / "checkpoint.pt", weights_only=False)
    assert ckpt["world_size"] == 2 and ckpt["step"] == 4 and ckpt["objective"]["total_steps"] == 4
    assert {"w2@1", "w2@2"} <= set(records(out, "eval")[-1])


def test_checkpoint_from_before_the_consistency_fields_resumes(tmp_path):
    """A DDPM checkpoint written before ct_* existed (config without them, no objective state)."""
    kw = dict(data="gmm", objective="ddpm", steps=4, checkpoint_every=2, eval_every=2, ct_s0=10, ct_s1=1280)
    full = tiny(tmp_path, "full", **kw)
    train(full)
    part = tiny(tmp_path, "part", **{**kw, "steps": 2})
    train(part)
    path = Path(part.out, "checkpoint.pt")
    ck = torch.load(path, weights_only=False)
    for key in ("ct_s0", "ct_s1", "ct_total_steps"):
        del ck["config"][key]
    del ck["objective"]
    torch.save(ck, path)
    train(tiny(tmp_path, "part", **kw, resume="auto"))
    assert [r["loss"] for r in records(full.out, "train")] == [r["loss"] for r in records(part.out, "train")]
