"""Bagel: one decoder over text, ViT and VAE tokens (paper section 2.1, Figure 2).

This file holds what turns each modality into LLM tokens and back:
- ViT tokens: SigLIP output -> connector MLP -> plus a fixed 2D sin-cos position in LLM space;
- VAE tokens: a 2x2 patch of latents -> vae2llm, plus the timestep embedding and the latent position;
- text tokens: the LLM's embedding table; lm_head and llm2vae read the final hidden states.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bagel_mini.config import BagelConfig
from bagel_mini.mot import LanguageModel
from bagel_mini.siglip import SiglipVisionModel


def sincos_2d_table(side: int, dim: int) -> Tensor:
    """Fixed positions of a side x side grid, (side * side, dim); row r * side + c is cell (r, c).

    A cell's vector is [sin(c w), cos(c w), sin(r w), cos(r w)] with w_k = 10000^(-k / (dim / 4)):
    the first half encodes the column, the second the row.
    """
    if dim % 4:
        raise ValueError(f"a 2D sin-cos table needs a width divisible by 4, got {dim}")
    frequencies = 10000.0 ** (-torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))
    rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    col_angles = cols.flatten()[:, None] * frequencies  # (side * side, dim / 4)
    row_angles = rows.flatten()[:, None] * frequencies
    table = torch.cat([col_angles.sin(), col_angles.cos(), row_angles.sin(), row_angles.cos()], dim=1)
    return table.float()


class PositionTable(nn.Module):
    """A frozen 2D sin-cos table, indexed by flattened position ids. Stored in checkpoints, never trained."""

    def __init__(self, side: int, dim: int):
        super().__init__()
        self.table = nn.Parameter(sincos_2d_table(side, dim), requires_grad=False)

    def forward(self, position_ids: Tensor) -> Tensor:
        return self.table[position_ids]


class Connector(nn.Module):
    """Two Linear layers with a tanh-GELU between: ViT width -> LLM width."""

    def __init__(self, in_dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden)
        self.fc2 = nn.Linear(hidden, hidden)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class TimestepEmbedder(nn.Module):
    """The diffusion time t in [0, 1] (used as is, not x1000) -> sinusoidal features -> MLP."""

    def __init__(self, hidden: int, frequency_dim: int = 256):
        super().__init__()
        self.frequency_dim = frequency_dim
        self.fc1 = nn.Linear(frequency_dim, hidden)
        self.fc2 = nn.Linear(hidden, hidden)

    def features(self, t: Tensor) -> Tensor:
        """(N,) -> (N, frequency_dim): [cos(t f_k), sin(t f_k)], f_k = 10000^(-k / (frequency_dim / 2))."""
        half = self.frequency_dim // 2
        frequencies = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        angles = t.float()[:, None] * frequencies[None]
        return torch.cat([angles.cos(), angles.sin()], dim=-1)

    def forward(self, t: Tensor) -> Tensor:
        features = self.features(t).to(self.fc1.weight.dtype)
        return self.fc2(F.silu(self.fc1(features)))


class Bagel(nn.Module):
    def __init__(self, config: BagelConfig):
        super().__init__()
        self.config = config
        hidden = config.llm.hidden_size
        self.llm = LanguageModel(config.llm)
        if config.visual_und:
            if config.vit_max_num_patch_per_side > config.vit.num_patches_per_side:
                raise ValueError(
                    f"vit_max_num_patch_per_side {config.vit_max_num_patch_per_side} exceeds the ViT's "
                    f"position table ({config.vit.num_patches_per_side} per side)"
                )
            self.vit = SiglipVisionModel(config.vit)
            self.connector = Connector(config.vit.hidden_size, hidden)
            self.vit_pos_embed = PositionTable(config.vit_max_num_patch_per_side, hidden)
        if config.visual_gen:
            self.time_embedder = TimestepEmbedder(hidden)
            self.vae2llm = nn.Linear(config.patch_latent_dim, hidden)
            self.llm2vae = nn.Linear(hidden, config.patch_latent_dim)
            self.latent_pos_embed = PositionTable(config.max_latent_size, hidden)

    def embed_vit(self, patches: Tensor, position_ids: Tensor, lengths: list[int]) -> Tensor:
        """ViT patches of packed images (N, p * p * C) -> LLM input rows (N, hidden)."""
        return self.connector(self.vit(patches, position_ids, lengths)) + self.vit_pos_embed(position_ids)

    def embed_vae(self, latent_patches: Tensor, timesteps: Tensor, position_ids: Tensor) -> Tensor:
        """Latent patches (N, patch_latent_dim) at diffusion times (N,) -> LLM input rows (N, hidden).

        Clean context images use t = 0.
        """
        return self.vae2llm(latent_patches) + self.time_embedder(timesteps) + self.latent_pos_embed(position_ids)
