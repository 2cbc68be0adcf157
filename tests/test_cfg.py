"""Guidance combines velocities by formula; each test restates the formula in float64, where the two orders of
the same arithmetic agree to about 1e-15 on these velocities of size about 1 (guided ones up to about 10)."""

import pytest
import torch
from helpers import assert_names

from bagel_mini.cfg import RENORM_TYPES, ConditionDropout, combine, guidance_active

generator = torch.Generator().manual_seed(0)
V, V_NO_TEXT, V_NO_IMAGE = torch.randn(3, 5, 8, generator=generator, dtype=torch.float64)
EXACT = {"rtol": 0, "atol": 1e-12}  # the same formula, up to float64 rounding
ROUNDING = 1 + 1e-12  # a rescaled norm may exceed its cap by float64 rounding only


@pytest.mark.parametrize("renorm", ["global", "channel", "text_channel"])
def test_scale_one_is_no_guidance(renorm):
    # The rescale factor |v| / (|v| + 1e-8) is 1 - 1e-8 / |v|, and every norm here is above 1: within 1e-8.
    assert V.norm(dim=-1).min() > 1
    torch.testing.assert_close(combine(V, V_NO_TEXT, V_NO_IMAGE, 1.0, 1.0, renorm), V, rtol=1e-8, atol=1e-12)


def test_text_guidance_without_renorm_limit_is_the_cfg_line():
    # renorm_min = 1 clamps the rescale factor to exactly 1: no rescaling.
    guided = combine(V, V_NO_TEXT, None, 4.0, 1.0, "global", renorm_min=1.0)
    torch.testing.assert_close(guided, V_NO_TEXT + 4.0 * (V - V_NO_TEXT), **EXACT)


def test_image_guidance_follows_text_guidance():
    guided = combine(V, V_NO_TEXT, V_NO_IMAGE, 4.0, 2.0, "channel", renorm_min=1.0)
    v_text = V_NO_TEXT + 4.0 * (V - V_NO_TEXT)
    torch.testing.assert_close(guided, V_NO_IMAGE + 2.0 * (v_text - V_NO_IMAGE), **EXACT)


def test_global_renorm_caps_the_whole_velocity_at_the_conditional_norm():
    guided = combine(V, V_NO_TEXT, V_NO_IMAGE, 4.0, 2.0, "global")
    assert guided.norm() <= V.norm() * ROUNDING
    raw = V_NO_IMAGE + 2.0 * (V_NO_TEXT + 4.0 * (V - V_NO_TEXT) - V_NO_IMAGE)
    torch.testing.assert_close(guided, raw * (V.norm() / (raw.norm() + 1e-8)).clamp(max=1.0), **EXACT)


def test_channel_renorm_caps_each_token():
    guided = combine(V, V_NO_TEXT, None, 4.0, 1.0, "channel")
    assert (guided.norm(dim=-1) <= V.norm(dim=-1) * ROUNDING).all()


def test_text_channel_renorm_happens_before_image_guidance():
    guided = combine(V, V_NO_TEXT, V_NO_IMAGE, 4.0, 2.0, "text_channel")
    v_text = V_NO_TEXT + 4.0 * (V - V_NO_TEXT)
    v_text = v_text * (V.norm(dim=-1, keepdim=True) / (v_text.norm(dim=-1, keepdim=True) + 1e-8)).clamp(max=1.0)
    torch.testing.assert_close(guided, V_NO_IMAGE + 2.0 * (v_text - V_NO_IMAGE), **EXACT)


def test_bad_guidance_settings_are_named():
    with pytest.raises(ValueError) as error:
        combine(V, V_NO_TEXT, V_NO_IMAGE, 4.0, 2.0, "spectral")
    assert_names(error, "spectral", *RENORM_TYPES)
    with pytest.raises(ValueError) as error:
        combine(V, V_NO_TEXT, None, 4.0, 2.0)
    assert_names(error, "image_scale", "v_no_image")
    with pytest.raises(ValueError) as error:
        ConditionDropout(vit=1.5)
    assert_names(error, "vit", "1.5", "[0, 1]")


def test_guidance_interval_is_open_below_and_closed_above():
    assert guidance_active(1.0, (0.4, 1.0)) and guidance_active(0.5, (0.4, 1.0))
    assert not guidance_active(0.4, (0.4, 1.0)) and not guidance_active(0.2, (0.4, 1.0))
