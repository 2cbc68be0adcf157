"""Shapes World: a synthetic world in which every BAGEL task can be generated and scored (DESIGN.md section 5:
the paper's kinds of training data, in miniature).

A *scene* is 1-4 objects (shape, colour, size, position) on a plain background. Scenes are drawn with
anti-aliasing (rendered at 4x, then 4x4 blocks averaged) and turned into the task types BAGEL trains on:

- text-to-image prompts in GenEval's six categories, each with GenEval's metadata, so that evaluate.py can
  score what a model draws;
- understanding: a caption, or a question with one exact answer (VQA);
- editing: an instruction and the scene it must produce (recolour, add, remove, move, resize, background);
- a "video": 3-4 frames in which one object moves per step, each motion captioned;
- reasoning: a prompt that needs one step of knowledge ("a circle the colour of grass"), a short think
  trace and the prompt it resolves to ("a green circle").

Tasks hold plain strings, scenes and PIL images; `to_sample` turns one into the items navit.py packs.
`ShapesWorld` is an endless seeded stream of tasks, different for every rank and data-loader worker.
"""

import math
import random
import re
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from PIL import Image, ImageDraw
from torch.utils.data import IterableDataset, get_worker_info

from bagel_mini.diffusion_forcing import frame_items, random_group_sizes
from bagel_mini.images import to_tensor
from bagel_mini.inference import GEN_THINK_SYSTEM_PROMPT
from bagel_mini.navit import Sample, Text, VaeImage, VitImage

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# GenEval's first six colours; the values keep every pair apart even at a half-covered edge pixel.
COLORS = {
    "red": (220, 40, 40),
    "orange": (250, 125, 10),
    "yellow": (240, 215, 20),
    "green": (40, 160, 60),
    "blue": (40, 90, 220),
    "purple": (140, 60, 190),
}
BACKGROUNDS = {"white": (250, 250, 250), "grey": (200, 200, 200), "beige": (240, 228, 200)}
SHAPES = ("circle", "square", "triangle", "diamond", "cross")
NUMBERS = ("zero", "one", "two", "three", "four")
RELATIONS = ("left of", "right of", "above", "below")
QUESTION_KINDS = ("caption", "count", "count_shape", "color", "shape", "exists", "background", "relation")
GENEVAL_TAGS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")

MAX_OBJECTS = 4
SIZES = (0.16, 0.28)  # side of an object's square bounding box, as a fraction of the image side
MIN_SIZE = 0.13  # the smallest an edit may shrink an object to (8 pixels at 64 x 64)
MARGIN = 0.04  # the least distance between an object and the border of the image
GAP = 0.06  # the least distance between the boxes of two objects
CROSS_ARM = 0.36  # thickness of a cross's arms, as a fraction of its size
_A, _B = 0.5 - CROSS_ARM / 2, 0.5 + CROSS_ARM / 2  # where a cross's arms begin and end across its box
POLYGONS = {  # each shape but the circle as polygons in its unit box, (0, 0) at the top left
    "square": [[(0, 0), (1, 0), (1, 1), (0, 1)]],
    "triangle": [[(0, 1), (0.5, 0), (1, 1)]],  # pointing up
    "diamond": [[(0.5, 0), (1, 0.5), (0.5, 1), (0, 0.5)]],
    "cross": [[(0, _A), (1, _A), (1, _B), (0, _B)], [(_A, 0), (_B, 0), (_B, 1), (_A, 1)]],
}
CLEAR = 0.15  # a relation is stated only when GenEval's score is this far from its 0.5 threshold
MOVES = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
EDIT_MOVE, VIDEO_STEP, RESIZE = 0.2, 0.15, 1.5  # a "move" edit, a video step (image fractions); "bigger" factor

# One step of world knowledge for the reasoning prompts: things of each colour.
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


@dataclass(frozen=True)
class SceneObject:
    shape: str
    color: str
    size: float  # side of its square bounding box, fraction of the image side
    x: float  # centre of the box, fraction of the image width from the left
    y: float  # fraction of the image height from the top

    @property
    def width(self) -> float:
        return self.size

    @property
    def height(self) -> float:
        return self.size

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"


@dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]
    background: str


@dataclass
class TextToImage:
    prompt: str
    metadata: dict  # GenEval's: tag, include [{class, count, color?, position?}], exclude, prompt
    scene: Scene
    image: Image.Image


@dataclass
class Question:
    kind: str  # caption, count, count_shape, color, shape, exists, relation or background
    question: str
    answer: str
    scene: Scene
    image: Image.Image


@dataclass
class Edit:
    kind: str  # recolor, add, remove, move, resize or background
    instruction: str
    source: Scene
    target: Scene
    source_image: Image.Image
    target_image: Image.Image


@dataclass
class Video:
    caption: str  # the first frame
    moves: list[str]  # moves[i] leads from frame i to frame i + 1
    scenes: list[Scene]
    frames: list[Image.Image]


@dataclass
class Reasoning:
    prompt: str
    think: str
    resolved: str  # the plain prompt the reasoning arrives at; metadata scores it
    metadata: dict
    scene: Scene
    image: Image.Image


Task = TextToImage | Question | Edit | Video | Reasoning


# ---- geometry -------------------------------------------------------------------------------------


def relation_scores(a, b) -> dict[str, float]:
    """GenEval's position rule for `a` relative to `b` (anything with x, y, width, height): the centre
    offset, shrunk towards zero by 0.1 x (width_a + width_b) per axis, over the centre distance. A
    relation holds when its score exceeds 0.5, so a diagonal neighbour can be both left of and above."""
    dx, dy = a.x - b.x, a.y - b.y
    distance = math.hypot(dx, dy)
    if distance == 0:
        return dict.fromkeys(RELATIONS, 0.0)
    sx = math.copysign(max(abs(dx) - 0.1 * (a.width + b.width), 0.0), dx) / distance
    sy = math.copysign(max(abs(dy) - 0.1 * (a.height + b.height), 0.0), dy) / distance
    return {"left of": -sx, "right of": sx, "above": -sy, "below": sy}


def relations(a, b) -> set[str]:
    return {relation for relation, score in relation_scores(a, b).items() if score > 0.5}


def clear_relation(a, b) -> str | None:
    """The one relation of a to b, if it holds with a margin and no other comes close."""
    scores = relation_scores(a, b)
    best = max(scores, key=scores.get)
    if scores[best] > 0.5 + CLEAR and all(s < 0.5 - CLEAR for r, s in scores.items() if r != best):
        return best
    return None


def fits(candidate: SceneObject, others) -> bool:
    """Inside the margins, and its box at least GAP from every other box along x or y."""
    half = candidate.size / 2
    if not all(MARGIN + half <= value <= 1 - MARGIN - half for value in (candidate.x, candidate.y)):
        return False
    return all(
        abs(candidate.x - o.x) >= half + o.size / 2 + GAP or abs(candidate.y - o.y) >= half + o.size / 2 + GAP
        for o in others
    )


def place(rng: random.Random, others, shape: str, color: str, tries: int = 50) -> SceneObject | None:
    """A new object at a random free spot among `others`, or None if none was found."""
    for _ in range(tries):
        size = rng.uniform(*SIZES)
        low, high = MARGIN + size / 2, 1 - MARGIN - size / 2
        candidate = SceneObject(shape, color, size, rng.uniform(low, high), rng.uniform(low, high))
        if fits(candidate, others):
            return candidate
    return None


def layout(rng: random.Random, specs: list[tuple[str, str]]) -> Scene:
    """A scene of the given (shape, colour) objects, placed at random; retried until all fit."""
    while True:
        objects = []
        for shape, color in specs:
            new = place(rng, objects, shape, color)
            if new is None:
                break
            objects.append(new)
        else:
            return Scene(tuple(objects), rng.choice(list(BACKGROUNDS)))


def random_scene(rng: random.Random, low: int = 1, high: int = MAX_OBJECTS) -> Scene:
    """low..high objects; no two share both shape and colour, so "the red circle" names one object."""
    pairs = [(shape, color) for shape in SHAPES for color in COLORS]
    return layout(rng, rng.sample(pairs, rng.randint(low, high)))


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


def render(scene: Scene, size: int = 64, supersample: int = 4) -> Image.Image:
    """The scene as a size x size RGB image, anti-aliased: drawn `supersample` times larger, then each block of
    pixels averaged (a box filter: each pixel gets the share of paint it covers, with no ringing)."""
    big = size * supersample
    image = Image.new("RGB", (big, big), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(image)
    for o in scene.objects:
        x0, y0, s = (o.x - o.size / 2) * big, (o.y - o.size / 2) * big, o.size * big
        if o.shape == "circle":
            draw.ellipse([x0, y0, x0 + s, y0 + s], fill=COLORS[o.color])
        else:
            for polygon in POLYGONS[o.shape]:
                draw.polygon([(x0 + u * s, y0 + v * s) for u, v in polygon], fill=COLORS[o.color])
    return image.reduce(supersample)


# ---- words ----------------------------------------------------------------------------------------


def article(phrase: str) -> str:
    return f"{'an' if phrase[0] in 'aeiou' else 'a'} {phrase}"


def plural(shape: str) -> str:
    return shape + ("es" if shape.endswith("s") else "s")  # GenEval's rule


def count_phrase(count: int, shape: str) -> str:
    return article(shape) if count == 1 else f"{NUMBERS[count]} {plural(shape)}"


def listing(phrases: list[str]) -> str:
    return phrases[0] if len(phrases) == 1 else f"{', '.join(phrases[:-1])} and {phrases[-1]}"


def caption(scene: Scene) -> str:
    return f"{listing([article(o.name) for o in scene.objects])} on {article(scene.background)} background"


# ---- tasks ----------------------------------------------------------------------------------------


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


def edit(rng: random.Random, image_size: int = 64, kind: str | None = None) -> Edit:
    """A scene, an instruction of the given (or a random) kind, and the scene it must produce."""
    kind = kind or rng.choice(sorted(EDITS))
    if kind not in EDITS:
        raise ValueError(f"unknown edit {kind!r}; choose one of {', '.join(EDITS)}")
    while True:
        source = random_scene(rng)
        made = EDITS[kind](rng, source)
        if made is not None:
            instruction, target = made
            return Edit(kind, instruction, source, target, render(source, image_size), render(target, image_size))


def _recolor(rng, scene):
    o = rng.choice(scene.objects)
    new = rng.choice([c for c in COLORS if all((p.shape, p.color) != (o.shape, c) for p in scene.objects)])
    return f"make the {o.name} {new}", _swap(scene, o, replace(o, color=new))


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
    made = _moved(rng, scene, EDIT_MOVE)
    return None if made is None else (f"move the {made[0].name} {made[1]}", made[2])


def _moved(rng, scene: Scene, distance: float) -> tuple[SceneObject, str, Scene] | None:
    """One object moved `distance` in a direction where it still fits: (object, direction, new scene)."""
    for o, direction in rng.sample([(o, d) for o in scene.objects for d in MOVES], len(scene.objects) * len(MOVES)):
        dx, dy = MOVES[direction]
        moved = replace(o, x=o.x + dx * distance, y=o.y + dy * distance)
        if fits(moved, [p for p in scene.objects if p is not o]):
            return o, direction, _swap(scene, o, moved)
    return None


def _resize(rng, scene):
    o = rng.choice(scene.objects)
    word, factor = rng.choice([("bigger", RESIZE), ("smaller", 1 / RESIZE)])
    resized = replace(o, size=o.size * factor)
    if resized.size < MIN_SIZE or not fits(resized, [p for p in scene.objects if p is not o]):
        return None
    return f"make the {o.name} {word}", _swap(scene, o, resized)


def _background(rng, scene):
    new = rng.choice([b for b in BACKGROUNDS if b != scene.background])
    return f"make the background {new}", replace(scene, background=new)


def _swap(scene: Scene, old: SceneObject, new: SceneObject) -> Scene:
    return replace(scene, objects=tuple(new if o is old else o for o in scene.objects))


EDITS = {
    "recolor": _recolor,
    "add": _add,
    "remove": _remove,
    "move": _move,
    "resize": _resize,
    "background": _background,
}


def video(rng: random.Random, image_size: int = 64) -> Video:
    """3-4 frames; between two frames one object moves one step, and a caption says which and where."""
    frames = rng.randint(3, 4)
    while True:
        scenes, moves = [random_scene(rng, 1, 3)], []
        while len(scenes) < frames and (step := _moved(rng, scenes[-1], VIDEO_STEP)) is not None:
            moves.append(f"the {step[0].name} moves {step[1]}")
            scenes.append(step[2])
        if len(scenes) == frames:
            return Video(caption(scenes[0]), moves, scenes, [render(s, image_size) for s in scenes])


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


TASKS: dict[str, Callable[[random.Random, int], Task]] = {
    "text_to_image": text_to_image,
    "edit": edit,
    "video": video,
    "reasoning": reasoning,
    "caption": lambda rng, image_size: question(rng, image_size, "caption"),
    "vqa": question,
}
# Generation (the first four) : understanding (the last two) = 4 : 1: the paper found that sampling generation
# data more often than understanding data helps generation without hurting understanding (DESIGN.md section 6).
DEFAULT_MIX = {"text_to_image": 0.5, "edit": 0.15, "video": 0.05, "reasoning": 0.1, "caption": 0.05, "vqa": 0.15}


# ---- training samples -----------------------------------------------------------------------------


def think_text(task: Reasoning) -> str:
    """The trace as the model writes it in think mode (inference.GEN_THINK_SYSTEM_PROMPT asks for the tags)."""
    return f"<think> {task.think} </think>"


def to_sample(task: Task, tokenize: Callable[[str], list[int]], rng: random.Random, max_group: int = 2) -> Sample:
    """The task as navit items, marked as BAGEL's data loaders mark them: an image to generate is a noised
    target, an answer or think trace carries the CE loss, and what conditions a generated image (its text,
    the context image) is droppable for CFG; an image to understand is not. Video frames are
    diffusion-forcing groups of 1..max_group frames drawn from `rng`, each after the text leading to it."""
    if isinstance(task, TextToImage):
        return [Text(tokenize(task.prompt), droppable=True), VaeImage(to_tensor(task.image), loss=True)]
    if isinstance(task, Question):
        return [VitImage(to_tensor(task.image)), Text(tokenize(task.question)), Text(tokenize(task.answer), loss=True)]
    if isinstance(task, Edit):
        source = to_tensor(task.source_image)
        return [
            VaeImage(source, droppable=True),
            VitImage(source, droppable=True),
            Text(tokenize(task.instruction), droppable=True),
            VaeImage(to_tensor(task.target_image), loss=True),
        ]
    if isinstance(task, Reasoning):
        return [
            Text(tokenize(GEN_THINK_SYSTEM_PROMPT)),
            Text(tokenize(task.prompt), droppable=True),
            Text(tokenize(think_text(task)), loss=True),
            VaeImage(to_tensor(task.image), loss=True),
        ]
    if isinstance(task, Video):
        items, start = [], 0
        for size in random_group_sizes(len(task.frames), max_group, rng):
            # The caption (first group only) and every move that leads to a frame of this group.
            lines = [task.caption] * (start == 0) + task.moves[max(start - 1, 0) : start + size - 1]
            items.append(Text(tokenize(", then ".join(lines)), droppable=True))
            items += frame_items([to_tensor(frame) for frame in task.frames[start : start + size]], [size])
            start += size
        return items
    raise TypeError(f"expected a Shapes World task, got {type(task).__name__}")


class ShapesWorld(IterableDataset):
    """An endless stream of tasks drawn by `mix` (task name -> weight; DEFAULT_MIX if None).

    Each (seed, rank, data-loader worker) has a stream of its own, so that ranks and workers never repeat
    each other's data and a run can be replayed from its seed. Use a DataLoader with batch_size=None (tasks
    hold PIL images) and turn tasks into samples with `to_sample`.
    """

    def __init__(
        self, seed: int = 0, rank: int = 0, world_size: int = 1, mix: dict | None = None, image_size: int = 64
    ):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1} (world_size {world_size})")
        self.seed, self.rank, self.world_size, self.image_size = seed, rank, world_size, image_size
        self.mix = _checked(DEFAULT_MIX if mix is None else mix)

    def __iter__(self) -> Iterator[Task]:
        worker = get_worker_info()
        rng = random.Random(f"shapes-world {self.seed} {self.rank} {worker.id if worker else 0}")
        while True:
            yield random_task(rng, self.image_size, self.mix)


def random_task(rng: random.Random, image_size: int = 64, mix: dict | None = None) -> Task:
    """One task, its type drawn by `mix` (task name -> weight; DEFAULT_MIX if None)."""
    mix = _checked(DEFAULT_MIX if mix is None else mix)
    return TASKS[rng.choices(list(mix), list(mix.values()))[0]](rng, image_size)


def _checked(mix: dict) -> dict:
    if set(mix) - set(TASKS):
        raise ValueError(f"unknown task {sorted(set(mix) - set(TASKS))} in the mix; choose from {', '.join(TASKS)}")
    if any(weight < 0 for weight in mix.values()) or sum(mix.values()) <= 0:
        raise ValueError(f"mix weights must be non-negative with a positive sum, got {mix}")
    return mix


# ---- vocabulary -----------------------------------------------------------------------------------


def texts(task: Task) -> list[str]:
    """The strings a task feeds the tokenizer."""
    if isinstance(task, TextToImage):
        return [task.prompt]
    if isinstance(task, Question):
        return [task.question, task.answer]
    if isinstance(task, Edit):
        return [task.instruction]
    if isinstance(task, Video):
        return [task.caption, *task.moves]
    return [task.prompt, think_text(task)]


WORD_PATTERN = re.compile(r"</?think>|[A-Za-z]+|[^\sA-Za-z]")  # a word, a think tag, or one other character
_TEMPLATE_WORDS = "describe the image how many shapes are there what colour is one background and on yes no nothing"
_TEMPLATE_WORDS += " make add remove move moves bigger smaller then so i draw , . ? <think> </think>"
_SOURCES = [_TEMPLATE_WORDS, GEN_THINK_SYSTEM_PROMPT, *COLORS, *BACKGROUNDS, *SHAPES, *map(plural, SHAPES), *NUMBERS]
_SOURCES += [*RELATIONS, *MOVES, *RIDDLES.values(), *(thing for things in THINGS.values() for thing in things), "an"]
_SOURCES += [rule.format(a="", as_="", bs="") + " " + step for rule, _, _, step in ARITHMETIC]
WORDS = sorted(set(WORD_PATTERN.findall(" ".join(_SOURCES))))  # every word and sign the world writes


def corpus(n: int, seed: int = 0) -> Iterator[str]:
    """Texts to train a toy tokenizer on: every word of the world once, the think system prompt, then the
    texts of n tasks (so that frequent words get their own tokens)."""
    yield " ".join(WORDS)
    yield GEN_THINK_SYSTEM_PROMPT
    tasks = iter(ShapesWorld(seed, image_size=16))  # the texts do not depend on the image size; small renders are fast
    for _ in range(n):
        yield from texts(next(tasks))


# ---- a picture ------------------------------------------------------------------------------------


def draw_examples(seed: int = 0) -> "Figure":
    """A 4x4 matplotlib figure: eight scenes with caption and question, an edit, a reasoning prompt, a
    position prompt, and a video."""
    from matplotlib.figure import Figure

    rng = random.Random(seed)
    figure = Figure(figsize=(9, 11.5))
    axes = figure.subplots(4, 4)
    for ax in axes[:2].flat:
        task = question(rng)
        _panel(ax, task.image, [caption(task.scene), f"Q: {task.question}", f"A: {task.answer}"])
    task = edit(rng)
    _panel(axes[2, 0], task.source_image, [f"edit: {task.instruction}"])
    _panel(axes[2, 1], task.target_image, ["the expected result"])
    task = reasoning(rng)
    _panel(axes[2, 2], task.image, [f"think mode: {task.prompt}", think_text(task)])
    task = text_to_image(rng, tag="position")
    _panel(axes[2, 3], task.image, [f"GenEval {task.metadata['tag']}: {task.prompt}"])
    task = video(rng)
    for ax, frame, label in zip(axes[3], task.frames, [f"video: {task.caption}", *task.moves]):
        _panel(ax, frame, [label])
    for ax in axes[3, len(task.frames) :]:
        ax.axis("off")
    figure.tight_layout()
    return figure


def _panel(ax, image: Image.Image, lines: list[str]) -> None:
    ax.imshow(image, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("\n".join(textwrap.fill(line, 30) for line in lines), fontsize=7.5)


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 2:
        sys.exit("usage: python -m bagel_mini.shapes_world OUT.png")
    draw_examples().savefig(sys.argv[1], dpi=80)
    print(f"wrote {sys.argv[1]}")
