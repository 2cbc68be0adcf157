"""train.py: exact resume (also after SIGKILL during a checkpoint write), NaN stop, DDP and FSDP2 runs."""

import json
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT))
import train  # noqa: E402
from bagel_mini import DEFAULT_MODEL, checkpoint  # noqa: E402
from bagel_mini.config import load_config_dir, preset  # noqa: E402
from bagel_mini.model import Bagel  # noqa: E402

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 30), "blue": (30, 60, 220)}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A small dataset in the documented jsonl format: drawing and naming coloured squares."""
    directory = tmp_path_factory.mktemp("data")
    lines = []
    for name, rgb in COLOURS.items():
        image = Image.new("RGB", (32, 32), (240, 240, 240))
        ImageDraw.Draw(image).rectangle([8, 8, 24, 24], fill=rgb)
        image.save(directory / f"{name}.png")
        lines.append(
            {
                "items": [
                    {"text": f"a {name} square", "droppable": True},
                    {"image": f"{name}.png", "as": "vae", "loss": True},
                ]
            }
        )
        lines.append(
            {
                "items": [
                    {"image": f"{name}.png", "as": "vit"},
                    {"text": "what colour is the square?"},
                    {"text": name, "loss": True},
                ]
            }
        )
    (directory / "data.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    train.main(
        ["--stage", "vae", "--data", str(directory / "data.jsonl"), "--out", str(directory / "ae"), "--max-steps", "2"]
    )
    return directory


def run_args(data: Path, out: Path, steps: int, *extra: str) -> list[str]:
    return [
        "--data",
        str(data / "data.jsonl"),
        "--autoencoder",
        str(data / "ae"),
        "--out",
        str(out),
        "--tokens",
        "160",
        "--checkpoint-every",
        "3",
        "--max-steps",
        str(steps),
        "--warmup",
        "2",
        *extra,
    ]


def weights(run: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {name: load_file(run / "last" / f"{name}.safetensors") for name in ("model", "ema", "optimizer")}


def assert_identical(first: Path, second: Path) -> None:
    a, b = weights(first), weights(second)
    for name in a:
        assert a[name].keys() == b[name].keys()
        assert all(torch.equal(a[name][key], b[name][key]) for key in a[name]), name


def test_resuming_gives_bit_identical_weights(data, tmp_path, capsys):
    train.main(run_args(data, tmp_path / "A", 3))
    shown = dict(re.findall(r"(loss|ce|mse|tok/s)=([\d.]+)", capsys.readouterr().err))  # tqdm writes to stderr
    logged = (tmp_path / "A" / "loss.csv").read_text().splitlines()[-1].split(",")  # step, loss, ce, mse
    for name, value in zip(("loss", "ce", "mse"), logged[1:]):
        assert float(shown[name]) == pytest.approx(float(value), abs=1e-3), name  # the bar rounds the logged value
    assert float(shown["tok/s"]) > 0
    train.main(run_args(data, tmp_path / "A", 6, "--resume"))
    train.main(run_args(data, tmp_path / "B", 6))
    assert_identical(tmp_path / "A", tmp_path / "B")
    assert (tmp_path / "A" / "loss.csv").read_text() == (tmp_path / "B" / "loss.csv").read_text()
    assert (tmp_path / "A" / "loss.png").stat().st_size > 0


def test_a_run_without_a_text_loss_resumes_exactly(data, tmp_path):
    """Without a text loss the LM head never gets a gradient, so AdamW holds no state for it to save."""
    generation = tmp_path / "generation"
    shutil.copytree(data, generation)
    lines = (generation / "data.jsonl").read_text().splitlines()
    (generation / "data.jsonl").write_text("\n".join(line for line in lines if '"as": "vae"' in line) + "\n")
    train.main(run_args(generation, tmp_path / "A", 3))
    assert not any(key.startswith("llm.lm_head.") for key in weights(tmp_path / "A")["optimizer"])
    train.main(run_args(generation, tmp_path / "A", 6, "--resume"))
    train.main(run_args(generation, tmp_path / "B", 6))
    assert_identical(tmp_path / "A", tmp_path / "B")

    optimizer = tmp_path / "B" / "last" / "optimizer.safetensors"  # state for a parameter no Bagel has
    save_file({**load_file(optimizer), "llm.extra.weight.exp_avg": torch.zeros(1)}, optimizer)
    with pytest.raises(SystemExit) as stopped:
        train.main(run_args(generation, tmp_path / "B", 7, "--resume"))
    assert str(optimizer) in str(stopped.value)
    assert "llm.extra.weight" in str(stopped.value)


def test_a_data_worker_gives_the_run_of_the_training_thread(data, tmp_path):
    """--workers 1 (the CPU default) packs and encodes in another process: the same batches, the same run."""
    train.main(run_args(data, tmp_path / "here", 4, "--workers", "0"))
    train.main(run_args(data, tmp_path / "worker", 4, "--workers", "1"))
    assert not multiprocessing.active_children()  # the worker stopped with the run (it held a copy of OUT/.lock)
    here, worker = (load_rows(tmp_path / run / "loss.csv") for run in ("here", "worker"))
    # The worker encodes on one thread, this process on all: float32 convolutions may sum in another order
    # (about 1e-7 relative); a different batch or noise draw changes the losses by 1e-2 or more.
    torch.testing.assert_close(worker, here, rtol=1e-5, atol=1e-6)


def test_a_run_killed_while_writing_a_checkpoint_resumes_exactly(data, tmp_path):
    # Kill the process (SIGKILL) after the third of the four weight files of the step-6 checkpoint is written.
    killer = (
        "import os, signal, sys; sys.path.insert(0, {root!r}); import train; from bagel_mini import checkpoint, runs\n"
        "original, calls = checkpoint.save_file, []\n"
        "def save_then_die(*args, **kwargs):\n"
        "    original(*args, **kwargs); calls.append(1)\n"
        "    if len(calls) == 4 + 3: os.kill(os.getpid(), signal.SIGKILL)\n"
        "checkpoint.save_file = runs.save_file = save_then_die\n"
        "train.main({args!r})\n"
    ).format(root=str(ROOT), args=run_args(data, tmp_path / "A", 6))
    killed = subprocess.run([sys.executable, "-c", killer], capture_output=True)
    assert killed.returncode == -9
    assert os.readlink(tmp_path / "A" / "last") == "step-000003"  # the newest complete checkpoint
    assert (tmp_path / "A" / ".step-000006.tmp").exists()  # the half-written one never got its name
    train.main(run_args(data, tmp_path / "A", 6, "--resume"))
    train.main(run_args(data, tmp_path / "B", 6))
    assert_identical(tmp_path / "A", tmp_path / "B")


def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(data, tmp_path):
    poison = (
        "import sys; sys.path.insert(0, {root!r}); import train\n"
        "original, calls = train.Bagel.forward, []\n"
        "def forward(self, *args, **kwargs):\n"
        "    result = original(self, *args, **kwargs); calls.append(1)\n"
        "    if len(calls) == 5: result['loss'] = result['loss'] * float('nan')\n"
        "    return result\n"
        "train.Bagel.forward = forward\n"
        "train.main({args!r})\n"
    ).format(root=str(ROOT), args=run_args(data, tmp_path / "A", 9))
    stopped = subprocess.run([sys.executable, "-c", poison], capture_output=True, text=True)
    assert stopped.returncode == 1
    message = stopped.stderr.strip().splitlines()[-1]
    assert "nan" in message and "step 5" in message and str(tmp_path / "A" / "last") in message
    assert os.readlink(tmp_path / "A" / "last") == "step-000003"


# FSDP2 needs every process to use the same parameters: at this budget every micro-batch of these runs holds a
# drawing and a question (train.check_same_parts refuses a run where they differ; see the test after these).
MIXED = ["--tokens", "280"]


def two_processes(train_args: list[str], succeed: bool = True) -> subprocess.CompletedProcess:
    """train.py under torchrun on two processes (a free port). With `succeed`, a failed run fails the test
    with the end of its stderr, which holds torchrun's and the processes' errors."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    ran = subprocess.run(
        [*launcher, str(ROOT / "train.py"), *train_args], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert ran.returncode == 0 or not succeed, ran.stderr[-3000:]
    return ran


@pytest.mark.parametrize("sharding", [[], ["--fsdp"]], ids=["ddp", "fsdp2"])
def test_two_processes_match_one_process_with_the_same_global_batch(data, tmp_path, sharding):
    steps = ["--dropout", "0", "0", "0", "--checkpoint-every", "4", *MIXED]
    train.main(run_args(data, tmp_path / "one", 4, "--accum", "2", *steps))
    two_processes(run_args(data, tmp_path / "two", 4, *steps, *sharding))
    one, two = (load_rows(tmp_path / run / "loss.csv") for run in ("one", "two"))
    # Steps 2-4 depend on the updated weights, so equal losses mean the updates agree as well.
    torch.testing.assert_close(two, one, rtol=1e-5, atol=1e-6)
    assert (tmp_path / "two" / "last" / "ema.safetensors").exists()  # gathered and written by process 0


def load_rows(path: Path) -> torch.Tensor:
    return torch.tensor([[float(value) for value in line.split(",")] for line in path.read_text().splitlines()[1:]])


def refusal(argv: list[str], capsys) -> str:
    """The one-line error train.py exits with (argparse's usage errors print it to stderr, exit status 2)."""
    with pytest.raises(SystemExit) as stop:
        train.main(argv)
    message = stop.value.code if isinstance(stop.value.code, str) else capsys.readouterr().err.strip().splitlines()[-1]
    assert stop.value.code != 0 and "Traceback" not in message
    return message


def test_bad_runs_are_refused_with_one_line(data, tmp_path, capsys):
    train.main(run_args(data, tmp_path / "A", 3))
    assert "--resume" in refusal(run_args(data, tmp_path / "A", 3), capsys)  # a run already there
    assert str(tmp_path / "B" / "last") in refusal(run_args(data, tmp_path / "B", 3, "--resume"), capsys)
    message = refusal(["--preset", "small", "--out", str(tmp_path / "C")], capsys)  # no embedded autoencoder
    assert "--autoencoder" in message and "small" in message
    message = refusal([*run_args(data, tmp_path / "D", 3), "--tokens", "8"], capsys)
    assert "--tokens 8" in message and "sample 0" in message


@pytest.mark.parametrize(
    "flag", [["--ema", "0.9"], ["--ce-weight", "1"], ["--dropout", "0", "0", "0"], ["--eval-n=3"], ["--vit", "x"]]
)
def test_flags_of_the_bagel_stages_are_refused_for_the_autoencoder(tmp_path, capsys, flag):
    message = refusal(["--stage", "vae", "--out", str(tmp_path / "ae"), "--max-steps", "1", *flag], capsys)
    assert flag[0].split("=")[0] in message and "vae" in message
    assert not (tmp_path / "ae").exists()


def test_the_toy_trains_with_no_flag_but_out(tmp_path, monkeypatch):
    """`python train.py --out runs/toy`: Shapes World on the embedded autoencoder (one step here, to be quick)."""
    monkeypatch.setattr(sys, "argv", ["train.py", "--out", str(tmp_path / "toy"), "--max-steps", "1"])
    train.main()
    run = tmp_path / "toy" / "last"
    assert load_file(run / "ae.safetensors").keys() == load_file(DEFAULT_MODEL / "ae.safetensors").keys()
    embedded = load_file(DEFAULT_MODEL / "ae.safetensors")
    assert all(torch.equal(tensor, embedded[key]) for key, tensor in load_file(run / "ae.safetensors").items())


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory) -> Path:
    """Two steps of `--stage lm` on Shapes World texts."""
    out = tmp_path_factory.mktemp("stages") / "lm"
    train.main(["--stage", "lm", "--out", str(out), "--max-steps", "2", "--tokens", "256"])
    return out


def test_the_language_model_stage_starts_both_experts_and_the_next_stage_from_it(data, lm_run, tmp_path, capsys):
    weights = load_file(lm_run / "last" / "model.safetensors")
    twins = {name: name.replace(".gen.", ".und.").replace("norm_gen.", "norm.") for name in weights}
    generation = [name for name, twin in twins.items() if twin != name]
    assert len(generation) == 1 + 4 * 14  # the final norm; per layer 2 norms, q/k/v/o (+3 biases), 2 qk-norms, 3 MLP
    assert all(torch.equal(weights[name], weights[twins[name]]) for name in generation)
    assert float((lm_run / "loss.csv").read_text().splitlines()[-1].split(",")[3]) == 0  # text alone: no image loss
    pretrain = tmp_path / "pretrain"
    train.main(["--init", str(lm_run / "last"), "--out", str(pretrain), "--max-steps", "1", "--tokens", "256"])
    for name in ("tokenizer.json", "llm_config.json", "bagel_config.json"):  # carried over, not made anew
        assert (pretrain / "last" / name).read_text() == (lm_run / "last" / name).read_text(), name
    assert "shapes" in refusal(
        ["--stage", "lm", "--data", str(data / "data.jsonl"), "--out", str(tmp_path / "x")], capsys
    )


def test_the_vit_stage_trains_the_vit_alone_resumes_exactly_and_probes_it(lm_run, tmp_path):
    def stage(out: str, steps: int, *extra: str) -> list[str]:
        vit = ["--stage", "vit", "--init", str(lm_run / "last"), "--warmup", "2", "--lr", "1e-2"]
        return [*vit, "--out", str(tmp_path / out), "--max-steps", str(steps), "--checkpoint-every", "2", *extra]

    train.main(stage("A", 2))
    train.main(stage("A", 4, "--resume"))
    train.main(stage("B", 4))
    assert_identical(tmp_path / "A", tmp_path / "B")
    assert (
        load_file(tmp_path / "A" / "last" / "heads.safetensors").keys()
        == load_file(tmp_path / "B" / "last" / "heads.safetensors").keys()
    )
    config = load_config_dir(lm_run / "last")
    before = checkpoint.load_model_weights(lm_run / "last", config)  # what --init starts from: the EMA weights
    after = load_file(tmp_path / "B" / "last" / "model.safetensors")
    changed = {name.split(".")[0] for name in before if not torch.equal(before[name], after[name])}
    assert changed == {"vit"}
    probe = json.loads((tmp_path / "B" / "probe.json").read_text())
    for when in ("before", "after"):
        assert set(probe[when]) == {"count", "background", "shape", "color", "patch_shape"}
        assert all(0 <= accuracy <= 1 for accuracy in probe[when].values())


def test_freeze_vit_keeps_the_vit_of_init_and_a_resumed_run_keeps_the_flag(lm_run, tmp_path, capsys):
    def run(out: str, steps: int, *extra: str) -> list[str]:
        init = ["--init", str(lm_run / "last"), "--tokens", "512", "--warmup", "1", "--checkpoint-every", "2"]
        return [*init, "--out", str(tmp_path / out), "--max-steps", str(steps), *extra]

    train.main(run("A", 2, "--freeze-vit"))
    config = load_config_dir(lm_run / "last")
    before = checkpoint.load_model_weights(lm_run / "last", config)
    raw = load_file(tmp_path / "A" / "last" / "model.safetensors")
    ema = checkpoint.load_model_weights(tmp_path / "A" / "last", config)  # ema.safetensors, in the released layout
    for name, after in (("model", raw), ("ema", ema)):
        changed = {key.split(".")[0] for key in before if not torch.equal(before[key], after[key])}
        assert "vit" not in changed and {"llm", "connector"} <= changed, name
    assert not any(key.startswith("vit.") for key in load_file(tmp_path / "A" / "last" / "optimizer.safetensors"))
    message = refusal(run("A", 4, "--resume"), capsys)
    assert "--freeze-vit" in message and "--resume" in message


def test_freeze_und_trains_the_generation_path_alone_so_every_answer_stays(lm_run, tmp_path, capsys):
    generation = ["--mix", "text_to_image=0.8,edit=0.2"]
    init = ["--init", str(lm_run / "last"), "--tokens", "512", "--warmup", "1", "--lr", "1e-2", "--max-steps", "2"]
    train.main([*init, "--freeze-und", *generation, "--out", str(tmp_path / "A")])
    config = load_config_dir(lm_run / "last")
    before = checkpoint.load_model_weights(lm_run / "last", config)
    ema = checkpoint.load_model_weights(tmp_path / "A" / "last", config)
    changed = {key for key in before if not torch.equal(before[key], ema[key])}
    # The generation expert of every layer, its final norm, the latent connectors and the timestep embedder.
    path = ("llm.norm_gen.", "vae2llm.", "llm2vae.", "time_embedder.")
    assert changed == {key for key in before if ".gen." in key or key.startswith(path)}
    optimised = load_file(tmp_path / "A" / "last" / "optimizer.safetensors")
    assert all(".gen." in key or key.startswith(path) for key in optimised)
    for refused, named in ((["--mix", "text_to_image=0.8,vqa=0.2"], "vqa"), ([], "caption")):
        message = refusal([*init, "--freeze-und", *refused, "--out", str(tmp_path / "B")], capsys)
        assert "--freeze-und" in message and named in message
    assert not (tmp_path / "B").exists()
    dense = ["--arch", "dense", "--tokens", "512", "--max-steps", "1", "--freeze-und", *generation]
    message = refusal([*dense, "--out", str(tmp_path / "C")], capsys)
    assert "--freeze-und" in message and "dense" in message


def test_readout_parameters_reach_no_image_token_and_no_cached_key():
    """What --readout-only trains: changing all of it changes the text rows' final states and nothing else,
    neither a VAE row (every image drawn) nor any layer's keys and values (all that later tokens read)."""
    config = preset("toy")
    torch.manual_seed(0)
    model = Bagel(config).double()
    names = [name for name, _ in model.named_parameters() if name.startswith(train.readout(model))]
    assert len(names) == 2 + 1 + 1 + 1 + 3 + 2  # q_proj and its bias, q_norm, o_proj, norm, MLP; final norm, lm_head
    length, is_gen = 20, torch.tensor([False] * 8 + [True] * 8 + [False] * 4)
    x, positions = torch.randn(length, config.llm.hidden_size, dtype=torch.float64), torch.arange(length)
    hidden, cache = model.llm.extend(x, positions, is_gen, model.llm.empty_cache(), causal=True)
    with torch.no_grad():
        for name in names:
            model.get_parameter(name).add_(torch.randn_like(model.get_parameter(name)))
    after, after_cache = model.llm.extend(x, positions, is_gen, model.llm.empty_cache(), causal=True)
    assert torch.equal(after[is_gen], hidden[is_gen])
    assert all(torch.equal(a, b) for a, b in zip(after_cache.keys + after_cache.values, cache.keys + cache.values))
    assert (~torch.isclose(after[~is_gen], hidden[~is_gen])).any(dim=1).all()  # every text row moved


def test_readout_only_trains_the_readout_alone(lm_run, tmp_path, capsys):
    init = ["--init", str(lm_run / "last"), "--tokens", "512", "--warmup", "1", "--lr", "1e-2", "--max-steps", "2"]
    train.main([*init, "--readout-only", "--out", str(tmp_path / "A")])
    config = load_config_dir(lm_run / "last")
    before = checkpoint.load_model_weights(lm_run / "last", config)
    ema = checkpoint.load_model_weights(tmp_path / "A" / "last", config)
    readout = train.readout(Bagel(config))
    changed = {key for key in before if not torch.equal(before[key], ema[key])}
    assert changed == {key for key in before if key.startswith(readout)}
    assert all(key.startswith(readout) for key in load_file(tmp_path / "A" / "last" / "optimizer.safetensors"))
    out = ["--readout-only", "--out", str(tmp_path / "B")]
    refused = [
        ([*init, *out, "--freeze-und", "--mix", "text_to_image=1"], "--freeze-und"),
        ([*init, *out, "--mix", "text_to_image=0.8,edit=0.2"], "vqa"),  # nothing with text to learn
        ([*init, *out, "--stage", "align"], "align"),  # it trains the connector alone
        (["--arch", "dense", "--tokens", "512", "--max-steps", "1", *out], "dense"),
    ]
    for argv, named in refused:
        message = refusal(argv, capsys)
        assert "--readout-only" in message and named in message
    assert not (tmp_path / "B" / "last").exists()
    message = refusal([*init, "--out", str(tmp_path / "A"), "--max-steps", "3", "--resume"], capsys)
    assert "--readout-only" in message and "--resume" in message  # a resumed run keeps it


def test_vit_takes_the_vit_of_another_checkpoint_and_refuses_a_different_one(lm_run, tmp_path, capsys):
    vit = ["--stage", "vit", "--init", str(lm_run / "last"), "--warmup", "1", "--lr", "1e-2", "--max-steps", "1"]
    train.main([*vit, "--out", str(tmp_path / "vit")])
    run = ["--init", str(lm_run / "last"), "--tokens", "512", "--max-steps", "1", "--freeze-vit"]
    train.main([*run, "--vit", str(tmp_path / "vit" / "last"), "--out", str(tmp_path / "A")])
    config = load_config_dir(lm_run / "last")
    given = checkpoint.load_model_weights(tmp_path / "vit" / "last", config)
    init = checkpoint.load_model_weights(lm_run / "last", config)
    after = load_file(tmp_path / "A" / "last" / "model.safetensors")
    vit_keys = [key for key in given if key.startswith("vit.")]
    assert all(torch.equal(after[key], given[key]) for key in vit_keys)
    assert not all(torch.equal(given[key], init[key]) for key in vit_keys)  # the vit stage changed it
    other = tmp_path / "other"
    shutil.copytree(tmp_path / "vit" / "last", other)
    vit_config = json.loads((other / "vit_config.json").read_text())
    (other / "vit_config.json").write_text(json.dumps({**vit_config, "hidden_size": 32}))
    message = refusal([*run, "--vit", str(other), "--out", str(tmp_path / "B")], capsys)
    assert "--vit" in message and str(other) in message


def test_the_ema_warms_up_and_the_learning_rate_cools_down():
    args = train.parse_args(["--out", "x", "--ema", "0.999", "--lr", "1", "--warmup", "10", "--max-steps", "100"])
    assert [train.ema_decay(args, step) for step in (0, 90, 10_000)] == [1 / 10, 91 / 100, 0.999]
    args.cooldown = 20
    rates = [train.learning_rate(args, step) for step in (4, 50, 80, 90, 99)]
    assert rates == [5 / 10, 1, 1, 10 / 20, 1 / 20]


def test_periodic_evaluation_writes_the_scores(data, tmp_path):
    train.main(run_args(data, tmp_path / "A", 3, "--eval-every", "1", "--eval-n", "1"))
    header, row = (tmp_path / "A" / "eval.csv").read_text().splitlines()
    assert header.split(",")[:2] == ["step", "geneval_single_object"] and header.endswith("vqa,edit")
    values = [float(value) for value in row.split(",")]
    assert values[0] == 3 and all(0 <= value <= 1 for value in values[1:])


def test_an_fsdp2_run_resumes_bit_identically(data, tmp_path):
    fsdp = ["--fsdp", "--dropout", "0", "0", "0", "--checkpoint-every", "2", *MIXED]
    for out, steps, extra in (("A", 2, []), ("A", 4, ["--resume"]), ("B", 4, [])):
        two_processes(run_args(data, tmp_path / out, steps, *fsdp, *extra))
    assert_identical(tmp_path / "A", tmp_path / "B")


def test_an_fsdp2_run_whose_processes_see_different_kinds_of_tokens_stops_with_one_line(data, tmp_path):
    stopped = two_processes(run_args(data, tmp_path / "A", 2, "--fsdp", "--dropout", "0", "0", "0"), succeed=False)
    assert stopped.returncode != 0
    errors = [line for line in stopped.stderr.splitlines() if line.startswith("error:")]
    assert errors and all("--fsdp" in line and "--tokens" in line and "step 1" in line for line in errors)


def test_decoder_only_training_keeps_the_encoder_and_its_latent_statistics(data, tmp_path, capsys):
    start = data / "ae"
    args = ["--stage", "vae", "--data", str(data / "data.jsonl"), "--max-steps", "2", "--lr", "1e-2"]
    train.main([*args, "--autoencoder", str(start), "--decoder-only", "--out", str(tmp_path / "dec")])
    before, after = load_file(start / "ae.safetensors"), load_file(tmp_path / "dec" / "ae.safetensors")
    assert before.keys() == after.keys()
    for key in before:
        if key.startswith("encoder."):
            assert torch.equal(before[key], after[key]), f"{key} changed"
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("decoder."))
    old, new = (json.loads((d / "bagel_config.json").read_text())["ae_params"] for d in (start, tmp_path / "dec"))
    assert (new["scale_factor"], new["shift_factor"]) == (old["scale_factor"], old["shift_factor"])
    assert "--autoencoder" in refusal([*args, "--decoder-only", "--out", str(tmp_path / "none")], capsys)


def test_scale_equivariance_trains_another_autoencoder_and_a_resumed_run_keeps_its_weight(data, tmp_path, capsys):
    """The flag reaches the autoencoder's loss (its arithmetic: test_vae.py) and is one that a resume keeps."""
    args = ["--stage", "vae", "--data", str(data / "data.jsonl"), "--autoencoder", str(data / "ae"), "--lr", "1e-2"]
    args += ["--checkpoint-every", "1"]
    train.main([*args, "--max-steps", "1", "--out", str(tmp_path / "plain")])
    train.main([*args, "--max-steps", "1", "--out", str(tmp_path / "se"), "--scale-equivariance", "1"])
    plain, se = (load_file(tmp_path / run / "ae.safetensors") for run in ("plain", "se"))
    assert any(not torch.equal(plain[k], se[k]) for k in plain if k.startswith("encoder."))
    message = refusal([*args, "--max-steps", "2", "--out", str(tmp_path / "se"), "--resume"], capsys)
    assert "--scale-equivariance 1.0 -> 0.0" in message


def test_an_autoencoder_run_killed_while_writing_a_checkpoint_resumes_exactly(data, tmp_path):
    def stage(out: str, *extra: str) -> list[str]:
        return ["--stage", "vae", "--data", str(data / "data.jsonl"), "--out", str(tmp_path / out), *extra]

    steps = ["--max-steps", "4", "--checkpoint-every", "2", "--warmup", "2"]
    # Kill the process (SIGKILL) after the first of the two files of the step-4 checkpoint is written.
    killer = (
        "import os, signal, sys; sys.path.insert(0, {root!r}); import train; from bagel_mini import runs\n"
        "original, calls = runs.save_file, []\n"
        "def save_then_die(*args, **kwargs):\n"
        "    original(*args, **kwargs); calls.append(1)\n"
        "    if len(calls) == 2 + 1: os.kill(os.getpid(), signal.SIGKILL)\n"
        "runs.save_file = save_then_die\n"
        "train.main({args!r})\n"
    ).format(root=str(ROOT), args=stage("A", *steps))
    assert subprocess.run([sys.executable, "-c", killer], capture_output=True).returncode == -9
    assert os.readlink(tmp_path / "A" / "last") == "step-000002" and not (tmp_path / "A" / "ae.safetensors").exists()
    train.main(stage("A", *steps, "--resume"))
    train.main(stage("B", *steps))
    for name in ("ae.safetensors", "last/ae.safetensors", "last/optimizer.safetensors"):
        a, b = load_file(tmp_path / "A" / name), load_file(tmp_path / "B" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a), name
    assert (tmp_path / "A" / "bagel_config.json").read_text() == (tmp_path / "B" / "bagel_config.json").read_text()


def test_a_data_worker_by_default_only_on_a_cpu_with_a_core_to_spare(monkeypatch):
    monkeypatch.setattr(train.os, "cpu_count", lambda: 2)
    cpu = torch.device("cpu")
    assert train.default_workers(cpu, world=1) == 1
    assert train.default_workers(cpu, world=2) == 0  # torchrun, a process per core
    assert train.default_workers(torch.device("cuda"), world=1) == 0
