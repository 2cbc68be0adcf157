"""Small builders shared by the tests."""

from pathlib import Path

import pytest
import torch
from torch import nn

from bagel_mini.config import LLMConfig

FIXTURES = Path(__file__).parent / "fixtures"
TINY = FIXTURES / "official_tiny"

# Three packed samples with every kind of split, for comparing attention implementations.
THREE_SAMPLES = [
    [(5, "causal"), (9, "full"), (3, "causal"), (8, "noise"), (2, "causal")],
    [(4, "causal"), (7, "noise"), (7, "full"), (1, "causal")],
    [(6, "full"), (5, "causal")],
]


def tiny_llm_config(arch: str = "mot") -> LLMConfig:
    from bagel_mini.config import ARCHITECTURES

    return LLMConfig(
        vocab_size=50,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        rope_theta=10000.0,
        layer_module=ARCHITECTURES[arch],
    )


@torch.no_grad()
def randomize_(module: nn.Module, seed: int) -> nn.Module:
    """Give every parameter distinct random values (norm weights near 1), so no test passes by symmetry."""
    generator = torch.Generator().manual_seed(seed)
    for name, parameter in module.named_parameters():
        noise = torch.randn(parameter.shape, generator=generator)
        if "norm" in name:
            parameter.copy_(1 + 0.1 * noise)
        else:
            parameter.copy_(noise / max(parameter.shape[-1], 1) ** 0.5)
    return module


def assert_names(error: BaseException | pytest.ExceptionInfo, *facts: object) -> None:
    """The error's message names every fact (a file, a key, a value, a cause), in any wording."""
    message = str(error.value if isinstance(error, pytest.ExceptionInfo) else error)
    missing = [str(fact) for fact in facts if str(fact) not in message]
    assert not missing, f"the message {message!r} does not name {missing}"
