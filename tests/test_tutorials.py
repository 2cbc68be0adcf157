"""Every tutorial runs top to bottom in fast mode, within a CPU budget, and draws every figure the repository
holds for it; the index lists each one."""

import os
import re
import resource
import subprocess
import sys
from pathlib import Path

import pytest

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"
FILES = sorted(TUTORIALS.glob("[0-9][0-9]_*.py"))
# Fast mode (BAGEL_FAST=1) is CI's quick pass, run on one thread: then CPU time, unlike wall time, barely grows
# when other jobs share the machine (several threads would spin-wait for cores). Measured: 10-15 CPU-seconds a
# tutorial, 37-42 for 09 (it trains), alone or beside two busy processes. 90 leaves twice that margin, and
# tutorial 09 run in full (7 minutes) would exceed it.
FAST_CPU_SECONDS = 90


def test_there_are_eleven_tutorials_in_order():
    assert [path.name[:2] for path in FILES] == [f"{n:02d}" for n in range(1, 12)]


@pytest.mark.parametrize("path", FILES, ids=[path.stem for path in FILES])
def test_tutorial_runs_in_fast_mode_and_draws_its_figures(path, tmp_path):
    figures = tmp_path / "figures"
    env = {**os.environ, "BAGEL_FAST": "1", "BAGEL_FIGURES": str(figures), "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    env["TMPDIR"] = str(tmp_path)  # tutorial 09 trains into a temporary directory
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run(
        [sys.executable, str(path)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    cpu_seconds = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    assert cpu_seconds < FAST_CPU_SECONDS, f"{path.name} took {cpu_seconds:.0f} CPU-seconds in fast mode"
    committed = {p.name for p in (TUTORIALS / "figures").glob(f"{path.name[:2]}_*.png")}
    drawn = {p.name for p in figures.glob("*.png")}
    assert committed and committed <= drawn, f"{path.name} did not draw {sorted(committed - drawn)} into BAGEL_FIGURES"


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
