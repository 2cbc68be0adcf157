import contextlib
import dataclasses
import json
import random

import pytest
import torch

from bagel_mini import mot
from bagel_mini.bench import SPECIAL_IDS, main, mixed_samples, noised_images, per_part_routing
from bagel_mini.cfg import NO_DROPOUT
from bagel_mini.checkpoint import build_meta
from bagel_mini.config import preset
from bagel_mini.model import Bagel
from bagel_mini.navit import PackConfig, Text, VaeImage, pack


def test_step_benchmark_runs_and_ends_with_its_json_line(capsys):
    main(["step", "--repeats", "1", "--samples", "4"])
    last_line = capsys.readouterr().out.strip().splitlines()[-1]
    result = json.loads(last_line)
    assert set(result) == {"mot_over_dense", "moe_over_dense", "packed_over_padded", "tokens_per_s"}
    assert all(value > 0 for value in result.values())


def test_train_benchmark_runs_and_reports_its_ratios(capsys):
    main(["train", "--steps", "1", "--repeats", "1"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    expected = {"gen_images_per_s_over_baseline", "share_of_matmul_peak", "baseline_prepare_share", "ddp_over_baseline"}
    expected |= {"per_sample_over_baseline", "expert_order_over_baseline"}
    assert expected <= set(result)
    assert result["baseline_over_baseline"] == 1 and all(value > 0 for value in result.values())
    assert 0 < result["baseline_prepare_share"] < 1


def test_the_baselines_routing_gives_the_same_losses_and_gradients_and_is_undone():
    """The variants before `expert_order` route per part, gathering and scattering rows: the same computation
    in another order (float64, so only the order of sums may differ)."""
    config = preset("toy")
    torch.manual_seed(0)
    model = Bagel(config).double()  # the sample images too: the losses and gradients in float64
    samples = [
        [part if isinstance(part, Text) else dataclasses.replace(part, pixels=part.pixels.double()) for part in sample]
        for sample in mixed_samples(config, 6)
    ]
    batch = pack(samples, PackConfig.for_model(config, SPECIAL_IDS, dropout=NO_DROPOUT), random.Random(0))
    z, p = config.vae.z_channels, config.latent_patch_size
    latents = [torch.randn(z, h * p, w * p, dtype=torch.float64) for h, w in batch.latent_grids]
    noise = torch.randn(len(batch.vae_indexes), config.patch_latent_dim, dtype=torch.float64)
    results = []
    for routing, order in ((per_part_routing(), [0, 1]), (contextlib.nullcontext(), [1, 0])):
        with routing:
            assert mot.Route.from_mask(torch.tensor([True, False])).order.tolist() == order
            model(batch, latents, noise=noise)["loss"].backward()
        results.append({name: p.grad for name, p in model.named_parameters() if p.grad is not None})
        model.zero_grad(set_to_none=True)
    assert len(results[0]) > 100  # both experts' weights, the ViT's, the connectors'
    torch.testing.assert_close(results[0], results[1], rtol=0, atol=1e-12)
    assert mot.Route.from_mask(torch.tensor([True, False])).order.tolist() == [1, 0]  # expert order again


def test_noised_images_counts_the_images_with_a_flow_loss():
    config = preset("toy")
    pack_config = PackConfig.for_model(config, SPECIAL_IDS, dropout=NO_DROPOUT)
    side = 2 * config.pixels_per_latent_token
    context = VaeImage(torch.zeros(3, side, side))  # a clean image to edit: no loss
    samples = [[Text([5, 6]), context, VaeImage(torch.zeros(3, side, side), loss=True)], [Text([7]), context]]
    assert noised_images(pack(samples, pack_config, random.Random(0))) == 1


def test_sample_benchmark_runs_and_ends_with_its_json_line(capsys):
    main(["sample", "--steps", "2", "--context", "20"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result) == {"cached_speedup", "s_per_step"} and all(value > 0 for value in result.values())


def decoder_projection_counts(config) -> tuple[int, int]:
    """Values and output rows of the decoder layers' projections (q/k/v/o, gate/up/down; both MoT experts)."""
    llm = config.llm
    h, kv, i = llm.hidden_size, llm.num_key_value_heads * llm.head_dim, llm.intermediate_size
    values = 2 * h * h + 2 * h * kv + 3 * h * i  # q and o, k and v, gate, up and down
    rows = h + 2 * kv + h + 2 * i + h
    return 2 * llm.num_hidden_layers * values, 2 * llm.num_hidden_layers * rows


def test_weights_benchmark_runs_and_reports_the_bytes_of_8_bit_decoder_weights(capsys):
    main(["weights", "--preset", "toy", "--questions", "2", "--prompts", "1", "--steps", "3"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"bytes_over_bf16", "load_peak_over_bytes", "top1_agreement", "pixel_cosine"} <= set(result)
    toy, big = preset("toy"), preset("bagel-7b-mot")
    model_values = sum(t.numel() for t in build_meta(toy)[0].state_dict().values())
    values, rows = decoder_projection_counts(toy)  # a byte a value and a float32 scale a row, the rest in bf16
    expected = (2 * (model_values - values) + values + 4 * rows) / (2 * model_values)
    assert result["bytes_over_bf16"] == pytest.approx(expected, abs=5e-5)  # the JSON rounds to 4 places
    all_values = sum(t.numel() for m in build_meta(big) for t in m.state_dict().values())
    values, rows = decoder_projection_counts(big)
    assert result["bagel_7b_gb"] == pytest.approx((2 * (all_values - values) + values + 4 * rows) / 1e9, abs=5e-5)
    # Two questions and one prompt per category, 3 time points: far from the full benchmark, yet 8 bits must keep
    # nearly every choice and image (full runs: 0.99 and 0.9998); a broken scale or layer would not.
    assert result["top1_agreement"] >= 0.9 and 0.99 <= result["pixel_cosine"] <= 1
    assert 0.9 <= result["latent_cosine"] < 1 and result["load_peak_over_bytes"] > 0  # < 1: the two models differ
