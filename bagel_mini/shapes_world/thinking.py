"""Reasoning tasks for think mode: a prompt that needs one step of knowledge ("a circle the colour of grass")
or arithmetic, a short think trace, and the plain prompt it resolves to ("a green circle")."""

import random
from dataclasses import dataclass

from PIL import Image

from bagel_mini.shapes_world.prompts import scene_for
from bagel_mini.shapes_world.scene import COLORS, SHAPES, Scene, render
from bagel_mini.shapes_world.text import article, count_phrase, plural

# One step of world knowledge: things of each colour, and a riddle for each shape.
THINGS = {
    "red": ("a tomato", "a strawberry"),
    "orange": ("a carrot", "a pumpkin"),
    "yellow": ("a banana", "a lemon"),
    "green": ("grass", "a leaf"),
    "blue": ("the sky", "the sea"),
    "purple": ("a plum", "a grape"),
}
RIDDLES = {
    "circle": "shape with no corners",
    "square": "shape with four equal sides",
    "triangle": "shape with three sides",
    "diamond": "square standing on one corner",
    "cross": "plus sign",
}
# (phrase, count of the named shape, count of the asked shape, the step of arithmetic)
ARITHMETIC = (
    ("one more {a} than {bs}", 1, 2, "one more than one is two"),
    ("one fewer {a} than {bs}", 2, 1, "one fewer than two is one"),
    ("as many {as_} as {bs}", 1, 1, "as many as one is one"),
    ("as many {as_} as {bs}", 2, 2, "as many as two is two"),
    ("twice as many {as_} as {bs}", 1, 2, "twice one is two"),
)


@dataclass
class Reasoning:
    prompt: str
    think: str
    resolved: str  # the plain prompt the reasoning arrives at; metadata scores it
    metadata: dict
    scene: Scene
    image: Image.Image


def reasoning(rng: random.Random, image_size: int = 64) -> Reasoning:
    """A prompt one step of knowledge or arithmetic away from a plain one, with the think trace between."""
    if rng.random() < 0.5:
        shape, color = rng.choice(SHAPES), rng.choice(list(COLORS))
        thing = rng.choice(THINGS[color])
        indirect = rng.choice(("shape", "color", "both"))
        noun = shape if indirect == "color" else RIDDLES[shape]
        prompt = article(f"{color} {noun}") if indirect == "shape" else f"{article(noun)} the colour of {thing}"
        steps = [f"{article(RIDDLES[shape])} is {article(shape)}."] * (indirect != "color")
        steps += [f"{thing} is {color}."] * (indirect != "shape")
        resolved = article(f"{color} {shape}")
        metadata = {"tag": "colors", "include": [{"class": shape, "count": 1, "color": color}], "exclude": []}
    else:
        a, b = rng.sample(SHAPES, 2)
        rule, count_b, count_a, step = rng.choice(ARITHMETIC)
        prompt = f"{count_phrase(count_b, b)} and {rule.format(a=a, as_=plural(a), bs=plural(b))}"
        steps = [f"{step}."]
        resolved = f"{count_phrase(count_b, b)} and {count_phrase(count_a, a)}"
        include = [{"class": b, "count": count_b}, {"class": a, "count": count_a}]
        metadata = {"tag": "counting", "include": include, "exclude": [{**c, "count": c["count"] + 1} for c in include]}
    metadata["prompt"] = resolved
    scene = scene_for(rng, metadata)
    think = " ".join([*steps, f"so i draw {resolved}."])
    return Reasoning(prompt, think, resolved, metadata, scene, render(scene, image_size))
