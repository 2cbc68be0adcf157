"""Bagel: one decoder over text, ViT and VAE tokens (paper section 2.1, Figure 2), and its two losses.

This file holds what turns each modality into LLM tokens and back:
- ViT tokens: SigLIP output -> connector MLP -> plus a fixed 2D sin-cos position in LLM space;
- VAE tokens: a 2x2 patch of latents -> vae2llm, plus the timestep embedding and the latent position;
- text tokens: the LLM's embedding table; lm_head and llm2vae read the final hidden states.
`forward` is one training step's loss on a packed batch (navit.py): next-token cross-entropy on text
and rectified-flow MSE on noised VAE tokens, weighted 0.25 : 1 as in the paper.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention.flex_attention import BlockMask

from bagel_mini.attention import SampleMask, sample_mask
from bagel_mini.config import BagelConfig
from bagel_mini.flow import add_noise, training_timesteps, velocity_target
from bagel_mini.images import patchify
from bagel_mini.mot import LanguageModel
from bagel_mini.navit import PackedBatch
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
            # The velocity head starts at zero, so a new model predicts no motion (as the official init).
            nn.init.zeros_(self.llm2vae.weight)
            nn.init.zeros_(self.llm2vae.bias)

    def embed_vit(self, patches: Tensor, position_ids: Tensor, lengths: list[int]) -> Tensor:
        """ViT patches of packed images (N, p * p * C) -> LLM input rows (N, hidden)."""
        return self.connector(self.vit(patches, position_ids, lengths)) + self.vit_pos_embed(position_ids)

    def embed_vae(self, latent_patches: Tensor, timesteps: Tensor, position_ids: Tensor) -> Tensor:
        """Latent patches (N, patch_latent_dim) at diffusion times (N,) -> LLM input rows (N, hidden).

        Clean context images use t = 0.
        """
        return self.vae2llm(latent_patches) + self.time_embedder(timesteps) + self.latent_pos_embed(position_ids)

    def embed_batch(self, batch: PackedBatch, noised_latent_tokens: Tensor, timesteps: Tensor) -> Tensor:
        """The LLM input sequence (L, hidden) of a packed batch.

        noised_latent_tokens: (n_vae, patch_latent_dim) VAE tokens at their diffusion times (n_vae,), in the
        order of batch.vae_indexes; clean context images are at t = 0.
        """
        embed = self.llm.embed_tokens
        sequence = embed.weight.new_zeros(batch.sequence_length, self.config.llm.hidden_size)
        sequence[batch.text_indexes] = embed(batch.text_ids)
        if batch.vit_lengths:
            sequence[batch.vit_indexes] = self.embed_vit(batch.vit_patches, batch.vit_position_ids, batch.vit_lengths)
        if batch.latent_grids:
            sequence[batch.vae_indexes] = self.embed_vae(noised_latent_tokens, timesteps, batch.latent_position_ids)
        return sequence

    def latent_tokens(self, latents: list[Tensor], grids: list[tuple[int, int]]) -> Tensor:
        """Cut each latent into 2x2 patches, row by row: (n_vae, patch_latent_dim)."""
        if len(latents) != len(grids):
            raise ValueError(f"the batch has {len(grids)} VAE images but {len(latents)} latents were given")
        p = self.config.latent_patch_size
        tokens = []
        for index, (latent, (h, w)) in enumerate(zip(latents, grids)):
            expected = (self.config.vae.z_channels, h * p, w * p)
            if tuple(latent.shape) != expected:
                raise ValueError(f"latent {index} has shape {tuple(latent.shape)}, expected {expected}")
            tokens.append(patchify(latent, p))
        if not tokens:  # a batch without VAE images
            return self.llm.embed_tokens.weight.new_zeros(0, self.config.patch_latent_dim)
        return torch.cat(tokens)

    def forward(
        self,
        batch: PackedBatch,
        latents: list[Tensor],
        noise: Tensor | None = None,
        mask: Tensor | SampleMask | BlockMask | None = None,
        ce_weight: float = 0.25,
        mse_weight: float = 1.0,
    ) -> dict:
        """Losses of one packed batch (on the model's device: `batch.to(device)`).

        latents: one (z_channels, 2h, 2w) latent per VAE image, in the order of batch.vae_images
        (autoencoder.encode of each); their tokens then follow batch.vae_indexes, which packing laid out
        in the same order. noise: (n_vae, patch_latent_dim) flow noise, drawn here if not given.

        Returns per-token `ce` (n_ce,) and `mse` (n_mse, patch_latent_dim), their means `ce_loss`
        (weighted by batch.ce_weights) and `mse_loss`, the total `loss` = ce_weight * ce_loss +
        mse_weight * mse_loss, and for inspection the `hidden` states, the input `sequence` and the flow's
        `clean`, `noise` and `timesteps`. The mask defaults to the generalized causal mask applied per
        sample (attention.sample_mask); attention.dense_mask gives the same result, slower, and a
        FlexAttention block mask is the fast path on a GPU.
        """
        # A noised image's path (rectified flow, flow.py): packing drew one raw normal per image (or
        # group of frames); here it becomes t, the clean tokens are moved towards the noise, and the
        # target is the velocity from clean to noise. Clean context images have t = 0.
        clean = self.latent_tokens(latents, batch.latent_grids)  # (n_vae, patch_latent_dim)
        noise = torch.randn_like(clean) if noise is None else noise
        t = training_timesteps(batch.raw_timesteps, self.config.timestep_shift)  # (n_vae,)
        noised = add_noise(clean, noise, t)
        target = velocity_target(clean, noise)[t > 0]  # (n_mse, patch_latent_dim), in the order of mse_indexes

        sequence = self.embed_batch(batch, noised, t)
        if mask is None:
            mask = sample_mask(batch.splits, batch.sequence_length, device=sequence.device)
        hidden = self.llm(sequence, batch.position_ids, batch.is_gen, mask)
        zero = hidden.new_zeros(())

        ce, ce_loss = hidden.new_zeros(0), zero
        if len(batch.ce_indexes):
            logits = self.llm.lm_head(hidden[batch.ce_indexes])
            ce = F.cross_entropy(logits.float(), batch.label_ids, reduction="none")
            ce_loss = (ce * batch.ce_weights).sum() / batch.ce_weights.sum()

        mse, mse_loss = hidden.new_zeros(0, self.config.patch_latent_dim), zero
        if len(batch.mse_indexes):
            prediction = self.llm2vae(hidden[batch.mse_indexes])
            mse = (prediction.float() - target.float()) ** 2
            mse_loss = mse.mean()

        losses = {"loss": ce_weight * ce_loss + mse_weight * mse_loss, "ce_loss": ce_loss, "mse_loss": mse_loss}
        flow = {"clean": clean, "noise": noise, "timesteps": t}
        return {**losses, "ce": ce, "mse": mse, "hidden": hidden, "sequence": sequence, **flow}
