import pytest
import torch

from bagel_mini.cfg import ConditionDropout, combine, guidance_active

generator = torch.Generator().manual_seed(0)
V, V_NO_TEXT, V_NO_IMAGE = torch.randn(3, 5, 8, generator=generator)


@pytest.mark.parametrize("renorm", ["global", "channel", "text_channel"])
def test_scale_one_is_no_guidance(renorm):
    torch.testing.assert_close(combine(V, V_NO_TEXT, V_NO_IMAGE, 1.0, 1.0, renorm), V)


def test_text_guidance_without_renorm_limit_is_the_cfg_line():
    # renorm_min = 1 clamps the rescale factor to exactly 1: no rescaling.
    guided = combine(V, V_NO_TEXT, None, 4.0, 1.0, "global", renorm_min=1.0)
    torch.testing.assert_close(guided, V_NO_TEXT + 4.0 * (V - V_NO_TEXT))


def test_image_guidance_follows_text_guidance():
    guided = combine(V, V_NO_TEXT, V_NO_IMAGE, 4.0, 2.0, "channel", renorm_min=1.0)
    v_text = V_NO_TEXT + 4.0 * (V - V_NO_TEXT)
    torch.testing.assert_close(guided, V_NO_IMAGE + 2.0 * (v_text - V_NO_IMAGE))


def test_global_renorm_caps_the_whole_velocity_at_the_conditional_norm():
    guided = combine(V, V_NO_TEXT, V_NO_IMAGE, 4.0, 2.0, "global")
    assert guided.norm() <= V.norm() * (1 + 1e-6)
    raw = V_NO_IMAGE + 2.0 * (V_NO_TEXT + 4.0 * (V - V_NO_TEXT) - V_NO_IMAGE)
    torch.testing.assert_close(guided, raw * (V.norm() / (raw.norm() + 1e-8)).clamp(max=1.0))


def test_channel_renorm_caps_each_token():
    guided = combine(V, V_NO_TEXT, None, 4.0, 1.0, "channel")
    assert (guided.norm(dim=-1) <= V.norm(dim=-1) * (1 + 1e-6)).all()


def test_text_channel_renorm_happens_before_image_guidance():
    guided = combine(V, V_NO_TEXT, V_NO_IMAGE, 4.0, 2.0, "text_channel")
    v_text = V_NO_TEXT + 4.0 * (V - V_NO_TEXT)
    v_text = v_text * (V.norm(dim=-1, keepdim=True) / (v_text.norm(dim=-1, keepdim=True) + 1e-8)).clamp(max=1.0)
    torch.testing.assert_close(guided, V_NO_IMAGE + 2.0 * (v_text - V_NO_IMAGE))


def test_bad_guidance_settings_are_named():
    with pytest.raises(ValueError, match="unknown renorm type 'spectral'"):
        combine(V, V_NO_TEXT, V_NO_IMAGE, 4.0, 2.0, "spectral")
    with pytest.raises(ValueError, match="needs the velocity without image context"):
        combine(V, V_NO_TEXT, None, 4.0, 2.0)
    with pytest.raises(ValueError, match=r"dropout probability vit=1.5 is not in \[0, 1\]"):
        ConditionDropout(vit=1.5)


def test_guidance_interval_is_open_below_and_closed_above():
    assert guidance_active(1.0, (0.4, 1.0)) and guidance_active(0.5, (0.4, 1.0))
    assert not guidance_active(0.4, (0.4, 1.0)) and not guidance_active(0.2, (0.4, 1.0))
