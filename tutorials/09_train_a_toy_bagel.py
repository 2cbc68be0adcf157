# %% [markdown]
# # 09 · Train a toy BAGEL on a CPU
#
# Everything so far comes together in `train.py`: Shapes World tasks are packed into token-budget batches,
# the MoT model takes one step on CE + MSE, an EMA of the weights is kept, and checkpoints are scored with
# MiniGenEval, MiniVQA and MiniEdit as training goes. Here we run it for a few minutes, watch both losses
# and the scores, and sample from the result next to the embedded toy model, which is this recipe run
# thirty times longer after a ViT stage, then fine-tuned, and end with the diagnostics that show what
# holds a toy model back. Paper section 3 (training recipe, Table 3).
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
# at 1.0, a linear warm-up and then a constant learning rate (so training can always go on; `--cooldown N`
# decays it linearly to zero over a run's last N steps, as the recipe's last stage does).

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
# A generated image needs an autoencoder. We pass the embedded model's, which is also what `train.py`
# uses for the toy preset when `--autoencoder` is not given (`python train.py --stage vae --out runs/ae`
# trains your own). The tokenizer is trained on Shapes World's texts when the run starts. Every
# `--checkpoint-every` steps train.py writes `OUT/step-N/` atomically, points `OUT/last` at it and, with
# `--eval-every 1`, scores it into `OUT/eval.csv`.

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
# slowly. MiniVQA wanders around 0.4, what answering from the question alone (`python -m
# bagel_mini.evaluate --blind`) scores: so far the model has learned which answers are common. The scores
# are those of the EMA weights, whose decay warms up (`train.ema_decay`) so that even a short run's
# average has forgotten its random start. Drawing the right shape in the right place is hard for a
# 4-layer model that has seen about a million tokens (1,200 steps of at most 1,024). Even the embedded
# model, trained 30x longer and fine-tuned, draws the asked shape for only about three single objects in
# five; the end of this tutorial shows what holds it back.
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
# After 1,200 steps the run draws one to three blobs of the palette's colours on a clean background: it
# has learned that pictures hold objects, not yet which ones a prompt asks for. The embedded model, thirty
# times longer trained and fine-tuned, draws a red circle, a blue square, three triangles (two green, one
# red) and, for the yellow circle left of the purple square, one yellow square: shapes and colours often,
# counts and relations rarely.
#
# ## What holds a toy model back
#
# The embedded model's pretraining losses end low, CE 0.105 (from 6.5) and flow MSE 0.15 (from 1.9) over its
# last 200 steps, yet after a fine-tuning stage it scores MiniGenEval 0.31 and MiniVQA 0.92 (its model card,
# `bagel_mini/default_model/README.md`, has the commands that made it, its scores and their errors):
#
# ![the embedded model's losses](figures/default_model_loss.png)
#
# A falling loss does not say what a model has learned. Finding out takes diagnostics: small experiments,
# each of which tells two explanations apart. These are the ones we ran on an earlier embedded model
# (the same recipe with 16-pixel latent tokens, 7,000 steps: MiniGenEval 0.047, MiniVQA 0.48) and its
# recipe (runs of 1 to 25 minutes, scored with their raw weights rather than the EMA; MiniVQA on its 200
# questions, so about ± 0.035, and about ± 0.09 on the 30 or so questions of one kind):
#
# 1. **Is it the measure?** Two reference points answer that before any model is scored.
#    `python -m bagel_mini.evaluate --blind` answers each question from its words alone and scores 0.42,
#    so a MiniVQA near 0.5 means little. `--autoencoder DIR` scores the ground truth after a round trip
#    through the autoencoder: 0.81 on MiniGenEval with the one shipped then (`--n 30`), against 0.03 for the
#    Bagel drawing through it. The autoencoder leaves room; the Bagel does not use it.
# 2. **Does the ViT see what the model fails to say?** A linear probe on the model's mean-pooled ViT
#    features tells a scene's background with accuracy 0.99 (fitted on 2,400 scenes, tested on 600), yet
#    the model answers the background question right 0.45 of the time. The information reaches the ViT;
#    the decoder does not read it out.
# 3. **The pathway, or the task mix?** A fresh model trained on background questions alone answers 45 new
#    ones all right after 400 steps. Trained on every kind of question and on captions (no generation)
#    for 1,500 steps, it still answers from the prior: MiniVQA 0.40, against 0.42 blind. So the pathway
#    works, and the many kinds of question at once hold it back. Given 6,000 such steps (25 minutes on
#    one thread) it reaches 0.52: every background right (29 of 29), but colours 0.31 and shapes 0.13.
# 4. **Can the ViT learn shapes at all?** Trained on "what shape is the X one?" alone for 1,000 steps,
#    the model's CE stays at chance (0.81, that is ln 5 over the answer's two tokens). Taught directly
#    (the toy ViT plus a linear head, single-object scenes, batches of 32, `lr` 1e-3), the ViT classifies
#    shapes at 30-60% for 2,000 steps, then suddenly learns them between steps 2,500 and 3,000 (about
#    95% from then on). The released BAGEL starts from a pre-trained SigLIP2 and Qwen2.5; the toy model
#    has to learn to see and to speak from scratch.
# 5. **Does a ViT that knows shapes fix it?** The same 1,500 understanding steps, started from that
#    shape-taught ViT (3,500 steps of it), reach MiniVQA 0.53 instead of 0.40, with the CE still falling
#    (0.62 against 0.71 over the last 250 steps): backgrounds 0.76 and counts 0.64, though shapes stay
#    at 0.20. In the default mix, where a fifth of the samples are understanding, 2,000 steps from that
#    ViT score the same as from scratch (0.39 against 0.38, both below the blind 0.42). A pre-trained toy
#    ViT, as SigLIP2 is for the real one, followed by an understanding-heavy first stage, is where to
#    look next: `train.py --stage vit` pretrains one with SigLIP's own loss and a per-patch loss, and `python -m
#    bagel_mini.recipe` runs it first and keeps it frozen after (the embedded model; its model card).
# 6. **Where do the blobs come from?** From a truly noised latent at t = 0.4, the generation expert's
#    one-step guess of the image is a sharp shape; from pure noise, the sampler commits to a blob by
#    t = 0.6 and the later steps keep it. The expert restores shapes but does not create them.
# 7. **Would more steps do?** Run on to 19,000 steps, the model learns to read backgrounds (1.00) and
#    counts (0.89) but not shapes (0.13), and MiniGenEval gains about 0.003 per 1,000 steps (the model
#    card's table).
# 8. **Is it the geometry?** At 64 pixels, a 16-pixel latent token holds a whole object's edge. Trained on
#    single objects alone, the same model with 8-pixel tokens (`latent_patch_size` 1: four times the tokens,
#    each a quarter of the values) drew the asked shape for 15 of 60 prompts against 11 in the same CPU
#    time, and 30 of 60 when run on to 4,600 steps (the model card's ladder). The toy preset now uses
#    8-pixel tokens: the default recipe with them scored MiniGenEval 0.047 -> 0.19, single objects 0.10 ->
#    0.45, MiniEdit 0.01 -> 0.125, but its ViT, trained from scratch, still named shapes at about chance.
# 9. **A ViT taught first, then frozen?** The recipe's pretraining is the answer to item 5: a ViT
#    pretrained by `train.py --stage vit` (11 minutes), kept frozen (`--freeze-vit`) through one and a half
#    times the steps. After that stage the model names shapes and colours (0.97 and 0.86 on those
#    questions, MiniVQA 0.805) and draws better (MiniGenEval 0.25). 8,000 more steps, half of them
#    questions, at a third of the rate (`python -m bagel_mini.recipe`'s last stage) take MiniVQA to 0.92
#    and MiniGenEval to 0.28.
# 10. **A latent easier to draw in?** An autoencoder trained to reconstruct alone puts much of its latent's
#    energy at high spatial frequencies, which a diffusion model draws last and worst. Fine-tuned with
#    scale equivariance (`train.py --stage vae --scale-equivariance 1`: the latent shrunk 2x or 4x must
#    decode to the image shrunk alike), it keeps half as much there, and the same recipe in its latent
#    draws single objects right 0.61 of the time, colours 0.75 (MiniGenEval 0.31, with twice the edits
#    in its last stage): the embedded model.
#    What holds it back now is drawing detail, and editing.
#
# ## Train further
#
# To train further, continue the same run exactly where it stopped (the model, optimiser and EMA are
# restored, and every random draw of a step is seeded by the step, so the data goes on as it would
# have): `python train.py --out OUT --resume --max-steps 3000`.
# For the toy preset `train.py` draws through the embedded model's autoencoder when `--autoencoder` is
# not given, as this run did.
