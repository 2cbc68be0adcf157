"""The verdicts of MiniGenEval, MiniVQA and MiniEdit on one output, and GenEval's category scores.

MiniGenEval judges each prompt by GenEval's rules (djghosh13/geneval, evaluation/evaluate_images.py),
shape names being the classes: every `include` clause needs `count` objects of its class, the largest
first (GenEval: the most confident), of its colour if given, and in its relation (GenEval's 0.1 x
(width_a + width_b) rule, relations.py) to every object of the clause it refers to; an `exclude` clause
fails if `count` or more of its class exist. The overall score is the mean of the six category
accuracies. MiniVQA is exact match after normalising case, spaces and final punctuation. MiniEdit passes
an edited image when its objects and background are exactly the expected scene's.
"""

from collections import defaultdict

from PIL import Image

from bagel_mini.shapes_world.detection import Detection, background_name, detect
from bagel_mini.shapes_world.prompts import GENEVAL_TAGS
from bagel_mini.shapes_world.relations import relations
from bagel_mini.shapes_world.scene import Scene
from bagel_mini.shapes_world.understanding import QUESTION_KINDS, Question

EDIT_TOLERANCE = (0.06, 1.25)  # MiniEdit: an object may be this far from its place (image fraction) and size (ratio)


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
                relation in relations(d, other) for d in found for other in groups[target]
            )
        groups.append(found if met else None)
        correct = correct and met
    return correct and all(len(by_class.get(c["class"], [])) < c["count"] for c in metadata.get("exclude", []))


def geneval_scores(results: list[tuple[str, bool]]) -> dict[str, float | None]:
    """Accuracy per GenEval category (None for a category without images) and their mean, `overall`."""
    scores = {}
    for tag in GENEVAL_TAGS:
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


def vqa_by_kind(answers: list[str], questions: list[Question]) -> dict[str, float]:
    """MiniVQA of each kind of question the benchmark asked, in QUESTION_KINDS order."""
    pairs = defaultdict(lambda: ([], []))  # kind -> (answers, truths)
    for answer, question in zip(answers, questions, strict=True):
        pairs[question.kind][0].append(answer)
        pairs[question.kind][1].append(question.answer)
    return {kind: vqa_accuracy(*pairs[kind]) for kind in QUESTION_KINDS if kind in pairs}


def edit_correct(image: Image.Image, target: Scene) -> bool:
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
