import json
import random
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from helpers import TINY, assert_names
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Circle, Polygon, Rectangle
from PIL import Image
from safetensors.torch import save_file

from bagel_mini import DEFAULT_MODEL, evaluate
from bagel_mini import shapes_world as world
from bagel_mini.checkpoint import load_autoencoder
from bagel_mini.shapes_world import Scene, SceneObject
from bagel_mini.shapes_world.detection import detect
from bagel_mini.shapes_world.scene import CROSS_ARM, SIZES, place
from bagel_mini.shapes_world.scoring import edit_correct, geneval_correct, normalize_answer, vqa_accuracy, vqa_by_kind
from bagel_mini.vae import AutoEncoder

CELLS = [(0.27, 0.27), (0.73, 0.27), (0.27, 0.73), (0.73, 0.73)]  # a 2 x 2 grid, row by row


def run_cli(capsys, *arguments: str) -> dict:
    evaluate.main([*arguments, "--json"])
    return json.loads(capsys.readouterr().out)


def matplotlib_scene(metadata: dict, rng: random.Random) -> list[tuple]:
    """Our own layout of what the metadata asks for, on a 2 x 2 grid: (shape, colour, x, y, size)."""
    specs = [
        (c["class"], c.get("color") or rng.choice(list(world.COLORS)))
        for c in metadata["include"]
        for _ in range(c["count"])
    ]
    cells = rng.sample(range(4), len(specs))
    if "position" in metadata["include"][-1]:  # [target, subject]: put the subject on the named side
        relation = metadata["include"][-1]["position"][0]
        row, column = rng.randrange(2), rng.randrange(2)
        cells = {
            "left of": [2 * row + 1, 2 * row],
            "right of": [2 * row, 2 * row + 1],
            "above": [2 + column, column],
            "below": [column, 2 + column],
        }[relation]
    return [(shape, color, *CELLS[cell], rng.uniform(*SIZES)) for (shape, color), cell in zip(specs, cells)]


def draw_with_matplotlib(objects: list[tuple], background: str, size: int, rng: random.Random) -> Image.Image:
    """The objects drawn with matplotlib patches (its own anti-aliasing), in colours a little off the palette."""
    figure = Figure(figsize=(1, 1), dpi=size, facecolor=np.array(world.BACKGROUNDS[background]) / 255)
    ax = figure.add_axes((0, 0, 1, 1), xlim=(0, 1), ylim=(1, 0))
    ax.axis("off")
    for shape, color, x, y, side in objects:
        x, y, h = x + rng.uniform(-0.03, 0.03), y + rng.uniform(-0.03, 0.03), side / 2
        arm = CROSS_ARM * h
        patches = {
            "circle": [Circle((x, y), h)],
            "square": [Rectangle((x - h, y - h), side, side)],
            "triangle": [Polygon([(x - h, y + h), (x, y - h), (x + h, y + h)])],
            "diamond": [Polygon([(x, y - h), (x + h, y), (x, y + h), (x - h, y)])],
            "cross": [Rectangle((x - h, y - arm), side, 2 * arm), Rectangle((x - arm, y - h), 2 * arm, side)],
        }[shape]
        rgb = np.clip(np.array(world.COLORS[color]) + [rng.randint(-12, 12) for _ in range(3)], 0, 255) / 255
        for patch in patches:
            patch.set(facecolor=rgb, edgecolor="none")
            ax.add_patch(patch)
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3].copy())


def test_the_oracle_scores_at_least_0_99_everywhere_with_200_prompts_per_category(capsys):
    scores = run_cli(capsys, "--oracle", "--n", "200")
    assert set(scores["geneval"]) == {*world.GENEVAL_TAGS, "overall"}
    assert min(scores["geneval"].values()) >= 0.99 and scores["vqa"] >= 0.99 and scores["edit"] >= 0.99
    asked = [kind for kind in world.QUESTION_KINDS if kind != "caption"]  # questions with one exact answer
    assert list(scores["vqa_by_kind"]) == asked  # 200 questions ask every kind
    assert min(scores["vqa_by_kind"].values()) >= 0.99


@pytest.mark.parametrize("size", [64, 256])
def test_prompts_drawn_by_matplotlib_score_at_least_0_97_per_category(size, tmp_path, capsys):
    evaluate.main(["--write-prompts", str(tmp_path), "--n", "35", "--seed", "1"])
    rng = random.Random(size)
    for folder in sorted(tmp_path.iterdir()):
        metadata = json.loads((folder / "metadata.jsonl").read_text())
        objects = matplotlib_scene(metadata, rng)
        image = draw_with_matplotlib(objects, rng.choice(list(world.BACKGROUNDS)), size, rng)
        assert image.size == (size, size)
        image.save(folder / "samples" / "0000.png")
    capsys.readouterr()
    scores = run_cli(capsys, "--images", str(tmp_path))
    assert min(scores["geneval"].values()) >= 0.97, scores
    assert scores["vqa"] is None and scores["vqa_by_kind"] is None  # images answer no questions


def wrong_scenes(task: world.TextToImage, rng: random.Random) -> list[Scene]:
    """Renders that break the prompt the way its category tests: shape, missing object, count, colour, relation."""
    scene, objects = task.scene, task.scene.objects
    other_shape = next(s for s in world.SHAPES if s not in {o.shape for o in objects})
    other_color = {o: next(c for c in world.COLORS if c != o.color) for o in objects}
    tag = task.metadata["tag"]
    if tag == "single_object":
        return [replace(scene, objects=(replace(objects[0], shape=other_shape),))]
    if tag == "two_object":
        return [
            replace(scene, objects=objects[:1]),
            replace(scene, objects=(objects[0], replace(objects[1], shape=other_shape))),
        ]
    if tag == "counting":
        fewer = [replace(scene, objects=objects[:-1])]
        extra = place(rng, objects, objects[0].shape, objects[0].color, tries=500)
        return fewer + ([replace(scene, objects=(*objects, extra))] if extra else [])
    if tag == "colors":
        return [
            replace(scene, objects=(replace(objects[0], color=other_color[objects[0]]),)),
            replace(scene, objects=(replace(objects[0], shape=other_shape),)),
        ]
    if tag == "position":  # the two objects trade places: the opposite relation
        a, b = objects
        return [replace(scene, objects=(replace(a, x=b.x, y=b.y), replace(b, x=a.x, y=a.y)))]
    a, b = objects  # color_attr: the colours trade places
    return [
        replace(scene, objects=(replace(a, color=b.color), replace(b, color=a.color))),
        replace(scene, objects=(a,)),
    ]


@pytest.mark.parametrize("tag", world.GENEVAL_TAGS)
def test_a_deliberately_wrong_render_scores_zero_on_its_prompt(tag):
    rng = random.Random(tag)
    for _ in range(25):
        task = world.text_to_image(rng, tag=tag)
        assert geneval_correct(detect(task.image), task.metadata)
        for wrong in wrong_scenes(task, rng):
            assert not geneval_correct(detect(world.render(wrong)), task.metadata), (task.prompt, wrong)


def test_a_blank_image_scores_zero_everywhere():
    prompts, _, edits = evaluate.benchmark(20, seed=2)
    for background in world.BACKGROUNDS.values():
        for size in (64, 300):
            blank = Image.new("RGB", (size, size), background)
            assert detect(blank) == []
            assert not any(geneval_correct([], task.metadata) for task in prompts)
            assert not any(edit_correct(blank, task.target) for task in edits[:5])


@pytest.mark.parametrize("size", [64, 200, 512])
def test_every_shape_and_colour_is_detected_with_its_box_at_any_size(size):
    rng = random.Random(size)
    for shape in world.SHAPES:
        for color in world.COLORS:
            o = SceneObject(shape, color, rng.uniform(0.13, 0.42), rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7))
            (found,) = detect(world.render(Scene((o,), rng.choice(list(world.BACKGROUNDS))), size))
            assert (found.shape, found.color) == (shape, color)
            tolerance = 1.5 / size  # a pixel and a half
            assert abs(found.x - o.x) <= tolerance and abs(found.y - o.y) <= tolerance
            assert abs(found.width - o.size) <= 2 * tolerance and abs(found.height - o.size) <= 2 * tolerance


def test_a_blob_that_is_no_shape_of_the_world_has_no_shape():
    touching = Scene(
        (SceneObject("square", "red", 0.3, 0.35, 0.5), SceneObject("square", "red", 0.3, 0.65, 0.5)), "white"
    )
    (found,) = detect(world.render(touching, 128))  # one 2:1 rectangle
    assert found.shape is None and found.color == "red"


def test_minivqa_is_exact_match_up_to_case_spaces_and_final_punctuation():
    assert normalize_answer("  The Red   Circle. ") == "the red circle"
    assert vqa_accuracy(["Two.", "the  blue square", "three", "yes!"], ["two", "the blue square", "two", "no"]) == 0.5


def test_minivqa_by_kind_scores_each_kind_of_question_on_its_own():
    asked = [("shape", "circle"), ("count", "two"), ("count", "one"), ("count", "three"), ("shape", "cross")]
    questions = [world.Question(kind, "?", truth, None, None) for kind, truth in asked]
    answers = ["square", "two", "One.", "four", "cross"]
    by_kind = vqa_by_kind(answers, questions)
    assert list(by_kind.items()) == [("count", 2 / 3), ("shape", 1 / 2)]  # QUESTION_KINDS order, not the order asked


def test_the_blind_answerer_gives_the_answer_training_pairs_most_often_with_the_same_words(monkeypatch):
    # A training stream with known counts: "how many?" is "two" 3 times and "one" twice.
    seen = [("count", "how many?", "one"), ("count", "how many?", "two"), ("count", "how many?", "two")]
    seen += [("count", "how many?", "two"), ("count", "how many?", "one"), ("count", "how many circles?", "one")]
    seen += [("shape", "what shape?", "cross")]
    stream = iter([world.Question(kind, words, answer, None, None) for kind, words, answer in seen])
    monkeypatch.setattr(evaluate, "BLIND_QUESTIONS", len(seen))
    monkeypatch.setattr(world, "question", lambda rng: next(stream))
    asked = [("count", "how many?"), ("count", "how many squares?"), ("shape", "what shape?")]
    questions = [world.Question(kind, words, "", None, None) for kind, words in asked]
    # Words never seen ("how many squares?") fall back on the kind: "two" 3 times, "one" 3 times, "one" seen first.
    assert evaluate.blind_answers(questions, seed=0) == ["two", "one", "cross"]


def test_the_blind_answerer_scores_minivqa_from_the_questions_alone(capsys):
    blind = run_cli(capsys, "--blind", "--n", "30")
    assert blind["geneval"] is None and blind["edit"] is None
    questions = evaluate.benchmark(30, 0)[1]
    kinds = [q.kind for q in questions]
    assert list(blind["vqa_by_kind"]) == [k for k in world.QUESTION_KINDS if k in kinds]
    # The overall score is the by-kind scores weighted by how often each kind was asked.
    weighted = sum(score * kinds.count(kind) for kind, score in blind["vqa_by_kind"].items()) / len(questions)
    assert blind["vqa"] == pytest.approx(weighted)
    assert blind["vqa"] < 0.7  # no image, no sure answer: most questions have several likely answers


@pytest.mark.parametrize("kind", ["recolor", "add", "remove", "move", "resize", "background"])
def test_miniedit_passes_the_expected_edit_and_fails_no_edit_or_a_changed_rest(kind):
    rng = random.Random(kind)
    for _ in range(15):
        task = world.edit(rng, kind=kind)
        assert edit_correct(task.target_image, task.target)
        assert not edit_correct(task.source_image, task.target)  # the instruction ignored
        other_background = next(b for b in world.BACKGROUNDS if b != task.target.background)
        changed_rest = [replace(task.target, background=other_background)] if kind != "background" else []
        untouched = [o for o in task.target.objects if o in task.source.objects]
        if untouched:  # the edit made, but another object recoloured as well
            victim = untouched[0]
            color = next(
                c for c in world.COLORS if all((o.shape, o.color) != (victim.shape, c) for o in task.target.objects)
            )
            objects = tuple(replace(o, color=color) if o is victim else o for o in task.target.objects)
            changed_rest.append(replace(task.target, objects=objects))
        for wrong in changed_rest:
            assert not edit_correct(world.render(wrong), task.target)


def test_written_prompts_follow_genevals_layout_and_score_their_own_renders(tmp_path, capsys):
    evaluate.main(["--write-prompts", str(tmp_path), "--n", "3", "--oracle"])
    out = capsys.readouterr().out
    assert "18" in out.split() and str(tmp_path) in out  # how many prompts, and where
    folders = sorted(tmp_path.iterdir())
    assert [f.name for f in folders] == [f"{i:05d}" for i in range(18)]
    for folder in folders:
        metadata = json.loads((folder / "metadata.jsonl").read_text())
        assert set(metadata) == {"tag", "include", "exclude", "prompt"}
        assert all(
            set(c) <= {"class", "count", "color", "position"} and c["class"] in world.SHAPES
            for c in metadata["include"]
        )
        assert [p.name for p in (folder / "samples").iterdir()] == ["00000.png"]
    assert run_cli(capsys, "--images", str(tmp_path))["geneval"] == dict.fromkeys([*world.GENEVAL_TAGS, "overall"], 1.0)


def test_the_same_seed_writes_the_same_prompts_and_another_seed_others(tmp_path):
    for name, seed in [("a", "0"), ("b", "0"), ("c", "1")]:
        evaluate.main(["--write-prompts", str(tmp_path / name), "--n", "5", "--seed", seed])
    read = lambda name: [(f / "metadata.jsonl").read_text() for f in sorted((tmp_path / name).iterdir())]  # noqa: E731
    assert read("a") == read("b") != read("c")


def test_bad_input_ends_with_a_one_line_error_naming_it(tmp_path):
    def error_of(*arguments: str) -> pytest.ExceptionInfo:
        with pytest.raises(SystemExit) as exit_info:
            evaluate.main(list(arguments))
        message = str(exit_info.value.code)
        assert message.startswith("error: ") and "\n" not in message
        return exit_info

    nowhere, missing, prompts = tmp_path / "nowhere", tmp_path / "missing", tmp_path / "set"
    assert_names(error_of("--checkpoint", str(nowhere)), nowhere, "checkpoint")
    assert_names(error_of("--images", str(missing)), missing, "directory")
    evaluate.main(["--write-prompts", str(prompts), "--n", "1"])
    assert_names(error_of("--images", str(prompts)), prompts, "samples", "PNG")
    picture = prompts / "00000" / "samples" / "0000.png"
    picture.write_text("not a picture")
    assert_names(error_of("--images", str(prompts)), picture, "image")
    picture.unlink()
    (prompts / "00001" / "metadata.jsonl").unlink()
    assert_names(error_of("--images", str(prompts)), prompts / "00001" / "metadata.jsonl", "file")


def test_a_checkpoint_draws_answers_and_edits_through_the_inferencer(capsys):
    # The tiny fixture has random weights: this proves the pipeline, not a score.
    scores = run_cli(capsys, "--checkpoint", str(TINY), "--n", "1", "--size", "32", "--steps", "3", "--max-tokens", "4")
    assert set(scores["geneval"]) == {*world.GENEVAL_TAGS, "overall"}
    assert all(0 <= value <= 1 for value in [*scores["geneval"].values(), scores["vqa"], scores["edit"]])
    assert set(scores["vqa_by_kind"]) <= set(world.QUESTION_KINDS)


def test_an_autoencoder_round_trip_keeps_a_trained_autoencoders_scenes_and_loses_an_untrained_ones(capsys, tmp_path):
    trained = run_cli(capsys, "--autoencoder", str(DEFAULT_MODEL), "--n", "5")
    assert trained["vqa"] is None and trained["vqa_by_kind"] is None
    assert trained["geneval"]["overall"] >= 0.5  # 0.81 at --n 30: it blurs shapes but keeps most scenes

    untrained = tmp_path / "untrained"
    shutil.copytree(DEFAULT_MODEL, untrained)
    torch.manual_seed(0)
    save_file(AutoEncoder(load_autoencoder(DEFAULT_MODEL).config).state_dict(), untrained / "ae.safetensors")
    scores = run_cli(capsys, "--autoencoder", str(untrained), "--n", "5")
    assert scores["geneval"]["overall"] <= 0.1 and scores["edit"] == 0  # random decodes: noise, rarely a scene

    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(["--autoencoder", str(tmp_path / "nowhere")])
    assert_names(exit_info, tmp_path / "nowhere", "autoencoder directory")  # tmp_path holds "autoencoder"
