"""The autoencoder has the released checkpoint's layout, rejects bad shapes (parity: test_reference.py) and
trains with scale equivariance as its docstring says."""

import json
import warnings

import pytest
import torch
import torch.nn.functional as F
from helpers import FIXTURES, TINY, assert_names
from safetensors.torch import load_file

from bagel_mini.config import VAEConfig, config_from_dict
from bagel_mini.vae import AutoEncoder

RELEASED = VAEConfig(ch=128, ch_mult=[1, 2, 4, 4], num_res_blocks=2, z_channels=16)


@pytest.fixture(scope="module")
def tiny_autoencoder() -> AutoEncoder:
    params = json.loads((TINY / "bagel_config.json").read_text())["ae_params"]
    autoencoder = AutoEncoder(config_from_dict(VAEConfig, params, "ae_params"))
    autoencoder.load_state_dict(load_file(TINY / "ae.safetensors"), strict=True)
    return autoencoder.eval()


@pytest.fixture(scope="module")
def cases() -> dict[str, torch.Tensor]:
    return load_file(TINY / "cases.safetensors")


@torch.no_grad()
def test_encode_draws_its_own_noise_when_none_is_given(tiny_autoencoder, cases):
    image = cases["vae.in.image"]
    torch.manual_seed(0)
    first = tiny_autoencoder.encode(image)
    torch.manual_seed(0)
    noise = torch.randn_like(cases["vae.in.posterior_eps"])
    assert torch.equal(first, tiny_autoencoder.encode(image, noise=noise))  # the same arithmetic on the same noise
    assert not torch.allclose(first, tiny_autoencoder.encode_mean(image))  # a sample, not the mean


def test_released_layout_has_exact_keys_shapes_and_parameter_count():
    released = json.loads((FIXTURES / "bagel-7b-mot-keys.json").read_text())
    with torch.device("meta"):
        autoencoder = AutoEncoder(RELEASED)
    ours = {key: list(tensor.shape) for key, tensor in autoencoder.state_dict().items()}
    theirs = {entry["key"]: entry["shape"] for entry in released["ae_safetensors"]}
    assert ours == theirs
    total = sum(parameter.numel() for parameter in autoencoder.parameters())
    assert total == released["param_counts"]["vae_total (ae.safetensors)"]
    assert sum(p.numel() for p in autoencoder.encoder.parameters()) == released["param_counts"]["vae_encoder"]
    assert sum(p.numel() for p in autoencoder.decoder.parameters()) == released["param_counts"]["vae_decoder"]


@pytest.mark.parametrize(
    "shape, allowed",
    [
        ((1, 3, 60, 48), "multiples of 8"),  # height not a multiple of 8
        ((1, 3, 64, 50), "multiples of 8"),
        ((3, 64, 48), "(batch, 3, height, width)"),  # no batch dimension
        ((1, 4, 64, 48), "(batch, 3, height, width)"),  # RGBA
    ],
)
def test_bad_pixel_shape_is_rejected_naming_the_shape(tiny_autoencoder, shape, allowed):
    with pytest.raises(ValueError) as error:
        tiny_autoencoder.encode(torch.zeros(shape))
    assert_names(error, tuple(shape), allowed)


def test_bad_latent_or_noise_shape_is_rejected(tiny_autoencoder):
    with pytest.raises(ValueError) as error:
        tiny_autoencoder.decode(torch.zeros(1, 4, 8, 6))
    assert_names(error, (1, 4, 8, 6), "(batch, 16, height, width)")  # z_channels 16
    with pytest.raises(ValueError) as error:
        tiny_autoencoder.encode(torch.zeros(1, 3, 64, 48), noise=torch.zeros(1, 16, 4, 4))
    assert_names(error, "noise", (1, 16, 4, 4), (1, 16, 8, 6))  # the noise's shape and the posterior's


def test_scale_equivariance_adds_the_weighted_mse_of_the_shrunk_latent_decoded_against_the_shrunk_image():
    """The loss of `train.py --stage vae --scale-equivariance W`: the reconstruction MSE plus W times the MSE of
    the posterior sample shrunk 2x or 4x (drawn from the generator), decoded, against the image shrunk alike."""
    torch.manual_seed(0)
    config = VAEConfig(ch=32, ch_mult=[1, 2], num_res_blocks=1, downsample=2, z_channels=4)
    autoencoder = AutoEncoder(config).double()
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64) * 2 - 1  # latents of 8x8: 4x4 or 2x2 once shrunk

    def shrink(t, f):
        return F.interpolate(t, size=(t.shape[-2] // f, t.shape[-1] // f), mode="bilinear", antialias=True)

    factors = set()
    for seed in range(8):
        plain_mse, plain_kl = autoencoder.training_losses(x, torch.Generator().manual_seed(seed))
        mse, kl = autoencoder.training_losses(x, torch.Generator().manual_seed(seed), scale_equivariance=0.5)
        assert torch.equal(kl, plain_kl)
        mean, logvar = autoencoder.encoder(x).chunk(2, dim=1)
        z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=torch.Generator().manual_seed(seed))
        by_factor = {f: plain_mse + 0.5 * F.mse_loss(autoencoder.decoder(shrink(z, f)), shrink(x, f)) for f in (2, 4)}
        drawn = [f for f, expected in by_factor.items() if torch.equal(mse, expected)]
        assert len(drawn) == 1, (mse, by_factor)
        factors.update(drawn)
    assert factors == {2, 4}  # both factors are drawn


def test_the_shrunk_reconstruction_takes_any_latent_size():
    """A side the factor does not divide is rounded down (a 40-pixel image: latents of 20, at 4x 5; a 2-pixel
    latent at 4x: 1), and the image is compared at the decoded size: no shape error, no broadcasting."""
    torch.manual_seed(0)
    autoencoder = AutoEncoder(VAEConfig(ch=32, ch_mult=[1, 2], num_res_blocks=1, downsample=2, z_channels=4))
    decoded_from = []
    autoencoder.decoder.register_forward_pre_hook(lambda module, inputs: decoded_from.append(inputs[0].shape[-2:]))
    for side, shrunk in ((40, 5), (4, 1)):
        x = torch.rand(1, 3, side, side) * 2 - 1
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # F.mse_loss warns when it broadcasts two sizes
            mse = autoencoder.shrunk_reconstruction_mse(torch.randn(1, 4, side // 2, side // 2), x, 4)
        assert decoded_from[-1] == (shrunk, shrunk) and mse.ndim == 0 and torch.isfinite(mse)
