"""The SigLIP vision encoder with NaViT packing (paper section 2.1: "SigLIP2-so400m/14 ... NaViT").

Images keep their native size and aspect ratio: each is cut into patches, and the patches of several
images are packed into one sequence. Attention stays inside each image. Every patch gets the learned
position of its (row, col) cell on a fixed grid, so a small image uses the top-left corner of the
table rather than a stretched copy of it.

The patch embedding is a Linear over flattened patches (the release stores it so). It equals the
original Conv2d with kernel = stride = patch when the patch values are ordered (row, col, channel);
`conv_to_linear_weight` converts a Conv2d-shaped weight.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bagel_mini.config import ViTConfig


def conv_to_linear_weight(weight: Tensor) -> Tensor:
    """A patch-embedding Conv2d kernel (out, C, p, p) as the Linear weight (out, p * p * C)."""
    return weight.permute(0, 2, 3, 1).flatten(1)


class SiglipLayer(nn.Module):
    """Pre-norm transformer layer: x + attn(norm1(x)), then x + fc2(gelu(fc1(norm2(x))))."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        hidden = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.norm1 = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.q_proj = nn.Linear(hidden, hidden)
        self.k_proj = nn.Linear(hidden, hidden)
        self.v_proj = nn.Linear(hidden, hidden)
        self.out_proj = nn.Linear(hidden, hidden)
        self.norm2 = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.fc1 = nn.Linear(hidden, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, hidden)

    def attention(self, x: Tensor, lengths: list[int]) -> Tensor:
        """Multi-head self-attention within each image of the packed sequence x (N, hidden)."""
        q, k, v = (
            proj(x).unflatten(-1, (self.num_heads, -1)).transpose(0, 1)
            for proj in (self.q_proj, self.k_proj, self.v_proj)
        )  # (heads, N, head_dim)
        per_image = [
            F.scaled_dot_product_attention(qi, ki, vi)
            for qi, ki, vi in zip(q.split(lengths, 1), k.split(lengths, 1), v.split(lengths, 1))
        ]
        return self.out_proj(torch.cat(per_image, dim=1).transpose(0, 1).flatten(1))

    def forward(self, x: Tensor, lengths: list[int]) -> Tensor:
        x = x + self.attention(self.norm1(x), lengths)
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x)), approximate="tanh"))


class SiglipVisionModel(nn.Module):
    def __init__(self, config: ViTConfig):
        super().__init__()
        patch_dim = config.num_channels * config.patch_size**2
        self.patch_embed = nn.Linear(patch_dim, config.hidden_size)
        self.position_embed = nn.Embedding(config.num_patches_per_side**2, config.hidden_size)
        self.layers = nn.ModuleList(SiglipLayer(config) for _ in range(config.num_hidden_layers))
        self.post_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, patches: Tensor, position_ids: Tensor, lengths: list[int]) -> Tensor:
        """patches: (N, p * p * C) of all images packed; position_ids: (N,) row * side + col;
        lengths: patches per image, summing to N. Returns (N, hidden)."""
        if sum(lengths) != patches.shape[0]:
            raise ValueError(
                f"image lengths {lengths} add up to {sum(lengths)} but {patches.shape[0]} patches were given"
            )
        x = self.patch_embed(patches) + self.position_embed(position_ids)
        for layer in self.layers:
            x = layer(x, lengths)
        return self.post_norm(x)
