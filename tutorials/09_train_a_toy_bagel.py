# %% [markdown]
# # 09 · Train a toy BAGEL on a CPU
#
# Everything so far comes together in `train.py`: Shapes World tasks are packed into token-budget
# batches, the MoT model takes one step on CE + MSE, an EMA of the weights is kept, and checkpoints are
# scored with MiniGenEval, MiniVQA and MiniEdit as training goes. Here we run it for a few minutes, watch
# both losses and the scores, and sample from the result next to the embedded toy model, which is the same
# recipe run six times longer. Paper section 3 (training recipe, Table 3).
#
# Runs in about 7 minutes on a 2-core CPU (most of it training); `BAGEL_FAST=1` for a quick pass.

# %%
import csv
import inspect
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch

import bagel_mini
from bagel_mini import DEFAULT_MODEL, shapes_world
from bagel_mini.checkpoint import load_checkpoint
from bagel_mini.inference import ImageSettings, Inferencer
from bagel_mini.tokenizer import BagelTokenizer

FAST = os.environ.get("BAGEL_FAST") == "1"  # CI's fast mode: the same cells on less data, in seconds
FIGURES = Path(os.environ.get("BAGEL_FIGURES", Path(bagel_mini.__file__).parents[1] / "tutorials" / "figures"))
FIGURES.mkdir(parents=True, exist_ok=True)
torch.set_num_threads(1)  # toy-sized tensors gain little from a second thread; one stays fast on a busy CPU

ROOT = Path(bagel_mini.__file__).parents[1]  # train.py is a script at the repository root
sys.path.insert(0, str(ROOT))
import train  # imported to read its pieces; we run it as a script below

# %% [markdown]
# ## The recipe
#
# The paper's optimiser: AdamW with betas (0.9, 0.95), eps 1e-15 and no weight decay, gradients clipped
# at 1.0, a linear warm-up and then a constant learning rate (no decay, so training can always go on).

# %%
print(inspect.getsource(train.make_optimizer))
print(inspect.getsource(train.learning_rate))

# %% [markdown]
# The loss of a step is `0.25 * CE + 1.0 * MSE` (paper Table 3's CE:MSE ratio): `Bagel.forward`
# returns both (tutorial 01). The generation tasks (text to image, editing, "video" frames, reasoning)
# make up 80% of the data, the understanding tasks (captions, VQA) 20%: the paper found that sampling
# generation data more often helps.

# %%
print(shapes_world.DEFAULT_MIX)

# %% [markdown]
# ## Run it
#
# A generated image needs an autoencoder, so we borrow the one of the embedded model (training one is
# `python train.py --stage vae`, README "Training"). The tokenizer is trained on Shapes World's texts
# when the run starts. Every `--checkpoint-every` steps train.py writes `OUT/step-N/` atomically, points
# `OUT/last` at it and, with `--eval-every 1`, scores it into `OUT/eval.csv`.

# %%
steps, every, eval_n = (4, 2, 1) if FAST else (1200, 300, 10)
out = Path(tempfile.mkdtemp(prefix="bagel-tutorial-09-")) / "run"
command = [
    sys.executable, str(ROOT / "train.py"), "--autoencoder", str(DEFAULT_MODEL), "--out", str(out),
    "--max-steps", str(steps), "--checkpoint-every", str(every), "--eval-every", "1", "--eval-n", str(eval_n),
    "--lr", "1e-3", "--warmup", "2" if FAST else "100",
]  # fmt: skip
print(" ".join(command[1:]))
start = time.perf_counter()
subprocess.run(command, check=True)
print(f"trained {steps} steps in {time.perf_counter() - start:.0f} s; the run is in {out}")

# %% [markdown]
# ## Both losses and the scores


# %%
def read_csv(path: Path) -> dict[str, list[float]]:
    rows = list(csv.DictReader(path.read_text().splitlines()))
    return {name: [float(row[name]) for row in rows] for name in rows[0]}


losses, scores = read_csv(out / "loss.csv"), read_csv(out / "eval.csv")
fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
for ax, name in zip(axes[:2], ("ce", "mse")):
    ax.plot(losses["step"], losses[name], linewidth=0.6, alpha=0.5)
    window = max(1, len(losses[name]) // 20)  # a running mean, to see the trend through the noise
    smooth = torch.tensor(losses[name]).unfold(0, window, 1).mean(1)
    ax.plot(losses["step"][window - 1 :], smooth, linewidth=1.5)
    ax.set_title(f"{name.upper()} loss" + (" (text)" if name == "ce" else " (velocity)"))
    ax.set_xlabel("step")
    ax.set_yscale("log")
for name, label in [("geneval_overall", "MiniGenEval"), ("vqa", "MiniVQA"), ("edit", "MiniEdit")]:
    axes[2].plot(scores["step"], scores[name], marker="o", label=label)
axes[2].set_ylim(-0.05, 1.05)
axes[2].set_xlabel("step")
axes[2].set_title(f"scores ({eval_n} prompts per category)")
axes[2].legend()
fig.tight_layout()
fig.savefig(FIGURES / "09_training.png", dpi=120, bbox_inches="tight")
fig

# %% [markdown]
# The CE loss falls fast: captions and answers are short sentences of a small grammar. The MSE falls
# slowly. MiniVQA rises first, but mostly because the model learns which answers are common: answering
# from the question alone (`python -m bagel_mini.evaluate --blind`) scores about 0.4 as well. The scores
# are those of the EMA weights, which after N steps still hold a share 0.999^N of the initial weights
# (30% at step 1,200). Drawing the right shape in the right place is hard for a 4-layer model that has
# seen about a million tokens (1,200 steps of at most 1,024). Even the embedded model, trained 6x longer,
# scores low (README "The embedded toy model" gives its scores and what limits it).
#
# ## Sample from both

# %%
prompts = ["a red circle", "a blue square", "two green triangles", "a yellow circle left of a purple square"]
settings = ImageSettings(num_timesteps=6 if FAST else 25)
fig, axes = plt.subplots(2, len(prompts), figsize=(2.2 * len(prompts), 4.8))
for row, (directory, name) in enumerate([(out / "last", f"this run ({steps} steps)"), (DEFAULT_MODEL, "embedded")]):
    model, autoencoder = load_checkpoint(directory)
    tokenizer = BagelTokenizer.from_dir(directory)
    engine = Inferencer(model, autoencoder, tokenizer, tokenizer.special_ids)
    for column, prompt in enumerate(prompts):
        image = engine.interleave([prompt], image_size=(64, 64), settings=settings, seed=column)[-1]
        axes[row, column].imshow(image)
        axes[row, column].set_xticks([])
        axes[row, column].set_yticks([])
    axes[row, 0].set_ylabel(name)
for ax, prompt in zip(axes[0], prompts):
    ax.set_title(prompt, fontsize=8)
fig.tight_layout()
fig.savefig(FIGURES / "09_samples.png", dpi=120, bbox_inches="tight")
fig

# %% [markdown]
# After 1,200 steps the run draws scattered, many-coloured blobs on a noisy background: it has learned
# the palette and that pictures hold objects, not yet which ones a prompt asks for. The embedded model,
# six times longer trained, draws one or two smooth blobs on a clean background, often in the colour
# the prompt names, but still not the shapes.
#
# To train further, continue the same run exactly where it stopped (the model, optimiser, EMA, data
# position and random state are all restored): `python train.py --autoencoder ... --out OUT --resume
# --max-steps 3000`. The README's section "The embedded toy model" gives the commands that made the
# embedded model.
