"""The FLUX autoencoder: pixels <-> the latents BAGEL generates in (paper section 2.1, "the pre-trained
VAE model from FLUX").

BAGEL keeps the autoencoder frozen. An image (B, 3, H, W) in [-1, 1] becomes a latent
(B, z_channels, H/8, W/8); the LLM then works on 2x2 patches of it. Encoding samples the diagonal
Gaussian posterior (the official pipeline samples both in training and for context images) and maps
the sample to `scale * (z - shift)`, so that latents have roughly unit variance; decoding undoes that
first. The module and attribute names follow the released `ae.safetensors`, so `state_dict()` keys
match it one to one.

Encoder: conv_in, then per resolution level `num_res_blocks` resnet blocks and (except the last
level) a stride-2 downsample, then mid = resnet, attention, resnet, then norm, swish, conv_out to
mean and log-variance. The decoder mirrors it with one more resnet block per level; `decoder.up[i]`
belongs to resolution level i, so the list runs in reverse.
"""

import random

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bagel_mini.config import VAEConfig


def swish(x: Tensor) -> Tensor:
    return x * torch.sigmoid(x)


def group_norm(channels: int) -> nn.GroupNorm:
    """Every norm of the autoencoder: 32 groups, eps 1e-6."""
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6)


class ResnetBlock(nn.Module):
    """x + conv2(swish(norm2(conv1(swish(norm1(x)))))), with a 1x1 conv on x when the width changes."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm2 = group_norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        same = in_channels == out_channels
        self.nin_shortcut = nn.Identity() if same else nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(swish(self.norm2(h)))
        return self.nin_shortcut(x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all h*w positions, added back to the input."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = group_norm(channels)
        self.q = nn.Conv2d(channels, channels, kernel_size=1)
        self.k = nn.Conv2d(channels, channels, kernel_size=1)
        self.v = nn.Conv2d(channels, channels, kernel_size=1)
        self.proj_out = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        batch, channels, height, width = x.shape
        h = self.norm(x)
        # (B, C, H, W) -> (B, 1, H*W, C): one head whose tokens are the pixels
        q, k, v = (proj(h).flatten(2).transpose(1, 2).unsqueeze(1) for proj in (self.q, self.k, self.v))
        h = F.scaled_dot_product_attention(q, k, v)  # scale 1/sqrt(C)
        h = h.squeeze(1).transpose(1, 2).reshape(batch, channels, height, width)
        return x + self.proj_out(h)


class Downsample(nn.Module):
    """Halve the resolution: pad one zero row/column at the bottom/right, then a 3x3 conv with stride 2."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Double the resolution: nearest-neighbour x2, then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """The resnet blocks of one resolution level, then a downsample (encoder) or upsample (decoder) if any."""

    def __init__(
        self, in_channels: int, out_channels: int, num_blocks: int, downsample: bool = False, upsample: bool = False
    ):
        super().__init__()
        widths = [in_channels] + [out_channels] * num_blocks
        self.block = nn.ModuleList(ResnetBlock(widths[j], widths[j + 1]) for j in range(num_blocks))
        if downsample:
            self.downsample = Downsample(out_channels)
        if upsample:
            self.upsample = Upsample(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        for block in self.block:
            x = block(x)
        if hasattr(self, "downsample"):
            x = self.downsample(x)
        if hasattr(self, "upsample"):
            x = self.upsample(x)
        return x


class MidBlock(nn.Module):
    """At the lowest resolution: resnet, attention, resnet."""

    def __init__(self, channels: int):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Encoder(nn.Module):
    """(B, in_channels, H, W) pixels -> (B, 2 * z_channels, H/f, W/f) moments, f = downsample: mean, log-variance."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = config
        widths = [config.ch * m for m in [1, *config.ch_mult]]  # widths[i] enters level i
        last = len(config.ch_mult) - 1
        self.conv_in = nn.Conv2d(config.in_channels, config.ch, kernel_size=3, padding=1)
        self.down = nn.ModuleList(
            Level(widths[i], widths[i + 1], config.num_res_blocks, downsample=i < last)
            for i in range(len(config.ch_mult))
        )
        self.mid = MidBlock(widths[-1])
        self.norm_out = group_norm(widths[-1])
        self.conv_out = nn.Conv2d(widths[-1], 2 * config.z_channels, kernel_size=3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        check_shape(x, self.config.in_channels, self.config.downsample, "pixels")
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        h = self.mid(h)
        return self.conv_out(swish(self.norm_out(h)))


class Decoder(nn.Module):
    """(B, z_channels, h, w) unscaled latent -> (B, out_ch, f*h, f*w) pixels (f = downsample; not clamped)."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = config
        widths = [config.ch * m for m in config.ch_mult]  # width of level i
        self.conv_in = nn.Conv2d(config.z_channels, widths[-1], kernel_size=3, padding=1)
        self.mid = MidBlock(widths[-1])
        incoming = [*widths[1:], widths[-1]]  # up[i] reads the output of up[i + 1]; the last reads mid's
        self.up = nn.ModuleList(
            Level(incoming[i], widths[i], config.num_res_blocks + 1, upsample=i > 0) for i in range(len(widths))
        )
        self.norm_out = group_norm(widths[0])
        self.conv_out = nn.Conv2d(widths[0], config.out_ch, kernel_size=3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        check_shape(z, self.config.z_channels, 1, "latent")
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(swish(self.norm_out(h)))


class AutoEncoder(nn.Module):
    """Frozen in BAGEL: `encode` gives the latents the LLM generates in, `decode` turns them back into pixels."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)

    def encode(self, x: Tensor, noise: Tensor | None = None) -> Tensor:
        """Pixels (B, 3, H, W) in [-1, 1] -> scaled posterior sample (B, z_channels, H/f, W/f), f = downsample."""
        return self.scale(self.sample_posterior(*self.encoder(x).chunk(2, dim=1), noise))

    @torch.no_grad()
    def encode_each(self, images: list[Tensor], generator: torch.Generator) -> list[Tensor]:
        """`encode` for images of different sizes, (3, H, W) each -> latents in the same order.

        Images of one size are encoded together. The official training loop zero-pads a batch's images to
        the largest and crops the latents, which changes latents near the right and bottom border of
        smaller images; here each image is encoded at its own size. The posterior noise comes from
        `generator` (a CPU generator), so a seeded run draws the same on every device.
        """
        latents, by_size = [None] * len(images), {}
        for index, image in enumerate(images):
            by_size.setdefault(tuple(image.shape), []).append(index)
        device = self.encoder.conv_in.weight.device
        for (_, height, width), indexes in by_size.items():
            noise = self.posterior_noise(len(indexes), height, width, generator)
            encoded = self.encode(torch.stack([images[i] for i in indexes]).to(device), noise.to(device))
            for index, latent in zip(indexes, encoded):
                latents[index] = latent
        return latents

    def posterior_noise(self, count: int, height: int, width: int, generator: torch.Generator) -> Tensor:
        """Standard normal noise for `encode` of `count` images of height x width pixels, drawn on the CPU from
        `generator`, so that a seed draws the same on every device: (count, z_channels, H/f, W/f), f = downsample."""
        factor = self.config.downsample
        return torch.randn(count, self.config.z_channels, height // factor, width // factor, generator=generator)

    @staticmethod
    def sample_posterior(mean: Tensor, logvar: Tensor, noise: Tensor | None = None) -> Tensor:
        """z = mean + exp(logvar / 2) * noise, unscaled; `noise` is standard normal, drawn here if not given."""
        if noise is None:
            noise = torch.randn_like(mean)
        elif noise.shape != mean.shape:
            raise ValueError(f"noise has shape {tuple(noise.shape)}, the posterior has {tuple(mean.shape)}")
        return mean + torch.exp(0.5 * logvar) * noise

    def training_losses(
        self, x: Tensor, generator: torch.Generator, scale_equivariance: float = 0.0
    ) -> tuple[Tensor, Tensor]:
        """Pixel MSE of the reconstruction of a posterior sample, and the KL of the posterior to N(0, 1).

        The FLUX autoencoder also used perceptual and adversarial losses; for flat synthetic shapes these
        two are enough. Scale and shift play no part: they are measured after training. The posterior's
        noise comes from `generator` (a CPU generator), so a seeded run resumes exactly.

        `scale_equivariance` > 0 adds that weight times `shrunk_reconstruction_mse` to the MSE (not part of
        FLUX's training). Its factor, 2 or 4, comes from `generator` after the noise, so a run without it
        draws the same noise as before it existed.
        """
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        noise = torch.randn(mean.shape, generator=generator).to(mean.device)
        z = self.sample_posterior(mean, logvar, noise)
        reconstruction = self.decoder(z)
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).mean()
        mse = F.mse_loss(reconstruction, x)
        if scale_equivariance:
            # through a Python RNG seeded from `generator`: the draw that made the card's autoencoder
            factor = random.Random(int(torch.randint(2**31, (1,), generator=generator))).choice([2, 4])
            mse = mse + scale_equivariance * self.shrunk_reconstruction_mse(z, x, factor)
        return mse, kl

    def shrunk_reconstruction_mse(self, z: Tensor, x: Tensor, factor: int) -> Tensor:
        """Decode the latent z shrunk `factor` times (bilinear) and compare with the image x shrunk to the decoded
        size: scale equivariance (Skorokhodov et al. 2025, "Improving the diffusability of autoencoders").

        An autoencoder trained for reconstruction alone puts much of a latent's variation between neighbouring
        tokens (the embedded autoencoder's 8x8 latents of 64-pixel scenes: 39% of their energy at the higher
        half of spatial frequencies, the scenes shrunk to 8x8 pixels 16%). A latent that must still decode once
        shrunk is smoother, like the image (20%), and a Bagel learns to draw in it much faster (the toy model's
        card, rung a, sixth round). A side that `factor` does not divide is rounded down (at least 1).
        """
        size = (max(1, z.shape[-2] // factor), max(1, z.shape[-1] // factor))
        decoded = self.decoder(F.interpolate(z, size=size, mode="bilinear", antialias=True))
        return F.mse_loss(decoded, F.interpolate(x, size=decoded.shape[-2:], mode="bilinear", antialias=True))

    def encode_mean(self, x: Tensor) -> Tensor:
        """Like `encode` but deterministic: the scaled posterior mean."""
        mean, _ = self.encoder(x).chunk(2, dim=1)
        return self.scale(mean)

    def decode(self, latent: Tensor) -> Tensor:
        """Scaled latent (B, z_channels, h, w), as `encode` returns it -> pixels (B, 3, f*h, f*w), unclamped."""
        return self.decoder(latent / self.config.scale_factor + self.config.shift_factor)

    @torch.no_grad()
    def measure_latent_statistics(self, x: Tensor) -> None:
        """Set shift_factor and scale_factor so that the scaled posterior means of images `x` have zero mean
        and unit variance, as BAGEL's flow expects of latents."""
        mean, _ = self.encoder(x).chunk(2, dim=1)
        self.config.shift_factor = mean.mean().item()
        self.config.scale_factor = 1.0 / (mean - mean.mean()).std().item()

    def scale(self, z: Tensor) -> Tensor:
        return self.config.scale_factor * (z - self.config.shift_factor)


def check_shape(x: Tensor, channels: int, multiple: int, name: str) -> None:
    """Raise a ValueError naming the shape unless x is (B, channels, H, W) with H, W multiples of `multiple`."""
    if x.ndim != 4 or x.shape[1] != channels:
        raise ValueError(f"{name} must have shape (batch, {channels}, height, width), got {tuple(x.shape)}")
    height, width = x.shape[2:]
    if height % multiple or width % multiple or height == 0 or width == 0:
        raise ValueError(f"{name} height and width must be positive multiples of {multiple}, got {tuple(x.shape)}")
