"""Flow-matching objective: the path and target formulas, the Euler sampler, training and
evaluation at several step counts, and bit-exact resume. Tiny models: seconds on a CPU."""

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("sklearn")

from conftest import assert_resumed_identically, tiny_train_config  # noqa: E402

from immiscible_ops.train import cli, objectives  # noqa: E402
from immiscible_ops.train.trainer import train  # noqa: E402


def tiny(tmp_path, name="run", **kw):
    return tiny_train_config(tmp_path, name, **{"sample_steps": (1, 3), "objective": "flow", **kw})


def records(run, kind):
    return [r for r in map(json.loads, Path(run, "log.jsonl").read_text().splitlines()) if r["type"] == kind]


def test_flow_xt_and_target_formula():
    x0, noise = torch.randn(5, 3, 4, 4), torch.randn(5, 3, 4, 4)
    t = torch.rand(5)
    xt = objectives.flow_xt(x0, noise, t)
    for i in range(5):
        assert torch.allclose(xt[i], (1 - t[i]) * x0[i] + t[i] * noise[i])
    assert torch.equal(objectives.flow_target(x0, noise), noise - x0)
    assert torch.allclose(objectives.flow_xt(x0, noise, torch.zeros(5)), x0)
    assert torch.allclose(objectives.flow_xt(x0, noise, torch.ones(5)), noise)


@pytest.mark.parametrize("steps", [1, 2, 7])
def test_euler_integrates_constant_velocity_exactly(steps):
    x1 = torch.randn(6, 2, dtype=torch.float64)
    c = torch.randn(6, 2, dtype=torch.float64)
    # dx/dt = c from t=1 to t=0: x(0) = x1 - c, at any number of steps.
    x0, vs = objectives.euler_sample(lambda x, t: c, x1, steps, return_path=True)
    assert torch.allclose(x0, x1 - c, atol=1e-12) and len(vs) == steps


def test_flow_loss_uses_the_given_noise():
    """The model sees x_t built from exactly the noise passed in (the coupling's output)."""
    seen = {}

    def net(xt, t, labels):
        seen["xt"], seen["t"] = xt, t / objectives.FLOW_TIME_SCALE
        return torch.zeros_like(xt)

    x0, noise = torch.randn(4, 2), torch.randn(4, 2)
    loss = objectives.FlowMatching().loss(net, x0, noise, None, torch.Generator().manual_seed(0))
    assert torch.allclose(seen["xt"], objectives.flow_xt(x0, noise, seen["t"]), atol=1e-6)
    assert torch.allclose(loss, (noise - x0).pow(2).mean())


def test_logit_normal_t_in_unit_interval_and_bad_choice():
    t = objectives.FlowMatching("logit-normal").sample_t(1000, torch.Generator().manual_seed(0), "cpu")
    assert 0 < float(t.min()) and float(t.max()) < 1 and abs(float(t.mean()) - 0.5) < 0.05
    with pytest.raises(ValueError, match="t_sampling"):
        objectives.FlowMatching("cosine")
    with pytest.raises(ValueError, match="objective"):
        tiny(Path("/tmp"), objective="sde").validate()


def test_straightness_is_zero_for_a_straight_field():
    fm = objectives.FlowMatching()
    model = lambda x, t, labels: torch.full_like(x, 0.5)  # noqa: E731  constant velocity
    s = fm.straightness(model, (8, 2), steps=4, generator=torch.Generator().manual_seed(0), device="cpu")
    assert s < 1e-10


@pytest.mark.parametrize("data,coupling", [("gmm", "assign"), ("digits", "knn"), ("patches", "flip")])
def test_flow_trains_and_scores_every_step_count(tmp_path, data, coupling):
    cfg = tiny(tmp_path, data=data, coupling=coupling, t_sampling="logit-normal",
               steps=2, eval_every=2, checkpoint_every=2, eval_samples=16)
    summary = train(cfg)
    metric = "w2" if data == "gmm" else "fd"
    ev = records(cfg.out, "eval")[-1]
    assert {f"{metric}@1", f"{metric}@3", metric, "straightness"} <= set(ev)
    assert ev[metric] == ev[f"{metric}@3"] and summary["final"][metric] == ev[metric]
    header = Path(cfg.out, "eval.csv").read_text().splitlines()[0].split(",")
    assert f"{metric}@1" in header and "straightness" in header


def test_patches_are_real_32x32x3_images():
    from immiscible_ops.train import data

    ds = data.load_dataset("patches")
    assert ds.x.shape[1:] == (3, 32, 32) and ds.x.shape[0] > 1000
    assert float(ds.x.min()) >= -1 and float(ds.x.max()) <= 1 and ds.x.std() > 0.1


def test_flow_resume_is_bit_identical(tmp_path):
    kw = dict(data="gmm", coupling="assign", steps=8, checkpoint_every=4, eval_every=4, batch_size=16)
    full = tiny(tmp_path, "full", **kw)
    train(full)
    part = tiny(tmp_path, "part", **{**kw, "steps": 4})
    train(part)
    train(tiny(tmp_path, "part", **kw, resume="auto"))
    assert_resumed_identically(full.out, part.out)


def test_cli_objective_and_sample_steps(tmp_path):
    out = tmp_path / "cli"
    rc = cli.main(["--objective", "flow", "--data", "moons", "--steps", "2", "--batch-size", "8",
                   "--sample-steps", "1", "2", "4", "--eval-every", "2", "--eval-samples", "16",
                   "--mlp-hidden", "16", "--mlp-depth", "1", "--out", str(out), "--no-progress",
                   "--threads", "1"])
    assert rc == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["objective"] == "flow" and cfg["sample_steps"] == [1, 2, 4]
    assert {"w2@1", "w2@2", "w2@4"} <= set(records(out, "eval")[-1])


def test_compare_plots_quality_vs_steps(tmp_path):
    from immiscible_ops.train import compare

    runs = []
    for coupling in ("none", "assign"):
        cfg = tiny(tmp_path, coupling, data="gmm", coupling=coupling, steps=2, eval_every=2,
                   checkpoint_every=2, eval_samples=16)
        train(cfg)
        runs.append(cfg.out)
    png = tmp_path / "c.png"
    assert compare.main(runs + ["--out", str(png)]) == 0 and png.stat().st_size > 0
