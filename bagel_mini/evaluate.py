"""MiniGenEval, MiniVQA and MiniEdit: the scores of what a model makes of Shapes World (DESIGN.md section 5;
GenEval is the generation benchmark the paper reports).

GenEval detects objects with a trained detector; Shapes World is simple enough to detect them by
geometry, so a score never depends on another network, nor on our renderer's exact pixels:

1. background: the median colour of the image border;
2. paint: every pixel is explained as a blend of the background and one palette colour, which is what
   anti-aliasing makes; a pixel is paint when its best blend is at least half palette colour and lies
   within RESIDUAL of it;
3. objects: 8-connected components of paint (union-find over the runs of each row), tiny ones dropped;
   the colour is the majority of their pixels;
4. shape: each shape of the world is drawn with the component's area and centroid, over the share of
   each pixel the component's colour covers; the shape that redraws it best, if well enough, is its shape.

MiniGenEval scores each prompt by GenEval's rules (djghosh13/geneval, evaluation/evaluate_images.py),
shape names being the classes: every `include` clause needs `count` objects of its class, the largest
first (GenEval: the most confident), of its colour if given, and in its relation (GenEval's 0.1 x
(width_a + width_b) rule, shapes_world.relation_scores) to every object of the clause it refers to; an
`exclude` clause fails if `count` or more of its class exist. The overall score is the mean of the six
category accuracies. MiniVQA is exact match after normalising case, spaces and final punctuation.
MiniEdit passes an edited image when its objects and background are exactly the expected scene's.
GenEval draws four images per prompt; we score one per prompt (--n prompts per category).

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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from bagel_mini import DEFAULT_MODEL
from bagel_mini import shapes_world as world
from bagel_mini.images import load_image, to_rgb

RESIDUAL = 60.0  # how far (0-255 RGB) a pixel may lie from its background-to-palette blend and still be paint
MIN_AREA = 0.002  # components below this share of the image are noise (the smallest object covers ~0.005)
SUBSAMPLES = 48  # candidate shapes are drawn with at least this many samples across
MAX_SHAPE_ERROR = 0.3  # the most paint (a share of the component's) a candidate may draw wrongly
BLIND_QUESTIONS = 20_000  # training questions the blind answerer counts answers in
EDIT_TOLERANCE = (0.06, 1.25)  # MiniEdit: an object may be this far from its place (image fraction) and size (ratio)

PALETTE = np.array(list(world.COLORS.values()), dtype=np.float32)  # (K, 3)
COLOR_NAMES = list(world.COLORS)


@dataclass(frozen=True)
class Detection:
    shape: str | None  # None when no shape of the world fits
    color: str
    x: float  # box centre and size as fractions of the image width and height
    y: float
    width: float
    height: float
    area: float  # share of the image's pixels


# ---- detection ------------------------------------------------------------------------------------


def background_color(pixels: np.ndarray) -> np.ndarray:
    """The median colour of the border pixels of an (H, W, 3) image: objects keep off the border."""
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    return np.median(border, axis=0)


def paint_labels(pixels: np.ndarray, background: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) palette index of each paint pixel (-1 elsewhere), and (H, W, K) the share of each palette
    colour in each pixel. A pixel p is explained as background + alpha (colour - background), by the
    colour whose best alpha leaves the least residual."""
    offsets = pixels - background  # (H, W, 3)
    directions = PALETTE - background  # (K, 3)
    alpha = np.clip(offsets @ directions.T / np.maximum((directions**2).sum(1), 1.0), 0.0, 1.0)  # (H, W, K)
    residual = np.linalg.norm(offsets[..., None, :] - alpha[..., None] * directions, axis=-1)  # (H, W, K)
    best = residual.argmin(-1)
    best_alpha = np.take_along_axis(alpha, best[..., None], -1)[..., 0]
    best_residual = np.take_along_axis(residual, best[..., None], -1)[..., 0]
    return np.where((best_alpha >= 0.5) & (best_residual <= RESIDUAL), best, -1), alpha


def connected_runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """8-connected components of a boolean (H, W) image, as its runs (row, start, end) and the component
    of each run. Runs of neighbouring rows that touch (diagonals included) are joined by union-find."""
    edges = np.diff(np.pad(mask, ((0, 0), (1, 1))).astype(np.int8), axis=1)
    rows, starts = np.nonzero(edges == 1)  # row-major order: by row, then by column
    ends = np.nonzero(edges == -1)[1]  # exclusive
    parent = list(range(len(rows)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first = np.searchsorted(rows, np.arange(mask.shape[0] + 1)).tolist()  # runs of row r: first[r]..first[r+1]
    start_list, end_list = starts.tolist(), ends.tolist()
    for row in range(1, mask.shape[0]):
        above, above_end = first[row - 1], first[row]
        for i in range(first[row], first[row + 1]):
            while above < above_end and end_list[above] < start_list[i]:  # ends before this run, even diagonally
                above += 1
            j = above
            while j < above_end and start_list[j] <= end_list[i]:
                parent[root(j)] = root(i)
                j += 1
    roots = np.array([root(i) for i in range(len(parent))], dtype=np.int64)
    return rows, starts, ends, np.unique(roots, return_inverse=True)[1]


AREA = {"circle": np.pi / 4, "square": 1.0, "triangle": 0.5, "diamond": 0.5, "cross": 1 - (1 - world.CROSS_ARM) ** 2}
CENTROID = {shape: 2 / 3 if shape == "triangle" else 0.5 for shape in world.SHAPES}  # from the top, in box heights


def inside(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Which points (u, v) of the unit box, (0, 0) at the top left, a shape of the world covers."""
    in_box = (u >= 0) & (u <= 1) & (v >= 0) & (v <= 1)
    if shape == "circle":
        return (u - 0.5) ** 2 + (v - 0.5) ** 2 <= 0.25
    if shape == "square":
        return in_box
    if shape == "triangle":
        return in_box & (np.abs(u - 0.5) <= v / 2)
    if shape == "diamond":
        return np.abs(u - 0.5) + np.abs(v - 0.5) <= 0.5
    return in_box & ((np.abs(u - 0.5) <= world.CROSS_ARM / 2) | (np.abs(v - 0.5) <= world.CROSS_ARM / 2))


def classify_shape(coverage: np.ndarray) -> str | None:
    """The shape that best redraws a component, from the (h, w) share of each pixel its colour covers.

    For each shape, the size that gives the measured area and the position that gives the measured
    centroid fix one candidate; it is drawn on the same pixels (sub-sampled) and compared. Working with
    coverage rather than a thresholded mask keeps the sub-pixel information anti-aliasing leaves, so
    shapes ten pixels wide are still told apart.
    """
    total = coverage.sum()
    rows, cols = np.indices(coverage.shape) + 0.5
    centre_y, centre_x = (coverage * rows).sum() / total, (coverage * cols).sum() / total
    factor = max(1, -(-SUBSAMPLES // max(coverage.shape)))  # sub-samples per pixel side
    y, x = ((np.arange(n * factor) + 0.5) / factor for n in coverage.shape)
    errors = {}
    for shape in world.SHAPES:
        side = np.sqrt(total / AREA[shape])
        covered = inside(shape, (x[None, :] - centre_x) / side + 0.5, (y[:, None] - centre_y) / side + CENTROID[shape])
        drawn = covered.reshape(coverage.shape[0], factor, coverage.shape[1], factor).mean(axis=(1, 3))
        errors[shape] = np.abs(drawn - coverage).sum() / total
    best = min(errors, key=errors.get)
    return best if errors[best] <= MAX_SHAPE_ERROR else None


def detect(image: Image.Image) -> list[Detection]:
    """The objects of an image of any size, largest first."""
    pixels = np.asarray(to_rgb(image), dtype=np.float32)
    height, width = pixels.shape[:2]
    paint, alpha = paint_labels(pixels, background_color(pixels))
    rows, starts, ends, component = connected_runs(paint >= 0)
    areas = np.bincount(component, weights=ends - starts)
    detections = []
    for index in np.nonzero(areas >= MIN_AREA * height * width)[0]:
        mine = component == index
        r, s, e = rows[mine], starts[mine], ends[mine]
        top, bottom, left, right = r.min(), r.max() + 1, s.min(), e.max()
        votes = sum(np.bincount(paint[row, a:b], minlength=len(COLOR_NAMES)) for row, a, b in zip(r, s, e))
        color = int(np.argmax(votes))
        # The component and the pixels next to it (where the rest of its anti-aliased edge is), with room around.
        pad = 2 + max(bottom - top, right - left) // 3
        window = (slice(max(top - pad, 0), bottom + pad), slice(max(left - pad, 0), right + pad))
        near = np.zeros((height, width), dtype=bool)
        for row, a, b in zip(r, s, e):
            near[max(row - 1, 0) : row + 2, max(a - 1, 0) : b + 1] = True
        coverage = np.where(near[window], alpha[window][..., color], 0.0)
        detections.append(
            Detection(
                shape=classify_shape(coverage),
                color=COLOR_NAMES[color],
                x=(left + right) / 2 / width,
                y=(top + bottom) / 2 / height,
                width=(right - left) / width,
                height=(bottom - top) / height,
                area=areas[index] / (height * width),
            )
        )
    return sorted(detections, key=lambda d: -d.area)


def background_name(image: Image.Image) -> str | None:
    """The world's background nearest to the image's, or None if none is within RESIDUAL."""
    color = background_color(np.asarray(to_rgb(image), dtype=np.float32))
    distances = {name: np.linalg.norm(color - np.array(rgb)) for name, rgb in world.BACKGROUNDS.items()}
    best = min(distances, key=distances.get)
    return best if distances[best] <= RESIDUAL else None


# ---- scores ---------------------------------------------------------------------------------------


def geneval_correct(detections: list[Detection], metadata: dict) -> bool:
    """GenEval's verdict on one image: every `include` clause met and no `exclude` clause."""
    by_class = {}
    for detection in detections:  # largest first, as GenEval takes the most confident first
        by_class.setdefault(detection.shape, []).append(detection)
    groups, correct = [], True  # groups[i]: the objects that met include clause i, or None
    for clause in metadata["include"]:
        found = by_class.get(clause["class"], [])[: clause["count"]]
        met = len(found) >= clause["count"]
        if met and "color" in clause:
            met = sum(d.color == clause["color"] for d in found) >= clause["count"]
        if met and "position" in clause:
            relation, target = clause["position"]
            met = groups[target] is not None and all(
                relation in world.relations(d, other) for d in found for other in groups[target]
            )
        groups.append(found if met else None)
        correct = correct and met
    return correct and all(len(by_class.get(c["class"], [])) < c["count"] for c in metadata.get("exclude", []))


def geneval_scores(results: list[tuple[str, bool]]) -> dict[str, float | None]:
    """Accuracy per GenEval category (None for a category without images) and their mean, `overall`."""
    scores = {}
    for tag in world.GENEVAL_TAGS:
        verdicts = [correct for result_tag, correct in results if result_tag == tag]
        scores[tag] = sum(verdicts) / len(verdicts) if verdicts else None
    present = [score for score in scores.values() if score is not None]
    scores["overall"] = sum(present) / len(present) if present else None
    return scores


def normalize_answer(text: str) -> str:
    return " ".join(text.lower().split()).rstrip(".!?,;: ")


def vqa_accuracy(answers: list[str], truths: list[str]) -> float:
    """MiniVQA: the share of answers equal to the truth once normalised."""
    return sum(normalize_answer(a) == normalize_answer(t) for a, t in zip(answers, truths, strict=True)) / len(truths)


def vqa_by_kind(answers: list[str], questions: list[world.Question]) -> dict[str, float]:
    """MiniVQA of each kind of question the benchmark asked, in shapes_world.QUESTION_KINDS order."""
    pairs = defaultdict(lambda: ([], []))  # kind -> (answers, truths)
    for answer, question in zip(answers, questions, strict=True):
        pairs[question.kind][0].append(answer)
        pairs[question.kind][1].append(question.answer)
    return {kind: vqa_accuracy(*pairs[kind]) for kind in world.QUESTION_KINDS if kind in pairs}


def vqa_scores(answers: list[str], questions: list[world.Question]) -> dict:
    """The MiniVQA part of a result: overall and by kind. Scorers that answer nothing give NO_VQA."""
    return {"vqa": vqa_accuracy(answers, [q.answer for q in questions]), "vqa_by_kind": vqa_by_kind(answers, questions)}


NO_VQA = {"vqa": None, "vqa_by_kind": None}


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


def edit_correct(image: Image.Image, target: world.Scene) -> bool:
    """MiniEdit: the image shows the expected scene: its background, one object of each expected shape and
    colour near its expected place and size, and nothing else. So the named change must be made and
    everything else left as it was."""
    if background_name(image) != target.background:
        return False
    detections, (distance, ratio) = detect(image), EDIT_TOLERANCE
    if len(detections) != len(target.objects):
        return False
    for expected in target.objects:
        matches = [d for d in detections if (d.shape, d.color) == (expected.shape, expected.color)]
        if len(matches) != 1:
            return False
        found = matches[0]
        if max(abs(found.x - expected.x), abs(found.y - expected.y)) > distance:
            return False
        if not 1 / ratio <= (found.width + found.height) / 2 / expected.size <= ratio:
            return False
    return True


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


def blind_scores(n: int, seed: int, image_size: int = 64) -> dict:
    """MiniVQA of the blind answerer (blind_answers) on the benchmark's questions; it neither draws nor edits."""
    questions = benchmark(n, seed, image_size)[1]
    return {"geneval": None, **vqa_scores(blind_answers(questions, seed), questions), "edit": None}


def model_scores(directory: str, n: int, seed: int, image_size: int, steps: int, max_tokens: int) -> dict:
    """The scores of a checkpoint: it draws every prompt, answers every question and makes every edit."""
    import torch

    from bagel_mini.checkpoint import load_checkpoint
    from bagel_mini.inference import ImageSettings, Inferencer
    from bagel_mini.tokenizer import BagelTokenizer

    if not Path(directory).is_dir():
        raise FileNotFoundError(f"{directory}: checkpoint directory not found")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, autoencoder = load_checkpoint(directory, torch.bfloat16 if device == "cuda" else torch.float32, device)
    tokenizer = BagelTokenizer.from_dir(directory)
    engine = Inferencer(model, autoencoder, tokenizer, tokenizer.special_ids)
    settings = ImageSettings(num_timesteps=steps)

    def draw(items: list, index: int) -> Image.Image:
        return engine.interleave(items, image_size=(image_size, image_size), settings=settings, seed=index)[-1]

    prompts, questions, edits = benchmark(n, seed, image_size)
    geneval = [
        (t.metadata["tag"], geneval_correct(detect(draw([t.prompt], i)), t.metadata)) for i, t in enumerate(prompts)
    ]
    answers = [
        engine.interleave([q.image, q.question], understanding=True, max_think_tokens=max_tokens)[0] for q in questions
    ]
    edited = [edit_correct(draw([e.source_image, e.instruction], i), e.target) for i, e in enumerate(edits)]
    return {
        "geneval": geneval_scores(geneval),
        **vqa_scores(answers, questions),
        "edit": sum(edited) / n,
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
    parser = argparse.ArgumentParser(description="MiniGenEval, MiniVQA and MiniEdit on Shapes World")
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
    parser.add_argument("--n", type=int, default=200, help="prompts per category, questions and edits (200)")
    parser.add_argument("--seed", type=int, default=0, help="which prompt set")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (64)")
    parser.add_argument("--steps", type=int, default=50, help="time-grid points when a model draws (50)")
    parser.add_argument("--max-tokens", type=int, default=32, help="longest answer a model may write (32)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.write_prompts and (args.checkpoint or args.images or args.blind):
        parser.error("--write-prompts goes alone or with --oracle")
    if args.size < 16:
        parser.error(f"--size {args.size}: images need at least 16 pixels a side")
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
