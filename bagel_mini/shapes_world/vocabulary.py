"""The words the world writes: the texts of a task, every word and sign of the world, and a corpus to train
a toy tokenizer on."""

import re
from collections.abc import Iterator

from bagel_mini.shapes_world.edits import Edit
from bagel_mini.shapes_world.prompts import TextToImage
from bagel_mini.shapes_world.relations import RELATIONS
from bagel_mini.shapes_world.samples import think_text
from bagel_mini.shapes_world.scene import BACKGROUNDS, COLORS, MOVES, SHAPES
from bagel_mini.shapes_world.tasks import Task, task_stream
from bagel_mini.shapes_world.text import NUMBERS, plural
from bagel_mini.shapes_world.thinking import ARITHMETIC, RIDDLES, THINGS
from bagel_mini.shapes_world.understanding import Question
from bagel_mini.shapes_world.videos import Video
from bagel_mini.tokenizer import GEN_THINK_SYSTEM_PROMPT


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
    tasks = task_stream(seed, image_size=16)  # the texts do not depend on the image size; small renders are fast
    for _ in range(n):
        yield from texts(next(tasks))
