"""Shapes World: a synthetic world in which every BAGEL task can be generated and scored (the paper's kinds
of training data, in miniature).

A *scene* is 1-4 objects (shape, colour, size, position) on a plain background. Scenes are drawn with
anti-aliasing (rendered at 4x, then 4x4 blocks averaged) and turned into the task types BAGEL trains on:

- text-to-image prompts in GenEval's six categories, each with GenEval's metadata, so that evaluate.py can
  score what a model draws (prompts.py);
- understanding: a caption, or a question with one exact answer (VQA) (understanding.py);
- editing: an instruction and the scene it must produce (recolour, add, remove, move, resize, background),
  and reasoning edits that name their change through one step of knowledge (edits.py);
- a "video": 3-4 frames in which one object moves per step, each motion captioned (videos.py);
- reasoning: a prompt that needs one step of knowledge ("a circle the colour of grass"), a short think
  trace and the prompt it resolves to ("a green circle") (thinking.py).

Scenes live in scene.py, GenEval's position rule in relations.py and the English in text.py. Tasks hold
plain strings, scenes and PIL images; `to_sample` (samples.py) turns one into the items navit.py packs.
`random_task` and `task_stream` (tasks.py) draw tasks by the training mix; vocabulary.py gives a
tokenizer's corpus and figure.py a figure of examples. The scorer that evaluate.py runs finds the objects
of an image (detection.py) and gives each output its verdict (scoring.py).
"""

from bagel_mini.shapes_world.edits import Edit, edit, reasoning_edit
from bagel_mini.shapes_world.prompts import GENEVAL_TAGS, TextToImage, text_to_image
from bagel_mini.shapes_world.samples import to_sample
from bagel_mini.shapes_world.scene import BACKGROUNDS, COLORS, SHAPES, Scene, SceneObject, random_scene, render
from bagel_mini.shapes_world.tasks import DEFAULT_MIX, GENERATION_TASKS, Task, random_task, task_stream, with_ratio
from bagel_mini.shapes_world.thinking import Reasoning, reasoning
from bagel_mini.shapes_world.understanding import QUESTION_KINDS, Question, question
from bagel_mini.shapes_world.videos import Video, video
from bagel_mini.shapes_world.vocabulary import corpus, texts

__all__ = [
    "BACKGROUNDS",
    "COLORS",
    "DEFAULT_MIX",
    "GENERATION_TASKS",
    "GENEVAL_TAGS",
    "QUESTION_KINDS",
    "SHAPES",
    "Edit",
    "Question",
    "Reasoning",
    "Scene",
    "SceneObject",
    "Task",
    "TextToImage",
    "Video",
    "corpus",
    "edit",
    "question",
    "random_scene",
    "random_task",
    "reasoning",
    "reasoning_edit",
    "render",
    "task_stream",
    "text_to_image",
    "texts",
    "to_sample",
    "video",
    "with_ratio",
]
