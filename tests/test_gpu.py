"""What only a CUDA GPU can check: FlexAttention's kernels, bfloat16 training with and without torch.compile,
KV-cached sampling and the 8-bit weights on the device. Marked `gpu`, and skipped where CUDA is not
available; run them alone with `python -m pytest -m gpu`.

Every comparison is in float32 on the GPU (TF32 is off by default for matmuls) against the same
computation on the dense path or on the CPU, unless the test says otherwise.
"""

import random
import sys
from pathlib import Path

import pytest
import torch
from helpers import THREE_SAMPLES, randomize_

from bagel_mini import DEFAULT_MODEL
from bagel_mini.attention import attend, dense_mask, flex_block_mask
from bagel_mini.bench import SPECIAL_IDS, mixed_samples
from bagel_mini.cfg import NO_DROPOUT
from bagel_mini.checkpoint import build_meta, load_checkpoint, weight_bytes
from bagel_mini.config import load_config_dir, preset
from bagel_mini.inference import ImageSettings, Inferencer
from bagel_mini.model import Bagel
from bagel_mini.navit import PackConfig, pack
from bagel_mini.tokenizer import BagelTokenizer
from bagel_mini.weights8 import Linear8

sys.path.insert(0, str(Path(__file__).parents[1]))
import train  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
CUDA = torch.device("cuda")


def test_flex_attention_matches_the_dense_mask_forward_and_backward():
    samples = THREE_SAMPLES
    length = sum(size for splits in samples for size, _ in splits)
    generator = torch.Generator().manual_seed(0)
    inputs = [torch.randn(length, heads, 16, generator=generator) for heads in (4, 2, 2)]  # q, k, v
    upstream = torch.randn(length, 4 * 16, generator=generator).to(CUDA)
    results = []
    for mask in (dense_mask(samples, length, CUDA), flex_block_mask(samples, length, CUDA)):
        q, k, v = (t.to(CUDA).requires_grad_() for t in inputs)
        out = attend(q, k, v, mask)
        out.backward(upstream)
        results.append([out, q.grad, k.grad, v.grad])
    for dense, flex in zip(*results):
        # float32 kernels that sum in different orders: outputs (convex mixes of values ~1) and gradients (up to ~10)
        # agree to ~1e-6 relative; a wrong mask entry moves them by ~0.1 or more.
        torch.testing.assert_close(flex, dense, rtol=1e-4, atol=1e-4)


def test_a_packed_batch_has_the_same_loss_and_gradients_under_flex_attention():
    config = preset("toy")
    model = randomize_(Bagel(config), seed=0).to(CUDA)
    batch = pack(
        mixed_samples(config, 6), PackConfig.for_model(config, SPECIAL_IDS, dropout=NO_DROPOUT), random.Random(0)
    )
    batch = batch.to(CUDA)
    generator = torch.Generator().manual_seed(0)
    latents = [torch.randn(config.vae.z_channels, 2 * h, 2 * w, generator=generator) for h, w in batch.latent_grids]
    noise = torch.randn(len(batch.vae_indexes), config.patch_latent_dim, generator=generator)
    runs = []
    for mask in (None, flex_block_mask(batch.splits, batch.sequence_length, CUDA)):  # None: per sample
        model.zero_grad(set_to_none=True)
        result = model(batch, [latent.to(CUDA) for latent in latents], noise=noise.to(CUDA), mask=mask)
        result["loss"].backward()
        gradients = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
        runs.append({"loss": result["loss"].detach(), **gradients})
    assert runs[0].keys() == runs[1].keys()
    # float32 through four layers and back: ~1e-5 relative between kernels; one wrong mask entry changes the
    # loss and the gradients of every layer by far more than 1e-3.
    for name in runs[0]:
        torch.testing.assert_close(runs[1][name], runs[0][name], rtol=1e-3, atol=1e-5, msg=name)


def losses(run: Path) -> list[list[float]]:
    return [[float(v) for v in row.split(",")[1:]] for row in (run / "loss.csv").read_text().splitlines()[1:]]


def test_a_few_bfloat16_training_steps_of_the_toy_with_and_without_compile(tmp_path):
    common = ["--max-steps", "3", "--tokens", "512", "--checkpoint-every", "3", "--warmup", "2"]  # on cuda by default
    train.main(["--out", str(tmp_path / "eager"), *common])
    train.main(["--out", str(tmp_path / "compiled"), *common, "--compile"])
    eager, compiled = losses(tmp_path / "eager"), losses(tmp_path / "compiled")
    assert len(eager) == len(compiled) == 3
    assert all(torch.isfinite(torch.tensor(row)).all() for row in eager + compiled)
    # Step 1 is the same model on the same batch before any update: the runs differ only in how bfloat16
    # autocast rounds (2^-8 relative per operation), which moves a loss of ~3 by well under 2%.
    assert compiled[0] == pytest.approx(eager[0], rel=2e-2)
    assert (tmp_path / "compiled" / "last" / "ema.safetensors").is_file()


@torch.no_grad()
def test_cached_sampling_on_the_gpu_matches_the_cpu():
    tokenizer = BagelTokenizer.from_dir(DEFAULT_MODEL)
    results = []
    for device in ("cpu", CUDA):
        engine = Inferencer(*load_checkpoint(DEFAULT_MODEL, device=device), tokenizer, tokenizer.special_ids)
        noise = torch.randn(16, engine.model.config.patch_latent_dim, generator=torch.Generator().manual_seed(0))
        prompt = engine.add_text(engine.empty_context(), "a red circle left of a blue square")
        settings = ImageSettings(num_timesteps=10)
        image = engine.generate_image(
            prompt, (64, 64), engine.empty_context(), None, settings, noise=noise, decode=False
        )
        text = engine.generate_text(engine.add_text(engine.empty_context(), "what is left of the blue square?"), 8)
        results.append((image.latent.cpu(), text.ids, text.logits.cpu()))
    (cpu_latent, cpu_ids, cpu_logits), (gpu_latent, gpu_ids, gpu_logits) = results
    # float32 kernels differ by ~1e-6 relative; 9 guided Euler steps keep latents (~1) within 1e-3, while a
    # cache read wrongly moves them by ~0.1 or more. Logits (~10) after 8 steps: the same.
    torch.testing.assert_close(gpu_latent, cpu_latent, rtol=0, atol=1e-3)
    assert gpu_ids == cpu_ids
    torch.testing.assert_close(gpu_logits, cpu_logits, rtol=0, atol=1e-3)


@torch.no_grad()
@pytest.mark.parametrize("mode", ["fp8", "int8"])
def test_8_bit_weights_quantize_on_the_gpu_as_on_the_cpu_and_run_there(mode):
    cpu_model, autoencoder = load_checkpoint(DEFAULT_MODEL, weights=mode)
    gpu_model, gpu_autoencoder = load_checkpoint(DEFAULT_MODEL, device=CUDA, weights=mode)
    offloaded, _ = load_checkpoint(DEFAULT_MODEL, device=CUDA, offload=True, weights=mode)
    for name, layer in cpu_model.named_modules():
        if isinstance(layer, Linear8):  # IEEE float32 division and the same rounding on both: bit for bit
            on_gpu = gpu_model.get_submodule(name)
            assert torch.equal(on_gpu.weight.cpu().view(torch.uint8), layer.weight.view(torch.uint8)), name
            assert torch.equal(on_gpu.scale.cpu(), layer.scale), name
    special, logits = BagelTokenizer.from_dir(DEFAULT_MODEL).special_ids, []
    for model, decoder in ((cpu_model, autoencoder), (gpu_model, gpu_autoencoder), (offloaded, gpu_autoencoder)):
        engine = Inferencer(model, decoder, None, special)
        logits.append(engine.generate_text(engine.add_text(engine.empty_context(), [5, 6, 7]), 4).logits.cpu())
    torch.testing.assert_close(logits[1], logits[0], rtol=0, atol=1e-3)  # float32 logits ~10, kernels ~1e-6 apart
    assert torch.equal(logits[2], logits[1])  # offloading moves the same 8-bit layers; the kernels are the same


def test_8_bit_weights_take_their_bytes_on_the_gpu():
    modules = build_meta(load_config_dir(DEFAULT_MODEL))
    expected = weight_bytes(modules, torch.bfloat16, "fp8")
    before = torch.cuda.memory_allocated(CUDA)
    model, autoencoder = load_checkpoint(DEFAULT_MODEL, torch.bfloat16, CUDA, weights="fp8")
    allocated = torch.cuda.memory_allocated(CUDA) - before
    tensors = len(model.state_dict()) + len(autoencoder.state_dict())
    assert expected <= allocated <= expected + 512 * tensors  # the caching allocator rounds each block up to 512 B
