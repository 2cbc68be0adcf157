import io
import random
from dataclasses import replace

import pytest
import torch
from helpers import assert_names

from bagel_mini import shapes_world as world
from bagel_mini.cfg import NO_DROPOUT
from bagel_mini.navit import PackConfig, Text, VaeImage, VitImage, pack
from bagel_mini.shapes_world import Scene, SceneObject
from bagel_mini.shapes_world.figure import draw_examples
from bagel_mini.shapes_world.relations import clear_relation, relations
from bagel_mini.shapes_world.scene import MAX_OBJECTS, MOVES, SIZES, fits
from bagel_mini.shapes_world.text import article, caption
from bagel_mini.shapes_world.thinking import RIDDLES, THINGS
from bagel_mini.shapes_world.understanding import questions
from bagel_mini.shapes_world.vocabulary import WORD_PATTERN, WORDS, texts

IDS = {word: index for index, word in enumerate(WORDS)}
CONFIG = PackConfig(
    bos=len(IDS),
    eos=len(IDS) + 1,
    start_of_image=len(IDS) + 2,
    end_of_image=len(IDS) + 3,
    vit_patch_size=8,
    vit_max_patches_per_side=8,
    pixels_per_latent_token=16,
    max_latent_size=4,
    dropout=NO_DROPOUT,
)


def tokenize(text: str) -> list[int]:
    """A toy tokenizer over the world's words: a KeyError means a text uses a word WORDS lacks."""
    return [IDS[word] for word in WORD_PATTERN.findall(text)]


def fingerprint(task) -> tuple:
    """What a task says and shows, to compare streams."""
    if isinstance(task, world.Video):
        images = task.frames
    elif isinstance(task, world.Edit):
        images = [task.source_image, task.target_image]
    else:
        images = [task.image]
    return (*texts(task), *(image.tobytes() for image in images))


def geneval_position(a: SceneObject, b: SceneObject) -> set[str]:
    """GenEval's relative_position, restated from its description on corner boxes (x0, y0, x1, y1)."""
    box_a = [a.x - a.size / 2, a.y - a.size / 2, a.x + a.size / 2, a.y + a.size / 2]
    box_b = [b.x - b.size / 2, b.y - b.size / 2, b.x + b.size / 2, b.y + b.size / 2]
    centre_a = ((box_a[0] + box_a[2]) / 2, (box_a[1] + box_a[3]) / 2)
    centre_b = ((box_b[0] + box_b[2]) / 2, (box_b[1] + box_b[3]) / 2)
    dims = [box_a[2] - box_a[0] + box_b[2] - box_b[0], box_a[3] - box_a[1] + box_b[3] - box_b[1]]
    offset = [centre_a[0] - centre_b[0], centre_a[1] - centre_b[1]]
    revised = [max(abs(o) - 0.1 * d, 0) * (1 if o > 0 else -1) for o, d in zip(offset, dims)]
    norm = (offset[0] ** 2 + offset[1] ** 2) ** 0.5
    dx, dy = revised[0] / norm, revised[1] / norm
    return {
        name
        for name, holds in [("left of", dx < -0.5), ("right of", dx > 0.5), ("above", dy < -0.5), ("below", dy > 0.5)]
        if holds
    }


def satisfies(scene: Scene, metadata: dict) -> bool:
    """The scene holds exactly the objects of the include clauses, with their colours and relation."""
    counts = {c["class"]: c["count"] for c in metadata["include"]}
    if sorted(o.shape for o in scene.objects) != sorted(s for s, n in counts.items() for _ in range(n)):
        return False
    for clause in metadata["include"]:
        mine = [o for o in scene.objects if o.shape == clause["class"]]
        if "color" in clause and any(o.color != clause["color"] for o in mine):
            return False
        if "position" in clause:
            relation, target = clause["position"]
            others = [o for o in scene.objects if o.shape == metadata["include"][target]["class"]]
            if relation not in geneval_position(mine[0], others[0]):
                return False
    return all(sum(o.shape == c["class"] for o in scene.objects) < c["count"] for c in metadata["exclude"])


def test_the_position_rule_is_genevals():
    rng = random.Random(0)
    for _ in range(2000):
        a, b = (SceneObject("circle", "red", rng.uniform(0.1, 0.4), rng.random(), rng.random()) for _ in range(2))
        assert relations(a, b) == geneval_position(a, b)


@pytest.mark.parametrize("tag", world.GENEVAL_TAGS)
def test_every_prompt_comes_with_genevals_metadata_and_a_scene_that_satisfies_it(tag):
    rng = random.Random(tag)
    for _ in range(60):
        task = world.text_to_image(rng, tag=tag)
        assert task.metadata["tag"] == tag and task.metadata["prompt"] == task.prompt
        assert all(clause["class"] in world.SHAPES for clause in task.metadata["include"])
        assert satisfies(task.scene, task.metadata), task
        if tag == "position":  # the stated relation is clear, not borderline
            a, b = task.scene.objects[1], task.scene.objects[0]
            assert clear_relation(a, b) == task.metadata["include"][1]["position"][0]


def test_scenes_keep_margins_gaps_and_one_object_per_shape_and_colour():
    rng = random.Random(1)
    for _ in range(300):
        scene = world.random_scene(rng)
        assert 1 <= len(scene.objects) <= MAX_OBJECTS
        assert len({(o.shape, o.color) for o in scene.objects}) == len(scene.objects)
        for o in scene.objects:
            assert SIZES[0] <= o.size <= SIZES[1]
            assert fits(o, [p for p in scene.objects if p is not o])


def test_renders_have_the_requested_size_and_anti_aliased_edges():
    scene = Scene((SceneObject("circle", "blue", 0.3, 0.5, 0.5),), "white")
    for size in (32, 64, 96):
        image = world.render(scene, size)
        colours = {colour for _, colour in image.getcolors(size * size)}
        assert image.size == (size, size)
        assert {world.COLORS["blue"], world.BACKGROUNDS["white"]} < colours and len(colours) > 3  # blends at the edge


def test_questions_about_a_hand_made_scene_have_the_expected_answers():
    red_circle = SceneObject("circle", "red", 0.2, 0.25, 0.5)
    blue_square = SceneObject("square", "blue", 0.2, 0.75, 0.5)
    kinds = questions(Scene((red_circle, blue_square), "white"), random.Random(0))
    assert kinds["caption"] == [("describe the image.", "a red circle and a blue square on a white background")]
    assert kinds["count"] == [("how many shapes are there?", "two")]
    assert ("how many circles are there?", "one") in kinds["count_shape"]
    assert ("how many triangles are there?", "zero") in kinds["count_shape"]
    assert ("what colour is the circle?", "red") in kinds["color"]
    assert ("what shape is the blue one?", "square") in kinds["shape"]
    assert ("is there a red circle?", "yes") in kinds["exists"]
    assert sorted(answer for _, answer in kinds["exists"]) == ["no", "no", "yes", "yes"]
    assert ("what is left of the blue square?", "the red circle") in kinds["relation"]
    assert ("what is right of the blue square?", "nothing") in kinds["relation"]
    assert ("what is above the red circle?", "nothing") in kinds["relation"]
    assert kinds["background"] == [("what colour is the background?", "white")]

    # A triangle up and to the left of the square is as much "left of" as "above" it: neither is asked.
    triangle = SceneObject("triangle", "green", 0.2, 0.45, 0.2)
    kinds = questions(Scene((red_circle, blue_square, triangle), "white"), random.Random(0))
    asked = [text for text, _ in kinds["relation"]]
    assert "what is left of the blue square?" not in asked and "what is above the blue square?" not in asked


def test_each_question_kind_can_be_asked_and_unknown_kinds_are_named():
    rng = random.Random(2)
    for kind in world.QUESTION_KINDS:
        assert world.question(rng, kind=kind).kind == kind
    with pytest.raises(ValueError) as error:
        world.question(rng, kind="colour")
    assert_names(error, "kind", "colour", *world.QUESTION_KINDS)


@pytest.mark.parametrize("kind", ["recolor", "add", "remove", "move", "resize", "background"])
def test_an_edit_changes_exactly_what_its_instruction_names(kind):
    rng = random.Random(kind)
    for _ in range(40):
        task = world.edit(rng, kind=kind)
        source, target = set(task.source.objects), set(task.target.objects)
        gone, new = source - target, target - source
        for o in task.target.objects:
            assert fits(o, [p for p in task.target.objects if p is not o])
        if kind == "background":
            assert not gone and not new and task.instruction == f"make the background {task.target.background}"
            assert task.source.background != task.target.background
            continue
        assert task.source.background == task.target.background
        if kind == "add":
            assert not gone and len(new) == 1 and task.instruction == f"add {article(new.pop().name)}"
        elif kind == "remove":
            assert len(gone) == 1 and not new and task.instruction == f"remove the {gone.pop().name}"
        else:
            (old,), (changed,) = gone, new
            assert task.instruction.startswith(f"{'move' if kind == 'move' else 'make'} the {old.name} ")
            word = task.instruction.split()[-1]
            if kind == "recolor":
                assert changed == replace(old, color=word) and word != old.color
            elif kind == "move":
                dx, dy = MOVES[word]
                assert changed.x == pytest.approx(old.x + 0.2 * dx) and changed.y == pytest.approx(old.y + 0.2 * dy)
                assert (changed.shape, changed.color, changed.size) == (old.shape, old.color, old.size)
            else:
                factor = {"bigger": 1.5, "smaller": 1 / 1.5}[word]
                assert changed == replace(old, size=pytest.approx(old.size * factor))


def test_a_reasoning_edit_names_its_change_through_one_step_of_knowledge():
    rng, forms = random.Random("reasoning edits"), set()
    for _ in range(60):
        task = world.reasoning_edit(rng)
        source, target = set(task.source.objects), set(task.target.objects)
        gone, new = source - target, target - source
        assert task.kind == "reasoning" and task.source.background == task.target.background
        if task.instruction.startswith("remove the "):  # by its shape's riddle, the one object of that shape
            (old,) = gone
            assert not new and task.instruction == f"remove the {RIDDLES[old.shape]}"
            assert [o.shape for o in task.source.objects].count(old.shape) == 1
        elif task.instruction.startswith("add "):  # a colour and a shape's riddle
            (added,) = new
            assert not gone and task.instruction == f"add {article(f'{added.color} {RIDDLES[added.shape]}')}"
        else:  # the colour of a thing
            (old,), (changed,) = gone, new
            thing = task.instruction.removeprefix(f"make the {old.name} the colour of ")
            assert changed == replace(old, color=changed.color) and thing in THINGS[changed.color]
            assert changed.color != old.color
        forms.add(task.instruction.split()[0])
        assert all(word in WORDS for word in WORD_PATTERN.findall(task.instruction))  # the tokenizer's words
    assert forms == {"remove", "add", "make"}


def test_a_video_moves_one_object_one_step_per_frame_as_captioned():
    rng = random.Random(3)
    for _ in range(40):
        task = world.video(rng)
        assert 3 <= len(task.frames) <= 4 and len(task.moves) == len(task.frames) - 1 == len(task.scenes) - 1
        assert task.caption == caption(task.scenes[0])
        for before, after, move in zip(task.scenes, task.scenes[1:], task.moves):
            (old,), (new,) = set(before.objects) - set(after.objects), set(after.objects) - set(before.objects)
            direction = move.split()[-1]
            assert move == f"the {old.name} moves {direction}"
            dx, dy = MOVES[direction]
            assert (new.x - old.x, new.y - old.y) == pytest.approx((0.15 * dx, 0.15 * dy))


def test_reasoning_prompts_resolve_by_the_stated_knowledge_or_arithmetic():
    facts = {"grass": "green", "the sky": "blue", "a banana": "yellow", "a tomato": "red", "a plum": "purple"}
    rng = random.Random(4)
    for _ in range(200):
        task = world.reasoning(rng)
        assert satisfies(task.scene, task.metadata) and task.metadata["prompt"] == task.resolved
        assert task.think.endswith(f"so i draw {task.resolved}.")
        for thing, colour in facts.items():
            if task.prompt.endswith(f"the colour of {thing}"):
                assert task.metadata["include"][0]["color"] == colour
        if task.metadata["tag"] == "counting":
            (named, asked) = [clause["count"] for clause in task.metadata["include"]]
            rule = {"one more": named + 1, "one fewer": named - 1, "twice": 2 * named, "as many": named}
            assert asked == next(count for words, count in rule.items() if words in task.prompt)


def test_the_same_seed_gives_the_same_stream_and_other_seeds_differ():
    def first(n, **options):
        stream = world.task_stream(**options)
        return [fingerprint(next(stream)) for _ in range(n)]

    assert first(30, seed=7) == first(30, seed=7)
    assert first(30, seed=7) != first(30, seed=8)


def test_the_default_mix_samples_generation_four_times_as_often_as_understanding():
    generation = {"text_to_image", "edit", "video", "reasoning"}
    share = sum(w for name, w in world.DEFAULT_MIX.items() if name in generation) / sum(world.DEFAULT_MIX.values())
    assert share == pytest.approx(0.8)
    stream = world.task_stream(seed=6)
    tasks = [next(stream) for _ in range(3000)]
    assert sum(not isinstance(t, world.Question) for t in tasks) / len(tasks) == pytest.approx(0.8, abs=0.03)
    only_vqa = world.task_stream(mix={"vqa": 1.0})
    assert all(next(only_vqa).kind != "caption" for _ in range(50))
    assert isinstance(world.random_task(random.Random(0), mix={"edit": 1.0, "vqa": 0.0}), world.Edit)
    with pytest.raises(ValueError) as error:
        next(world.task_stream(mix={"text_to_image": 1.0, "audio": 1.0}))
    assert_names(error, "audio", *world.DEFAULT_MIX)  # the unknown task and every known one
    with pytest.raises(ValueError) as error:
        next(world.task_stream(mix={"vqa": -1.0}))
    assert_names(error, "mix", "vqa", "-1.0")


def test_to_sample_marks_items_as_bagel_does_and_packs():
    rng = random.Random(8)
    generators = [world.text_to_image, world.question, world.edit, world.video, world.reasoning]
    tasks = {make.__name__: make(rng) for make in generators}
    samples = {name: world.to_sample(task, tokenize, rng) for name, task in tasks.items()}

    prompt, image = samples["text_to_image"]
    assert prompt.droppable and not prompt.loss and isinstance(image, VaeImage) and image.loss
    vit, question, answer = samples["question"]
    assert isinstance(vit, VitImage) and not vit.droppable and not question.loss and answer.loss
    assert answer.ids == tokenize(tasks["question"].answer)
    clean, vit, instruction, target = samples["edit"]
    assert not clean.loss and clean.droppable and vit.droppable and instruction.droppable and target.loss
    assert torch.equal(clean.pixels, vit.pixels)
    vae_only = world.to_sample(tasks["edit"], tokenize, rng, edit_vit=False)  # the ablation: no ViT tokens
    assert [type(item) for item in vae_only] == [VaeImage, Text, VaeImage] and vae_only[1].ids == instruction.ids
    system, prompt, think, image = samples["reasoning"]
    assert not system.droppable and prompt.droppable and think.loss and image.loss
    assert think.ids == tokenize(f"<think> {tasks['reasoning'].think} </think>")

    video = tasks["video"]
    frames = [item for item in samples["video"] if isinstance(item, VaeImage)]
    lines = [item for item in samples["video"] if isinstance(item, Text)]
    assert len(frames) == len(video.frames) and all(f.loss and f.frame_delta == 1 for f in frames)
    assert len(lines) == sum(not f.joins_previous for f in frames)  # one text before each group of frames
    separator = tokenize(", then ")
    joined = lines[0].ids + [i for t in lines[1:] for i in separator + t.ids]
    assert joined == tokenize(", then ".join([video.caption, *video.moves]))  # caption and moves, in order

    batch = pack(list(samples.values()), CONFIG, random.Random(0))
    assert len(batch.sample_lengths) == len(samples) and len(batch.mse_indexes) > 0 and len(batch.ce_indexes) > 0


def test_the_corpus_covers_every_word_the_world_uses():
    stream = world.task_stream(seed=9)
    for _ in range(2000):
        for text in texts(next(stream)):
            tokenize(text)  # raises KeyError on a word missing from WORDS
    lines = list(world.corpus(20, seed=0))
    assert WORD_PATTERN.findall(lines[0]) == WORDS and len(lines) > 20


def test_the_example_figure_is_small_and_complete():
    figure = draw_examples(seed=0)
    assert len(figure.axes) == 16
    buffer = io.BytesIO()
    figure.savefig(buffer, dpi=80)
    assert buffer.tell() < 200_000
