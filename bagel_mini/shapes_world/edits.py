"""Editing tasks: a scene, an instruction (recolour, add, remove, move, resize, background) and the scene it
must produce. Each edit changes exactly what it names, so a scorer can check that nothing else changed.
Reasoning edits name their change through one step of knowledge ("make the red circle the colour of grass",
"remove the shape with three sides"): the paper's intelligent editing, scored like any other edit."""

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
from bagel_mini.shapes_world.thinking import RIDDLES, THINGS

MIN_SIZE = 0.13  # the smallest an edit may shrink an object to (8 pixels at 64 x 64)
EDIT_MOVE = 0.2  # how far a "move" edit moves an object, as a fraction of the image side
RESIZE = 1.5  # the factor of "bigger" (and 1 / RESIZE of "smaller")


@dataclass
class Edit:
    kind: str  # one of EDITS, or "reasoning"
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
    return _made(rng, image_size, kind, EDITS[kind])


def reasoning_edit(rng: random.Random, image_size: int = 64) -> Edit:
    """An edit whose instruction needs one step of knowledge to resolve: a recolour, a removal or an addition."""
    return _made(rng, image_size, "reasoning", lambda rng, scene: rng.choice(REASONING_EDITS)(rng, scene))


def _made(rng, image_size, kind, make) -> Edit:
    while True:
        source = random_scene(rng)
        made = make(rng, source)
        if made is not None:  # else this scene cannot take it (e.g. no room to add): draw another
            instruction, target = made
            return Edit(kind, instruction, source, target, render(source, image_size), render(target, image_size))


# Each edit: (rng, scene) -> (instruction, edited scene), or None when the scene cannot take it.


def _recolored(rng, scene):
    """An object, a colour it may take (no other object then looks the same) and the scene recoloured."""
    o = rng.choice(scene.objects)
    new = rng.choice([c for c in COLORS if all((p.shape, p.color) != (o.shape, c) for p in scene.objects)])
    return o, new, replace_object(scene, o, replace(o, color=new))


def _recolor(rng, scene):
    o, new, target = _recolored(rng, scene)
    return f"make the {o.name} {new}", target


def _added(rng, scene):
    """A new object (no object in the scene looks the same) and the scene with it, or None without room."""
    taken = [(o.shape, o.color) for o in scene.objects]
    shape, color = rng.choice([(s, c) for s in SHAPES for c in COLORS if (s, c) not in taken])
    new = place(rng, scene.objects, shape, color) if len(scene.objects) < MAX_OBJECTS else None
    return None if new is None else (new, replace(scene, objects=(*scene.objects, new)))


def _add(rng, scene):
    made = _added(rng, scene)
    return None if made is None else (f"add {article(made[0].name)}", made[1])


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


# Reasoning edits: the colour through a thing of that colour, the shape through its riddle (thinking.py).


def _recolor_like_a_thing(rng, scene):
    o, new, target = _recolored(rng, scene)
    return f"make the {o.name} the colour of {rng.choice(THINGS[new])}", target


def _remove_by_riddle(rng, scene):
    unique = [o for o in scene.objects if sum(p.shape == o.shape for p in scene.objects) == 1]
    if len(scene.objects) < 2 or not unique:
        return None
    o = rng.choice(unique)
    return f"remove the {RIDDLES[o.shape]}", replace(scene, objects=tuple(p for p in scene.objects if p is not o))


def _add_by_riddle(rng, scene):
    made = _added(rng, scene)
    if made is None:
        return None
    new, target = made
    return f"add {article(f'{new.color} {RIDDLES[new.shape]}')}", target


REASONING_EDITS = (_recolor_like_a_thing, _remove_by_riddle, _add_by_riddle)
