# %% [markdown]
# # 03 · Generalized causal attention
#
# All tokens of a packed sequence share one self-attention; a mask says who may attend to whom. You will
# see the three kinds of split (causal text, a clean image whose tokens see each other, a noised image that
# nothing else may see), the mask of several packed samples, the same rule handed to FlexAttention (and
# checked against the dense mask), and what would go wrong if later tokens could see a noised image.
# Paper: section 2.4 and Figure 4.
#
# Runs in about 8 s on a 2-core CPU; `BAGEL_FAST=1` for a quick pass.

# %%
import inspect
import os
import random
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator
from torch.nn.attention.flex_attention import flex_attention

import bagel_mini
from bagel_mini import attention, shapes_world
from bagel_mini.cfg import NO_DROPOUT
from bagel_mini.checkpoint import load_checkpoint
from bagel_mini.images import to_tensor
from bagel_mini.navit import PackConfig, Text, VaeImage, pack, pack_by_budget
from bagel_mini.tokenizer import BagelTokenizer

FAST = os.environ.get("BAGEL_FAST") == "1"  # CI's fast mode: the same cells on less data, in seconds
FIGURES = Path(os.environ.get("BAGEL_FIGURES", Path(bagel_mini.__file__).parents[1] / "tutorials" / "figures"))
FIGURES.mkdir(parents=True, exist_ok=True)

torch.manual_seed(0)
torch.set_num_threads(1)  # toy-sized tensors gain little from a second thread; one stays fast on a busy CPU

# %% [markdown]
# ## Splits and one rule
#
# A packed sequence is described as a list of samples, each a list of *splits* `(length, mode)`, one
# split per text or image (tutorial 01 shows how packing produces them):
#
# - `causal`: text. A token sees the earlier tokens of its sample and itself.
# - `full`: a clean image (ViT tokens, or the VAE latents of an image given as context). Like `causal`,
#   and its tokens also see each other, in both directions: an image has no reading order.
# - `noise`: a noised image the model is learning to generate. Like `full` inside, but no token outside
#   the split may see it.
#
# And samples never see each other. One function, `allowed`, decides every (query, key) pair from a
# small table of per-token facts (which sample, which split, bidirectional or not, noised or not):

# %%
print(inspect.getsource(attention.allowed))
print(inspect.getsource(attention.dense_mask))

# %% [markdown]
# Three small layouts, drawn with `attention.draw_mask` (white: the query row may attend to the key
# column). A clean image sits inside causal text: its block on the diagonal is filled in. A noised image:
# the same filled block, but the columns below it are dark, so the clean copy of the image and the text
# that follow cannot see it. Two packed samples: two separate blocks, nothing in between.


# %%
def mark_samples(ax, samples) -> None:
    """A blue square around each packed sample, and whole-token ticks (drawing only)."""
    start = 0
    for splits in samples:
        length = sum(size for size, _ in splits)
        ax.add_patch(plt.Rectangle((start - 0.5, start - 0.5), length, length, fill=False, color="tab:blue", lw=2))
        start += length
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))


LAYOUTS = {
    "text, clean image, text": [[(4, "causal"), (6, "full"), (4, "causal")]],
    "text, noised image, clean copy, text": [[(4, "causal"), (6, "noise"), (6, "full"), (4, "causal")]],
    "two packed samples": [[(4, "causal"), (6, "noise")], [(6, "full"), (5, "causal")]],
}
fig, axes = plt.subplots(1, 3, figsize=(12, 4.4))
for ax, (title, samples) in zip(axes, LAYOUTS.items()):
    attention.draw_mask(attention.dense_mask(samples), samples, ax=ax, title=title)
    mark_samples(ax, samples)
fig.tight_layout()
fig.savefig(FIGURES / "03_masks.png", dpi=120, bbox_inches="tight")
fig

# %% [markdown]
# Which rows may look at the noised image? Only its own. The clean copy right after it is seen by every
# later row of its sample:

# %%
samples = LAYOUTS["text, noised image, clean copy, text"]
mask = attention.dense_mask(samples)
noised_columns, clean_columns = range(4, 10), range(10, 16)
print("rows that see the noised image:", mask[:, noised_columns].any(1).nonzero().flatten().tolist())
print("rows that see its clean copy:  ", mask[:, clean_columns].any(1).nonzero().flatten().tolist())

# %% [markdown]
# ## Why the noised image must stay hidden
#
# When BAGEL generates an image inside a longer sample, it learns to denoise the noised copy, and what
# comes after the image is conditioned on a *clean* copy (the pattern above; `navit.py` gives both copies
# the same position). That matches inference, where a finished image joins the context clean
# (`Inferencer.join_image`, tutorial 08). If later tokens could also read the noised tokens, they would
# learn to use an input that never exists at inference, and their outputs would depend on a random noise
# draw.
#
# We can show the second point with the embedded toy model (weak, see its model card; any weights would do
# here). We build such a sample from a Shapes World video: a caption, the first frame as a noised target
# and its clean copy, the motion, and the second frame as a noised target. Then we run the model twice,
# changing only the noise drawn for the first frame, once with the real mask and once with a "leaky" one
# in which the noised splits are marked `full` (visible to later tokens).

# %%
model, autoencoder = load_checkpoint(bagel_mini.DEFAULT_MODEL)
tokenizer = BagelTokenizer.from_dir(bagel_mini.DEFAULT_MODEL)
video = shapes_world.video(random.Random(0))
first, second = (to_tensor(frame) for frame in video.frames[:2])
sample = [
    Text(tokenizer.encode(video.caption)),
    VaeImage(first, loss=True),  # noised target
    VaeImage(first),  # its clean copy, context for what follows
    Text(tokenizer.encode(video.moves[0])),
    VaeImage(second, loss=True),
]
pack_config = PackConfig.for_model(model.config, tokenizer.special_ids, dropout=NO_DROPOUT)
batch = pack([sample], pack_config, random.Random(0))
print("caption:", video.caption, "| then:", video.moves[0])
print("splits:", batch.splits[0])

with torch.no_grad():
    latents = [autoencoder.encode(pixels[None])[0] for pixels in batch.vae_images]
tokens_per_frame = batch.latent_grids[0][0] * batch.latent_grids[0][1]
noise_a = torch.randn(len(batch.vae_indexes), model.config.patch_latent_dim)
noise_b = noise_a.clone()
noise_b[:tokens_per_frame] = torch.randn(tokens_per_frame, model.config.patch_latent_dim)  # first frame only

leaky_splits = [[(size, "full" if mode == "noise" else mode) for size, mode in splits] for splits in batch.splits]
changes = {}
for name, splits in [("real mask", batch.splits), ("leaky mask", leaky_splits)]:
    mask = attention.dense_mask(splits)
    with torch.no_grad():
        a = model(batch, latents, noise_a, mask=mask)["hidden"]
        b = model(batch, latents, noise_b, mask=mask)["hidden"]
    changes[name] = (a - b).norm(dim=1) / a.norm(dim=1)
    moved = changes[name].nonzero().flatten()
    print(f"{name}: {len(moved)} rows depend on the first frame's noise, rows {moved.min()}..{moved.max()}")

# %% [markdown]
# With the real mask only the noised first frame itself (with its two markers) depends on its noise. With
# the leaky mask every later token does too: the clean copy, the text and the second frame. (Diffusion
# forcing, `diffusion_forcing.py` and tutorial 05, is the deliberate exception: there a later frame conditions on noised
# earlier frames, so those frames are marked `full`, not `noise`.)

# %%
fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), gridspec_kw={"width_ratios": [1, 1, 1.4]})
attention.draw_mask(attention.dense_mask(batch.splits), batch.splits, ax=axes[0], title="real mask")
attention.draw_mask(attention.dense_mask(leaky_splits), leaky_splits, ax=axes[1], title="leaky mask")
for (name, change), style in zip(changes.items(), ["-", "--"]):
    axes[2].plot(change.clamp(min=1e-9), style, label=name, drawstyle="steps-mid")
axes[2].set_yscale("log")
axes[2].set_ylim(1e-4, 3)
axes[2].set_xlabel("row (query token)")
axes[2].set_ylabel("relative change of the final hidden state")
axes[2].set_title("when only the first frame's noise changes", pad=16)
start = 0
for size, mode in batch.splits[0]:
    axes[2].axvspan(start - 0.5, start + size - 0.5, color="tab:red" if mode == "noise" else "white", alpha=0.12)
    start += size
handles, _ = axes[2].get_legend_handles_labels()
handles.append(Patch(color="tab:red", alpha=0.12, label="noised splits"))
axes[2].legend(handles=handles, loc="upper right", fontsize=8)
fig.tight_layout()
fig.savefig(FIGURES / "03_noise_hidden.png", dpi=120, bbox_inches="tight")
fig

# %% [markdown]
# ## Packed samples, densely and with FlexAttention
#
# In training many samples share one sequence. Here is a sequence packed from a stream of Shapes World
# tasks under a token budget, the way `train.py` packs them. The dense mask is an `(L, L)` boolean
# matrix, the readable reference and what the CPU uses (PyTorch's `scaled_dot_product_attention`, SDPA,
# takes it directly).

# %%
world = shapes_world.task_stream(seed=0)
stream_rng = random.Random(0)
stream = (shapes_world.to_sample(next(world), tokenizer.encode, stream_rng) for _ in range(100))
budget = 384 if FAST else 1024
packed = next(pack_by_budget(stream, pack_config, max_tokens=budget, rng=stream_rng))
dense = attention.dense_mask(packed.splits)
print(f"{len(packed.sample_lengths)} samples, {packed.sequence_length} tokens; splits per sample:")
for splits in packed.splits:
    print("   ", splits)
print(f"the mask allows {dense.float().mean():.1%} of all (query, key) pairs")

# %% [markdown]
# Most of that matrix is False: a dense kernel still computes every pair and throws most away. On a GPU,
# FlexAttention takes the same rule as a `mask_mod` function and builds a `BlockMask`: the matrix cut into
# 128 x 128 blocks, each marked *empty* (skipped), *full* (computed without looking at the mask) or
# *partial* (computed, then masked). `flex_block_mask` is a few lines around `allowed`:

# %%
print(inspect.getsource(attention.flex_block_mask))
block_mask = attention.flex_block_mask(packed.splits)
print(f"{block_mask.BLOCK_SIZE} blocks; FlexAttention skips {block_mask.sparsity():.0f}% of the (query, key) area")

# %% [markdown]
# Do the two agree? First block by block: every block the `BlockMask` skips must be all False in the dense
# mask, every block it marks full must be all True, and the partial ones must be mixed.

# %%
size = block_mask.BLOCK_SIZE[0]
blocks = -(-packed.sequence_length // size)  # number of blocks per side, rounded up
flex_kind = torch.zeros(blocks, blocks, dtype=torch.long)  # 0 empty, 1 partial, 2 full
for row in range(blocks):
    partial = block_mask.kv_indices[0, 0, row, : block_mask.kv_num_blocks[0, 0, row]]
    full = block_mask.full_kv_indices[0, 0, row, : block_mask.full_kv_num_blocks[0, 0, row]]
    flex_kind[row, partial] = 1
    flex_kind[row, full] = 2
dense_kind = torch.zeros_like(flex_kind)
for row in range(blocks):
    for column in range(blocks):
        block = dense[row * size : (row + 1) * size, column * size : (column + 1) * size]
        dense_kind[row, column] = 2 if block.all() else 1 if block.any() else 0
print("block kinds agree:", torch.equal(flex_kind, dense_kind))
print(f"{(flex_kind == 0).sum()} of {blocks * blocks} blocks skipped, {(flex_kind == 2).sum()} full")

# %% [markdown]
# Then the attention itself. On random queries, keys and values, FlexAttention with the block mask and
# SDPA with the dense mask give the same output. (`attention.attend` compiles FlexAttention for speed on a
# GPU; here we call the uncompiled version, which PyTorch warns is slow, to keep the CPU run short.)

# %%
heads, kv_heads, head_dim = 4, 2, 32
q = torch.randn(1, heads, packed.sequence_length, head_dim)
k, v = torch.randn(2, 1, kv_heads, packed.sequence_length, head_dim)
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
    out_flex = flex_attention(q, k, v, block_mask=block_mask, enable_gqa=True)
out_dense = F.scaled_dot_product_attention(q, k, v, attn_mask=dense, enable_gqa=True)
print(f"largest difference: {(out_flex - out_dense).abs().max():.2e}")

# %%
fig, ax = plt.subplots(figsize=(6, 6))
attention.draw_mask(dense, ax=ax, title=f"{len(packed.sample_lengths)} packed samples and FlexAttention's blocks")
colours = {1: "tab:orange", 2: "tab:green"}
for row in range(blocks):
    for column in range(blocks):
        kind = flex_kind[row, column].item()
        if kind:
            width = min(size, packed.sequence_length - column * size)
            height = min(size, packed.sequence_length - row * size)
            corner = (column * size - 0.5, row * size - 0.5)
            ax.add_patch(plt.Rectangle(corner, width, height, color=colours[kind], alpha=0.35, linewidth=0))
mark_samples(ax, packed.splits)
handles = [
    Patch(color="tab:orange", alpha=0.35, label="partial block"),
    Patch(color="tab:green", alpha=0.35, label="full block"),
    Patch(edgecolor="tab:blue", fill=False, label="a sample"),
]
ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3, fontsize=8, frameon=False)
fig.savefig(FIGURES / "03_packed_flex.png", dpi=120, bbox_inches="tight")
fig

# %% [markdown]
# Unshaded blocks are skipped. None is full here: a block is full only when all its 128 query rows see all
# its 128 key columns, which needs a sample well over 128 tokens long with no causal part in the block;
# our toy samples are at most about 170 tokens with causal text, whereas a 1024x1024 image alone has
# 4,096 VAE tokens and most of its blocks are full.
# The block-diagonal shape comes from keeping samples apart; inside each sample the staircases are causal
# text and the squares are images. The longer the packed sequence and the more samples it holds, the
# larger the share of blocks FlexAttention can skip.
#
# At inference (tutorial 08) the same rule appears in its cached form: a new block of tokens reads the
# whole KV cache (`attention.context_mask`), and a noised image being generated reads the cache without
# ever joining it.
