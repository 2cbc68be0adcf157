"""Checkpoint layout: our parameter names and the released BAGEL-7B-MoT key names.

Our modules use short names that say what a weight is for (`llm.layers.3.gen.attn.q_proj`: the
generation expert's query projection). The release uses the official module tree
(`language_model.model.layers.3.self_attn.q_proj_moe_gen`). `KEY_TABLE` maps one to the other, rule
by rule; loading and saving in the released layout both go through it.

    python -m bagel_mini.checkpoint keys --preset bagel-7b-mot

prints the released keys and shapes our model reads for a preset, built on the meta device (no
memory, no random init).
"""

import argparse
import json
import re
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from bagel_mini.config import BagelConfig, load_config_dir, preset
from bagel_mini.siglip import conv_to_linear_weight

_LAYER = r"llm\.layers\.(\d+)\."
_RELEASED_LAYER = r"language_model.model.layers.\1."

# (our name pattern, released name) applied to the start of a key; the first matching rule wins.
KEY_TABLE = [
    (r"llm\.embed_tokens\.", "language_model.model.embed_tokens."),
    (r"llm\.norm\.", "language_model.model.norm."),
    (r"llm\.norm_gen\.", "language_model.model.norm_moe_gen."),
    (r"llm\.lm_head\.", "language_model.lm_head."),
    # Understanding expert: the plain Qwen2 names.
    (_LAYER + r"und\.input_norm\.", _RELEASED_LAYER + "input_layernorm."),
    (_LAYER + r"und\.post_attention_norm\.", _RELEASED_LAYER + "post_attention_layernorm."),
    (_LAYER + r"und\.attn\.(\w+)\.", _RELEASED_LAYER + r"self_attn.\2."),
    (_LAYER + r"und\.mlp\.", _RELEASED_LAYER + "mlp."),
    # Generation expert: the same module names with `_moe_gen` appended.
    (_LAYER + r"gen\.input_norm\.", _RELEASED_LAYER + "input_layernorm_moe_gen."),
    (_LAYER + r"gen\.post_attention_norm\.", _RELEASED_LAYER + "post_attention_layernorm_moe_gen."),
    (_LAYER + r"gen\.attn\.(\w+)\.", _RELEASED_LAYER + r"self_attn.\2_moe_gen."),
    (_LAYER + r"gen\.mlp\.", _RELEASED_LAYER + "mlp_moe_gen."),
    # SigLIP, as Hugging Face names it.
    (r"vit\.patch_embed\.", "vit_model.vision_model.embeddings.patch_embedding."),
    (r"vit\.position_embed\.", "vit_model.vision_model.embeddings.position_embedding."),
    (r"vit\.layers\.(\d+)\.norm(\d)\.", r"vit_model.vision_model.encoder.layers.\1.layer_norm\2."),
    (r"vit\.layers\.(\d+)\.(q|k|v|out)_proj\.", r"vit_model.vision_model.encoder.layers.\1.self_attn.\2_proj."),
    (r"vit\.layers\.(\d+)\.(fc\d)\.", r"vit_model.vision_model.encoder.layers.\1.mlp.\2."),
    (r"vit\.post_norm\.", "vit_model.vision_model.post_layernorm."),
    # Connectors, embedders and the fixed position tables.
    (r"connector\.", "connector."),
    (r"vit_pos_embed\.table", "vit_pos_embed.pos_embed"),
    (r"latent_pos_embed\.table", "latent_pos_embed.pos_embed"),
    (r"time_embedder\.fc1\.", "time_embedder.mlp.0."),
    (r"time_embedder\.fc2\.", "time_embedder.mlp.2."),
    (r"vae2llm\.", "vae2llm."),
    (r"llm2vae\.", "llm2vae."),
]


def released_name(name: str) -> str:
    """The released key of our parameter `name`."""
    for pattern, replacement in KEY_TABLE:
        match = re.match(pattern, name)
        if match:
            return match.expand(replacement) + name[match.end() :]
    raise KeyError(f"no rule in KEY_TABLE maps parameter {name!r} to a released key")


def released_names(model: nn.Module) -> dict[str, str]:
    """{our name: released name} for every entry of the model's state dict."""
    names = {name: released_name(name) for name in model.state_dict()}
    if len(set(names.values())) != len(names):
        raise RuntimeError("KEY_TABLE maps two parameters to the same released key")
    return names


def build_meta(config: BagelConfig):
    """The Bagel model and its autoencoder on the meta device: shapes only, no memory, no init."""
    from bagel_mini.model import Bagel
    from bagel_mini.vae import AutoEncoder

    with torch.device("meta"):
        return Bagel(config), AutoEncoder(config.vae)


def released_keys(config: BagelConfig) -> dict[str, dict[str, list[int]]]:
    """{file name: {released key: shape}} of what a model of this config reads."""
    model, autoencoder = build_meta(config)
    state = model.state_dict()
    ema = {released: list(state[ours].shape) for ours, released in released_names(model).items()}
    ae = {key: list(tensor.shape) for key, tensor in autoencoder.state_dict().items()}
    return {"ema.safetensors": ema, "ae.safetensors": ae}


class CheckpointError(ValueError):
    """A checkpoint file does not match the model; the message names the file and the keys."""


def load_safetensors_into(model: nn.Module, path: Path, names: dict[str, str], dtype: torch.dtype, device) -> None:
    """Fill a model built on the meta device with the tensors of `path`, cast one at a time.

    `names` maps our parameter names to the file's keys. Strict: every key present, none extra, every
    shape right; the error lists the first few offenders and the counts.
    """
    expected = {released: ours for ours, released in names.items()}
    shapes = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    try:
        with safe_open(str(path), framework="pt", device="cpu") as file:
            present = set(file.keys())
            problems = _key_problems(path, set(expected), present)
            state = {}
            for released, ours in expected.items():
                if released not in present:
                    continue
                tensor = file.get_tensor(released)
                if tensor.dim() == 4 and ours == "vit.patch_embed.weight":
                    tensor = conv_to_linear_weight(tensor)  # a SigLIP checkpoint with the original Conv2d kernel
                if tuple(tensor.shape) != shapes[ours]:
                    problems.append(f"{released}: shape {tuple(tensor.shape)} in the file, {shapes[ours]} expected")
                    continue
                state[ours] = tensor.to(device=device, dtype=dtype)
    except SafetensorError as error:
        raise CheckpointError(f"{path}: not a readable safetensors file ({error})") from None
    if problems:
        raise CheckpointError(f"{path}: {len(problems)} problem(s):\n  " + "\n  ".join(problems[:8]))
    model.load_state_dict(state, strict=True, assign=True)


def _key_problems(path: Path, expected: set[str], present: set[str]) -> list[str]:
    problems = []
    for label, keys in (("missing", expected - present), ("unexpected", present - expected)):
        if keys:
            shown = ", ".join(sorted(keys)[:5]) + (", ..." if len(keys) > 5 else "")
            problems.append(f"{len(keys)} {label} key(s): {shown}")
    return problems


def load_checkpoint(directory: str | Path, dtype: torch.dtype = torch.float32, device="cpu"):
    """Bagel and its autoencoder from a checkpoint directory in the released layout.

    The modules are built on the meta device (no random init), then every tensor is read from
    `ema.safetensors` / `ae.safetensors` and cast to `dtype` on its own, so no second full copy exists.
    """
    directory = Path(directory)
    config = load_config_dir(directory)
    model, autoencoder = build_meta(config)
    for module, file_name, names in (
        (model, "ema.safetensors", released_names(model)),
        (autoencoder, "ae.safetensors", {name: name for name in autoencoder.state_dict()}),
    ):
        path = directory / file_name
        if not path.is_file():
            raise CheckpointError(f"{path}: weights file not found")
        load_safetensors_into(module, path, names, dtype, device)
    return model.eval(), autoencoder.eval()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bagel_mini.checkpoint", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    keys = commands.add_parser("keys", help="print the released keys and shapes a preset reads, as JSON")
    keys.add_argument("--preset", default="bagel-7b-mot")
    keys.add_argument("--arch", default="mot", choices=["mot", "moe", "dense"])
    args = parser.parse_args(argv)
    if args.command == "keys":
        print(json.dumps(released_keys(preset(args.preset, args.arch)), indent=1))


if __name__ == "__main__":
    main()
