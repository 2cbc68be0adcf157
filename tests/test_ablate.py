"""python -m bagel_mini.ablate: every finding with --quick, resuming without retraining, and the verdicts."""

import json

import pytest

from bagel_mini.ablate import FINDINGS, main, verdict


@pytest.mark.parametrize("name", sorted(FINDINGS))
def test_every_finding_runs_quick_and_writes_its_results(name, tmp_path, capsys):
    main([name, "--out", str(tmp_path), "--quick"])
    results = json.loads((tmp_path / name / "results.json").read_text())
    assert {run["variant"] for run in results["runs"].values()} == set(FINDINGS[name].variants)
    for run in results["runs"].values():
        (point,) = run["curve"]  # --quick: one segment of two steps
        assert point["step"] == 2 and 0 < point["mse"] < 10 and 0 < point["ce"] < 10
        assert 0 <= run["scores"]["geneval"] <= 1 and run["parameters"] > 0
    assert set(results["summary"]) == set(FINDINGS[name].variants) and isinstance(results["verdict"]["agrees"], bool)
    assert (tmp_path / name / "curves.png").stat().st_size > 0
    assert "agrees" in capsys.readouterr().out
    if name == "mot-vs-dense":  # called again, it finds every segment done and trains nothing
        lasts = sorted((tmp_path / name / "runs").glob("*/last/model.safetensors"))
        stamps = [path.stat().st_mtime_ns for path in lasts]
        main([name, "--out", str(tmp_path), "--quick"])
        assert [path.stat().st_mtime_ns for path in lasts] == stamps
        assert json.loads((tmp_path / name / "results.json").read_text())["runs"] == results["runs"]


def summary(**mse_and_ce) -> dict:
    """A summary with the given (mse, ce) per variant, seeds 0.01 apart in MSE and 0.02 in CE."""
    return {
        name: {"mse": mse, "ce": ce, "mse_spread": 0.01, "ce_spread": 0.02} for name, (mse, ce) in mse_and_ce.items()
    }


def test_the_verdicts_say_whether_the_paper_is_reproduced():
    lower = verdict("mot-vs-dense", summary(dense=(0.50, 1.0), moe=(0.49, 1.0), mot=(0.45, 1.0)))
    assert lower["agrees"] and "0.0400" in lower["text"] and "4.0x" in lower["text"]
    assert not verdict("mot-vs-dense", summary(dense=(0.44, 1.0), moe=(0.49, 1.0), mot=(0.45, 1.0)))["agrees"]
    within_noise = verdict("mot-vs-dense", summary(dense=(0.455, 1.0), moe=(0.49, 1.0), mot=(0.45, 1.0)))
    assert not within_noise["agrees"] and "0.5x" in within_noise["text"]  # 0.005 below, seeds 0.01 apart
    worse_ce = verdict("mot-vs-dense", summary(dense=(0.50, 1.0), moe=(0.49, 1.0), mot=(0.45, 1.03)))
    assert not worse_ce["agrees"]  # lower MSE, but a CE 0.03 above the best other's, beyond the seeds' 0.02
    assert verdict("data-ratio", summary(**{"1:1": (0.5, 1.0), "2:1": (0.48, 1.0), "4:1": (0.46, 1.0)}))["agrees"]
    assert not verdict("data-ratio", summary(**{"1:1": (0.4, 1.0), "2:1": (0.48, 1.0), "4:1": (0.46, 1.0)}))["agrees"]
    rates = {"lr 3e-4": (0.5, 0.9), "lr 1e-3": (0.48, 1.0), "lr 3e-3": (0.46, 1.1), "lr 3e-3, CE weight 1": (0.47, 1.0)}
    assert verdict("lr", summary(**rates))["agrees"]
    rates["lr 3e-4"] = (0.5, 1.2)  # the smallest rate no longer gives the lowest CE
    assert not verdict("lr", summary(**rates))["agrees"]
