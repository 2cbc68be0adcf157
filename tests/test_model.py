import math

import torch
from helpers import TINY
from safetensors.torch import load_file

from bagel_mini.config import load_config_dir
from bagel_mini.model import TimestepEmbedder, sincos_2d_table


def test_sincos_tables_equal_the_official_fixed_tables():
    """The released file stores both position tables; the official code filled them with its sin-cos rule."""
    config = load_config_dir(TINY)
    weights = load_file(TINY / "ema.safetensors")
    hidden = config.llm.hidden_size
    vit_table = sincos_2d_table(config.vit_max_num_patch_per_side, hidden)
    torch.testing.assert_close(vit_table, weights["vit_pos_embed.pos_embed"], rtol=0, atol=1e-6)
    latent_table = sincos_2d_table(config.max_latent_size, hidden)
    torch.testing.assert_close(latent_table, weights["latent_pos_embed.pos_embed"], rtol=0, atol=1e-6)


def test_sincos_table_first_half_encodes_the_column():
    table = sincos_2d_table(5, 8).double()
    row, col = 3, 2
    expected = [
        math.sin(col),
        math.sin(col / 100),
        math.cos(col),
        math.cos(col / 100),
        math.sin(row),
        math.sin(row / 100),
        math.cos(row),
        math.cos(row / 100),
    ]
    torch.testing.assert_close(table[row * 5 + col], torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-6)


def test_timestep_features_are_cosines_then_sines_of_t_as_is():
    features = TimestepEmbedder(hidden=8, frequency_dim=4).features(torch.tensor([0.5]))
    expected = torch.tensor([[math.cos(0.5), math.cos(0.5 / 100), math.sin(0.5), math.sin(0.5 / 100)]])
    torch.testing.assert_close(features, expected)
