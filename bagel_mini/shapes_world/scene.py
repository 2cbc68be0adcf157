"""Scenes: 1-4 coloured shapes on a plain background, placed at random and rendered with anti-aliasing."""

import random
from dataclasses import dataclass, replace

from PIL import Image, ImageDraw

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

MAX_OBJECTS = 4
SIZES = (0.16, 0.28)  # side of an object's square bounding box, as a fraction of the image side
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
MOVES = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}  # (dx, dy), y pointing down


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


def replace_object(scene: Scene, old: SceneObject, new: SceneObject) -> Scene:
    return replace(scene, objects=tuple(new if o is old else o for o in scene.objects))


def moved(rng: random.Random, scene: Scene, distance: float) -> tuple[SceneObject, str, Scene] | None:
    """One object moved `distance` in a direction where it still fits: (object, direction, new scene)."""
    for o, direction in rng.sample([(o, d) for o in scene.objects for d in MOVES], len(scene.objects) * len(MOVES)):
        dx, dy = MOVES[direction]
        new = replace(o, x=o.x + dx * distance, y=o.y + dy * distance)
        if fits(new, [p for p in scene.objects if p is not o]):
            return o, direction, replace_object(scene, o, new)
    return None


def paint(draw: ImageDraw.ImageDraw, scene: Scene, side: int, fills: list) -> None:
    """Draw each object of the scene, the i-th in fills[i], on an image `side` pixels wide."""
    for o, fill in zip(scene.objects, fills):
        x0, y0, s = (o.x - o.size / 2) * side, (o.y - o.size / 2) * side, o.size * side
        if o.shape == "circle":
            draw.ellipse([x0, y0, x0 + s, y0 + s], fill=fill)
        else:
            for polygon in POLYGONS[o.shape]:
                draw.polygon([(x0 + u * s, y0 + v * s) for u, v in polygon], fill=fill)


def render(scene: Scene, size: int = 64, supersample: int = 4) -> Image.Image:
    """The scene as a size x size RGB image, anti-aliased: drawn `supersample` times larger, then each block of
    pixels averaged (a box filter: each pixel gets the share of paint it covers, with no ringing)."""
    big = size * supersample
    image = Image.new("RGB", (big, big), BACKGROUNDS[scene.background])
    paint(ImageDraw.Draw(image), scene, big, [COLORS[o.color] for o in scene.objects])
    return image.reduce(supersample)


def object_map(scene: Scene, size: int) -> Image.Image:
    """Which object paints each pixel of a size x size image: 0 for the background, i + 1 for objects[i]
    (drawn in order, so a later object wins where two overlap, as in `render`). Not anti-aliased."""
    image = Image.new("L", (size, size), 0)
    paint(ImageDraw.Draw(image), scene, size, list(range(1, len(scene.objects) + 1)))
    return image
