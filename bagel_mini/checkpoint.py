"""Checkpoint layout: our parameter names and the released BAGEL-7B-MoT key names.

Our modules use short names that say what a weight is for (`llm.layers.3.gen.attn.q_proj`: the
generation expert's query projection). The release uses the official module tree
(`language_model.model.layers.3.self_attn.q_proj_moe_gen`). `KEY_TABLE` maps one to the other, rule
by rule; loading and saving in the released layout both go through it.
`released_keys(preset("bagel-7b-mot"))` lists the released keys and shapes our model reads, built on the
meta device (no memory, no random init).

Training runs (train.py) write the same layout into step directories, plus what resuming needs (runs.py).
"""

import json
import math
import mmap
import os
import re
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from bagel_mini.config import BagelConfig, load_config_dir, save_config_dir
from bagel_mini.model import Bagel
from bagel_mini.siglip import conv_to_linear_weight
from bagel_mini.vae import AutoEncoder
from bagel_mini.weights8 import (
    WEIGHT_MODES,
    decoder_linears,
    eight_bit_bytes,
    eight_bit_layers,
    quantize,
    use_8bit_linears,
)

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

    with torch.device("meta"):
        return Bagel(config), AutoEncoder(config.vae)


def released_keys(config: BagelConfig) -> dict[str, dict[str, list[int]]]:
    """{file name: {released key: shape}} of what a model of this config reads."""
    model, autoencoder = build_meta(config)
    state = model.state_dict()
    ema = {released: list(state[ours].shape) for ours, released in released_names(model).items()}
    ae = {key: list(tensor.shape) for key, tensor in autoencoder.state_dict().items()}  # released names already
    return {"ema.safetensors": ema, "ae.safetensors": ae}


class CheckpointError(ValueError):
    """A checkpoint does not match the model; the message names the file and the keys."""


SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
}  # fmt: skip


def read_header(path: Path) -> tuple[dict, int]:
    """The json header of a safetensors file ({key: {dtype, shape, data_offsets}}) and where the data starts.

    The format: 8 bytes little-endian header length, the header, then the tensors' raw bytes. Every
    entry is checked against the file size, so a truncated file is reported here, naming a key.
    """
    size = path.stat().st_size
    with open(path, "rb") as file:
        length = int.from_bytes(file.read(8), "little")
        if size < 8 or length > size - 8:
            raise CheckpointError(f"{path}: not a safetensors file (header of {length} bytes in a {size}-byte file)")
        try:
            header = json.loads(file.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise CheckpointError(f"{path}: unreadable safetensors header ({error})") from None
    header.pop("__metadata__", None)
    data_start = 8 + length
    for key, entry in header.items():
        if entry.get("dtype") not in SAFETENSORS_DTYPES:
            raise CheckpointError(f"{path}: {key} has unsupported dtype {entry.get('dtype')!r}")
        if data_start + entry["data_offsets"][1] > size:
            raise CheckpointError(
                f"{path}: truncated: {key} ends at byte {data_start + entry['data_offsets'][1]}, the file has {size}"
            )
    return header, data_start


def mapped_tensors(path: Path, keys: list[str], header: tuple[dict, int] | None = None) -> Iterator[tuple[str, Tensor]]:
    """(key, tensor as stored in the file) for each of `keys`, one at a time, viewed through a memory map.

    A view is valid only until the next one is asked for: then its pages are dropped from the map, so a
    reader that converts each tensor holds the loaded weights plus at most one tensor as it is in the
    file, and peak memory stays near the final size. (The safetensors library's reader keeps every page
    it touched mapped until the file is closed.) `header` is `read_header(path)` when the caller has it.
    """
    header, data_start = header or read_header(path)
    page = mmap.PAGESIZE
    with open(path, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_COPY) as mapped:
        for key in keys:
            entry = header[key]
            begin, end = (data_start + offset for offset in entry["data_offsets"])
            stored = SAFETENSORS_DTYPES[entry["dtype"]]
            count = math.prod(entry["shape"])
            raw = torch.frombuffer(mapped, dtype=stored, count=count, offset=begin) if count else torch.empty(0)
            yield key, raw.reshape(entry["shape"])
            aligned = begin // page * page
            if end > aligned:
                mapped.madvise(mmap.MADV_DONTNEED, aligned, end - aligned)


def read_tensors(
    path: Path, keys: list[str], dtype: torch.dtype, device, header: tuple[dict, int] | None = None
) -> dict[str, Tensor]:
    """Read `keys`, each copied to `dtype` on `device` on its own (`mapped_tensors`)."""
    return {key: raw.to(device=device, dtype=dtype, copy=True) for key, raw in mapped_tensors(path, keys, header)}


def load_weights_into(module: nn.Module, path: Path, names: dict[str, str], dtype: torch.dtype, device) -> None:
    """Fill a module built on the meta device from `path`; `names` maps its parameter names to file keys.

    Strict: every key present, none extra, every shape right; the error lists the first few offenders
    and the counts. Nothing is read before the whole file has been checked. The weight of a Linear8
    (weights8.py) is quantized tensor by tensor as it is read, on `device`; the rest is cast to `dtype`.
    """
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    header, data_start = read_header(path)
    expected = {released: ours for ours, released in names.items()}
    shapes = {name: tuple(tensor.shape) for name, tensor in module.state_dict().items()}
    problems = _key_problems(set(expected), set(header))
    for released, ours in expected.items():
        stored = tuple(header[released]["shape"]) if released in header else None
        if stored is not None and stored != shapes[ours] and not _is_conv_patch_kernel(ours, stored, shapes[ours]):
            problems.append(f"{released}: shape {stored} in the file, {shapes[ours]} expected")
    if problems:
        raise CheckpointError(f"{path}: {len(problems)} problem(s):\n  " + "\n  ".join(problems[:8]))
    eight_bit = eight_bit_layers(module)  # {our weight name: mode} of its Linear8 layers
    state = {}
    for released, raw in mapped_tensors(path, list(expected), (header, data_start)):
        ours = expected[released]
        if ours in eight_bit:  # quantized as it is read: no copy of the weight in the compute dtype is kept
            state[ours], state[ours.removesuffix("weight") + "scale"] = quantize(raw.to(device), eight_bit[ours])
            continue
        tensor = raw.to(device=device, dtype=dtype, copy=True)
        state[ours] = conv_to_linear_weight(tensor) if tensor.shape != shapes[ours] else tensor
    module.load_state_dict(state, strict=True, assign=True)


def _is_conv_patch_kernel(name: str, stored: tuple, expected: tuple) -> bool:
    """SigLIP's original Conv2d patch kernel (out, C, p, p), which loads converted to our Linear."""
    return name == "vit.patch_embed.weight" and len(stored) == 4 and (stored[0], math.prod(stored[1:])) == expected


def _key_problems(expected: set[str], present: set[str]) -> list[str]:
    problems = []
    for label, keys in (("missing", expected - present), ("unexpected", present - expected)):
        if keys:
            shown = ", ".join(sorted(keys)[:5]) + (", ..." if len(keys) > 5 else "")
            problems.append(f"{len(keys)} {label} key(s): {shown}")
    return problems


def autoencoder_names(autoencoder: nn.Module) -> dict[str, str]:
    """The autoencoder's names are the released ones."""
    return {name: name for name in autoencoder.state_dict()}


def weight_bytes(modules: tuple[nn.Module, ...], dtype: torch.dtype, weights: str = "bf16") -> int:
    """Bytes the modules' weights take when loaded in `dtype` with `weights` (a mode of weights8.WEIGHT_MODES:
    under fp8 or int8 the decoder's Linear weights take one byte a value plus a float32 scale a row)."""
    linears = [] if weights == "bf16" else [linear for m in modules for linear in decoder_linears(m).values()]
    count = sum(t.numel() for module in modules for t in module.state_dict().values())
    count -= sum(linear.weight.numel() for linear in linears)
    return count * dtype.itemsize + sum(eight_bit_bytes(linear) for linear in linears)


def load_checkpoint(
    directory: str | Path, dtype: torch.dtype = torch.float32, device="cpu", offload: bool = False, weights="bf16"
):
    """Bagel and its autoencoder from a checkpoint directory in the released layout.

    The modules are built on the meta device (no random init), then every tensor is read from
    `ema.safetensors` / `ae.safetensors` and cast to `dtype` on `device` on its own, so no second full
    copy exists. `weights` "fp8" or "int8" stores the decoder's Linear weights in 8 bits, each quantized
    as it is read (weights8.py). On a GPU the free memory is checked first. With `offload` the decoder
    layers stay on the CPU and each visits the GPU only while it runs (slow: every layer crosses the bus
    at every step).
    """
    directory, device = Path(directory), torch.device(device)
    if weights not in WEIGHT_MODES:
        raise ValueError(f"--weights {weights!r}: choose one of {', '.join(WEIGHT_MODES)}")
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: checkpoint directory not found")
    model, autoencoder = build_meta(load_config_dir(directory))
    if device.type == "cuda" and not offload:
        check_gpu_memory((model, autoencoder), dtype, weights, device)
    names = released_names(model)  # before the swap below: the file holds Linear weights, not scales
    if weights != "bf16":
        use_8bit_linears(model, weights)
    home = torch.device("cpu") if offload else device
    load_weights_into(model, directory / "ema.safetensors", names, dtype, home)
    load_weights_into(autoencoder, directory / "ae.safetensors", autoencoder_names(autoencoder), dtype, device)
    if offload:
        offload_layers(model, device)
    return model.eval(), autoencoder.eval()


def check_gpu_memory(modules: tuple[nn.Module, ...], dtype: torch.dtype, weights: str, device: torch.device) -> None:
    """Refuse weights that do not fit the GPU's free memory, before reading any; name the --weights mode that fits."""
    free, _ = torch.cuda.mem_get_info(device)
    needs = {mode: weight_bytes(modules, dtype, mode) for mode in WEIGHT_MODES}
    if needs[weights] <= free:
        return
    fitting = [mode for mode in WEIGHT_MODES if needs[mode] <= free]
    if fitting:
        hint = f"--weights {fitting[0]} needs {readable_bytes(needs[fitting[0]])} and fits"
    else:
        hint = f"even 8-bit weights need {readable_bytes(needs['fp8'])}"
    narrower = "--dtype bfloat16, " if dtype.itemsize > 2 else ""
    raise CheckpointError(
        f"the weights need {readable_bytes(needs[weights])} in {dtype} with --weights {weights}, but {device} has "
        f"{readable_bytes(free)} free; {hint}; otherwise use --offload (slow), {narrower}or a larger GPU"
    )


def load_autoencoder(directory: str | Path, dtype: torch.dtype = torch.float32, device="cpu") -> AutoEncoder:
    """Only the autoencoder of a checkpoint directory (`ae.safetensors`; its parameters from the configs), frozen."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: autoencoder directory not found")
    with torch.device("meta"):
        autoencoder = AutoEncoder(load_config_dir(directory).vae)
    load_weights_into(autoencoder, directory / "ae.safetensors", autoencoder_names(autoencoder), dtype, device)
    return autoencoder.eval().requires_grad_(False)


def load_model_weights(directory: str | Path, config: BagelConfig) -> dict[str, torch.Tensor]:
    """The Bagel weights of a checkpoint directory (its `ema.safetensors`) by our names, in float32 on
    the CPU, without the autoencoder."""
    with torch.device("meta"):
        model = Bagel(config)
    load_weights_into(model, Path(directory) / "ema.safetensors", released_names(model), torch.float32, "cpu")
    return model.state_dict()


def readable_bytes(count: int) -> str:
    return f"{count / 2**30:.1f} GiB" if count >= 2**30 else f"{count / 2**20:.1f} MiB"


def offload_layers(model: nn.Module, device: torch.device) -> None:
    """Put everything but the decoder layers on `device`; move each layer there just for its forward."""

    def visit(module, args):  # hooks return None: anything else would replace the layer's inputs
        module.to(device)

    def leave(module, args, output):
        module.to("cpu")

    for layer in model.llm.layers:
        layer.register_forward_pre_hook(visit)
        layer.register_forward_hook(leave)
    for name, child in model.named_children():
        if name != "llm":
            child.to(device)
    for name, child in model.llm.named_children():
        if name != "layers":
            child.to(device)


def save_checkpoint(
    model: nn.Module,
    autoencoder: nn.Module,
    directory: str | Path,
    overwrite: bool = False,
    dtype: torch.dtype | None = None,
) -> None:
    """Write a checkpoint directory in the released layout (configs, ema.safetensors, ae.safetensors),
    the weights in `dtype` if given (the release stores bfloat16).

    Each file is written to a temporary name and renamed into place, so an interrupted save never
    leaves a half-written file under the final name. Existing files are replaced only with `overwrite`.
    """
    directory = Path(directory)
    names = {"ema.safetensors": released_names(model), "ae.safetensors": autoencoder_names(autoencoder)}
    for file_name in names:
        if (directory / file_name).exists() and not overwrite:
            raise FileExistsError(f"{directory / file_name} exists; pass overwrite=True to replace it")
    directory.mkdir(parents=True, exist_ok=True)
    save_config_dir(model.config, directory, overwrite=overwrite)
    for (file_name, mapping), module in zip(names.items(), (model, autoencoder)):
        state = module.state_dict()
        tensors = {
            released: state[ours].detach().to("cpu", dtype or state[ours].dtype).contiguous()
            for ours, released in mapping.items()
        }
        temporary = directory / f".{file_name}.tmp"
        save_file(tensors, temporary)
        os.chmod(temporary, 0o644)  # safetensors writes private files; weights are meant to be shared
        os.replace(temporary, directory / file_name)
