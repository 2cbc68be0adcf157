"""python -m bagel_mini.recipe: every stage in one command, and a second call that finds them done."""

import json

from bagel_mini import checkpoint
from bagel_mini.recipe import RECIPE, main


def test_the_recipe_runs_every_stage_and_a_second_call_skips_them(tmp_path, capsys):
    main(["--out", str(tmp_path), "--quick"])
    for name, _, _ in RECIPE:
        assert json.loads((tmp_path / name / "last" / "state.json").read_text())["step"] == 2, name
    model = tmp_path / "model"
    assert (model / "ema.safetensors").read_bytes() == (tmp_path / "sft" / "last" / "ema.safetensors").read_bytes()
    assert (model / "ae.safetensors").read_bytes() == (tmp_path / "decoder" / "ae.safetensors").read_bytes()
    bagel, autoencoder = checkpoint.load_checkpoint(model)  # the directory sample.py reads
    assert bagel.config.vae == autoencoder.config
    capsys.readouterr()
    main(["--out", str(tmp_path), "--quick"])
    printed = capsys.readouterr().out
    assert all(f"{name}: done" in printed for name, _, _ in RECIPE)
