"""Trainer with continuous conditions derived from each sample: the conditions, the model's
projection, the C2OT coupling options, the conditional metrics and coupling stats in the log,
bit-exact resume, and the options' validation. Tiny models: seconds on a CPU."""

import json
import math
from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("sklearn")

from conftest import assert_resumed_identically, tiny_train_config  # noqa: E402

from immiscible_ops.train import cli, models  # noqa: E402
from immiscible_ops.train.conditions import DerivedConditions  # noqa: E402
from immiscible_ops.train.data import load_dataset  # noqa: E402
from immiscible_ops.train.trainer import Config, train  # noqa: E402


def tiny(tmp_path, name="run", **kw):
    base = {"sample_steps": (1, 3), "objective": "flow", "data": "gmm", "conditions": "derived",
            "coupling": "assign"}
    return tiny_train_config(tmp_path, name, **{**base, **kw})


def evals(run):
    return [r for r in map(json.loads, Path(run, "log.jsonl").read_text().splitlines())
            if r["type"] == "eval"]


def test_gmm_conditions_name_the_mode():
    ds = load_dataset("gmm", n_points=400, seed=3)
    cond = DerivedConditions("points", ds.x)
    c = cond(ds.x)
    assert c.shape == (400, 2)
    assert torch.allclose(c.norm(dim=1), torch.ones(400), atol=1e-5)
    # gmm's 8 mode centres fall in 8 distinct sectors, each point in its own mode's.
    angles = torch.arange(8) * (2 * math.pi / 8)
    centres = torch.stack([angles.cos(), angles.sin()], 1) * 1.5 + cond.center
    assert cond.classes(centres).unique().numel() == 8
    # Adherence of the data to its own conditions is 1, of shuffled conditions far less.
    assert cond.adherence(ds.x, c) == pytest.approx(1.0, abs=1e-5)
    assert cond.adherence(ds.x, c.roll(1, 0)) < 0.5


def test_image_conditions_are_centred_unit_thumbnails():
    ds = load_dataset("digits")
    cond = DerivedConditions("image", ds.x)
    c = cond(ds.x[:50])
    assert c.shape == (50, 16) and torch.allclose(c.norm(dim=1), torch.ones(50), atol=1e-5)
    # The mean thumbnail is removed: the conditions of the whole set average to about zero.
    assert cond(ds.x).mean(0).norm() < 0.2 * c.norm(dim=1).mean()


@pytest.mark.parametrize("kind,shape", [("points", (2,)), ("image", (1, 8, 8))])
def test_model_projects_the_condition(kind, shape):
    torch.manual_seed(0)
    net = models.build_model(kind, shape, 0, unet_widths=(8, 16), mlp_hidden=16, mlp_depth=1,
                             condition_dim=5)
    x, t = torch.randn(3, *shape), torch.full((3,), 10.0)
    a = net(x, t, torch.randn(3, 5))
    b = net(x, t, torch.randn(3, 5))
    assert a.shape == x.shape and not torch.allclose(a, b)


@pytest.mark.parametrize("data", ["gmm", "digits"])
def test_conditional_run_logs_metrics_and_coupling_stats(tmp_path, data):
    summary = train(tiny(tmp_path, data=data, condition_target_r=0.1, steps=6, eval_every=3))
    rec = evals(tiny(tmp_path, data=data).out)
    assert len(rec) == 2 and summary["final"] == {k: v for k, v in rec[-1].items()
                                                  if k not in ("type", "step")
                                                  and not k.startswith("coupling_")}
    for key in ("adherence@1", "cond_error@3", "coupling_distance_reduction", "coupling_moved",
                "coupling_condition_distance_coupled", "coupling_condition_distance_random"):
        assert key in rec[-1], key
    assert ("w2_cond@1" in rec[-1]) == (data == "gmm") and ("fd@1" in rec[-1]) == (data == "digits")
    assert -1 <= rec[-1]["adherence"] <= 1


def test_condition_cost_keeps_noise_nearer_the_condition(tmp_path):
    kw = dict(steps=3, eval_every=3, batch_size=64, n_points=400)
    train(tiny(tmp_path, "plain", **kw))
    train(tiny(tmp_path, "c2ot", condition_target_r=0.05, **kw))
    plain = evals(tiny(tmp_path, "plain").out)[-1]
    aware = evals(tiny(tmp_path, "c2ot").out)[-1]
    key = "coupling_condition_distance_coupled"
    assert aware[key] < plain[key]
    assert plain["coupling_distance_reduction"] > aware["coupling_distance_reduction"] > 0


def test_resume_with_conditions_is_bit_identical(tmp_path):
    kw = dict(steps=6, eval_every=3, checkpoint_every=3, condition_weight=2.0,
              condition_groups=True)
    full = tiny(tmp_path, "full", **kw)
    train(full)
    part = tiny(tmp_path, "part", **{**kw, "steps": 3})
    train(part)
    train(tiny(tmp_path, "part", **kw, resume="auto"))
    assert_resumed_identically(full.out, part.out)


@pytest.mark.parametrize("kw,message", [
    (dict(conditions="captions"), "conditions: expected one of"),
    (dict(class_conditional=True, data="digits"), "exclude each other"),
    (dict(conditions="none", condition_weight=1.0), "condition_weight: needs conditions"),
    (dict(conditions="none", condition_groups=True), "condition_groups: needs conditions"),
    (dict(condition_weight=1.0, condition_target_r=0.2), "give one, not both"),
    (dict(condition_weight=-1.0), "condition_weight: expected a finite number >= 0"),
    (dict(condition_target_r=2.0), "condition_target_r: expected a fraction"),
    (dict(coupling="knn", condition_target_r=0.2), "coupling: condition-aware coupling needs"),
    (dict(condition_metric="l1"), "condition_metric"),
])
def test_bad_condition_options(tmp_path, kw, message):
    with pytest.raises(ValueError, match=message):
        tiny(tmp_path, **kw).validate()


def test_cli_options_reach_the_config():
    p = cli.argparse.ArgumentParser()
    cli.add_train_args(p)
    cfg = cli.config_from_args(p.parse_args(["--conditions", "derived", "--condition-target-r",
                                             "0.2", "--condition-groups", "--coupling", "pool"]))
    assert (cfg.conditions, cfg.condition_target_r, cfg.condition_groups) == ("derived", 0.2, True)
    assert Config(**{**cfg.to_dict(), "unet_widths": tuple(cfg.unet_widths),
                     "sample_steps": tuple(cfg.sample_steps)}).validate() is not None
