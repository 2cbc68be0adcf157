"""Tasks as training samples: the items navit.py packs, marked as BAGEL's data loaders mark them."""

import random
from collections.abc import Callable

from bagel_mini.diffusion_forcing import frame_items, random_group_sizes
from bagel_mini.images import to_tensor
from bagel_mini.navit import Sample, Text, VaeImage, VitImage
from bagel_mini.shapes_world.edits import Edit
from bagel_mini.shapes_world.prompts import TextToImage
from bagel_mini.shapes_world.tasks import Task
from bagel_mini.shapes_world.thinking import Reasoning
from bagel_mini.shapes_world.understanding import Question
from bagel_mini.shapes_world.videos import Video
from bagel_mini.tokenizer import GEN_THINK_SYSTEM_PROMPT


def think_text(task: Reasoning) -> str:
    """The trace as the model writes it in think mode (GEN_THINK_SYSTEM_PROMPT asks for the tags)."""
    return f"<think> {task.think} </think>"


def to_sample(
    task: Task, tokenize: Callable[[str], list[int]], rng: random.Random, max_group: int = 2, edit_vit: bool = True
) -> Sample:
    """The task as navit items, marked as BAGEL's data loaders mark them: an image to generate is a noised
    target, an answer or think trace carries the CE loss, and what conditions a generated image (its text,
    the context image) is droppable for CFG; an image to understand is not. Video frames are
    diffusion-forcing groups of 1..max_group frames drawn from `rng`, each after the text leading to it.
    An edit's source image is given as VAE and ViT tokens, as in BAGEL, or with `edit_vit` False as VAE
    tokens only (the paper's ablation of the ViT's part in editing)."""
    if isinstance(task, TextToImage):
        return [Text(tokenize(task.prompt), droppable=True), VaeImage(to_tensor(task.image), loss=True)]
    if isinstance(task, Question):
        return [VitImage(to_tensor(task.image)), Text(tokenize(task.question)), Text(tokenize(task.answer), loss=True)]
    if isinstance(task, Edit):
        source = to_tensor(task.source_image)
        return [
            VaeImage(source, droppable=True),
            *[VitImage(source, droppable=True)] * edit_vit,
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
