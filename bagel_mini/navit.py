"""Sequence packing (paper section 2.4, "NaViT ... sequence packing"): interleaved samples -> one sequence.

A sample is a list of items: `Text`, `VitImage` (an image to understand) and `VaeImage` (an image to
generate, as a noised target, or a clean image as context). Samples of different lengths and images
of different sizes are laid end to end in one packed sequence, with no padding; the attention mask
(attention.py) keeps samples apart. Packing records, for every token, what the model needs:

- text: [bos] + ids + [eos], one causal split; with `loss`, CE targets ids + [eos] at bos..last id;
- an image: [start_of_image] + its tokens + [end_of_image], one split (ViT and clean VAE: `full`,
  a noised VAE target: `noise`);
- RoPE positions: text counts up; every token of an image block shares one position and the next
  block starts one higher, except that a noised target does not advance it (the clean copy of the
  same image that may follow shares its position);
- one raw standard-normal timestep per noised image (-inf for a clean one; flow.py turns it into t);
- CFG dropout of droppable items (cfg.py), and diffusion-forcing frames (diffusion_forcing.py).
"""

import math
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from bagel_mini.attention import Split
from bagel_mini.cfg import ConditionDropout
from bagel_mini.config import BagelConfig
from bagel_mini.images import grid_position_ids, patchify


@dataclass
class Text:
    ids: list[int]
    loss: bool = False  # learn to predict these tokens
    droppable: bool = False  # a condition CFG training may drop


@dataclass
class VitImage:
    pixels: Tensor  # (3, H, W) in [-1, 1]; H and W multiples of the ViT patch
    droppable: bool = False


@dataclass
class VaeImage:
    pixels: Tensor  # (3, H, W) in [-1, 1]; H and W multiples of the pixels per latent token
    loss: bool = False  # a noised target to denoise (MSE) rather than clean context
    droppable: bool = False
    frame_delta: int | None = None  # diffusion forcing: noised yet visible to later items; positions advance by this
    joins_previous: bool = False  # diffusion forcing: same split and noise level as the previous frame


Item = Text | VitImage | VaeImage
Sample = list[Item]


@dataclass
class PackConfig:
    """What packing needs to know of the model and the tokenizer."""

    bos: int  # <|im_start|>
    eos: int  # <|im_end|>
    start_of_image: int  # <|vision_start|>
    end_of_image: int  # <|vision_end|>
    vit_patch_size: int
    vit_max_patches_per_side: int
    pixels_per_latent_token: int  # 8x VAE downsampling times the latent patch: 16 released, 8 in the toy
    max_latent_size: int
    interpolate_pos: bool = False
    dropout: ConditionDropout = field(default_factory=ConditionDropout)
    ce_weighting: str = "token"  # per-token CE weight: 'token' (1), 'sample' (1/n) or 'square' (1/sqrt(n))

    def __post_init__(self):
        if self.ce_weighting not in CE_WEIGHTS:
            raise ValueError(f"unknown ce_weighting {self.ce_weighting!r}; choose one of {', '.join(CE_WEIGHTS)}")

    @classmethod
    def for_model(cls, config: BagelConfig, special_ids: dict[str, int], **options) -> "PackConfig":
        """special_ids: bos_token_id, eos_token_id, start_of_image, end_of_image (tokenizer.py)."""
        return cls(
            bos=special_ids["bos_token_id"],
            eos=special_ids["eos_token_id"],
            start_of_image=special_ids["start_of_image"],
            end_of_image=special_ids["end_of_image"],
            vit_patch_size=config.vit.patch_size,
            vit_max_patches_per_side=config.vit_max_num_patch_per_side,
            pixels_per_latent_token=config.pixels_per_latent_token,
            max_latent_size=config.max_latent_size,
            interpolate_pos=config.interpolate_pos,
            **options,
        )


# Weight of each CE token of a text with n loss tokens (the official `len2weight`).
CE_WEIGHTS = {"token": lambda n: 1.0, "sample": lambda n: 1.0 / n, "square": lambda n: 1.0 / math.sqrt(n)}


# ---------------------------------------------------------------------------------------------
# The sequence layout: packing, the inferencer and the fixture tests all build their blocks here.


@dataclass(frozen=True)
class Block:
    """One block of the sequence: its ids (None where an image token goes), RoPE positions, next block's position."""

    ids: list[int | None]
    positions: list[int]
    next_position: int


def text_block(ids: list[int], bos: int, eos: int, position: int) -> Block:
    """A text reads [bos] + ids + [eos], and its RoPE positions count up from `position`."""
    ids = [bos, *ids, eos]
    return Block(ids, list(range(position, position + len(ids))), position + len(ids))


def image_block(count: int, start_of_image: int, end_of_image: int, position: int, advance: int = 1) -> Block:
    """An image reads [start_of_image] + its `count` tokens + [end_of_image], all at one RoPE position.

    The next block starts one higher; a noised target advances by 0 (the clean copy of the same image
    that may follow shares its position), a diffusion-forcing frame by its frame_delta.
    """
    return Block([start_of_image, *[None] * count, end_of_image], [position] * (count + 2), position + advance)


@dataclass
class PackedBatch:
    """One packed sequence of L tokens and everything the model reads from it."""

    sequence_length: int
    sample_lengths: list[int]
    splits: list[list[Split]]  # per sample: (length, mode), for attention.py
    position_ids: Tensor  # (L,) RoPE positions
    text_ids: Tensor  # (n_text,) ids of text and marker tokens
    text_indexes: Tensor  # (n_text,) their rows in the sequence
    vit_patches: Tensor  # (n_vit, p * p * 3) patches of all ViT images
    vit_position_ids: Tensor  # (n_vit,)
    vit_lengths: list[int]  # patches per ViT image
    vit_indexes: Tensor  # (n_vit,) rows of ViT tokens
    vae_images: list[Tensor]  # (3, H, W) pixels of each VAE image, for the autoencoder
    latent_grids: list[tuple[int, int]]  # (h, w) latent tokens per VAE image
    latent_position_ids: Tensor  # (n_vae,)
    vae_indexes: Tensor  # (n_vae,) rows of VAE tokens
    raw_timesteps: Tensor  # (n_vae,) standard-normal draw per noised image; -inf for clean images
    mse_indexes: Tensor  # (n_mse,) rows of noised VAE tokens
    label_ids: Tensor  # (n_ce,) next-token targets
    ce_indexes: Tensor  # (n_ce,) rows whose output predicts them
    ce_weights: Tensor  # (n_ce,) per-token weight of the CE loss

    @property
    def is_gen(self) -> Tensor:
        """(L,) True for tokens of the generation expert: every VAE token, noised or clean."""
        mask = torch.zeros(self.sequence_length, dtype=torch.bool, device=self.vae_indexes.device)
        mask[self.vae_indexes] = True
        return mask

    def to(self, device) -> "PackedBatch":
        """The same batch with every tensor on `device`."""
        moved = {}
        for name, value in vars(self).items():
            if isinstance(value, Tensor):
                moved[name] = value.to(device)
            elif name == "vae_images":
                moved[name] = [image.to(device) for image in value]
        return replace(self, **moved)


def sample_length(sample: Sample, config: PackConfig) -> int:
    """Tokens the sample takes when nothing is dropped."""
    total = 0
    for item in sample:
        if isinstance(item, Text):
            total += len(item.ids) + 2
        else:
            stride = config.vit_patch_size if isinstance(item, VitImage) else config.pixels_per_latent_token
            total += (item.pixels.shape[1] // stride) * (item.pixels.shape[2] // stride) + 2
    return total


def pack(samples: list[Sample], config: PackConfig, rng: random.Random) -> PackedBatch:
    """Pack samples into one sequence; `rng` draws the CFG dropout and the raw timesteps."""
    if not samples:
        raise ValueError("nothing to pack: the list of samples is empty")
    builder = _Builder(config, rng)
    for index, sample in enumerate(samples):
        builder.add_sample(sample, index)
    return builder.finish()


def pack_by_budget(
    samples: Iterable[Sample], config: PackConfig, max_tokens: int, rng: random.Random
) -> Iterator[PackedBatch]:
    """Group consecutive samples into packed sequences of at most `max_tokens` tokens each."""
    group, used = [], 0
    for index, sample in enumerate(samples):
        length = sample_length(sample, config)
        if length == 0:  # it would never fill a batch
            raise ValueError(f"sample {index} is empty")
        if length > max_tokens:
            raise ValueError(f"sample {index} needs {length} tokens, more than the token budget of {max_tokens}")
        if used + length > max_tokens:
            yield pack(group, config, rng)
            group, used = [], 0
        group.append(sample)
        used += length
    if group:
        yield pack(group, config, rng)


@dataclass
class _Builder:
    """The growing packed sequence; one method per kind of item. Lists run in sequence order."""

    config: PackConfig
    rng: random.Random
    length: int = 0  # tokens so far
    position: int = 0  # next RoPE position in the sample being added
    raw_timestep: float = 0.0  # noise level of the current noised image or group of frames
    sample_lengths: list[int] = field(default_factory=list)
    splits: list[list[Split]] = field(default_factory=list)
    sample_splits: list[Split] = field(default_factory=list)  # splits of the sample being added
    position_ids: list[int] = field(default_factory=list)  # per token
    text_ids: list[int] = field(default_factory=list)  # per text or marker token
    text_indexes: list[int] = field(default_factory=list)
    label_ids: list[int] = field(default_factory=list)  # per CE token
    ce_indexes: list[int] = field(default_factory=list)
    ce_weights: list[float] = field(default_factory=list)
    vit_patches: list[Tensor] = field(default_factory=list)  # per ViT image
    vit_position_ids: list[Tensor] = field(default_factory=list)
    vit_lengths: list[int] = field(default_factory=list)
    vit_indexes: list[int] = field(default_factory=list)  # per ViT token
    vae_images: list[Tensor] = field(default_factory=list)  # per VAE image
    latent_grids: list[tuple[int, int]] = field(default_factory=list)
    latent_position_ids: list[Tensor] = field(default_factory=list)
    vae_indexes: list[int] = field(default_factory=list)  # per VAE token
    raw_timesteps: list[float] = field(default_factory=list)
    mse_indexes: list[int] = field(default_factory=list)  # per noised VAE token

    def add_sample(self, sample: Sample, index: int) -> None:
        if not sample:
            raise ValueError(f"sample {index} is empty")
        self.position, self.sample_splits = 0, []  # RoPE positions restart in every sample
        start = self.length
        for item_index, item in enumerate(sample):
            where = f"sample {index}, item {item_index}"
            if isinstance(item, Text):
                self.add_text(item)
            elif isinstance(item, VitImage):
                self.add_vit(item, where)
            elif isinstance(item, VaeImage):
                self.add_vae(item, where, joins_previous=item.joins_previous and _is_frame(sample, item_index - 1))
            else:
                raise TypeError(f"{where}: expected Text, VitImage or VaeImage, got {type(item).__name__}")
        if self.length == start:
            raise ValueError(f"sample {index} is empty after CFG dropout")
        self.sample_lengths.append(self.length - start)
        self.splits.append(self.sample_splits)

    def add_text(self, item: Text) -> None:
        if item.droppable and self.config.dropout.drops("text", self.rng):
            return  # a dropped text leaves no trace, not even a position
        block = text_block(item.ids, self.config.bos, self.config.eos, self.position)
        rows = self._add_block(block)
        if item.loss:
            weight = CE_WEIGHTS[self.config.ce_weighting](len(rows) - 1)
            self.ce_indexes += rows[:-1]  # bos .. last id predict ids .. eos
            self.label_ids += block.ids[1:]
            self.ce_weights += [weight] * (len(rows) - 1)
        self.sample_splits.append((len(rows), "causal"))

    def add_vit(self, item: VitImage, where: str) -> None:
        if item.droppable and self.config.dropout.drops("vit", self.rng):
            self.position += 1  # the block's position is kept, so later positions do not depend on the draw
            return
        patch = self.config.vit_patch_size
        grid = _grid(item.pixels, patch, where, "ViT patch")
        count = grid[0] * grid[1]
        rows = self._add_block(image_block(count, self.config.start_of_image, self.config.end_of_image, self.position))
        self.vit_indexes += rows[1:-1]
        self.vit_patches.append(patchify(item.pixels, patch))
        self.vit_position_ids.append(
            grid_position_ids(*grid, self.config.vit_max_patches_per_side, self.config.interpolate_pos)
        )
        self.vit_lengths.append(count)
        self.sample_splits.append((count + 2, "full"))

    def add_vae(self, item: VaeImage, where: str, joins_previous: bool) -> None:
        if item.joins_previous and not joins_previous:
            raise ValueError(f"{where}: joins_previous needs a diffusion-forcing frame (a VaeImage) right before it")
        # Diffusion-forcing frames are never dropped: the frames after them condition on them.
        if item.droppable and item.frame_delta is None and self.config.dropout.drops("vae", self.rng):
            self.position += 1
            return
        grid = _grid(item.pixels, self.config.pixels_per_latent_token, where, "latent token")
        count = grid[0] * grid[1]
        advance = item.frame_delta if item.frame_delta is not None else int(not item.loss)
        block = image_block(count, self.config.start_of_image, self.config.end_of_image, self.position, advance)
        rows = self._add_block(block)[1:-1]
        self.vae_images.append(item.pixels)
        self.latent_grids.append(grid)
        self.latent_position_ids.append(
            grid_position_ids(*grid, self.config.max_latent_size, self.config.interpolate_pos)
        )
        self.vae_indexes += rows
        if item.loss:
            self.mse_indexes += rows
            if not joins_previous:
                self.raw_timestep = self.rng.gauss(0.0, 1.0)  # one noise level per image, or per group of frames
            timestep = self.raw_timestep
        else:
            timestep = float("-inf")  # clean context: t = 0
        self.raw_timesteps += [timestep] * count
        mode = "noise" if item.loss and item.frame_delta is None else "full"
        if joins_previous:
            size, previous_mode = self.sample_splits[-1]
            self.sample_splits[-1] = (size + count + 2, previous_mode)
        else:
            self.sample_splits.append((count + 2, mode))

    def _add_block(self, block: Block) -> range:
        """Lay a block at the end of the sequence; returns its rows (an image's own tokens are rows[1:-1])."""
        rows = range(self.length, self.length + len(block.ids))
        for row, token in zip(rows, block.ids):
            if token is not None:
                self.text_ids.append(token)
                self.text_indexes.append(row)
        self.position_ids += block.positions
        self.position = block.next_position
        self.length += len(block.ids)
        return rows

    def finish(self) -> PackedBatch:
        def as_long(values: list[int]) -> Tensor:
            return torch.tensor(values, dtype=torch.long)

        return PackedBatch(
            sequence_length=self.length,
            sample_lengths=self.sample_lengths,
            splits=self.splits,
            position_ids=as_long(self.position_ids),
            text_ids=as_long(self.text_ids),
            text_indexes=as_long(self.text_indexes),
            vit_patches=torch.cat(self.vit_patches) if self.vit_patches else torch.zeros(0, 0),
            vit_position_ids=_cat_long(self.vit_position_ids),
            vit_lengths=self.vit_lengths,
            vit_indexes=as_long(self.vit_indexes),
            vae_images=self.vae_images,
            latent_grids=self.latent_grids,
            latent_position_ids=_cat_long(self.latent_position_ids),
            vae_indexes=as_long(self.vae_indexes),
            raw_timesteps=torch.tensor(self.raw_timesteps, dtype=torch.float32),
            mse_indexes=as_long(self.mse_indexes),
            label_ids=as_long(self.label_ids),
            ce_indexes=as_long(self.ce_indexes),
            ce_weights=torch.tensor(self.ce_weights, dtype=torch.float32),
        )


def _is_frame(sample: Sample, index: int) -> bool:
    return index >= 0 and isinstance(sample[index], VaeImage) and sample[index].frame_delta is not None


def _cat_long(parts: list[Tensor]) -> Tensor:
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)


def _grid(pixels: Tensor, stride: int, where: str, unit: str) -> tuple[int, int]:
    """(rows, cols) of stride x stride cells of an image, or a ValueError naming the item."""
    if pixels.dim() != 3 or pixels.shape[0] != 3:
        raise ValueError(f"{where}: image pixels must be (3, H, W), got {tuple(pixels.shape)}")
    height, width = pixels.shape[1:]
    if height % stride or width % stride or height == 0 or width == 0:
        raise ValueError(
            f"{where}: image of {height}x{width} pixels is not a whole number of {stride}x{stride} {unit}s; "
            "resize it with images.resize_for_encoder"
        )
    return height // stride, width // stride
