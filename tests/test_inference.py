import numpy as np
import pytest
import torch
from helpers import TINY, assert_names
from PIL import Image

from bagel_mini.checkpoint import load_checkpoint
from bagel_mini.inference import ImageSettings, Inferencer
from bagel_mini.tokenizer import BagelTokenizer

FAST = ImageSettings(num_timesteps=4, cfg_interval=(0.0, 1.0))


@pytest.fixture(scope="module")
def engine() -> Inferencer:
    model, autoencoder = load_checkpoint(TINY)
    tokenizer = BagelTokenizer.from_dir(TINY)
    return Inferencer(model, autoencoder, tokenizer, tokenizer.special_ids)


def picture(seed: int = 0) -> torch.Tensor:
    return torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def edit_contexts(engine: Inferencer):
    """The three contexts of an edit: full, without the instruction, without the image."""
    with_image = engine.add_vit_image(
        engine.add_vae_image(engine.empty_context(), picture(), torch.zeros(1, 16, 4, 4)), picture(1)[:, :28, :28]
    )
    return (
        engine.add_text(with_image, "make it blue"),
        with_image,
        engine.add_text(engine.empty_context(), "make it blue"),
    )


def test_the_same_seed_gives_the_same_image(engine):
    context = engine.add_text(engine.empty_context(), "a red circle")
    first = engine.generate_image(context, (32, 32), settings=FAST, seed=7)
    second = engine.generate_image(context, (32, 32), settings=FAST, seed=7)
    other = engine.generate_image(context, (32, 32), settings=FAST, seed=8)
    assert torch.equal(first.pixels, second.pixels) and not torch.equal(first.pixels, other.pixels)


def test_cfg_scale_one_equals_no_cfg(engine):
    context, no_text, no_image = edit_contexts(engine)
    noise = torch.randn(4, 64, generator=torch.Generator().manual_seed(0))
    settings = ImageSettings(num_timesteps=4, cfg_text_scale=1.0, cfg_img_scale=1.0)
    guided = engine.generate_image(context, (32, 32), no_text, no_image, settings, noise=noise)
    plain = engine.generate_image(context, (32, 32), None, None, settings, noise=noise)
    assert torch.equal(guided.latent, plain.latent)


def velocity_alone(engine: Inferencer, context, x: torch.Tensor, t: float) -> torch.Tensor:
    """The velocity of one branch, run on its own against its own cache."""
    model = engine.model
    tokens = model.embed_vae(x, torch.full((4,), t), torch.tensor([0, 1, 16, 17]))
    markers = model.llm.embed_tokens(torch.tensor([engine.special["start_of_image"], engine.special["end_of_image"]]))
    block = torch.cat([markers[:1], tokens, markers[1:]])  # [start_of_image, 4 latent tokens, end_of_image]
    is_gen = torch.tensor([False, True, True, True, True, False])
    hidden = model.llm.query(block, torch.full((6,), context.position), is_gen, context.cache)
    return model.llm2vae(hidden[1:-1])


@torch.no_grad()
def test_batched_cfg_branches_equal_three_separate_runs(engine):
    context, no_text, no_image = edit_contexts(engine)
    settings = ImageSettings(num_timesteps=3, cfg_text_scale=4.0, cfg_img_scale=2.0, cfg_interval=(0.0, 1.0))
    image = engine.generate_image(context, (32, 32), no_text, no_image, settings, seed=0, trace=True)
    for step in image.trace:
        for key, branch in (("v_cond", context), ("v_no_text", no_text), ("v_no_image", no_image)):
            torch.testing.assert_close(
                step[key], velocity_alone(engine, branch, step["x"], step["t"]), rtol=1e-5, atol=1e-5
            )


def test_image_guidance_still_applies_when_the_text_scale_is_one(engine):
    context, no_text, no_image = edit_contexts(engine)
    settings = ImageSettings(num_timesteps=3, cfg_text_scale=1.0, cfg_img_scale=2.0, cfg_interval=(0.0, 1.0))
    image = engine.generate_image(context, (32, 32), no_text, no_image, settings, seed=0, trace=True)
    first = image.trace[0]
    assert first["v_no_image"] is not None and not torch.equal(first["v"], first["v_cond"])


def test_text_to_image_has_no_image_guidance_branch(engine):
    context = engine.add_text(engine.empty_context(), "a red circle")
    settings = ImageSettings(num_timesteps=3, cfg_img_scale=2.0, cfg_interval=(0.0, 1.0))
    image = engine.generate_image(context, (32, 32), engine.empty_context(), context, settings, seed=0, trace=True)
    assert all(step["v_no_image"] is None for step in image.trace)


def test_a_finished_image_joins_the_context_and_generation_continues(engine):
    context = engine.add_text(engine.empty_context(), "a red circle")
    image = engine.generate_image(context, (32, 32), settings=FAST, seed=0)
    joined = engine.join_image(context, image)
    assert joined.images == 2 and joined.position == context.position + 2
    vit_side = engine.vit_sizes[1] // 14  # the 32 px image is enlarged to the ViT's minimum size (224 px here)
    assert joined.length == context.length + (4 + 2) + (vit_side**2 + 2)  # its VAE block, then its ViT block
    # The question now reads the image: its answer differs from the same question without it.
    with_image = engine.generate_text(engine.add_text(joined, "what colour?"), max_length=5)
    without = engine.generate_text(engine.add_text(context, "what colour?"), max_length=5)
    assert not torch.allclose(with_image.logits[0], without.logits[0])
    follow_up = engine.generate_image(engine.add_text(joined, "now a blue one"), (32, 32), settings=FAST, seed=1)
    assert follow_up.pixels.shape == (3, 32, 32)


def test_interleave_answers_draws_edits_and_thinks(engine):
    photo = Image.new("RGB", (40, 30), (200, 30, 30))
    (answer,) = engine.interleave([photo, "what colour is it?"], understanding=True, max_think_tokens=6)
    assert isinstance(answer, str)
    (drawn,) = engine.interleave(["a red circle"], image_size=(32, 48), settings=FAST, seed=0)
    assert drawn.size == (48, 32)
    (edited,) = engine.interleave([photo, "make it blue"], settings=FAST, seed=0)
    assert edited.size == (176, 128)  # the input resized for the VAE keeps its aspect ratio (min side 128 here)
    thought, image = engine.interleave(
        ["a red circle"], think=True, max_think_tokens=6, image_size=(32, 32), settings=FAST, seed=0
    )
    assert isinstance(thought, str) and image.size == (32, 32)


def test_text_to_image_draws_from_its_seed_as_generate_image_does(engine):
    """With no input image the seed's generator draws the starting noise first, as generate_image's `seed`."""
    (drawn,) = engine.interleave(["a red circle"], image_size=(32, 32), settings=FAST, seed=5)
    empty = engine.empty_context()
    prompt = engine.add_text(empty, "a red circle")
    direct = engine.generate_image(prompt, (32, 32), empty, prompt, FAST, seed=5).to_pil()
    assert np.array_equal(np.asarray(drawn), np.asarray(direct))


def test_an_edit_depends_on_its_seed_alone_not_on_what_ran_before(engine):
    """The source image's latent is a posterior sample: its noise must come from the seed, not from torch's
    global generator, whose state depends on whatever ran earlier in the process."""
    photo = Image.new("RGB", (32, 32), (200, 30, 30))
    (first,) = engine.interleave([photo, "make it blue"], settings=FAST, seed=3)
    torch.randn(1000)  # anything else that draws from the global generator
    (again,) = engine.interleave([photo, "make it blue"], settings=FAST, seed=3)
    (other,) = engine.interleave([photo, "make it blue"], settings=FAST, seed=4)
    assert np.array_equal(np.asarray(first), np.asarray(again))
    assert not np.array_equal(np.asarray(first), np.asarray(other))


def test_an_edit_can_see_its_source_image_as_vae_tokens_alone(engine, monkeypatch):
    photo, added = Image.new("RGB", (32, 32), (200, 30, 30)), []
    add_image = engine.add_image
    monkeypatch.setattr(
        engine, "add_image", lambda *a, **k: added.append({"vae": k["vae"], "vit": k["vit"]}) or add_image(*a, **k)
    )
    engine.interleave([photo, "make it blue"], settings=FAST, seed=0)
    engine.interleave([photo, "make it blue"], settings=FAST, seed=0, edit_vit=False)
    engine.interleave([photo, "what is it?"], understanding=True, max_think_tokens=2, edit_vit=False)
    assert added == [{"vae": True, "vit": True}, {"vae": True, "vit": False}, {"vae": False, "vit": True}]


def test_bad_requests_are_named(engine):
    context = engine.empty_context()
    with pytest.raises(ValueError) as error:
        engine.add_text(context, "  ")
    assert_names(error, "text", "empty")
    with pytest.raises(ValueError) as error:
        engine.interleave([])
    assert_names(error, "items", "empty")
    with pytest.raises(ValueError) as error:
        engine.generate_image(context, (30, 32), settings=FAST)
    assert_names(error, "(30, 32)", "16")  # the size asked for and the multiple it must be
    with pytest.raises(ValueError) as error:
        ImageSettings(cfg_renorm_type="local")
    assert_names(error, "cfg_renorm_type", "local", "global", "channel", "text_channel")
