"""Drawing tasks by the training mix: one at a time (`random_task`) or as an endless seeded stream
(`task_stream`)."""

import random
from collections.abc import Callable, Iterator

from bagel_mini.shapes_world.edits import Edit, edit, reasoning_edit
from bagel_mini.shapes_world.prompts import TextToImage, text_to_image
from bagel_mini.shapes_world.thinking import Reasoning, reasoning
from bagel_mini.shapes_world.understanding import Question, question
from bagel_mini.shapes_world.videos import Video, video

Task = TextToImage | Question | Edit | Video | Reasoning

TASKS: dict[str, Callable[[random.Random, int], Task]] = {
    "text_to_image": text_to_image,
    "edit": edit,
    "video": video,
    "reasoning": reasoning,
    "reasoning_edit": reasoning_edit,  # in no mix by default (the findings' editing runs add it)
    "caption": lambda rng, image_size: question(rng, image_size, "caption"),
    "vqa": question,
}
# Generation (the first four) : understanding (the last two) = 4 : 1: the paper found that sampling generation
# data more often than understanding data helps generation without hurting understanding.
DEFAULT_MIX = {"text_to_image": 0.5, "edit": 0.15, "video": 0.05, "reasoning": 0.1, "caption": 0.05, "vqa": 0.15}
GENERATION_TASKS = ("text_to_image", "edit", "video", "reasoning", "reasoning_edit")


def with_ratio(mix: dict, ratio: float) -> dict:
    """`mix` with its generation tasks scaled to `ratio` times its understanding tasks, each group's own
    proportions kept (the paper's data-ratio ablation, Figure 5)."""
    generation = sum(weight for name, weight in mix.items() if name in GENERATION_TASKS)
    understanding = sum(weight for name, weight in mix.items() if name not in GENERATION_TASKS)
    if not generation or not understanding:
        raise ValueError(f"a ratio of generation to understanding needs both kinds of tasks; the mix is {mix}")
    scale = {True: ratio / generation, False: 1 / understanding}
    return {name: weight * scale[name in GENERATION_TASKS] for name, weight in mix.items()}


def random_task(rng: random.Random, image_size: int = 64, mix: dict | None = None) -> Task:
    """One task, its type drawn by `mix` (task name -> weight; DEFAULT_MIX if None)."""
    mix = _checked(DEFAULT_MIX if mix is None else mix)
    return TASKS[rng.choices(list(mix), list(mix.values()))[0]](rng, image_size)


def task_stream(seed: int = 0, mix: dict | None = None, image_size: int = 64) -> Iterator[Task]:
    """An endless stream of tasks drawn by `mix`, the same for the same seed (the tokenizer's corpus, tutorials).

    Training draws its own tasks with `random_task`, from generators seeded per step (bagel_mini/data.py).
    """
    mix = _checked(DEFAULT_MIX if mix is None else mix)
    rng = random.Random(f"shapes-world {seed} 0 0")  # the stream's seed string (kept: it fixes the toy tokenizer)
    while True:
        yield random_task(rng, image_size, mix)


def _checked(mix: dict) -> dict:
    if set(mix) - set(TASKS):
        raise ValueError(f"unknown task {sorted(set(mix) - set(TASKS))} in the mix; choose from {', '.join(TASKS)}")
    if any(weight < 0 for weight in mix.values()) or sum(mix.values()) <= 0:
        raise ValueError(f"mix weights must be non-negative with a positive sum, got {mix}")
    return mix
