"""The embedded toy model from scratch in one command: BAGEL's recipe (paper section 3, Table 3) in miniature.

    python -m bagel_mini.recipe --out runs/recipe          # every stage (89 minutes on a shared 2-core CPU)
    python -m bagel_mini.recipe --out runs/recipe          # again: finished stages are skipped, one cut short resumes
    python sample.py --checkpoint runs/recipe/model         # the result, in the layout sample.py reads

BAGEL starts from pretrained parts (Qwen2.5, SigLIP2, the FLUX autoencoder) and trains them together in
four stages. The toy has no pretrained parts, so the recipe makes them first. Each stage is one
`train.py` run in OUT/<stage>; the next starts from its OUT/<stage>/last (`--init`):

    vae       the autoencoder (pixels <-> latents)
    lm        the language model on Shapes World texts; both MoT experts start from it
    vit       the ViT, with SigLIP's sigmoid image-text loss against a small text tower, and a per-patch loss
    align     the connector only (ViT and LLM frozen), on captions
    pretrain  everything, on the default mix (generation four times as often as understanding)
    continue  more interleaved tasks (edits, videos, reasoning)
    sft       editing, reasoning and questions weighted up, the learning rate decayed
    decoder   the autoencoder's decoder alone, sharper images from the same latents

OUT/model is then the sft checkpoint with the decoder-trained autoencoder: what bagel_mini/default_model holds.
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

# (stage, train.py flags, optimiser steps). The learning rates, warm-ups and step counts are what we ran.
RECIPE = [
    ("vae", ["--stage", "vae", "--lr", "2e-3", "--warmup", "50"], 500),
    ("lm", ["--stage", "lm", "--autoencoder", "{vae}", "--lr", "1e-3", "--warmup", "100"], 800),
    ("vit", ["--stage", "vit", "--init", "{lm}", "--lr", "2e-3", "--warmup", "50"], 300),
    ("align", ["--stage", "align", "--init", "{vit}", "--lr", "1e-3", "--warmup", "50"], 200),
    ("pretrain", ["--stage", "pretrain", "--init", "{align}", "--lr", "1e-3", "--warmup", "200"], 6000),
    # The toy stays at 64 px, so it keeps the pretraining timestep shift (the paper raises it with the resolution).
    ("continue", ["--stage", "continue", "--init", "{pretrain}", "--timestep-shift", "1", "--lr", "1e-3"], 800),
    ("sft", ["--stage", "sft", "--init", "{continue}", "--lr", "1e-3", "--cooldown", "800"], 800),
    ("decoder", ["--stage", "vae", "--autoencoder", "{vae}", "--decoder-only", "--lr", "5e-4", "--warmup", "50"], 300),
]
MODEL_FILES = ("ema.safetensors", "llm_config.json", "vit_config.json", "bagel_config.json", "tokenizer.json")


def finished(directory: Path, steps: int) -> bool:
    state = directory / "last" / "state.json"
    return state.exists() and json.loads(state.read_text())["step"] >= steps


def stage_arguments(flags: list[str], out: Path, directory: Path, steps: int) -> list[str]:
    """train.py's arguments for one stage: its flags with {stage} read as OUT/<stage>/last, and where it runs."""
    flags = [flag.format(**{name: str(out / name / "last") for name, _, _ in RECIPE}) for flag in flags]
    resume = ["--resume"] if (directory / "last").exists() else []
    return [*flags, "--out", str(directory), "--max-steps", str(steps), "--checkpoint-every", "1000", *resume]


def write_model(out: Path) -> Path:
    """OUT/model: the sft checkpoint's weights, configs and tokenizer with the decoder-trained autoencoder."""
    model, temporary = out / "model", out / ".model.tmp"
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir()
    for name in MODEL_FILES:
        shutil.copy(out / "sft" / "last" / name, temporary / name)
    shutil.copy(out / "decoder" / "ae.safetensors", temporary / "ae.safetensors")
    shutil.rmtree(model, ignore_errors=True)  # the recipe's own output of an earlier run
    temporary.rename(model)
    return model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bagel_mini.recipe", description=__doc__.split("\n")[0], formatter_class=HelpFormatter
    )
    parser.add_argument("--out", required=True, help="the recipe's directory: a run per stage, then OUT/model")
    parser.add_argument("--quick", action="store_true", help="two steps per stage: check that it runs")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    for number, (name, flags, steps) in enumerate(RECIPE, start=1):
        steps = 2 if args.quick else steps
        directory = out / name
        if finished(directory, steps):
            print(f"[{number}/{len(RECIPE)}] {name}: done ({directory})")
            continue
        if directory.exists() and not (directory / "last").exists():  # stopped before its first checkpoint
            shutil.rmtree(directory)
        print(f"[{number}/{len(RECIPE)}] {name}: {steps} steps in {directory}", flush=True)
        if subprocess.run([sys.executable, str(TRAIN), *stage_arguments(flags, out, directory, steps)]).returncode:
            sys.exit(f"error: stage {name} stopped (its message is above); run the same command again to resume")
    model = write_model(out)
    print(f"wrote {model} ({(time.perf_counter() - began) / 60:.1f} minutes); python sample.py --checkpoint {model}")


if __name__ == "__main__":
    main()
