import shutil

import pytest
import torch
from helpers import TINY
from safetensors.torch import load_file, save_file

from bagel_mini.checkpoint import CheckpointError, load_checkpoint

PATCH_KEY = "vit_model.vision_model.embeddings.patch_embedding.weight"


def copy_of_tiny(tmp_path, change=None):
    """The tiny checkpoint directory, with `change(weights)` applied to its ema.safetensors."""
    directory = tmp_path / "checkpoint"
    shutil.copytree(TINY, directory)
    if change is not None:
        weights = load_file(TINY / "ema.safetensors")
        change(weights)
        save_file(weights, directory / "ema.safetensors")
    return directory


def test_tiny_checkpoint_loads_every_tensor_unchanged():
    model, autoencoder = load_checkpoint(TINY)
    weights = load_file(TINY / "ema.safetensors")
    assert torch.equal(
        model.llm.layers[1].gen.attn.k_norm.weight,
        weights["language_model.model.layers.1.self_attn.k_norm_moe_gen.weight"],
    )
    assert torch.equal(model.vit.patch_embed.weight, weights[PATCH_KEY])
    assert not model.vit_pos_embed.table.requires_grad  # the fixed tables stay frozen after loading
    assert torch.equal(autoencoder.decoder.conv_out.bias, load_file(TINY / "ae.safetensors")["decoder.conv_out.bias"])


def test_a_conv2d_shaped_patch_embedding_is_converted_on_load(tmp_path):
    def as_conv(weights):
        out_channels, patch_dim = weights[PATCH_KEY].shape
        patch = int((patch_dim // 3) ** 0.5)
        weights[PATCH_KEY] = weights[PATCH_KEY].reshape(out_channels, patch, patch, 3).permute(0, 3, 1, 2).contiguous()

    model, _ = load_checkpoint(copy_of_tiny(tmp_path, as_conv))
    assert torch.equal(model.vit.patch_embed.weight, load_file(TINY / "ema.safetensors")[PATCH_KEY])


def test_a_renamed_key_is_named_as_missing_and_unexpected(tmp_path):
    def rename(weights):
        weights["llm2vae.weights"] = weights.pop("llm2vae.weight")

    with pytest.raises(CheckpointError, match=r"ema.safetensors: 2 problem\(s\)") as error:
        load_checkpoint(copy_of_tiny(tmp_path, rename))
    assert "1 missing key(s): llm2vae.weight" in str(error.value)
    assert "1 unexpected key(s): llm2vae.weights" in str(error.value)


def test_a_wrong_shape_names_the_key_and_both_shapes(tmp_path):
    def shrink(weights):
        weights["connector.fc1.bias"] = weights["connector.fc1.bias"][:10]

    with pytest.raises(CheckpointError, match=r"connector.fc1.bias: shape \(10,\) in the file, \(64,\) expected"):
        load_checkpoint(copy_of_tiny(tmp_path, shrink))


def test_a_truncated_or_missing_weights_file_is_named(tmp_path):
    directory = copy_of_tiny(tmp_path)
    data = (directory / "ae.safetensors").read_bytes()
    (directory / "ae.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="ae.safetensors: not a readable safetensors file"):
        load_checkpoint(directory)
    (directory / "ae.safetensors").unlink()
    with pytest.raises(CheckpointError, match="ae.safetensors: weights file not found"):
        load_checkpoint(directory)
