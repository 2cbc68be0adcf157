import random

import pytest
import torch
from helpers import TINY, assert_names

from bagel_mini.attention import dense_mask
from bagel_mini.cfg import NO_DROPOUT, ConditionDropout
from bagel_mini.checkpoint import load_checkpoint
from bagel_mini.diffusion_forcing import frame_items, random_group_sizes
from bagel_mini.navit import PackConfig, Text, VaeImage, VitImage, pack, pack_by_budget, sample_length

BOS, EOS, START, END = 300, 301, 302, 303
CONFIG = PackConfig(
    bos=BOS,
    eos=EOS,
    start_of_image=START,
    end_of_image=END,
    vit_patch_size=14,
    vit_max_patches_per_side=16,
    pixels_per_latent_token=16,
    max_latent_size=16,
    dropout=NO_DROPOUT,
)


def pixels(height: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(3, height, width, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_a_hand_written_sample_follows_the_packing_rules():
    # text(2 ids, loss) | ViT 14x28 (1x2 patches) | noised VAE 32x16 (2x1 tokens) | the same image clean | text(1)
    image = pixels(32, 16)
    sample = [Text([5, 6], loss=True), VitImage(pixels(14, 28)), VaeImage(image, loss=True), VaeImage(image), Text([7])]
    batch = pack([sample], CONFIG, random.Random(0))
    assert batch.sequence_length == 4 + 4 + 4 + 4 + 3
    assert batch.splits == [[(4, "causal"), (4, "full"), (4, "noise"), (4, "full"), (3, "causal")]]
    # Text counts up; an image block shares one position; the noised image does not advance it.
    assert batch.position_ids.tolist() == [0, 1, 2, 3] + [4] * 4 + [5] * 4 + [5] * 4 + [6, 7, 8]
    assert batch.text_ids.tolist() == [BOS, 5, 6, EOS, START, END, START, END, START, END, BOS, 7, EOS]
    assert batch.text_indexes.tolist() == [0, 1, 2, 3, 4, 7, 8, 11, 12, 15, 16, 17, 18]
    assert batch.ce_indexes.tolist() == [0, 1, 2] and batch.label_ids.tolist() == [5, 6, EOS]
    assert batch.vit_indexes.tolist() == [5, 6] and batch.vit_lengths == [2]
    assert batch.vit_position_ids.tolist() == [0, 1]
    assert batch.vae_indexes.tolist() == [9, 10, 13, 14] and batch.mse_indexes.tolist() == [9, 10]
    assert batch.latent_grids == [(2, 1), (2, 1)] and batch.latent_position_ids.tolist() == [0, 16, 0, 16]
    noised, clean = batch.raw_timesteps[:2], batch.raw_timesteps[2:]
    assert noised[0] == noised[1] and torch.isfinite(noised).all() and torch.isinf(clean).all()
    assert batch.is_gen.nonzero().squeeze(1).tolist() == [9, 10, 13, 14]
    assert sample_length(sample, CONFIG) == batch.sequence_length


@pytest.mark.parametrize(("weighting", "weight"), [("token", 1.0), ("sample", 1 / 4), ("square", 1 / 2)])
def test_ce_weights_reduce_by_token_sample_or_square_root(weighting, weight):
    config = PackConfig(**{**vars(CONFIG), "ce_weighting": weighting})
    batch = pack([[Text([5, 6, 7], loss=True)]], config, random.Random(0))
    assert batch.ce_weights.tolist() == [weight] * 4


def test_cfg_dropout_frequencies_and_position_accounting():
    """Each droppable item is dropped with its probability (within 3 sigma over 10k draws)."""
    dropout = ConditionDropout(text=0.1, vit=0.5, vae=0.1)
    config = PackConfig(**{**vars(CONFIG), "dropout": dropout})
    sample = [
        Text([5], droppable=True),
        VitImage(pixels(14, 14), droppable=True),
        VaeImage(pixels(16, 16), droppable=True),
        Text([6], loss=True),
    ]
    rng, draws = random.Random(0), 10_000
    dropped = {"text": 0, "vit": 0, "vae": 0}
    for _ in range(draws):
        batch = pack([sample], config, rng)
        kept_text_ids = batch.text_ids.tolist()
        dropped["text"] += kept_text_ids.count(BOS) == 1
        dropped["vit"] += len(batch.vit_lengths) == 0
        dropped["vae"] += len(batch.latent_grids) == 0
        # Images keep their position even when dropped: the answer always starts at 3 + 1 + 1 or 0 + 1 + 1.
        answer_start = batch.position_ids[batch.ce_indexes[0]].item()
        assert answer_start == (2 if kept_text_ids.count(BOS) == 1 else 5)
    for kind, probability in (("text", 0.1), ("vit", 0.5), ("vae", 0.1)):
        sigma = (draws * probability * (1 - probability)) ** 0.5
        assert abs(dropped[kind] - draws * probability) < 3 * sigma, (kind, dropped[kind])


def test_a_sample_with_its_conditions_dropped_is_still_a_valid_sequence():
    model, _ = load_checkpoint(TINY)
    config = PackConfig.for_model(
        model.config,
        {"bos_token_id": BOS, "eos_token_id": EOS, "start_of_image": START, "end_of_image": END},
        dropout=ConditionDropout(1.0, 1.0, 1.0),
    )
    sample = [
        Text([5, 9], droppable=True),
        VitImage(pixels(14, 28), droppable=True),
        VaeImage(pixels(32, 32), loss=True),
    ]
    batch = pack([sample], config, random.Random(0))
    assert batch.splits == [[(6, "noise")]] and batch.position_ids.tolist() == [1] * 6  # the ViT block kept its place
    out = model(batch, [torch.randn(16, 4, 4)])
    assert out["ce"].numel() == 0 and out["mse"].shape == (4, 64) and torch.isfinite(out["loss"])


def test_text_only_and_generation_only_batches_work():
    model, _ = load_checkpoint(TINY)
    config = PackConfig.for_model(
        model.config,
        {"bos_token_id": BOS, "eos_token_id": EOS, "start_of_image": START, "end_of_image": END},
        dropout=NO_DROPOUT,
    )
    text_only = model(pack([[Text([5, 6, 7], loss=True)]], config, random.Random(0)), [])
    assert text_only["mse_loss"] == 0 and text_only["ce_loss"] > 0
    assert torch.equal(text_only["loss"], 0.25 * text_only["ce_loss"])
    generation_only = model(
        pack([[VaeImage(pixels(16, 32), loss=True)]], config, random.Random(0)), [torch.randn(16, 2, 4)]
    )
    assert generation_only["ce_loss"] == 0 and generation_only["mse_loss"] > 0
    generation_only["loss"].backward()  # gradients reach the generation expert
    assert model.llm.layers[0].gen["mlp"].down_proj.weight.grad.abs().sum() > 0


def test_bad_samples_are_named():
    with pytest.raises(ValueError) as error:
        pack([[Text([5])], []], CONFIG, random.Random(0))
    assert_names(error, "sample 1", "empty")
    with pytest.raises(ValueError) as error:
        pack([], CONFIG, random.Random(0))
    assert_names(error, "nothing to pack")
    with pytest.raises(ValueError) as error:
        pack([[Text([5]), VaeImage(pixels(30, 16))]], CONFIG, random.Random(0))
    assert_names(error, "sample 0, item 1", "30x16", "16x16")  # where, the size, the cell it must divide into
    big = [[Text([5])], [VaeImage(pixels(256, 256))]]
    with pytest.raises(ValueError) as error:
        list(pack_by_budget(big, CONFIG, max_tokens=100, rng=random.Random(0)))
    assert_names(error, "sample 1", "258", "100")  # the sample, what it needs, the budget


def test_an_empty_sample_in_an_endless_stream_stops_packing_instead_of_hanging():
    endless = iter(lambda: [], None)  # every sample empty: it would never fill a batch
    with pytest.raises(ValueError) as error:
        next(pack_by_budget(endless, CONFIG, max_tokens=100, rng=random.Random(0)))
    assert_names(error, "sample 0", "empty")


def test_packing_by_budget_fills_each_sequence_without_exceeding_it():
    samples = [[Text(list(range(n)))] for n in (8, 3, 5, 9, 1)]  # lengths 10, 5, 7, 11, 3
    batches = list(pack_by_budget(samples, CONFIG, max_tokens=16, rng=random.Random(0)))
    assert [batch.sample_lengths for batch in batches] == [[10, 5], [7], [11, 3]]


def test_diffusion_forcing_three_frames_in_two_groups():
    frames = [pixels(16, 16, seed=i) for i in range(3)]
    sample = [Text([5]), *frame_items(frames, group_sizes=[1, 2])]
    batch = pack([sample], CONFIG, random.Random(0))
    # Frame A alone, then B and C as one group: one split each group, every frame visible to later ones.
    assert batch.splits == [[(3, "causal"), (3, "full"), (6, "full")]]
    timesteps = batch.raw_timesteps.tolist()  # one latent token per frame
    assert timesteps[1] == timesteps[2] != timesteps[0]
    assert batch.mse_indexes.tolist() == [4, 7, 10]
    assert batch.position_ids.tolist() == [0, 1, 2] + [3] * 3 + [4] * 3 + [5] * 3  # frame_delta 1 per frame
    mask = dense_mask(batch.splits)
    a, b, c = 4, 7, 10
    assert mask[b, a] and mask[c, a]  # later frames condition on the noised earlier one
    assert mask[b, c] and mask[c, b]  # inside a group: full attention
    assert not mask[a, b] and not mask[a, c]  # never the future


def test_random_group_sizes_cover_the_frames():
    rng = random.Random(0)
    for _ in range(100):
        sizes = random_group_sizes(4, max_group=2, rng=rng)
        assert sum(sizes) == 4 and all(1 <= size <= 2 for size in sizes)
