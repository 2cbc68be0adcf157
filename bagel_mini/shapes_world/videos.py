"""Video tasks: 3-4 frames in which one object moves one step between two frames, each motion captioned."""

import random
from dataclasses import dataclass

from PIL import Image

from bagel_mini.shapes_world.scene import Scene, moved, random_scene, render
from bagel_mini.shapes_world.text import caption

VIDEO_STEP = 0.15  # how far an object moves between two frames, as a fraction of the image side


@dataclass
class Video:
    caption: str  # the first frame
    moves: list[str]  # moves[i] leads from frame i to frame i + 1
    scenes: list[Scene]
    frames: list[Image.Image]


def video(rng: random.Random, image_size: int = 64) -> Video:
    """3-4 frames; between two frames one object moves one step, and a caption says which and where."""
    frames = rng.randint(3, 4)
    while True:
        scenes, moves = [random_scene(rng, 1, 3)], []
        while len(scenes) < frames and (step := moved(rng, scenes[-1], VIDEO_STEP)) is not None:
            moves.append(f"the {step[0].name} moves {step[1]}")
            scenes.append(step[2])
        if len(scenes) == frames:
            return Video(caption(scenes[0]), moves, scenes, [render(s, image_size) for s in scenes])
