"""Understanding tasks: a caption of a scene, or a question about it with one exact answer (VQA)."""

import random
from dataclasses import dataclass

from PIL import Image

from bagel_mini.shapes_world.relations import CLEAR, RELATIONS, relation_scores
from bagel_mini.shapes_world.scene import COLORS, SHAPES, Scene, random_scene, render
from bagel_mini.shapes_world.text import NUMBERS, article, caption, plural

QUESTION_KINDS = ("caption", "count", "count_shape", "color", "shape", "exists", "background", "relation")


@dataclass
class Question:
    kind: str  # one of QUESTION_KINDS
    question: str
    answer: str
    scene: Scene
    image: Image.Image


def questions(scene: Scene, rng: random.Random) -> dict[str, list[tuple[str, str]]]:
    """Every question of each kind this scene answers exactly, as (question, answer) pairs."""
    objects, shapes, colors = scene.objects, [o.shape for o in scene.objects], [o.color for o in scene.objects]
    present = [(o.shape, o.color) for o in objects]
    absent = rng.sample([(s, c) for s in SHAPES for c in COLORS if (s, c) not in present], len(present))
    kinds = {
        "caption": [("describe the image.", caption(scene))],
        "count": [("how many shapes are there?", NUMBERS[len(objects)])],
        "count_shape": [(f"how many {plural(s)} are there?", NUMBERS[shapes.count(s)]) for s in SHAPES],
        "color": [(f"what colour is the {o.shape}?", o.color) for o in objects if shapes.count(o.shape) == 1],
        "shape": [(f"what shape is the {o.color} one?", o.shape) for o in objects if colors.count(o.color) == 1],
        "exists": [
            (f"is there {article(f'{c} {s}')}?", "yes" if (s, c) in present else "no") for s, c in present + absent
        ],
        "background": [("what colour is the background?", scene.background)],
        "relation": [],
    }
    for target in objects:
        others = [o for o in objects if o is not target]
        for relation in RELATIONS:
            scores = [relation_scores(o, target)[relation] for o in others]
            hits = [o for o, score in zip(others, scores) if score > 0.5]
            if all(abs(score - 0.5) >= CLEAR for score in scores) and len(hits) <= 1:
                answer = f"the {hits[0].name}" if hits else "nothing"
                kinds["relation"].append((f"what is {relation} the {target.name}?", answer))
    return kinds


def question(rng: random.Random, image_size: int = 64, kind: str | None = None) -> Question:
    """A random scene and one question about it, of the given kind or of a kind drawn among those it answers."""
    if kind is not None and kind not in QUESTION_KINDS:
        raise ValueError(f"unknown question kind {kind!r}; choose one of {', '.join(QUESTION_KINDS)}")
    asked = [kind] if kind else [k for k in QUESTION_KINDS if k != "caption"]  # captioning is a task of its own
    while True:
        scene = random_scene(rng)
        candidates = questions(scene, rng)
        kinds = [k for k in asked if candidates[k]]
        if kinds:  # else this scene cannot ask it (e.g. no relation is clear): draw another
            break
    kind = rng.choice(kinds)
    text, answer = rng.choice(candidates[kind])
    return Question(kind, text, answer, scene, render(scene, image_size))
