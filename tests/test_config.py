import json
from dataclasses import replace

import pytest
from helpers import FIXTURES, TINY, assert_names

from bagel_mini.config import (
    ARCHITECTURES,
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
    with pytest.raises(FileExistsError) as error:
        save_config_dir(preset("toy"), tmp_path)
    assert_names(error, tmp_path / "llm_config.json", "overwrite")  # the file, and the way to replace it
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
    ("changes", "facts"),
    [
        ({"hidden_size": None}, ["hidden_size", "missing"]),
        ({"hidden_size": "64"}, ["hidden_size", "'64'", "int"]),  # the value as written, and the type wanted
        ({"num_hidden_layers": True}, ["num_hidden_layers", "True", "int"]),
        ({"rope_theta": "big"}, ["rope_theta", "'big'", "float"]),
        ({"layer_module": "Qwen2FancyLayer"}, ["layer_module", "Qwen2FancyLayer", *ARCHITECTURES.values()]),
        ({"num_key_value_heads": 3}, ["num_attention_heads", "4", "num_key_value_heads", "3"]),
        ({"hidden_size": 0}, ["hidden_size", "0", "positive"]),
    ],
)
def test_bad_config_json_names_the_file_and_field(tmp_path, changes, facts):
    path = write_llm(tmp_path, **changes)
    with pytest.raises(ConfigError) as error:
        read_llm_json(path)
    assert_names(error, path, *facts)


@pytest.mark.parametrize(
    ("changes", "facts"),
    [
        ({"timestep_shift": "3"}, ["timestep_shift", "'3'", "float"]),
        ({"timestep_shift": 0}, ["timestep_shift", "0", "positive"]),
        ({"ae_params": [128]}, ["ae_params", "json object"]),
        ({"ae_params": {"ch": 32, "num_res_blocks": 1}}, ["ae_params", "ch_mult", "missing"]),
        (
            {"ae_params": {"ch": 32, "ch_mult": [1, 0, 2, 2], "num_res_blocks": 1}},
            ["ae_params", "ch_mult", "[1, 0, 2, 2]"],
        ),
    ],
)
def test_bad_bagel_config_json_names_the_file_and_field(tmp_path, changes, facts):
    for name in ("llm_config.json", "vit_config.json"):
        (tmp_path / name).write_text((TINY / name).read_text())
    values = {**json.loads((TINY / "bagel_config.json").read_text()), **changes}
    (tmp_path / "bagel_config.json").write_text(json.dumps(values))
    with pytest.raises(ConfigError) as error:
        load_config_dir(tmp_path)
    assert_names(error, tmp_path / "bagel_config.json", *facts)


def test_unreadable_or_missing_files_are_named(tmp_path):
    (tmp_path / "llm_config.json").write_text("{not json")
    with pytest.raises(ConfigError) as error:
        read_llm_json(tmp_path / "llm_config.json")
    assert_names(error, tmp_path / "llm_config.json", "line 1 column 2")  # where the parser stopped
    (tmp_path / "llm_config.json").write_text((TINY / "llm_config.json").read_text())
    with pytest.raises(ConfigError) as error:
        load_config_dir(tmp_path)
    assert_names(error, tmp_path / "vit_config.json", "not found")


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
    with pytest.raises(ConfigError) as error:
        preset("huge")
    assert_names(error, "huge", *PRESETS)
    with pytest.raises(ConfigError) as error:
        preset("toy", "moo")
    assert_names(error, "moo", *ARCHITECTURES)


def test_unsupported_attention_variants_are_refused_not_ignored(tmp_path):
    with pytest.raises(ConfigError) as error:
        read_llm_json(write_llm(tmp_path, rope_scaling={"type": "yarn", "factor": 4.0}))
    assert_names(error, "llm_config.json", "rope_scaling", "yarn")
    with pytest.raises(ConfigError) as error:
        read_llm_json(write_llm(tmp_path, use_sliding_window=True))
    assert_names(error, "llm_config.json", "use_sliding_window", "True")
