"""Fixed validation sets and a run's losses on them: what the findings (ablate.py) decide with, never the
training loss, which moves with each step's draw of tasks, timesteps and noise.

- `ce`: the mean CE of the answer tokens of 64 fixed questions and captions (understanding);
- `mse`: the velocity MSE per latent value of 64 fixed text-to-image samples at t = 0.3, 0.6 and 0.9
  (posterior-mean latents, one fixed noise), averaged over the three (generation);
- `edit_mse`, `reasoning_edit_mse`: the same on 64 fixed edits and on 64 fixed reasoning edits (edits that
  need one step of knowledge), their source image given as the run was trained to see it;
- `think_losses`: the same on 64 fixed reasoning prompts' images, conditioned on the prompt alone, on the
  prompt and its think trace (as think mode conditions them), and on the prompt the reasoning resolves to.

Scored are a run's raw weights (OUT/last/model.safetensors): the EMA of a short run still holds much of its
random start.
"""

import random
import statistics
from pathlib import Path

import torch
from safetensors.torch import load_file

from bagel_mini import checkpoint, shapes_world
from bagel_mini.cfg import NO_DROPOUT
from bagel_mini.config import load_config_dir
from bagel_mini.flow import raw_timestep
from bagel_mini.images import patchify, to_tensor
from bagel_mini.model import Bagel
from bagel_mini.navit import PackConfig, Sample, Text, VaeImage, pack
from bagel_mini.tokenizer import BagelTokenizer

SIZE, TIMES = 64, (0.3, 0.6, 0.9)
LOSSES = ("ce", "mse", "edit_mse", "reasoning_edit_mse")


def validation_samples(tokenizer: BagelTokenizer, image_size: int) -> tuple[list[Sample], list[Sample]]:
    """64 understanding samples (questions and captions) and 64 text-to-image samples, the same every time."""
    rng = random.Random("ablation validation")
    understanding, generation = [], []
    for index in range(SIZE):
        kind = "caption" if index % 4 == 0 else None
        task = shapes_world.question(rng, image_size, kind)
        understanding.append(shapes_world.to_sample(task, tokenizer.encode, rng))
        prompt = shapes_world.text_to_image(rng, image_size)
        generation.append([Text(tokenizer.encode(prompt.prompt)), VaeImage(to_tensor(prompt.image), loss=True)])
    return understanding, generation


def edit_samples(tokenizer: BagelTokenizer, image_size: int, reasoning: bool, edit_vit: bool) -> list[Sample]:
    """64 edits (or reasoning edits), the same every time; the source image as VAE (and ViT) tokens."""
    rng = random.Random(f"ablation validation {'reasoning edits' if reasoning else 'edits'}")
    make = shapes_world.reasoning_edit if reasoning else shapes_world.edit
    return [
        shapes_world.to_sample(make(rng, image_size), tokenizer.encode, rng, edit_vit=edit_vit) for _ in range(SIZE)
    ]


def velocity_mse(model: Bagel, autoencoder, samples: list[Sample], pack_config: PackConfig) -> float:
    """The mean over TIMES of the velocity MSE of every noised image of `samples`; context images stay clean."""
    batch = pack(samples, pack_config, random.Random(0))
    latents = list(autoencoder.encode_mean(torch.stack(batch.vae_images)))
    generator = torch.Generator().manual_seed(0)
    p = model.config.latent_patch_size
    noise = torch.cat([patchify(torch.randn(latent.shape, generator=generator), p) for latent in latents])
    noised = torch.isfinite(batch.raw_timesteps)  # -inf marks a clean (context) image
    mse = []
    for t in TIMES:
        value = torch.tensor(raw_timestep(t, model.config.timestep_shift))
        batch.raw_timesteps = torch.where(noised, value, batch.raw_timesteps)
        mse.append(model(batch, latents, noise=noise)["mse"].mean().item())
    return statistics.mean(mse)


@torch.no_grad()
def validation_losses(run: Path, names: tuple[str, ...], image_size: int, edit_vit: bool = True) -> dict[str, float]:
    """The losses `names` (of LOSSES) of the run's raw weights, OUT/last/model.safetensors."""
    directory = run / "last"
    config = load_config_dir(directory)
    tokenizer = BagelTokenizer.from_dir(directory)
    autoencoder = checkpoint.load_autoencoder(directory)
    model = Bagel(config)
    model.load_state_dict(load_file(directory / "model.safetensors"))
    model.eval()
    pack_config = PackConfig.for_model(config, tokenizer.special_ids, dropout=NO_DROPOUT)
    understanding, generation = validation_samples(tokenizer, image_size)
    losses = {}
    for name in names:
        if name == "ce":
            losses[name] = model(pack(understanding, pack_config, random.Random(0)), [])["ce"].mean().item()
        elif name == "mse":
            losses[name] = velocity_mse(model, autoencoder, generation, pack_config)
        else:
            samples = edit_samples(tokenizer, image_size, name == "reasoning_edit_mse", edit_vit)
            losses[name] = velocity_mse(model, autoencoder, samples, pack_config)
    return losses


@torch.no_grad()
def think_losses(model: Bagel, autoencoder, tokenizer: BagelTokenizer, image_size: int) -> dict[str, float]:
    """Does a think trace help the image? The velocity MSE of 64 fixed reasoning images under three conditions."""
    rng = random.Random("ablation validation reasoning")
    tasks = [shapes_world.reasoning(rng, image_size) for _ in range(SIZE)]
    pack_config = PackConfig.for_model(model.config, tokenizer.special_ids, dropout=NO_DROPOUT)

    def drawn_from(text: str, task) -> Sample:
        return [Text(tokenizer.encode(text)), VaeImage(to_tensor(task.image), loss=True)]

    conditions = {
        "without think": [drawn_from(task.prompt, task) for task in tasks],
        "with think": [shapes_world.to_sample(task, tokenizer.encode, rng) for task in tasks],
        "the resolved prompt": [drawn_from(task.resolved, task) for task in tasks],
    }
    return {name: velocity_mse(model, autoencoder, samples, pack_config) for name, samples in conditions.items()}
