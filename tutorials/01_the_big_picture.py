# %% [markdown]
# # 01 · The big picture
#
# We follow one training sample from Shapes World to the two numbers BAGEL learns from. An edit ("make
# the blue cross purple") becomes a list of items; the items are packed, together with a second sample,
# into one sequence of tokens; every token goes to the understanding or the generation expert; and the
# model returns a cross-entropy loss on text and a mean squared error on the velocity of the noised image
# (the direction from image to noise that the model predicts, tutorial 04).
# Paper: section 2.1 and Figure 2 (the model), section 2.4 (sequence packing).
#
# Runs in about 6 s on a 2-core CPU; `BAGEL_FAST=1` for a quick pass.

# %%
import inspect
import os
import random
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from matplotlib.patches import Patch

import bagel_mini
from bagel_mini import flow, shapes_world
from bagel_mini.cfg import NO_DROPOUT
from bagel_mini.checkpoint import load_checkpoint
from bagel_mini.images import unpatchify
from bagel_mini.model import Bagel
from bagel_mini.navit import PackConfig, PackedBatch, pack, pack_by_budget
from bagel_mini.tokenizer import BagelTokenizer

FAST = os.environ.get("BAGEL_FAST") == "1"  # CI's fast mode: the same cells on less data, in seconds
FIGURES = Path(os.environ.get("BAGEL_FIGURES", Path(bagel_mini.__file__).parents[1] / "tutorials" / "figures"))
FIGURES.mkdir(parents=True, exist_ok=True)

torch.manual_seed(0)
torch.set_num_threads(1)  # toy-sized tensors gain little from a second thread; one stays fast on a busy CPU

# %% [markdown]
# ## The model
#
# `bagel_mini/default_model/` holds a `toy` model: a Qwen2-style decoder of 4 layers and width 128, with a
# second set of weights in every layer for the generation expert (Mixture of Transformers, tutorial 02), a
# small SigLIP encoder (a vision transformer, ViT, that turns image patches into tokens) for images it
# must understand, and a small FLUX-style autoencoder (VAE: it compresses an image into a small grid of
# latents and back) for images it must draw. It was trained for about three hours on a 2-core CPU and is
# weak (its model card, `bagel_mini/default_model/README.md`: it names colours and shapes and reads counts
# and backgrounds, but draws the asked shape for only about three in five single-object prompts). We use it so
# that the losses below are those of a model that has seen Shapes World, not of random weights.

# %%
model, autoencoder = load_checkpoint(bagel_mini.DEFAULT_MODEL)
tokenizer = BagelTokenizer.from_dir(bagel_mini.DEFAULT_MODEL)
config = model.config
llm = config.llm
print(f"decoder: {llm.num_hidden_layers} layers, width {llm.hidden_size}, {llm.layer_module}")
print(f"Bagel: {sum(p.numel() for p in model.parameters()):,} parameters (both experts, SigLIP, connectors)")
print(f"autoencoder: {sum(p.numel() for p in autoencoder.parameters()):,} parameters, frozen")
print("special tokens:", tokenizer.special_ids)

# %% [markdown]
# ## One task, as items
#
# Shapes World (`bagel_mini/shapes_world/`) draws scenes of coloured shapes and turns each into one of BAGEL's
# task types. Here: an edit, a source image, an instruction and the image it should produce.

# %%
rng = random.Random(0)
task = shapes_world.edit(rng, kind="recolor")
print("instruction:", task.instruction)

fig, axes = plt.subplots(1, 2, figsize=(4, 2.2))
for ax, image, label in zip(axes, [task.source_image, task.target_image], ["source", "target"]):
    ax.imshow(image, interpolation="nearest")
    ax.set_title(label, fontsize=9)
    ax.axis("off")
fig.suptitle(f"edit: {task.instruction}", fontsize=9)
fig.savefig(FIGURES / "01_edit_task.png", dpi=120, bbox_inches="tight")
fig

# %% [markdown]
# `to_sample` turns the task into the items the packer understands, marked the way BAGEL's data loaders
# mark them. The source image appears twice: as a clean `VaeImage` (its autoencoder latents, context for
# the generation expert) and as a `VitImage` (SigLIP patches, for understanding). The target is a `VaeImage`
# with `loss=True`: it will be noised and the model must predict how to denoise it. `droppable` items
# may be left out at random during training, so that the model also learns without them
# (classifier-free guidance, `cfg.py`).

# %%
edit_sample = shapes_world.to_sample(task, tokenizer.encode, rng)
for item in edit_sample:
    if hasattr(item, "ids"):
        what = f"{len(item.ids)} ids {tokenizer.decode(item.ids)!r}"
    else:
        what = f"pixels {tuple(item.pixels.shape)}"
    print(f"{type(item).__name__:9s} loss={getattr(item, 'loss', False)!s:5s} droppable={item.droppable!s:5s} {what}")

# %% [markdown]
# The edit has nothing for the text loss: no item there is text to predict. A question about an image
# has: its answer carries `loss=True`. We take one to pack next to the edit.

# %%
question = shapes_world.question(rng, kind="color")
question_sample = shapes_world.to_sample(question, tokenizer.encode, rng)
print(f"Q: {question.question}  A: {question.answer}")
print([type(item).__name__ for item in question_sample])

# %% [markdown]
# ## Packing: two samples, one sequence
#
# `pack` (`navit.py`) lays the samples end to end in one sequence, with no padding. Every text becomes
# `<|im_start|> ids <|im_end|>`, every image `<|vision_start|> tokens <|vision_end|>`. A 64x64 image gives
# 8x8 = 64 ViT tokens (patches of 8 pixels) and 8x8 = 64 VAE tokens (the autoencoder shrinks it 8x, and
# the toy makes each latent pixel one token; the released model takes 2x2 latent patches, one token per
# 16x16 pixels of a far larger image). We switch CFG dropout off here so every item stays.
#
# Each item becomes one *split* with an attention mode (tutorial 03): `causal` for text, `full` for a
# clean image, `noise` for the noised target. RoPE positions (rotary position embedding: the index
# attention uses to know where a token sits) restart in every sample; all tokens of an
# image share one position; the next block starts one higher, except after a noised target, which leaves
# the position where it was (a clean copy of the same image may follow it and share it).

# %%
pack_config = PackConfig.for_model(config, tokenizer.special_ids, dropout=NO_DROPOUT)
batch = pack([edit_sample, question_sample], pack_config, random.Random(0))
print(f"{batch.sequence_length} tokens; samples of {batch.sample_lengths} tokens")
start = 0
for index, splits in enumerate(batch.splits):
    for size, mode in splits:
        positions = batch.position_ids[start : start + size]
        print(f"sample {index}  {mode:6s} {size:3d} tokens  rows {start:3d}-{start + size - 1:3d}  "
              f"RoPE positions {positions.min().item()}..{positions.max().item()}")  # fmt: skip
        start += size

# %% [markdown]
# The packed batch also says which rows hold which kind of token (`text_indexes`, `vit_indexes`,
# `vae_indexes`) and which rows carry a loss (`ce_indexes`, `mse_indexes`). The routing to the experts is
# one line: every VAE token, noised or clean, goes to the generation expert; everything else to the
# understanding expert.

# %%
print(inspect.getsource(PackedBatch.is_gen.fget))

# %% [markdown]
# Here is the whole sequence, one column per token: what kind of token it is, which expert runs it, and
# which loss reads its output.

# %%
special = set(tokenizer.special_ids.values())
KINDS = {"text": "tab:blue", "marker": "0.6", "ViT": "tab:green", "clean VAE": "tab:orange", "noised VAE": "tab:red"}
kind = ["text"] * batch.sequence_length
for row, token in zip(batch.text_indexes.tolist(), batch.text_ids.tolist()):
    kind[row] = "marker" if token in special else "text"
for row in batch.vit_indexes.tolist():
    kind[row] = "ViT"
for row in batch.vae_indexes.tolist():
    kind[row] = "clean VAE"
for row in batch.mse_indexes.tolist():
    kind[row] = "noised VAE"
EXPERTS = {"understanding": "tab:cyan", "generation": "tab:pink"}
expert = ["generation" if gen else "understanding" for gen in batch.is_gen.tolist()]
LOSSES = {"CE (predicts the next token)": "tab:purple", "MSE (velocity)": "black", "none": "white"}
loss = ["none"] * batch.sequence_length
for row in batch.ce_indexes.tolist():
    loss[row] = "CE (predicts the next token)"
for row in batch.mse_indexes.tolist():
    loss[row] = "MSE (velocity)"

fig, ax = plt.subplots(figsize=(12, 2.8))
rows = [("token", kind, KINDS), ("expert", expert, EXPERTS), ("loss", loss, LOSSES)]
for y, (_, labels, colours) in enumerate(rows):
    ax.bar(range(batch.sequence_length), 0.8, bottom=-y - 0.4, width=1.0, color=[colours[x] for x in labels])
    handles = [Patch(color=colour, label=label) for label, colour in colours.items() if label != "none"]
    fig.legend(
        handles=handles, loc="center left", bbox_to_anchor=(1.01, (2.5 - y) / 4.3), bbox_transform=ax.transAxes,
        ncol=3 if y == 0 else 1, fontsize=8, frameon=False, handlelength=1.2, columnspacing=1.0,
    )  # fmt: skip
ax.set_yticks([0, -1, -2], [name for name, _, _ in rows])
ax.set_xlim(-0.5, batch.sequence_length - 0.5)
ax.set_ylim(-2.5, 1.8)
ax.set_xlabel("position in the packed sequence")
names = ["clean VAE\n(source)", "ViT\n(source)", "instruction", "noised VAE\n(target)", "ViT", "question", "answer"]
start = 0
for size, name in zip([size for splits in batch.splits for size, _ in splits], names):
    narrow = size < 8  # a short split gets its label one line higher, clear of its neighbours'
    ax.text(start + size / 2, 1.1 if narrow else 0.5, name, ha="center", va="bottom", fontsize=8)
    ax.axvline(start - 0.5, ymax=0.68, color="black", linewidth=0.5)  # below the labels
    start += size
ax.axvline(batch.sample_lengths[0] - 0.5, color="black", linewidth=2.5)
ax.set_title("sample 0: the edit  |  sample 1: the question", fontsize=9, loc="left")
fig.savefig(FIGURES / "01_packed_sequence.png", dpi=120, bbox_inches="tight")
fig

# %% [markdown]
# Markers and text go to the understanding expert, ViT tokens too; only VAE tokens run the generation
# expert. The CE rows sit one to the left of the tokens they predict: `<|im_start|>` predicts the first
# answer token, the last answer token predicts `<|im_end|>`.
#
# ## Into the model: one row per token
#
# `Bagel` embeds each kind of token into the decoder's width: text and markers through the embedding
# table, ViT patches through SigLIP and a connector, VAE latents as below. The autoencoder first turns
# each VAE image into latents (16 channels, 8x smaller); the model cuts them into patches (2x2 released,
# 1x1 in the toy), mixes in noise at time `t` (`flow.py`: t = 1 is pure noise, t = 0 the image; a clean
# context image has t = 0), and adds a timestep embedding and a 2D position.

# %%
print(inspect.getsource(Bagel.embed_vae))
with torch.no_grad():
    latents = [autoencoder.encode(pixels[None])[0] for pixels in batch.vae_images]
print("latents:", [tuple(latent.shape) for latent in latents])
t = flow.training_timesteps(batch.raw_timesteps, config.timestep_shift)
print("t of the clean source:", t[0].item(), " t of the noised target:", round(t[-1].item(), 3))

# %% [markdown]
# ## The forward pass and both losses
#
# `Bagel.forward` embeds the batch, runs the decoder once over the whole packed sequence under the
# generalized causal mask (tutorial 03), and reads two heads from the final hidden states: `lm_head` at
# the CE rows (next-token cross-entropy) and `llm2vae` at the noised VAE rows (the predicted velocity,
# compared with `noise - clean` by a squared error). The total is 0.25 CE + 1.0 MSE, as in the paper.

# %%
print(inspect.getsource(Bagel.forward))

# %%
torch.manual_seed(0)  # the flow noise
with torch.no_grad():
    out = model(batch, latents)
print(f"loss {out['loss']:.3f} = 0.25 x CE {out['ce_loss']:.3f} + 1.0 x MSE {out['mse_loss']:.3f}")
print(f"per-token CE {tuple(out['ce'].shape)}, per-value MSE {tuple(out['mse'].shape)}")

# %% [markdown]
# What does the CE measure? At each CE row the model gives a distribution over the next token. Below, the
# target and the model's most likely token, with its cross-entropy: given the true answer so far
# ("teacher forcing"), it is sure of "reen" after "g" and of the end of the answer, and it reads the
# cross's colour from the picture: "g" is its first guess too (CE 0.03).
#
# The velocity loss is shown as an image: from the noised latent `x_t` and the predicted velocity `v`, one
# Euler step straight to t = 0 (`flow.euler_step`) gives the model's guess of the clean latent, which the
# autoencoder decodes. Most of the target can be copied from the source image in the context, and the
# guess does keep the layout, the background, the circle and the triangle; the toy autoencoder softens the
# shapes (a cross loses its corners). The model even makes the edit in this one step, the blue cross
# purple (a blue tip left), but it tints the red cross purple too, and the MSE map is brightest there.
# Sampling an image (tutorial 04) takes many small steps instead of one.

# %%
with torch.no_grad():
    hidden = out["hidden"]
    predicted_ids = model.llm.lm_head(hidden[batch.ce_indexes]).argmax(-1)
    velocity = model.llm2vae(hidden[batch.mse_indexes])
    noised_rows = out["timesteps"] > 0  # among the VAE tokens: those of the target
    t_target = out["timesteps"][noised_rows]
    noised = flow.add_noise(out["clean"][noised_rows], out["noise"][noised_rows], t_target)
    guess = flow.euler_step(noised, velocity, t_target[:, None], 0.0)
    h, w = batch.latent_grids[-1]
    p, z = config.latent_patch_size, config.vae.z_channels
    latent_tokens = [out["clean"][noised_rows], noised, guess]
    pictures = [autoencoder.decode(unpatchify(x, h, w, p, z)[None])[0] for x in latent_tokens]

for target, predicted, ce in zip(batch.label_ids.tolist(), predicted_ids.tolist(), out["ce"].tolist()):
    print(f"target {tokenizer.decode([target]) or '<|im_end|>'!r:14s} predicted "
          f"{tokenizer.decode([predicted]) or '<|im_end|>'!r:14s} CE {max(0.0, ce):.3f}")  # fmt: skip

fig, axes = plt.subplots(1, 4, figsize=(9, 2.4))
titles = ["target (autoencoded)", f"noised, t = {t_target[0]:.2f}", "one-step guess", "MSE per VAE token"]
for ax, picture, title in zip(axes, pictures, titles):
    ax.imshow(((picture.permute(1, 2, 0) + 1) / 2).clamp(0, 1), interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.axis("off")
cells = axes[3].imshow(out["mse"].mean(1).reshape(h, w), cmap="magma")
axes[3].set_title(titles[3], fontsize=9)
axes[3].axis("off")
fig.colorbar(cells, ax=axes[3], fraction=0.046)
fig.savefig(FIGURES / "01_velocity.png", dpi=120, bbox_inches="tight")
fig

# %% [markdown]
# ## Many samples per sequence
#
# In training (`train.py`) a stream of Shapes World tasks is packed into sequences under a token budget
# (`pack_by_budget`), and each step's loss is the forward pass above on such a sequence. Here are the
# losses of the toy model on a few packed sequences of 512 tokens, drawn with the training mix (four
# generation tasks for each understanding task) and with CFG dropout on, as in training.

# %%
world = shapes_world.task_stream(seed=1)
stream_rng = random.Random(1)
tasks = [next(world) for _ in range(12 if FAST else 48)]
samples = [shapes_world.to_sample(task, tokenizer.encode, stream_rng) for task in tasks]
train_config = PackConfig.for_model(config, tokenizer.special_ids)  # default CFG dropout 0.1 / 0.5 / 0.1
for packed in pack_by_budget(samples, train_config, max_tokens=512, rng=stream_rng):
    with torch.no_grad():
        step = model(packed, [autoencoder.encode(pixels[None])[0] for pixels in packed.vae_images])
    print(f"{len(packed.sample_lengths):2d} samples, {packed.sequence_length} tokens: "
          f"CE {step['ce_loss']:.3f}  MSE {step['mse_loss']:.3f}")  # fmt: skip

# %% [markdown]
# Each sequence holds several samples of different lengths. A sequence ends when the next sample would
# not fit the budget, so it may be shorter than 512 tokens; and the budget counts each sample before CFG
# dropout, so a dropped item shortens it further. Nothing in it is padding. The rest of the
# tutorials open the pieces one by one: the two experts (02), the attention mask that keeps samples and
# noised images apart (03), and so on.
