"""Editing tasks: a scene, an instruction (recolour, add, remove, move, resize, background) and the scene it
must produce. Each edit changes exactly what it names, so a scorer can check that nothing else changed."""

import random
from dataclasses import dataclass, replace

from PIL import Image

from bagel_mini.shapes_world.scene import (
    BACKGROUNDS,
    COLORS,
    MAX_OBJECTS,
    SHAPES,
    Scene,
    fits,
    moved,
    place,
    random_scene,
    render,
    replace_object,
)
from bagel_mini.shapes_world.text import article

MIN_SIZE = 0.13  # the smallest an edit may shrink an object to (8 pixels at 64 x 64)
EDIT_MOVE = 0.2  # how far a "move" edit moves an object, as a fraction of the image side
RESIZE = 1.5  # the factor of "bigger" (and 1 / RESIZE of "smaller")


@dataclass
class Edit:
    kind: str  # one of EDITS
    instruction: str
    source: Scene
    target: Scene
    source_image: Image.Image
    target_image: Image.Image


def edit(rng: random.Random, image_size: int = 64, kind: str | None = None) -> Edit:
    """A scene, an instruction of the given (or a random) kind, and the scene it must produce."""
    kind = kind or rng.choice(sorted(EDITS))
    if kind not in EDITS:
        raise ValueError(f"unknown edit {kind!r}; choose one of {', '.join(EDITS)}")
    while True:
        source = random_scene(rng)
        made = EDITS[kind](rng, source)
        if made is not None:  # else this scene cannot take it (e.g. no room to add): draw another
            instruction, target = made
            return Edit(kind, instruction, source, target, render(source, image_size), render(target, image_size))


# Each edit: (rng, scene) -> (instruction, edited scene), or None when the scene cannot take it.


def _recolor(rng, scene):
    o = rng.choice(scene.objects)
    new = rng.choice([c for c in COLORS if all((p.shape, p.color) != (o.shape, c) for p in scene.objects)])
    return f"make the {o.name} {new}", replace_object(scene, o, replace(o, color=new))


def _add(rng, scene):
    taken = [(o.shape, o.color) for o in scene.objects]
    shape, color = rng.choice([(s, c) for s in SHAPES for c in COLORS if (s, c) not in taken])
    new = place(rng, scene.objects, shape, color) if len(scene.objects) < MAX_OBJECTS else None
    return None if new is None else (f"add {article(new.name)}", replace(scene, objects=(*scene.objects, new)))


def _remove(rng, scene):
    if len(scene.objects) < 2:
        return None
    o = rng.choice(scene.objects)
    return f"remove the {o.name}", replace(scene, objects=tuple(p for p in scene.objects if p is not o))


def _move(rng, scene):
    made = moved(rng, scene, EDIT_MOVE)
    return None if made is None else (f"move the {made[0].name} {made[1]}", made[2])


def _resize(rng, scene):
    o = rng.choice(scene.objects)
    word, factor = rng.choice([("bigger", RESIZE), ("smaller", 1 / RESIZE)])
    resized = replace(o, size=o.size * factor)
    if resized.size < MIN_SIZE or not fits(resized, [p for p in scene.objects if p is not o]):
        return None
    return f"make the {o.name} {word}", replace_object(scene, o, resized)


def _background(rng, scene):
    new = rng.choice([b for b in BACKGROUNDS if b != scene.background])
    return f"make the background {new}", replace(scene, background=new)


EDITS = {
    "recolor": _recolor,
    "add": _add,
    "remove": _remove,
    "move": _move,
    "resize": _resize,
    "background": _background,
}
