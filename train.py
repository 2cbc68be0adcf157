"""Train BAGEL (paper section 3 and Table 3), from a toy on a laptop CPU to the 7B on GPUs.

    python train.py --out runs/toy                                  # the toy Bagel on Shapes World, MoT
    python train.py --out runs/toy --resume                         # continue exactly where it stopped
    python train.py --stage vae --out runs/ae                       # your own autoencoder (toy presets)
    python train.py --autoencoder runs/ae --out runs/toy2           # a Bagel on that autoencoder's latents
    python train.py --stage lm --out runs/lm                        # a stage: lm, vit, align, pretrain, ...
    python train.py --stage vit --init runs/lm/last --out runs/vit  # ... each starting from the one before
    python -m bagel_mini.recipe --out runs/recipe                   # the embedded toy model: vit, pretrain, finetune
    torchrun --nproc_per_node 2 train.py ... [--fsdp]               # DDP, or FSDP2 for big models

The toy preset uses the embedded autoencoder (bagel_mini/default_model) unless --autoencoder names
another; a resumed run reads the one saved in its checkpoint. Data: Shapes World, generated on the fly
(default), or `--data FILE.jsonl` of your own interleaved samples (bagel_mini/data.py). Every random draw
of step s comes from generators seeded by (seed, s, micro batch), so a resumed run sees exactly the data
and noise of an uninterrupted one.

Checkpoints go to `--out DIR/step-NNNNNN/` (written to a temporary name, then renamed) and `DIR/last`
always points to the newest complete one: a checkpoint directory in the released layout that sample.py
reads, plus what resuming needs (bagel_mini/checkpoint.py).
"""

import argparse
import contextlib
import json
import os
import random
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import save_file
from torch import nn
from tqdm import tqdm

from bagel_mini import DEFAULT_MODEL, checkpoint, flags, runs, shapes_world, siglip_loss
from bagel_mini.cfg import ConditionDropout
from bagel_mini.config import PRESETS, ConfigError, load_config_dir, preset, save_config_dir, write_json_atomic
from bagel_mini.data import PreparedBatches, autoencoder_batch, generator_seed, open_data
from bagel_mini.images import vae_resize, vit_resize
from bagel_mini.model import Bagel
from bagel_mini.navit import PackConfig
from bagel_mini.shapes_world import GENERATION_TASKS, SHAPES
from bagel_mini.tokenizer import BagelTokenizer
from bagel_mini.vae import AutoEncoder

STAGES = ("lm", "vit", "align", "pretrain", "continue", "sft", "vae")
# BAGEL's stages (paper Table 3) in miniature, after the pretrained parts it starts from (a language model,
# a ViT, an autoencoder): the Shapes World tasks each trains on (None: the default mix, generation four times
# as often as understanding). Alignment reads captions only; continued training adds interleaved tasks
# (edits, videos, reasoning); supervised fine-tuning weights editing, reasoning and questions up.
STAGE_MIXES = {
    "lm": None,  # their texts alone
    "align": {"caption": 1.0},
    "pretrain": None,
    "continue": {"text_to_image": 0.35, "edit": 0.25, "video": 0.1, "reasoning": 0.1, "caption": 0.05, "vqa": 0.15},
    "sft": {"text_to_image": 0.3, "edit": 0.2, "video": 0.05, "reasoning": 0.15, "caption": 0.05, "vqa": 0.25},
}
BAGEL_ONLY = (
    "--arch",
    "--init",
    "--vit",
    "--freeze-vit",
    "--freeze-und",
    "--readout-only",
    "--tokens",
    "--accum",
    "--ema",
    "--ce-weight",
    "--mse-weight",
    "--timestep-shift",
)
BAGEL_ONLY += ("--dropout", "--eval-every", "--eval-n", "--fsdp", "--compile", "--workers", "--tokenizer")
BAGEL_ONLY += ("--edit-context",)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=flags.HelpFormatter, allow_abbrev=False
    )
    parser.add_argument("--out", required=True, help="run directory (checkpoints, loss curves)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last")
    parser.add_argument("--preset", default="toy", choices=sorted(PRESETS), help="model size")
    parser.add_argument("--arch", default="mot", choices=["mot", "moe", "dense"], help="decoder variant")
    parser.add_argument(
        "--stage",
        default="pretrain",
        choices=STAGES,
        help="lm: the language model on Shapes World texts; vit: the ViT (SigLIP's loss); align: the connector\n"
        "only, on captions; pretrain; continue: more interleaved tasks, timestep shift 4; sft; vae: the autoencoder",
    )
    parser.add_argument(
        "--init",
        help="start from this checkpoint directory's EMA weights, configs, tokenizer and (unless --autoencoder)\n"
        "autoencoder: the previous stage's OUT/last",
    )
    parser.add_argument(
        "--vit",
        help="take the ViT from this checkpoint directory (a --stage vit run's OUT/last) in place of --init's\n"
        "(the official trainer reads SigLIP2 from its own path)",
    )
    parser.add_argument(
        "--freeze-vit",
        action="store_true",
        help="keep the ViT as --init gave it (the official trainer's freeze_vit), e.g. after --stage vit",
    )
    parser.add_argument(
        "--freeze-und",
        action="store_true",
        help="train the generation path alone, every answer kept (the official trainer's freeze_und), e.g. after\n"
        "pretraining: the understanding expert, embeddings, lm_head, ViT and connector stay as --init gave them",
    )
    parser.add_argument(
        "--readout-only",
        action="store_true",
        help="train only what no image token reads (MoT; not the official trainer's): the last layer's understanding\n"
        "queries, attention output, norm and MLP, the final norm and lm_head; every image drawn from a given\n"
        "context stays (not one drawn after thinking: the readout writes the plan)",
    )
    parser.add_argument(
        "--autoencoder",
        help="directory with ae.safetensors and bagel_config.json (default for the toy preset: the embedded one;\n"
        "with --stage vae: the autoencoder to start from)",
    )
    parser.add_argument(
        "--decoder-only",
        action="store_true",
        help="--stage vae: train only the decoder of --autoencoder, keeping its latents (and Bagels trained on them)",
    )
    parser.add_argument(
        "--scale-equivariance",
        type=flags.non_negative,
        default=0.0,
        metavar="WEIGHT",
        help="--stage vae: also decode the latent shrunk 2x or 4x against the image shrunk alike, at this weight\n"
        "(smoother latents that a Bagel learns to draw in faster; AutoEncoder.shrunk_reconstruction_mse)",
    )
    parser.add_argument("--data", default="shapes", help="'shapes' (Shapes World) or a .jsonl file")
    parser.add_argument(
        "--tokenizer", help="a directory whose tokenizer.json to use (default: train one on the data's texts)"
    )
    parser.add_argument("--image-size", type=flags.at_least(16), default=64, help="Shapes World image size")
    parser.add_argument(
        "--gen-ratio",
        type=flags.positive,
        help="Shapes World: generation : understanding tasks as R : 1, each kind's proportions kept\n"
        "(default: the stage's mix; 4 : 1 in pretraining)",
    )
    parser.add_argument(
        "--mix",
        type=flags.mix,
        help="Shapes World: the tasks to draw and their weights, e.g. text_to_image=0.7,vqa=0.3\n"
        "(default: the stage's mix, shapes_world.DEFAULT_MIX in pretraining)",
    )
    parser.add_argument(
        "--edit-context",
        choices=["vae+vit", "vae"],
        default="vae+vit",
        help="Shapes World edits: the source image as VAE and ViT tokens (BAGEL), or as VAE tokens only",
    )
    parser.add_argument("--max-steps", type=flags.at_least(1), default=2000, help="optimiser steps in all")
    parser.add_argument("--tokens", type=flags.at_least(1), default=1024, help="token budget of one micro-batch")
    parser.add_argument("--accum", type=flags.at_least(1), default=1, help="micro-batches per step and process")
    parser.add_argument("--lr", type=flags.positive, default=1e-3, help="learning rate after the warm-up")
    parser.add_argument("--warmup", type=flags.at_least(1), default=100, help="linear warm-up steps, then constant")
    parser.add_argument(
        "--cooldown", type=flags.at_least(0), default=0, help="the last N steps decay the learning rate linearly to 0"
    )
    parser.add_argument("--ema", type=flags.decay, default=0.999, help="EMA decay")
    parser.add_argument("--ce-weight", type=flags.non_negative, default=0.25, help="weight of the text loss")
    parser.add_argument("--mse-weight", type=flags.non_negative, default=1.0, help="weight of the image loss")
    parser.add_argument("--timestep-shift", type=flags.positive, help="default: 1 (pretrain), 4 (continue)")
    parser.add_argument(
        "--dropout",
        type=flags.fraction,
        nargs=3,
        default=(0.1, 0.5, 0.1),
        metavar=("TEXT", "VIT", "VAE"),
        help="CFG dropout probabilities",
    )
    parser.add_argument("--checkpoint-every", type=flags.at_least(1), default=500, help="steps between checkpoints")
    parser.add_argument("--eval-every", type=flags.at_least(0), default=0, help="score each Nth checkpoint (0: never)")
    parser.add_argument("--eval-n", type=flags.at_least(1), default=10, help="prompts per category per score")
    parser.add_argument("--keep", type=flags.at_least(1), default=2, help="complete checkpoints to keep")
    parser.add_argument("--seed", type=int, default=0, help="seeds every random draw")
    parser.add_argument("--device", type=flags.device, help="default: cuda if available")
    parser.add_argument(
        "--workers",
        type=flags.at_least(0),
        help="data workers that pack and encode the next micro-batches (default: 1 on a CPU with a core to spare "
        "beyond one per process, else 0)",
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (GPU)")
    parser.add_argument("--fsdp", action="store_true", help="shard the model with FSDP2 (under torchrun)")
    args = parser.parse_args(argv)
    given = {word.split("=")[0] for word in (sys.argv[1:] if argv is None else argv) if word.startswith("--")}
    if args.stage == "vae" and given & set(BAGEL_ONLY):
        parser.error(f"{', '.join(sorted(given & set(BAGEL_ONLY)))}: no effect with --stage vae (Bagel stages only)")
    if args.gen_ratio and (args.stage in ("lm", "vit", "align", "vae") or args.data != "shapes"):
        parser.error(f"--gen-ratio: for the Shapes World stages with both kinds of tasks, not --stage {args.stage}")
    for flag, given_here in (("--mix", args.mix), ("--edit-context", args.edit_context != "vae+vit")):
        if given_here and (args.stage in ("lm", "vit", "vae") or args.data != "shapes"):
            parser.error(f"{flag}: for the Shapes World Bagel stages, not --stage {args.stage} with --data {args.data}")
    if args.stage in ("lm", "vit") and args.data != "shapes":
        parser.error(f"--stage {args.stage}: trains on Shapes World (--data shapes), not on {args.data}")
    if args.freeze_und:
        check_freeze_und(parser, args)
    if args.readout_only:
        check_readout_only(parser, args)
    if args.stage != "vae" and args.decoder_only:
        parser.error("--decoder-only: only with --stage vae")
    if args.stage != "vae" and args.scale_equivariance:
        parser.error(f"--scale-equivariance {args.scale_equivariance}: only with --stage vae")
    if args.decoder_only and args.scale_equivariance:
        parser.error("--scale-equivariance smooths the latents, which --decoder-only keeps: give one or the other")
    if args.decoder_only and not args.autoencoder:
        parser.error("--decoder-only needs --autoencoder DIR: the autoencoder whose decoder to train further")
    return args


def check_freeze_und(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--freeze-und needs data whose every sample draws: a sample that only answers would train nothing, and a
    batch of such samples would have no gradient at all. (train() checks that the decoder is a MoT.)"""
    if args.stage not in ("pretrain", "continue", "sft") or args.data != "shapes":
        parser.error(
            f"--freeze-und: for the Shapes World stages pretrain, continue and sft, not --stage {args.stage} "
            f"--data {args.data}"
        )
    understanding = sorted(set(args.mix or STAGE_MIXES[args.stage] or shapes_world.DEFAULT_MIX) - set(GENERATION_TASKS))
    if understanding:
        parser.error(
            f"--freeze-und: the mix has understanding tasks ({', '.join(understanding)}), which would train nothing; "
            f"give --mix with generation tasks only ({', '.join(GENERATION_TASKS)})"
        )


TEXT_TASKS = ("caption", "vqa", "reasoning")  # the Shapes World tasks with text to learn (reasoning: its think trace)


def check_readout_only(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--readout-only trains only what reads text out, so it needs a stage that trains the decoder and data with
    text to learn: a mix of drawing alone would train nothing, and --freeze-und keeps all that it trains."""
    if args.freeze_und:
        parser.error("--readout-only with --freeze-und would train nothing: the one trains only what the other keeps")
    if args.stage not in ("pretrain", "continue", "sft") or args.data != "shapes":
        parser.error(
            f"--readout-only: for the Shapes World stages pretrain, continue and sft, not --stage {args.stage} "
            f"--data {args.data}"
        )
    if not set(args.mix or STAGE_MIXES[args.stage] or shapes_world.DEFAULT_MIX) & set(TEXT_TASKS):
        parser.error(f"--readout-only: the mix has no task with text to learn; give --mix with {', '.join(TEXT_TASKS)}")


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


def vit_weights(directory: str, config) -> dict[str, torch.Tensor]:
    """The ViT weights (EMA) of another checkpoint, by the names of `model.vit`; its ViT must be this one's."""
    theirs = load_config_dir(directory)
    if theirs.vit != config.vit:
        raise ValueError(f"--vit {directory}: its ViT ({theirs.vit}) differs from this model's ({config.vit})")
    weights = checkpoint.load_model_weights(directory, theirs)
    return {name.removeprefix("vit."): tensor for name, tensor in weights.items() if name.startswith("vit.")}


GENERATION_PATH = ("llm.norm_gen.", "vae2llm.", "llm2vae.", "time_embedder.")  # with the layers' ".gen." parts
# Later tokens read only a layer's keys and values, and in a MoT an image token never runs the understanding
# expert: so what the last layer's understanding tokens do after their keys and values (queries, attention
# output, norm and MLP), the final norm and lm_head reach the text logits alone.
READOUT = ("attn.q_proj.", "attn.q_norm.", "attn.o_proj.", "post_attention_norm.", "mlp.")


def readout(model: Bagel) -> tuple[str, ...]:
    """The parameter name prefixes of what no image token reads (--readout-only)."""
    last = f"llm.layers.{len(model.llm.layers) - 1}.und."
    return (*(last + part for part in READOUT), "llm.norm.", "llm.lm_head.")


def set_trainable(
    model: Bagel, stage: str, freeze_vit: bool = False, freeze_und: bool = False, readout_only: bool = False
) -> None:
    """Alignment trains only the connector (paper Table 3); the fixed position tables never train; --freeze-vit
    keeps the ViT; --freeze-und keeps all but the generation path (the generation expert, its final norm, the
    latent connectors and the timestep embedder); --readout-only keeps all but `readout`."""
    trained_readout = readout(model)
    for name, parameter in model.named_parameters():
        fixed = name.endswith("pos_embed.table") or (freeze_vit and name.startswith("vit."))
        fixed |= freeze_und and not (".gen." in name or name.startswith(GENERATION_PATH))
        fixed |= readout_only and not name.startswith(trained_readout)
        parameter.requires_grad_(not fixed and (stage != "align" or name.startswith("connector.")))
    for layer in model.llm.layers:
        layer.freeze_und = freeze_und


@torch.no_grad()
def copy_understanding_expert(tensors: dict[str, torch.Tensor]) -> None:
    """Each generation-expert weight := its understanding twin, as BAGEL's MoT starts both experts from Qwen2.5.

    After `--stage lm` (text alone) the generation expert has never trained; copying makes the next stage
    start both from the language model. `tensors`: parameters or EMA weights by name.
    """
    for name, tensor in tensors.items():
        if ".gen." in name or name.startswith("llm.norm_gen."):
            tensor.copy_(tensors[name.replace(".gen.", ".und.").replace("norm_gen.", "norm.")])


def update(optimizer, trainable: list[nn.Parameter], model: nn.Module, ema: dict, args, step: int) -> None:
    """One optimiser step on the clipped gradients (norm 1.0), then the EMA of the weights."""
    torch.nn.utils.clip_grad_norm_(trainable, 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    with torch.no_grad():
        decay = ema_decay(args, step)
        torch._foreach_lerp_(list(ema.values()), [p.detach() for p in model.parameters()], 1 - decay)


def ema_decay(args, step: int) -> float:
    """--ema, warmed up: (1 + step) / (10 + step) until that reaches it, so that a short run's EMA has
    forgotten its random start (at 0.999 from the first step, 1,500 steps leave 22% of it)."""
    return min(args.ema, (1 + step) / (10 + step))


def learning_rate(args, step: int) -> float:
    """A linear warm-up, the constant --lr, and an optional linear cool-down to zero over the last steps."""
    cooldown = min(1.0, (args.max_steps - step) / args.cooldown) if args.cooldown else 1.0
    return args.lr * min(1.0, (step + 1) / args.warmup) * cooldown


def set_learning_rate(optimizer: torch.optim.Optimizer, args, step: int) -> None:
    for group in optimizer.param_groups:
        group["lr"] = learning_rate(args, step)


def make_optimizer(parameters: list[nn.Parameter], args) -> torch.optim.Optimizer:
    """The paper's AdamW (Table 3). Fused: one kernel for all parameters, where the default loops over the
    toy's 167 small tensors one op at a time on a CPU (measured: 2.4 against 11 ms an optimiser step)."""
    return torch.optim.AdamW(parameters, lr=args.lr, betas=(0.9, 0.95), eps=1e-15, weight_decay=0.0, fused=True)


# The flags that fix what a run draws and trains: a resumed run must keep them, or it is not the same run.
RUN_FLAGS = ("stage", "preset", "arch", "seed", "data", "image_size", "gen_ratio", "tokens", "accum", "dropout")
RUN_FLAGS += ("decoder_only", "scale_equivariance", "mix", "edit_context", "freeze_vit", "freeze_und", "readout_only")


def check_same_run(args) -> None:
    saved = json.loads((Path(args.out) / "last" / "state.json").read_text())["args"]
    now = json.loads(json.dumps(vars(args)))  # as saved: tuples become lists
    changed = [
        f"--{name.replace('_', '-')} {saved.get(name)} -> {now[name]}"
        for name in RUN_FLAGS
        if saved.get(name) != now[name] and (name in saved or now[name])  # a flag newer than the run: off
    ]
    if changed:
        raise ValueError(f"--resume: {'; '.join(changed)}: a resumed run keeps the flags it was started with")


def autoencoder_dir(args) -> Path:
    """--autoencoder, or the one in --init's checkpoint, or for the toy preset the embedded autoencoder."""
    if args.autoencoder:
        return Path(args.autoencoder)
    if args.init:
        return Path(args.init)
    if args.preset == "toy":
        return DEFAULT_MODEL
    raise ConfigError(
        f"--autoencoder DIR is required for --preset {args.preset}: train one with `python train.py --stage vae`"
    )


def read_tokenizer(args, data, config) -> BagelTokenizer:
    """The tokenizer the weights were trained with (a resumed run's, --init's), --tokenizer's, or a new one."""
    source = Path(args.out) / "last" if args.resume else args.init or args.tokenizer
    if source:
        return BagelTokenizer.from_dir(source)
    return BagelTokenizer.train(data.texts(), config.llm.vocab_size)


# ---------------------------------------------------------------------------------------------
# The training loops


def train(args) -> None:
    out, resume_dir = Path(args.out), Path(args.out) / "last"
    rank, world, device = setup_distributed(args)
    torch.manual_seed(args.seed)

    # The model, its autoencoder, its tokenizer and its data.
    if args.resume or args.init:  # the configs of the weights read
        config = load_config_dir(resume_dir if args.resume else args.init)
    else:
        config = preset(args.preset, args.arch)
    for flag, given in (("--freeze-und", args.freeze_und), ("--readout-only", args.readout_only)):
        if given and config.llm.architecture != "mot":
            raise ValueError(f"{flag}: a {config.llm.architecture} decoder has no generation path of its own (mot)")
    if not args.resume and (args.timestep_shift or args.stage == "continue"):
        config.timestep_shift = args.timestep_shift or 4.0
    autoencoder = checkpoint.load_autoencoder(resume_dir if args.resume else autoencoder_dir(args), device=device)
    config.vae = autoencoder.config
    if args.data == "shapes":  # what sample.py draws at by default
        config.train_image_size = args.image_size
    mix, text_only = args.mix or STAGE_MIXES[args.stage], args.stage == "lm"
    if args.gen_ratio:
        mix = shapes_world.with_ratio(mix or shapes_world.DEFAULT_MIX, args.gen_ratio)
    edit_vit = args.edit_context == "vae+vit"
    data = open_data(args.data, args.image_size, vit_resize(config), vae_resize(config), mix, text_only, edit_vit)
    data.tokenizer = read_tokenizer(args, data, config)
    pack_config = PackConfig.for_model(config, data.tokenizer.special_ids, dropout=ConditionDropout(*args.dropout))
    model = Bagel(config)
    init_weights(model)
    if args.init and not args.resume:
        model.load_state_dict(checkpoint.load_model_weights(args.init, config))
    if args.vit and not args.resume:
        model.vit.load_state_dict(vit_weights(args.vit, config))
    model.to(device)
    set_trainable(model, args.stage, args.freeze_vit, args.freeze_und, args.readout_only)
    wrapped = wrap_distributed(model, args, world, device)
    ema = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(trainable, args)
    start = runs.load_run_checkpoint(resume_dir, model, ema, optimizer) if args.resume else 0

    log_path = out / "loss.csv"
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        runs.keep_log_rows(log_path, start)
    workers = default_workers(device, world) if args.workers is None else args.workers
    if workers and device.type == "cpu":  # the worker's core is taken: leave it its own
        torch.set_num_threads(max(1, torch.get_num_threads() - workers))
    micro_indexes = range(rank * args.accum, (rank + 1) * args.accum)
    steps = range(start, args.max_steps)
    prepared = PreparedBatches(
        data, pack_config, args.tokens, args.seed, steps, micro_indexes, autoencoder, config.patch_latent_dim
    )
    # The data worker holds a copy of OUT/.lock: it must stop with the loop, not when it is garbage collected.
    with contextlib.closing(prepared.ahead(workers)) as batches:
        progress = tqdm(steps, initial=start, total=args.max_steps, disable=rank != 0)
        seen, busy = 0, 0.0  # tokens (all processes) and seconds spent in steps since this process began
        for step in progress:
            began = time.perf_counter()
            set_learning_rate(optimizer, args, step)
            # loss, ce, mse and tokens summed over this process's micro-batches (float64: tokens stay exact)
            totals = torch.zeros(4, dtype=torch.float64, device=device)
            for _ in micro_indexes:
                batch, latents, noise = next(batches)  # latents: one per batch.vae_images
                batch, noise = batch.to(device), noise.to(device)
                if args.fsdp and world > 1:
                    check_same_parts(batch, step, device)
                with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
                    result = wrapped(batch, latents, noise=noise, ce_weight=args.ce_weight, mse_weight=args.mse_weight)
                (result["loss"] / args.accum).backward()
                totals[:3] += torch.stack([result["loss"], result["ce_loss"], result["mse_loss"]]).detach().double()
                totals[3] += batch.sequence_length
            if world > 1:
                dist.all_reduce(totals)
            tokens = int(totals[3])  # every process's
            losses = totals[:3] / (args.accum * world)
            if not torch.isfinite(losses).all():
                last = (
                    f"the last good checkpoint is {resume_dir}" if resume_dir.exists() else "no checkpoint was written"
                )
                sys.exit(f"error: the loss became {losses[0].item()} at step {step + 1}; stopped ({last})")
            update(optimizer, trainable, model, ema, args, step)
            loss, ce, mse = losses.tolist()
            seen, busy = seen + tokens, busy + time.perf_counter() - began
            progress.set_postfix(
                {"loss": f"{loss:.4f}", "ce": f"{ce:.3f}", "mse": f"{mse:.4f}", "tok/s": f"{seen / busy:.0f}"}
            )
            if rank == 0:
                runs.append_log_row(log_path, [step + 1, loss, ce, mse, tokens])
            if (step + 1) % args.checkpoint_every == 0 or step + 1 == args.max_steps:
                if args.stage == "lm":  # the generation expert starts as the language model (nothing of it trained)
                    copy_understanding_expert(dict(model.named_parameters()))
                    copy_understanding_expert(ema)
                state = {"args": vars(args)}
                runs.save_run_checkpoint(
                    out, step + 1, model, ema, autoencoder, optimizer, data.tokenizer, state, args.keep, rank
                )
                if rank == 0:
                    runs.plot_losses(log_path, out / "loss.png")
                    if args.eval_every and ((step + 1) // args.checkpoint_every) % args.eval_every == 0:
                        evaluate_checkpoint(out, step + 1, args)
    if world > 1:
        dist.destroy_process_group()


VIT_SCENES = 64  # scenes (image-caption pairs) per vit-stage step: SigLIP's loss contrasts every pair of a batch


def train_vit(args) -> None:
    """The toy ViT on Shapes World scenes with SigLIP's sigmoid image-text loss and a per-patch loss (siglip_loss.py).

    SigLIP2 learned to see from image-text pairs; here a scene and its caption are a pair, read by the ViT
    (its tokens mean-pooled by a linear head) and by a small text tower. SigLIP2 adds location-aware losses;
    here each token also names the shape and colour that cover its patch (`PatchLoss`). Only the ViT, the
    heads, the tower and the loss's scale and bias train; the rest of --init's model is kept as it is. The
    heads and tower are checkpointed beside the model (`heads.safetensors`) and dropped afterwards. At the
    end a linear probe on the frozen EMA ViT, against the same probe on the ViT the stage started from,
    reports how well it tells counts, backgrounds, shapes and colours apart, and each object patch's shape
    (OUT/probe.json).
    """
    out, resume_dir = Path(args.out), Path(args.out) / "last"
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:
        raise ValueError("--stage vit runs in one process: start it without torchrun")
    device = flags.default_device(args.device)
    torch.manual_seed(args.seed)
    autoencoder = checkpoint.load_autoencoder(resume_dir if args.resume else autoencoder_dir(args), device=device)
    source = resume_dir if args.resume else args.init
    config = load_config_dir(source) if source else preset(args.preset, args.arch)
    config.vae = autoencoder.config
    data = open_data(args.data, args.image_size, vit_resize(config), vae_resize(config))
    tokenizer = read_tokenizer(args, data, config)
    model = Bagel(config)
    init_weights(model)
    if args.init and not args.resume:
        model.load_state_dict(checkpoint.load_model_weights(args.init, config))
    model.to(device).requires_grad_(False)
    model.vit.requires_grad_(True)
    width = config.vit.hidden_size
    heads = nn.ModuleDict(
        {
            "image_head": siglip_loss.ImageHead(width, width),
            "text_tower": siglip_loss.TextTower(config.llm.vocab_size, width, width),
            "loss": siglip_loss.SigmoidLoss(),
            "patch_loss": siglip_loss.PatchLoss(width),
        }
    ).to(device)
    trainable = [*model.vit.parameters(), *heads.parameters()]
    optimizer = make_optimizer(trainable, args)
    ema = {name: p.detach().clone() for name, p in model.named_parameters()}
    start_vit = {name: p.detach().clone() for name, p in model.vit.named_parameters()}
    start = runs.load_run_checkpoint(resume_dir, model, ema, optimizer, heads) if args.resume else 0
    progress = tqdm(range(start, args.max_steps), initial=start, total=args.max_steps, desc="vit")
    for step in progress:
        set_learning_rate(optimizer, args, step)
        rng = random.Random(generator_seed(args.seed, step, 0))
        images, ids, lengths, labels = siglip_loss.scene_batch(
            rng, VIT_SCENES, args.image_size, tokenizer, config.vit.patch_size
        )
        patches, position_ids, counts = siglip_loss.pack_images(images, config)
        tokens = model.vit(patches.to(device), position_ids.to(device), counts)
        texts = heads["text_tower"](ids.to(device), lengths.to(device))
        sigmoid = heads["loss"](heads["image_head"](tokens, counts), texts)
        patch = heads["patch_loss"](tokens, labels["patch_shape"].to(device), labels["patch_color"].to(device))
        (sigmoid + patch).backward()
        update(optimizer, trainable, model, ema, args, step)
        progress.set_postfix(sigmoid=f"{sigmoid.item():.4f}", patch=f"{patch.item():.4f}")
        if (step + 1) % args.checkpoint_every == 0 or step + 1 == args.max_steps:
            state = {"args": vars(args)}
            runs.save_run_checkpoint(
                out, step + 1, model, ema, autoencoder, optimizer, tokenizer, state, args.keep, 0, heads
            )
    if not args.resume:  # the probe compares with the ViT this run started from
        write_probe(out, model, ema, start_vit, config, tokenizer, args.image_size)


def write_probe(out: Path, model: Bagel, ema: dict, start_vit: dict, config, tokenizer, image_size: int) -> None:
    """Linear-probe accuracies (1,000 training scenes, 500 test scenes, fixed) of the ViT before and after."""
    patch = config.vit.patch_size
    train_set = siglip_loss.scene_batch(random.Random("probe train"), 1000, image_size, tokenizer, patch)
    test_set = siglip_loss.scene_batch(random.Random("probe test"), 500, image_size, tokenizer, patch)
    results = {}
    for name, weights in (("before", start_vit), ("after", {k[4:]: v for k, v in ema.items() if k.startswith("vit.")})):
        model.vit.load_state_dict(weights)
        (train_t, train_n), (test_t, test_n) = (
            siglip_loss.vit_tokens(model.vit, images, config) for images, *_ in (train_set, test_set)
        )
        train_x, test_x = siglip_loss.mean_per_image(train_t, train_n), siglip_loss.mean_per_image(test_t, test_n)
        results[name] = {
            label: siglip_loss.linear_probe(train_x, train_set[3][label], test_x, test_set[3][label], classes)
            for label, classes in siglip_loss.PROBE_CLASSES.items()
        }
        # Each object patch's token for the shape covering it (chance about 0.2).
        train_y, test_y = train_set[3]["patch_shape"], test_set[3]["patch_shape"]
        results[name]["patch_shape"] = siglip_loss.linear_probe(
            train_t[train_y > 0], train_y[train_y > 0] - 1, test_t[test_y > 0], test_y[test_y > 0] - 1, len(SHAPES)
        )
    write_json_atomic(out / "probe.json", {"train_scenes": 1000, "test_scenes": 500, **results})
    print(
        "linear probe of the ViT (500 test scenes):",
        *(f"{k} {results['before'][k]:.2f} -> {v:.2f}" for k, v in results["after"].items()),
        sep="\n  ",
    )


def train_autoencoder(args) -> None:
    """The FLUX autoencoder architecture at the preset's width, trained on the data's images (vae.py's losses).

    Checkpoints and resumes as the Bagel stages do. At each checkpoint the latent statistics give
    `shift_factor` and `scale_factor` (scaled latents of zero mean and unit variance, as BAGEL's flow
    expects), and at the end OUT itself becomes a directory `--autoencoder` reads. With --autoencoder it
    starts from that autoencoder; with --decoder-only the encoder, and so the latent space and its
    statistics, stay as they were: a Bagel already trained on it gets sharper images without retraining.
    """
    out, resume_dir = Path(args.out), Path(args.out) / "last"
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:
        raise ValueError("--stage vae runs in one process: start it without torchrun")
    device = flags.default_device(args.device)
    torch.manual_seed(args.seed)
    config = preset(args.preset)
    start_from = resume_dir if args.resume else args.autoencoder
    if start_from:
        autoencoder = checkpoint.load_autoencoder(start_from, device=device).train().requires_grad_(True)
        config.vae = autoencoder.config
    else:
        autoencoder = AutoEncoder(config.vae).to(device)
    autoencoder.encoder.requires_grad_(not args.decoder_only)
    data = open_data(args.data, args.image_size, None, vae_resize(config))
    trainable = [p for p in autoencoder.parameters() if p.requires_grad]
    optimizer = make_optimizer(trainable, args)
    start = runs.load_autoencoder_checkpoint(resume_dir, autoencoder, optimizer) if args.resume else 0
    progress = tqdm(range(start, args.max_steps), initial=start, total=args.max_steps, desc="autoencoder")
    for step in progress:
        set_learning_rate(optimizer, args, step)
        rng = random.Random(generator_seed(args.seed, step, 0))
        images = autoencoder_batch(data, rng, count=16).to(device)
        generator = torch.Generator().manual_seed(rng.randrange(2**63))  # the posterior's noise and the shrink factor
        mse, kl = autoencoder.training_losses(images, generator, args.scale_equivariance)
        (mse + 1e-4 * kl).backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        progress.set_postfix(mse=f"{mse.item():.5f}", kl=f"{kl.item():.3f}")
        if (step + 1) % args.checkpoint_every == 0 or step + 1 == args.max_steps:
            if not args.decoder_only:  # a new latent space: measure its statistics (a kept encoder keeps its own)
                held_out = [autoencoder_batch(data, random.Random(-i), count=16) for i in range(4)]
                autoencoder.measure_latent_statistics(torch.cat(held_out).to(device))
            state = {"args": vars(args)}
            runs.save_autoencoder_checkpoint(out, step + 1, autoencoder, config, optimizer, state, args.keep)
    temporary = out / ".ae.safetensors.tmp"
    save_file({k: v.detach().cpu().contiguous() for k, v in autoencoder.state_dict().items()}, temporary)
    save_config_dir(config, out, overwrite=True)
    os.replace(temporary, out / "ae.safetensors")
    print(
        f"wrote {out / 'ae.safetensors'} (reconstruction MSE {mse.item():.5f}, "
        f"scale {config.vae.scale_factor:.4f}, shift {config.vae.shift_factor:.4f})"
    )


# ---------------------------------------------------------------------------------------------
# Processes, evaluation, logs


def setup_distributed(args) -> tuple[int, int, torch.device]:
    """rank, world size and device; torchrun sets RANK / WORLD_SIZE."""
    device = flags.default_device(args.device)
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
        return dist.get_rank(), world, device
    return 0, 1, device


def default_workers(device: torch.device, world: int) -> int:
    """One data worker on a CPU with a core to spare beyond one per process (so not under torchrun with a
    process per core, where a worker would take a training process's core), none on a GPU."""
    return int(device.type == "cpu" and (os.cpu_count() or 1) > world)


def check_same_parts(batch, step: int, device) -> None:
    """FSDP2 reduces the gradients of the parameters a process used, so all processes must use the same ones."""
    kinds = [len(batch.vit_lengths), len(batch.vae_indexes), len(batch.ce_indexes), len(batch.mse_indexes)]
    present = torch.tensor([count > 0 for count in kinds], dtype=torch.int, device=device)
    fewest, most = present.clone(), present.clone()
    dist.all_reduce(fewest, op=dist.ReduceOp.MIN)
    dist.all_reduce(most, op=dist.ReduceOp.MAX)
    if not torch.equal(fewest, most):
        differ = [name for name, a, b in zip(("ViT", "VAE", "text-loss", "image-loss"), fewest, most) if a != b]
        raise ValueError(
            f"step {step + 1}: under --fsdp every process's micro-batch must hold the same kinds of tokens, but "
            f"{', '.join(differ)} tokens are in some only; raise --tokens so that each micro-batch mixes the tasks"
        )


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
    runs.append_log_row(path, list(row.values()))
    print(
        f"step {step}: MiniGenEval {scores['geneval']['overall']:.3f}, MiniVQA {scores['vqa']:.3f}, "
        f"MiniEdit {scores['edit']:.3f}",
        file=sys.stderr,
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    threads = torch.get_num_threads()
    try:
        with runs.start_run(Path(args.out), args.resume, args.max_steps):
            if args.resume:
                check_same_run(args)
            {"vae": train_autoencoder, "vit": train_vit}.get(args.stage, train)(args)
    except (ValueError, FileNotFoundError, FileExistsError, ConfigError) as error:
        sys.exit(f"error: {error}")
    finally:  # a data worker's core was given back (train); the caller's runs keep their thread count
        torch.set_num_threads(threads)


if __name__ == "__main__":
    main()
