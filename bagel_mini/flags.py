"""Checks of command-line values shared by sample.py, train.py and `python -m bagel_mini.evaluate`.

Each is an argparse `type`: a bad value stops the command before any work with one line that names the
flag, the value and what is allowed (argparse adds the flag: "argument --ema: ...").
"""

import argparse
import math

import torch


class HelpFormatter(argparse.RawTextHelpFormatter):
    """Help text as written (line breaks kept), with each flag's default where it has one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        shown = action.default is not None and action.default is not False and action.default != argparse.SUPPRESS
        if action.option_strings and shown:
            text += " (default: %(default)s)"
        return text


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r}: need a finite number")
    return value


def at_least(low: int):
    """An integer >= low."""

    def check(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value}: need at least {low}")
        return value

    return check


def positive(text: str) -> float:
    """A finite number > 0."""
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value}: need a positive number")
    return value


def non_negative(text: str) -> float:
    """A finite number >= 0."""
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value}: need a number >= 0")
    return value


def fraction(text: str) -> float:
    """A number in [0, 1]."""
    value = _number(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{value}: need a number from 0 to 1")
    return value


def decay(text: str) -> float:
    """An EMA decay in [0, 1): 1 would never move the average."""
    value = _number(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{value}: need 0 <= decay < 1")
    return value


def mix(text: str) -> dict[str, float]:
    """Shapes World tasks and their weights, "task=weight,task=weight": names from shapes_world.TASKS."""
    from bagel_mini.shapes_world.tasks import TASKS

    weights = {}
    for part in text.split(","):
        name, equals, weight = part.partition("=")
        if not equals or name.strip() not in TASKS:
            known = ", ".join(TASKS)
            raise argparse.ArgumentTypeError(f"{part!r}: need task=weight with a task from {known}")
        weights[name.strip()] = non_negative(weight)
    if not sum(weights.values()):
        raise argparse.ArgumentTypeError(f"{text!r}: the weights sum to 0; give some task a positive weight")
    return weights


def device(text: str) -> str:
    """cpu, cuda or cuda:N, and it must exist on this machine (kept as text: run states are saved as json)."""
    try:
        parsed = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a device; use cpu, cuda or cuda:N") from None
    if parsed.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"{text!r}: only cpu, cuda and cuda:N are supported")
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: no CUDA GPU is available here")
    if parsed.type == "cuda" and (parsed.index or 0) >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"{text!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return text


def default_device(chosen: str | None) -> torch.device:
    """The --device asked for, else cuda if there is one."""
    return torch.device(chosen or ("cuda" if torch.cuda.is_available() else "cpu"))
