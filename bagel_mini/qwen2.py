"""Qwen2 building blocks, the LLM of BAGEL (paper section 2.1): RMSNorm, rotary position embedding,
grouped-query attention projections with QK-norm, and the SwiGLU MLP.

The attention softmax itself is not here: in BAGEL one softmax runs over the tokens of both experts,
so the decoder layer (`mot.py`) computes it after each expert has projected its own tokens.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bagel_mini.config import LLMConfig


class RMSNorm(nn.Module):
    """Scale each vector to unit root-mean-square (computed in float32), then by a learned weight."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


def rotary_cos_sin(positions: Tensor, head_dim: int, theta: float) -> tuple[Tensor, Tensor]:
    """cos and sin of position * frequency, each (L, head_dim), for explicit position ids.

    BAGEL gives every token of an image the same position, so positions are an input, not 0..L-1.
    """
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=positions.device).float() / head_dim)
    angles = positions.float()[:, None] * inv_freq[None, :]  # (L, head_dim / 2)
    angles = torch.cat([angles, angles], dim=-1)  # both halves of a head share the frequencies
    return angles.cos(), angles.sin()


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate the pairs (x_i, x_{i + D/2}) of every head by its angle; x is (L, heads, D)."""
    cos, sin = cos[:, None].to(x.dtype), sin[:, None].to(x.dtype)
    first, second = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-second, first], dim=-1) * sin


class Attention(nn.Module):
    """One expert's attention weights: q/k/v projections with biases, o_proj without, QK-norm per head.

    Query heads share key/value heads in groups (GQA): 28 query heads read 4 KV heads in the release.
    """

    def __init__(self, config: LLMConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        hidden = config.hidden_size
        self.q_proj = nn.Linear(hidden, self.num_heads * self.head_dim, bias=True)
        self.k_proj = nn.Linear(hidden, self.num_kv_heads * self.head_dim, bias=True)
        self.v_proj = nn.Linear(hidden, self.num_kv_heads * self.head_dim, bias=True)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, hidden, bias=False)
        norm = (lambda: RMSNorm(self.head_dim, config.rms_norm_eps)) if config.qk_norm else nn.Identity
        self.q_norm, self.k_norm = norm(), norm()

    def qkv(self, x: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Queries (L, H, D), keys and values (L, H_kv, D); keys and queries normed, then rotated."""
        q = self.q_norm(self.q_proj(x).unflatten(-1, (self.num_heads, self.head_dim)))
        k = self.k_norm(self.k_proj(x).unflatten(-1, (self.num_kv_heads, self.head_dim)))
        v = self.v_proj(x).unflatten(-1, (self.num_kv_heads, self.head_dim))
        return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin), v


class SwiGLU(nn.Module):
    """The MLP: down(silu(gate(x)) * up(x)), no biases."""

    def __init__(self, config: LLMConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
