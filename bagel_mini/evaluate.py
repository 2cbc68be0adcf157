"""MiniGenEval, MiniVQA and MiniEdit: the scores of what a model makes of Shapes World (GenEval is the
generation benchmark the paper reports).

The benchmark is n prompts of each GenEval category, n questions and n edits, drawn from a seed with their
ground truth. A source makes the outputs: the ground truth itself (about 1.0 everywhere), the ground truth
through an autoencoder (the ceiling that autoencoder leaves a model), a blind answerer (what MiniVQA gives
without the image), a checkpoint, or PNGs in GenEval's folder layout from any model. The detector
(shapes_world/detection.py) finds the objects of each image and shapes_world/scoring.py gives each output its
verdict. GenEval draws four images per prompt; we score one per prompt (--n prompts per category).

    python -m bagel_mini.evaluate --oracle --json                # ground truth: about 1.0 everywhere
    python -m bagel_mini.evaluate --checkpoint DIR --json       # a model
    python -m bagel_mini.evaluate --write-prompts DIR           # GenEval's folder layout, for any model
    python -m bagel_mini.evaluate --images DIR                  # score DIR/NNNNN/samples/*.png
    python -m bagel_mini.evaluate --autoencoder DIR             # the ceiling DIR's autoencoder leaves a model
    python -m bagel_mini.evaluate --blind                       # MiniVQA answering without the image
"""

import argparse
import json
import random
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

from PIL import Image

from bagel_mini import DEFAULT_MODEL, flags
from bagel_mini import shapes_world as world
from bagel_mini.images import load_image, to_rgb
from bagel_mini.shapes_world.detection import detect
from bagel_mini.shapes_world.scoring import edit_correct, geneval_correct, geneval_scores, vqa_accuracy, vqa_by_kind

BLIND_QUESTIONS = 20_000  # training questions the blind answerer counts answers in


# ---- the benchmark --------------------------------------------------------------------------------


def benchmark(n: int, seed: int, image_size: int = 64):
    """n prompts of each GenEval category (in GenEval's order), n questions and n edits, ground truth included."""
    if n < 1:
        raise ValueError(f"--n {n}: need at least one prompt per category")
    prompts = random.Random(f"minigeneval {seed}")
    questions, edits = random.Random(f"minivqa {seed}"), random.Random(f"miniedit {seed}")
    return (
        [world.text_to_image(prompts, image_size, tag) for tag in world.GENEVAL_TAGS for _ in range(n)],
        [world.question(questions, image_size) for _ in range(n)],
        [world.edit(edits, image_size) for _ in range(n)],
    )


def vqa_scores(answers: list[str], questions: list[world.Question]) -> dict:
    """The MiniVQA part of a result: overall and by kind. Sources that answer nothing give NO_VQA."""
    return {"vqa": vqa_accuracy(answers, [q.answer for q in questions]), "vqa_by_kind": vqa_by_kind(answers, questions)}


NO_VQA = {"vqa": None, "vqa_by_kind": None}


# ---- the sources ----------------------------------------------------------------------------------


def oracle_scores(n: int, seed: int, image_size: int = 64) -> dict:
    """The scores of the ground truth: the renders of the prompts' scenes, the true answers, the target scenes."""
    prompts, questions, edits = benchmark(n, seed, image_size)
    geneval = [(t.metadata["tag"], geneval_correct(detect(t.image), t.metadata)) for t in prompts]
    truths = [q.answer for q in questions]
    edited = [edit_correct(e.target_image, e.target) for e in edits]
    return {"geneval": geneval_scores(geneval), **vqa_scores(truths, questions), "edit": sum(edited) / n}


def autoencoder_scores(directory: str, n: int, seed: int, image_size: int = 64) -> dict:
    """The scores of the ground truth after a round trip through an autoencoder (encode to the posterior
    mean, decode). A Bagel that uses this autoencoder cannot draw better than that, so the scores tell a
    weak autoencoder from a weak model."""
    import torch

    from bagel_mini.checkpoint import load_autoencoder
    from bagel_mini.images import to_tensor
    from bagel_mini.inference import GeneratedImage

    autoencoder = load_autoencoder(directory)

    def round_trip(image: Image.Image) -> Image.Image:
        with torch.no_grad():
            latent = autoencoder.encode_mean(to_tensor(to_rgb(image))[None])
            return GeneratedImage(latent[0], autoencoder.decode(latent)[0]).to_pil()

    prompts, _, edits = benchmark(n, seed, image_size)
    geneval = [(t.metadata["tag"], geneval_correct(detect(round_trip(t.image)), t.metadata)) for t in prompts]
    edited = [edit_correct(round_trip(e.target_image), e.target) for e in edits]
    return {"geneval": geneval_scores(geneval), **NO_VQA, "edit": sum(edited) / n}


def blind_answers(questions: list[world.Question], seed: int) -> list[str]:
    """Answers that never look at the image: for each question, the answer most often seen with the same words
    among BLIND_QUESTIONS questions drawn as training draws them (for words never seen, its kind's most
    frequent answer). A model's MiniVQA says little until it beats this."""
    rng = random.Random(f"blind answerer {seed}")
    by_words, by_kind = defaultdict(Counter), defaultdict(Counter)
    for _ in range(BLIND_QUESTIONS):
        seen = world.question(rng)
        by_words[seen.question][seen.answer] += 1
        by_kind[seen.kind][seen.answer] += 1
    return [(by_words.get(q.question) or by_kind[q.kind]).most_common(1)[0][0] for q in questions]


def blind_scores(n: int, seed: int, image_size: int = 64) -> dict:
    """MiniVQA of the blind answerer (blind_answers) on the benchmark's questions; it neither draws nor edits."""
    questions = benchmark(n, seed, image_size)[1]
    return {"geneval": None, **vqa_scores(blind_answers(questions, seed), questions), "edit": None}


def reasoning_edits(n: int, seed: int, image_size: int = 64) -> list[world.Edit]:
    """n reasoning edits (edits that need one step of knowledge), drawn from a seed: not part of MiniEdit."""
    rng = random.Random(f"reasoning edits {seed}")
    return [world.reasoning_edit(rng, image_size) for _ in range(n)]


def load_inferencer(directory: str):
    """A checkpoint directory ready to draw and answer: on the GPU in bfloat16 if there is one."""
    import torch

    from bagel_mini.checkpoint import load_checkpoint
    from bagel_mini.config import load_config_dir
    from bagel_mini.inference import Inferencer
    from bagel_mini.tokenizer import BagelTokenizer

    if not Path(directory).is_dir():
        raise FileNotFoundError(f"{directory}: checkpoint directory not found")
    load_config_dir(directory)  # a bad config or tokenizer file fails at once, before the weights load
    tokenizer = BagelTokenizer.from_dir(directory)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, autoencoder = load_checkpoint(directory, torch.bfloat16 if device == "cuda" else torch.float32, device)
    return Inferencer(model, autoencoder, tokenizer, tokenizer.special_ids)


def draw(engine, items: list, index: int, image_size: int, steps: int, **options) -> Image.Image:
    """The image `engine` makes of `items` (prompt, or source image and instruction), its noise seeded by `index`."""
    from bagel_mini.inference import ImageSettings

    settings = ImageSettings(num_timesteps=steps)
    return engine.interleave(items, image_size=(image_size, image_size), settings=settings, seed=index, **options)[-1]


def geneval_results(engine, prompts: list[world.TextToImage], image_size: int, steps: int) -> dict:
    """MiniGenEval of the images `engine` draws of `prompts`: each category and overall."""
    drawn = [draw(engine, [t.prompt], i, image_size, steps) for i, t in enumerate(prompts)]
    return geneval_scores(
        [(t.metadata["tag"], geneval_correct(detect(image), t.metadata)) for image, t in zip(drawn, prompts)]
    )


def answers(engine, questions: list[world.Question], max_tokens: int) -> list[str]:
    """What `engine` answers to each of `questions`, from its image and its text."""
    return [
        engine.interleave([q.image, q.question], understanding=True, max_think_tokens=max_tokens)[0] for q in questions
    ]


def edit_score(engine, edits: list[world.Edit], image_size: int, steps: int, edit_vit: bool = True) -> float:
    """The share of `edits` made right (MiniEdit's rule), the source image given as VAE (and ViT) tokens."""
    made = [
        draw(engine, [e.source_image, e.instruction], i, image_size, steps, edit_vit=edit_vit)
        for i, e in enumerate(edits)
    ]
    return sum(edit_correct(image, e.target) for image, e in zip(made, edits)) / len(edits)


def model_scores(directory: str, n: int, seed: int, image_size: int, steps: int, max_tokens: int) -> dict:
    """The scores of a checkpoint: it draws every prompt, answers every question and makes every edit."""
    engine = load_inferencer(directory)
    prompts, questions, edits = benchmark(n, seed, image_size)
    return {
        "geneval": geneval_results(engine, prompts, image_size, steps),
        **vqa_scores(answers(engine, questions, max_tokens), questions),
        "edit": edit_score(engine, edits, image_size, steps),
    }


def write_prompts(directory: str, prompts: list[world.TextToImage], with_images: bool = False) -> None:
    """GenEval's layout: DIR/NNNNN/metadata.jsonl and an empty DIR/NNNNN/samples/ for the model's PNGs
    (with `with_images`, the ground-truth render as samples/00000.png)."""
    for index, task in enumerate(prompts):
        folder = Path(directory) / f"{index:05d}"
        (folder / "samples").mkdir(parents=True, exist_ok=True)
        (folder / "metadata.jsonl").write_text(json.dumps(task.metadata) + "\n")
        if with_images:
            task.image.save(folder / "samples" / "00000.png")


def image_scores(directory: str) -> dict:
    """MiniGenEval of the PNGs (named as digits, as GenEval's) in DIR/NNNNN/samples/, each folder's prompt
    read from its metadata.jsonl."""
    if not Path(directory).is_dir():
        raise FileNotFoundError(f"{directory}: no such directory")
    results = []
    for folder in sorted(p for p in Path(directory).iterdir() if p.is_dir() and p.name.isdigit()):
        metadata = _read_metadata(folder / "metadata.jsonl")
        for path in sorted((folder / "samples").glob("*.png")):
            if re.fullmatch(r"\d+\.png", path.name):
                results.append((metadata["tag"], geneval_correct(detect(load_image(path)), metadata)))
    if not results:
        raise ValueError(f"{directory}: no images found in NNNNN/samples/ (PNG files named by digits)")
    return geneval_scores(results)


def _read_metadata(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (every prompt folder needs its metadata.jsonl)")
    try:
        metadata = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not a JSON object ({error})") from None
    if not isinstance(metadata, dict) or metadata.get("tag") not in world.GENEVAL_TAGS or "include" not in metadata:
        raise ValueError(f"{path}: needs a GenEval tag ({', '.join(world.GENEVAL_TAGS)}) and an include list")
    return metadata


# ---- command line ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="MiniGenEval, MiniVQA and MiniEdit on Shapes World", formatter_class=flags.HelpFormatter
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", metavar="DIR", help="evaluate the checkpoint in DIR (default: the toy model)")
    source.add_argument("--oracle", action="store_true", help="score the ground truth instead of a model")
    source.add_argument("--images", metavar="DIR", help="score the PNGs of DIR/NNNNN/samples/ (GenEval layout)")
    source.add_argument(
        "--autoencoder", metavar="DIR", help="score the ground truth after a round trip through DIR's autoencoder"
    )
    source.add_argument(
        "--blind", action="store_true", help="MiniVQA of answering from the question alone, never the image"
    )
    parser.add_argument(
        "--write-prompts", metavar="DIR", help="write the prompts in GenEval's layout (with --oracle: and the renders)"
    )
    parser.add_argument("--n", type=flags.at_least(1), default=200, help="prompts per category, questions and edits")
    parser.add_argument("--seed", type=int, default=0, help="which prompt set")
    parser.add_argument("--size", type=flags.at_least(16), default=64, help="image side in pixels")
    parser.add_argument("--steps", type=flags.at_least(2), default=50, help="time-grid points when a model draws")
    parser.add_argument("--max-tokens", type=flags.at_least(1), default=32, help="longest answer a model may write")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.write_prompts and (args.checkpoint or args.images or args.blind or args.autoencoder):
        parser.error("--write-prompts goes alone or with --oracle")
    if args.write_prompts and Path(args.write_prompts).exists() and not Path(args.write_prompts).is_dir():
        parser.error(f"--write-prompts {args.write_prompts}: a file; give a directory to write the prompts into")
    return args


def run(args: argparse.Namespace) -> dict | None:
    if args.write_prompts:
        prompts = benchmark(args.n, args.seed, args.size)[0]
        write_prompts(args.write_prompts, prompts, with_images=args.oracle)
        print(f"wrote {len(prompts)} prompts to {args.write_prompts}")
        return None
    if args.oracle:
        return oracle_scores(args.n, args.seed, args.size)
    if args.images:
        return {"geneval": image_scores(args.images), **NO_VQA, "edit": None}
    if args.autoencoder:
        return autoencoder_scores(args.autoencoder, args.n, args.seed, args.size)
    if args.blind:
        return blind_scores(args.n, args.seed, args.size)
    checkpoint = args.checkpoint or DEFAULT_MODEL
    if not Path(checkpoint).is_dir():
        raise ValueError(
            f"{checkpoint}: checkpoint directory not found; pass --checkpoint DIR, or score without a model: "
            "--oracle, --images DIR, --autoencoder DIR or --blind"
        )
    return model_scores(str(checkpoint), args.n, args.seed, args.size, args.steps, args.max_tokens)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        scores = run(args)
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"error: {error}")
    if scores is None:
        return
    if args.json:
        print(json.dumps(scores))
        return
    kinds = [(f"vqa {kind}", score) for kind, score in (scores["vqa_by_kind"] or {}).items()]
    for name, score in [*(scores["geneval"] or {}).items(), ("vqa", scores["vqa"]), *kinds, ("edit", scores["edit"])]:
        print(f"{name:<16} {'-' if score is None else f'{score:.3f}'}")


if __name__ == "__main__":
    main()
