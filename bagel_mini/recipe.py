"""The embedded toy model from scratch in one command: the stages that made bagel_mini/default_model.

    python -m bagel_mini.recipe --out runs/recipe                    # vit, pretrain, finetune: 85-150 min on 2 cores
    python -m bagel_mini.recipe --out runs/recipe                    # again: done stages skipped, a cut one resumed
    python -m bagel_mini.recipe --out runs/recipe --autoencoder-too  # the autoencoder first as well
    python sample.py --checkpoint runs/recipe/model                  # the result, in the layout sample.py reads

BAGEL starts from pretrained parts (Qwen2.5, SigLIP2, the FLUX autoencoder) and trains them together in
stages (paper Table 3). The toy has no pretrained ViT, so the recipe makes one first. Each stage is one
`train.py` run in OUT/<stage>, a later one reading an earlier one's OUT/<stage>/last:

    vit        the ViT alone: SigLIP's sigmoid image-text loss against a small text tower, and a per-patch loss
    pretrain   the whole Bagel from scratch with that ViT, kept frozen, on the default mix (generation four
               times as often as understanding), the learning rate decayed to zero over the last 6,000 steps
    finetune   8,000 more steps from pretrain's EMA weights at a third of the rate, half of the tasks questions
               (BAGEL's last stage, SFT, also trains at a lower rate on more understanding) and 0.3 edits
               (the model card: fewer edits drew better and edited worse); seed 1, so its data is another
               stream of scenes, not pretraining's first 8,000 steps again

BAGEL takes the FLUX autoencoder as it is, and the recipe takes the toy's from bagel_mini/default_model;
`--autoencoder-too` makes it first, as it was made: `vae` (the autoencoder), then its decoder alone twice
(`decoder`, `decoder2`: sharper images from the same latents), then the whole of it again with scale
equivariance (`smooth`: smoother latents, which a Bagel learns to draw in more easily). BAGEL's other stages
(`train.py --stage lm`, `align`, `continue`, `sft`) are not in the recipe: the one run with them, at 16-pixel
latent tokens, scored lower, and they are untried with this model (the model card). OUT/model is then the last
stage's checkpoint, what default_model holds.
`--quick` runs two steps of each stage (to check that the recipe runs).
"""

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bagel_mini.flags import HelpFormatter

TRAIN = Path(__file__).parents[1] / "train.py"

# (stage, train.py flags, optimiser steps): what made the embedded model. {stage} reads OUT/<stage>/last.
DECODER = ["--stage", "vae", "--decoder-only", "--lr", "5e-4", "--warmup", "50"]  # keeps the encoder, so the latents
SMOOTH = ["--stage", "vae", "--scale-equivariance", "1", "--lr", "5e-4", "--warmup", "50"]  # encoder and decoder
AUTOENCODER = [
    ("vae", ["--stage", "vae", "--lr", "2e-3", "--warmup", "50"], 800),
    ("decoder", [*DECODER, "--autoencoder", "{vae}"], 600),
    ("decoder2", [*DECODER, "--autoencoder", "{decoder}"], 1500),
    ("smooth", [*SMOOTH, "--autoencoder", "{decoder2}"], 800),
]
FINETUNE_MIX = "vqa=0.5,text_to_image=0.15,edit=0.3,reasoning=0.05"  # BAGEL's SFT leans to understanding too
FINETUNE_RATE = ["--lr", "3e-4", "--warmup", "100", "--cooldown", "3000"]  # a third of pretraining's rate
BAGEL = [
    ("vit", ["--stage", "vit", "--lr", "1e-3", "--warmup", "50"], 9000),
    ("pretrain", ["--vit", "{vit}", "--freeze-vit", "--warmup", "200", "--cooldown", "6000"], 36000),
    ("finetune", ["--init", "{pretrain}", "--freeze-vit", "--seed", "1", "--mix", FINETUNE_MIX, *FINETUNE_RATE], 8000),
]
MODEL_FILES = ("ema.safetensors", "ae.safetensors", "llm_config.json", "vit_config.json", "bagel_config.json")
MODEL_FILES += ("tokenizer.json",)


def stages(autoencoder_too: bool) -> list[tuple[str, list[str], int]]:
    """The recipe's stages in order; with the autoencoder made first, pretraining draws through its last version
    (and fine-tuning too: --init takes pretraining's)."""
    if not autoencoder_too:
        return BAGEL
    through = ["--autoencoder", "{smooth}"]
    return AUTOENCODER + [
        (name, [*flags, *through] if name == "pretrain" else flags, steps) for name, flags, steps in BAGEL
    ]


def check_same_recipe(out: Path, flags: dict) -> None:
    """A second call continues the first, so it must be the same recipe: resumed with other flags, a stage
    would go on from weights another recipe made (a --quick ViT under a full pretraining, say)."""
    record = out / "recipe.json"
    if record.exists():
        started = json.loads(record.read_text())
        changed = ", ".join(f"--{name.replace('_', '-')}" for name in flags if started.get(name) != flags[name])
        if changed:
            message = f"holds a recipe started with other flags ({changed}): give the same, or a new --out"
            sys.exit(f"error: --out {out} {message}")
    elif any(out.iterdir()):
        sys.exit(f"error: --out {out} is not empty and holds no recipe.json: give an empty or new directory")
    else:
        record.write_text(json.dumps(flags) + "\n")


def finished(directory: Path, steps: int) -> bool:
    state = directory / "last" / "state.json"
    return state.exists() and json.loads(state.read_text())["step"] >= steps


def stage_arguments(flags: list[str], out: Path, directory: Path, steps: int) -> list[str]:
    """train.py's arguments for one stage: its flags with {stage} read as OUT/<stage>/last, and where it runs."""
    names = {name: str(out / name / "last") for name, _, _ in AUTOENCODER + BAGEL}
    flags = [flag.format(**names) for flag in flags]
    resume = ["--resume"] if (directory / "last").exists() else []
    return [*flags, "--out", str(directory), "--max-steps", str(steps), "--checkpoint-every", "1000", *resume]


def write_model(out: Path, last: Path) -> Path:
    """OUT/model: the last stage's weights, autoencoder, configs and tokenizer, what sample.py reads."""
    model, temporary = out / "model", out / ".model.tmp"
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir()
    for name in MODEL_FILES:
        shutil.copy(last / name, temporary / name)
    shutil.rmtree(model, ignore_errors=True)  # the recipe's own output of an earlier run
    temporary.rename(model)
    return model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bagel_mini.recipe", description=__doc__.split("\n")[0], formatter_class=HelpFormatter
    )
    parser.add_argument("--out", required=True, help="the recipe's directory: a run per stage, then OUT/model")
    parser.add_argument(
        "--autoencoder-too", action="store_true", help="make the autoencoder first (else: the embedded one)"
    )
    parser.add_argument("--quick", action="store_true", help="two steps per stage: check that it runs")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    check_same_recipe(out, {"autoencoder_too": args.autoencoder_too, "quick": args.quick})
    began = time.perf_counter()
    recipe = stages(args.autoencoder_too)
    for number, (name, flags, steps) in enumerate(recipe, start=1):
        steps = 2 if args.quick else steps
        directory = out / name
        if finished(directory, steps):
            print(f"[{number}/{len(recipe)}] {name}: done ({directory})")
            continue
        if directory.exists() and not (directory / "last").exists():  # stopped before its first checkpoint
            shutil.rmtree(directory)
        print(f"[{number}/{len(recipe)}] {name}: {steps} steps in {directory}", flush=True)
        if subprocess.run([sys.executable, str(TRAIN), *stage_arguments(flags, out, directory, steps)]).returncode:
            sys.exit(f"error: stage {name} stopped (its message is above); run the same command again to resume")
    model = write_model(out, out / recipe[-1][0] / "last")
    print(f"wrote {model} ({(time.perf_counter() - began) / 60:.1f} minutes); python sample.py --checkpoint {model}")


if __name__ == "__main__":
    main()
