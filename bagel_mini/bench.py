"""Benchmarks that print ratios measured in one run (never timed tests).

    python -m bagel_mini.bench step [--preset toy] [--repeats 5]
    python -m bagel_mini.bench train [--steps 20] [--repeats 3]
    python -m bagel_mini.bench sample [--preset toy] [--steps 25] [--context 300]
    python -m bagel_mini.bench load [--preset small] [--dir DIR]
    python -m bagel_mini.bench weights [--weights fp8] [--preset small] [--questions 100] [--prompts 1]

`step`: forward + backward time of one training step on the same packed batch for the MoT, MoE and
dense decoders (hard routing gives them the same FLOPs per token, so the ratios should be near 1),
tokens per second of MoT, and packed versus padded batching of the same samples of mixed sizes.
`train`: the toy's training step as train.py runs it (Shapes World batches of 1,024 tokens, the embedded
autoencoder, forward, backward, AdamW, EMA) in five variants, interleaved and repeated: `baseline` (the
step before this benchmark: the batch packed and encoded in the training thread, attention over the
whole packed sequence under one dense mask, every part of every layer gathering its expert's rows and
scattering them back, `per_part_routing`), `per_sample` (attention per sample, attention.sample_mask),
`expert_order` (the decoder sorts the sequence by expert once, mot.Route), `worker` (all of that, the
batch packed and encoded ahead by one data worker on the idle core, the training thread on one thread, a
fused AdamW: train.py's default in one process on a CPU) and `ddp`
(two processes of one thread, each packing and encoding its own 1,024-token micro-batch of every step,
the gradients averaged over gloo: `torchrun --nproc_per_node 2 train.py` on a 2-core CPU). Generation-loss
images (noised VAE images) and tokens per second of wall time, the share of a step the baseline spends
packing and encoding, and the model's FLOPs (counted by torch's FLOP counter) per second as a share of
this machine's float32 matmul peak (1024 x 1024 matmuls on all threads).
`sample`: image sampling with text and image CFG over a context of an image and a few hundred text
tokens: the KV-cached sampler versus rebuilding every context at every step.
`load`: writes a random checkpoint in the released layout (bfloat16, about 1.2 GB for `small`), then in
a fresh process loads it in float32 and compares peak memory with the loaded weights' size, and the
load time with the time to just read the files.
`weights`: 8-bit decoder weights (`--weights fp8` or `int8`, weights8.py) against bfloat16. Quality on the
embedded trained toy model (a random model's near-uniform logits would make top-1 agreement meaningless):
the top-1 agreement of next-token logits over the answers to MiniVQA questions (the bfloat16 model's
greedy answer, read by both), and the cosine similarity of generated latents and decoded pixels on the
same seeds. Memory on a random `small` checkpoint in the released layout, each mode loaded in a fresh
process: the Bagel weights' bytes (`ema.safetensors`; the autoencoder stays bfloat16 in every mode)
against bfloat16, peak memory while loading against all the bytes loaded, and the time of a sampling
step against bfloat16. Then the bytes BAGEL-7B-MoT needs in each mode, from its parameter count.
The last line printed by each is one JSON object.

Measured on a 2-core CPU: `train` 1.26x (per-sample attention) and 1.33x (with the data worker) the
generation-loss images per second of the baseline, at 0.27 of the matmul peak (0.21 before; the toy's
8-pixel latent tokens: 16-pixel ones gave 1.21x, 1.40x and 0.28, their batches holding twice the images
to encode). Measured before the 8-pixel tokens, with 16-pixel tokens and the previous embedded model:
`step` MoT / dense 0.99, MoE 1.05 (toy, 16 samples; an idle-machine figure), packed 0.37 of padded;
`sample` 5.1x for the KV cache (386 cached tokens); `load` peak 1.04x the weights; `weights fp8` 0.595 of
the bfloat16 bytes (0.553 for the 7B), load peak 1.04x, top-1 agreement 0.991, pixel cosine 0.9998
(int8: 0.986 and 0.9999), a `small` sampling step about 2x (int8 1.2x) as long.
On a later day, with the fused AdamW (its step 2.4 ms against 11), two runs of `train` gave medians of
1.17x and 1.30x (per-sample attention) and 1.23x and 1.20x (with the worker), the rounds of one run from
1.03x to 1.55x, and the machine's matmul peak 129 and 170 GFLOP/s: a noisy machine that day.
With the `ddp` variant, on an idle CPU (one run, three rounds, matmul peak 153 GFLOP/s): per-sample
attention 1.39x, the worker 1.44x, two processes 1.70x (rounds 1.70 to 1.96) at 0.30 of the matmul peak.
Two processes draw as well at the same tokens but answer worse (the model card), so train.py's default on
a CPU stays the worker, and `gen_images_per_s_over_baseline` is the worker's.
On another 2-core CPU (AMD EPYC, matmul peak 238 GFLOP/s; one run, three rounds): per-sample attention
1.26x, the worker 1.13x (rounds 1.08 to 1.29), two processes 1.42x, the baseline spending 0.15 of a step
packing and encoding. There a step on one thread takes 95 ms, 42% of it in `mm` and 13% in attention; a
second measurement of the worker against two threads without it (20 steps, three rounds) put the worker
7% ahead, so on that machine the two are within the noise.
With expert order (AMD EPYC, matmul peak 173 GFLOP/s; one run, five rounds): per-sample attention 1.21x,
expert order 1.34x (rounds 1.28 to 1.40), the worker 1.39x (1.30 to 1.43), two processes 1.73x, at 0.28
of the matmul peak. Two more runs that day, once the baseline no longer paid for expert order's
bookkeeping, on a noisier machine (matmul peak 144 and 156 GFLOP/s, the baseline's rounds 24 to 35
images a second): per-sample 1.17x and 1.13x, expert order 1.20x and 1.29x, the worker 1.34x and 1.30x
(rounds 1.12 to 1.92), two processes 1.63x and 1.57x. Expert order alone, on one thread: 127 ms a step
against 157; train.py as the recipe runs its second stage: 6.15 steps a second against 5.37 (300 steps,
two runs each, the same losses to the bit).
Why 2x is out of reach by placing work alone: one step (890 tokens on average) is about 140 ms of the
training thread and 80 ms of packing and encoding (70 of them the autoencoder), 220 ms of one core in
all; the worker's step takes 153 ms (12 of them receiving the batch), the baseline's 217 ms on two
threads. 2x is 109 ms: both cores busy all the time, nothing left over. It needs less work per step, on
the training thread above all. Tried, on one thread: the attention kernels take 7.8 ms a layer per step
however samples are bucketed (powers of 2, of 1.41 or of 1.33, or one sample at a time: 7.5 to 8.1 ms);
fusing the q/k/v or gate/up projections into one matmul, and torch's fused RMSNorm, were no faster;
channels-last convolutions cut the autoencoder's 66 ms by 17%, but it runs in the worker, which already
waits on the training thread.
"""

import argparse
import contextlib
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from bagel_mini import DEFAULT_MODEL, mot
from bagel_mini.cfg import NO_DROPOUT
from bagel_mini.config import load_config_dir, preset
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


def forward_backward_seconds(model: Bagel, batch: PackedBatch, latents: list[torch.Tensor]) -> float:
    start = time.perf_counter()
    model(batch, latents)["loss"].backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} (min {min(values):.3f}, max {max(values):.3f})"


def bench_step(preset_name: str, repeats: int, num_samples: int) -> dict:
    """The variants take turns, step by step (after a warm-up step each), so that a change in the machine's
    load falls on all of them; each ratio is taken within a round, then the median over rounds."""
    torch.manual_seed(0)
    config = preset(preset_name)
    pack_config = PackConfig.for_model(config, SPECIAL_IDS, dropout=NO_DROPOUT)
    samples = mixed_samples(config, num_samples)
    batch = pack(samples, pack_config, random.Random(0))
    padded_batch = pack(padded(samples, pack_config), pack_config, random.Random(0))
    z, p = config.vae.z_channels, config.latent_patch_size
    latents = [torch.randn(z, h * p, w * p) for h, w in batch.latent_grids]
    runs = {arch: (Bagel(preset(preset_name, arch)), batch) for arch in ("mot", "moe", "dense")}
    runs["mot padded"] = (runs["mot"][0], padded_batch)
    for model, packed in runs.values():
        forward_backward_seconds(model, packed, latents)
    rounds = [{name: forward_backward_seconds(*run, latents) for name, run in runs.items()} for _ in range(repeats)]
    print(
        f"preset {preset_name}: {num_samples} samples, {batch.sequence_length} tokens packed, "
        f"{padded_batch.sequence_length} padded; {repeats} rounds, median (min, max)"
    )
    for name in runs:
        print(f"  {name:10s} forward+backward ms {spread([r[name] * 1000 for r in rounds])}")
    ratios = {
        "mot_over_dense": [r["mot"] / r["dense"] for r in rounds],
        "moe_over_dense": [r["moe"] / r["dense"] for r in rounds],
        "packed_over_padded": [r["mot"] / r["mot padded"] for r in rounds],
    }
    for name, values in ratios.items():
        print(f"  {name:18s} {spread(values)}")
    tokens_per_s = [batch.sequence_length / r["mot"] for r in rounds]
    return {
        **{name: statistics.median(values) for name, values in ratios.items()},
        "tokens_per_s": statistics.median(tokens_per_s),
    }


def noised_images(batch: PackedBatch) -> int:
    """VAE images with a flow loss: their tokens' raw timestep is finite (-inf marks a clean image)."""
    first, count = 0, 0
    for h, w in batch.latent_grids:
        count += bool(torch.isfinite(batch.raw_timesteps[first]))
        first += h * w
    return count


def matmul_peak_flops() -> float:
    """float32 FLOP/s of 1024 x 1024 matmuls on all threads (the best of five)."""
    a, b = torch.randn(2, 1024, 1024)
    a @ b
    best = min(timed(lambda: a @ b) for _ in range(5))
    return 2 * 1024**3 / best


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def toy_training_parts():
    """What a toy training step needs besides the model: the embedded autoencoder, the toy config, the data."""
    from bagel_mini import checkpoint
    from bagel_mini.cfg import ConditionDropout
    from bagel_mini.data import ShapesData
    from bagel_mini.tokenizer import BagelTokenizer

    autoencoder = checkpoint.load_autoencoder(DEFAULT_MODEL)
    config = preset("toy")
    config.vae = autoencoder.config
    data = ShapesData(64, BagelTokenizer.from_dir(DEFAULT_MODEL))
    pack_config = PackConfig.for_model(config, data.tokenizer.special_ids, dropout=ConditionDropout(0.1, 0.5, 0.1))
    return autoencoder, config, data, pack_config


@contextlib.contextmanager
def per_part_routing():
    """The decoder's routing before it sorted the tokens by expert (mot.Route), for the variants before
    `expert_order`: every part of every layer gathers its expert's rows from the sequence, then scatters
    its output back. Route then says the sequence is in place, so the decoder keeps the sequence's order."""

    def from_mask(is_gen):
        identity = torch.arange(len(is_gen))
        return mot.Route((~is_gen).nonzero().squeeze(1), is_gen.nonzero().squeeze(1), identity, identity, True)

    def merge(route, und_rows, gen_rows):
        out = und_rows.new_empty((len(route.und) + len(route.gen), *und_rows.shape[1:]))
        out[route.und] = und_rows
        out[route.gen] = gen_rows
        return out

    def run_experts(und, gen, route, *inputs):
        if und == gen or len(route.gen) == 0:
            return und(*inputs)
        if len(route.und) == 0:
            return gen(*inputs)
        und_out = und(*(x[route.und] for x in inputs))
        gen_out = gen(*(x[route.gen] for x in inputs))
        if isinstance(und_out, tuple):
            return tuple(merge(route, a, b) for a, b in zip(und_out, gen_out))
        return merge(route, und_out, gen_out)

    saved = mot.Route.__dict__["from_mask"], mot.run_experts
    mot.Route.from_mask, mot.run_experts = staticmethod(from_mask), run_experts
    try:
        yield
    finally:
        mot.Route.from_mask, mot.run_experts = saved


def training_steps(variant: str, first_step: int, steps: int, threads: int, parts, rank: int = 0) -> dict:
    """`steps` training steps (after two warm-up steps) of a fresh model; wall seconds and what they held.

    Under `ddp` this runs in each process (rank `rank`), each on its own micro-batch of every step, as
    train.py's processes do under torchrun; the counts are then this process's alone. `parts`: what
    `toy_training_parts` returns, loaded once per process."""
    from bagel_mini.attention import dense_mask
    from bagel_mini.data import PreparedBatches

    autoencoder, config, data, pack_config = parts
    torch.manual_seed(0)
    model = Bagel(config)
    ema = {name: p.detach().clone() for name, p in model.named_parameters()}
    fused = variant in ("worker", "ddp")  # train.py's optimiser now; the others loop over the parameters
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), eps=1e-15, fused=fused)
    trained = model
    if variant == "ddp":  # train.py's wrapping; a batch may lack ViT or VAE tokens, so unused parameters
        trained = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
    span = range(first_step, first_step + steps + 2)
    micro = range(rank, rank + 1)  # train.py's micro-batch of this process
    prepared = PreparedBatches(data, pack_config, 1024, 0, span, micro, autoencoder, config.patch_latent_dim)
    torch.set_num_threads(threads)
    batches = prepared.ahead(1) if variant == "worker" else iter(prepared)
    totals = {"seconds": 0.0, "prepare_seconds": 0.0, "images": 0, "tokens": 0}
    for index in range(len(span)):
        began = time.perf_counter()
        batch, latents, noise = next(batches)
        prepared_at = time.perf_counter()
        mask = dense_mask(batch.splits, batch.sequence_length) if variant == "baseline" else None
        trained(batch, latents, noise=noise, mask=mask)["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            torch._foreach_lerp_(list(ema.values()), [p.detach() for p in model.parameters()], 1e-3)
        if index >= 2:
            totals["seconds"] += time.perf_counter() - began
            totals["prepare_seconds"] += prepared_at - began
            totals["images"] += noised_images(batch)
            totals["tokens"] += batch.sequence_length
    return totals


def ddp_process(rank: int, world: int, port: int, first_step: int, steps: int, results) -> None:
    """One of the `ddp` variant's processes: one thread, its own micro-batch, gradients averaged over gloo."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    totals = training_steps("ddp", first_step, steps, threads=1, parts=toy_training_parts(), rank=rank)
    results.put((rank, totals))
    dist.destroy_process_group()


def ddp_steps(first_step: int, steps: int, world: int = 2) -> dict:
    """The `ddp` variant: `world` processes train together; the images and tokens of all, rank 0's seconds."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:  # a free port for the processes to meet
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    context = mp.get_context("spawn")
    results = context.SimpleQueue()
    mp.start_processes(ddp_process, args=(world, port, first_step, steps, results), nprocs=world, start_method="spawn")
    by_rank = dict(results.get() for _ in range(world))
    return {
        "seconds": by_rank[0]["seconds"],
        "prepare_seconds": by_rank[0]["prepare_seconds"],
        "images": sum(t["images"] for t in by_rank.values()),
        "tokens": sum(t["tokens"] for t in by_rank.values()),
    }


def bench_train(steps: int, repeats: int) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    from bagel_mini.data import PreparedBatches

    threads = torch.get_num_threads()
    parts = toy_training_parts()
    autoencoder, config, data, pack_config = parts

    def run(variant: str, first_step: int) -> dict:
        if variant == "ddp":
            return ddp_steps(first_step, steps)
        routing = per_part_routing() if variant in ("baseline", "per_sample") else contextlib.nullcontext()
        with routing:
            totals = training_steps(variant, first_step, steps, 1 if variant == "worker" else threads, parts)
        torch.set_num_threads(threads)
        return totals

    # The model's FLOPs per token, counted on a few batches (per-sample attention: the work the model needs).
    model, counted_tokens = Bagel(config), 0
    with FlopCounterMode(display=False) as counter:
        for step in range(4):
            batch, latents, noise = PreparedBatches(
                data, pack_config, 1024, 0, range(1), range(1), autoencoder, config.patch_latent_dim
            ).prepare(10_000 + step, 0)
            model(batch, latents, noise=noise)["loss"].backward()
            counted_tokens += batch.sequence_length
    flops_per_token = counter.get_total_flops() / counted_tokens
    peak = matmul_peak_flops()

    variants = ("baseline", "per_sample", "expert_order", "worker", "ddp")
    rounds = []
    for repeat in tqdm(range(repeats), desc="bench train"):
        rounds.append({variant: run(variant, first_step=repeat * (steps + 2)) for variant in variants})

    def per_second(variant: str, key: str) -> list[float]:
        return [r[variant][key] / r[variant]["seconds"] for r in rounds]

    print(f"toy preset, {steps} steps per variant and round, {repeats} rounds, {threads} threads")
    print(f"matmul peak {peak / 1e9:.1f} GFLOP/s; the model: {flops_per_token / 1e6:.2f} MFLOP per token (fwd+bwd)")
    result = {}
    for variant in variants:
        images, tokens = per_second(variant, "images"), per_second(variant, "tokens")
        over = [r[variant]["images"] / r[variant]["seconds"] / (r["baseline"]["images"] / r["baseline"]["seconds"])
                for r in rounds]  # fmt: skip
        share = [t * flops_per_token / peak for t in tokens]
        print(f"  {variant:10s} images/s {spread(images)}  tokens/s {spread(tokens)}")
        print(f"  {'':10s} over baseline {spread(over)}  share of matmul peak {spread(share)}")
        result[f"{variant}_gen_images_per_s"] = statistics.median(images)
        result[f"{variant}_share_of_matmul_peak"] = statistics.median(share)
        result[f"{variant}_over_baseline"] = statistics.median(over)
    prepare_share = [r["baseline"]["prepare_seconds"] / r["baseline"]["seconds"] for r in rounds]
    print(f"  baseline: packing and encoding take {spread(prepare_share)} of a step")
    result["gen_images_per_s_over_baseline"] = result.pop("worker_over_baseline")
    result["share_of_matmul_peak"] = result["worker_share_of_matmul_peak"]
    result["baseline_prepare_share"] = statistics.median(prepare_share)
    return result


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


def write_random_checkpoint(preset_name: str, directory: str) -> int:
    """A random Bagel of the preset in the released layout (bfloat16, as the release); returns the files' bytes."""
    from bagel_mini.checkpoint import save_checkpoint

    config = preset(preset_name)
    save_checkpoint(Bagel(config), AutoEncoder(config.vae), directory, dtype=torch.bfloat16)
    return sum(path.stat().st_size for path in Path(directory).glob("*.safetensors"))


def run_fresh(function: str, *args) -> dict:
    """`function(*args)` of this module in a fresh Python process; the JSON object it prints last."""
    code = f"from bagel_mini.bench import {function}; {function}(*{args!r})"
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(child.stdout.strip().splitlines()[-1])


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
    with tempfile.TemporaryDirectory(dir=directory) as scratch:
        file_bytes = write_random_checkpoint(preset_name, scratch)
        figures = run_fresh("measure_load", scratch)
    print(
        f"preset {preset_name}: {file_bytes / 1e9:.2f} GB of bfloat16 files -> {figures['weights'] / 1e9:.2f} GB "
        f"of float32 weights; peak {figures['peak'] / 1e9:.2f} GB while loading"
    )
    print(f"  load {figures['load_s']:.2f} s, reading the files {figures['read_s']:.2f} s")
    return {
        "peak_rss_over_weights": figures["peak"] / figures["weights"],
        "load_over_read": figures["load_s"] / figures["read_s"],
    }


@torch.no_grad()
def measure_weights_load(directory: str, weights: str, steps: int) -> None:
    """Run in a fresh process: load in bfloat16 with `weights`, then time sampling steps; print the figures as JSON."""
    from bagel_mini.checkpoint import build_meta, load_checkpoint

    torch.set_num_threads(1)  # steadier times on a busy CPU; each mode runs alone in its process
    build_meta(load_config_dir(directory))  # a first model's one-time costs (~40 MB of Python and torch state)
    baseline = resident_bytes()
    model, autoencoder = load_checkpoint(directory, dtype=torch.bfloat16, weights=weights)
    peak = resident_bytes("VmHWM") - baseline
    stored = [sum(t.numel() * t.element_size() for t in m.state_dict().values()) for m in (model, autoencoder)]
    engine = Inferencer(model, autoencoder, None, SPECIAL_IDS)
    context = engine.add_text(engine.empty_context(), list(range(5, 21)))
    side = model.config.pixels_per_latent_token * min(8, model.config.max_latent_size)  # 64 latent tokens
    settings = ImageSettings(num_timesteps=steps + 1, cfg_text_scale=1.0)
    warm_up = (side // 4, side // 4)  # one step at 4 latent tokens: first-call costs, not the step's
    engine.generate_image(context, warm_up, settings=ImageSettings(num_timesteps=2), seed=0, decode=False)
    start = time.perf_counter()
    engine.generate_image(context, (side, side), settings=settings, seed=0, decode=False)
    step_seconds = (time.perf_counter() - start) / steps
    print(json.dumps({"peak": peak, "model": stored[0], "autoencoder": stored[1], "step_s": step_seconds}))


def answer_logits(engine: Inferencer, context, ids: list[int]) -> torch.Tensor:
    """Next-token logits (len(ids) + 1, vocab) of the answer [bos] + ids after `context`, read as one causal
    block: row i is what generate_text's step i sees when the answer so far is ids[:i]."""
    tokens = [engine.special["bos_token_id"], *ids]
    positions = torch.arange(context.position, context.position + len(tokens))
    embedded = engine.model.llm.embed_tokens(torch.tensor(tokens))
    is_gen = torch.zeros(len(tokens), dtype=torch.bool)
    hidden, _ = engine.model.llm.extend(embedded, positions, is_gen, context.cache, causal=True)
    return engine.model.llm.lm_head(hidden).float()


@torch.no_grad()
def measure_weights_quality(weights: str, num_questions: int, prompts_per_category: int, steps: int) -> None:
    """Run in a fresh process: the embedded toy model in bfloat16 and with `weights`; print as JSON the top-1
    agreement of next-token logits on MiniVQA answers and the cosine similarities of the latents and pixels
    of MiniGenEval prompts drawn on the same seeds.

    Both latents are decoded by one float32 autoencoder: it is the same, unquantized, in every mode, and
    bfloat16 convolutions are slow on a CPU.
    """
    from bagel_mini.checkpoint import load_autoencoder, load_checkpoint
    from bagel_mini.evaluate import benchmark
    from bagel_mini.images import resize_for_encoder, to_rgb
    from bagel_mini.tokenizer import BagelTokenizer

    torch.set_num_threads(1)  # toy-sized tensors gain little from a second thread; one stays fast on a busy CPU
    tokenizer = BagelTokenizer.from_dir(DEFAULT_MODEL)
    reference, quantized = (
        Inferencer(*load_checkpoint(DEFAULT_MODEL, torch.bfloat16, weights=mode), tokenizer, tokenizer.special_ids)
        for mode in ("bf16", weights)
    )
    agree, answered = 0, 0
    for question in benchmark(num_questions, seed=0)[1]:
        image = resize_for_encoder(to_rgb(question.image), *reference.vae_sizes)  # as interleave(understanding=True)
        contexts = [
            engine.add_text(engine.add_image(engine.empty_context(), image, vae=False), question.question)
            for engine in (reference, quantized)
        ]
        ids = reference.generate_text(contexts[0], max_length=32).ids
        logits = [answer_logits(engine, context, ids) for engine, context in zip((reference, quantized), contexts)]
        agree += int((logits[0].argmax(-1) == logits[1].argmax(-1)).sum())
        answered += len(logits[0])
    settings, decoder = ImageSettings(num_timesteps=steps), load_autoencoder(DEFAULT_MODEL)
    latent_cosines, pixel_cosines = [], []
    for seed, task in enumerate(benchmark(prompts_per_category, seed=0)[0]):
        latents = [
            engine.generate_image(
                engine.add_text(engine.empty_context(), task.prompt), (64, 64), engine.empty_context(), None, settings,
                seed=seed, decode=False,
            ).latent.float()
            for engine in (reference, quantized)
        ]  # fmt: skip
        pixels = [decoder.decode(latent[None]) for latent in latents]
        latent_cosines.append(F.cosine_similarity(*(latent.flatten() for latent in latents), dim=0).item())
        pixel_cosines.append(F.cosine_similarity(*(image.flatten() for image in pixels), dim=0).item())
    figures = {"top1_agreement": agree / answered, "answer_tokens": answered, "images": len(pixel_cosines)}
    for name, values in (("latent_cosine", latent_cosines), ("pixel_cosine", pixel_cosines)):
        figures |= {name: statistics.mean(values), f"lowest_{name}": min(values)}
    print(json.dumps(figures))


def bench_weights(
    weights: str, preset_name: str, directory: str | None, num_questions: int, prompts_per_category: int, steps: int
) -> dict:
    from bagel_mini.checkpoint import build_meta, weight_bytes

    quality = run_fresh("measure_weights_quality", weights, num_questions, prompts_per_category, steps)
    print(
        f"embedded toy model, bfloat16 against --weights {weights}: next-token top-1 agreement "
        f"{quality['top1_agreement']:.4f} over {quality['answer_tokens']} answer tokens of {num_questions} MiniVQA "
        f"questions; {quality['images']} MiniGenEval images, {steps} time points: cosine similarity of the latents "
        f"{quality['latent_cosine']:.4f} (lowest {quality['lowest_latent_cosine']:.4f}), of the decoded pixels "
        f"{quality['pixel_cosine']:.4f} (lowest {quality['lowest_pixel_cosine']:.4f})"
    )
    with tempfile.TemporaryDirectory(dir=directory) as scratch:
        write_random_checkpoint(preset_name, scratch)
        loads = {mode: run_fresh("measure_weights_load", scratch, mode, 2) for mode in ("bf16", weights)}
    plain, eight_bit = loads["bf16"], loads[weights]
    stored = eight_bit["model"] + eight_bit["autoencoder"]
    print(
        f"preset {preset_name}: Bagel weights {plain['model'] / 1e9:.3f} GB in bfloat16, "
        f"{eight_bit['model'] / 1e9:.3f} GB with --weights {weights}; loading peaks at "
        f"{eight_bit['peak'] / 1e9:.3f} GB for {stored / 1e9:.3f} GB stored (with the autoencoder); a sampling "
        f"step {eight_bit['step_s']:.3f} s, {plain['step_s']:.3f} s in bfloat16"
    )
    big = build_meta(preset("bagel-7b-mot"))
    needs = {mode: weight_bytes(big, torch.bfloat16, mode) for mode in ("bf16", weights)}
    print(
        f"BAGEL-7B-MoT (with its autoencoder): {needs['bf16'] / 1e9:.1f} GB ({needs['bf16'] / 2**30:.1f} GiB) of "
        f"weights in bfloat16, {needs[weights] / 1e9:.1f} GB ({needs[weights] / 2**30:.1f} GiB) with {weights}"
    )
    return {
        "bytes_over_bf16": eight_bit["model"] / plain["model"],
        "load_peak_over_bytes": eight_bit["peak"] / stored,
        **{name: quality[name] for name in ("top1_agreement", "latent_cosine", "pixel_cosine")},
        "step_over_bf16": eight_bit["step_s"] / plain["step_s"],
        "bagel_7b_gb": needs[weights] / 1e9,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bagel_mini.bench", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    step = commands.add_parser("step", help="training step time: MoT / MoE / dense, packed / padded")
    step.add_argument("--preset", default="toy")
    step.add_argument("--repeats", type=int, default=15, help="rounds of the variants")
    step.add_argument("--samples", type=int, default=16)
    train_ = commands.add_parser("train", help="the toy's training step: today's against the baseline")
    train_.add_argument("--steps", type=int, default=20, help="steps per variant and round")
    train_.add_argument("--repeats", type=int, default=3, help="rounds of the five variants")
    sample = commands.add_parser("sample", help="image sampling: KV-cached versus recomputed context")
    sample.add_argument("--preset", default="toy")
    sample.add_argument("--steps", type=int, default=25)
    sample.add_argument("--context", type=int, default=300, help="text tokens in the context")
    load = commands.add_parser("load", help="checkpoint loading: peak memory and time")
    load.add_argument("--preset", default="small")
    load.add_argument("--dir", help="where to write the temporary checkpoint (default: the system's temp dir)")
    weights = commands.add_parser("weights", help="8-bit decoder weights against bfloat16: quality, memory, time")
    weights.add_argument("--weights", default="fp8", choices=["fp8", "int8"])
    weights.add_argument("--preset", default="small", help="the random checkpoint for memory and time")
    weights.add_argument("--dir", help="where to write the temporary checkpoint (default: the system's temp dir)")
    weights.add_argument("--questions", type=int, default=100, help="MiniVQA questions for the top-1 agreement")
    weights.add_argument("--prompts", type=int, default=1, help="MiniGenEval prompts per category to draw")
    weights.add_argument("--steps", type=int, default=50, help="time-grid points of each image")
    args = parser.parse_args(argv)
    if args.command == "load":
        result = bench_load(args.preset, args.dir)
    elif args.command == "weights":
        if args.questions < 1 or args.prompts < 1 or args.steps < 2:
            parser.error("--questions and --prompts must be at least 1, --steps at least 2")
        result = bench_weights(args.weights, args.preset, args.dir, args.questions, args.prompts, args.steps)
    elif args.command == "train":
        if args.steps < 1 or args.repeats < 1:
            parser.error("--steps and --repeats must be at least 1")
        result = bench_train(args.steps, args.repeats)
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
