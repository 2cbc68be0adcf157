"""The decoder layer and its routing. Identities are checked in float64: routing sorts rows by expert, so the
order of float32 sums differs by row count and CPU, while a float64 rounding difference stays near 1e-15 on these
hidden states of size about 1 (a routing or caching bug moves them by about 0.1 or more)."""

import pytest
import torch
from helpers import assert_names, randomize_, tiny_llm_config

from bagel_mini.attention import dense_mask, in_order
from bagel_mini.mot import LanguageModel, Route
from bagel_mini.qwen2 import rotary_cos_sin

# One interleaved sample: text (5), an image block (start marker, 4 VAE tokens, end marker), text (3).
SPLITS = [(5, "causal"), (6, "full"), (3, "causal")]
POSITIONS = torch.tensor([0, 1, 2, 3, 4] + [5] * 6 + [6, 7, 8])  # an image shares one position
IS_GEN = torch.tensor([False] * 6 + [True] * 4 + [False] * 4)  # markers use the understanding expert


EXACT = {"rtol": 0, "atol": 1e-12}  # an identity, up to float64 rounding (see above)


def model(arch: str, seed: int = 0) -> LanguageModel:
    return randomize_(LanguageModel(tiny_llm_config(arch)).double(), seed).eval()


def inputs(length: int = 14, seed: int = 1) -> torch.Tensor:
    return torch.randn(length, 32, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def with_generation_expert_copied(dense: LanguageModel, arch: str) -> LanguageModel:
    """A MoE / MoT model whose generation expert is an exact copy of the dense model's weights."""
    routed = LanguageModel(tiny_llm_config(arch)).double()
    state = dense.state_dict()
    state["norm_gen.weight"] = state["norm.weight"]
    for name in routed.state_dict():
        if ".gen." in name:
            state[name] = state[name.replace(".gen.", ".und.")]
    routed.load_state_dict(state, strict=True)
    return routed.eval()


@pytest.mark.parametrize("arch", ["moe", "mot"])
def test_generation_expert_copied_from_understanding_equals_dense(arch):
    dense = model("dense")
    routed = with_generation_expert_copied(dense, arch)
    x, mask = inputs(), dense_mask([SPLITS])
    torch.testing.assert_close(routed(x, POSITIONS, IS_GEN, mask), dense(x, POSITIONS, IS_GEN, mask), **EXACT)


def test_freeze_und_stops_the_gradient_through_understanding_tokens_and_changes_no_value():
    """The text after an image attends to the image's VAE tokens, so a loss on that text reaches the generation
    expert; with freeze_und (the official trainer's) it reaches nothing, and the forward pass is unchanged."""
    x, mask, last_text = inputs(), dense_mask([SPLITS]), slice(11, 14)
    outputs, gradients = [], []
    for frozen in (False, True):
        llm = model("mot")
        for layer in llm.layers:
            layer.freeze_und = frozen
        hidden = llm(x, POSITIONS, IS_GEN, mask)
        hidden[last_text].sum().backward()
        outputs.append(hidden.detach())
        gradients.append([p.grad for name, p in llm.named_parameters() if ".gen." in name])
    assert torch.equal(outputs[0], outputs[1])
    assert all(g is not None and g.abs().sum() > 0 for g in gradients[0][:4])  # layer 0: input norm, q, q bias, k
    assert all(g is None or not g.any() for g in gradients[1])  # joining the experts' rows passes zeros to the VAE rows


@pytest.mark.parametrize("arch", ["moe", "mot"])
def test_generation_expert_changes_vae_tokens_only(arch):
    first = model(arch, seed=0)
    second = model(arch, seed=0)
    with torch.no_grad():
        for name, parameter in second.named_parameters():
            if ".gen." in name or name == "norm_gen.weight":
                parameter.add_(0.1 * torch.randn_like(parameter))
    # The VAE tokens of an image change with the generation expert (by far more than rounding) ...
    x, mask = inputs(), dense_mask([SPLITS])
    assert not torch.allclose(first(x, POSITIONS, IS_GEN, mask)[IS_GEN], second(x, POSITIONS, IS_GEN, mask)[IS_GEN])
    # ... and a text-only sample is untouched, to the last bit.
    text, text_mask = inputs(8), dense_mask([[(8, "causal")]])
    positions, no_gen = torch.arange(8), torch.zeros(8, dtype=torch.bool)
    assert torch.equal(first(text, positions, no_gen, text_mask), second(text, positions, no_gen, text_mask))


def test_the_three_variants_differ_only_in_what_the_generation_expert_owns():
    counts = {arch: sum(p.numel() for p in model(arch).parameters()) for arch in ("dense", "moe", "mot")}
    layer = model("mot").layers[0]
    mlp = sum(p.numel() for p in layer.und["mlp"].parameters())
    whole_layer = sum(p.numel() for p in layer.und.parameters())
    norm = 32
    assert counts["moe"] - counts["dense"] == 2 * mlp + norm  # 2 layers of MLP, plus the final norm
    assert counts["mot"] - counts["dense"] == 2 * whole_layer + norm


@pytest.mark.parametrize("arch", ["dense", "moe", "mot"])
def test_a_shared_part_runs_once_over_all_rows_and_an_owned_part_on_its_expert_rows(arch):
    layer = model(arch).layers[0]
    # The modules a layer calls directly (attention runs through its q_proj ... and o_proj), named "und.mlp" etc.
    called = ("input_norm", "attn.q_proj", "attn.o_proj", "post_attention_norm", "mlp")
    watched = {name: module for name, module in layer.named_modules() if name.split(".", 1)[-1] in called}
    rows = {name: [] for name in watched}
    for name, module in watched.items():
        module.register_forward_hook(lambda module, args, output, name=name: rows[name].append(len(args[0])))
    route = Route.from_mask(IS_GEN)  # a layer takes its inputs in expert order (LanguageModel sorts them)
    cos, sin = rotary_cos_sin(POSITIONS[route.order], 8, 10000.0)
    layer(inputs()[route.order], cos, sin, route, in_order(dense_mask([SPLITS]), route.order))
    for name in watched:
        expert, part = name.split(".", 1)
        if part.split(".")[0] not in layer.gen:
            assert rows[name] == [14], name  # shared: one call over every row, no gather
        else:
            assert rows[name] == [4 if expert == "gen" else 10], name  # owned: each expert on its own rows


@pytest.mark.parametrize("arch", ["dense", "moe", "mot"])
def test_cached_inference_equals_one_packed_pass(arch):
    llm, x = model(arch), inputs()
    packed = llm(x, POSITIONS, IS_GEN, dense_mask([SPLITS]))
    cache = llm.empty_cache()
    outputs, start = [], 0
    for size, mode in SPLITS:
        rows = slice(start, start + size)
        hidden, cache = llm.extend(x[rows], POSITIONS[rows], IS_GEN[rows], cache, causal=mode == "causal")
        outputs.append(hidden)
        start += size
    assert cache.length == 14
    torch.testing.assert_close(torch.cat(outputs), packed, **EXACT)


@pytest.mark.parametrize("arch", ["dense", "mot"])
def test_noised_image_reads_the_cache_without_joining_it(arch):
    splits = [(5, "causal"), (6, "noise"), (3, "causal")]
    llm, x = model(arch), inputs()
    packed = llm(x, POSITIONS, IS_GEN, dense_mask([splits]))
    _, cache = llm.extend(x[:5], POSITIONS[:5], IS_GEN[:5], llm.empty_cache(), causal=True)
    image = llm.query(x[5:11], POSITIONS[5:11], IS_GEN[5:11], cache)
    after, cache_after = llm.extend(x[11:], POSITIONS[11:], IS_GEN[11:], cache, causal=True)
    assert cache.length == 5 and cache_after.length == 8
    torch.testing.assert_close(image, packed[5:11], **EXACT)
    torch.testing.assert_close(after, packed[11:], **EXACT)  # later text never saw the noise


def test_packed_samples_equal_separate_runs():
    llm = model("mot")
    first, second = inputs(14, seed=2), inputs(6, seed=3)
    second_splits = [(2, "causal"), (4, "full")]
    second_positions, second_gen = torch.tensor([0, 1, 2, 2, 2, 2]), torch.tensor([False] * 3 + [True] * 2 + [False])
    packed = llm(
        torch.cat([first, second]),
        torch.cat([POSITIONS, second_positions]),
        torch.cat([IS_GEN, second_gen]),
        dense_mask([SPLITS, second_splits]),
    )
    torch.testing.assert_close(packed[:14], llm(first, POSITIONS, IS_GEN, dense_mask([SPLITS])), **EXACT)
    torch.testing.assert_close(
        packed[14:], llm(second, second_positions, second_gen, dense_mask([second_splits])), **EXACT
    )


def test_mask_of_the_wrong_size_names_both_sizes():
    llm = model("mot")
    with pytest.raises(ValueError) as error:
        llm(inputs(), POSITIONS, IS_GEN, dense_mask([[(13, "causal")]]))
    assert_names(error, "attention mask", "(13, 13)", "14")
