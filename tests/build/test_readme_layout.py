"""README's layout map names every source file, so a newcomer can find the file behind each
public function and each CI step (the map is hand-written; this keeps it from going stale)."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Folders whose files the map lists one by one; package markers need no entry.
MAPPED = {"immiscible_ops": "*.py", "csrc": "*", ".ci": "*"}
UNLISTED = {"__init__.py", "__main__.py"}


def test_every_source_file_is_in_the_readme_map():
    readme = ROOT / "README.md"
    if not (ROOT / "csrc").is_dir() or not readme.exists():
        pytest.skip("needs a source checkout")
    text = readme.read_text()
    layout = text[text.index("## Layout"):]
    missing = []
    for folder, pattern in MAPPED.items():
        for path in sorted((ROOT / folder).rglob(pattern)):
            if not path.is_file() or path.name in UNLISTED or "__pycache__" in path.parts:
                continue
            if path.suffix in (".so", ".pyc"):
                continue
            # "lap_exact_kernels.*" in the map stands for the .cpp and the .h
            if path.name not in layout and f"{path.stem}.*" not in layout:
                missing.append(str(path.relative_to(ROOT)))
    assert not missing, f"README.md's layout map does not name: {', '.join(missing)}"
