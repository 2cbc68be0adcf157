# %% [markdown]
# # 02 · Mixture of Transformers: dense, MoE and MoT
#
# BAGEL gives every decoder layer two sets of weights: an *understanding* expert for text and ViT tokens
# and a *generation* expert for VAE tokens, with one self-attention over all of them. You will see which
# parts of a layer each variant of the paper's ablation (dense, MoE, MoT) gives the generation expert,
# which tokens go where, why the experts still talk to each other, and how the parameter count nearly
# doubles at 7B while the FLOPs per token stay the same. Paper: section 2.4 and Figure 2.
#
# Runs in about 7 s on a 2-core CPU; `BAGEL_FAST=1` for a quick pass.

# %%
import copy
import inspect
import os
import random
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from matplotlib.patches import Patch
from torch.utils.flop_counter import FlopCounterMode

import bagel_mini
from bagel_mini import mot, shapes_world
from bagel_mini.cfg import NO_DROPOUT
from bagel_mini.checkpoint import load_checkpoint
from bagel_mini.config import preset
from bagel_mini.model import Bagel
from bagel_mini.navit import PackConfig, pack
from bagel_mini.tokenizer import BagelTokenizer

FAST = os.environ.get("BAGEL_FAST") == "1"  # CI's fast mode: the same cells on less data, in seconds
FIGURES = Path(os.environ.get("BAGEL_FIGURES", Path(bagel_mini.__file__).parents[1] / "tutorials" / "figures"))
FIGURES.mkdir(parents=True, exist_ok=True)

torch.manual_seed(0)
torch.set_num_threads(1)  # toy-sized tensors gain little from a second thread; one stays fast on a busy CPU

# %% [markdown]
# ## Four parts per layer, and who owns them
#
# A Qwen2 decoder layer has four parts: a norm before attention, the attention weights (q/k/v/o
# projections, plus the q/k norms BAGEL adds to Qwen2), a norm before the MLP, and the MLP. The three
# variants differ only in which parts the generation expert has its own copy of (`mot.GENERATION_PARTS`):
#
# - **dense**: none, every token uses the same weights (a plain transformer);
# - **MoE**: the MLP (plus a final norm), so attention weights are shared;
# - **MoT** (BAGEL): all four parts (plus a final norm): two full transformers that share one attention.
#
# In all three variants the routing is fixed by the token's modality; there is no learned router as in a
# classic Mixture of Experts.

# %%
print("parts of a layer:", mot.PARTS)
for arch, parts in mot.GENERATION_PARTS.items():
    print(f"{arch:5s} generation expert owns: {parts or 'nothing'}")

# %% [markdown]
# A layer builds the understanding expert with all four parts and the generation expert with its share;
# `experts` returns the two modules of a part, the same module twice when the part is shared.

# %%
print(inspect.getsource(mot.DecoderLayer.__init__))
print(inspect.getsource(mot.DecoderLayer.experts))

models = {arch: Bagel(preset("toy", arch)) for arch in mot.GENERATION_PARTS}
for arch, model in models.items():
    layer = model.llm.layers[0]
    shared = [part for part in mot.PARTS if layer.experts(part)[0] is layer.experts(part)[1]]
    final_norm = model.llm.norm_gen is not None
    print(f"{arch:5s} layer 0: gen owns {list(layer.gen)}, shared {shared}; own final norm: {final_norm}")

# %% [markdown]
# ## Which token goes to which expert
#
# Routing follows the packed batch's `is_gen`: VAE tokens (the latents of an image to generate, or of a
# clean image given as context) go to the generation expert; text, ViT tokens and the markers around
# images go to the understanding expert. `Route` holds the two lists of row indexes, and the order that
# sorts the sequence by expert: the understanding rows, then the generation rows. We pack three
# Shapes World samples, a text-to-image prompt, an edit and a question, with the embedded toy model's
# tokenizer (tutorial 01 follows such a batch in detail).

# %%
print(inspect.getsource(mot.Route.from_mask))

trained, autoencoder = load_checkpoint(bagel_mini.DEFAULT_MODEL)  # the embedded toy MoT model
tokenizer = BagelTokenizer.from_dir(bagel_mini.DEFAULT_MODEL)
rng = random.Random(0)
tasks = [
    shapes_world.text_to_image(rng, tag="colors"),
    shapes_world.edit(rng, kind="recolor"),
    shapes_world.question(rng, kind="color"),
]
samples = [shapes_world.to_sample(task, tokenizer.encode, rng) for task in tasks]
pack_config = PackConfig.for_model(trained.config, tokenizer.special_ids, dropout=NO_DROPOUT)
batch = pack(samples, pack_config, random.Random(0))
route = mot.Route.from_mask(batch.is_gen)
print(f"{batch.sequence_length} tokens: {len(route.und)} to the understanding expert, {len(route.gen)} to generation")
print("generation rows:", route.gen.tolist())

# %% [markdown]
# The decoder sorts the sequence by expert once, before its first layer (`x[route.order]`), and puts the
# final hidden states back in sequence order after its last (`route.inverse`). In between, each part runs
# through `run_experts`: the understanding module on the first slice of rows, the generation module on
# the rest, the two outputs joined again. When one module serves all rows (a shared part in dense or MoE)
# it runs once over the whole sequence. Sorting once is what makes the routing cheap: gathering each
# part's rows and scattering them back instead gives the same numbers, and makes a toy training step 13%
# to 19% slower.

# %%
print(inspect.getsource(mot.run_experts))

# %% [markdown]
# We can watch it happen: a forward hook on the MLPs of the first layer records how many rows each
# receives. In dense, one MLP sees every token; in MoE and MoT the generation MLP sees exactly the VAE
# tokens. (These toy models are freshly initialised: routing does not depend on the weights.)


# %%
def remember_rows(seen: dict, name: str):
    def hook(module, args, output):  # returns None, so the output is left as it is
        seen[name] = len(args[0])

    return hook


with torch.no_grad():
    latents = [autoencoder.encode(pixels[None])[0] for pixels in batch.vae_images]
for arch, model in models.items():
    seen = {}
    und_mlp, gen_mlp = model.llm.layers[0].experts("mlp")
    mlps = {"shared": und_mlp} if und_mlp is gen_mlp else {"und": und_mlp, "gen": gen_mlp}
    hooks = [module.register_forward_hook(remember_rows(seen, name)) for name, module in mlps.items()]
    with torch.no_grad():
        model(batch, latents)
    for hook in hooks:
        hook.remove()
    print(f"{arch:5s} rows through the layer-0 MLP: {seen}")

# %% [markdown]
# ## Hard routing, shared attention
#
# The decoder layer makes it plain: each part goes through `run_experts`, but the attention between them
# (`attend`) is one softmax over the queries, keys and values of *all* tokens. So a text token never runs
# the generation expert's weights, yet it reads, through attention, the keys and values that the
# generation expert computed for the VAE tokens it may see.

# %%
print(inspect.getsource(mot.DecoderLayer.forward))

# %% [markdown]
# A concrete check on the trained toy model: nudge every weight of the generation expert a little and see
# which rows of the final hidden states move. VAE rows move (they run those weights), understanding rows
# that attend to a VAE image move too (they read its keys and values), and rows that see no VAE token
# (the prompt before its image, the whole question sample) do not move at all.

# %%
torch.manual_seed(0)
noise = torch.randn(len(batch.vae_indexes), trained.config.patch_latent_dim)  # the same flow noise for both runs
nudged = copy.deepcopy(trained)
with torch.no_grad():
    for name, parameter in nudged.named_parameters():
        if ".gen." in name or "norm_gen" in name:
            parameter.add_(0.01 * torch.randn_like(parameter))
    before = trained(batch, latents, noise)["hidden"]
    after = nudged(batch, latents, noise)["hidden"]
change = (after - before).norm(dim=1) / before.norm(dim=1)
moved_und = [row for row in route.und.tolist() if change[row] > 0]
print(f"rows that moved: {int((change[route.gen] > 0).sum())} of {len(route.gen)} generation rows, "
      f"{len(moved_und)} of {len(route.und)} understanding rows")  # fmt: skip

fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 3.4), sharex=True, gridspec_kw={"height_ratios": [1, 3]})
colours = ["tab:pink" if gen else "tab:cyan" for gen in batch.is_gen.tolist()]
top.bar(range(batch.sequence_length), 1, width=1.0, color=colours)
top.set_yticks([])
top.set_ylabel("expert", fontsize=8)
bottom.bar(range(batch.sequence_length), change.clamp(min=1e-9), width=1.0, color=colours)
bottom.set_yscale("log")
bottom.set_ylim(1e-4, 1)
bottom.set_ylabel("relative change of\nthe final hidden state", fontsize=8)
bottom.set_xlabel("position in the packed sequence (no bar: no change at all)")
starts = [0, *torch.tensor(batch.sample_lengths).cumsum(0).tolist()]
for axis in (top, bottom):
    for boundary in starts[1:-1]:
        axis.axvline(boundary - 0.5, color="black", linewidth=2)
    axis.set_xlim(-0.5, batch.sequence_length - 0.5)
for start, end, name in zip(starts, starts[1:], ["text to image", "edit", "question"]):
    top.text((start + end) / 2, 1.15, name, ha="center", va="bottom", fontsize=9)
handles = [Patch(color="tab:cyan", label="understanding"), Patch(color="tab:pink", label="generation")]
fig.legend(handles=handles, loc="center left", bbox_to_anchor=(0.9, 0.5), fontsize=8, frameon=False)
fig.savefig(FIGURES / "02_routing.png", dpi=120, bbox_inches="tight")
fig

# %% [markdown]
# In the text-to-image sample the prompt comes first and text is causal, so it cannot see the image: it
# does not move. In the edit, the clean source image comes first and everything after it reads it. The
# question sample has no VAE token, and samples never see each other (tutorial 03), so it is untouched.
#
# ## Parameters: toy and 7B
#
# Counting is cheap for the toy models. For the released size we build the model on PyTorch's `meta`
# device: every tensor has a shape but no memory and no values, so a 14.6B-parameter model costs nothing
# to "build". We split the decoder (`llm`) into the weights a text token uses (embeddings, the
# understanding expert, its final norm, `lm_head`) and the generation expert's own copies.


# %%
def count(model: Bagel) -> dict[str, int]:
    """Parameters of the whole model, of the decoder, and of the decoder's generation expert."""
    named = dict(model.named_parameters())
    generation = sum(p.numel() for name, p in named.items() if ".gen." in name or "norm_gen" in name)
    decoder = sum(p.numel() for name, p in named.items() if name.startswith("llm."))
    return {"total": sum(p.numel() for p in named.values()), "decoder": decoder, "generation": generation}


counts = {"toy": {arch: count(model) for arch, model in models.items()}}
with torch.device("meta"):
    counts["7B"] = {arch: count(Bagel(preset("bagel-7b-mot", arch))) for arch in mot.GENERATION_PARTS}
for size, by_arch in counts.items():
    for arch, numbers in by_arch.items():
        print(f"{size:3s} {arch:5s} total {numbers['total']:>14,}  decoder {numbers['decoder']:>14,}  "
              f"of which generation expert {numbers['generation']:>13,}")  # fmt: skip

# %% [markdown]
# At 7B the MoT decoder stores 14.1B parameters (14.6B with SigLIP and the connectors), almost twice the
# dense one, yet a text token uses the same 7.6B as in dense Qwen2.5-7B, and a VAE token runs layers of
# exactly the same shapes. The MoE variant sits between: attention is shared, the MLP (most of a layer's
# weights) is not.
#
# ## FLOPs per token: the same for all three
#
# Each token runs exactly one expert's copy of each part, and the two copies have the same shapes. So the
# work per token does not depend on the variant. Forward FLOPs of one token in one layer:
#
# - projections and MLP: 2 FLOPs (a multiply and an add) per weight of q, k, v, o, gate, up, down;
# - attention: `q k^T` and the weighted sum of values, 2 x 2 x (keys seen) x heads x head_dim.
#
# PyTorch's `FlopCounterMode` counts the first kind in a real forward pass (it does not see inside the
# CPU attention kernel). On the toy models it agrees with the formula, for all three variants alike:


# %%
def projection_flops_per_token(llm_config) -> int:
    """2 FLOPs per weight of the q/k/v/o projections and the SwiGLU MLP, summed over the layers."""
    hidden, heads, kv_heads, head_dim = (
        llm_config.hidden_size, llm_config.num_attention_heads, llm_config.num_key_value_heads, llm_config.head_dim
    )  # fmt: skip
    attention_weights = hidden * heads * head_dim * 2 + hidden * kv_heads * head_dim * 2  # q and o; k and v
    mlp_weights = 3 * hidden * llm_config.intermediate_size
    return 2 * (attention_weights + mlp_weights) * llm_config.num_hidden_layers


def attention_flops_per_token(llm_config, keys: int) -> int:
    """q k^T and the weighted sum of values, for a query that attends to `keys` tokens, summed over the layers."""
    return 2 * 2 * keys * llm_config.num_attention_heads * llm_config.head_dim * llm_config.num_hidden_layers


hidden_in = torch.randn(batch.sequence_length, models["mot"].config.llm.hidden_size)
mask = torch.ones(batch.sequence_length, batch.sequence_length, dtype=torch.bool)  # the mask does not change the count
for arch, model in models.items():
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.llm(hidden_in, batch.position_ids, batch.is_gen, mask)
    print(f"{arch:5s} counted {counter.get_total_flops() / batch.sequence_length:>9,.0f} FLOPs per token")
print(f"formula     {projection_flops_per_token(models['mot'].config.llm):>9,} FLOPs per token")

# %% [markdown]
# The same count at 7B, for a token that attends to 1,024 keys (a long interleaved sample). `lm_head` is
# left out: it runs only at the rows that predict text. Measured step times agree: `python -m bagel_mini.bench step`
# times a forward and backward pass of the toy MoT, MoE and dense models on one packed batch (the
# README reports MoT / dense = 0.99 on a 2-core CPU).

# %%
context = 1024
llm_7b = preset("bagel-7b-mot").llm
flops_7b = {
    "projections and MLP": projection_flops_per_token(llm_7b),
    "attention": attention_flops_per_token(llm_7b, context),
}
print({name: f"{value / 1e9:.1f} GFLOPs" for name, value in flops_7b.items()}, "per token, any variant")

# %% [markdown]
# One picture of the three variants: what the generation expert owns, what the decoder stores at 7B,
# and what one token costs.

# %%
ARCHS = list(mot.GENERATION_PARTS)
OWN, SHARED = "tab:pink", "0.85"
fig, (ax_parts, ax_params, ax_flops) = plt.subplots(1, 3, figsize=(12, 3.4), gridspec_kw={"width_ratios": [1.3, 1, 1]})

columns = [*mot.PARTS, "final norm"]
for y, arch in enumerate(ARCHS):
    layer, owns_final_norm = models[arch].llm.layers[0], models[arch].llm.norm_gen is not None
    for x, part in enumerate(columns):
        owned = owns_final_norm if part == "final norm" else part in layer.gen
        ax_parts.add_patch(plt.Rectangle((x + 0.05, y + 0.05), 0.9, 0.9, color=OWN if owned else SHARED))
ax_parts.set_xlim(0, len(columns))
ax_parts.set_ylim(len(ARCHS), 0)
ax_parts.set_xticks([x + 0.5 for x in range(len(columns))], [c.replace("_", "\n") for c in columns], fontsize=8)
ax_parts.set_yticks([y + 0.5 for y in range(len(ARCHS))], ARCHS)
ax_parts.tick_params(length=0)
ax_parts.set_frame_on(False)
ax_parts.set_title("parts the generation expert owns", fontsize=10)
ax_parts.legend(
    handles=[Patch(color=OWN, label="own copy"), Patch(color=SHARED, label="shared")],
    loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2, fontsize=8, frameon=False,
)  # fmt: skip

big = counts["7B"]
used = [(big[arch]["decoder"] - big[arch]["generation"]) / 1e9 for arch in ARCHS]
generation = [big[arch]["generation"] / 1e9 for arch in ARCHS]
ax_params.bar(ARCHS, used, color="tab:cyan", label="used by a text token")
ax_params.bar(ARCHS, generation, bottom=used, color=OWN, label="generation expert's own")
for x, (a, b) in enumerate(zip(used, generation)):
    ax_params.text(x, a + b + 0.2, f"{a + b:.1f}B", ha="center", fontsize=9)
ax_params.set_ylim(0, 19)
ax_params.set_ylabel("billions of parameters")
ax_params.set_title("decoder parameters at 7B", fontsize=10)
ax_params.legend(fontsize=8, loc="upper left", frameon=False)

stacked = 0
for (name, value), colour in zip(flops_7b.items(), ["tab:cyan", "tab:olive"]):
    ax_flops.bar(ARCHS, [value / 1e9] * len(ARCHS), bottom=stacked, color=colour, label=name)
    stacked += value / 1e9
for x in range(len(ARCHS)):
    ax_flops.text(x, stacked + 0.3, f"{stacked:.1f}", ha="center", fontsize=9)
ax_flops.set_ylim(0, stacked * 1.35)
ax_flops.set_ylabel("GFLOPs per token (forward)")
ax_flops.set_title(f"cost of one token at 7B ({context} keys)", fontsize=10)
ax_flops.legend(fontsize=8, loc="upper left", frameon=False)
fig.tight_layout()
fig.savefig(FIGURES / "02_experts.png", dpi=120, bbox_inches="tight")
fig

# %% [markdown]
# So MoT buys capacity, not compute: twice the weights, the same FLOPs per token, and the same step time
# as a dense model of the same width. Memory is what it costs: the 7B MoT needs 29 GB for its weights in
# bfloat16 (tutorial 10). The next tutorial opens the other half of the picture, the shared attention and
# its generalized causal mask.
