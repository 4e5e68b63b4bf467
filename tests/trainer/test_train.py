"""Reference trainer: every data kind trains, resume is bit-exact, DDP runs, metrics behave,
bad input fails with a clear error. Tiny models and few steps: seconds per test on a CPU."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("sklearn")
pytest.importorskip("PIL")

from conftest import tiny_train_config  # noqa: E402
from PIL import Image  # noqa: E402

from immiscible_ops.train import cli, compare, data, metrics  # noqa: E402
from immiscible_ops.train.trainer import train  # noqa: E402


def tiny(tmp_path, name="run", **kw):
    return tiny_train_config(tmp_path, name, **kw)


def records(run, kind):
    lines = Path(run, "log.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == kind]


def write_images(root, sizes, classes=("a", "b"), mode="L"):
    rng = np.random.default_rng()
    for i, size in enumerate(sizes):
        folder = root / classes[i % len(classes)]
        folder.mkdir(parents=True, exist_ok=True)
        shape = (size, size) if mode == "L" else (size, size, 3)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(folder / f"{i}.png")


# ---------------------------------------------------------------------------------------------
# Training on every data kind


@pytest.mark.parametrize("dist_name,coupling", [("gmm", "assign"), ("moons", "pool"),
                                               ("checkerboard", "none")])
def test_points_train_and_log(tmp_path, dist_name, coupling):
    cfg = tiny(tmp_path, data=dist_name, coupling=coupling, batch_size=16, pool_factor=3)
    summary = train(cfg)
    assert summary["step"] == 4 and np.isfinite(summary["final"]["w2"])
    assert [r["step"] for r in records(cfg.out, "train")] == [1, 2, 3, 4]
    row = Path(cfg.out, "train.csv").read_text().splitlines()
    assert row[0].startswith("step,loss") and len(row) == 5
    assert Path(cfg.out, "samples", "step_000004.png").exists()
    # The summary's timings are the means of the logged steps'.
    steps = records(cfg.out, "train")
    assert summary["step_ms"] == pytest.approx(np.mean([r["step_ms"] for r in steps]))
    assert summary["noise_ms"] == pytest.approx(np.mean([r["noise_ms"] for r in steps]))


def test_digits_class_conditional(tmp_path):
    cfg = tiny(tmp_path, data="digits", coupling="assign", class_conditional=True)
    summary = train(cfg)
    # Every metric at each sampling step count (here only 2), and bare for the largest.
    assert set(summary["final"]) == {"fd", "mmd_poly", "mmd_rbf", "fd@2", "mmd_poly@2", "mmd_rbf@2"}
    assert all(np.isfinite(v) for v in summary["final"].values())
    # The classifier is cached under the data's hash: a second run trains none.
    assert len(list(Path(cfg.cache_dir).glob("featurenet-*.pt"))) == 1
    png = Image.open(Path(cfg.out, "samples", "step_000004.png"))
    assert png.width >= 64


def test_image_folder_with_labels(tmp_path):
    write_images(tmp_path / "imgs", [8] * 24, mode="RGB")
    ds = data.load_dataset(str(tmp_path / "imgs"))
    assert ds.x.shape == (24, 3, 8, 8) and ds.class_names == ["a", "b"]
    assert ds.x.min() >= -1 and ds.x.max() <= 1
    cfg = tiny(tmp_path, data=str(tmp_path / "imgs"), coupling="flip", class_conditional=True,
               eval_samples=8, test_fraction=0.25)
    assert np.isfinite(train(cfg)["final"]["fd"])


def test_npy_images_and_points(tmp_path):
    rng = np.random.default_rng()
    np.save(tmp_path / "cifar_like.npy", rng.integers(0, 256, (30, 8, 8, 3), dtype=np.uint8))
    ds = data.load_dataset(str(tmp_path / "cifar_like.npy"))
    assert ds.kind == "image" and ds.x.shape == (30, 3, 8, 8)
    np.save(tmp_path / "pts.npy", rng.normal(size=(100, 2)).astype(np.float32))
    cfg = tiny(tmp_path, data=str(tmp_path / "pts.npy"), coupling="knn", k=3)
    assert np.isfinite(train(cfg)["final"]["w2"])
    np.savez(tmp_path / "lab.npz", x=rng.integers(0, 256, (20, 8, 8), dtype=np.uint8),
             y=np.arange(20) % 3)
    ds = data.load_dataset(str(tmp_path / "lab.npz"))
    assert ds.x.shape == (20, 1, 8, 8) and ds.num_classes == 3


def test_cli_and_compare(tmp_path, capsys):
    outs = []
    for coupling in ("none", "assign"):
        out = tmp_path / coupling
        assert cli.main(["--data", "moons", "--out", str(out), "--coupling", coupling, "--steps", "4",
                         "--batch-size", "8", "--eval-every", "2", "--eval-samples", "16",
                         "--sample-steps", "2", "--mlp-hidden", "16", "--no-progress", "--threads", "1"]) == 0
        outs.append(str(out))
    png = tmp_path / "cmp.png"
    assert cli.main(["compare", *outs, "--out", str(png)]) == 0
    assert png.stat().st_size > 1000
    run = compare.read_run(Path(outs[1]))
    assert [r["step"] for r in run["eval"]] == [2, 4]


# ---------------------------------------------------------------------------------------------
# Resume


def test_resume_is_bit_identical(tmp_path):
    kw = dict(data="gmm", coupling="assign", steps=12, checkpoint_every=6, eval_every=6, batch_size=16)
    full = tiny(tmp_path, "full", **kw)
    train(full)
    part = tiny(tmp_path, "part", **{**kw, "steps": 6})
    train(part)
    # Records past the checkpoint are dropped on resume: simulate a run killed after step 6.
    with open(Path(part.out, "log.jsonl"), "a") as f:
        f.write(json.dumps({"type": "train", "step": 7, "loss": -1.0}) + "\n")
    resumed = tiny(tmp_path, "part", **kw, resume="auto")
    train(resumed)
    a = [r["loss"] for r in records(full.out, "train")]
    b = [r["loss"] for r in records(part.out, "train")]
    assert len(b) == 12 and a == b
    assert [r["w2"] for r in records(full.out, "eval")] == [r["w2"] for r in records(part.out, "eval")]
    ca = torch.load(Path(full.out, "checkpoint.pt"), weights_only=False)
    cb = torch.load(Path(part.out, "checkpoint.pt"), weights_only=False)
    for key in ("model", "ema"):
        for name, t in ca[key].items():
            assert torch.equal(t, cb[key][name]), f"{key}.{name}"
    assert torch.equal(ca["rng"]["noise"][0], cb["rng"]["noise"][0])


def test_killed_run_resumes_exactly(tmp_path):
    """SIGKILL a training process after its first checkpoint; --resume must then reproduce the
    uninterrupted run's per-step losses and weights."""
    import signal
    import time

    def cli_args(out, steps):
        return [sys.executable, "-m", "immiscible_ops.train", "--data", "gmm", "--coupling", "assign",
                "--batch-size", "16", "--eval-every", "1000000", "--checkpoint-every", "5",
                "--eval-samples", "16", "--sample-steps", "2", "--mlp-hidden", "16", "--mlp-depth", "1",
                "--n-points", "200", "--no-progress", "--threads", "1", "--out", str(out),
                "--steps", str(steps)]

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed = tmp_path / "killed"
    proc = subprocess.Popen(cli_args(killed, 10**6), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    ckpt_path = killed / "checkpoint.pt"
    deadline = time.monotonic() + 120
    while not ckpt_path.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert ckpt_path.exists(), proc.stderr.read().decode()[-2000:]
    step = torch.load(ckpt_path, weights_only=False)["step"]
    total = step + 7  # resume past the checkpoint, to a step that is not a checkpoint multiple

    subprocess.run(cli_args(killed, total) + ["--resume"], env=env, check=True, timeout=180,
                   capture_output=True)
    full = tmp_path / "full"
    subprocess.run(cli_args(full, total), env=env, check=True, timeout=180, capture_output=True)
    losses = [r["loss"] for r in records(full, "train")]
    assert len(losses) == total
    assert [r["loss"] for r in records(killed, "train")] == losses
    ca = torch.load(full / "checkpoint.pt", weights_only=False)
    cb = torch.load(killed / "checkpoint.pt", weights_only=False)
    for key in ("model", "ema"):
        for name, t in ca[key].items():
            assert torch.equal(t, cb[key][name]), f"{key}.{name}"


def test_resume_rejects_other_config(tmp_path):
    cfg = tiny(tmp_path, data="gmm", coupling="assign")
    train(cfg)
    other = tiny(tmp_path, data="gmm", coupling="knn", steps=8, resume="auto")
    with pytest.raises(ValueError, match="different configuration.*coupling"):
        train(other)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(tiny(tmp_path, "elsewhere", data="gmm", resume=str(tmp_path / "missing.pt")))


# ---------------------------------------------------------------------------------------------
# Data-parallel


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("scope", ["rank", "global"])
def test_ddp_two_gloo_processes(tmp_path, scope):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           f"--master-port={_free_port()}", "-m", "immiscible_ops.train", "--data", "gmm",
           "--coupling", "assign", "--steps", "4", "--batch-size", "16", "--eval-every", "4",
           "--eval-samples", "16", "--sample-steps", "2", "--mlp-hidden", "16", "--mlp-depth", "1",
           "--n-points", "200", "--no-progress", "--threads", "1", "--out", str(out),
           "--assignment-scope", scope]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = torch.load(out / "checkpoint.pt", weights_only=False)
    assert ckpt["world_size"] == 2 and ckpt["step"] == 4
    a, b = ckpt["rng"]["noise"]
    assert not torch.equal(a, b)  # every rank draws its own noise
    assert len(records(out, "train")) == 4


def test_batch_not_divisible_by_world(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(ValueError, match="not divisible by the world size 3"):
        train(tiny(tmp_path, data="gmm", batch_size=8))


# ---------------------------------------------------------------------------------------------
# Metrics


def test_w2_known_cases():
    a = torch.randn(257, 2)
    assert metrics.w2_distance(a, a[torch.randperm(257)]) == pytest.approx(0.0, abs=1e-9)
    shift = torch.tensor([0.3, -0.4])
    # A rigid shift of the same set: the identity matching is optimal, W2 is the shift's length.
    assert metrics.w2_distance(a, a + shift) == pytest.approx(0.5, rel=1e-6)
    b = torch.randn(257, 2)
    scipy = pytest.importorskip("scipy.optimize")
    cost = torch.cdist(a.double(), b.double()).square().numpy()
    r, c = scipy.linear_sum_assignment(cost)
    assert metrics.w2_distance(a, b) == pytest.approx(float(np.sqrt(cost[r, c].mean())), rel=1e-9)
    with pytest.raises(ValueError, match="equal shape"):
        metrics.w2_distance(a, b[:10])


def test_frechet_and_mmd_known_cases():
    f = torch.randn(400, 16, dtype=torch.float64)
    assert metrics.frechet_distance(f, f) == pytest.approx(0.0, abs=1e-6)
    # Equal covariances: FD is the squared mean shift.
    assert metrics.frechet_distance(f, f + 2.0) == pytest.approx(4.0 * 16, rel=1e-6)
    g = torch.randn(400, 16, dtype=torch.float64)
    for kernel in ("poly", "rbf"):
        same = metrics.mmd2(f, g, kernel)
        shifted = metrics.mmd2(f, g + 1.0, kernel)
        assert abs(same) < 0.1 * shifted and shifted > 0


def test_feature_extractor_cached_and_deterministic(tmp_path):
    ds = data.load_dataset("digits").subset(torch.arange(300))
    a = metrics.feature_extractor(ds, cache_dir=tmp_path / "c1", epochs=1, log=lambda m: None)
    b = metrics.feature_extractor(ds, cache_dir=tmp_path / "c2", epochs=1, log=lambda m: None)
    c = metrics.feature_extractor(ds, cache_dir=tmp_path / "c1", epochs=1, log=lambda m: None)
    x = ds.x[:50]
    fa, fb, fc = (metrics.extract(n, x) for n in (a, b, c))
    assert torch.equal(fa, fb) and torch.equal(fa, fc)


# ---------------------------------------------------------------------------------------------
# Bad input


def test_missing_and_unreadable_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        data.load_dataset(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no PNG/JPG"):
        data.load_dataset(str(tmp_path / "empty"))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="broken.png"):
        data.load_dataset(str(bad))
    (tmp_path / "x.npy").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="x.npy"):
        data.load_dataset(str(tmp_path / "x.npy"))
    assert cli.main(["--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2


def test_mixed_image_sizes(tmp_path):
    write_images(tmp_path / "mixed", [8, 8, 16])
    with pytest.raises(ValueError, match="mixed sizes.*16x16"):
        data.load_dataset(str(tmp_path / "mixed"))


def test_other_bad_configs(tmp_path):
    with pytest.raises(ValueError, match="has no labels"):
        train(tiny(tmp_path, data="gmm", class_conditional=True))
    with pytest.raises(ValueError, match="coupling"):
        train(tiny(tmp_path, data="gmm", coupling="magic"))
    with pytest.raises(ValueError, match="not divisible by 2"):
        np.save(tmp_path / "odd.npy", np.zeros((20, 1, 9, 9), dtype=np.float32))
        train(tiny(tmp_path, data=str(tmp_path / "odd.npy")))


def test_experiment_jobs_side_by_side_match_one_at_a_time(tmp_path, capsys):
    from immiscible_ops.train import experiment

    def run(jobs):
        argv = ["--datasets", "gmm", "--methods", "none,assign", "--seeds", "0", "--points-steps", "4",
                "--evals", "1", "--batch-size", "32", "--objectives", "flow", "--sample-steps", "1",
                "--out", str(tmp_path / f"jobs{jobs}"), "--cache-dir", str(tmp_path / "cache"),
                "--jobs", str(jobs)]
        assert experiment.main(argv) == 0
        res = json.loads((tmp_path / f"jobs{jobs}" / "results.json").read_text())["gmm / flow"]
        return {m: r["final_by_nfe"] for m, r in res["methods"].items()}

    assert run(2) == run(1)
    with pytest.raises(SystemExit):
        experiment.main(["--jobs", "0"])
    assert "--jobs must be >= 1, got 0" in capsys.readouterr().err


def test_missing_diffusers_message(monkeypatch):
    from immiscible_ops.train import models

    monkeypatch.setitem(sys.modules, "diffusers", None)
    with pytest.raises(ImportError, match=r"pip install immiscible_ops\[train\]"):
        models.build_schedulers()


def test_experiment_tables_plot_and_reuse(tmp_path, capsys):
    from immiscible_ops.train import experiment

    argv = ["--datasets", "gmm", "--methods", "none,assign", "--seeds", "0,1", "--points-steps", "6",
            "--evals", "2", "--batch-size", "32", "--out", str(tmp_path / "exp"),
            "--cache-dir", str(tmp_path / "cache"), "--objectives", "flow", "--sample-steps", "1", "2"]
    assert experiment.main(argv) == 0
    res = json.loads((tmp_path / "exp" / "results.json").read_text())["gmm / flow"]
    assert res["metric"] == "w2" and set(res["methods"]) == {"none", "assign"}
    m = res["methods"]["assign"]
    assert m["seeds"] == 2 and m["steps"] == [3, 6]
    assert m["final_std"] > 0 and m["final_mean"] == pytest.approx(m["curve"][-1])  # seeds differ
    assert res["methods"]["none"]["steps_to_vanilla_final"] == 6  # vanilla reaches itself
    assert res["nfe"] == [1, 2] and set(m["final_by_nfe"]) == {"1", "2"}
    assert set(m["effect_by_nfe"]) == {"1", "2"}
    assert res["methods"]["none"]["effect_by_nfe"] == {"1": "no effect", "2": "no effect"}
    assert len(m["straightness"]) == 2
    assert "| assign | 2 |" in (tmp_path / "exp" / "results.md").read_text()
    assert (tmp_path / "exp" / "curves.png").stat().st_size > 1000
    capsys.readouterr()
    assert experiment.main(argv) == 0
    assert capsys.readouterr().out.count("done before, reused") == 4
