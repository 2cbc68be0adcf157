"""python -m bagel_mini.recipe: every stage in one command, and a second call that finds them done."""

import json

import pytest
import torch
from safetensors.torch import load_file

from bagel_mini import DEFAULT_MODEL, checkpoint
from bagel_mini.recipe import AUTOENCODER, BAGEL, main


def state(directory):
    return json.loads((directory / "last" / "state.json").read_text())


def tensors(path, prefix):
    return {name: tensor for name, tensor in load_file(path).items() if name.startswith(prefix)}


def same(first: dict, second: dict) -> bool:
    assert first and first.keys() == second.keys()
    return all(torch.equal(first[name], second[name]) for name in first)


def test_the_recipe_runs_every_stage_and_a_second_call_skips_them(tmp_path, capsys):
    main(["--out", str(tmp_path), "--quick"])
    assert [state(tmp_path / name)["step"] for name, _, _ in BAGEL] == [2, 2, 2]
    vit, pretrain = tmp_path / "vit" / "last", tmp_path / "pretrain" / "last"
    last, model = tmp_path / "finetune" / "last", tmp_path / "model"
    # pretraining took the ViT stage's ViT and kept it (--vit, --freeze-vit), and so did fine-tuning
    for stage in (pretrain, last):
        assert same(tensors(stage / "ema.safetensors", "vit_model."), tensors(vit / "ema.safetensors", "vit_model."))
    assert state(tmp_path / "finetune")["args"]["init"] == str(pretrain)  # it goes on from pretraining's weights
    # the mix that made the embedded model (its card: "The fine-tuning stage in the smoother latent")
    made_it = {"vqa": 0.5, "text_to_image": 0.15, "edit": 0.3, "reasoning": 0.05}
    assert state(tmp_path / "finetune")["args"]["mix"] == made_it
    assert (model / "ema.safetensors").read_bytes() == (last / "ema.safetensors").read_bytes()
    # without --autoencoder-too every stage draws through the embedded autoencoder
    assert (model / "ae.safetensors").read_bytes() == (DEFAULT_MODEL / "ae.safetensors").read_bytes()
    bagel, autoencoder = checkpoint.load_checkpoint(model)  # the directory sample.py reads
    assert bagel.config.vae == autoencoder.config
    capsys.readouterr()
    main(["--out", str(tmp_path), "--quick"])
    printed = capsys.readouterr().out
    assert all(f"{name}: done" in printed for name, _, _ in BAGEL)
    # another autoencoder in the same OUT; a full run going on from --quick weights: each names the flag that differs
    for flags, differing in ((["--quick", "--autoencoder-too"], "--autoencoder-too"), ([], "--quick")):
        with pytest.raises(SystemExit, match=differing):
            main(["--out", str(tmp_path), *flags])


def test_the_recipe_can_make_its_autoencoder_first(tmp_path):
    main(["--out", str(tmp_path), "--quick", "--autoencoder-too"])
    assert [state(tmp_path / name)["step"] for name, _, _ in AUTOENCODER + BAGEL] == [2] * 7
    assert state(tmp_path / "decoder2")["args"]["autoencoder"] == str(tmp_path / "decoder" / "last")
    first, sharper = tmp_path / "vae" / "last" / "ae.safetensors", tmp_path / "decoder2" / "last" / "ae.safetensors"
    assert same(tensors(sharper, "encoder."), tensors(first, "encoder."))  # the decoder stages keep the latents
    smooth = state(tmp_path / "smooth")["args"]
    assert smooth["autoencoder"] == str(tmp_path / "decoder2" / "last") and smooth["scale_equivariance"] == 1
    made = tmp_path / "smooth" / "last" / "ae.safetensors"
    smoothed, before = tensors(made, "encoder."), tensors(sharper, "encoder.")
    assert not same(smoothed, before)  # the last stage moves the latents, a little: it fine-tunes decoder2's
    assert max(float((smoothed[name] - before[name]).abs().max()) for name in before) < 1e-3
    assert made.read_bytes() != (DEFAULT_MODEL / "ae.safetensors").read_bytes()
    for stage in ("pretrain", "finetune"):
        assert (tmp_path / stage / "last" / "ae.safetensors").read_bytes() == made.read_bytes()
    assert (tmp_path / "model" / "ae.safetensors").read_bytes() == made.read_bytes()


def test_the_recipe_refuses_a_directory_it_did_not_start(tmp_path):
    (tmp_path / "vit").mkdir()  # e.g. what an earlier recipe left
    with pytest.raises(SystemExit, match="recipe.json"):
        main(["--out", str(tmp_path), "--quick"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vit"]
