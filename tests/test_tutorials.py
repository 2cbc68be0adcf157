"""Every tutorial runs top to bottom in fast mode and draws its figures; the index lists each one."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"
FILES = sorted(TUTORIALS.glob("[0-9][0-9]_*.py"))


def test_there_are_ten_tutorials_in_order():
    assert [path.name[:2] for path in FILES] == [f"{n:02d}" for n in range(1, 11)]


@pytest.mark.parametrize("path", FILES, ids=[path.stem for path in FILES])
def test_tutorial_runs_in_fast_mode_and_saves_a_figure(path, tmp_path):
    env = {**os.environ, "BAGEL_FAST": "1", "BAGEL_FIGURES": str(tmp_path / "figures"), "MPLBACKEND": "Agg"}
    env["TMPDIR"] = str(tmp_path)  # tutorial 09 trains into a temporary directory
    result = subprocess.run(
        [sys.executable, str(path)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    figures = sorted(p.name for p in (tmp_path / "figures").glob(f"{path.name[:2]}_*.png"))
    assert figures, f"{path.name} saved no figure named {path.name[:2]}_*.png"


def test_index_lists_every_tutorial_with_an_existing_thumbnail():
    index = (TUTORIALS / "README.md").read_text()
    for path in FILES:
        assert path.name in index, f"tutorials/README.md does not list {path.name}"
    thumbnails = re.findall(r"\]\((figures/[^)]+\.png)\)", index)
    assert len(thumbnails) >= len(FILES)
    for thumbnail in thumbnails:
        assert (TUTORIALS / thumbnail).is_file(), f"tutorials/README.md shows {thumbnail}, which does not exist"


@pytest.mark.parametrize("path", FILES, ids=[path.stem for path in FILES])
def test_tutorial_is_percent_format_with_prose(path):
    text = path.read_text()
    assert text.count("# %% [markdown]") >= 2, f"{path.name}: too little prose"
    assert re.search(r"^# %%$", text, re.MULTILINE), f"{path.name}: no code cell"
    assert "BAGEL_FAST" in text and "BAGEL_FIGURES" in text
