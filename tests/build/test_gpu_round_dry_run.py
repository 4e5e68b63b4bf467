"""benchmarks/gpu_round.sh without a GPU: every stage of the profile starts and skips cleanly, the
round ends with status 0, and what it leaves in $OUT fits what the device tool brings back."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_round.sh"
if not SCRIPT.exists():  # the wheel suite runs a copy of tests/ only
    pytest.skip("a source-tree tool: benchmarks/gpu_round.sh is not here", allow_module_level=True)
pytestmark = pytest.mark.skipif(torch.cuda.is_available() or shutil.which("bash") is None,
                                reason="a dry run needs a machine without a GPU (and bash)")

PROFILES = {
    "round": ["install", "test", "sanitize-memcheck", "sanitize-racecheck", "bench"],
    "full": ["install", "test", "sanitize-memcheck", "sanitize-racecheck", "sanitize-synccheck",
             "bench", "bounds"],
}


def dry_run(tmp_path, **env):
    out = tmp_path / "out"
    result = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "OUT": str(out), "PYTHON": sys.executable, **env})
    return result, out


@pytest.mark.parametrize("profile", PROFILES)
def test_every_stage_starts_and_skips(tmp_path, profile):
    result, out = dry_run(tmp_path, PROFILE=profile)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = (out / "summary.md").read_text()
    started = re.findall(r"^stage (\S+): start", summary, re.M)
    skipped = re.findall(r"^stage (\S+): skipped \(no GPU\)", summary, re.M)
    assert started == PROFILES[profile] and skipped == PROFILES[profile], summary
    budget = 540 if profile == "round" else 3600
    assert re.search(rf"^round: \d+ s of {budget} \(profile {profile}\)$", summary, re.M), summary
    # The device tool brings back at most 8 files, none in deeper folders than two.
    files = [p for p in out.rglob("*") if p.is_file()]
    assert 0 < len(files) <= 8


def test_the_round_fits_its_budget_by_construction(tmp_path):
    # Stage limits are cut to what is left: with a budget already spent, stages skip for time.
    text = SCRIPT.read_text()
    limits = {name: int(value) for name, value in re.findall(r"\$\{(T_\w+):-(\d+)\}", text)}
    round_stages = (limits["T_TEST"] + 2 * limits["T_SANITIZE"] + limits["T_BENCH"]
                    + limits["T_KNN"])
    # Install from a carried wheel takes seconds; the budgeted stages leave it room in 540 s.
    assert round_stages <= 540 - 15 - 30, limits
