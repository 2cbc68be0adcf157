"""8-bit weights (weights8.py): the rounding bounds, the forward pass, loading in 8 bits, the GPU memory check."""

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import TINY, assert_names
from safetensors.torch import load_file
from torch import nn

from bagel_mini.checkpoint import CheckpointError, build_meta, check_gpu_memory, load_checkpoint, weight_bytes
from bagel_mini.config import load_config_dir
from bagel_mini.inference import Inferencer
from bagel_mini.tokenizer import BagelTokenizer
from bagel_mini.weights8 import FORMATS, Linear8, dequantize, quantize, use_8bit_linears

sys.path.insert(0, str(Path(__file__).parents[1]))
import sample  # noqa: E402


def rows_of_every_magnitude(seed: int = 0) -> torch.Tensor:
    """(12, 40) float64 weights: rows from 1e-3 to 1e3 in size, one row with an outlier, one all zero."""
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(12, 40, generator=generator, dtype=torch.float64)
    weight *= torch.logspace(-3, 3, 12, dtype=torch.float64)[:, None]
    weight[3, 7] = 50 * weight[3].abs().max()
    weight[5] = 0
    return weight


def test_fp8_values_are_within_half_a_step_of_the_weight_over_its_row_scale():
    weight = rows_of_every_magnitude()
    values, scale = quantize(weight, "fp8")
    assert values.dtype == torch.float8_e4m3fn and scale.dtype == torch.float32 and scale.shape == (12,)
    exact = weight / scale.double()[:, None]  # what the 8 bits should hold
    # e4m3 has 3 mantissa bits: in the binade [2^e, 2^(e+1)) steps are 2^(e-3), and below 2^-6 (subnormals)
    # they are 2^-9; rounding to nearest is off by half a step at most. The cast may round through float32
    # first, which adds at most 2^-24 of the value.
    binade = torch.floor(torch.log2(exact.abs())).clamp(min=-6)
    bound = 2.0 ** (binade - 4) + exact.abs() * 2.0**-24
    error = (values.double() - exact).abs()
    nonzero = weight[:, 0] != 0
    assert (error[nonzero] <= bound[nonzero]).all()
    # Each row's largest magnitude lands on the format's largest value, so nothing is clipped
    assert torch.equal(values.double().abs().amax(1)[nonzero], torch.full((11,), 448.0, dtype=torch.float64))
    assert torch.equal(values[5].double(), torch.zeros(40, dtype=torch.float64)) and scale[5] == 1


def test_int8_values_are_the_nearest_integers_to_the_weight_over_its_row_scale():
    weight = rows_of_every_magnitude(seed=1)
    values, scale = quantize(weight, "int8")
    assert values.dtype == torch.int8
    exact = weight / scale.double()[:, None]
    assert ((values.double() - exact).abs() <= 0.5 + 1e-12).all()  # float64 division: ~1e-14 off at 127
    nonzero = weight[:, 0] != 0
    assert torch.equal(values.abs().amax(1)[nonzero].long(), torch.full((11,), 127))
    assert not values[5].any() and scale[5] == 1


@pytest.mark.parametrize("mode", ["fp8", "int8"])
@pytest.mark.parametrize("bias", [True, False])
def test_a_linear8_computes_the_linear_of_its_dequantized_weight(mode, bias):
    generator = torch.Generator().manual_seed(2)
    linear = nn.Linear(40, 12, bias=bias, dtype=torch.float64)
    with torch.no_grad():
        linear.weight.copy_(rows_of_every_magnitude())
        if bias:
            linear.bias.normal_(generator=generator)
    layer = Linear8.from_linear(linear, mode)
    x = torch.randn(5, 40, generator=generator, dtype=torch.float64)
    whole = layer.weight.double() * layer.scale.double()[:, None]
    torch.testing.assert_close(layer(x), F.linear(x, whole, linear.bias), rtol=0, atol=1e-12)
    assert layer.weight.dtype == FORMATS[mode].dtype  # the weight stays in 8 bits between calls
    assert dequantize(layer.weight, layer.scale, torch.bfloat16).dtype == torch.bfloat16


def decoder_linear_keys(file_keys) -> list[str]:
    """The released keys of the decoder layers' projection weights (q/k/v/o, gate/up/down, both experts)."""
    prefix = "language_model.model.layers."
    return [key for key in file_keys if key.startswith(prefix) and "_proj" in key and key.endswith(".weight")]


@pytest.mark.parametrize("mode", ["fp8", "int8"])
def test_a_released_layout_checkpoint_loads_in_8_bits_quantized_tensor_by_tensor(mode):
    file = load_file(TINY / "ema.safetensors")
    plain, autoencoder = load_checkpoint(TINY)
    model, eight_bit_autoencoder = load_checkpoint(TINY, weights=mode)
    layers = [m for m in model.modules() if isinstance(m, Linear8)]
    config = load_config_dir(TINY).llm
    assert len(layers) == config.num_hidden_layers * 2 * 7 == len(decoder_linear_keys(file))  # two experts' 7
    layer = model.llm.layers[1].gen.mlp.down_proj
    values, scale = quantize(file["language_model.model.layers.1.mlp_moe_gen.down_proj.weight"], mode)
    assert torch.equal(layer.weight.view(torch.uint8), values.view(torch.uint8)) and torch.equal(layer.scale, scale)
    # Everything else is loaded as without --weights: embeddings, lm_head, norms, biases, ViT, connectors, autoencoder
    state, plain_state = model.state_dict(), plain.state_dict()
    eight_bit = {
        f"{name}.{part}" for name, m in model.named_modules() if isinstance(m, Linear8) for part in ("weight", "scale")
    }
    assert all(torch.equal(state[name], plain_state[name]) for name in state.keys() - eight_bit)
    assert isinstance(model.llm.lm_head, nn.Linear) and isinstance(model.connector.fc1, nn.Linear)
    autoencoder_state = eight_bit_autoencoder.state_dict()
    assert all(torch.equal(t, autoencoder_state[name]) for name, t in autoencoder.state_dict().items())
    stored = sum(t.numel() * t.element_size() for m in (model, eight_bit_autoencoder) for t in m.state_dict().values())
    assert stored == weight_bytes(build_meta(load_config_dir(TINY)), torch.float32, mode)


def test_the_8_bit_model_runs_as_the_plain_model_with_its_decoder_weights_dequantized():
    model, autoencoder = load_checkpoint(TINY, weights="fp8")
    reference, _ = load_checkpoint(TINY)
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, Linear8):
                reference.get_submodule(name).weight.copy_(dequantize(module.weight, module.scale, torch.float32))
    special = BagelTokenizer.from_dir(TINY).special_ids
    logits = []
    for bagel in (model, reference):
        engine = Inferencer(bagel, autoencoder, None, special)
        logits.append(engine.generate_text(engine.add_text(engine.empty_context(), [5, 6, 7]), max_length=4).logits)
    assert torch.equal(logits[0], logits[1])  # the same float32 weights reach the same kernels


def test_only_the_decoder_layers_linears_become_8_bit():
    model, _ = build_meta(load_config_dir(TINY))
    linears = {name for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    use_8bit_linears(model, "int8")
    swapped = {name for name, m in model.named_modules() if isinstance(m, Linear8)}
    assert swapped == {name for name in linears if name.startswith("llm.layers.")}
    with pytest.raises(ValueError) as error:
        use_8bit_linears(model, "fp4")
    assert_names(error, "'fp4'", "fp8", "int8")
    with pytest.raises(ValueError) as error:
        load_checkpoint(TINY, weights="nf4")
    assert_names(error, "--weights", "'nf4'", "bf16", "fp8", "int8")


def mebibytes(count: int) -> str:
    return f"{count / 2**20:.1f} MiB"


def needs_from_the_files() -> dict[str, int]:
    """The weights' bytes in bfloat16 and with 8-bit decoder projections (a byte a value, a float32 scale a row)."""
    tensors = {**load_file(TINY / "ema.safetensors"), **load_file(TINY / "ae.safetensors")}
    values = sum(t.numel() for t in tensors.values())
    linears = [tensors[key] for key in decoder_linear_keys(tensors)]
    eight_bit = sum(t.numel() + 4 * t.shape[0] for t in linears)
    return {"bf16": 2 * values, "fp8": 2 * (values - sum(t.numel() for t in linears)) + eight_bit}


def test_the_gpu_memory_check_names_the_weights_mode_that_fits(monkeypatch):
    needs = needs_from_the_files()
    free = (needs["bf16"] + needs["fp8"]) // 2
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free, 1 << 40))
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(TINY, dtype=torch.bfloat16, device="cuda")
    assert_names(error, mebibytes(needs["bf16"]), "cuda", mebibytes(free), "--weights fp8", mebibytes(needs["fp8"]))
    meta = build_meta(load_config_dir(TINY))
    for mode in ("fp8", "int8"):  # both fit: no error
        check_gpu_memory(meta, torch.bfloat16, mode, torch.device("cuda"))


def test_the_gpu_memory_check_says_when_even_8_bits_do_not_fit(monkeypatch):
    needs = needs_from_the_files()
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (needs["fp8"] - 1, 1 << 40))
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(TINY, dtype=torch.bfloat16, device="cuda", weights="int8")
    assert_names(error, mebibytes(needs["fp8"]), "--weights int8", "--offload")
    assert "fits" not in str(error.value)


def test_sample_passes_its_weights_flag_to_loading(monkeypatch):
    assert sample.parse_args([]).weights == "bf16"
    seen = {}

    def record(*args, **kwargs):
        seen.update(kwargs)
        raise CheckpointError("stop here")

    monkeypatch.setattr(sample, "load_checkpoint", record)
    with pytest.raises(SystemExit):
        sample.main(["--checkpoint", str(TINY), "--prompt", "a red circle", "--weights", "int8", "--device", "cpu"])
    assert seen["weights"] == "int8"
