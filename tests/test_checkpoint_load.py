import shutil

import pytest
import torch
from helpers import TINY, assert_names, randomize_
from safetensors.torch import load_file, save_file

from bagel_mini.checkpoint import CheckpointError, load_checkpoint, read_tensors, save_checkpoint
from bagel_mini.config import ConfigError, preset
from bagel_mini.model import Bagel
from bagel_mini.tokenizer import BagelTokenizer
from bagel_mini.vae import AutoEncoder

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

    directory = copy_of_tiny(tmp_path, rename)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(directory)
    assert_names(error, directory / "ema.safetensors", "missing", "llm2vae.weight", "unexpected", "llm2vae.weights")


def test_a_wrong_shape_names_the_key_and_both_shapes(tmp_path):
    def shrink(weights):
        weights["connector.fc1.bias"] = weights["connector.fc1.bias"][:10]

    directory = copy_of_tiny(tmp_path, shrink)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(directory)
    assert_names(error, directory / "ema.safetensors", "connector.fc1.bias", "(10,)", "(64,)")


def test_a_truncated_or_missing_weights_file_is_named(tmp_path):
    directory = copy_of_tiny(tmp_path)
    data = (directory / "ae.safetensors").read_bytes()
    path = directory / "ae.safetensors"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(directory)
    assert_names(error, path, "truncated", "decoder.", len(data) // 2)  # a key past the end, and the file size
    path.write_bytes(b"\xff" * 100)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(directory)
    assert_names(error, path, "not a safetensors file", "100")
    path.unlink()
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(directory)
    assert_names(error, path, "not found")


@pytest.mark.parametrize("arch", ["mot", "dense"])
def test_a_scaled_down_preset_round_trips_exactly_in_the_released_layout(tmp_path, arch):
    config = preset("toy", arch)
    model, autoencoder = randomize_(Bagel(config), seed=1), randomize_(AutoEncoder(config.vae), seed=2)
    save_checkpoint(model, autoencoder, tmp_path)
    loaded, loaded_autoencoder = load_checkpoint(tmp_path)
    assert loaded.config == config
    for original, copy in ((model, loaded), (autoencoder, loaded_autoencoder)):
        state, loaded_state = original.state_dict(), copy.state_dict()
        assert state.keys() == loaded_state.keys()
        assert all(torch.equal(state[name], loaded_state[name]) for name in state)
    with pytest.raises(FileExistsError) as error:
        save_checkpoint(model, autoencoder, tmp_path)
    assert_names(error, tmp_path / "ema.safetensors", "overwrite")


def test_weights_are_cast_tensor_by_tensor_to_the_requested_dtype():
    model, _ = load_checkpoint(TINY, dtype=torch.bfloat16)
    assert {parameter.dtype for parameter in model.parameters()} == {torch.bfloat16}
    expected = load_file(TINY / "ema.safetensors")["connector.fc2.weight"].to(torch.bfloat16)
    assert torch.equal(model.connector.fc2.weight, expected)


def test_our_reader_agrees_with_the_safetensors_library():
    path = TINY / "ema.safetensors"
    reference = load_file(path)
    ours = read_tensors(path, list(reference), torch.float32, "cpu")
    assert all(torch.equal(ours[key], reference[key]) for key in reference)


def test_missing_configs_tokenizer_or_a_non_checkpoint_directory_are_named(tmp_path):
    directory = copy_of_tiny(tmp_path)
    (directory / "vit_config.json").unlink()
    with pytest.raises(ConfigError) as error:
        load_checkpoint(directory)
    assert_names(error, directory / "vit_config.json", "not found")
    tokenizer_files = ("tokenizer.json", "vocab.json", "merges.txt")
    for name in tokenizer_files:
        (directory / name).unlink()
    with pytest.raises(FileNotFoundError) as error:
        BagelTokenizer.from_dir(directory)
    assert_names(error, directory, *tokenizer_files)  # the directory, and each way a tokenizer can be stored
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(tmp_path / "nowhere")
    assert_names(error, tmp_path / "nowhere", "not found")
    (tmp_path / "photos").mkdir()
    with pytest.raises(ConfigError) as error:
        load_checkpoint(tmp_path / "photos")
    assert_names(error, tmp_path / "photos" / "llm_config.json", "not found")


def test_offloaded_layers_give_the_same_outputs(monkeypatch):
    from bagel_mini.inference import Inferencer

    special = BagelTokenizer.from_dir(TINY).special_ids
    outputs = []
    for offload in (False, True):
        model, autoencoder = load_checkpoint(TINY, offload=offload)
        engine = Inferencer(model, autoencoder, None, special)
        context = engine.add_text(engine.empty_context(), [5, 6, 7])
        outputs.append(engine.generate_text(context, max_length=4).logits)
        assert bool(model.llm.layers[0]._forward_pre_hooks) == offload
    assert torch.equal(outputs[0], outputs[1])


def test_a_gpu_without_room_for_the_weights_is_refused_with_the_figures(monkeypatch):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1 << 20, 1 << 30))
    values = sum(t.numel() for name in ("ema", "ae") for t in load_file(TINY / f"{name}.safetensors").values())
    needed = f"{2 * values / 2**20:.1f} MiB"  # two bytes a value in bfloat16
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(TINY, dtype=torch.bfloat16, device="cuda")
    assert_names(error, needed, "torch.bfloat16", "cuda", "1.0 MiB", "--offload")  # need, have, and a way out
