"""The paper's findings in miniature: one command each, curves on fixed validation sets, and a verdict.

    python -m bagel_mini.ablate mot-vs-dense            # Figure 3: dense, MoE and MoT, 3 seeds
    python -m bagel_mini.ablate data-ratio              # Figure 5: generation : understanding 1:1, 2:1, 4:1
    python -m bagel_mini.ablate lr                      # Figure 6: three learning rates, then loss weights
    python -m bagel_mini.ablate vit-context             # Figure 7 (iii): editing from VAE tokens, or VAE + ViT
    python -m bagel_mini.ablate emergence               # Figure 7 (i-ii): when each ability appears
    python -m bagel_mini.ablate think                   # Table 6: reasoning prompts with and without think mode
    python -m bagel_mini.ablate NAME --quick            # a few steps of everything (to check that it runs)

Each training finding trains its variants with train.py on Shapes World, on identical data: the same seed
gives every variant the same batches, CFG drops, timesteps and noise, and only the variant's flags differ.
A run trains in segments; after each, the run is measured on fixed sets, never on its training loss:
validation losses of its raw weights (validation.py), or for `emergence` the benchmark scores of its EMA
weights (evaluate.py). `think` trains nothing: it scores a checkpoint (the embedded model by default).

OUT/NAME/results.json holds every point and the verdict, OUT/NAME/curves.png the plot (the mean over seeds,
the band from the lowest to the highest seed). Stopped, a finding resumes where it was: finished segments
are kept in results.json and train.py resumes its run exactly.
"""

import argparse
import csv
import json
import math
import random
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from safetensors.torch import load_file
from tqdm import tqdm

from bagel_mini import DEFAULT_MODEL, evaluate, shapes_world
from bagel_mini.config import preset, write_json_atomic
from bagel_mini.data import ShapesData
from bagel_mini.flags import HelpFormatter, at_least
from bagel_mini.inference import ImageSettings
from bagel_mini.shapes_world.detection import detect
from bagel_mini.shapes_world.scoring import geneval_correct, vqa_accuracy
from bagel_mini.tokenizer import BagelTokenizer
from bagel_mini.validation import LOSSES, think_losses, validation_losses

TRAIN = Path(__file__).parents[1] / "train.py"
IMAGE_SIZE, SAMPLING_STEPS = 64, 25
COMMON = ["--tokens", "1024", "--warmup", "100", "--keep", "1"]  # every run of every finding
# The default mix with reasoning edits, for the editing findings: generation : understanding still 4 : 1.
EDIT_MIX = "text_to_image=0.4,edit=0.2,reasoning_edit=0.1,reasoning=0.05,video=0.05,vqa=0.15,caption=0.05"


@dataclass
class Finding:
    claim: str  # the paper's, in a sentence
    variants: dict[str, list[str]]  # name -> train.py flags
    seeds: int
    steps: int
    segments: int  # measured points along each run
    curves: tuple[str, ...] = ("ce", "mse")  # what each point measures: validation LOSSES or SCORES
    final: tuple[str, ...] = ("geneval", "vqa", "edit")  # SCORES at the end of each run
    n: int = 10  # prompts, questions or edits behind each score


SCORES = ("geneval", "vqa", "edit", "reasoning_edit")

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
    "vit-context": Finding(
        "Giving the source image to the ViT as well as the VAE improves editing, most of all the edits that "
        "need reasoning (Figure 7, iii)",
        {
            "VAE + ViT": ["--mix", EDIT_MIX],
            "VAE only": ["--mix", EDIT_MIX, "--edit-context", "vae"],
        },
        seeds=2,
        steps=2000,
        segments=4,
        curves=("edit_mse", "reasoning_edit_mse"),
        final=("edit", "reasoning_edit"),
        n=50,
    ),
    "emergence": Finding(
        "Abilities appear in order as training goes on: understanding and generation first, then editing, "
        "and the edits that need reasoning last (Figure 7, i-ii)",
        {"default mix and reasoning edits": ["--mix", EDIT_MIX]},
        seeds=1,
        steps=12000,
        segments=6,
        curves=SCORES,
        final=(),
        n=30,
    ),
}
THINK_CLAIM = "Thinking before drawing (think mode) raises the score of prompts that need reasoning (Table 6)"
THINK_N = 100
PEAK_SHARE = 0.85  # emergence: an ability has appeared once it reaches this share of its peak


# ---------------------------------------------------------------------------------------------
# Measuring a run


def ability_scores(directory: Path, names: tuple[str, ...], n: int, steps: int, edit_vit: bool) -> dict[str, float]:
    """The scores `names` (of SCORES) of a checkpoint's EMA weights: n prompts per MiniGenEval category,
    n MiniVQA questions, n MiniEdit edits, n reasoning edits; edits from VAE (and ViT) tokens."""
    if not names:
        return {}
    engine = evaluate.load_inferencer(str(directory))
    prompts, questions, edits = evaluate.benchmark(n, seed=0, image_size=IMAGE_SIZE)
    scores = {}
    if "geneval" in names:
        scores["geneval"] = evaluate.geneval_results(engine, prompts, IMAGE_SIZE, steps)["overall"]
    if "vqa" in names:
        scores["vqa"] = vqa_accuracy(evaluate.answers(engine, questions, 32), [q.answer for q in questions])
    if "edit" in names:
        scores["edit"] = evaluate.edit_score(engine, edits, IMAGE_SIZE, steps, edit_vit)
    if "reasoning_edit" in names:
        reasoning = evaluate.reasoning_edits(n, seed=0, image_size=IMAGE_SIZE)
        scores["reasoning_edit"] = evaluate.edit_score(engine, reasoning, IMAGE_SIZE, steps, edit_vit)
    return scores


def measure(run: Path, names: tuple[str, ...], n: int, steps: int, edit_vit: bool) -> dict[str, float]:
    losses = tuple(name for name in names if name in LOSSES)
    measured = validation_losses(run, losses, IMAGE_SIZE, edit_vit) if losses else {}
    scores = ability_scores(run / "last", tuple(name for name in names if name in SCORES), n, steps, edit_vit)
    return {**measured, **scores}


def tokens_seen(run: Path) -> int:
    """The tokens the run has trained on so far: the sum of train.py's per-step log (OUT/loss.csv)."""
    return sum(int(row["tokens"]) for row in csv.DictReader((run / "loss.csv").read_text().splitlines()))


# ---------------------------------------------------------------------------------------------
# Running a finding


def shared_tokenizer(directory: Path, preset_name: str) -> Path:
    """The toy tokenizer every run would train (the same corpus, so the same one), trained once per OUT."""
    if not (directory / "tokenizer.json").exists():
        vocab_size = preset(preset_name).llm.vocab_size
        directory.mkdir(parents=True, exist_ok=True)
        BagelTokenizer.train(ShapesData(64).texts(), vocab_size).save(directory)
    return directory


def run_segment(run: Path, flags: list[str], seed: int, step: int, every: int, preset: str, device: str | None):
    """train.py on to `step` (a new run, or resumed exactly): one subprocess, its progress bar shown."""
    command = [sys.executable, str(TRAIN), *COMMON, *flags, "--seed", str(seed), "--preset", preset]
    command += ["--tokenizer", str(shared_tokenizer(run.parents[2] / "tokenizer", preset))]  # run: OUT/NAME/runs/RUN
    command += ["--out", str(run), "--max-steps", str(step), "--checkpoint-every", str(every)]
    command += ["--device", device] if device else []
    command += ["--resume"] if (run / "last").exists() else []
    if subprocess.run(command).returncode:
        sys.exit(f"error: {run} stopped (its message is above); run the same command again to resume")


def run_finding(
    name: str, out: Path, quick: bool, preset: str, device: str | None, steps: int | None, seeds: int | None
) -> dict:
    finding = FINDINGS[name]
    segments = 1 if quick else finding.segments
    steps = 2 if quick else steps or finding.steps
    seeds = 1 if quick else seeds or finding.seeds
    if steps < segments:
        sys.exit(f"error: --steps {steps}: {name} measures each run {segments} times, so it needs at least {segments}")
    n, sampling = (1, 3) if quick else (finding.n, SAMPLING_STEPS)  # scores: prompts and sampling steps
    every = steps // segments
    directory = out / name
    path = directory / "results.json"
    settings = {"steps": steps, "seeds": seeds, "quick": quick, "preset": preset}
    results = json.loads(path.read_text()) if path.exists() else {"finding": name, "claim": finding.claim, "runs": {}}
    if results["runs"] and any(results.get(key) != value for key, value in settings.items()):
        ran = ", ".join(f"{key} {results.get(key)}" for key in settings)
        sys.exit(f"error: {path} holds a run with {ran}; to resume it give the same flags, else another --out")
    directory.mkdir(parents=True, exist_ok=True)
    results.update(**settings, tokens_per_step=1024)
    runs = [(variant, seed) for variant in finding.variants for seed in range(seeds)]
    progress = tqdm(total=len(runs) * segments, desc=name, position=0)
    for variant, seed in runs:
        key, flags = f"{variant} / seed {seed}", finding.variants[variant]
        edit_vit = "--edit-context" not in flags  # its one other value: edits from VAE tokens alone
        record = results["runs"].setdefault(key, {"variant": variant, "seed": seed, "curve": []})
        run = directory / "runs" / f"{variant.replace(' ', '_').replace(',', '').replace(':', '-')}_seed{seed}"
        progress.update(len(record["curve"]))
        for segment in range(len(record["curve"]) + 1, segments + 1):
            began = time.perf_counter()
            run_segment(run, flags, seed, segment * every, every, preset, device)
            point = {"step": segment * every, "tokens": tokens_seen(run), "seconds": time.perf_counter() - began}
            record["curve"].append({**point, **measure(run, finding.curves, n, sampling, edit_vit)})
            write_json_atomic(path, results, overwrite=True)
            progress.update(1)
        if "scores" not in record:
            record["parameters"] = sum(t.numel() for t in load_file(run / "last" / "model.safetensors").values())
            record["scores"] = {**ability_scores(run / "last", finding.final, n, sampling, edit_vit), "n": n}
            write_json_atomic(path, results, overwrite=True)
    progress.close()
    results["summary"] = summarise(results, finding, n)
    results["verdict"] = verdict(name, results["summary"])
    write_json_atomic(path, results, overwrite=True)
    plot(results, finding, directory / "curves.png")
    return results


def summarise(results: dict, finding: Finding, n: int) -> dict:
    """Per variant: the final value of each curve (mean, and the spread between seeds), step time, parameters,
    final scores; for emergence, each ability's first and peak score and the tokens it took to appear."""
    summary = {}
    for variant in finding.variants:
        records = [r for r in results["runs"].values() if r["variant"] == variant]
        finals = {curve: [r["curve"][-1][curve] for r in records] for curve in finding.curves}
        seconds = [sum(p["seconds"] for p in r["curve"]) / r["curve"][-1]["step"] for r in records]
        summary[variant] = {
            **{curve: statistics.mean(values) for curve, values in finals.items()},
            **{f"{curve}_spread": max(values) - min(values) for curve, values in finals.items()},
            **{f"{curve}_seeds": values for curve, values in finals.items()},  # seed 0, 1, ...: paired by data
            "seconds_per_step": statistics.mean(seconds),
            "parameters": records[0]["parameters"],
            **{score: statistics.mean(r["scores"][score] for r in records) for score in finding.final},
        }
        if finding.curves == SCORES:
            counts = {score: n * len(shapes_world.GENEVAL_TAGS) if score == "geneval" else n for score in SCORES}
            summary[variant]["abilities"] = {
                score: appearance(records[0]["curve"], score, counts[score]) for score in SCORES
            }
    return summary


def standard_error(p: float, n: int) -> float:
    """A share's binomial standard error; at 0 or 1, as if one answer in n had differed (not 0)."""
    return math.sqrt(max(p * (1 - p), 1 / n) / n)


def appearance(curve: list[dict], score: str, n: int) -> dict:
    """When an ability appeared: the tokens at which it first reached PEAK_SHARE of its peak, and whether its
    peak stands above its first measured point by more than two standard errors (else it did not appear)."""
    values = [point[score] for point in curve]
    peak = max(values)
    error = standard_error(peak, n)
    reached = next(point["tokens"] for point in curve if point[score] >= PEAK_SHARE * peak)
    return {"first": values[0], "peak": peak, "error": error, "tokens": reached, "rose": peak - values[0] > 2 * error}


def verdict(name: str, summary: dict) -> dict:
    """What came out, in a sentence, and whether it agrees with the paper's claim."""
    if name == "emergence":
        return emergence_verdict(next(iter(summary.values()))["abilities"])
    loss = "edit_mse" if name == "vit-context" else "mse"
    mse = {variant: values[loss] for variant, values in summary.items()}
    spread = max(values[f"{loss}_spread"] for values in summary.values())
    if name == "vit-context":
        reasoning = {variant: values["reasoning_edit_mse"] for variant, values in summary.items()}
        gaps = mse["VAE only"] - mse["VAE + ViT"], reasoning["VAE only"] - reasoning["VAE + ViT"]
        spreads = spread, max(values["reasoning_edit_mse_spread"] for values in summary.values())
        agrees = all(gap > noise for gap, noise in zip(gaps, spreads))
        scores = ", ".join(
            f"{variant} MiniEdit {values['edit']:.2f}, reasoning edits {values['reasoning_edit']:.2f}"
            for variant, values in summary.items()
        )
        text = (
            f"validation MSE on edits: VAE + ViT {mse['VAE + ViT']:.4f}, VAE only {mse['VAE only']:.4f} (ViT tokens "
            f"change it by {-gaps[0]:+.4f}; seeds up to {spreads[0]:.4f} apart); on reasoning edits by {-gaps[1]:+.4f} "
            f"(seeds up to {spreads[1]:.4f} apart); {scores}"
        )
        return {"text": text, "agrees": agrees}
    ce = {variant: values["ce"] for variant, values in summary.items()}
    listed = ", ".join(f"{variant} {mse[variant]:.4f} (CE {ce[variant]:.3f})" for variant in summary)
    if name == "mot-vs-dense":
        rival = min((variant for variant in mse if variant != "mot"), key=mse.get)
        gap = mse[rival] - mse["mot"]
        ce_spread = max(values["ce_spread"] for values in summary.values())
        # Agreement needs a gap clear of the seeds' noise, and a CE within that noise of the best other's.
        agrees = gap > spread and ce["mot"] <= min(ce[v] for v in ce if v != "mot") + ce_spread
        text = (
            f"final validation MSE {listed}; MoT is {'below' if gap > 0 else 'above'} the best other ({rival}) "
            f"by {abs(gap):.4f}, {abs(gap) / spread:.1f}x the largest spread between seeds ({spread:.4f}); "
            f"{paired(summary, rival, 'mot')}"
            if spread
            else f"final validation MSE {listed}; one seed, so no spread to compare with"
        )
    elif name == "data-ratio":
        gap = mse["1:1"] - mse["4:1"]
        agrees = min(mse, key=mse.get) == "4:1" and gap > spread
        text = (
            f"final validation MSE {listed}; 4:1 is {'below' if gap > 0 else 'above'} 1:1 by {abs(gap):.4f} "
            f"(seeds up to {spread:.4f} apart; {paired(summary, '1:1', '4:1')}); the CE ranges over "
            f"{max(ce.values()) - min(ce.values()):.3f}"
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


def paired(summary: dict, rival: str, variant: str) -> str:
    """Seed by seed (the same batches and noise for both), how much lower `variant`'s final MSE is."""
    gaps = [a - b for a, b in zip(summary[rival]["mse_seeds"], summary[variant]["mse_seeds"])]
    listed = ", ".join(f"{gap:+.4f}" for gap in gaps)
    return f"seed by seed {variant} is below {rival} in {sum(gap > 0 for gap in gaps)} of {len(gaps)} ({listed})"


def emergence_verdict(abilities: dict) -> dict:
    """The paper's order: understanding and generation before editing, editing before reasoning edits."""
    described = [
        f"{score} {a['first']:.2f} -> peak {a['peak']:.2f} (± {a['error']:.2f}), "
        + (f"85% of it after {a['tokens'] / 1e6:.1f}M tokens" if a["rose"] else "did not rise beyond its noise")
        for score, a in abilities.items()
    ]
    tokens = {score: a["tokens"] for score, a in abilities.items()}
    ordered = max(tokens["vqa"], tokens["geneval"]) <= tokens["edit"] <= tokens["reasoning_edit"]
    agrees = all(a["rose"] for a in abilities.values()) and ordered
    return {"text": "; ".join(described), "agrees": agrees}


def plot(results: dict, finding: Finding, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(finding.curves), figsize=(5 * len(finding.curves), 3.6), squeeze=False)
    for variant in finding.variants:
        records = [r for r in results["runs"].values() if r["variant"] == variant]
        points = range(len(records[0]["curve"]))
        tokens = [statistics.mean(r["curve"][i]["tokens"] for r in records) / 1e6 for i in points]
        for ax, curve in zip(axes[0], finding.curves):
            values = [[r["curve"][i][curve] for r in records] for i in points]
            ax.plot(tokens, [statistics.mean(v) for v in values], marker="o", markersize=3, label=variant)
            if len(records) > 1:
                ax.fill_between(tokens, [min(v) for v in values], [max(v) for v in values], alpha=0.2)
    for ax, curve in zip(axes[0], finding.curves):
        ax.set_title(TITLES[curve], fontsize=9)
        if curve in SCORES:  # a share: on its whole range, so that noise around zero looks like it
            ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("tokens seen (millions)")
        ax.legend(fontsize=7)
    agreement = "agrees with" if results["verdict"]["agrees"] else "disagrees with"
    figure.suptitle(f"{results['finding']}: {agreement} the paper (the verdict in full: results.json)", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


TITLES = {
    "ce": "understanding: validation CE",
    "mse": "generation: validation velocity MSE",
    "edit_mse": "editing: validation velocity MSE",
    "reasoning_edit_mse": "reasoning edits: validation velocity MSE",
    "geneval": "MiniGenEval",
    "vqa": "MiniVQA",
    "edit": "MiniEdit",
    "reasoning_edit": "reasoning edits (MiniEdit's rule)",
}


# ---------------------------------------------------------------------------------------------
# Think mode (no training)


def run_think(out: Path, quick: bool, model: str) -> dict:
    """Reasoning prompts drawn with and without think mode, and their resolved prompts drawn directly (what
    the model draws once the reasoning is done for it), all scored by MiniGenEval's rule; how often the
    model's own think trace arrives at the right prompt; and the same three conditions' validation MSE."""
    n = 2 if quick else THINK_N
    rng = random.Random("think finding")
    tasks = [shapes_world.reasoning(rng, IMAGE_SIZE) for _ in range(n)]
    sampling = 3 if quick else SAMPLING_STEPS
    engine, settings = evaluate.load_inferencer(model), ImageSettings(num_timesteps=sampling)
    correct = {"without think": [], "with think": [], "the resolved prompt": []}
    traces = []
    for index, task in enumerate(tqdm(tasks, desc="think")):
        options = dict(image_size=(IMAGE_SIZE, IMAGE_SIZE), settings=settings, seed=index)
        trace, thought = engine.interleave([task.prompt], think=True, max_think_tokens=64, **options)
        traces.append(f"so i draw {task.resolved}" in trace)
        drawn = {
            "without think": evaluate.draw(engine, [task.prompt], index, IMAGE_SIZE, sampling),
            "with think": thought,
            "the resolved prompt": evaluate.draw(engine, [task.resolved], index, IMAGE_SIZE, sampling),
        }
        for mode, image in drawn.items():
            correct[mode].append(geneval_correct(detect(image), task.metadata))
    scores = {mode: sum(values) / n for mode, values in correct.items()}
    losses = think_losses(engine.model, engine.autoencoder, engine.tokenizer, IMAGE_SIZE)
    error = math.hypot(standard_error(scores["with think"], n), standard_error(scores["without think"], n))
    gain = scores["with think"] - scores["without think"]
    text = (
        f"{n} reasoning prompts: {scores['without think']:.2f} without think, {scores['with think']:.2f} with "
        f"(a gain of {gain:+.2f} ± {error:.2f}); the model's trace reaches the right prompt in "
        f"{sum(traces) / n:.2f}; drawn from the resolved prompts directly: {scores['the resolved prompt']:.2f}. "
        f"Validation velocity MSE of 64 reasoning images: {losses['without think']:.4f} from the prompt alone, "
        f"{losses['with think']:.4f} after its think trace, "
        f"{losses['the resolved prompt']:.4f} from the resolved prompt"
    )
    results = {
        "finding": "think",
        "claim": THINK_CLAIM,
        "model": "bagel_mini/default_model" if Path(model) == DEFAULT_MODEL else model,
        "n": n,
        "quick": quick,
        "scores": scores,
        "trace_correct": sum(traces) / n,
        "mse": losses,
        "verdict": {"text": text, "agrees": gain > 2 * error},
    }
    directory = out / "think"
    directory.mkdir(parents=True, exist_ok=True)
    write_json_atomic(directory / "results.json", results, overwrite=True)
    plot_think(results, directory / "curves.png")
    return results


def plot_think(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes, n = list(results["scores"]), results["n"]
    values = [results["scores"][mode] for mode in modes] + [results["trace_correct"]]
    errors = [standard_error(p, n) for p in values]
    figure, ax = plt.subplots(figsize=(6, 3.4))
    ax.bar([*modes, "trace right"], values, yerr=errors, capsize=4, color=["C0", "C1", "C2", "C7"])
    ax.set_ylabel(f"share of {n} reasoning prompts")
    ax.set_ylim(0, 1)
    agreement = "agrees with" if results["verdict"]["agrees"] else "disagrees with"
    ax.set_title(f"think mode: {agreement} the paper (the verdict in full: results.json)", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bagel_mini.ablate", description=__doc__.split("\n")[0], formatter_class=HelpFormatter
    )
    parser.add_argument("name", choices=[*FINDINGS, "think"], help="the finding")
    parser.add_argument("--out", default="runs/ablate", help="results go to OUT/NAME/")
    parser.add_argument("--quick", action="store_true", help="a few steps of everything, one seed")
    parser.add_argument("--preset", default="toy", help="model size (train.py --preset)")
    parser.add_argument("--device", help="train.py --device (default: cuda if available)")
    parser.add_argument("--steps", type=at_least(1), help="optimiser steps of each run (default: the finding's)")
    parser.add_argument("--seeds", type=at_least(1), help="runs of each variant (default: the finding's)")
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="think: the checkpoint to score")
    args = parser.parse_args(argv)
    if args.name == "think":
        if args.steps or args.seeds:
            parser.error("--steps, --seeds: think trains nothing; it scores --model")
        results = run_think(Path(args.out), args.quick, args.model)
    else:
        results = run_finding(args.name, Path(args.out), args.quick, args.preset, args.device, args.steps, args.seeds)
    agreement = "agrees with" if results["verdict"]["agrees"] else "disagrees with"
    print(f"{args.name}: {results['verdict']['text']}")
    print(f"this {agreement} the paper: {results['claim']}")
    print(f"wrote {Path(args.out) / args.name / 'results.json'} and curves.png")


if __name__ == "__main__":
    main()
