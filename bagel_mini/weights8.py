"""8-bit weights: the decoder's Linear layers stored in one byte a value, made whole layer by layer.

BAGEL-7B-MoT holds 14.7B values, 29.4 GB in bfloat16; 13.1B of them (89%) are the q/k/v/o projections
and the MLPs of the 28 decoder layers, both experts. Stored in 8 bits, those halve, and the model needs
16.3 GB: it fits a 24 GB GPU. Each such weight becomes a `Linear8`: 8-bit values (float8_e4m3fn, `fp8`,
or int8, `int8`) and one float32 scale per output row, with value * scale ~= weight. In the forward pass
the layer turns its weight back into the compute dtype and runs an ordinary F.linear: plain PyTorch,
the same on every GPU and on a CPU (no 8-bit matmul is needed; only one layer's weight is ever whole).

Why one scale per output row (per output channel): output j is y_j = sum_i W_ji x_i, so a scale s_j
shared by row j factors out of that sum; rows differ in magnitude (heads, channels), and a scale of
their own spends each row's 8 bits on its own range. The scale is the row's largest magnitude over the
format's largest value (448 for e4m3, 127 for int8), so no value is clipped; a row costs 4 bytes more.
fp8 keeps 4 significant bits over a wide range (a step of 1/16 to 1/8 of the value: good for rows with
outliers); int8 has uniform steps of amax / 127 (finer for rows without outliers). Both take one byte.

What stays in the compute dtype, because it is small or its error is not averaged over a sum: the token
embedding (a lookup) and lm_head (the logits, where a top-1 choice is made), every norm, the ViT and its
connector, the time embedder, vae2llm and llm2vae (they write straight into and read straight out of
the latent space), the fixed position tables and the autoencoder. Together they are 1.6B values of the
7B model, 3.3 GB in bfloat16.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class Format:
    dtype: torch.dtype
    largest: float  # the largest finite value: the scale maps each row's largest magnitude onto it
    rounds: bool  # int8 rounds to the nearest integer itself; the float8 cast rounds to nearest on its own


FORMATS = {"fp8": Format(torch.float8_e4m3fn, 448.0, rounds=False), "int8": Format(torch.int8, 127.0, rounds=True)}
WEIGHT_MODES = ("bf16", *FORMATS)  # bf16: every weight in the compute dtype (no 8-bit storage)
SCALE_DTYPE = torch.float32


def quantize(weight: Tensor, mode: str) -> tuple[Tensor, Tensor]:
    """(out, in) weight -> (out, in) 8-bit values and (out,) float32 scales, values * scales[:, None] ~= weight.

    Computed in float32 (float64 for a float64 weight) on the weight's device; the weight is not changed.
    An all-zero row gets scale 1 (its values are 0).
    """
    form = FORMATS[mode]
    rows = weight.to(torch.promote_types(weight.dtype, SCALE_DTYPE), copy=True)
    amax = torch.linalg.vector_norm(rows, float("inf"), dim=1)  # (out,) each row's largest magnitude
    scale = (amax / form.largest).to(SCALE_DTYPE)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    rows.div_(scale[:, None]).clamp_(-form.largest, form.largest)  # in place: one float32 copy in memory
    return (rows.round_() if form.rounds else rows).to(form.dtype), scale


def dequantize(values: Tensor, scale: Tensor, dtype: torch.dtype) -> Tensor:
    """values * scale[:, None] in `dtype`, formed in float32 (float64 for float64) and rounded once: the scale
    is never rounded to float16 on its own, where a small one would lose its precision."""
    wide = torch.promote_types(dtype, scale.dtype)
    return values.to(wide, copy=True).mul_(scale.to(wide)[:, None]).to(dtype)


class Linear8(nn.Module):
    """nn.Linear with its weight in 8 bits and a scale per output row (buffers: not trained); bias as is."""

    def __init__(self, weight: Tensor, scale: Tensor, bias: nn.Parameter | None, mode: str):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.mode = mode
        self.register_buffer("weight", weight)  # (out, in) 8-bit values
        self.register_buffer("scale", scale)  # (out,) float32
        self.bias = bias

    @classmethod
    def from_linear(cls, linear: nn.Linear, mode: str) -> "Linear8":
        """The layer quantized (on the meta device: the shapes and dtypes only, to load the weights into)."""
        return cls(*quantize(linear.weight.detach(), mode), linear.bias, mode)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, dequantize(self.weight, self.scale, x.dtype), self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, mode={self.mode}"


def decoder_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """The nn.Linear layers of the decoder layers (`llm.layers.*`) by name: the ones stored in 8 bits."""
    return {
        name: module
        for name, module in model.named_modules()
        if name.startswith("llm.layers.") and isinstance(module, nn.Linear)
    }


def use_8bit_linears(model: nn.Module, mode: str) -> nn.Module:
    """Replace each decoder Linear by its Linear8 (on a meta model: before loading the weights into it)."""
    if mode not in FORMATS:
        raise ValueError(f"unknown 8-bit weights mode {mode!r}; choose one of {', '.join(FORMATS)}")
    for name, linear in decoder_linears(model).items():
        parent, _, attribute = name.rpartition(".")
        setattr(model.get_submodule(parent), attribute, Linear8.from_linear(linear, mode))
    return model


def eight_bit_layers(model: nn.Module) -> dict[str, str]:
    """{name of a Linear8's weight: its mode} for every Linear8 in `model`."""
    return {f"{name}.weight": module.mode for name, module in model.named_modules() if isinstance(module, Linear8)}


def eight_bit_bytes(linear: nn.Linear) -> int:
    """Bytes a Linear's weight takes as a Linear8: one a value, plus a float32 scale a row."""
    return linear.weight.numel() + linear.out_features * SCALE_DTYPE.itemsize
