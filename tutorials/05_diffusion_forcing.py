# %% [markdown]
# # 05 · Diffusion forcing
#
# When one training sample holds several images to generate, like the frames of a short video, BAGEL
# noises each frame (or each group of consecutive frames) to its own level, and lets later frames look
# at the *noised* earlier ones: diffusion forcing (paper section 2.4, after Chen et al. 2024). You will
# see a Shapes World video become such a sample, the noise levels training draws for it, what the
# frames look like once noised, and the attention mask that makes it work.
#
# Runs in about 6 s on a 2-core CPU; `BAGEL_FAST=1` for a quick pass.

# %%
import inspect
import os
import random
from collections import Counter
from pathlib import Path

import matplotlib.pyplot as plt
import torch

import bagel_mini
from bagel_mini import diffusion_forcing, flow, shapes_world
from bagel_mini.attention import dense_mask, draw_mask
from bagel_mini.cfg import NO_DROPOUT
from bagel_mini.checkpoint import load_checkpoint
from bagel_mini.images import unpatchify
from bagel_mini.navit import PackConfig, Text, VaeImage, pack
from bagel_mini.tokenizer import BagelTokenizer

FAST = os.environ.get("BAGEL_FAST") == "1"  # CI's fast mode: the same cells on less data, in seconds
FIGURES = Path(os.environ.get("BAGEL_FIGURES", Path(bagel_mini.__file__).parents[1] / "tutorials" / "figures"))
FIGURES.mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)
torch.set_num_threads(1)  # toy-sized tensors gain little from a second thread; one stays fast on a busy CPU

# %% [markdown]
# ## A Shapes World video
#
# Shapes World's `video` task draws 3 or 4 frames; between two frames one object moves one step, and
# a short text says which and where. As training data it asks the model to generate every frame; the
# frames come in groups, each group after one text that lists its moves (joined by ", then ").

# %%
video = shapes_world.video(random.Random(0))
fig, axes = plt.subplots(1, len(video.frames), figsize=(2.6 * len(video.frames), 2.9))
for index, (ax, frame) in enumerate(zip(axes, video.frames)):
    ax.imshow(frame)
    ax.set_title(f"frame {index + 1}", fontsize=10)
    ax.set_xlabel("(first frame)" if index == 0 else video.moves[index - 1], fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
fig.suptitle(video.caption, fontsize=10)
fig.tight_layout()
fig.savefig(FIGURES / "05_video.png", dpi=120, bbox_inches="tight")
fig

# %% [markdown]
# ## Groups of frames
#
# If every frame had its own noise level, neighbouring frames could drift apart. So the frames are cut
# into groups of consecutive frames at random; a group shares one noise level and its frames see each
# other fully, like the tokens of one image. `random_group_sizes` draws the cut: each group's size is
# uniform in 1..`max_group` (the last group cut to fit), so the five ways to cut four frames into
# groups of at most two are not equally likely, as the count below shows.

# %%
print(inspect.getsource(diffusion_forcing.random_group_sizes))

draws = 2_000 if FAST else 20_000
rng = random.Random(0)
patterns = Counter(tuple(diffusion_forcing.random_group_sizes(4, 2, rng)) for _ in range(draws))
print(f"group sizes of 4 frames with max_group=2, over {draws} draws:")
for pattern, count in patterns.most_common():
    print(f"  {list(pattern)!s:14} {count / draws:.1%}")

# %% [markdown]
# `frame_items` turns the frames into packing items (navit.py). Each frame is a `VaeImage` with
# `loss=True` (it is generated) and `frame_delta=1` (the RoPE position moves on by one after it); a
# frame with `joins_previous=True` belongs to the group of the frame before it.

# %%
print(inspect.getsource(diffusion_forcing.frame_items))

# %% [markdown]
# `shapes_world.to_sample` does this for a video task: for each group, the text that leads to it (the
# caption for the first group, then the moves), then the group's frames. We tokenize with the embedded
# toy model's tokenizer (`bagel_mini.DEFAULT_MODEL`). Training would also drop the texts at random for
# classifier-free guidance (cfg.py); we switch that off so that every item stays.

# %%
model, autoencoder = load_checkpoint(bagel_mini.DEFAULT_MODEL)
tokenizer = BagelTokenizer.from_dir(bagel_mini.DEFAULT_MODEL)
pack_config = PackConfig.for_model(model.config, tokenizer.special_ids, dropout=NO_DROPOUT)

sample = shapes_world.to_sample(video, tokenizer.encode, random.Random(0))
for item in sample:
    if isinstance(item, Text):
        print(f"Text      {tokenizer.decode(item.ids)!r}")
    else:
        print(f"VaeImage  {tuple(item.pixels.shape)} loss={item.loss} frame_delta={item.frame_delta} "
              f"joins_previous={item.joins_previous}")  # fmt: skip

# %% [markdown]
# ## One packed sample: splits, positions and noise levels
#
# `navit.pack` lays the items out as one sequence. Each 64x64 frame is 64 latent tokens between a
# start and an end marker. Each group is one split of mode `full`, and the packer draws one raw
# standard-normal timestep per group, which flow.py turns into `t = shift(sigmoid(raw))` (the toy
# model's shift is 1). Positions count up through the texts and move on by one per frame.

# %%
batch = pack([sample], pack_config, random.Random(1))
t_tokens = flow.training_timesteps(batch.raw_timesteps, model.config.timestep_shift)  # one t per VAE token
tokens_per_frame = [h * w for h, w in batch.latent_grids]
frame_t = [chunk[0].item() for chunk in t_tokens.split(tokens_per_frame)]
print(f"{batch.sequence_length} tokens; splits (length, mode): {batch.splits[0]}")
print("t of each frame:", ", ".join(f"{t:.2f}" for t in frame_t))
frame_starts = batch.vae_indexes.split(tokens_per_frame)
print("RoPE position of each frame:", [batch.position_ids[rows[0]].item() for rows in frame_starts])

# %% [markdown]
# ## The attention mask
#
# Tutorial 03 introduced the split modes. An ordinary image to generate is a split of mode `noise`:
# nothing outside it may look at it, since at inference nothing can see an image before it is drawn.
# Diffusion-forcing frames are `full` instead: later texts and frames attend to the *noised* earlier
# frames. Below, the mask of our sample (left; white = may attend, drawn with `attention.draw_mask`)
# next to the mask of the same items packed as plain noised targets (right), where every frame is
# blind to the frames before it, and the texts cannot see them either.


# %%
def split_labels(sample: list) -> list[str]:
    """A name for each split of a packed sample: 'text', or the frames ('frame 2', 'frames 1-2')."""
    labels, frame = [], 0
    for item in sample:
        if isinstance(item, Text):
            labels.append("text")
            continue
        frame += 1
        if item.joins_previous:
            labels[-1] = f"frames {labels[-1].split()[-1].split('-')[0]}-{frame}"
        else:
            labels.append(f"frame {frame}")
    return labels


def draw_sample_mask(sample: list, ax, title: str) -> None:
    batch = pack([sample], pack_config, random.Random(1))
    draw_mask(dense_mask(batch.splits), batch.splits, ax=ax, title=title)
    sizes = [size for size, _ in batch.splits[0]]
    centres = [sum(sizes[:i]) + size / 2 for i, size in enumerate(sizes)]
    ax.set_yticks(centres, labels=split_labels(sample), fontsize=8)
    ax.set_ylabel("")


plain_targets = [
    VaeImage(item.pixels, loss=True) if isinstance(item, VaeImage) else item for item in sample
]  # the same frames as ordinary noised targets, each its own `noise` split
fig, axes = plt.subplots(1, 2, figsize=(11, 5.6))
draw_sample_mask(sample, axes[0], "diffusion forcing: frames are `full` splits")
draw_sample_mask(plain_targets, axes[1], "plain noised targets: `noise` splits")
fig.tight_layout()
fig.savefig(FIGURES / "05_masks.png", dpi=120, bbox_inches="tight")
fig

# %% [markdown]
# ## What the model sees
#
# To see the noise levels, we encode each frame with the toy model's autoencoder, cut the latents into
# tokens with `Bagel.latent_tokens` (as the training forward does), noise every token with the `t` of
# its frame (`flow.add_noise` takes one `t` per row) and decode the result. The frames of a group share
# their noise level, the groups do not; and the second group learns to denoise its frames while it
# looks at the first group *as noisy as it is*. (The toy autoencoder is small: its decodes are blurrier
# than the renders even without noise.) On the right, the mask from the previous section again.

# %%
with torch.no_grad():
    latents = [autoencoder.encode_mean(pixels[None])[0] for pixels in batch.vae_images]
    clean = model.latent_tokens(latents, batch.latent_grids)  # (all frames' tokens, 64), as Bagel.forward cuts them
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    noised = flow.add_noise(clean, noise, t_tokens)
    patch, channels = model.config.latent_patch_size, model.config.vae.z_channels
    noised_frames = [
        autoencoder.decode(unpatchify(tokens, h, w, patch, channels)[None])[0]
        for tokens, (h, w) in zip(noised.split(tokens_per_frame), batch.latent_grids)
    ]
group_of_frame = []  # group number of each frame, from the items
for item in sample:
    if isinstance(item, VaeImage):
        group_of_frame.append(group_of_frame[-1] if item.joins_previous else len(set(group_of_frame)) + 1)

columns = len(video.frames)
fig = plt.figure(figsize=(1.9 * columns + 4.6, 4.4), layout="constrained")
left, right = fig.subfigures(1, 2, width_ratios=[1.9 * columns, 4.6])
axes = left.subplots(2, columns)
for index, frame in enumerate(video.frames):
    axes[0, index].imshow(frame)
    axes[0, index].set_title(f"frame {index + 1}", fontsize=10)
    axes[1, index].imshow((noised_frames[index].permute(1, 2, 0) * 0.5 + 0.5).clamp(0, 1))
    axes[1, index].set_title(f"group {group_of_frame[index]}, t = {frame_t[index]:.2f}", fontsize=10)
for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
axes[0, 0].set_ylabel("clean")
axes[1, 0].set_ylabel("noised")
draw_sample_mask(sample, right.subplots(), "who sees whom")
fig.suptitle("diffusion forcing: one noise level per group, later frames see the noised earlier ones")
fig.savefig(FIGURES / "05_diffusion_forcing.png", dpi=120, bbox_inches="tight")
fig

# %% [markdown]
# ## Noise levels over many samples
#
# Each packed video draws new groups and new levels. Below, one row per sample: the `t` of each frame
# (grey: a 3-frame video has no fourth frame), with a white bar between two groups. Within a group the
# level is constant; across groups it is independent, so a later frame may be cleaner or noisier than
# the ones it looks at.

# %%
rows = 8 if FAST else 16
rng = random.Random(2)
levels = torch.full((rows, 4), float("nan"))
boundaries = []  # (row, column) where a new group starts
for row in range(rows):
    task = shapes_world.video(rng)
    items = shapes_world.to_sample(task, tokenizer.encode, rng)
    packed = pack([items], pack_config, rng)
    t = flow.training_timesteps(packed.raw_timesteps, model.config.timestep_shift)
    frames = [item for item in items if isinstance(item, VaeImage)]
    per_frame = [chunk[0].item() for chunk in t.split([h * w for h, w in packed.latent_grids])]
    levels[row, : len(per_frame)] = torch.tensor(per_frame)
    boundaries += [(row, column) for column, item in enumerate(frames) if column > 0 and not item.joins_previous]

fig, ax = plt.subplots(figsize=(4.6, 0.32 * rows + 1.2))
ax.imshow(levels, cmap="viridis", vmin=0, vmax=1, aspect="auto")
ax.set_facecolor("0.85")
for row in range(rows):
    for column in range(4):
        if not levels[row, column].isnan():
            value = levels[row, column].item()
            color = "black" if value > 0.6 else "white"
            ax.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=8, color=color)
for row, column in boundaries:
    ax.plot([column - 0.5, column - 0.5], [row - 0.5, row + 0.5], color="white", lw=4)
ax.set(xticks=range(4), xticklabels=[f"frame {i + 1}" for i in range(4)], yticks=[], ylabel="sample",
       title="t of each frame; white bar: new group")  # fmt: skip
fig.savefig(FIGURES / "05_noise_levels.png", dpi=120, bbox_inches="tight")
fig

# %% [markdown]
# What to take away:
# - a video sample is text, frames, text, frames ...; the frames are cut into random groups of
#   consecutive frames (`random_group_sizes`), each group one `full` split with one noise level;
# - later frames condition on the noised earlier ones, so the model learns to continue from frames it
#   has only partly generated (the module docstring of diffusion_forcing.py);
# - nothing else changes: the loss is the same flow MSE on every noised token (model.py), and the
#   mask comes from the same rule as every other split (attention.py).
