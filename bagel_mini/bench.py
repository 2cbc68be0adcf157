"""Benchmarks that print ratios measured in one run (never timed tests).

    python -m bagel_mini.bench step [--preset toy] [--repeats 5]
    python -m bagel_mini.bench sample [--preset toy] [--steps 25] [--context 300]
    python -m bagel_mini.bench load [--preset small] [--dir DIR]

`step`: forward + backward time of one training step on the same packed batch for the MoT, MoE and
dense decoders (hard routing gives them the same FLOPs per token, so the ratios should be near 1),
tokens per second of MoT, and packed versus padded batching of the same samples of mixed sizes.
`sample`: image sampling with text and image CFG over a context of an image and a few hundred text
tokens: the KV-cached sampler versus rebuilding every context at every step.
`load`: writes a random checkpoint in the released layout (bfloat16, about 1.2 GB for `small`), then in
a fresh process loads it in float32 and compares peak memory with the loaded weights' size, and the
load time with the time to just read the files.
The last line printed by each is one JSON object.
"""

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bagel_mini.cfg import NO_DROPOUT
from bagel_mini.config import preset
from bagel_mini.inference import ImageSettings, Inferencer
from bagel_mini.model import Bagel
from bagel_mini.navit import PackConfig, PackedBatch, Sample, Text, VaeImage, VitImage, pack, sample_length
from bagel_mini.vae import AutoEncoder

SPECIAL_IDS = {"bos_token_id": 1, "eos_token_id": 2, "start_of_image": 3, "end_of_image": 4}


def mixed_samples(config, count: int, seed: int = 0) -> list[Sample]:
    """Understanding and generation samples with images and texts of different sizes."""
    rng = random.Random(seed)
    vocab, vit_patch, latent_px = config.llm.vocab_size, config.vit.patch_size, config.pixels_per_latent_token
    max_side = config.vit.image_size

    def text(length: int, loss: bool = False) -> Text:
        return Text([rng.randrange(5, vocab) for _ in range(length)], loss=loss)

    def image(stride: int) -> torch.Tensor:
        sides = [stride * rng.randint(1, max_side // stride) for _ in range(2)]
        return torch.rand(3, *sides) * 2 - 1

    samples = []
    for index in range(count):
        if index % 2:
            samples.append([text(rng.randint(4, 12)), VitImage(image(vit_patch)), text(rng.randint(2, 24), loss=True)])
        else:
            samples.append([text(rng.randint(4, 16)), VaeImage(image(latent_px), loss=True)])
    return samples


def padded(samples: list[Sample], pack_config: PackConfig) -> list[Sample]:
    """Each sample extended by a padding text (no loss) to the length of the longest one plus two.

    The padded samples still run end to end in one sequence, where a padded batch would run them side by
    side; attention over the longer sequence costs more, so at large batches this flatters packing somewhat.
    """
    target = max(sample_length(sample, pack_config) for sample in samples) + 2
    return [[*sample, Text([0] * (target - sample_length(sample, pack_config) - 2))] for sample in samples]


def time_steps(model: Bagel, batch: PackedBatch, latents: list[torch.Tensor], repeats: int) -> float:
    """Median seconds of forward + backward, after one warm-up step."""
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        model(batch, latents)["loss"].backward()
        times.append(time.perf_counter() - start)
        model.zero_grad(set_to_none=True)
    return statistics.median(times[1:])


def bench_step(preset_name: str, repeats: int, num_samples: int) -> dict:
    torch.manual_seed(0)
    config = preset(preset_name)
    pack_config = PackConfig.for_model(config, SPECIAL_IDS, dropout=NO_DROPOUT)
    samples = mixed_samples(config, num_samples)
    batch = pack(samples, pack_config, random.Random(0))
    padded_batch = pack(padded(samples, pack_config), pack_config, random.Random(0))
    z = config.vae.z_channels
    latents = [torch.randn(z, h * 2, w * 2) for h, w in batch.latent_grids]
    seconds = {
        arch: time_steps(Bagel(preset(preset_name, arch)), batch, latents, repeats) for arch in ("mot", "moe", "dense")
    }
    padded_seconds = time_steps(Bagel(preset(preset_name, "mot")), padded_batch, latents, repeats)
    print(
        f"preset {preset_name}: {num_samples} samples, {batch.sequence_length} tokens packed, "
        f"{padded_batch.sequence_length} padded"
    )
    for arch, value in seconds.items():
        print(f"  {arch:5s} forward+backward {value * 1000:8.1f} ms")
    print(f"  mot padded         {padded_seconds * 1000:8.1f} ms")
    return {
        "mot_over_dense": seconds["mot"] / seconds["dense"],
        "moe_over_dense": seconds["moe"] / seconds["dense"],
        "packed_over_padded": seconds["mot"] / padded_seconds,
        "tokens_per_s": batch.sequence_length / seconds["mot"],
    }


@torch.no_grad()
def bench_sample(preset_name: str, steps: int, context_tokens: int) -> dict:
    torch.manual_seed(0)
    config = preset(preset_name)
    engine = Inferencer(Bagel(config), AutoEncoder(config.vae), None, SPECIAL_IDS)
    side = config.pixels_per_latent_token * min(4, config.max_latent_size)
    image = torch.rand(3, side, side) * 2 - 1
    prompt = torch.randint(5, config.llm.vocab_size, (context_tokens,)).tolist()
    settings = ImageSettings(num_timesteps=steps + 1, cfg_text_scale=4.0, cfg_img_scale=2.0, cfg_interval=(0.0, 1.0))

    def contexts():
        """Full context, without the prompt, without the image (the three CFG branches of an edit)."""
        with_image = engine.add_vit_image(engine.add_vae_image(engine.empty_context(), image), image)
        return engine.add_text(with_image, prompt), with_image, engine.add_text(engine.empty_context(), prompt)

    def cached() -> float:
        start = time.perf_counter()
        full, no_text, no_image = contexts()  # built once, then every step reads the caches
        engine.generate_image(full, (side, side), no_text, no_image, settings, seed=0, decode=False)
        return time.perf_counter() - start

    def recomputed() -> float:
        one_step = ImageSettings(**{**vars(settings), "num_timesteps": 2})
        start = time.perf_counter()
        for _ in range(steps):  # every step rebuilds all three contexts, then runs the image tokens once
            full, no_text, no_image = contexts()
            engine.generate_image(full, (side, side), no_text, no_image, one_step, seed=0, decode=False)
        return time.perf_counter() - start

    cached(), recomputed()  # warm-up
    cached_seconds, recomputed_seconds = cached(), recomputed()
    full = contexts()[0]
    print(
        f"preset {preset_name}: context of {full.length} tokens, {side}x{side} image "
        f"({(side // config.pixels_per_latent_token) ** 2} latent tokens), {steps} steps, 3 CFG branches"
    )
    print(f"  cached     {cached_seconds:.3f} s   recomputed {recomputed_seconds:.3f} s")
    return {"cached_speedup": recomputed_seconds / cached_seconds, "s_per_step": cached_seconds / steps}


def resident_bytes(field: str = "VmRSS") -> int:
    """Resident memory of this process now (VmRSS) or at its peak (VmHWM), from /proc/self/status.

    (Not ru_maxrss: on Linux it survives exec, so a child started from a big parent inherits its peak.)
    """
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024


def measure_load(directory: str) -> None:
    """Run in a fresh process: read the files, then load them; print the figures as JSON."""
    from bagel_mini.checkpoint import load_checkpoint

    files = [Path(directory) / name for name in ("ema.safetensors", "ae.safetensors")]
    start = time.perf_counter()
    for path in files:
        with open(path, "rb") as file:
            while file.read(1 << 26):
                pass
    read_seconds = time.perf_counter() - start
    baseline = resident_bytes()
    start = time.perf_counter()
    model, autoencoder = load_checkpoint(directory, dtype=torch.float32)
    load_seconds = time.perf_counter() - start
    peak = resident_bytes("VmHWM") - baseline
    weights = sum(t.numel() * t.element_size() for m in (model, autoencoder) for t in m.state_dict().values())
    print(json.dumps({"peak": peak, "weights": weights, "load_s": load_seconds, "read_s": read_seconds}))


def bench_load(preset_name: str, directory: str | None) -> dict:
    from bagel_mini.checkpoint import save_checkpoint

    with tempfile.TemporaryDirectory(dir=directory) as scratch:
        config = preset(preset_name)
        save_checkpoint(Bagel(config), AutoEncoder(config.vae), scratch, dtype=torch.bfloat16)
        file_bytes = sum(path.stat().st_size for path in Path(scratch).glob("*.safetensors"))
        child = subprocess.run(
            [sys.executable, "-c", f"from bagel_mini.bench import measure_load; measure_load({scratch!r})"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    figures = json.loads(child.stdout.strip().splitlines()[-1])
    print(
        f"preset {preset_name}: {file_bytes / 1e9:.2f} GB of bfloat16 files -> {figures['weights'] / 1e9:.2f} GB "
        f"of float32 weights; peak {figures['peak'] / 1e9:.2f} GB while loading"
    )
    print(f"  load {figures['load_s']:.2f} s, reading the files {figures['read_s']:.2f} s")
    return {
        "peak_rss_over_weights": figures["peak"] / figures["weights"],
        "load_over_read": figures["load_s"] / figures["read_s"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bagel_mini.bench", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    step = commands.add_parser("step", help="training step time: MoT / MoE / dense, packed / padded")
    step.add_argument("--preset", default="toy")
    step.add_argument("--repeats", type=int, default=5)
    step.add_argument("--samples", type=int, default=16)
    sample = commands.add_parser("sample", help="image sampling: KV-cached versus recomputed context")
    sample.add_argument("--preset", default="toy")
    sample.add_argument("--steps", type=int, default=25)
    sample.add_argument("--context", type=int, default=300, help="text tokens in the context")
    load = commands.add_parser("load", help="checkpoint loading: peak memory and time")
    load.add_argument("--preset", default="small")
    load.add_argument("--dir", help="where to write the temporary checkpoint (default: the system's temp dir)")
    args = parser.parse_args(argv)
    if args.command == "load":
        result = bench_load(args.preset, args.dir)
    elif args.command == "step":
        if args.repeats < 1:
            parser.error("--repeats must be at least 1")
        result = bench_step(args.preset, args.repeats, args.samples)
    else:
        if args.steps < 1 or args.context < 1:
            parser.error("--steps and --context must be at least 1")
        result = bench_sample(args.preset, args.steps, args.context)
    print(json.dumps({name: round(value, 4) for name, value in result.items()}))


if __name__ == "__main__":
    main()
