"""Parity with the official BAGEL code: every case of a reference directory.

The directory defaults to tests/fixtures/official_tiny; set BAGEL_REFERENCE_DIR to check another one of
the same format (a checkpoint in the released layout, plus cases.json and cases.safetensors). Every
setting is read from cases.json, so another directory with other seeds, sizes or configs runs as is.
"""

import json
import os
import random
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from helpers import TINY
from safetensors.torch import load_file

from bagel_mini.attention import dense_mask, flex_block_mask
from bagel_mini.cfg import NO_DROPOUT
from bagel_mini.checkpoint import load_checkpoint
from bagel_mini.images import grid_position_ids, patchify
from bagel_mini.inference import ImageSettings, Inferencer
from bagel_mini.navit import PackConfig, Text, VaeImage, VitImage, image_block, pack

REFERENCE = Path(os.environ.get("BAGEL_REFERENCE_DIR", TINY))
CASES = json.loads((REFERENCE / "cases.json").read_text())
TOLERANCE = {"rtol": 1e-4, "atol": 1e-4}  # the fixtures' suggested tolerance; integers must be equal


@pytest.fixture(scope="module")
def tensors() -> dict[str, torch.Tensor]:
    return load_file(REFERENCE / "cases.safetensors")


@pytest.fixture(scope="module")
def checkpoint():
    return load_checkpoint(REFERENCE)


def special(name: str) -> int:
    return CASES["special_token_ids"][name]


def inputs_named(case: dict, prefix: str) -> list[str]:
    return [name for name in case["inputs"] if name.startswith(prefix)]


def vit_tokens(model, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """ViT patches, their position ids and the patch count of one (3, H, W) image."""
    patch = model.config.vit.patch_size
    rows, cols = image.shape[1] // patch, image.shape[2] // patch
    positions = grid_position_ids(rows, cols, model.config.vit_max_num_patch_per_side, model.config.interpolate_pos)
    return patchify(image, patch), positions, [rows * cols]


def vit_block(model, image: torch.Tensor) -> torch.Tensor:
    """LLM input rows of a ViT image block, laid out by navit.image_block."""
    tokens = model.embed_vit(*vit_tokens(model, image))
    block = image_block(len(tokens), special("start_of_image"), special("end_of_image"), position=0)
    markers = model.llm.embed_tokens(torch.tensor([block.ids[0], block.ids[-1]]))
    return torch.cat([markers[:1], tokens, markers[1:]])


def run_vit(case, tensors, model, autoencoder):
    images = [tensors[name] for name in inputs_named(case, "vit.in.image")]
    per_image = [vit_tokens(model, image) for image in images]
    patches = torch.cat([patches for patches, _, _ in per_image])
    positions = torch.cat([positions for _, positions, _ in per_image])
    lengths = [length for _, _, (length,) in per_image]
    assert torch.equal(patches, tensors["vit.prep.packed_vit_tokens"])
    assert torch.equal(positions, tensors["vit.prep.packed_vit_position_ids"])
    assert lengths == tensors["vit.prep.vit_token_seqlens"].tolist()

    encoded = model.vit(patches, positions, lengths)
    torch.testing.assert_close(encoded, tensors["vit.out.vit_encoder_output"], **TOLERANCE)
    torch.testing.assert_close(model.connector(encoded), tensors["vit.out.connector_output"], **TOLERANCE)
    rows = model.embed_vit(patches, positions, lengths)
    torch.testing.assert_close(rows, tensors["vit.out.llm_input_vit_tokens"], **TOLERANCE)
    sequence = torch.cat([vit_block(model, image) for image in images])
    torch.testing.assert_close(sequence, tensors["vit.out.llm_input_sequence"], **TOLERANCE)


def run_vae(case, tensors, model, autoencoder):
    image = tensors["vae.in.image"]
    torch.testing.assert_close(autoencoder.encoder(image), tensors["vae.out.encoder_moments"], **TOLERANCE)
    torch.testing.assert_close(autoencoder.encode_mean(image), tensors["vae.out.encode_posterior_mean"], **TOLERANCE)
    sample = autoencoder.encode(image, noise=tensors["vae.in.posterior_eps"])
    torch.testing.assert_close(sample, tensors["vae.out.encode_sample"], **TOLERANCE)
    decoded = autoencoder.decode(tensors["vae.in.decode_latent"])
    torch.testing.assert_close(decoded, tensors["vae.out.decode"], **TOLERANCE)


def run_attention_mask(case, tensors, model, autoencoder):
    settings = case["settings"]
    samples = [list(zip(settings["split_lens"], settings["attn_modes"]))]
    assert torch.equal(dense_mask(samples), tensors["attention_mask.out.allowed"].bool())
    expected_flex = tensors["attention_mask.out.flex_mask_mod_allowed"].bool()
    q, kv = torch.meshgrid(torch.arange(len(expected_flex)), torch.arange(len(expected_flex)), indexing="ij")
    flex = flex_block_mask(samples).mask_mod(torch.tensor(0), torch.tensor(0), q, kv)  # the rule FlexAttention gets
    assert torch.equal(flex, expected_flex)


def inferencer(model, autoencoder) -> Inferencer:
    return Inferencer(model, autoencoder, tokenizer=None, special_ids=CASES["special_token_ids"])


def run_generate_text(case, tensors, model, autoencoder):
    """An image context (ViT only), a prompt context, then greedy decoding through the KV cache."""
    engine = inferencer(model, autoencoder)
    context = engine.add_vit_image(engine.empty_context(), tensors["generate_text.in.image"])
    context = engine.add_text(context, case["settings"]["prompt_ids"])
    results = case["results_json"]
    assert [context.length] == results["kv_lens_after_prefill"] and [context.position] == results["ropes_after_prefill"]
    for layer in range(len(model.llm.layers)):
        expected = f"generate_text.out.kv_cache_after_prefill.layer{layer}"
        torch.testing.assert_close(context.cache.keys[layer], tensors[f"{expected}.key"], **TOLERANCE)
        torch.testing.assert_close(context.cache.values[layer], tensors[f"{expected}.value"], **TOLERANCE)
    generated = engine.generate_text(context, max_length=case["settings"]["max_length"])
    torch.testing.assert_close(generated.logits, tensors["generate_text.out.step_logits"], **TOLERANCE)
    assert [special("bos_token_id"), *generated.ids] == tensors["generate_text.out.token_ids"].tolist()


def run_generate_image(case, tensors, model, autoencoder):
    """Text-to-image or editing: build the three contexts as the official inferencer, then denoise."""
    name, settings = case["name"], case["settings"]
    engine = inferencer(model, autoencoder)
    empty = engine.empty_context()
    context = empty
    if f"{name}.in.image_vae" in tensors:  # editing: the picture as clean VAE tokens, then as ViT tokens
        context = engine.add_vae_image(
            context, tensors[f"{name}.in.image_vae"], noise=tensors[f"{name}.in.vae_posterior_eps"]
        )
        context = engine.add_vit_image(context, tensors[f"{name}.in.image_vit"])
    no_text = context
    context = engine.add_text(context, settings["prompt_ids"])
    no_image = engine.add_text(empty, settings["prompt_ids"])
    layouts = case["results_json"]["contexts"]
    for ours, theirs in ((context, "gen"), (no_text, "cfg_text"), (no_image, "cfg_img")):
        assert ([ours.length], [ours.position]) == (layouts[theirs]["kv_lens"], layouts[theirs]["ropes"]), theirs

    image_settings = ImageSettings(
        num_timesteps=settings["num_timesteps"],
        timestep_shift=settings["timestep_shift"],
        cfg_text_scale=settings["cfg_text_scale"],
        cfg_img_scale=settings["cfg_img_scale"],
        cfg_interval=tuple(settings["cfg_interval"]),
        cfg_renorm_type=settings["cfg_renorm_type"],
        cfg_renorm_min=settings["cfg_renorm_min"],
    )
    size = case["results_json"]["image_shape_HW"]
    image = engine.generate_image(
        context, size, no_text, no_image, image_settings, noise=tensors[f"{name}.in.init_noise"], trace=True
    )

    def per_step(key: str) -> torch.Tensor:
        return torch.stack([step[key] for step in image.trace])

    torch.testing.assert_close(
        torch.tensor([step["t"] for step in image.trace]), tensors[f"{name}.out.timesteps"], **TOLERANCE
    )
    torch.testing.assert_close(per_step("x"), tensors[f"{name}.out.x_t_per_step"], **TOLERANCE)
    torch.testing.assert_close(per_step("v_cond"), tensors[f"{name}.out.v_cond_per_step"], **TOLERANCE)
    torch.testing.assert_close(per_step("v_no_text"), tensors[f"{name}.out.v_cfg_text_uncond_per_step"], **TOLERANCE)
    if f"{name}.out.v_cfg_img_uncond_per_step" in tensors:
        torch.testing.assert_close(
            per_step("v_no_image"), tensors[f"{name}.out.v_cfg_img_uncond_per_step"], **TOLERANCE
        )
    torch.testing.assert_close(per_step("v"), tensors[f"{name}.out.v_t_per_step"], **TOLERANCE)
    torch.testing.assert_close(image.latent[None], tensors[f"{name}.out.final_latent_unpatchified"], **TOLERANCE)
    torch.testing.assert_close(image.pixels[None], tensors[f"{name}.out.decoded_image"], **TOLERANCE)


class ReplayRandom(random.Random):
    """A random source whose normal draws are given values: the raw timesteps the official run drew."""

    def __init__(self, normals: list[float]):
        super().__init__(0)
        self.normals = list(normals)

    def gauss(self, mu=0.0, sigma=1.0):
        return self.normals.pop(0)


def samples_from_plan(case: dict, tensors) -> list:
    """The case's samples as our items; images are consumed in plan order."""
    name, samples = case["name"], []
    for index, spec in enumerate(case["settings"]["samples"]):
        texts = iter(spec["text_ids"])
        images = iter(tensors[f"{name}.in.sample{index}.image{j}"] for j in range(len(spec["images"])))
        items = []
        for step in spec["plan"]:
            if step["special_token_loss"]:
                pytest.fail(f"{name}: special_token_loss is not supported by this runner")
            loss, droppable = bool(step["loss"]), bool(step["enable_cfg"])
            if step["type"] == "text":
                items.append(Text(next(texts), loss=loss, droppable=droppable))
            elif step["type"] == "vit_image":
                items.append(VitImage(next(images), droppable=droppable))
            elif step["type"] == "vae_image":
                items.append(VaeImage(next(images), loss=loss, droppable=droppable))
            else:
                pytest.fail(f"{name}: unknown plan item type {step['type']!r}")
        samples.append(items)
    return samples


def run_train_forward(case, tensors, model, autoencoder):
    """Pack the case's samples, encode its images, and compare packing, inputs, hidden states and losses."""
    name, settings = case["name"], case["settings"]

    def expected(key: str) -> torch.Tensor:
        return tensors[f"{name}.{key}"]

    config = PackConfig.for_model(model.config, CASES["special_token_ids"], dropout=NO_DROPOUT)
    samples = samples_from_plan(case, tensors)
    batch = pack(samples, config, ReplayRandom(settings["raw_timesteps"]))
    square = pack(samples, replace(config, ce_weighting="square"), ReplayRandom(settings["raw_timesteps"]))

    packed = settings["packed"]
    assert batch.sequence_length == packed["sequence_length"]
    assert batch.sample_lengths == packed["sample_lens"]
    assert [list(map(list, zip(*splits))) for splits in batch.splits] == [
        [s["split_lens"], s["attn_modes"]] for s in packed["split_lens_and_attn_modes_per_sample"]
    ]
    assert batch.latent_grids == [tuple(grid) for grid in packed["patchified_vae_latent_shapes"]]
    for ours, theirs in [
        (batch.text_ids, "packed_text_ids"),
        (batch.text_indexes, "packed_text_indexes"),
        (batch.position_ids, "packed_position_ids"),
        (batch.ce_indexes, "ce_loss_indexes"),
        (batch.label_ids, "packed_label_ids"),
        (batch.mse_indexes, "mse_loss_indexes"),
        (batch.vae_indexes, "packed_vae_token_indexes"),
        (batch.latent_position_ids, "packed_latent_position_ids"),
        (batch.vit_indexes, "packed_vit_token_indexes"),
        (batch.vit_position_ids, "packed_vit_position_ids"),
        (batch.vit_patches, "packed_vit_tokens"),
        (batch.raw_timesteps, "packed_timesteps"),
        (torch.tensor(batch.vit_lengths), "vit_token_seqlens"),
    ]:
        assert torch.equal(ours, expected(f"in.packed.{theirs}").to(ours.dtype)), theirs
    torch.testing.assert_close(square.ce_weights, expected("in.packed.ce_loss_weights"), **TOLERANCE)
    for index, splits in enumerate(batch.splits):
        official = expected(f"in.packed.nested_attention_mask.{index}") == 0  # 0.0 = may attend, -inf = blocked
        assert torch.equal(dense_mask([splits]), official)

    # The official loop encodes the images zero-padded to the largest size of the batch; crop each latent.
    padded_latent = autoencoder.encode(expected("in.packed.padded_images"), noise=expected("in.vae_posterior_eps"))
    torch.testing.assert_close(padded_latent, expected("in.padded_latent"), **TOLERANCE)
    p = model.config.latent_patch_size
    latents = [expected("in.padded_latent")[i, :, : h * p, : w * p] for i, (h, w) in enumerate(batch.latent_grids)]

    previous_shift = model.config.timestep_shift
    model.config.timestep_shift = settings["timestep_shift"]
    try:
        out = model(batch, latents, noise=expected("in.flow_noise"))
    finally:
        model.config.timestep_shift = previous_shift
    torch.testing.assert_close(out["sequence"], expected("out.llm_input_sequence"), **TOLERANCE)
    torch.testing.assert_close(out["timesteps"], expected("out.effective_timesteps"), **TOLERANCE)
    torch.testing.assert_close(out["hidden"], expected("out.last_hidden_state"), **TOLERANCE)
    torch.testing.assert_close(out["ce"], expected("out.ce"), **TOLERANCE)
    torch.testing.assert_close(out["mse"], expected("out.mse"), **TOLERANCE)
    torch.testing.assert_close(out["ce_loss"].reshape(1), expected("out.ce_loss_mean"), **TOLERANCE)
    torch.testing.assert_close(out["mse_loss"].reshape(1), expected("out.mse_loss_mean"), **TOLERANCE)


RUNNERS = {
    "vit": run_vit,
    "vae": run_vae,
    "attention_mask": run_attention_mask,
    "generate_text": run_generate_text,
    "train_forward": run_train_forward,
    "train_forward_interleave": run_train_forward,
    "generate_image": run_generate_image,
    "edit_image": run_generate_image,
}


@pytest.mark.parametrize("name", sorted(CASES["cases"]))
@torch.no_grad()
def test_official_case(name, tensors, checkpoint):
    if name not in RUNNERS:
        pytest.fail(f"{REFERENCE / 'cases.json'}: unknown case {name!r}; known: {sorted(RUNNERS)}")
    RUNNERS[name]({"name": name, **CASES["cases"][name]}, tensors, *checkpoint)
