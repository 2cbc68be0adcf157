import json

import pytest
import torch
from helpers import FIXTURES, assert_names

from bagel_mini.checkpoint import released_keys, released_name, released_names
from bagel_mini.config import preset
from bagel_mini.model import Bagel

RELEASED = json.loads((FIXTURES / "bagel-7b-mot-keys.json").read_text())


def test_the_released_preset_reads_exactly_the_released_keys_and_shapes():
    ours = released_keys(preset("bagel-7b-mot"))
    for file_name, listing in (("ema.safetensors", "ema_safetensors"), ("ae.safetensors", "ae_safetensors")):
        assert ours[file_name] == {entry["key"]: entry["shape"] for entry in RELEASED[listing]}


def test_parameter_counts_match_the_release():
    with torch.device("meta"):
        model = Bagel(preset("bagel-7b-mot"))
    counts = RELEASED["param_counts"]

    def count(prefix: str, exclude: tuple[str, ...] = ()) -> int:
        return sum(
            p.numel()
            for name, p in model.state_dict().items()
            if name.startswith(prefix) and not any(part in name for part in exclude)
        )

    assert count("") == counts["bagel_total (ema.safetensors)"]
    assert count("llm.") == counts["language_model_total"]
    assert count("llm.embed_tokens") == counts["language_model.embed_tokens"]
    assert count("llm.lm_head") == counts["language_model.lm_head"]
    assert (
        count("llm.", exclude=(".gen.", "norm_gen", "embed_tokens", "lm_head"))
        == counts["llm_und_expert_layers_plus_final_norm (no embed/lm_head)"]
    )
    assert (
        count("llm.", exclude=(".und.", "llm.norm.", "embed_tokens", "lm_head"))
        == counts["llm_gen_expert (*_moe_gen incl. norm_moe_gen)"]
    )
    assert count("vit.") == counts["vit_model"]
    assert count("connector.") == counts["connector"]
    assert count("time_embedder.") == counts["time_embedder"]
    # About 7B parameters run for any one token; 14.6B are stored.
    active = count(
        "", exclude=(".gen.", "norm_gen", "vit", "connector", "time_embedder", "vae2llm", "llm2vae", "pos_embed")
    )
    assert active == counts["llm_und_path_total (embed_tokens + und layers + final norm + lm_head)"]


@pytest.mark.parametrize("name", ["toy", "small"])
@pytest.mark.parametrize("arch", ["dense", "moe", "mot"])
def test_every_parameter_of_every_preset_has_one_released_key(name, arch):
    with torch.device("meta"):
        model = Bagel(preset(name, arch))
    names = released_names(model)  # raises if a name has no rule or two names collide
    assert len(names) == len(model.state_dict())


def test_the_key_table_names_the_experts_as_the_release_does():
    assert (
        released_name("llm.layers.7.gen.attn.q_norm.weight")
        == "language_model.model.layers.7.self_attn.q_norm_moe_gen.weight"
    )
    assert (
        released_name("llm.layers.7.und.attn.q_norm.weight") == "language_model.model.layers.7.self_attn.q_norm.weight"
    )
    assert (
        released_name("llm.layers.0.gen.mlp.up_proj.weight")
        == "language_model.model.layers.0.mlp_moe_gen.up_proj.weight"
    )
    assert released_name("vit.layers.3.norm2.bias") == "vit_model.vision_model.encoder.layers.3.layer_norm2.bias"


def test_a_name_without_a_rule_is_reported():
    with pytest.raises(KeyError) as error:
        released_name("llm.layers.0.und.adapter.weight")
    assert_names(error, "llm.layers.0.und.adapter.weight", "KEY_TABLE")  # the parameter, and the table to extend
