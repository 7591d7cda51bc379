"""Every ```python block of docs/own-loop.md runs as it is (lightning / accelerate
blocks skip where those packages are not installed)."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[2] / "docs" / "own-loop.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", PAGE.read_text(), flags=re.S | re.M)
OPTIONAL = ("lightning", "accelerate")


def test_the_page_has_examples():
    assert len(BLOCKS) >= 7


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_example_runs(code, tmp_path, monkeypatch):
    for name in OPTIONAL:
        if re.search(rf"^\s*(import|from) {name}\b", code, flags=re.M) \
                and importlib.util.find_spec(name) is None:
            pytest.skip(f"{name} is not installed")
    monkeypatch.chdir(tmp_path)  # examples may save files
    exec(compile(code, f"{PAGE.name}", "exec"), {"__name__": "__own_loop__"})
