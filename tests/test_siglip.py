"""Packing and the patch embedding are identities, checked in float64: rounding differences stay below 1e-13
on these values of size up to about 30, where a leak between images or a wrong patch order moves them by 0.1."""

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_names, randomize_

from bagel_mini.config import ViTConfig
from bagel_mini.images import grid_position_ids, patchify
from bagel_mini.siglip import SiglipVisionModel, conv_to_linear_weight

EXACT = {"rtol": 0, "atol": 1e-12}  # an identity, up to float64 rounding
CONFIG = ViTConfig(
    hidden_size=32, image_size=56, intermediate_size=64, num_attention_heads=2, num_hidden_layers=2, patch_size=7
)


def encoder() -> SiglipVisionModel:
    return randomize_(SiglipVisionModel(CONFIG).double(), seed=0).eval()


def image_tokens(height: int, width: int, seed: int):
    image = torch.randn(3, height, width, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    rows, cols = height // 7, width // 7
    return patchify(image, 7), grid_position_ids(rows, cols, CONFIG.num_patches_per_side), rows * cols


@torch.no_grad()
def test_packed_images_of_different_sizes_equal_one_image_at_a_time():
    vit = encoder()
    images = [image_tokens(14, 35, seed=1), image_tokens(56, 21, seed=2), image_tokens(7, 7, seed=3)]
    packed = vit(torch.cat([p for p, _, _ in images]), torch.cat([i for _, i, _ in images]), [n for _, _, n in images])
    alone = torch.cat([vit(patches, ids, [n]) for patches, ids, n in images])
    torch.testing.assert_close(packed, alone, **EXACT)


@torch.no_grad()
def test_attention_stays_inside_each_image():
    vit = encoder()
    first, second = image_tokens(14, 14, seed=1), image_tokens(14, 14, seed=2)
    changed = image_tokens(14, 14, seed=5)
    lengths = [first[2], second[2]]
    before = vit(torch.cat([first[0], second[0]]), torch.cat([first[1], second[1]]), lengths)
    after = vit(torch.cat([first[0], changed[0]]), torch.cat([first[1], changed[1]]), lengths)
    assert torch.equal(before[: first[2]], after[: first[2]])


def test_conv_kernel_as_linear_weight_equals_the_convolution():
    """SigLIP's original patch embedding is a Conv2d with kernel = stride = patch; ours is a Linear."""
    kernel = torch.randn(32, 3, 7, 7, dtype=torch.float64)
    image = torch.randn(3, 21, 14, dtype=torch.float64)
    convolved = F.conv2d(image[None], kernel, stride=7)[0]  # (32, 3, 2)
    linear = patchify(image, 7) @ conv_to_linear_weight(kernel).T  # (6, 32), patches row by row
    torch.testing.assert_close(linear, convolved.flatten(1).T, **EXACT)


def test_lengths_that_do_not_add_up_are_named():
    patches, ids, n = image_tokens(14, 14, seed=1)
    with pytest.raises(ValueError) as error:
        encoder()(patches, ids, [3])
    assert_names(error, "[3]", "4")  # the lengths given, and the number of patches
