# %% [markdown]
# # 10 · The released weights
#
# BAGEL-7B-MoT is published as a directory of json configs, a tokenizer and two safetensors files. Here we
# read that layout without loading a weight, map its key names onto ours, work out how much memory the
# model needs, and then load and run it. Without the real weights (about 30 GB) the tutorial uses a tiny
# checkpoint that the **official** code wrote in the released layout, with random weights; set
# `BAGEL_CHECKPOINT=/path/to/BAGEL-7B-MoT` to run the same cells on the real ones. Paper section 2.1
# (the model: Qwen2.5 LLM, SigLIP2 ViT, FLUX autoencoder); README "Running the released BAGEL-7B-MoT".
#
# Runs in about 5 s on a 2-core CPU; `BAGEL_FAST=1` for a quick pass.

# %%
import collections
import inspect
import os
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch

import bagel_mini
from bagel_mini import checkpoint
from bagel_mini.config import load_config_dir, preset
from bagel_mini.inference import ImageSettings, Inferencer
from bagel_mini.tokenizer import BagelTokenizer

FAST = os.environ.get("BAGEL_FAST") == "1"  # CI's fast mode: the same cells on less data, in seconds
FIGURES = Path(os.environ.get("BAGEL_FIGURES", Path(bagel_mini.__file__).parents[1] / "tutorials" / "figures"))
FIGURES.mkdir(parents=True, exist_ok=True)
torch.set_num_threads(1)  # toy-sized tensors gain little from a second thread; one stays fast on a busy CPU

TINY = Path(bagel_mini.__file__).parents[1] / "tests" / "fixtures" / "official_tiny"
CHECKPOINT = Path(os.environ.get("BAGEL_CHECKPOINT", TINY))
REAL = CHECKPOINT != TINY
print("checkpoint:", CHECKPOINT, "(the released weights)" if REAL else "(tiny, random weights, official layout)")

# %% [markdown]
# ## What is in the directory
#
# `llm_config.json` and `vit_config.json` are the Qwen2.5 and SigLIP configs as Hugging Face writes them.
# The release has no autoencoder config: the official loader hard-codes FLUX's parameters. The tiny
# fixture listed below adds a `bagel_config.json` because its autoencoder is not FLUX's size, and so do
# the checkpoints `train.py` writes. `ema.safetensors` holds the Bagel weights (the EMA of training),
# `ae.safetensors` the FLUX autoencoder; the tokenizer comes as `tokenizer.json` or as `vocab.json` +
# `merges.txt`.

# %%
for path in sorted(CHECKPOINT.iterdir()):
    if path.name.startswith("cases"):  # the tiny fixture's test cases, not part of the released layout
        continue
    print(f"{path.name:28s} {path.stat().st_size / 2**10:12,.1f} KiB")

# %% [markdown]
# ## A safetensors header: every name, shape and dtype, without reading a weight
#
# A safetensors file starts with 8 bytes giving the length of a json header; the header gives each
# tensor's dtype, shape and byte range. So we can check a 30 GB file against the model in milliseconds.

# %%
print(inspect.getsource(checkpoint.read_header))

# %%
header, data_start = checkpoint.read_header(CHECKPOINT / "ema.safetensors")
dtypes = collections.Counter(entry["dtype"] for entry in header.values())
print(f"{len(header)} tensors, dtypes {dict(dtypes)}, data starts at byte {data_start}")
for key in [k for k in header if k.startswith("language_model.model.layers.0.")][:8]:
    print(f"  {key:70s} {header[key]['shape']}")

# %% [markdown]
# ## Our names and the released names
#
# Inside a decoder layer the release names the generation expert's copy of a weight by appending
# `_moe_gen` (`self_attn.q_proj_moe_gen`). Our modules group each expert's weights instead
# (`llm.layers.0.gen.attn.q_proj`), so that "the generation expert" is one object you can point at
# (tutorial 02). `KEY_TABLE` in `checkpoint.py` maps one naming to the other, rule by rule:

# %%
print(inspect.getsource(checkpoint.released_name))

# %%
config = load_config_dir(CHECKPOINT)
meta_model, meta_autoencoder = checkpoint.build_meta(config)  # shapes only: no memory, no random init
names = checkpoint.released_names(meta_model)
for ours in [n for n in names if n.startswith("llm.layers.0.")][:8]:
    print(f"{ours:42s} -> {names[ours]}")
print("every released key has exactly one of ours:", set(names.values()) == set(header))

# %% [markdown]
# ## The 7B model on the meta device
#
# The `bagel-7b-mot` preset builds the released architecture. On the meta device a module has shapes but
# no storage, so we can count its parameters on a laptop: 14.6 billion in `ema.safetensors`, 14.7 with
# the autoencoder. The test suite checks that its
# key names and shapes equal the release exactly (`tests/fixtures/bagel-7b-mot-keys.json`).


# %%
def parameter_groups(model, autoencoder) -> dict[str, int]:
    """Parameter counts by the part of BAGEL they belong to."""
    groups = collections.Counter()
    for name, tensor in model.state_dict().items():
        if ".und." in name or name.startswith("llm.norm."):
            part = "LLM, understanding expert"
        elif ".gen." in name or name.startswith("llm.norm_gen"):
            part = "LLM, generation expert"
        elif name.startswith(("llm.embed_tokens", "llm.lm_head")):
            part = "token embeddings + LM head"
        elif name.startswith("vit."):
            part = "SigLIP ViT"
        else:
            part = "connectors, time and position embeddings"
        groups[part] += tensor.numel()
    groups["FLUX autoencoder"] = sum(t.numel() for t in autoencoder.state_dict().values())
    return dict(groups)


big = preset("bagel-7b-mot")
groups = parameter_groups(*checkpoint.build_meta(big))
for part, count in groups.items():
    print(f"{part:42s} {count / 1e9:7.3f} B")
total = sum(groups.values())
print(f"{'total':42s} {total / 1e9:7.3f} B")

# %% [markdown]
# Each token runs through one expert, so a token "sees" about half of the LLM: that is the "7B active,
# 14B total" of the model card. Memory is another matter: every weight must be resident, because a
# sequence mixes both kinds of token. In bfloat16 (2 bytes a weight):

# %%
bf16 = {part: count * 2 / 2**30 for part, count in groups.items()}
fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [1.4, 1]})
parts = list(bf16)
left.barh(parts, [groups[p] / 1e9 for p in parts], color=plt.cm.tab10(range(len(parts))))
left.set_xlabel("parameters (billions)")
left.set_title("BAGEL-7B-MoT by part")
left.invert_yaxis()
bottom = 0.0
for index, part in enumerate(parts):
    right.bar(0, bf16[part], bottom=bottom, color=plt.cm.tab10(index), width=0.5)
    if bf16[part] > 3:  # name the large parts; the colours are those of the left panel
        name = part.split(", ")[-1]
        right.text(0, bottom + bf16[part] / 2, f"{name}\n{bf16[part]:.1f} GiB", ha="center", va="center", fontsize=7)
    bottom += bf16[part]
for gigabytes, label in [(24, "24 GB GPU"), (40, "40 GB"), (80, "80 GB")]:
    right.axhline(gigabytes * 1e9 / 2**30, color="grey", linestyle="--", linewidth=0.8)
    right.text(0.3, gigabytes * 1e9 / 2**30, label, va="bottom", fontsize=8)
right.set_xlim(-0.5, 1.0)
right.set_xticks([])
right.set_ylabel("GiB of weights in bfloat16")
right.set_title(f"{bottom:.1f} GiB to hold (plus activations)")
fig.tight_layout()
fig.savefig(FIGURES / "10_memory_plan.png", dpi=120, bbox_inches="tight")
fig

# %% [markdown]
# So a 24 GB GPU cannot hold it in bfloat16. `sample.py --weights fp8` stores the decoder layers' Linear
# weights in 8 bits (`bagel_mini/weights8.py`): 16.3 GB in all, which fits. `--offload` keeps the decoder
# layers in CPU memory and moves each to the GPU only while it runs (slow, but it fits smaller GPUs), and
# the GPU memory check in `load_checkpoint` names the mode that fits before anything is read. On a CPU
# the weights would need twice their bfloat16 size in float32.
#
# ## Loading: meta device, memory map, one tensor at a time
#
# Loading never builds random weights and never holds two copies: the modules start on the meta device,
# each tensor is read through a memory map and cast on its own, and its pages are released once copied.

# %%
print(inspect.getsource(checkpoint.load_checkpoint))

# %%
if REAL and not torch.cuda.is_available():
    needed = checkpoint.weight_bytes((meta_model, meta_autoencoder), torch.float32)
    raise SystemExit(f"no GPU: the real weights need {checkpoint.readable_bytes(needed)} in float32 on the CPU")
device = "cuda" if torch.cuda.is_available() else "cpu"
dtype = torch.bfloat16 if device == "cuda" else torch.float32
start = time.perf_counter()
model, autoencoder = checkpoint.load_checkpoint(CHECKPOINT, dtype=dtype, device=device)
print(f"loaded in {time.perf_counter() - start:.2f} s")

key = "language_model.model.layers.0.self_attn.q_proj_moe_gen.weight"
stored = checkpoint.read_tensors(CHECKPOINT / "ema.safetensors", [key], dtype, device)[key]
ours = model.llm.layers[0].gen.attn.q_proj.weight
print("the generation expert's query projection equals the file:", torch.equal(ours, stored))

# %% [markdown]
# ## Running it
#
# The same `Inferencer` as in tutorial 08 drives the loaded model. On the tiny random checkpoint the
# answer is gibberish and the image is noise: the point is that the released layout loads and runs end to
# end. With `BAGEL_CHECKPOINT` set, the same cells answer and draw for real (use a GPU).

# %%
tokenizer = BagelTokenizer.from_dir(CHECKPOINT)
engine = Inferencer(model, autoencoder, tokenizer, tokenizer.special_ids)
answer = engine.interleave(["What is a bagel?"], understanding=True, max_think_tokens=8 if FAST else 24)[0]
print("answer:", repr(answer))

size = (1024, 1024) if REAL else (64, 64)
settings = ImageSettings(num_timesteps=4 if FAST else (50 if REAL else 12))
image = engine.interleave(["a bagel on a plate"], image_size=size, settings=settings, seed=0)[-1]
fig, ax = plt.subplots(figsize=(3, 3))
ax.imshow(image)
ax.set_title("a bagel on a plate" + ("" if REAL else "\n(random tiny weights)"), fontsize=9)
ax.axis("off")
fig.savefig(FIGURES / "10_sample.png", dpi=120, bbox_inches="tight")
fig

# %% [markdown]
# To go further: `checkpoint.released_keys(preset("bagel-7b-mot"))` lists every released key and
# shape our model reads, and `python -m bagel_mini.bench load` measures the peak memory of a load against the
# size of the weights (README, "Running the released BAGEL-7B-MoT").
