# %% [markdown]
# # 06 · NaViT patches and sequence packing
#
# BAGEL's understanding encoder sees every image at its own size and aspect ratio, cut into patches
# that keep the position of their grid cell (NaViT, paper section 2.1), and training lays samples of
# any length end to end in one sequence instead of padding them to a common length (sequence packing,
# section 2.4). You will see images of different shapes become patches and position ids, how the
# interpolated position variant differs, how many tokens padding would waste, and what the benchmark
# measures for packed versus padded batches.
#
# Runs in about 10 s on a 2-core CPU; `BAGEL_FAST=1` for a quick pass.

# %%
import inspect
import os
import random
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from matplotlib.colors import to_rgb
from matplotlib.patches import Rectangle

import bagel_mini
from bagel_mini import bench, images, navit, shapes_world
from bagel_mini.cfg import NO_DROPOUT
from bagel_mini.checkpoint import load_checkpoint
from bagel_mini.config import preset
from bagel_mini.navit import PackConfig, VitImage, pack, pack_by_budget, sample_length
from bagel_mini.shapes_world import Scene, SceneObject
from bagel_mini.tokenizer import BagelTokenizer

FAST = os.environ.get("BAGEL_FAST") == "1"  # CI's fast mode: the same cells on less data, in seconds
FIGURES = Path(os.environ.get("BAGEL_FIGURES", Path(bagel_mini.__file__).parents[1] / "tutorials" / "figures"))
FIGURES.mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)
torch.set_num_threads(1)  # toy-sized tensors gain little from a second thread; one stays fast on a busy CPU

# %% [markdown]
# ## Each image keeps its shape
#
# Before an image reaches an encoder it is resized once, keeping its aspect ratio: the long side at
# most `max_size`, the short side at least `min_size`, both sides rounded to whole patches
# (`images.encoder_size`, the official rule; `images.vit_resize` and `vae_resize` derive the settings
# from a model's config, for training and inference alike). The released ViT uses 980 / 224 / 14 (up to 70 patches of
# 14 pixels per side) and the autoencoder 1024 / 512 / 16 (one latent token per 16x16 pixels). A few
# picture sizes and what each encoder makes of them:

# %%
released = preset("bagel-7b-mot")
print("ViT (max, min, stride):", images.vit_resize(released), " VAE:", images.vae_resize(released))
for width, height in [(640, 480), (1920, 1080), (300, 1200), (100, 100), (1, 5000)]:
    vit_w, vit_h = images.encoder_size(width, height, *images.vit_resize(released))
    vae_w, vae_h = images.encoder_size(width, height, *images.vae_resize(released))
    print(
        f"{width:>5}x{height:<5} -> ViT {vit_w}x{vit_h} = {vit_h // 14}x{vit_w // 14} patches (rows x columns),"
        f"  VAE {vae_w}x{vae_h} = {vae_h // 16}x{vae_w // 16} latent tokens"
    )

# %% [markdown]
# ## Patches and their position ids
#
# The ViT cuts the pixels into `p x p` patches, row by row (`images.patchify`), and gives each patch
# the position id of its cell in a fixed table of `max_per_side x max_per_side` learned positions:
# `row * max_per_side + col` (`images.grid_position_ids`). A small image thus uses the top-left corner
# of the table, and a patch keeps the same id whatever the width of its image. With
# `interpolate=True` (the `interpolate_pos` option) the grid is stretched over the whole table instead.

# %%
print(inspect.getsource(images.patchify))
print(inspect.getsource(images.grid_position_ids))

# %% [markdown]
# We use the embedded toy model's settings (`bagel_mini.DEFAULT_MODEL`): 8x8-pixel patches and a table
# of 8 x 8 positions, so images up to 64 pixels per side. Three images of different shapes, cut from
# Shapes World renders: a wide strip, a tall one, and a small square.

# %%
model, _ = load_checkpoint(bagel_mini.DEFAULT_MODEL)
tokenizer = BagelTokenizer.from_dir(bagel_mini.DEFAULT_MODEL)
config = model.config
patch, table_side = config.vit.patch_size, config.vit_max_num_patch_per_side
print(f"ViT patch {patch} px, position table {table_side} x {table_side}")

row_of_three = Scene(  # SceneObject(shape, colour, size, x, y): sizes and centres as fractions of the side
    (SceneObject("circle", "red", 0.26, 0.2, 0.5), SceneObject("square", "blue", 0.26, 0.5, 0.5),
     SceneObject("triangle", "green", 0.26, 0.8, 0.5)), "white")  # fmt: skip
column_of_three = Scene(
    (SceneObject("diamond", "yellow", 0.26, 0.5, 0.2), SceneObject("cross", "purple", 0.26, 0.5, 0.5),
     SceneObject("circle", "orange", 0.26, 0.5, 0.8)), "beige")  # fmt: skip
one_square = Scene((SceneObject("square", "green", 0.5, 0.5, 0.5),), "grey")
pictures = {  # named by width x height; crops of 64x64 renders: (left, top, right, bottom)
    "wide 64x32": shapes_world.render(row_of_three).crop((0, 16, 64, 48)),
    "tall 40x64": shapes_world.render(column_of_three).crop((12, 0, 52, 64)),
    "small 32x32": shapes_world.render(one_square, size=32),
}
pixels = {name: images.to_tensor(picture) for name, picture in pictures.items()}  # (3, H, W) in [-1, 1]
grids = {name: (x.shape[1] // patch, x.shape[2] // patch) for name, x in pixels.items()}
COLORS = dict(zip(pictures, ["tab:blue", "tab:orange", "tab:green"]))
for name, (rows, cols) in grids.items():
    ids = images.grid_position_ids(rows, cols, table_side)
    print(f"{name}: {rows}x{cols} patches of {tuple(images.patchify(pixels[name], patch).shape[1:])} values, "
          f"position ids {ids.tolist()[:cols]} ... {ids.tolist()[-1]}")  # fmt: skip


# %%
def draw_patches(ax, name: str, interpolate: bool) -> None:
    """The picture with its patch grid, each patch labelled with its position id."""
    rows, cols = grids[name]
    ids = images.grid_position_ids(rows, cols, table_side, interpolate).view(rows, cols)
    ax.imshow(pictures[name], extent=(0, cols * patch, rows * patch, 0))
    for r in range(rows):
        for c in range(cols):
            ax.add_patch(Rectangle((c * patch, r * patch), patch, patch, fill=False, lw=0.6, color="0.3"))
            ax.text((c + 0.5) * patch, (r + 0.5) * patch, int(ids[r, c]), ha="center", va="center", fontsize=6.5)
    ax.set(xlim=(0, 64), ylim=(64, 0), xticks=[], yticks=[])
    ax.set_title(name, color=COLORS[name], fontsize=10)


def draw_table(ax, name: str, interpolate: bool) -> None:
    """The table of positions, with the cells this picture uses filled in its colour."""
    used = torch.zeros(table_side * table_side, dtype=torch.bool)
    used[images.grid_position_ids(*grids[name], table_side, interpolate)] = True
    cells = torch.where(used[:, None], torch.tensor(to_rgb(COLORS[name])), torch.tensor([0.93, 0.93, 0.93]))
    ax.imshow(cells.view(table_side, table_side, 3))
    ax.set_xticks([x - 0.5 for x in range(table_side + 1)], labels=[])
    ax.set_yticks([y - 0.5 for y in range(table_side + 1)], labels=[])
    ax.tick_params(length=0)
    ax.grid(color="white", lw=1.5)


fig, axes = plt.subplots(3, 3, figsize=(9, 9.4))
for col, name in enumerate(pictures):
    draw_patches(axes[0, col], name, interpolate=False)
    draw_table(axes[1, col], name, interpolate=False)
    draw_table(axes[2, col], name, interpolate=True)
axes[0, 0].set_ylabel("patches and ids")
axes[1, 0].set_ylabel("table cells used\n(default: top-left corner)")
axes[2, 0].set_ylabel("table cells used\n(interpolate=True)")
fig.tight_layout()
fig.savefig(FIGURES / "06_position_ids.png", dpi=120, bbox_inches="tight")
fig

# %% [markdown]
# BAGEL (and bagel-mini by default) uses the top-left corner: the learned positions of a low-resolution
# image are those of the top-left part of a large one, so a patch's position means the same distance
# from the corner in every image. The latent tokens of the generation side use the same function with
# their own table (`max_latent_size`).
#
# ## Packing the images into one sequence
#
# NaViT's second half: the patches of several images go through the encoder as *one* sequence, with
# the number of patches of each image (`lengths`) telling attention where one image ends. `navit.pack`
# does this for whole training samples; here three samples of one image each. The ViT tokens of the
# packed batch are the three images' patches one after another, each with its own position ids.

# %%
pack_config = PackConfig.for_model(config, tokenizer.special_ids, dropout=NO_DROPOUT)
batch = pack([[VitImage(x)] for x in pixels.values()], pack_config, random.Random(0))
print(f"vit_patches {tuple(batch.vit_patches.shape)}, vit_lengths {batch.vit_lengths}")
print(f"splits per sample: {batch.splits}  (start marker + patches + end marker)")

# %% [markdown]
# Attention inside SigLIP stays within each image, so packing changes nothing about the result: the
# toy model's ViT embedding (`Bagel.embed_vit`: SigLIP, connector and position table) of the packed
# patches equals that of each image run alone.

# %%
with torch.no_grad():
    packed_out = model.embed_vit(batch.vit_patches, batch.vit_position_ids, batch.vit_lengths)
    alone = []
    for name, x in pixels.items():
        rows, cols = grids[name]
        position_ids = images.grid_position_ids(rows, cols, table_side)
        alone.append(model.embed_vit(images.patchify(x, patch), position_ids, [rows * cols]))
    alone = torch.cat(alone)
print(f"packed {tuple(packed_out.shape)}, largest difference from one image at a time: "
      f"{(packed_out - alone).abs().max():.1e}")  # fmt: skip

# %% [markdown]
# ## Packed versus padded
#
# The usual alternative is a padded batch: every sample is filled up to the longest one. For our three
# images: the packed sequence holds only real patches, while padding spends tokens, and the compute of
# every layer, on nothing.

# %%
lengths = [rows * cols for rows, cols in grids.values()]
longest = max(lengths)
fig = plt.figure(figsize=(9, 4.6), layout="constrained")
top, bottom = fig.subfigures(2, 1, height_ratios=[1.5, 1])
for ax, name in zip(top.subplots(1, 3), pictures):
    draw_patches(ax, name, interpolate=False)
    for text in ax.texts:
        text.set_visible(False)  # the grid only; the ids are in the figure above
    ax.set_title(f"{name}: {grids[name][0] * grids[name][1]} patches", color=COLORS[name], fontsize=10)
strips = bottom.subplots(2, 1, sharex=True)


def draw_tokens(ax, segments: list[tuple[int, str | None]], label: str) -> None:
    """One row of token cells: (count, colour) segments, colour None for padding."""
    start = 0
    for count, color in segments:
        ax.bar(range(start, start + count), 1, width=1, align="edge", color=color or "0.88",
               hatch=None if color else "////", edgecolor="white", lw=0.3)  # fmt: skip
        start += count
    ax.set(yticks=[], ylim=(0, 1))
    ax.set_ylabel(label, rotation=0, ha="right", va="center")


colors = list(COLORS.values())
draw_tokens(strips[0], list(zip(lengths, colors)), f"packed\n{sum(lengths)} tokens")
padded_segments = []  # each image, then its padding up to the longest
for length, color in zip(lengths, colors):
    padded_segments += [(length, color), (longest - length, None)]
draw_tokens(strips[1], padded_segments, f"padded\n{len(lengths) * longest} tokens")
strips[1].set_xlabel("tokens (hatched: padding)")
fig.suptitle("NaViT: every image keeps its shape; samples are packed, not padded")
fig.savefig(FIGURES / "06_navit.png", dpi=120, bbox_inches="tight")
fig

# %% [markdown]
# With real samples the waste grows with the batch: the more samples, the longer the longest one is
# likely to be. We draw a stream of Shapes World training samples (every task type, as `train.py`
# does), cut it into batches of `n` consecutive samples and count the padding each batch would need.
#
# Packing has a small loss of its own: a sequence has a token budget (the toy model trained with 1024
# tokens per sequence), and a sample that does not fit starts the next sequence, leaving the end of
# the current one empty. `navit.pack_by_budget` groups a stream of samples this way:

# %%
print(inspect.getsource(navit.pack_by_budget))

rng = random.Random(0)
stream = [
    shapes_world.to_sample(shapes_world.random_task(rng), tokenizer.encode, rng) for _ in range(128 if FAST else 640)
]
stream_lengths = [sample_length(sample, pack_config) for sample in stream]
print(f"{len(stream)} samples of {min(stream_lengths)} to {max(stream_lengths)} tokens")

batch_sizes = [2, 4, 8, 16, 32, 64] if FAST else [2, 4, 8, 16, 32, 64, 128]
padding_share = []
for n in batch_sizes:
    batches = [stream_lengths[i : i + n] for i in range(0, len(stream_lengths) - n + 1, n)]
    padding_share.append(1 - sum(map(sum, batches)) / sum(n * max(b) for b in batches))
    print(f"  batches of {n:3}: {padding_share[-1]:.0%} of a padded batch is padding")

budget = 1024
sequences = list(pack_by_budget(stream, pack_config, budget, random.Random(0)))
fill = sum(seq.sequence_length for seq in sequences) / (len(sequences) * budget)
print(f"packed with a budget of {budget}: {len(sequences)} sequences, {fill:.0%} full on average")

fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
axes[0].plot(batch_sizes, padding_share, "o-", label="padded batches of n samples")
axes[0].axhline(1 - fill, color="tab:green", ls="--", label=f"packed, budget {budget}: unused ends")
axes[0].set(xscale="log", ylim=(0, 1), xlabel="samples per batch n", ylabel="share of tokens wasted",
            title="Shapes World samples: wasted tokens")  # fmt: skip
axes[0].set_xticks(batch_sizes, labels=batch_sizes)
axes[0].minorticks_off()
axes[0].legend()
for index, seq in enumerate(sequences[:12]):
    start = 0
    for length in seq.sample_lengths:
        axes[1].barh(index, length, left=start, color=plt.cm.tab20(len(axes[1].patches) % 20), edgecolor="white")
        start += length
axes[1].axvline(budget, color="black", lw=1)
axes[1].set(xlabel="tokens", ylabel="packed sequence", title="the first packed sequences, one colour per sample")
axes[1].invert_yaxis()
fig.tight_layout()
fig.savefig(FIGURES / "06_waste.png", dpi=120, bbox_inches="tight")
fig

# %% [markdown]
# ## What it costs in time
#
# `python -m bagel_mini.bench step` times one training step (forward and backward) of a randomly
# initialised `toy` model on one packed batch of `bench.mixed_samples` (understanding samples with a
# ViT image and generation samples with a VAE image, texts and images of random sizes), and on the same
# samples padded (`bench.padded`: each sample followed by a padding text up to the longest length plus
# two). The padded samples are also laid end to end in one sequence under the same kind of mask, so
# they pay for the padding in every layer, and in the attention, whose cost grows with the square of
# the sequence length. Here is the same function called in this process on a small setting (it also
# times the MoE and dense variants of the decoder, the subject of tutorial 02). This tutorial runs
# PyTorch on one thread, and on a shared CPU the times jitter; the token counts do not.

# %%
result = bench.bench_step("toy", repeats=1 if FAST else 3, num_samples=4 if FAST else 16)
print({name: round(value, 2) for name, value in result.items()})

# %% [markdown]
# With 16 samples (the full run; fast mode uses 4), the packed batch has 631 tokens against 1296 padded,
# 49% of them, and its step took 58% of the padded step's time in our run (`packed_over_padded`): more
# than its share of the tokens, because at this size a step is mostly the fixed cost of its many small
# operations; the saving grows with the batch, as the padded sequence's attention grows with the square
# of its length.
#
# For reference, the figures **measured by `python -m bagel_mini.bench step`** on the 2-core CPU of the
# development machine, before the toy moved to 8-pixel latent tokens (16 samples = 553 packed tokens, 10
# repeats):
# `packed_over_padded` 0.37, that is a packed step took 37% of the time of the padded one; with 32
# samples, 0.15.
#
# What to take away:
# - every image keeps its aspect ratio: `encoder_size` picks whole patches, `patchify` cuts them row by
#   row, and `grid_position_ids` gives each patch its cell in the table (top-left corner by default);
# - packing puts samples end to end with no padding; the attention mask (and in SigLIP, the image
#   lengths) keeps them apart, so each sample's result is the same as when it runs alone;
# - padding wastes more the larger and more varied the batch, and costs step time at least in
#   proportion; packing to a budget loses only the unused end of each sequence.
