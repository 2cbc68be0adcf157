"""Bad input to sample.py, train.py and `python -m bagel_mini.evaluate`: a non-zero exit with one line that names
the flag or file, the value and what is allowed, before any work; and no run directory is ever shared."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import TINY

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT))
import sample  # noqa: E402
import train  # noqa: E402
from bagel_mini import DEFAULT_MODEL, evaluate, runs  # noqa: E402


def refused(main, argv: list[str], capsys) -> str:
    """The one line a command exits with (argparse prints usage errors to stderr with status 2)."""
    with pytest.raises(SystemExit) as stop:
        main(argv)
    code = stop.value.code
    message = code if isinstance(code, str) else capsys.readouterr().err.strip().splitlines()[-1]
    assert code not in (0, None), f"exited successfully: {message}"
    assert "\n" not in message and "Traceback" not in message
    return message


def names(message: str, *facts: str) -> bool:
    missing = [fact for fact in facts if fact not in message]
    assert not missing, f"{message!r} does not name {missing}"
    return True


@pytest.fixture
def no_loading(monkeypatch):
    """Make loading weights fail loudly: these errors must come before any work."""

    def never(*args, **kwargs):
        raise AssertionError("weights were loaded before the bad input was noticed")

    monkeypatch.setattr(sample, "load_checkpoint", never)


# ---------------------------------------------------------------------------------------------
# sample.py

TINY_ARGS = ["--checkpoint", str(TINY), "--prompt", "x"]


@pytest.mark.parametrize(
    "flag, facts",
    [
        (["--shift", "0"], ["--shift", "0", "positive"]),
        (["--shift", "-2"], ["--shift", "-2", "positive"]),
        (["--cfg-text", "nan"], ["--cfg-text", "nan", "finite"]),
        (["--cfg-img", "inf"], ["--cfg-img", "inf", "finite"]),
        (["--cfg-interval", "1.0", "0.4"], ["--cfg-interval", "1.0 0.4", "LOW <= HIGH"]),
        (["--cfg-interval", "0.4", "2"], ["--cfg-interval", "2", "0 to 1"]),
        (["--device", "tpu"], ["--device", "tpu", "cpu, cuda"]),
        (["--max-tokens", "0"], ["--max-tokens", "0", "at least 1"]),
        (["--steps", "0"], ["--steps", "0", "at least 2"]),
    ],
)
def test_sample_rejects_bad_settings_naming_the_flag(flag, facts, capsys, no_loading):
    names(refused(sample.main, [*TINY_ARGS, *flag], capsys), *facts)


def test_sample_checks_the_size_against_the_models_table_before_any_work(capsys, no_loading):
    names(refused(sample.main, [*TINY_ARGS, "--size", "4096"], capsys), "--size", "4096", "16")


def test_sample_checks_out_before_any_work(tmp_path, capsys, no_loading):
    names(refused(sample.main, [*TINY_ARGS, "--out", f"{tmp_path}/"], capsys), "--out", "directory", "sample.png")
    names(refused(sample.main, [*TINY_ARGS, "--out", str(tmp_path / "x.txt")], capsys), "--out", "x.txt", "image")
    unwritable = tmp_path / "no" / "such" / "dir" / "x.png"
    names(refused(sample.main, [*TINY_ARGS, "--out", str(unwritable)], capsys), "--out", str(unwritable.parent))


def test_sample_says_which_directory_to_pass_for_a_training_run(tmp_path, capsys, no_loading):
    run = tmp_path / "run"
    (run / "step-000010").mkdir(parents=True)
    (run / "last").symlink_to("step-000010")
    names(refused(sample.main, ["--checkpoint", str(run), "--prompt", "x"], capsys), str(run / "last"))
    names(refused(evaluate.main, ["--checkpoint", str(run), "--n", "1"], capsys), str(run / "last"))


def test_a_corrupt_tokenizer_is_named(tmp_path, capsys, no_loading):
    broken = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL, broken)
    (broken / "tokenizer.json").write_text('{"model": ')
    names(refused(sample.main, ["--checkpoint", str(broken), "--prompt", "x"], capsys), "tokenizer.json")
    names(refused(evaluate.main, ["--checkpoint", str(broken), "--n", "1"], capsys), "tokenizer.json")


def test_help_shows_the_defaults(capsys):
    shown = (sample.main, ["50", "4.0", "3.0", "1000", "0"]), (train.main, ["2000", "0.001", "0.999", "0"])  # 0: --seed
    for main, defaults in shown:
        with pytest.raises(SystemExit):
            main(["--help"])
        shown = capsys.readouterr().out
        assert all(f"(default: {value})" in shown for value in defaults), shown


# ---------------------------------------------------------------------------------------------
# python -m bagel_mini.evaluate


def test_evaluate_rejects_bad_counts_naming_the_flag(capsys):
    names(refused(evaluate.main, ["--steps", "0"], capsys), "--steps", "0", "at least 2")
    names(refused(evaluate.main, ["--max-tokens", "0"], capsys), "--max-tokens", "0")
    names(refused(evaluate.main, ["--n", "0"], capsys), "--n", "0")


def test_evaluate_will_not_write_prompts_into_a_file(tmp_path, capsys):
    taken = tmp_path / "prompts.txt"
    taken.write_text("mine")
    names(refused(evaluate.main, ["--write-prompts", str(taken), "--n", "1"], capsys), "--write-prompts", str(taken))
    assert taken.read_text() == "mine"


# ---------------------------------------------------------------------------------------------
# train.py


@pytest.mark.parametrize(
    "flag, facts",
    [
        (["--ema", "1.5"], ["--ema", "1.5"]),
        (["--ema", "1"], ["--ema", "1"]),
        (["--lr", "inf"], ["--lr", "inf", "finite"]),
        (["--lr", "0"], ["--lr", "0", "positive"]),
        (["--device", "tpu"], ["--device", "tpu"]),
        (["--dropout", "0.1", "1.5", "0.1"], ["--dropout", "1.5"]),
        (["--image-size", "60"], ["--image-size", "60", "8"]),  # not a whole number of 8-pixel tokens
        (["--image-size", "72"], ["--image-size", "72", "64"]),  # beyond the toy's position tables
        (["--mix", "text_to_image=1,audio=1"], ["--mix", "audio", "text_to_image", "reasoning_edit"]),
        (["--mix", "vqa"], ["--mix", "vqa", "task=weight"]),
        (["--mix", "vqa=-1"], ["--mix", "-1"]),
        (["--mix", "vqa=0"], ["--mix", "vqa=0", "sum to 0"]),
        (["--mix", "vqa=1", "--stage", "lm"], ["--mix", "--stage lm"]),
        (["--edit-context", "vit"], ["--edit-context", "vit", "vae+vit", "vae"]),
        (["--edit-context", "vae", "--data", "own.jsonl"], ["--edit-context", "own.jsonl"]),
        (["--scale-equivariance", "1"], ["--scale-equivariance", "--stage vae"]),  # an autoencoder's loss
        (["--stage", "vae", "--scale-equivariance", "-1"], ["--scale-equivariance", "-1"]),
        (["--stage", "vae", "--decoder-only", "--scale-equivariance", "1"], ["--scale-equivariance", "--decoder-only"]),
    ],
)
def test_train_rejects_bad_settings_before_any_work(flag, facts, tmp_path, capsys):
    names(refused(train.main, ["--out", str(tmp_path / "run"), "--max-steps", "1", *flag], capsys), *facts)
    assert not (tmp_path / "run" / "loss.csv").exists()


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


GOOD = json.dumps({"items": [{"text": "a red square", "loss": True}]})


@pytest.mark.parametrize(
    "line, facts",
    [
        ('{"items": []}', ["line 2", "at least one item"]),  # packing it would never finish
        ('{"items": [{"image": "red.png", "as": "video"}]}', ["line 2", '"as"', "video", "vit", "vae"]),
        ('{"items": [{"text": 5}]}', ["line 2", '"text"', "5"]),
        ('[{"text": "a list"}]', ["line 2", "items"]),
        ('{"items": [{"text": "x"}', ["line 2", "JSON"]),
        ('{"items": [{"text": "x", "loss": "yes"}]}', ["line 2", "loss", "yes"]),
        ('{"items": [{"image": "absent.png", "as": "vae"}]}', ["line 2", "absent.png"]),
        ('{"items": [{"txt": "typo"}]}', ["line 2", "txt"]),
        ('{"items": [{"text": "nothing to learn"}]}', ["line 2", "loss"]),
    ],
    ids=["empty", "video", "number", "list", "bad-json", "loss-not-bool", "missing-image", "unknown-key", "no-loss"],
)
def test_a_bad_data_line_is_named_by_file_and_line(line, facts, tmp_path, capsys):
    data = write_lines(tmp_path / "data.jsonl", [GOOD, line])
    names(refused(train.main, ["--data", str(data), "--out", str(tmp_path / "run")], capsys), str(data), *facts)


def test_resuming_a_run_already_past_max_steps_says_so(tmp_path, capsys):
    data = write_lines(tmp_path / "data.jsonl", [GOOD])
    run = ["--data", str(data), "--out", str(tmp_path / "run"), "--tokens", "64", "--checkpoint-every", "2"]
    train.main([*run, "--max-steps", "2", "--device", "cpu"])  # (a --device is saved with the run's state)
    names(refused(train.main, [*run, "--max-steps", "1", "--resume"], capsys), "--max-steps 1", "step 2")


def test_resuming_with_other_flags_than_the_run_was_started_with_is_refused(tmp_path, capsys):
    data = write_lines(tmp_path / "data.jsonl", [GOOD])
    run = ["--data", str(data), "--out", str(tmp_path / "run"), "--tokens", "64", "--checkpoint-every", "1"]
    train.main([*run, "--max-steps", "1"])
    message = refused(train.main, [*run, "--max-steps", "2", "--resume", "--seed", "1"], capsys)
    names(message, "--resume", "--seed 0 -> 1")


def test_the_autoencoder_stage_needs_vae_images_and_one_process(tmp_path, capsys, monkeypatch):
    data = write_lines(tmp_path / "data.jsonl", [GOOD])  # text only
    stage = ["--stage", "vae", "--data", str(data), "--max-steps", "1"]
    names(refused(train.main, [*stage, "--out", str(tmp_path / "a")], capsys), str(data), '"vae"')
    monkeypatch.setenv("WORLD_SIZE", "2")
    names(refused(train.main, ["--stage", "vae", "--out", str(tmp_path / "b")], capsys), "--stage vae", "torchrun")


def test_two_runs_never_share_an_out_and_a_killed_run_leaves_no_lock(tmp_path, capsys):
    out = tmp_path / "run"
    held = runs.claim_run_directory(out)  # as a run in progress holds it
    names(refused(train.main, ["--out", str(out), "--max-steps", "1"], capsys), "--out", str(out), "another")
    names(refused(train.main, ["--stage", "vae", "--out", str(out), "--max-steps", "1"], capsys), "another")
    held.close()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from bagel_mini import runs; import time; x = runs.claim_run_directory("
            f"__import__('pathlib').Path({str(out)!r})); print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    holder.stdout.close()
    runs.claim_run_directory(out).close()  # the killed run's lock went with it
