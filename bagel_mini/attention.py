"""Generalized causal attention (paper section 2.4 and Figure 4): who may attend to whom.

A packed sequence holds several samples; each sample is a list of splits `(length, mode)`:
- `causal`: text. A token sees everything earlier in its sample and itself.
- `full`: a clean image (ViT tokens or clean VAE latents). Its tokens also see each other.
- `noise`: a noised VAE image being generated. Like `full` for its own tokens, but no token outside
  the split may see it: later tokens must condition on the clean image, never on the noise.
Samples never see each other (document masking).

One rule (`allowed`) decides every (query, key) pair. It is evaluated three ways:
- densely into one (L, L) boolean mask for SDPA: the readable reference;
- per sample (`sample_mask`): since samples never see each other, a packed sequence's attention is a
  batch of per-sample attentions, as the varlen kernels of the official code compute it. Samples of
  about the same length (the same power of two) run as one padded batch, so a micro-batch of many
  short samples costs a few small attentions instead of one (L, L) one: 4-5x less attention time in
  a toy step. Training uses this by default;
- as a FlexAttention `mask_mod`, from which a sparse block mask is built (the fast GPU path).
"""

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention

MODES = ("causal", "full", "noise")
Split = tuple[int, str]  # (number of tokens, mode)


def check_layout(samples: list[list[Split]], length: int | None = None) -> None:
    """Raise a ValueError naming the bad split, or the mismatch with the sequence `length`."""
    total = 0
    for i, splits in enumerate(samples):
        if not splits:
            raise ValueError(f"sample {i} has no splits")
        for j, split in enumerate(splits):
            if not (isinstance(split, (tuple, list)) and len(split) == 2):
                raise ValueError(f"sample {i}, split {j}: expected (length, mode), got {split!r}")
            size, mode = split
            if mode not in MODES:
                raise ValueError(f"sample {i}, split {j}: unknown mode {mode!r}; modes are {', '.join(MODES)}")
            if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
                raise ValueError(f"sample {i}, split {j}: length must be a positive integer, got {size!r}")
            total += size
    if length is not None and total != length:
        raise ValueError(f"split lengths add up to {total} tokens but the sequence has {length}")


def token_table(samples: list[list[Split]], device=None) -> dict[str, Tensor]:
    """Per-token facts the rule needs, each (L,): sample and split index, bidirectional, noise."""
    check_layout(samples)
    document, split, bidirectional, noise = [], [], [], []
    split_index = 0
    for sample_index, splits in enumerate(samples):
        for size, mode in splits:
            document += [sample_index] * size
            split += [split_index] * size
            bidirectional += [mode != "causal"] * size
            noise += [mode == "noise"] * size
            split_index += 1
    columns = {"document": document, "split": split, "bidirectional": bidirectional, "noise": noise}
    return {name: torch.tensor(values, device=device) for name, values in columns.items()}


def allowed(table: dict[str, Tensor], q: Tensor, kv: Tensor) -> Tensor:
    """May query token q attend to key token kv? Works elementwise on broadcast index tensors."""
    same_sample = table["document"][q] == table["document"][kv]
    same_split = table["split"][q] == table["split"][kv]
    sees = (kv <= q) | (same_split & table["bidirectional"][q])  # the past, and its own image
    hidden = table["noise"][kv] & ~same_split  # a noised image is invisible from outside
    return same_sample & sees & ~hidden


def dense_mask(samples: list[list[Split]], length: int | None = None, device=None) -> Tensor:
    """The rule as an (L, L) boolean matrix: True where query row may attend key column."""
    check_layout(samples, length)
    table = token_table(samples, device)
    index = torch.arange(len(table["split"]), device=device)
    return allowed(table, index[:, None], index[None, :])


@dataclass
class Bucket:
    """Samples of similar length, padded to the longest: row b holds sample b's tokens."""

    rows: Tensor  # (B, longest) each token's row in the packed sequence (padding: row 0, never read)
    real: Tensor  # (B, longest) bool, False on padding
    mask: Tensor  # (B, 1, longest, longest) the rule within each sample; a padding query sees itself only


@dataclass
class SampleMask:
    """The rule per sample: buckets of samples, and where their outputs go back in the packed sequence."""

    buckets: list[Bucket]
    order: Tensor  # (L,) for each packed row, its place among the buckets' real tokens laid end to end


def sample_mask(samples: list[list[Split]], length: int | None = None, device=None) -> SampleMask:
    """The same rule as dense_mask, one sample at a time (samples grouped by the power of two above their length)."""
    check_layout(samples, length)
    lengths = [sum(size for size, _ in splits) for splits in samples]
    starts = [sum(lengths[:i]) for i in range(len(samples))]
    groups: dict[int, list[int]] = {}
    for i, size in enumerate(lengths):
        groups.setdefault(math.ceil(math.log2(size)), []).append(i)
    buckets = []
    for members in groups.values():
        longest = max(lengths[i] for i in members)
        rows = torch.zeros(len(members), longest, dtype=torch.long)
        real = torch.zeros(len(members), longest, dtype=torch.bool)
        mask = torch.eye(longest, dtype=torch.bool).repeat(len(members), 1, 1, 1)
        for b, i in enumerate(members):
            rows[b, : lengths[i]] = torch.arange(starts[i], starts[i] + lengths[i])
            real[b, : lengths[i]] = True
            mask[b, 0, : lengths[i], : lengths[i]] = dense_mask([samples[i]])
        buckets.append(Bucket(rows.to(device), real.to(device), mask.to(device)))
    placed = torch.cat([bucket.rows[bucket.real] for bucket in buckets])  # packed row of each bucket token
    order = torch.empty_like(placed)
    order[placed] = torch.arange(len(placed), device=placed.device)
    return SampleMask(buckets, order)


def in_order(mask: Tensor | SampleMask | BlockMask | None, order: Tensor, num_cached: int = 0):
    """The same mask for the L new tokens taken in `order` (a permutation of 0..L-1; the decoder sorts its
    tokens by expert, mot.Route). Cached keys keep their places; a BlockMask is built anew (no cache)."""
    if mask is None:
        return None
    if isinstance(mask, SampleMask):
        place = torch.empty_like(order)
        place[order] = torch.arange(len(order), device=order.device)
        buckets = [Bucket(place[bucket.rows], bucket.real, bucket.mask) for bucket in mask.buckets]
        return SampleMask(buckets, mask.order[order])
    if isinstance(mask, BlockMask):
        size = len(order)

        def mask_mod(batch, head, q, kv):
            return mask.mask_mod(batch, head, order[q], order[kv])

        return create_block_mask(mask_mod, B=None, H=None, Q_LEN=size, KV_LEN=size, device=order.device)
    columns = torch.cat([torch.arange(num_cached, device=order.device), num_cached + order])
    return mask[order][:, columns]


def flex_block_mask(samples: list[list[Split]], length: int | None = None, device=None) -> BlockMask:
    """The same rule for FlexAttention, which skips the blocks of the mask that are all False."""
    check_layout(samples, length)
    table = token_table(samples, device)
    size = len(table["split"])

    def mask_mod(batch, head, q, kv):
        return allowed(table, q, kv)

    return create_block_mask(mask_mod, B=None, H=None, Q_LEN=size, KV_LEN=size, device=device)


def context_mask(num_new: int, num_cached: int, causal: bool, device=None) -> Tensor | None:
    """Mask (new, cached + new) for a block of new tokens read against a KV cache.

    The block sees the whole cache; inside itself it is causal (text) or full (an image). None means
    every pair is allowed.
    """
    if not causal or num_new == 1:
        return None
    own = torch.ones(num_new, num_new, dtype=torch.bool, device=device).tril()
    return torch.cat([torch.ones(num_new, num_cached, dtype=torch.bool, device=device), own], dim=1)


def branches_mask(cache_lengths: list[int], block_lengths: list[int], device=None) -> Tensor:
    """Mask for query blocks run side by side, block b against cache b only (the branches of CFG).

    Keys are laid out as the caches one after the other, then the blocks one after the other (as
    KVCache.concatenate and the decoder's cache + new keys produce them). A block sees its whole cache
    and all of itself.
    """
    cache_starts = [sum(cache_lengths[:b]) for b in range(len(cache_lengths))]
    block_starts = [sum(cache_lengths) + sum(block_lengths[:b]) for b in range(len(block_lengths))]
    mask = torch.zeros(sum(block_lengths), sum(cache_lengths) + sum(block_lengths), dtype=torch.bool, device=device)
    row = 0
    for cache_start, cache_length, block_start, block_length in zip(
        cache_starts, cache_lengths, block_starts, block_lengths
    ):
        rows = slice(row, row + block_length)
        mask[rows, cache_start : cache_start + cache_length] = True
        mask[rows, block_start : block_start + block_length] = True
        row += block_length
    return mask


@functools.cache
def compiled_flex_attention():
    """FlexAttention compiled once per process: eager FlexAttention is a slow reference only."""
    return torch.compile(flex_attention, dynamic=False)


def attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | SampleMask | BlockMask | None) -> Tensor:
    """softmax(q k^T / sqrt(D)) v under `mask`; q (L, H, D), k and v (S, H_kv, D) -> (L, H * D).

    A boolean mask goes to SDPA, a SampleMask to SDPA once per bucket (then S = L: no cache), a
    BlockMask to (compiled) FlexAttention. Query head h reads key/value head h // (H / H_kv).
    """
    if isinstance(mask, SampleMask):
        outs = []
        for bucket in mask.buckets:
            qb, kb, vb = (t[bucket.rows].transpose(1, 2) for t in (q, k, v))  # (B, heads, longest, D)
            out = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=bucket.mask, enable_gqa=True)
            outs.append(out.transpose(1, 2)[bucket.real])  # (tokens of the bucket, H, D)
        return torch.cat(outs)[mask.order].flatten(1)
    q, k, v = (t.transpose(0, 1).unsqueeze(0) for t in (q, k, v))  # (1, heads, tokens, D)
    if isinstance(mask, BlockMask):
        out = compiled_flex_attention()(q, k, v, block_mask=mask, enable_gqa=True)
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    return out[0].transpose(0, 1).flatten(1)


def draw_mask(mask: Tensor, samples: list[list[Split]] | None = None, ax=None, title: str | None = None):
    """Draw a boolean mask (white = may attend), with the splits labelled when given; returns the axes."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 5))
    ax.imshow(mask.cpu().numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xlabel("key")
    ax.set_ylabel("query")
    if samples is not None:
        start, centres, modes = 0, [], []
        for splits in samples:
            for size, mode in splits:
                ax.axhline(start - 0.5, color="tab:red", linewidth=0.5)
                ax.axvline(start - 0.5, color="tab:red", linewidth=0.5)
                centres.append(start + size / 2 - 0.5)
                modes.append(mode)
                start += size
        top = ax.secondary_xaxis("top")
        top.set_xticks(centres, labels=modes, fontsize=7)
    if title:
        ax.set_title(title, pad=16)  # room for the split labels above the matrix
    return ax
