"""Configurations: the released json files and the presets `toy`, `small` and `bagel-7b-mot`.

BAGEL (paper section 2.1) joins three published models: a Qwen2.5 LLM (`llm_config.json`), a SigLIP
ViT (`vit_config.json`) and the FLUX autoencoder (whose parameters the official loader hard-codes).
A few Bagel-level fields tie them together. Field names follow the files, so a released checkpoint
directory reads without translation; `bagel_config.json` holds the Bagel-level fields and the
autoencoder parameters for checkpoints we write (the released directory has no such file).
"""

import json
import os
import tempfile
import typing
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path


class ConfigError(ValueError):
    """A config file or value is wrong; the message names the file and the field."""


# `layer_module` values of the official code, and our short names for them (paper section 2.4).
ARCHITECTURES = {
    "dense": "Qwen2DecoderLayer",  # one set of weights for every token
    "moe": "Qwen2MoEDecoderLayer",  # the MLP is duplicated for generation tokens
    "mot": "Qwen2MoTDecoderLayer",  # every weight of the layer is duplicated
}


@dataclass
class LLMConfig:
    """The Qwen2 language model; the field names of a Hugging Face `llm_config.json`.

    `qk_norm` and `layer_module` are BAGEL's additions. The official loader forces
    qk_norm=True, tie_word_embeddings=False and layer_module=Qwen2MoTDecoderLayer; a released
    json has no `qk_norm` / `layer_module`, so those are the defaults here.
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    max_position_embeddings: int = 32768
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6
    hidden_act: str = "silu"
    tie_word_embeddings: bool = False
    qk_norm: bool = True
    layer_module: str = ARCHITECTURES["mot"]
    extra: dict = field(default_factory=dict)  # other keys of the file, written back unchanged

    def __post_init__(self):
        _require_positive(
            self,
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
        )
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"hidden_size {self.hidden_size} is not divisible by num_attention_heads {self.num_attention_heads}"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(
                f"num_attention_heads {self.num_attention_heads} is not divisible by "
                f"num_key_value_heads {self.num_key_value_heads}"
            )
        if self.layer_module not in ARCHITECTURES.values():
            raise ConfigError(f"layer_module {self.layer_module!r} is not one of {sorted(ARCHITECTURES.values())}")
        if self.hidden_act != "silu":
            raise ConfigError(f"hidden_act {self.hidden_act!r} is not supported (Qwen2 uses 'silu')")
        if self.tie_word_embeddings:
            raise ConfigError("tie_word_embeddings=true is not supported: BAGEL unties lm_head")
        for name in ("rope_scaling", "use_sliding_window"):
            if self.extra.get(name):
                raise ConfigError(
                    f"{name}={self.extra[name]!r} is not supported (BAGEL uses plain RoPE, full attention)"
                )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def architecture(self) -> str:
        """'dense', 'moe' or 'mot'."""
        return next(short for short, name in ARCHITECTURES.items() if name == self.layer_module)


@dataclass
class ViTConfig:
    """The SigLIP vision tower; the field names of `vit_config.json`.

    `num_hidden_layers` here is the number of layers that run. BAGEL drops SigLIP's last layer, so
    the json file holds one more (27 in the release, 26 run); `read_vit_json` and `save_config_dir`
    convert.
    """

    hidden_size: int
    image_size: int
    intermediate_size: int
    num_attention_heads: int
    num_hidden_layers: int
    patch_size: int
    num_channels: int = 3
    hidden_act: str = "gelu_pytorch_tanh"
    layer_norm_eps: float = 1e-6
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        _require_positive(
            self,
            "hidden_size",
            "image_size",
            "intermediate_size",
            "num_attention_heads",
            "num_hidden_layers",
            "patch_size",
            "num_channels",
        )
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"hidden_size {self.hidden_size} is not divisible by num_attention_heads {self.num_attention_heads}"
            )
        if self.image_size % self.patch_size:
            raise ConfigError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.hidden_act != "gelu_pytorch_tanh":
            raise ConfigError(f"hidden_act {self.hidden_act!r} is not supported (SigLIP uses 'gelu_pytorch_tanh')")

    @property
    def num_patches_per_side(self) -> int:
        return self.image_size // self.patch_size


@dataclass
class VAEConfig:
    """The FLUX autoencoder (`AutoEncoderParams` of the FLUX code; not a file in the release)."""

    ch: int
    ch_mult: list[int]
    num_res_blocks: int
    resolution: int = 256
    in_channels: int = 3
    out_ch: int = 3
    downsample: int = 8
    z_channels: int = 16
    scale_factor: float = 0.3611
    shift_factor: float = 0.1159
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        _require_positive(self, "ch", "num_res_blocks", "in_channels", "out_ch", "downsample", "z_channels")
        if not isinstance(self.ch_mult, list) or not self.ch_mult or not all(map(_is_positive_int, self.ch_mult)):
            raise ConfigError(f"ch_mult must be a non-empty list of positive integers, got {self.ch_mult!r}")
        if 2 ** (len(self.ch_mult) - 1) != self.downsample:
            raise ConfigError(
                f"ch_mult {self.ch_mult} gives {2 ** (len(self.ch_mult) - 1)}x downsampling, "
                f"but downsample is {self.downsample}"
            )


@dataclass
class BagelConfig:
    """The whole model: the three parts and the fields that join them (`BagelConfig` officially)."""

    llm: LLMConfig
    vit: ViTConfig
    vae: VAEConfig
    latent_patch_size: int = 2  # latents are cut into 2x2 patches, one LLM token each
    max_latent_size: int = 64  # the latent position table covers max_latent_size^2 patches
    vit_max_num_patch_per_side: int = 70  # the ViT position table covers this many patches per side
    connector_act: str = "gelu_pytorch_tanh"
    interpolate_pos: bool = False
    timestep_shift: float = 1.0
    visual_gen: bool = True
    visual_und: bool = True
    train_image_size: int = 0  # the Shapes World image side train.py trained at (0: not known): sample's default
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        _require_positive(self, "latent_patch_size", "max_latent_size", "vit_max_num_patch_per_side")
        if not isinstance(self.train_image_size, int) or self.train_image_size < 0:
            raise ConfigError(f"train_image_size must be a non-negative integer, got {self.train_image_size!r}")
        if self.connector_act != "gelu_pytorch_tanh":
            raise ConfigError(f"connector_act {self.connector_act!r} is not supported")
        if self.timestep_shift <= 0:
            raise ConfigError(f"timestep_shift must be positive, got {self.timestep_shift}")

    @property
    def patch_latent_dim(self) -> int:
        """Values in one VAE token: a latent_patch_size^2 patch of z_channels latents (64 released)."""
        return self.latent_patch_size**2 * self.vae.z_channels

    @property
    def pixels_per_latent_token(self) -> int:
        """Side in pixels of the square one VAE token covers (16 released)."""
        return self.vae.downsample * self.latent_patch_size


# ---------------------------------------------------------------------------------------------
# Presets


def preset(name: str, arch: str = "mot") -> BagelConfig:
    """A named configuration with the decoder variant `arch` ('mot', 'moe' or 'dense').

    The variants have identical FLOPs per token: routing is hard, each token runs one expert.
    """
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    if arch not in ARCHITECTURES:
        raise ConfigError(f"unknown arch {arch!r}; choose one of {sorted(ARCHITECTURES)}")
    config = PRESETS[name]()
    config.llm = replace(config.llm, layer_module=ARCHITECTURES[arch])
    return config


def _toy() -> BagelConfig:
    """Trains on a 2-core CPU in minutes: 64x64 images, 8 ViT patches and 8 latent tokens (of 8 pixels) per side."""
    return BagelConfig(
        llm=LLMConfig(
            vocab_size=512,
            hidden_size=128,
            intermediate_size=384,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            rope_theta=10000.0,
        ),
        vit=ViTConfig(
            hidden_size=64,
            image_size=64,
            intermediate_size=256,
            num_attention_heads=2,
            num_hidden_layers=2,
            patch_size=8,
        ),
        vae=VAEConfig(ch=32, ch_mult=[1, 2, 2, 2], num_res_blocks=1),
        latent_patch_size=1,  # an 8-pixel token: a toy object spans several tokens, not one (model card, rung a)
        max_latent_size=8,
        vit_max_num_patch_per_side=8,
    )


def _small() -> BagelConfig:
    """One GPU: about 180M parameters in the layers of each LLM expert, for the ablation at a larger scale."""
    return BagelConfig(
        llm=LLMConfig(
            vocab_size=32768,
            hidden_size=1024,
            intermediate_size=2816,
            num_hidden_layers=16,
            num_attention_heads=16,
            num_key_value_heads=4,
            rope_theta=1e6,
        ),
        vit=ViTConfig(
            hidden_size=384,
            image_size=448,
            intermediate_size=1536,
            num_attention_heads=6,
            num_hidden_layers=6,
            patch_size=14,
        ),
        vae=VAEConfig(ch=128, ch_mult=[1, 2, 4, 4], num_res_blocks=2),
        max_latent_size=32,
        vit_max_num_patch_per_side=32,
    )


def _bagel_7b_mot() -> BagelConfig:
    """The released BAGEL-7B-MoT, with the overrides the official loader applies."""
    return BagelConfig(
        llm=LLMConfig(
            vocab_size=152064,
            hidden_size=3584,
            intermediate_size=18944,
            num_hidden_layers=28,
            num_attention_heads=28,
            num_key_value_heads=4,
            rope_theta=1e6,
            rms_norm_eps=1e-6,
        ),
        vit=ViTConfig(
            hidden_size=1152,
            image_size=980,
            intermediate_size=4304,
            num_attention_heads=16,
            num_hidden_layers=26,
            patch_size=14,
        ),
        vae=VAEConfig(ch=128, ch_mult=[1, 2, 4, 4], num_res_blocks=2),
        max_latent_size=64,
        vit_max_num_patch_per_side=70,
    )


PRESETS = {"toy": _toy, "small": _small, "bagel-7b-mot": _bagel_7b_mot}


# ---------------------------------------------------------------------------------------------
# Reading and writing the json files

LLM_JSON, VIT_JSON, BAGEL_JSON = "llm_config.json", "vit_config.json", "bagel_config.json"


def config_from_dict(cls: type, values: dict, source: str, **parts):
    """The dataclass `cls` from a json object read from `source`.

    Each field must be present unless it has a default, and of its annotated type. Keys that are not
    fields go to `extra`, written back unchanged. `parts` are fields given as objects rather than read
    (the llm / vit / vae of a BagelConfig).
    """
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: expected a json object, got {type(values).__name__}")
    known = {f.name: f for f in fields(cls) if f.name != "extra" and f.name not in parts}
    required = [name for name, f in known.items() if f.default is MISSING and f.default_factory is MISSING]
    missing = [name for name in required if name not in values]
    if missing:
        raise ConfigError(f"{source}: missing field(s): {', '.join(missing)}")
    read, extra = {}, {}
    for name, value in values.items():
        if name in known:
            read[name] = _checked(value, known[name].type, f"{source}: field '{name}'")
        else:
            extra[name] = value
    try:
        return cls(**parts, **read, extra=extra)
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None


def config_to_dict(config) -> dict:
    """The dataclass as it is written to json: its fields, then the extra keys it was read with."""
    values = {f.name: getattr(config, f.name) for f in fields(config) if f.name not in ("extra", "llm", "vit", "vae")}
    return {**values, **config.extra}


def read_llm_json(path: str | Path) -> LLMConfig:
    return config_from_dict(LLMConfig, _read_json(path), str(path))


def read_vit_json(path: str | Path) -> ViTConfig:
    values = _read_json(path)
    if isinstance(values.get("num_hidden_layers"), int):
        values["num_hidden_layers"] -= 1  # BAGEL drops SigLIP's last layer
    return config_from_dict(ViTConfig, values, str(path))


def load_config_dir(directory: str | Path) -> BagelConfig:
    """Read a checkpoint directory: llm_config.json, vit_config.json and, if present, bagel_config.json.

    Without bagel_config.json (the released layout) the Bagel-level fields and the autoencoder get the
    values the official loader hard-codes.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError(f"{directory}: not a directory")
    if not (directory / LLM_JSON).exists() and (directory / "last").is_dir():
        raise ConfigError(f"{directory} is a training run, not a checkpoint; pass {directory / 'last'} (its newest)")
    llm = read_llm_json(directory / LLM_JSON)
    vit = read_vit_json(directory / VIT_JSON)
    released = _bagel_7b_mot()
    if not (directory / BAGEL_JSON).exists():
        return replace(released, llm=llm, vit=vit)
    values = _read_json(directory / BAGEL_JSON)
    source = str(directory / BAGEL_JSON)
    vae_values = values.pop("ae_params", None)
    vae = released.vae if vae_values is None else config_from_dict(VAEConfig, vae_values, f"{source}: ae_params")
    return config_from_dict(BagelConfig, values, source, llm=llm, vit=vit, vae=vae)


def save_config_dir(config: BagelConfig, directory: str | Path, overwrite: bool = False) -> None:
    """Write llm_config.json, vit_config.json and bagel_config.json (each atomically)."""
    directory = Path(directory)
    vit = config_to_dict(config.vit)
    vit["num_hidden_layers"] += 1  # the file counts SigLIP's dropped last layer
    bagel = {**config_to_dict(config), "ae_params": config_to_dict(config.vae)}
    for name, values in ((LLM_JSON, config_to_dict(config.llm)), (VIT_JSON, vit), (BAGEL_JSON, bagel)):
        write_json_atomic(directory / name, values, overwrite)


def write_json_atomic(path: Path, values: dict, overwrite: bool = False) -> None:
    """Write json to a temporary file and rename it into place, so a crash never leaves half a file."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(temporary, 0o644)  # mkstemp makes files private; a config file is meant to be read
    try:
        with os.fdopen(handle, "w") as file:
            json.dump(values, file, indent=2)
            file.write("\n")
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def _read_json(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        values = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path}: not valid json ({error})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a json object, got {type(values).__name__}")
    return values


def _checked(value, expected: type, where: str):
    """`value` if it has the `expected` type, else a ConfigError. An int stands for a float (json files
    write 1000000 as readily as 1e6); a bool is not an int, though Python says it is."""
    if expected is float and type(value) is int:
        return float(value)
    base = typing.get_origin(expected) or expected  # list[int] -> list; its items are checked by the dataclass
    if not isinstance(value, base) or (isinstance(value, bool) and base is not bool):
        raise ConfigError(f"{where} must be {base.__name__}, got {type(value).__name__} ({value!r})")
    return value


def _is_positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _require_positive(config, *names: str) -> None:
    for name in names:
        if not _is_positive_int(getattr(config, name)):
            raise ConfigError(f"{name} must be a positive integer, got {getattr(config, name)!r}")
