import json
from dataclasses import replace

import pytest
from helpers import FIXTURES, TINY

from bagel_mini.config import (
    PRESETS,
    ConfigError,
    LLMConfig,
    config_from_dict,
    config_to_dict,
    load_config_dir,
    preset,
    read_llm_json,
    save_config_dir,
)

RELEASED = json.loads((FIXTURES / "bagel-7b-mot-keys.json").read_text())["config"]


def test_bagel_7b_mot_preset_has_every_released_value():
    config = preset("bagel-7b-mot")
    for name, value in RELEASED["llm_effective"].items():
        if name == "rope_scaling":
            continue  # not a field: the release has none
        assert getattr(config.llm, name) == value, name
    for name, value in RELEASED["vit_effective"].items():
        if name == "rope":
            continue  # the loader turns the ViT's RoPE off; our SigLIP has none
        assert getattr(config.vit, name) == value, name
    for name, value in RELEASED["bagel_config"].items():
        if name != "source":
            assert getattr(config, name) == value, name
    for name, value in RELEASED["vae_params"].items():
        if name != "source":
            assert getattr(config.vae, name) == value, name


@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("arch", ["dense", "moe", "mot"])
def test_every_preset_builds_every_variant(name, arch):
    assert preset(name, arch).llm.architecture == arch


def test_released_json_files_read_with_the_loader_overrides():
    config = load_config_dir(TINY)
    assert config.llm.hidden_size == 64 and config.llm.num_key_value_heads == 2
    assert config.llm.qk_norm and config.llm.architecture == "mot"  # absent from the file: the official override
    assert config.vit.num_hidden_layers == 2  # the file says 3; BAGEL drops SigLIP's last layer
    assert config.max_latent_size == 16 and config.vae.ch == 32 and config.vae.ch_mult == [1, 2, 1, 1]
    assert config.llm.extra["architectures"] == ["Qwen2ForCausalLM"]  # kept for writing back


def test_directory_without_bagel_config_gets_the_released_bagel_values(tmp_path):
    for name in ("llm_config.json", "vit_config.json"):
        (tmp_path / name).write_text((TINY / name).read_text())
    config = load_config_dir(tmp_path)
    assert config.max_latent_size == 64 and config.vit_max_num_patch_per_side == 70 and config.vae.ch == 128


def test_write_then_read_gives_the_same_config(tmp_path):
    config = load_config_dir(TINY)
    save_config_dir(config, tmp_path)
    assert load_config_dir(tmp_path) == config
    written = json.loads((tmp_path / "llm_config.json").read_text())
    original = json.loads((TINY / "llm_config.json").read_text())
    assert {key: written[key] for key in original} == original  # every released field survives
    assert json.loads((tmp_path / "vit_config.json").read_text())["num_hidden_layers"] == 3


def test_writing_never_overwrites_silently(tmp_path):
    save_config_dir(preset("toy"), tmp_path)
    with pytest.raises(FileExistsError, match="llm_config.json exists"):
        save_config_dir(preset("toy"), tmp_path)
    save_config_dir(replace(preset("toy"), timestep_shift=3.0), tmp_path, overwrite=True)
    assert load_config_dir(tmp_path).timestep_shift == 3.0


def write_llm(tmp_path, **changes):
    values = json.loads((TINY / "llm_config.json").read_text())
    values.update(changes)
    values = {key: value for key, value in values.items() if value is not None}
    path = tmp_path / "llm_config.json"
    path.write_text(json.dumps(values))
    return path


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"hidden_size": None}, r"llm_config.json: missing field\(s\): hidden_size"),
        ({"hidden_size": "64"}, r"llm_config.json: field 'hidden_size' must be int, got str \('64'\)"),
        ({"num_hidden_layers": True}, "field 'num_hidden_layers' must be int, got bool"),
        ({"rope_theta": "big"}, "field 'rope_theta' must be float"),
        ({"layer_module": "Qwen2FancyLayer"}, "layer_module 'Qwen2FancyLayer' is not one of"),
        ({"num_key_value_heads": 3}, "num_attention_heads 4 is not divisible by num_key_value_heads 3"),
        ({"hidden_size": 0}, "hidden_size must be a positive integer"),
    ],
)
def test_bad_config_json_names_the_file_and_field(tmp_path, changes, message):
    with pytest.raises(ConfigError, match=message):
        read_llm_json(write_llm(tmp_path, **changes))


def test_unreadable_or_missing_files_are_named(tmp_path):
    (tmp_path / "llm_config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="llm_config.json: not valid json"):
        read_llm_json(tmp_path / "llm_config.json")
    with pytest.raises(ConfigError, match="vit_config.json: config file not found"):
        (tmp_path / "llm_config.json").write_text((TINY / "llm_config.json").read_text())
        load_config_dir(tmp_path)


def test_ints_are_accepted_where_floats_are_expected():
    config = LLMConfig(
        vocab_size=8,
        hidden_size=8,
        intermediate_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    values = {**config_to_dict(config), "rope_theta": 1000000}
    assert config_from_dict(LLMConfig, values, "test").rope_theta == 1e6


def test_unknown_preset_and_arch_are_named():
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        preset("huge")
    with pytest.raises(ConfigError, match="unknown arch 'moo'"):
        preset("toy", "moo")


def test_unsupported_attention_variants_are_refused_not_ignored(tmp_path):
    with pytest.raises(ConfigError, match="rope_scaling=.*is not supported"):
        read_llm_json(write_llm(tmp_path, rope_scaling={"type": "yarn", "factor": 4.0}))
    with pytest.raises(ConfigError, match="use_sliding_window=True is not supported"):
        read_llm_json(write_llm(tmp_path, use_sliding_window=True))
