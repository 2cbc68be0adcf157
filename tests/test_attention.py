import pytest
import torch
from helpers import THREE_SAMPLES, assert_names

from bagel_mini.attention import (
    MODES,
    allowed,
    attend,
    context_mask,
    dense_mask,
    draw_mask,
    flex_block_mask,
    in_order,
    sample_mask,
    token_table,
)


def test_packed_samples_never_see_each_other():
    first, second = [(3, "causal"), (4, "full")], [(2, "noise"), (3, "causal")]
    mask = dense_mask([first, second])
    assert not mask[:7, 7:].any() and not mask[7:, :7].any()
    assert torch.equal(mask[:7, :7], dense_mask([first]))
    assert torch.equal(mask[7:, 7:], dense_mask([second]))


def test_flex_attention_matches_dense_attention():
    samples = THREE_SAMPLES
    length = sum(size for splits in samples for size, _ in splits)
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(length, 4, 16, generator=generator)
    k, v = torch.randn(2, length, 2, 16, generator=generator)
    dense = attend(q, k, v, dense_mask(samples, length))
    flex = attend(q, k, v, flex_block_mask(samples, length))
    # float32 (FlexAttention on a CPU has no float64): on outputs up to about 3 each kernel is within 4e-7 of
    # float64; a wrong mask entry moves them by about 0.5.
    torch.testing.assert_close(flex, dense, rtol=0, atol=1e-5)


def test_per_sample_attention_matches_dense_attention_forward_and_backward():
    """Samples of 1 to 40 tokens (lengths 1, 12, 8, 30, 40, 19, 33: five buckets, three padded), in float64."""
    samples = [
        [(1, "causal")],
        [(3, "causal"), (5, "full"), (4, "causal")],
        [(2, "causal"), (6, "noise")],
        [(30, "causal")],
        [(4, "causal"), (9, "full"), (16, "noise"), (11, "causal")],
        [(2, "causal"), (7, "full"), (3, "causal"), (7, "noise")],
        [(20, "causal"), (13, "full")],
    ]
    length = sum(size for splits in samples for size, _ in splits)
    masks = {"dense": dense_mask(samples, length), "per sample": sample_mask(samples, length)}
    assert len(masks["per sample"].buckets) == 5
    generator = torch.Generator().manual_seed(0)
    inputs = [torch.randn(length, heads, 8, generator=generator, dtype=torch.float64) for heads in (4, 2, 2)]
    weights = torch.randn(length, 32, generator=generator, dtype=torch.float64)
    results = {}
    for name, mask in masks.items():
        q, k, v = (x.clone().requires_grad_() for x in inputs)
        out = attend(q, k, v, mask)
        (out * weights).sum().backward()
        results[name] = [out, q.grad, k.grad, v.grad]
    for per_sample, dense in zip(results["per sample"], results["dense"]):
        torch.testing.assert_close(per_sample, dense, rtol=0, atol=1e-12)


def test_a_mask_in_another_order_gives_the_same_attention_in_that_order():
    """The decoder sorts its tokens by expert (mot.Route) and takes the mask with them: attention over the
    sorted tokens must equal the attention in sequence order, sorted. Dense and per sample in float64, with a
    cache of 5 keys for the dense mask; FlexAttention in float32 (its tolerance as above)."""
    samples = THREE_SAMPLES
    length = sum(size for splits in samples for size, _ in splits)
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(length, generator=generator)
    q = torch.randn(length, 4, 8, generator=generator, dtype=torch.float64)
    k, v = torch.randn(2, length + 5, 2, 8, generator=generator, dtype=torch.float64)
    with_cache = torch.cat([torch.ones(length, 5, dtype=torch.bool), dense_mask(samples, length)], dim=1)
    keys, values = (torch.cat([t[:5], t[5:][order]]) for t in (k, v))  # the new keys sorted, the cache as it is
    expected = attend(q, k, v, with_cache)[order]
    out = attend(q[order], keys, values, in_order(with_cache, order, 5))
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    new_k, new_v = k[5:], v[5:]
    expected = attend(q, new_k, new_v, dense_mask(samples, length))[order]
    for mask in (dense_mask(samples, length), sample_mask(samples, length)):
        out = attend(q[order], new_k[order], new_v[order], in_order(mask, order))
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)  # float64: only the sums' order differs
    q, new_k, new_v, expected = q.float(), new_k.float(), new_v.float(), expected.float()
    flex = attend(q[order], new_k[order], new_v[order], in_order(flex_block_mask(samples, length), order))
    torch.testing.assert_close(flex, expected, rtol=0, atol=1e-5)


def test_context_mask_is_causal_only_inside_the_new_block():
    mask = context_mask(3, 2, causal=True)
    expected = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(mask, expected)
    assert context_mask(3, 2, causal=False) is None  # an image block sees everything


def test_rule_matches_written_definition():
    """Every pair of a layout with every mode, against the definition in words."""
    splits = [(2, "causal"), (3, "noise"), (2, "full"), (2, "noise"), (2, "causal")]
    table = token_table([splits])
    split_of = table["split"].tolist()
    modes = [mode for size, mode in splits for _ in range(size)]
    for q in range(len(split_of)):
        for kv in range(len(split_of)):
            same = split_of[q] == split_of[kv]
            expected = (kv <= q or (same and modes[q] != "causal")) and (same or modes[kv] != "noise")
            assert bool(allowed(table, torch.tensor(q), torch.tensor(kv))) == expected, (q, kv)


@pytest.mark.parametrize(
    ("samples", "length", "facts"),
    [
        ([[(3, "causal"), (4, "diagonal")]], None, ["sample 0", "split 1", "'diagonal'", *MODES]),
        ([[(3, "causal"), (0, "full")]], None, ["sample 0", "split 1", "length", "0", "positive"]),
        ([[(3, "causal"), (4, "full")]], 9, ["7", "9"]),  # the lengths' sum and the sequence's length
        ([[]], None, ["sample 0", "no splits"]),
    ],
)
def test_bad_layouts_raise_errors_that_name_the_problem(samples, length, facts):
    with pytest.raises(ValueError) as error:
        dense_mask(samples, length)
    assert_names(error, *facts)


def test_draw_mask_shows_the_mask_itself():
    import matplotlib

    matplotlib.use("Agg")
    splits = [(3, "causal"), (4, "noise"), (2, "causal")]
    mask = dense_mask([splits])
    ax = draw_mask(mask, [splits], title="noise is hidden")
    assert (ax.images[0].get_array() == mask.numpy()).all()
    top_axis = ax.child_axes[0]  # the split modes label the top edge
    assert [label.get_text() for label in top_axis.get_xticklabels()] == ["causal", "noise", "causal"]
