"""Classifier-free guidance, both halves (paper section 2.4 and Table 3).

Training: conditioning items are dropped at random so the model also learns the unconditional
velocities: text with probability 0.1, ViT images 0.5, clean VAE images 0.1. A dropped text leaves no
trace; a dropped image still advances the RoPE position by one, as if its block had been there (the
official packer does the same, so positions after it do not depend on the draw).

Inference: the image is generated with three branches that see different contexts: `v` (everything),
`v_no_text` (without the last text) and `v_no_image` (without the context images). They are combined
as v_text = v_no_text + s_text (v - v_no_text) and v_out = v_no_image + s_img (v_text - v_no_image),
then rescaled so guidance cannot make the velocity longer than the conditional one ("renorm").
"""

import random
from dataclasses import dataclass

import torch
from torch import Tensor

RENORM_TYPES = ("global", "channel", "text_channel")


@dataclass
class ConditionDropout:
    """Probabilities of dropping a droppable item of each kind during training."""

    text: float = 0.1
    vit: float = 0.5
    vae: float = 0.1

    def __post_init__(self):
        for name in ("text", "vit", "vae"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"dropout probability {name}={getattr(self, name)} is not in [0, 1]")

    def drops(self, kind: str, rng: random.Random) -> bool:
        """One draw: is this droppable item of `kind` ('text', 'vit' or 'vae') left out?"""
        return rng.random() < getattr(self, kind)


NO_DROPOUT = ConditionDropout(text=0.0, vit=0.0, vae=0.0)


def guidance_active(t: float, interval: tuple[float, float]) -> bool:
    """CFG runs only for interval[0] < t <= interval[1]; outside, the conditional velocity is used."""
    return interval[0] < t <= interval[1]


def combine(
    v: Tensor,  # (N, D) conditional velocity, one row per image token
    v_no_text: Tensor,
    v_no_image: Tensor | None,
    text_scale: float,
    image_scale: float,
    renorm: str = "global",
    renorm_min: float = 0.0,
) -> Tensor:
    """The guided velocity. `renorm` chooses where the rescaling happens:

    - 'global': after both guidances, by the norm over the whole image;
    - 'channel': after both guidances, per token;
    - 'text_channel': per token after the text guidance, before the image guidance.
    The rescale factor |v| / |v_guided| is clamped to [renorm_min, 1]. Image guidance needs
    image_scale > 1 and `v_no_image`.
    """
    if renorm not in RENORM_TYPES:
        raise ValueError(f"unknown renorm type {renorm!r}; choose one of {', '.join(RENORM_TYPES)}")
    use_image = image_scale > 1.0
    if use_image and v_no_image is None:
        raise ValueError("image_scale > 1 needs the velocity without image context (v_no_image)")
    v_text = v_no_text + text_scale * (v - v_no_text)
    if renorm == "text_channel":
        v_text = v_text * _renorm_factor(v, v_text, per_token=True, minimum=renorm_min)
        return v_no_image + image_scale * (v_text - v_no_image) if use_image else v_text
    guided = v_no_image + image_scale * (v_text - v_no_image) if use_image else v_text
    return guided * _renorm_factor(v, guided, per_token=renorm == "channel", minimum=renorm_min)


def _renorm_factor(reference: Tensor, guided: Tensor, per_token: bool, minimum: float) -> Tensor:
    if per_token:
        ratio = reference.norm(dim=-1, keepdim=True) / (guided.norm(dim=-1, keepdim=True) + 1e-8)
    else:
        ratio = reference.norm() / (guided.norm() + 1e-8)
    return torch.clamp(ratio, min=minimum, max=1.0)
