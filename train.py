"""Train BAGEL (paper section 3 and Table 3), from a toy on a laptop CPU to the 7B on GPUs.

    python train.py --stage vae --out runs/ae                      # a small FLUX-style autoencoder (toy presets)
    python train.py --stage vae --autoencoder runs/ae --decoder-only --out runs/ae2   # sharpen its decoder
    python train.py --autoencoder runs/ae --out runs/toy            # Bagel on Shapes World, MoT
    python train.py --autoencoder runs/ae --out runs/toy --resume   # continue exactly where it stopped
    torchrun --nproc_per_node 2 train.py ... [--fsdp]               # DDP, or FSDP2 for big models

Data: Shapes World, generated on the fly (default), or `--data FILE.jsonl` of your own interleaved
samples (see the README). Every random draw of step s comes from generators seeded by (seed, s, micro
batch), so a resumed run sees exactly the data and noise of an uninterrupted one.

Checkpoints go to `--out DIR/step-NNNNNN/` (written to a temporary name, then renamed) and
`DIR/last` always points to the newest complete one. Each is a checkpoint directory in the released
layout (`ema.safetensors` holds the EMA weights, as in the release) that sample.py reads, plus
the raw weights, the optimiser state and `state.json` for resuming.
"""

import argparse
import csv
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from tqdm import tqdm

from bagel_mini import checkpoint
from bagel_mini.cfg import ConditionDropout
from bagel_mini.checkpoint import load_model_weights, save_checkpoint
from bagel_mini.config import ConfigError, load_config_dir, preset, save_config_dir, write_json_atomic
from bagel_mini.images import load_image, resize_for_encoder, to_tensor
from bagel_mini.model import Bagel
from bagel_mini.navit import PackConfig, Text, VaeImage, VitImage, pack_by_budget
from bagel_mini.tokenizer import BagelTokenizer
from bagel_mini.vae import AutoEncoder

STAGES = ("align", "pretrain", "continue", "sft", "vae")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--out", required=True, help="run directory (checkpoints, loss curves)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last")
    parser.add_argument("--preset", default="toy")
    parser.add_argument("--arch", default="mot", choices=["mot", "moe", "dense"])
    parser.add_argument(
        "--stage",
        default="pretrain",
        choices=STAGES,
        help="align: connector only; pretrain; continue: higher resolution and shift; sft; vae: the autoencoder",
    )
    parser.add_argument("--init", help="start from this checkpoint directory's EMA weights (e.g. the previous stage)")
    parser.add_argument(
        "--autoencoder",
        help="directory with ae.safetensors and bagel_config.json (with --stage vae: the autoencoder to start from)",
    )
    parser.add_argument(
        "--decoder-only",
        action="store_true",
        help="--stage vae: train only the decoder of --autoencoder, keeping its latents (and Bagels trained on them)",
    )
    parser.add_argument("--data", default="shapes", help="'shapes' (Shapes World) or a .jsonl file")
    parser.add_argument("--image-size", type=int, default=64, help="Shapes World image size")
    parser.add_argument("--max-steps", type=int, default=2000)
    parser.add_argument("--tokens", type=int, default=1024, help="token budget of one packed micro-batch")
    parser.add_argument("--accum", type=int, default=1, help="micro-batches per step and process")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=100, help="linear warm-up steps, then a constant rate")
    parser.add_argument("--ema", type=float, default=0.999, help="EMA decay")
    parser.add_argument("--ce-weight", type=float, default=0.25)
    parser.add_argument("--mse-weight", type=float, default=1.0)
    parser.add_argument("--timestep-shift", type=float, help="default: 1 (pretrain), 4 (continue)")
    parser.add_argument(
        "--dropout",
        type=float,
        nargs=3,
        default=(0.1, 0.5, 0.1),
        metavar=("TEXT", "VIT", "VAE"),
        help="CFG dropout probabilities",
    )
    parser.add_argument("--checkpoint-every", type=int, default=500)
    parser.add_argument(
        "--eval-every",
        type=int,
        default=0,
        help="score each Nth checkpoint with MiniGenEval / MiniVQA / MiniEdit (Shapes World; 0: never)",
    )
    parser.add_argument(
        "--eval-n", type=int, default=10, help="prompts per category, questions and edits per evaluation"
    )
    parser.add_argument("--keep", type=int, default=2, help="complete checkpoints to keep")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", help="default: cuda if available")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (GPU)")
    parser.add_argument("--fsdp", action="store_true", help="shard the model with FSDP2 (under torchrun)")
    args = parser.parse_args(argv)
    for name in ("max_steps", "tokens", "accum", "checkpoint_every", "keep"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


# ---------------------------------------------------------------------------------------------
# Data: every micro-batch is drawn from its own seeded generators


def generator_seed(args, step: int, micro_batch: int) -> int:
    return hash((args.seed, step, micro_batch)) & (2**63 - 1)


class JsonlData:
    """Your own interleaved samples: one json object per line, `{"items": [...]}` with items
    `{"text": "...", "loss": bool, "droppable": bool}` or `{"image": "path", "as": "vit" | "vae", "loss": bool,
    "droppable": bool}` (paths relative to the file). Samples are drawn at random with replacement."""

    def __init__(self, path: Path, tokenizer: BagelTokenizer, vit_sizes: tuple, vae_sizes: tuple):
        self.path, self.tokenizer, self.vit_sizes, self.vae_sizes = path, tokenizer, vit_sizes, vae_sizes
        self.lines = [line for line in path.read_text().splitlines() if line.strip()]
        if not self.lines:
            raise ValueError(f"{path}: no samples")

    def texts(self):
        for line in self.lines:
            yield from (item["text"] for item in json.loads(line)["items"] if "text" in item)

    def sample(self, rng: random.Random) -> list:
        index = rng.randrange(len(self.lines))
        try:
            return [self.item(item) for item in json.loads(self.lines[index])["items"]]
        except (KeyError, TypeError, json.JSONDecodeError) as error:
            raise ValueError(f"{self.path}, line {index + 1}: not a valid sample ({error!r})") from None

    def item(self, item: dict):
        if "text" in item:
            return Text(
                self.tokenizer.encode(item["text"]),
                loss=item.get("loss", False),
                droppable=item.get("droppable", False),
            )
        image = load_image(self.path.parent / item["image"])
        if item["as"] == "vit":
            return VitImage(
                to_tensor(resize_for_encoder(image, *self.vit_sizes)), droppable=item.get("droppable", False)
            )
        return VaeImage(
            to_tensor(resize_for_encoder(image, *self.vae_sizes)),
            loss=item.get("loss", False),
            droppable=item.get("droppable", False),
        )


class ShapesData:
    """Shapes World tasks as packing items."""

    def __init__(self, tokenizer: BagelTokenizer, image_size: int):
        from bagel_mini import shapes_world

        self.world, self.tokenizer, self.image_size = shapes_world, tokenizer, image_size

    def texts(self):
        return self.world.corpus(20_000, seed=0)

    def sample(self, rng: random.Random) -> list:
        task = self.world.random_task(rng, image_size=self.image_size)
        return self.world.to_sample(task, self.tokenizer.encode, rng)


def micro_batch(args, data, pack_config: PackConfig, step: int, index: int):
    """Samples drawn until the next one would overflow the token budget, packed; all seeded by (seed, step, index).

    The sample that overflows is drawn and dropped, so each micro-batch depends on its seed alone."""
    rng = random.Random(generator_seed(args, step, index))
    endless = iter(lambda: data.sample(rng), None)  # a sample is never None: the stream never ends
    try:
        return next(pack_by_budget(endless, pack_config, args.tokens, rng)), rng
    except ValueError as error:
        raise ValueError(f"micro-batch {index} of step {step + 1} (--tokens {args.tokens}): {error}") from None


# ---------------------------------------------------------------------------------------------
# Model, stages, optimisation


@torch.no_grad()
def init_weights(model: nn.Module) -> None:
    """From scratch: small normal weights, zero biases, unit norms (the release starts from Qwen2.5 and SigLIP)."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Embedding, nn.Conv2d)):
            nn.init.normal_(module.weight, std=0.02)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
    nn.init.zeros_(model.llm2vae.weight)  # predict no motion at first, as the official init


def set_trainable(model: Bagel, stage: str) -> None:
    """Alignment trains only the connector (paper Table 3); the fixed position tables never train."""
    for name, parameter in model.named_parameters():
        fixed = name.endswith("pos_embed.table")
        parameter.requires_grad_(not fixed and (stage != "align" or name.startswith("connector.")))


def learning_rate(args, step: int) -> float:
    return args.lr * min(1.0, (step + 1) / args.warmup)


def make_optimizer(model: nn.Module, args) -> torch.optim.Optimizer:
    parameters = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(parameters, lr=args.lr, betas=(0.9, 0.95), eps=1e-15, weight_decay=0.0)


# ---------------------------------------------------------------------------------------------
# Checkpoints

FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Whole tensors on the CPU (FSDP keeps each process's shard only: gathering is a collective)."""
    return {
        name: (t.full_tensor() if hasattr(t, "full_tensor") else t).detach().cpu().contiguous()
        for name, t in tensors.items()
    }


def save_run_checkpoint(out: Path, step: int, model, ema, autoencoder, optimizer, tokenizer, args, rank: int) -> None:
    """Write OUT/step-N atomically (a temporary directory, then a rename), then point OUT/last at it.

    Every process takes part in gathering the state; process 0 writes.
    """
    weights = get_model_state_dict(model, options=FULL)
    optimizer_state = get_optimizer_state_dict(model, optimizer, options=FULL)
    ema = full_tensors(ema)
    if rank != 0:
        return
    with torch.device("meta"):
        ema_model = Bagel(model.config)
    ema_model.load_state_dict(ema, assign=True)
    name, temporary = f"step-{step:06d}", out / f".step-{step:06d}.tmp"
    shutil.rmtree(temporary, ignore_errors=True)
    save_checkpoint(ema_model, autoencoder, temporary)  # the released layout: ema.safetensors, configs
    tokenizer.save(temporary)
    save_file({k: v.contiguous() for k, v in weights.items()}, temporary / "model.safetensors")
    flat = {f"{fqn}.{key}": value for fqn, values in optimizer_state["state"].items() for key, value in values.items()}
    save_file({k: torch.as_tensor(v).contiguous() for k, v in flat.items()}, temporary / "optimizer.safetensors")
    write_json_atomic(temporary / "state.json", {"step": step, "args": vars(args)})
    shutil.rmtree(out / name, ignore_errors=True)  # a leftover of a run killed between the rename and the link
    os.replace(temporary, out / name)
    link = out / ".last.tmp"
    link.unlink(missing_ok=True)
    link.symlink_to(name)
    os.replace(link, out / "last")  # atomic: `last` always names a complete checkpoint
    for old in sorted(out.glob("step-*"))[: -args.keep]:
        shutil.rmtree(old)


def load_run_checkpoint(directory: Path, model, ema, optimizer) -> int:
    """Restore weights, EMA and optimiser from a checkpoint of this script; returns its step."""
    set_model_state_dict(model, load_file(directory / "model.safetensors"), options=FULL)
    ema_weights = load_model_weights(directory, model.config)
    with torch.no_grad():
        for name, tensor in ema.items():
            source = ema_weights[name]
            tensor.copy_(distribute_like(source, tensor))
    state = {}
    for key, value in load_file(directory / "optimizer.safetensors").items():
        fqn, name = key.rsplit(".", 1)
        state.setdefault(fqn, {})[name] = value
    groups = get_optimizer_state_dict(model, optimizer)["param_groups"]  # names of every rank's parameters
    set_optimizer_state_dict(model, optimizer, {"state": state, "param_groups": groups}, options=FULL)
    return json.loads((directory / "state.json").read_text())["step"]


def distribute_like(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """`source` laid out as `target`: sharded like it under FSDP (a DTensor), the whole tensor otherwise."""
    if hasattr(target, "device_mesh"):
        from torch.distributed.tensor import distribute_tensor

        return distribute_tensor(source.to(target.device), target.device_mesh, target.placements)
    return source


# ---------------------------------------------------------------------------------------------
# The training loops


def setup_distributed(args) -> tuple[int, int, torch.device]:
    """rank, world size and device; torchrun sets RANK / WORLD_SIZE."""
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
        return dist.get_rank(), world, device
    return 0, 1, device


def load_autoencoder(directory: str | None, device) -> AutoEncoder:
    if directory is None:
        raise ConfigError("--autoencoder DIR is required: train one first with `python train.py --stage vae --out DIR`")
    return checkpoint.load_autoencoder(directory, torch.float32, device)


def encode_images(autoencoder: AutoEncoder, images: list[torch.Tensor], generator: torch.Generator, device):
    """Latents of a batch's VAE images, each at its own size, images of one size encoded together."""
    latents = [None] * len(images)
    by_size = {}
    for index, image in enumerate(images):
        by_size.setdefault(tuple(image.shape), []).append(index)
    for (_, height, width), indexes in by_size.items():
        factor, z = autoencoder.config.downsample, autoencoder.config.z_channels
        noise = torch.randn(len(indexes), z, height // factor, width // factor, generator=generator)
        encoded = autoencoder.encode(torch.stack([images[i] for i in indexes]).to(device), noise.to(device))
        for index, latent in zip(indexes, encoded):
            latents[index] = latent
    return latents


def train(args) -> None:
    out = Path(args.out)
    rank, world, device = setup_distributed(args)
    torch.manual_seed(args.seed)
    resume_dir = out / "last"
    if args.resume and not resume_dir.exists():
        raise FileNotFoundError(f"{resume_dir}: nothing to resume (no complete checkpoint yet)")
    if not args.resume and resume_dir.exists():
        raise FileExistsError(f"{out} already holds a run; pass --resume to continue it or choose another --out")

    # The model, its autoencoder and its tokenizer.
    autoencoder = load_autoencoder(args.autoencoder, device)
    config = load_config_dir(resume_dir) if args.resume else preset(args.preset, args.arch)
    if not args.resume and (args.timestep_shift or args.stage == "continue"):
        config.timestep_shift = args.timestep_shift or 4.0
    config.vae = autoencoder.config
    vit_stride, vae_stride = config.vit.patch_size, config.pixels_per_latent_token
    sizes = (
        (vit_stride * config.vit_max_num_patch_per_side, vit_stride, vit_stride),
        (vae_stride * config.max_latent_size, vae_stride, vae_stride),
    )
    if args.resume:
        tokenizer = BagelTokenizer.from_dir(resume_dir)
    else:
        tokenizer = BagelTokenizer.train(make_data(args, None, *sizes).texts(), config.llm.vocab_size)
    data = make_data(args, tokenizer, *sizes)
    model = Bagel(config)
    init_weights(model)
    if args.init and not args.resume:
        model.load_state_dict(load_model_weights(args.init, config))
    model.to(device)
    set_trainable(model, args.stage)
    wrapped = wrap_distributed(model, args, world, device)
    ema = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = make_optimizer(model, args)
    start = load_run_checkpoint(resume_dir, model, ema, optimizer) if args.resume else 0

    pack_config = PackConfig.for_model(config, tokenizer.special_ids, dropout=ConditionDropout(*args.dropout))
    trainable = [p for p in model.parameters() if p.requires_grad]
    log_path = out / "loss.csv"
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        keep_log_rows(log_path, start)
    progress = tqdm(range(start, args.max_steps), initial=start, total=args.max_steps, disable=rank != 0)
    seen, busy = 0, 0.0  # tokens (all processes) and seconds spent in steps since this process began
    for step in progress:
        began = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(args, step)
        totals = torch.zeros(3, device=device)  # loss, ce, mse summed over this process's micro-batches
        tokens = 0
        for micro in range(args.accum):
            batch, rng = micro_batch(args, data, pack_config, step, rank * args.accum + micro)
            batch = batch.to(device)
            generator = torch.Generator().manual_seed(rng.randrange(2**63))
            with torch.no_grad():
                latents = encode_images(autoencoder, batch.vae_images, generator, device)
            noise = torch.randn(len(batch.vae_indexes), config.patch_latent_dim, generator=generator).to(device)
            with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
                result = wrapped(batch, latents, noise=noise, ce_weight=args.ce_weight, mse_weight=args.mse_weight)
            (result["loss"] / args.accum).backward()
            totals += torch.stack([result["loss"], result["ce_loss"], result["mse_loss"]]).detach().float()
            tokens += batch.sequence_length
        if world > 1:
            dist.all_reduce(totals)
        totals /= args.accum * world
        if not torch.isfinite(totals).all():
            sys.exit(
                f"error: the loss became {totals[0].item()} at step {step + 1}; stopped. The last good "
                f"checkpoint is {out / 'last'}"
            )
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            torch._foreach_lerp_(list(ema.values()), [p.detach() for p in model.parameters()], 1 - args.ema)
        loss, ce, mse = totals.tolist()
        seen, busy = seen + tokens * world, busy + time.perf_counter() - began
        progress.set_postfix(
            {"loss": f"{loss:.4f}", "ce": f"{ce:.3f}", "mse": f"{mse:.4f}", "tok/s": f"{seen / busy:.0f}"}
        )
        if rank == 0:
            append_log_row(log_path, [step + 1, loss, ce, mse])
        if (step + 1) % args.checkpoint_every == 0 or step + 1 == args.max_steps:
            save_run_checkpoint(out, step + 1, model, ema, autoencoder, optimizer, tokenizer, args, rank)
            if rank == 0:
                plot_losses(log_path, out / "loss.png")
                if args.eval_every and ((step + 1) // args.checkpoint_every) % args.eval_every == 0:
                    evaluate_checkpoint(out, step + 1, args)
    if world > 1:
        dist.destroy_process_group()


def train_autoencoder(args) -> None:
    """The FLUX autoencoder architecture at the preset's width, trained on the data's images.

    The loss is pixel MSE plus a small KL term (the FLUX AE also used perceptual and adversarial
    losses; this is enough for flat synthetic shapes). At the end the latent statistics give
    `shift_factor` and `scale_factor`, so that scaled latents have zero mean and unit variance, as
    BAGEL's flow expects. With --autoencoder it starts from that autoencoder; with --decoder-only the
    encoder, and so the latent space, stays as it was: a Bagel already trained on it gets sharper images
    without retraining.
    """
    out = Path(args.out)
    if (out / "ae.safetensors").exists() and not args.resume:
        raise FileExistsError(f"{out / 'ae.safetensors'} exists; choose another --out")
    if args.decoder_only and not args.autoencoder:
        raise ConfigError("--decoder-only needs --autoencoder DIR: the autoencoder whose decoder to train further")
    _, _, device = setup_distributed(args)
    torch.manual_seed(args.seed)
    config = preset(args.preset, args.arch)
    if args.autoencoder:
        autoencoder = load_autoencoder(args.autoencoder, device).train().requires_grad_(True)
        config.vae = autoencoder.config
    else:
        autoencoder = AutoEncoder(config.vae).to(device)
    autoencoder.encoder.requires_grad_(not args.decoder_only)
    stride = config.pixels_per_latent_token
    data = make_data(
        args,
        BagelTokenizer.train(["a"], 300),
        (stride, stride, stride),
        (stride * config.max_latent_size, stride, stride),
    )
    trainable = [p for p in autoencoder.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=args.lr, betas=(0.9, 0.95), weight_decay=0.0)
    progress = tqdm(range(args.max_steps), desc="autoencoder")
    for step in progress:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(args, step)
        images = training_images(data, random.Random(generator_seed(args, step, 0)), count=16)
        mean, logvar = autoencoder.encoder(images.to(device)).chunk(2, dim=1)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        reconstruction = autoencoder.decoder(z)
        mse = F.mse_loss(reconstruction, images.to(device))
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).mean()
        loss = mse + 1e-4 * kl
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        progress.set_postfix(mse=f"{mse.item():.5f}", kl=f"{kl.item():.3f}")
    if not args.decoder_only:  # a new latent space: measure its statistics (a kept encoder keeps its own)
        with torch.no_grad():
            images = torch.cat([training_images(data, random.Random(-i), count=16) for i in range(4)])
            mean, _ = autoencoder.encoder(images.to(device)).chunk(2, dim=1)
        autoencoder.config.shift_factor = mean.mean().item()
        autoencoder.config.scale_factor = 1.0 / (mean - mean.mean()).std().item()
    config.vae = autoencoder.config
    out.mkdir(parents=True, exist_ok=True)
    temporary = out / ".ae.safetensors.tmp"
    save_file({k: v.detach().cpu().contiguous() for k, v in autoencoder.state_dict().items()}, temporary)
    save_config_dir(config, out, overwrite=True)
    os.replace(temporary, out / "ae.safetensors")
    print(
        f"wrote {out / 'ae.safetensors'} (reconstruction MSE {mse.item():.5f}, "
        f"scale {config.vae.scale_factor:.4f}, shift {config.vae.shift_factor:.4f})"
    )


def training_images(data, rng: random.Random, count: int) -> torch.Tensor:
    """`count` images of one size, taken from the data's generation targets and context images."""
    images = []
    while len(images) < count:
        images += [item.pixels for item in data.sample(rng) if isinstance(item, VaeImage)]
    size = images[0].shape
    return torch.stack([image for image in images if image.shape == size][:count])


def make_data(args, tokenizer, vit_sizes, vae_sizes):
    if args.data == "shapes":
        return ShapesData(tokenizer, args.image_size)
    path = Path(args.data)
    if not path.is_file():
        raise FileNotFoundError(f"--data {path}: no such file")
    return JsonlData(path, tokenizer, vit_sizes, vae_sizes)


def wrap_distributed(model: nn.Module, args, world: int, device) -> nn.Module:
    """DDP by default; FSDP2 (`fully_shard` per decoder layer, then the root) with --fsdp; torch.compile on request."""
    if world > 1 and args.fsdp:
        from torch.distributed.fsdp import fully_shard

        for layer in model.llm.layers:
            fully_shard(layer)
        fully_shard(model)
    elif world > 1:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device] if device.type == "cuda" else None, find_unused_parameters=True
        )
    return torch.compile(model) if args.compile else model


def evaluate_checkpoint(out: Path, step: int, args) -> None:
    """Score the EMA weights just saved on Shapes World and append the scores to OUT/eval.csv."""
    from bagel_mini.evaluate import model_scores

    scores = model_scores(str(out / "last"), args.eval_n, seed=0, image_size=args.image_size, steps=25, max_tokens=32)
    row = {
        "step": step,
        **{f"geneval_{k}": v for k, v in scores["geneval"].items()},
        "vqa": scores["vqa"],
        "edit": scores["edit"],
    }
    path = out / "eval.csv"
    if not path.exists():
        path.write_text(",".join(row) + "\n")
    append_log_row(path, list(row.values()))
    print(
        f"step {step}: MiniGenEval {scores['geneval']['overall']:.3f}, MiniVQA {scores['vqa']:.3f}, "
        f"MiniEdit {scores['edit']:.3f}",
        file=sys.stderr,
    )


def keep_log_rows(path: Path, step: int) -> None:
    """On resume, drop log rows after the checkpoint's step (a killed run may have logged further)."""
    if not path.exists():
        path.write_text("step,loss,ce,mse\n")
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
        ax.plot(steps, [float(row[name]) for row in rows], linewidth=0.8)
        ax.set_title(f"{name.upper()} loss")
        ax.set_xlabel("step")
        ax.set_yscale("log")
    figure.tight_layout()
    figure.savefig(png_path, dpi=100)
    plt.close(figure)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        train_autoencoder(args) if args.stage == "vae" else train(args)
    except (ValueError, FileNotFoundError, FileExistsError, ConfigError) as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
