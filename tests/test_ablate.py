"""python -m bagel_mini.ablate: every finding with --quick, resuming without retraining, and the verdicts."""

import json

import pytest

from bagel_mini.ablate import FINDINGS, appearance, main, verdict
from bagel_mini.validation import LOSSES


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    """One OUT for every finding, as a user's runs/ablate: its tokenizer is trained once."""
    return tmp_path_factory.mktemp("ablate")


@pytest.mark.parametrize("name", sorted(FINDINGS))
def test_every_finding_runs_quick_and_writes_its_results(name, out, capsys):
    main([name, "--out", str(out), "--quick"])
    finding, results = FINDINGS[name], json.loads((out / name / "results.json").read_text())
    assert {run["variant"] for run in results["runs"].values()} == set(finding.variants)
    for run in results["runs"].values():
        (point,) = run["curve"]  # --quick: one segment of two steps
        assert point["step"] == 2 and 0 < point["tokens"] <= 2 * 1024
        for curve in finding.curves:  # losses near their start (about 2 and 6), scores shares
            assert 0 <= point[curve] < 10 if curve in LOSSES else 0 <= point[curve] <= 1, curve
        assert all(0 <= run["scores"][score] <= 1 for score in finding.final) and run["parameters"] > 0
    assert set(results["summary"]) == set(finding.variants) and isinstance(results["verdict"]["agrees"], bool)
    assert (out / name / "curves.png").stat().st_size > 0
    assert "agrees" in capsys.readouterr().out
    if name == "mot-vs-dense":  # called again, it finds every segment done and trains nothing
        lasts = sorted((out / name / "runs").glob("*/last/model.safetensors"))
        stamps = [path.stat().st_mtime_ns for path in lasts]
        main([name, "--out", str(out), "--quick"])
        assert [path.stat().st_mtime_ns for path in lasts] == stamps
        assert json.loads((out / name / "results.json").read_text())["runs"] == results["runs"]
        with pytest.raises(SystemExit) as stop:  # a default run would mix with the quick one: refused at once
            main([name, "--out", str(out)])
        assert all(fact in str(stop.value) for fact in ("results.json", "steps 2", "quick True", "--out"))


def test_the_think_finding_scores_the_embedded_model_with_and_without_think_mode(tmp_path, capsys):
    main(["think", "--out", str(tmp_path), "--quick"])
    results = json.loads((tmp_path / "think" / "results.json").read_text())
    assert results["n"] == 2 and set(results["scores"]) == {"without think", "with think", "the resolved prompt"}
    assert all(score in (0, 0.5, 1) for score in results["scores"].values())  # two prompts each
    assert results["trace_correct"] == 1  # the embedded model's traces resolve these two prompts (checked by hand)
    assert set(results["mse"]) == set(results["scores"]) and all(0 < mse < 3 for mse in results["mse"].values())
    assert (tmp_path / "think" / "curves.png").stat().st_size > 0
    assert "think" in capsys.readouterr().out


def summary(**mse_and_ce) -> dict:
    """A summary with the given (mse, ce) per variant, seeds 0.01 apart in MSE and 0.02 in CE."""
    return {
        name: {"mse": mse, "ce": ce, "mse_spread": 0.01, "ce_spread": 0.02, "mse_seeds": [mse + 0.005, mse - 0.005]}
        for name, (mse, ce) in mse_and_ce.items()
    }


def test_the_verdicts_say_whether_the_paper_is_reproduced():
    lower = verdict("mot-vs-dense", summary(dense=(0.50, 1.0), moe=(0.49, 1.0), mot=(0.45, 1.0)))
    assert lower["agrees"] and "0.0400" in lower["text"] and "4.0x" in lower["text"]
    assert "in 2 of 2 (+0.0400, +0.0400)" in lower["text"]  # seed by seed against moe
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

    edits = {"VAE + ViT": (0.40, 1.0), "VAE only": (0.45, 1.0)}
    both = {
        name: {
            **values,
            "edit_mse": values["mse"],
            "reasoning_edit_mse": values["mse"] + 0.1,
            "edit": 0.1,
            "reasoning_edit": 0.0,
            "edit_mse_spread": 0.01,
            "reasoning_edit_mse_spread": 0.01,
        }
        for name, values in summary(**edits).items()
    }
    assert verdict("vit-context", both)["agrees"]
    both["VAE only"]["reasoning_edit_mse"] = 0.505  # ViT tokens help plain edits but not reasoning ones beyond noise
    assert not verdict("vit-context", both)["agrees"]


def test_an_ability_appears_at_85_percent_of_its_peak_if_it_rose_beyond_its_noise():
    curve = [{"tokens": 1000 * (i + 1), "vqa": v} for i, v in enumerate([0.2, 0.5, 0.8, 0.9, 0.85])]
    rose = appearance(curve, "vqa", n=100)
    assert rose["tokens"] == 3000 and rose["peak"] == 0.9 and rose["rose"]  # 0.8 >= 0.85 * 0.9; 0.7 >> 2 x 0.03
    flat = appearance([{"tokens": 1000, "edit": 0.02}, {"tokens": 2000, "edit": 0.05}], "edit", n=30)
    assert not flat["rose"] and flat["tokens"] == 2000  # 0.03 above the first: within 2 x 0.04
    abilities = {
        "vqa": rose,
        "geneval": rose,
        "edit": {**rose, "tokens": 4000},
        "reasoning_edit": {**rose, "tokens": 5000},
    }
    assert verdict("emergence", {"run": {"abilities": abilities}})["agrees"]
    abilities["edit"] = {**rose, "tokens": 2000}  # editing before understanding and generation
    assert not verdict("emergence", {"run": {"abilities": abilities}})["agrees"]
    abilities["edit"] = {**flat, "tokens": 4000}
    assert not verdict("emergence", {"run": {"abilities": abilities}})["agrees"]


def test_think_trains_nothing_so_steps_and_seeds_are_refused(capsys):
    with pytest.raises(SystemExit):
        main(["think", "--steps", "100"])
    assert "--steps" in capsys.readouterr().err
