"""A training run's directory: who owns it, its checkpoints, its resume state and its loss log.

    OUT/.lock            held by the run writing OUT (a second run is refused; a killed run leaves nothing stuck)
    OUT/step-NNNNNN/     a checkpoint, written under a temporary name and renamed when complete
    OUT/last             a link to the newest complete one: what --resume, sample.py and evaluate read
    OUT/loss.csv, .png   one row per step, and its plot

A Bagel step directory is a checkpoint in the released layout (checkpoint.py: `ema.safetensors` holds the
EMA weights, as in the release) plus the raw weights, the optimiser state and `state.json`; an autoencoder
step directory holds `ae.safetensors` and the configs plus the same two. Under FSDP every process takes
part in gathering the state and process 0 writes; resuming shards it back.
"""

import contextlib
import csv
import dataclasses
import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from bagel_mini.checkpoint import load_model_weights, save_checkpoint
from bagel_mini.config import BagelConfig, save_config_dir, write_json_atomic
from bagel_mini.model import Bagel

FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def start_run(out: Path, resume: bool, max_steps: int) -> contextlib.ExitStack:
    """Claim OUT for this run (process 0 holds OUT/.lock) and check --resume against it.

    Returns a context manager that holds the lock for the run's lifetime; a failed check releases it at once.
    """
    with contextlib.ExitStack() as stack:
        if int(os.environ.get("RANK", 0)) == 0:
            stack.enter_context(claim_run_directory(out))
        last = out / "last"
        if resume and not last.exists():
            raise FileNotFoundError(f"{last}: nothing to resume (no complete checkpoint yet)")
        if not resume and (last.exists() or (out / "ae.safetensors").exists()):
            raise FileExistsError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
        if resume:
            step = json.loads((last / "state.json").read_text())["step"]
            if step >= max_steps:
                raise ValueError(f"--max-steps {max_steps}: {last} is already at step {step}; ask for more steps")
        return stack.pop_all()


def claim_run_directory(out: Path):
    """Hold OUT/.lock for as long as the returned file stays open, or a ValueError if another run holds it.

    Two runs writing one directory would interleave their logs and overwrite each other's checkpoints.
    The operating system drops the lock when the process ends, so a killed run leaves nothing stuck.
    """
    import fcntl  # POSIX; train.py runs there

    out.mkdir(parents=True, exist_ok=True)
    lock = open(out / ".lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise ValueError(
            f"--out {out}: another training run is writing there; wait for it or choose another --out"
        ) from None
    return lock


def write_step_directory(out: Path, step: int, write, keep: int) -> None:
    """Have `write(directory)` fill OUT/step-N, atomically: a temporary directory, renamed, then OUT/last
    pointed at it. Only the newest `keep` step directories stay."""
    name, temporary = f"step-{step:06d}", out / f".step-{step:06d}.tmp"
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    write(temporary)
    shutil.rmtree(out / name, ignore_errors=True)  # a leftover of a run killed between the rename and the link
    os.replace(temporary, out / name)
    link = out / ".last.tmp"
    link.unlink(missing_ok=True)
    link.symlink_to(name)
    os.replace(link, out / "last")  # atomic: `last` always names a complete checkpoint
    for old in sorted(out.glob("step-*"))[:-keep]:
        shutil.rmtree(old)


def save_run_checkpoint(
    out: Path,
    step: int,
    model,
    ema: dict,
    autoencoder,
    optimizer,
    tokenizer,
    state: dict,
    keep: int,
    rank: int,
    heads: nn.Module | None = None,
) -> None:
    """OUT/step-N of a Bagel run: a checkpoint in the released layout (`ema.safetensors` holds the EMA weights,
    as in the release) plus the raw weights, the optimiser state and `state.json` (with `state`) for resuming.
    `heads`: modules trained beside the model that are not part of it (the vit stage's text tower), in
    `heads.safetensors`; the optimiser may then hold their parameters too.

    Every process takes part in gathering the state (FSDP keeps a shard per process); process 0 writes.
    """
    weights = get_model_state_dict(model, options=FULL)
    optimizer_state = get_optimizer_state_dict(optimized(model, heads), optimizer, options=FULL)
    ema = _full_tensors(ema)
    if rank != 0:
        return
    with torch.device("meta"):
        ema_model = Bagel(model.config)
    ema_model.load_state_dict(ema, assign=True)

    def write(directory: Path) -> None:
        save_checkpoint(ema_model, autoencoder, directory, overwrite=True)
        tokenizer.save(directory)
        save_file({k: v.contiguous() for k, v in weights.items()}, directory / "model.safetensors")
        if heads is not None:
            save_file({k: v.detach().cpu().contiguous() for k, v in heads.state_dict().items()}, directory / HEADS)
        _save_optimizer(optimizer_state, directory)
        write_json_atomic(directory / "state.json", {"step": step, **state})

    write_step_directory(out, step, write, keep)


def load_run_checkpoint(directory: Path, model, ema: dict, optimizer, heads: nn.Module | None = None) -> int:
    """Restore weights, EMA and optimiser (and `heads`) from a run checkpoint (sharded again under FSDP);
    returns its step."""
    set_model_state_dict(model, load_file(directory / "model.safetensors"), options=FULL)
    if heads is not None:
        heads.load_state_dict(load_file(directory / HEADS))
    ema_weights = load_model_weights(directory, model.config)
    with torch.no_grad():
        for name, tensor in ema.items():
            tensor.copy_(_distribute_like(ema_weights[name], tensor))
    _load_optimizer(optimized(model, heads), optimizer, directory)
    return json.loads((directory / "state.json").read_text())["step"]


HEADS = "heads.safetensors"


def optimized(model, heads: nn.Module | None):
    """The module whose parameter names the optimiser state is saved by: the model, with `heads` beside it."""
    return model if heads is None else nn.ModuleDict({"model": model, "heads": heads})


def save_autoencoder_checkpoint(
    out: Path, step: int, autoencoder, config: BagelConfig, optimizer, state: dict, keep: int
) -> None:
    """OUT/step-N of an autoencoder run: `ae.safetensors` and the configs (a directory `--autoencoder` reads),
    plus the optimiser state and `state.json` for resuming."""

    def write(directory: Path) -> None:
        tensors = {name: t.detach().cpu().contiguous() for name, t in autoencoder.state_dict().items()}
        save_file(tensors, directory / "ae.safetensors")
        save_config_dir(config, directory, overwrite=True)
        _save_optimizer(get_optimizer_state_dict(autoencoder, optimizer, options=FULL), directory)
        write_json_atomic(directory / "state.json", {"step": step, **state})

    write_step_directory(out, step, write, keep)


def load_autoencoder_checkpoint(directory: Path, autoencoder, optimizer) -> int:
    """Restore an autoencoder run's weights and optimiser; returns its step."""
    autoencoder.load_state_dict(load_file(directory / "ae.safetensors"))
    _load_optimizer(autoencoder, optimizer, directory)
    return json.loads((directory / "state.json").read_text())["step"]


def _save_optimizer(optimizer_state: dict, directory: Path) -> None:
    """The optimiser's tensors by parameter name (`fqn.exp_avg`, ...) in optimizer.safetensors."""
    flat = {f"{fqn}.{key}": value for fqn, values in optimizer_state["state"].items() for key, value in values.items()}
    save_file({k: torch.as_tensor(v).contiguous() for k, v in flat.items()}, directory / "optimizer.safetensors")


def _load_optimizer(model, optimizer, directory: Path) -> None:
    """A parameter without saved state was never updated (no gradient yet: the LM head of a run without a text
    loss); AdamW starts its state at the first update, as the uninterrupted run does. State for a parameter
    the model lacks means another model's file."""
    state = {}
    for key, value in load_file(directory / "optimizer.safetensors").items():
        fqn, name = key.rsplit(".", 1)
        state.setdefault(fqn, {})[name] = value
    groups = get_optimizer_state_dict(model, optimizer)["param_groups"]  # names of every rank's parameters
    unknown = sorted(set(state) - {name for group in groups for name in group["params"]})
    if unknown:
        raise ValueError(
            f"{directory / 'optimizer.safetensors'}: state for {unknown[0]}, which the model does not have"
        )
    options = dataclasses.replace(FULL, strict=False)
    set_optimizer_state_dict(model, optimizer, {"state": state, "param_groups": groups}, options=options)
    for name, parameter in model.named_parameters():
        if name not in state:  # set_optimizer_state_dict made it a zero state, which the uninterrupted run lacks
            optimizer.state.pop(parameter, None)


def _full_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Whole tensors on the CPU (FSDP keeps each process's shard only: gathering is a collective)."""
    return {
        name: (t.full_tensor() if hasattr(t, "full_tensor") else t).detach().cpu().contiguous()
        for name, t in tensors.items()
    }


def _distribute_like(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """`source` laid out as `target`: sharded like it under FSDP (a DTensor), the whole tensor otherwise."""
    if hasattr(target, "device_mesh"):
        from torch.distributed.tensor import distribute_tensor

        return distribute_tensor(source.to(target.device), target.device_mesh, target.placements)
    return source


# The loss log


def keep_log_rows(path: Path, step: int) -> None:
    """On resume, drop log rows after the checkpoint's step (a killed run may have logged further)."""
    if not path.exists():
        path.write_text("step,loss,ce,mse,tokens\n")  # tokens: this step's, all processes
        return
    rows = list(csv.reader(path.read_text().splitlines()))
    kept = [rows[0]] + [row for row in rows[1:] if int(row[0]) <= step]
    path.write_text("\n".join(",".join(row) for row in kept) + "\n")


def append_log_row(path: Path, row: list) -> None:
    with open(path, "a") as file:
        file.write(",".join(str(value) for value in row) + "\n")


def plot_losses(csv_path: Path, png_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(csv_path.read_text().splitlines()))
    steps = [int(row["step"]) for row in rows]
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, name in zip(axes, ("ce", "mse")):
        values = [float(row[name]) for row in rows]
        ax.plot(steps, values, linewidth=0.8)
        ax.set_title(f"{name.upper()} loss")
        ax.set_xlabel("step")
        if min(values) > 0:  # a run without images (or text) logs zeros, which a log scale cannot show
            ax.set_yscale("log")
    figure.tight_layout()
    figure.savefig(png_path, dpi=100)
    plt.close(figure)
