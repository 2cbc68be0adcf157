"""The paper's findings in miniature: one command each, curves on fixed validation sets, and a verdict.

    python -m bagel_mini.ablate mot-vs-dense            # Figure 3: dense, MoE and MoT, 3 seeds
    python -m bagel_mini.ablate data-ratio              # Figure 5: generation : understanding 1:1, 2:1, 4:1
    python -m bagel_mini.ablate lr                      # Figure 6: three learning rates, then loss weights
    python -m bagel_mini.ablate NAME --quick            # a few steps of everything (to check that it runs)

Each finding trains its variants with train.py on Shapes World, on identical data: the same seed gives
every variant the same batches, CFG drops, timesteps and noise, and only the variant's flags differ.
A run trains in segments; after each, its raw weights are scored on fixed validation sets, never on
the training loss:
- understanding: the mean CE of the answer tokens of 64 fixed questions and captions;
- generation: the velocity MSE per latent value of 64 fixed text-to-image samples at t = 0.3, 0.6 and 0.9
  (posterior-mean latents, one fixed noise), averaged over the three.
OUT/NAME/results.json holds every point and the verdict, OUT/NAME/curves.png the curves (mean over
seeds, the band from the lowest to the highest seed). Stopped, a finding resumes where it was: finished
segments are kept in results.json and train.py resumes its run exactly.
"""

import argparse
import csv
import json
import random
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from tqdm import tqdm

from bagel_mini import checkpoint, shapes_world
from bagel_mini.cfg import NO_DROPOUT
from bagel_mini.config import load_config_dir, preset, write_json_atomic
from bagel_mini.data import ShapesData
from bagel_mini.flags import HelpFormatter
from bagel_mini.flow import raw_timestep
from bagel_mini.images import patchify, to_tensor
from bagel_mini.model import Bagel
from bagel_mini.navit import PackConfig, Text, VaeImage, pack
from bagel_mini.tokenizer import BagelTokenizer

TRAIN = Path(__file__).parents[1] / "train.py"
VALIDATION_SIZE, VALIDATION_TIMES = 64, (0.3, 0.6, 0.9)
COMMON = ["--tokens", "1024", "--warmup", "100", "--keep", "1"]  # every run of every finding


@dataclass
class Finding:
    claim: str  # the paper's, in a sentence
    variants: dict[str, list[str]]  # name -> train.py flags
    seeds: int
    steps: int
    segments: int  # validation points along each run


FINDINGS = {
    "mot-vs-dense": Finding(
        "At the same FLOPs per token, MoT reaches a lower generation loss than MoE and dense, with an "
        "understanding loss no worse (Figure 3; generation sampled 4 : 1)",
        {"dense": ["--arch", "dense"], "moe": ["--arch", "moe"], "mot": ["--arch", "mot"]},
        seeds=3,
        steps=1500,
        segments=5,
    ),
    "data-ratio": Finding(
        "More generation data (4 : 1 over 1 : 1) lowers the generation loss, the understanding loss barely "
        "changes (Figure 5)",
        {"1:1": ["--gen-ratio", "1"], "2:1": ["--gen-ratio", "2"], "4:1": ["--gen-ratio", "4"]},
        seeds=2,
        steps=2000,
        segments=5,
    ),
    "lr": Finding(
        "A larger learning rate lowers the generation loss faster, a smaller one gives the lower "
        "understanding loss; weighting the losses apart balances the two (Figure 6)",
        {
            "lr 3e-4": ["--lr", "3e-4"],
            "lr 1e-3": ["--lr", "1e-3"],
            "lr 3e-3": ["--lr", "3e-3"],
            "lr 3e-3, CE weight 1": ["--lr", "3e-3", "--ce-weight", "1"],
        },
        seeds=2,
        steps=1500,
        segments=5,
    ),
}


# ---------------------------------------------------------------------------------------------
# The fixed validation sets


def validation_samples(tokenizer: BagelTokenizer, image_size: int) -> tuple[list, list]:
    """64 understanding samples (questions and captions) and 64 text-to-image samples, the same every time."""
    rng = random.Random("ablation validation")
    understanding, generation = [], []
    for index in range(VALIDATION_SIZE):
        kind = "caption" if index % 4 == 0 else None
        task = shapes_world.question(rng, image_size, kind)
        understanding.append(shapes_world.to_sample(task, tokenizer.encode, rng))
        prompt = shapes_world.text_to_image(rng, image_size)
        generation.append((prompt.prompt, to_tensor(prompt.image)))
    return understanding, generation


@torch.no_grad()
def validation_losses(run: Path, image_size: int) -> dict[str, float]:
    """The run's raw weights (OUT/last/model.safetensors) on the validation sets: CE and velocity MSE."""
    directory = run / "last"
    config = load_config_dir(directory)
    tokenizer = BagelTokenizer.from_dir(directory)
    autoencoder = checkpoint.load_autoencoder(directory)
    model = Bagel(config)
    model.load_state_dict(load_file(directory / "model.safetensors"))
    model.eval()
    pack_config = PackConfig.for_model(config, tokenizer.special_ids, dropout=NO_DROPOUT)
    understanding, generation = validation_samples(tokenizer, image_size)
    ce = model(pack(understanding, pack_config, random.Random(0)), [])["ce"]
    samples = [[Text(tokenizer.encode(prompt)), VaeImage(pixels, loss=True)] for prompt, pixels in generation]
    batch = pack(samples, pack_config, random.Random(0))
    latents = list(autoencoder.encode_mean(torch.stack([pixels for _, pixels in generation])))
    noise_generator = torch.Generator().manual_seed(0)
    noise = torch.cat(
        [patchify(torch.randn(latent.shape, generator=noise_generator), config.latent_patch_size) for latent in latents]
    )
    mse = []
    for t in VALIDATION_TIMES:
        batch.raw_timesteps = torch.full_like(batch.raw_timesteps, raw_timestep(t, config.timestep_shift))
        mse.append(model(batch, latents, noise=noise)["mse"].mean().item())
    return {"ce": ce.mean().item(), "mse": statistics.mean(mse)}


# ---------------------------------------------------------------------------------------------
# Running a finding


def shared_tokenizer(directory: Path, preset_name: str) -> Path:
    """The toy tokenizer every run of a finding would train (the same corpus, so the same one), trained once."""
    if not (directory / "tokenizer.json").exists():
        vocab_size = preset(preset_name).llm.vocab_size
        directory.mkdir(parents=True, exist_ok=True)
        BagelTokenizer.train(ShapesData(64).texts(), vocab_size).save(directory)
    return directory


def run_segment(run: Path, flags: list[str], seed: int, step: int, every: int, preset: str, device: str | None):
    """train.py on to `step` (a new run, or resumed exactly): one subprocess, its progress bar shown."""
    command = [sys.executable, str(TRAIN), *COMMON, *flags, "--seed", str(seed), "--preset", preset]
    command += ["--tokenizer", str(shared_tokenizer(run.parents[1] / "tokenizer", preset))]
    command += ["--out", str(run), "--max-steps", str(step), "--checkpoint-every", str(every)]
    command += ["--device", device] if device else []
    command += ["--resume"] if (run / "last").exists() else []
    if subprocess.run(command).returncode:
        sys.exit(f"error: {run} stopped (its message is above); run the same command again to resume")


def tokens_seen(run: Path) -> int:
    """The tokens the run has trained on so far: the sum of train.py's per-step log (OUT/loss.csv)."""
    return sum(int(row["tokens"]) for row in csv.DictReader((run / "loss.csv").read_text().splitlines()))


def final_scores(run: Path, n: int, image_size: int, steps: int) -> dict:
    from bagel_mini.evaluate import model_scores

    scores = model_scores(str(run / "last"), n, seed=0, image_size=image_size, steps=steps, max_tokens=32)
    return {"geneval": scores["geneval"]["overall"], "vqa": scores["vqa"], "edit": scores["edit"], "n": n}


def run_finding(name: str, out: Path, quick: bool, preset: str, device: str | None) -> dict:
    finding = FINDINGS[name]
    steps, segments, seeds = (2, 1, 1) if quick else (finding.steps, finding.segments, finding.seeds)
    every, image_size = steps // segments, 64
    score_n, score_steps = (1, 3) if quick else (10, 25)  # prompts per category, sampling steps
    directory = out / name
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {"finding": name, "claim": finding.claim, "runs": {}}
    results.update(steps=steps, seeds=seeds, tokens_per_step=1024, quick=quick)
    runs = [(variant, seed) for variant in finding.variants for seed in range(seeds)]
    progress = tqdm(total=len(runs) * segments, desc=name, position=0)
    for variant, seed in runs:
        key = f"{variant} / seed {seed}"
        record = results["runs"].setdefault(key, {"variant": variant, "seed": seed, "curve": []})
        run = directory / "runs" / f"{variant.replace(' ', '_').replace(',', '').replace(':', '-')}_seed{seed}"
        progress.update(len(record["curve"]))
        for segment in range(len(record["curve"]) + 1, segments + 1):
            began = time.perf_counter()
            run_segment(run, finding.variants[variant], seed, segment * every, every, preset, device)
            point = {"step": segment * every, "tokens": tokens_seen(run), "seconds": time.perf_counter() - began}
            record["curve"].append({**point, **validation_losses(run, image_size)})
            write_json_atomic(path, results, overwrite=True)
            progress.update(1)
        if "scores" not in record:
            record["parameters"] = sum(t.numel() for t in load_file(run / "last" / "model.safetensors").values())
            record["scores"] = final_scores(run, score_n, image_size, score_steps)
            write_json_atomic(path, results, overwrite=True)
    progress.close()
    results["summary"] = summarise(results, finding)
    results["verdict"] = verdict(name, results["summary"])
    write_json_atomic(path, results, overwrite=True)
    plot(results, finding, directory / "curves.png")
    return results


def summarise(results: dict, finding: Finding) -> dict:
    """Per variant: the final CE and MSE (mean, and the spread between seeds), step time, parameters, scores."""
    summary = {}
    for variant in finding.variants:
        records = [r for r in results["runs"].values() if r["variant"] == variant]
        finals = {loss: [r["curve"][-1][loss] for r in records] for loss in ("ce", "mse")}
        seconds = [sum(p["seconds"] for p in r["curve"]) / r["curve"][-1]["step"] for r in records]
        summary[variant] = {
            **{loss: statistics.mean(values) for loss, values in finals.items()},
            **{f"{loss}_spread": max(values) - min(values) for loss, values in finals.items()},
            "seconds_per_step": statistics.mean(seconds),
            "parameters": records[0]["parameters"],
            "geneval": statistics.mean(r["scores"]["geneval"] for r in records),
            "vqa": statistics.mean(r["scores"]["vqa"] for r in records),
        }
    return summary


def verdict(name: str, summary: dict) -> dict:
    """What came out, in a sentence, and whether it agrees with the paper's claim."""
    mse = {variant: values["mse"] for variant, values in summary.items()}
    ce = {variant: values["ce"] for variant, values in summary.items()}
    spread = max(values["mse_spread"] for values in summary.values())
    listed = ", ".join(f"{variant} {mse[variant]:.4f} (CE {ce[variant]:.3f})" for variant in summary)
    if name == "mot-vs-dense":
        rival = min((variant for variant in mse if variant != "mot"), key=mse.get)
        gap = mse[rival] - mse["mot"]
        ce_spread = max(values["ce_spread"] for values in summary.values())
        # Agreement needs a gap clear of the seeds' noise, and a CE within that noise of the best other's.
        agrees = gap > spread and ce["mot"] <= min(ce[v] for v in ce if v != "mot") + ce_spread
        text = (
            f"final validation MSE {listed}; MoT is {'below' if gap > 0 else 'above'} the best other ({rival}) "
            f"by {abs(gap):.4f}, {abs(gap) / spread:.1f}x the largest spread between seeds ({spread:.4f})"
            if spread
            else f"final validation MSE {listed}; one seed, so no spread to compare with"
        )
    elif name == "data-ratio":
        gap = mse["1:1"] - mse["4:1"]
        agrees = min(mse, key=mse.get) == "4:1" and gap > spread
        text = (
            f"final validation MSE {listed}; 4:1 is {'below' if gap > 0 else 'above'} 1:1 by {abs(gap):.4f} "
            f"(seeds up to {spread:.4f} apart); the CE ranges over {max(ce.values()) - min(ce.values()):.3f}"
        )
    else:
        rates = [variant for variant in summary if "weight" not in variant]
        largest, smallest = rates[-1], rates[0]
        agrees = min(rates, key=mse.get) == largest and min(rates, key=ce.get) == smallest
        remedy = next(variant for variant in summary if "weight" in variant)
        text = (
            f"final validation MSE {listed}; lowest MSE at {min(rates, key=mse.get)}, lowest CE at "
            f"{min(rates, key=ce.get)}; {remedy} moves the CE by {ce[remedy] - ce[largest]:+.3f} and the MSE "
            f"by {mse[remedy] - mse[largest]:+.4f} against {largest} (seeds up to {spread:.4f} apart in MSE)"
        )
    return {"text": text, "agrees": agrees}


def plot(results: dict, finding: Finding, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for variant in finding.variants:
        records = [r for r in results["runs"].values() if r["variant"] == variant]
        points = range(len(records[0]["curve"]))
        tokens = [statistics.mean(r["curve"][i]["tokens"] for r in records) / 1e6 for i in points]
        for ax, loss in zip(axes, ("ce", "mse")):
            values = [[r["curve"][i][loss] for r in records] for i in points]
            ax.plot(tokens, [statistics.mean(v) for v in values], marker="o", markersize=3, label=variant)
            if len(records) > 1:
                ax.fill_between(tokens, [min(v) for v in values], [max(v) for v in values], alpha=0.2)
    for ax, title in zip(axes, ("understanding: validation CE", "generation: validation velocity MSE")):
        ax.set_title(title)
        ax.set_xlabel("tokens seen (millions)")
        ax.legend()
    figure.suptitle(f"{results['finding']}: {results['verdict']['text'][:110]}...", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bagel_mini.ablate", description=__doc__.split("\n")[0], formatter_class=HelpFormatter
    )
    parser.add_argument("name", choices=sorted(FINDINGS), help="the finding")
    parser.add_argument("--out", default="runs/ablate", help="results go to OUT/NAME/")
    parser.add_argument("--quick", action="store_true", help="a few steps of everything, one seed")
    parser.add_argument("--preset", default="toy", help="model size (train.py --preset)")
    parser.add_argument("--device", help="train.py --device (default: cuda if available)")
    args = parser.parse_args(argv)
    results = run_finding(args.name, Path(args.out), args.quick, args.preset, args.device)
    agreement = "agrees with" if results["verdict"]["agrees"] else "disagrees with"
    print(f"{args.name}: {results['verdict']['text']}")
    print(f"this {agreement} the paper: {results['claim']}")
    print(f"wrote {Path(args.out) / args.name / 'results.json'} and curves.png")


if __name__ == "__main__":
    main()
