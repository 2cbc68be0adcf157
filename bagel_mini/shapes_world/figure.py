"""A figure of examples of every task type: the README's tutorials/figures/shapes_world.png is
`draw_examples().savefig(path, dpi=80)`."""

import random
import textwrap

from matplotlib.figure import Figure
from PIL import Image

from bagel_mini.shapes_world.edits import edit
from bagel_mini.shapes_world.prompts import text_to_image
from bagel_mini.shapes_world.samples import think_text
from bagel_mini.shapes_world.text import caption
from bagel_mini.shapes_world.thinking import reasoning
from bagel_mini.shapes_world.understanding import question
from bagel_mini.shapes_world.videos import video


def draw_examples(seed: int = 0) -> Figure:
    """A 4x4 matplotlib figure: eight scenes with caption and question, an edit, a reasoning prompt, a
    position prompt, and a video."""
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
