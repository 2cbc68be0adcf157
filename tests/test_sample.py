"""sample.py end to end on the tiny checkpoint: outputs, and one-line errors for bad input."""

import json
import shutil
import sys
from pathlib import Path

import pytest
from helpers import TINY, assert_names
from PIL import Image

sys.path.insert(0, str(Path(__file__).parents[1]))
import sample  # noqa: E402

FAST = ["--checkpoint", str(TINY), "--steps", "3", "--size", "32"]


def test_text_to_image_writes_the_image_and_says_where(tmp_path, capsys):
    out = tmp_path / "drawn.png"
    sample.main([*FAST, "--prompt", "a red circle", "--out", str(out)])
    assert Image.open(out).size == (32, 32)
    assert f"wrote {out}" in capsys.readouterr().out


def test_without_size_a_toy_is_drawn_at_the_size_it_was_trained_at(tmp_path):
    """The size in `train_image_size` when a checkpoint has it, else the largest its tables hold (at most 1024)."""
    values = json.loads((TINY / "bagel_config.json").read_text())
    assert "train_image_size" not in values  # the official tiny checkpoint does not say
    largest = values["max_latent_size"] * values["latent_patch_size"] * values["ae_params"]["downsample"]
    out = tmp_path / "drawn.png"
    sample.main(["--checkpoint", str(TINY), "--prompt", "a red circle", "--steps", "2", "--out", str(out)])
    assert Image.open(out).size == (largest, largest)
    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(TINY, checkpoint)
    (checkpoint / "bagel_config.json").write_text(json.dumps({**values, "train_image_size": 64}))
    sample.main(
        ["--checkpoint", str(checkpoint), "--prompt", "a red circle", "--steps", "2", "--out", str(out), "--overwrite"]
    )
    assert Image.open(out).size == (64, 64) != (largest, largest)


def test_editing_and_understanding_read_an_input_image(tmp_path, capsys):
    source = tmp_path / "in.png"
    Image.new("RGB", (48, 32), (20, 200, 20)).save(source)
    sample.main([*FAST, "--image", str(source), "--prompt", "make it red", "--out", str(tmp_path / "edited.png")])
    assert Image.open(tmp_path / "edited.png").size == (192, 128)  # the input's aspect ratio, VAE-sized
    sample.main([*FAST, "--image", str(source), "--question", "what colour?", "--max-tokens", "4"])
    assert capsys.readouterr().out.strip()


def test_an_existing_output_is_never_overwritten_silently(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sample.png").write_bytes(b"mine")
    sample.main([*FAST, "--prompt", "a red circle"])
    assert (tmp_path / "sample.png").read_bytes() == b"mine" and (tmp_path / "sample-1.png").exists()
    with pytest.raises(SystemExit) as error:
        sample.main([*FAST, "--prompt", "a red circle", "--out", "sample.png"])
    assert_names(error, "sample.png", "--overwrite")


@pytest.mark.parametrize(
    ("arguments", "facts"),
    [
        (["--prompt", " "], ["prompt", "empty"]),
        (["--prompt", "x", "--steps", "0"], ["--steps", "0", "2"]),  # the flag, its value, the least allowed
        (["--prompt", "x", "--size", "33"], ["--size", "33", "HEIGHTxWIDTH", "16"]),
        (["--prompt", "x", "--max-tokens", "40000"], ["--max-tokens", "40000", "32768"]),
    ],
)
def test_bad_arguments_give_a_one_line_error(arguments, facts, capsys):
    with pytest.raises(SystemExit) as stop:
        sample.main(["--checkpoint", str(TINY), *arguments])
    # argparse's checks print to stderr and exit 2; the later ones exit with the message itself.
    message = stop.value.code if isinstance(stop.value.code, str) else capsys.readouterr().err.strip().splitlines()[-1]
    assert stop.value.code not in (0, None) and "error:" in message and "\n" not in message
    assert all(str(fact) in message for fact in facts), message


def test_missing_checkpoint_and_non_image_files_are_named(tmp_path):
    with pytest.raises(SystemExit) as error:
        sample.main(["--checkpoint", str(tmp_path / "nowhere"), "--prompt", "x"])
    assert_names(error, tmp_path / "nowhere", "not found")
    text_file = tmp_path / "notes.png"
    text_file.write_text("not a picture")
    with pytest.raises(SystemExit) as error:
        sample.main(["--checkpoint", str(TINY), "--image", str(text_file), "--prompt", "x"])
    assert_names(error, text_file, "not an image")


def test_without_a_prompt_the_demo_draws_edits_and_answers(tmp_path, capsys):
    sample.main(["--checkpoint", str(TINY), "--steps", "3", "--out", str(tmp_path / "demo.png")])
    printed = capsys.readouterr().out
    assert Image.open(tmp_path / "demo.png").width > Image.open(tmp_path / "demo-edit.png").width  # 6 images vs 2
    assert f"wrote {tmp_path / 'demo-edit.png'}" in printed and printed.count("Q: ") == 3


def test_with_no_arguments_the_embedded_model_runs_the_demo(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    sample.main([])
    assert Image.open(tmp_path / "sample.png").size[0] > 6 * 64 and (tmp_path / "sample-edit.png").exists()
    assert capsys.readouterr().out.count("Q: ") == 3
