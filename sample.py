"""Sample from a BAGEL checkpoint: text to image, editing, understanding, thinking.

    python sample.py                                                                    # the embedded toy model's demo
    python sample.py --checkpoint DIR --prompt "a red circle left of a blue square"     # text to image
    python sample.py --checkpoint DIR --image in.png --prompt "make the circle green"   # edit
    python sample.py --checkpoint DIR --image in.png --question "how many shapes?"     # understanding
    add --think to reason first; see --help for the sampling settings.

DIR is a released checkpoint directory (llm_config.json, vit_config.json, ema.safetensors,
ae.safetensors, tokenizer files) or one written by train.py; without it, the toy model shipped in
bagel_mini/default_model/ (trained by train.py on Shapes World). Without a prompt or question, the
demo draws a grid of Shapes World prompts, edits a scene and answers questions about one.
"""

import argparse
import os
import random
import sys
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from bagel_mini import DEFAULT_MODEL, flags, shapes_world
from bagel_mini.checkpoint import CheckpointError, load_checkpoint
from bagel_mini.config import ConfigError, load_config_dir
from bagel_mini.images import load_image, vae_resize
from bagel_mini.inference import ImageSettings, Inferencer
from bagel_mini.tokenizer import BagelTokenizer
from bagel_mini.weights8 import WEIGHT_MODES

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    defaults = ImageSettings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=flags.HelpFormatter)
    parser.add_argument("--checkpoint", default=str(DEFAULT_MODEL), help="checkpoint directory (the toy model)")
    task = parser.add_mutually_exclusive_group()
    task.add_argument("--prompt", help="what to draw, or with --image the edit instruction")
    task.add_argument("--question", help="with --image: a question about it; the answer is printed")
    parser.add_argument("--image", help="input image (editing or understanding)")
    parser.add_argument("--think", action="store_true", help="write a reasoning trace first")
    parser.add_argument(
        "--steps",
        type=flags.at_least(2),
        default=defaults.num_timesteps,
        help="points of the time grid (official num_timesteps): steps - 1 model evaluations",
    )
    parser.add_argument("--cfg-text", type=flags.non_negative, default=defaults.cfg_text_scale, help="text guidance")
    parser.add_argument("--cfg-img", type=flags.non_negative, default=2.0, help="image guidance scale (editing)")
    parser.add_argument(
        "--cfg-interval",
        type=flags.fraction,
        nargs=2,
        default=defaults.cfg_interval,
        metavar=("LOW", "HIGH"),
        help="guidance runs for LOW < t <= HIGH",
    )
    parser.add_argument("--cfg-renorm", default=defaults.cfg_renorm_type, choices=["global", "channel", "text_channel"])
    parser.add_argument("--shift", type=flags.positive, default=defaults.timestep_shift, help="timestep shift")
    parser.add_argument(
        "--seed", type=int, default=0, help="seeds the starting noise and an input image's posterior noise"
    )
    parser.add_argument(
        "--size",
        help="image size: N (square) or HEIGHTxWIDTH; default the size a toy was trained at, else 1024 or the\n"
        "model's largest; an edit keeps the input's",
    )
    parser.add_argument("--max-tokens", type=flags.at_least(1), default=1000, help="longest answer or reasoning")
    parser.add_argument("--device", type=flags.device, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), help="default: bfloat16 on a GPU, float32 on the CPU")
    parser.add_argument(
        "--offload",
        action="store_true",
        help="keep decoder layers on the CPU, each visiting the GPU only while it runs (fits a small GPU; slow)",
    )
    parser.add_argument(
        "--weights",
        default="bf16",
        choices=WEIGHT_MODES,
        help="bf16: every weight in --dtype; fp8 or int8: the decoder's Linear weights in 8 bits with a scale per\n"
        "row, made whole layer by layer as it runs (BAGEL-7B-MoT in 16 GB instead of 29)",
    )
    parser.add_argument("--out", help="output image file (default sample.png, numbered if it exists)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    args = parser.parse_args(argv)
    if args.question is not None and args.image is None:
        parser.error("--question needs --image")
    if args.image is not None and args.prompt is None and args.question is None:
        parser.error("--image needs --prompt (an edit) or --question")
    if args.cfg_interval[0] > args.cfg_interval[1]:
        parser.error(f"--cfg-interval {args.cfg_interval[0]} {args.cfg_interval[1]}: need LOW <= HIGH")
    text = args.prompt if args.prompt is not None else args.question
    if text is not None and not text.strip():
        parser.error("--prompt / --question: the text is empty")
    return args


def parse_size(text: str, stride: int, largest: int) -> tuple[int, int]:
    """--size as (height, width): multiples of one latent token, within the model's latent position table."""
    parts = text.lower().split("x")
    try:
        size = (int(parts[0]), int(parts[-1])) if len(parts) <= 2 else None
    except ValueError:
        size = None
    if size is None or min(size) <= 0 or size[0] % stride or size[1] % stride or max(size) > largest:
        raise ValueError(
            f"--size {text!r}: give N or HEIGHTxWIDTH with positive multiples of {stride}, at most {largest}"
        )
    return size


def output_path(requested: str | None, overwrite: bool) -> Path:
    """Never replace a file silently: an explicit --out must be new (or --overwrite); the default is numbered.

    Checked before any work: an image file name in a directory we may write to.
    """
    if requested is not None:
        path = Path(requested)
        if requested.endswith(("/", "\\")) or path.is_dir():
            raise ValueError(f"--out {requested}: a directory; give an image file name such as {path / 'sample.png'}")
        if path.suffix.lower() not in Image.registered_extensions():
            raise ValueError(f"--out {requested}: not an image file name (.png, .jpg, .webp, ...)")
        if path.exists() and not overwrite:
            raise ValueError(f"{path} exists; pass --overwrite to replace it or choose another --out")
        if not os.access(path.parent if str(path.parent) else ".", os.W_OK):
            raise ValueError(f"--out {requested}: cannot write to {path.parent} (missing, or no permission)")
        return path
    path, number = Path("sample.png"), 0
    while path.exists() or path.with_name(f"{path.stem}-edit.png").exists():  # the demo writes both
        number += 1
        path = Path(f"sample-{number}.png")
    return path


def run(args: argparse.Namespace) -> None:
    settings = ImageSettings(
        num_timesteps=args.steps,
        timestep_shift=args.shift,
        cfg_text_scale=args.cfg_text,
        cfg_img_scale=args.cfg_img,
        cfg_interval=tuple(args.cfg_interval),
        cfg_renorm_type=args.cfg_renorm,
    )
    text = args.prompt if args.prompt is not None else args.question
    directory = Path(args.checkpoint)
    if not directory.is_dir():
        hint = " (the embedded toy model is missing: train one, see the README)" if directory == DEFAULT_MODEL else ""
        raise ValueError(f"{directory}: checkpoint directory not found{hint}")
    # Everything that can be wrong is checked before the weights load: configs, tokenizer, size, image, --out.
    config = load_config_dir(directory)
    tokenizer = BagelTokenizer.from_dir(directory)
    largest = vae_resize(config)[0]
    default = config.train_image_size or min(1024, largest)  # the size a toy was trained at, else the release's
    size = parse_size(args.size or str(default), config.pixels_per_latent_token, largest)
    if text is not None and len(tokenizer.encode(text)) + args.max_tokens > config.llm.max_position_embeddings:
        raise ValueError(
            f"the prompt ({len(tokenizer.encode(text))} tokens) plus --max-tokens {args.max_tokens} "
            f"exceeds the model's context of {config.llm.max_position_embeddings} positions"
        )
    image = load_image(args.image) if args.image else None
    out = None if args.question is not None else output_path(args.out, args.overwrite)
    edit_out = output_path(str(out.with_name(f"{out.stem}-edit.png")), args.overwrite) if text is None else None
    device = flags.default_device(args.device)
    dtype = DTYPES[args.dtype or ("bfloat16" if device.type == "cuda" else "float32")]
    model, autoencoder = load_checkpoint(
        directory, dtype=dtype, device=device, offload=args.offload, weights=args.weights
    )
    engine = Inferencer(model, autoencoder, tokenizer, tokenizer.special_ids)
    torch.manual_seed(args.seed)
    if text is None:
        demo(engine, settings, args, out, edit_out)
        return
    items = ([image] if image is not None else []) + [text]
    outputs = engine.interleave(
        items,
        understanding=args.question is not None,
        think=args.think,
        max_think_tokens=args.max_tokens,
        image_size=size,
        settings=settings,
        seed=args.seed,
        progress=True,
    )
    for output in outputs:
        if isinstance(output, str):
            print(output)
        else:
            output.save(out)
            print(f"wrote {out}")


def demo(engine: Inferencer, settings: ImageSettings, args: argparse.Namespace, grid: Path, edit_path: Path) -> None:
    """Shapes World at 64 px: a grid of prompts of GenEval's six kinds, one edit, three questions."""
    rng, size = random.Random(args.seed), (64, 64)
    prompts = [shapes_world.text_to_image(rng, tag=tag).prompt for tag in shapes_world.GENEVAL_TAGS]
    drawn = [
        engine.interleave([p], image_size=size, settings=settings, seed=args.seed + i)[0] for i, p in enumerate(prompts)
    ]
    captioned_row(drawn, prompts).save(grid)
    print(f"wrote {grid} (text to image: {'; '.join(prompts)})")

    edit = shapes_world.edit(rng)
    edited = engine.interleave([edit.source_image, edit.instruction], settings=settings, seed=args.seed)[0]
    captioned_row([edit.source_image, edited], ["input", edit.instruction]).save(edit_path)
    print(f"wrote {edit_path} (edit: {edit.instruction})")

    for _ in range(3):
        question = shapes_world.question(rng)
        answer = engine.interleave([question.image, question.question], understanding=True, max_think_tokens=24)[0]
        print(f"Q: {question.question}  A: {answer.strip()}  (truth: {question.answer})")


def captioned_row(images: list[Image.Image], captions: list[str], scale: int = 3) -> Image.Image:
    """Images side by side, enlarged, each with its caption underneath."""
    side, caption_height = 64 * scale, 36
    row = Image.new("RGB", (len(images) * (side + 8) + 8, side + caption_height + 8), "white")
    draw = ImageDraw.Draw(row)
    for index, (image, caption) in enumerate(zip(images, captions)):
        left = 8 + index * (side + 8)
        row.paste(image.convert("RGB").resize((side, side), Image.Resampling.NEAREST), (left, 8))
        words, lines = caption.split(), [""]
        for word in words:
            if draw.textlength(f"{lines[-1]} {word}") > side:
                lines.append("")
            lines[-1] = f"{lines[-1]} {word}".strip()
        draw.multiline_text((left, side + 12), "\n".join(lines[:2]), fill="black")
    return row


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        run(args)
    except (ValueError, FileNotFoundError, ConfigError, CheckpointError) as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
