"""Training data: where samples come from, and the seeded micro-batches train.py packs from them.

Two sources, each able to give a packing sample (navit.py items) and, for the autoencoder stage, plain
images with no tokenizer at all:
- Shapes World (shapes_world/), generated on the fly from a seed;
- your own interleaved samples, one json object per line of a `.jsonl` file.

Every random draw of a micro-batch comes from a generator seeded by (seed, step, micro-batch index),
so a resumed run sees exactly the data and noise of an uninterrupted one. `prepared_batches` draws them
ahead in a DataLoader worker, latents included: on a CPU the autoencoder's encoding, a third of a toy
step, then runs on the core the training thread leaves idle.
"""

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from bagel_mini import shapes_world
from bagel_mini.images import load_image, resize_for_encoder, to_tensor
from bagel_mini.navit import PackConfig, PackedBatch, Sample, Text, VaeImage, VitImage, pack_by_budget
from bagel_mini.tokenizer import BagelTokenizer
from bagel_mini.vae import AutoEncoder


def generator_seed(seed: int, step: int, micro_batch: int) -> int:
    """The seed of one micro-batch's generators: a pure function of the run's seed and the batch's place."""
    return hash((seed, step, micro_batch)) & (2**63 - 1)


class ShapesData:
    """Shapes World tasks drawn by `mix` (task name -> weight; None: the default mix) as packing samples,
    or with `text_only` their texts alone (one language-model sample per task); its scenes as images.
    `edit_vit`: edits see their source image as ViT tokens as well as VAE tokens (shapes_world.to_sample)."""

    def __init__(
        self,
        image_size: int,
        tokenizer: BagelTokenizer | None = None,
        mix: dict | None = None,
        text_only: bool = False,
        edit_vit: bool = True,
    ):
        self.image_size, self.tokenizer, self.mix, self.text_only = image_size, tokenizer, mix, text_only
        self.edit_vit = edit_vit

    def texts(self):
        """What a toy tokenizer is trained on."""
        return shapes_world.corpus(20_000, seed=0)

    def sample(self, rng: random.Random) -> Sample:
        task = shapes_world.random_task(rng, image_size=self.image_size, mix=self.mix)
        if self.text_only:
            return [Text(self.tokenizer.encode(" ".join(shapes_world.texts(task))), loss=True)]
        return shapes_world.to_sample(task, self.tokenizer.encode, rng, edit_vit=self.edit_vit)

    def images(self, rng: random.Random) -> list[Tensor]:
        """One random scene, (3, S, S) in [-1, 1]: what the autoencoder learns to reconstruct."""
        return [to_tensor(shapes_world.render(shapes_world.random_scene(rng), self.image_size))]


class JsonlData:
    """Your own interleaved samples: one json object per line, `{"items": [...]}` with items
    `{"text": "...", "loss": bool, "droppable": bool}` or `{"image": "path", "as": "vit" | "vae", "loss": bool,
    "droppable": bool}` (paths relative to the file; `loss` only for text and "vae" images). Samples are drawn at
    random with replacement; images are resized by the rules training and inference share (images.vit_resize /
    vae_resize). The whole file is checked when it is opened, so a bad line stops the run before any work."""

    def __init__(self, path: Path, vit_sizes: tuple, vae_sizes: tuple, tokenizer: BagelTokenizer | None = None):
        self.path, self.vit_sizes, self.vae_sizes, self.tokenizer = path, vit_sizes, vae_sizes, tokenizer
        self.samples = [
            check_sample(line, f"{path}, line {number}", path.parent)
            for number, line in enumerate(path.read_text().splitlines(), start=1)
            if line.strip()
        ]
        if not self.samples:
            raise ValueError(f"{path}: no samples")

    def texts(self):
        for items in self.samples:
            yield from (item["text"] for item in items if "text" in item)

    def sample(self, rng: random.Random) -> Sample:
        return [self.item(item) for item in self.samples[rng.randrange(len(self.samples))]]

    def images(self, rng: random.Random) -> list[Tensor]:
        """The `"as": "vae"` images of one random sample."""
        items = self.samples[rng.randrange(len(self.samples))]
        return [self.item(item).pixels for item in items if item.get("as") == "vae"]

    def item(self, item: dict) -> Text | VitImage | VaeImage:
        droppable = item.get("droppable", False)
        if "text" in item:
            return Text(self.tokenizer.encode(item["text"]), loss=item.get("loss", False), droppable=droppable)
        image = load_image(self.path.parent / item["image"])
        if item["as"] == "vit":
            return VitImage(to_tensor(resize_for_encoder(image, *self.vit_sizes)), droppable=droppable)
        return VaeImage(
            to_tensor(resize_for_encoder(image, *self.vae_sizes)), loss=item.get("loss", False), droppable=droppable
        )


TEXT_KEYS, IMAGE_KEYS = {"text", "loss", "droppable"}, {"image", "as", "loss", "droppable"}


def check_sample(line: str, where: str, folder: Path) -> list[dict]:
    """The items of one line of a .jsonl file, or a ValueError naming the file, the line and what is wrong."""
    try:
        sample = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"{where}: not valid JSON ({error})") from None
    if not isinstance(sample, dict) or not isinstance(sample.get("items"), list) or not sample["items"]:
        raise ValueError(f'{where}: expected {{"items": [...]}} with at least one item, got {line.strip()[:80]}')
    for index, item in enumerate(sample["items"]):
        at = f"{where}, item {index}"
        if not isinstance(item, dict) or ("text" in item) == ("image" in item):
            raise ValueError(f'{at}: an item is an object with either "text" or "image", got {item!r}')
        keys = TEXT_KEYS if "text" in item else IMAGE_KEYS
        if set(item) - keys:
            raise ValueError(f"{at}: unknown key(s) {sorted(set(item) - keys)}; allowed: {sorted(keys)}")
        for key in ("loss", "droppable"):
            if not isinstance(item.get(key, False), bool):
                raise ValueError(f"{at}: {key!r} must be true or false, got {item[key]!r}")
        if "text" in item and (not isinstance(item["text"], str) or not item["text"].strip()):
            raise ValueError(f'{at}: "text" must be a non-empty string, got {item["text"]!r}')
        if "image" in item:
            if item.get("as") not in ("vit", "vae"):
                raise ValueError(
                    f'{at}: "as" must be "vit" (to understand) or "vae" (to generate), got {item.get("as")!r}'
                )
            if item["as"] == "vit" and item.get("loss"):
                raise ValueError(f'{at}: "loss" applies to "vae" images (the ones to generate), not "vit" ones')
            if not isinstance(item["image"], str) or not (folder / item["image"]).is_file():
                raise ValueError(f"{at}: image file {item['image']!r} not found (paths are relative to {folder})")
    if not any(item.get("loss") for item in sample["items"]):
        raise ValueError(f'{where}: no item has "loss": true, so the sample teaches nothing')
    return sample["items"]


def open_data(
    name: str,
    image_size: int,
    vit_sizes: tuple | None,
    vae_sizes: tuple,
    mix: dict | None = None,
    text_only: bool = False,
    edit_vit: bool = True,
) -> ShapesData | JsonlData:
    """`--data`: 'shapes' or the path of a .jsonl file. Give it a tokenizer (`.tokenizer = ...`) to draw samples.
    `mix`, `text_only` and `edit_vit`: which Shapes World tasks, their texts alone, the edits' context
    (ShapesData); unused for a file.

    vit_sizes, vae_sizes: (max_size, min_size, stride) of the model's encoders (images.vit_resize / vae_resize);
    vit_sizes None for the autoencoder alone, which then needs a file with "vae" images.
    """
    if name == "shapes":
        # Without a ViT (the autoencoder stage) only the latent token counts.
        stride = vae_sizes[2] if vit_sizes is None else math.lcm(vit_sizes[2], vae_sizes[2])
        largest = vae_sizes[0] if vit_sizes is None else min(vit_sizes[0], vae_sizes[0])
        if image_size % stride or image_size > largest:
            raise ValueError(
                f"--image-size {image_size}: Shapes World images must be a multiple of {stride} pixels (ViT patch "
                f"{vit_sizes[2]}, latent token {vae_sizes[2]}) and at most {largest} for this model"
            )
        return ShapesData(image_size, mix=mix, text_only=text_only, edit_vit=edit_vit)
    path = Path(name)
    if not path.is_file():
        raise FileNotFoundError(f"--data {path}: no such file")
    data = JsonlData(path, vit_sizes, vae_sizes)
    if vit_sizes is None and not any(item.get("as") == "vae" for items in data.samples for item in items):
        raise ValueError(f'--data {path}: no "vae" image to train the autoencoder on')
    return data


def micro_batch(
    data: ShapesData | JsonlData, config: PackConfig, max_tokens: int, seed: int, step: int, index: int
) -> tuple[PackedBatch, random.Random]:
    """Samples drawn until the next one would overflow the token budget, packed; all seeded by (seed, step, index).

    The sample that overflows is drawn and dropped, so each micro-batch depends on its seed alone. The
    generator is returned for the draws that follow (the autoencoder's posterior noise, the flow noise).
    """
    rng = random.Random(generator_seed(seed, step, index))
    endless = iter(lambda: data.sample(rng), None)  # a sample is never None: the stream never ends
    try:
        return next(pack_by_budget(endless, config, max_tokens, rng)), rng
    except ValueError as error:
        raise ValueError(f"micro-batch {index} of step {step + 1} (--tokens {max_tokens}): {error}") from None


@dataclass
class PreparedBatches(IterableDataset):
    """Micro-batches `indexes` of each step in `steps`, in training order, each with the draws that follow it."""

    data: ShapesData | JsonlData
    config: PackConfig
    max_tokens: int
    seed: int
    steps: range
    indexes: range
    autoencoder: AutoEncoder
    patch_latent_dim: int

    def prepare(self, step: int, index: int) -> tuple[PackedBatch, list[Tensor], Tensor]:
        """A micro-batch, a posterior sample of each VAE image's latent (on the autoencoder's device) and the
        flow noise (n_vae, patch_latent_dim), all seeded as micro_batch seeds."""
        batch, rng = micro_batch(self.data, self.config, self.max_tokens, self.seed, step, index)
        generator = torch.Generator().manual_seed(rng.randrange(2**63))
        latents = self.autoencoder.encode_each(batch.vae_images, generator)  # one per batch.vae_images
        noise = torch.randn(len(batch.vae_indexes), self.patch_latent_dim, generator=generator)
        return batch, latents, noise

    def __iter__(self):
        for step in self.steps:
            for index in self.indexes:
                try:
                    yield self.prepare(step, index)
                except ValueError as error:  # bad data: passed on as it is, to stop the run with one line
                    yield error
                    return

    def ahead(self, workers: int):
        """An iterator over the micro-batches, made by `workers` processes ahead of training (0: by this one).

        What a step draws depends on its seed alone, so a worker gives the same batches as this process
        would, and a resumed run the same as an uninterrupted one. Workers encode with a CPU autoencoder
        (a DataLoader worker runs one thread); with the autoencoder on a GPU, encode here (`workers` 0).
        """
        if workers and self.autoencoder.encoder.conv_in.weight.device.type != "cpu":
            raise ValueError(f"--workers {workers}: data workers encode on the CPU; with a GPU autoencoder use 0")
        prefetch = 2 if workers else None
        for item in DataLoader(self, batch_size=None, num_workers=workers, prefetch_factor=prefetch):
            if isinstance(item, ValueError):
                raise item
            yield item


def autoencoder_batch(data: ShapesData | JsonlData, rng: random.Random, count: int) -> Tensor:
    """`count` images of one size, (count, 3, H, W): the first size that `count` drawn images share."""
    by_size: dict[tuple, list[Tensor]] = {}
    for _ in range(100 * count):  # samples drawn; a file whose images all differ in size never fills a batch
        for image in data.images(rng):
            same = by_size.setdefault(tuple(image.shape), [])
            same.append(image)
            if len(same) == count:
                return torch.stack(same)
    raise ValueError(f"--data: {100 * count} samples gave no {count} images of one size to train the autoencoder on")
