"""docs/INTEGRATIONS.md's recipes, run as written: every ```python block is a complete program,
run in a fresh interpreter against the installed package; a block preceded by
`<!-- also run with: torchrun --nproc_per_node N -->` is also run on N gloo processes.

The doc is found next to the tests in a checkout, or under IMMISCIBLE_SOURCE_ROOT (the wheel
check runs the tests from a copy outside the source tree)."""

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

HEADINGS = ["Plain scipy code", "diffusers training scripts",
            "accelerate: several GPUs, one assignment for the job",
            "kohya-ss and OneTrainer: knn noise", "torchcfm",
            "C2OT: condition-aware minibatch OT"]
_BLOCK = re.compile(r"(?:<!-- also run with: torchrun --nproc_per_node (\d+) -->\n)?```python\n(.*?)```",
                    re.S)


def find_doc():
    for root in (os.environ.get("IMMISCIBLE_SOURCE_ROOT"), Path(__file__).resolve().parents[2]):
        if root and Path(root, "docs", "INTEGRATIONS.md").is_file():
            return Path(root, "docs", "INTEGRATIONS.md")
    return None


def recipes(doc):
    """(heading, processes or None, code) for every python block, by section."""
    out = []
    for section in re.split(r"^## ", doc.read_text() if doc else "", flags=re.M)[1:]:
        heading = section.splitlines()[0].strip()
        for procs, code in _BLOCK.findall(section):
            out.append((heading, int(procs) if procs else None, code))
    return out


RECIPES = recipes(find_doc())


def test_every_recipe_has_a_program():
    if find_doc() is None:
        if os.environ.get("CI"):
            pytest.fail("docs/INTEGRATIONS.md not found (set IMMISCIBLE_SOURCE_ROOT)")
        pytest.skip("docs/INTEGRATIONS.md is not next to these tests")
    assert sorted({h for h, _, _ in RECIPES}) == sorted(HEADINGS)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc.stdout


@pytest.mark.parametrize("heading,procs,code", RECIPES,
                         ids=[f"{i}-{h.split()[0].strip(':')}" for i, (h, _, _) in enumerate(RECIPES)])
def test_recipe_runs(heading, procs, code, tmp_path):
    if heading == "torchcfm" and not os.environ.get("CI"):
        pytest.importorskip("torchcfm")
    if "accelerate" in code and not os.environ.get("CI"):
        pytest.importorskip("accelerate")
    script = tmp_path / "recipe.py"
    script.write_text(code)
    _run([sys.executable, str(script)], tmp_path)
    if procs:
        out = _run([sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={procs}",
                    f"--master_port={_free_port()}", str(script)], tmp_path)
        assert f"{procs} process(es)" in out
