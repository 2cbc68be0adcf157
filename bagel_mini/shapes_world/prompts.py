"""Text-to-image prompts in GenEval's six categories, each with GenEval's metadata (so that any image can be
scored) and a scene that satisfies it."""

import random
from dataclasses import dataclass

from PIL import Image

from bagel_mini.shapes_world.relations import RELATIONS, clear_relation
from bagel_mini.shapes_world.scene import COLORS, MAX_OBJECTS, SHAPES, Scene, layout, render
from bagel_mini.shapes_world.text import article, count_phrase

GENEVAL_TAGS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")


@dataclass
class TextToImage:
    prompt: str
    metadata: dict  # GenEval's: tag, include [{class, count, color?, position?}], exclude, prompt
    scene: Scene
    image: Image.Image


def text_to_image(rng: random.Random, image_size: int = 64, tag: str | None = None) -> TextToImage:
    """A prompt of a GenEval category (drawn if not given), its metadata, and a scene that satisfies it."""
    tag = tag or rng.choice(GENEVAL_TAGS)
    (a, b), (c, d) = rng.sample(SHAPES, 2), rng.sample(list(COLORS), 2)
    exclude = []
    if tag == "single_object":
        include, prompt = [{"class": a, "count": 1}], article(a)
    elif tag == "two_object":
        include, prompt = [{"class": a, "count": 1}, {"class": b, "count": 1}], f"{article(a)} and {article(b)}"
    elif tag == "counting":
        count = rng.randint(2, MAX_OBJECTS)
        include, prompt = [{"class": a, "count": count}], count_phrase(count, a)
        exclude = [{"class": a, "count": count + 1}]
    elif tag == "colors":
        include, prompt = [{"class": a, "count": 1, "color": c}], article(f"{c} {a}")
    elif tag == "position":
        relation = rng.choice(RELATIONS)
        include = [{"class": b, "count": 1}, {"class": a, "count": 1, "position": [relation, 0]}]
        prompt = f"{article(a)} {relation} {article(b)}"
    elif tag == "color_attr":
        include = [{"class": a, "count": 1, "color": c}, {"class": b, "count": 1, "color": d}]
        prompt = f"{article(f'{c} {a}')} and {article(f'{d} {b}')}"
    else:
        raise ValueError(f"unknown GenEval tag {tag!r}; choose one of {', '.join(GENEVAL_TAGS)}")
    metadata = {"tag": tag, "include": include, "exclude": exclude, "prompt": prompt}
    scene = scene_for(rng, metadata)
    return TextToImage(prompt, metadata, scene, render(scene, image_size))


def scene_for(rng: random.Random, metadata: dict) -> Scene:
    """A scene with exactly the objects GenEval metadata asks for (free colours drawn), relations made clear."""
    while True:
        specs = []
        for clause in metadata["include"]:
            free = [c for c in COLORS if (clause["class"], c) not in specs]
            specs += [
                (clause["class"], clause.get("color") or free.pop(rng.randrange(len(free))))
                for _ in range(clause["count"])
            ]
        scene = layout(rng, specs)
        clause = metadata["include"][-1]
        if "position" not in clause or clear_relation(scene.objects[-1], scene.objects[0]) == clause["position"][0]:
            return scene
