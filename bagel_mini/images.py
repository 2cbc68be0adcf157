"""From an image file to the tensors the two image encoders read (paper section 2.1: the ViT sees images
at their native aspect ratio, NaViT style; the VAE turns them into latents for generation).

Steps: `load_image` (a file -> a decoded PIL image, or a ValueError naming the file) ->
`to_rgb` -> `resize_for_encoder` with the settings of the encoder -> `to_tensor` (pixels in
[-1, 1]). The ViT then cuts the pixels into patches (`patchify`) and gives each patch the position
id of its grid cell (`grid_position_ids`); the generation side cuts VAE latents the same way and
puts generated tokens back with `unpatchify`.
"""

from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from bagel_mini.config import BagelConfig

SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def load_image(path: str | Path) -> Image.Image:
    """Open and fully decode an image file as RGB.

    Decoding happens here (not lazily at first use) so that a damaged file fails now, with its name.
    EXIF orientation is not applied, as in the official pipeline.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image file")
    try:
        with Image.open(path) as image:
            image.load()
            return to_rgb(image)
    except UnidentifiedImageError:
        raise ValueError(f"{path}: not an image file (no image format recognises its contents)") from None
    except Image.DecompressionBombError as error:
        raise ValueError(f"{path}: image too large to decode safely ({error})") from None
    except (OSError, SyntaxError, EOFError) as error:
        raise ValueError(f"{path}: image data is truncated or damaged ({error})") from None
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL image as a new 8-bit RGB image.

    Transparent pixels (RGBA, LA, palette or gray images with a transparent colour) are composited onto
    white, as the official pipeline does for RGBA. 16-bit gray ("I;16*", and "I", which is how Pillow
    has opened 16-bit files) is scaled by 255/65535 instead of being clipped at 255.
    """
    if image.mode in SIXTEEN_BIT_MODES:
        values = np.asarray(image).astype(np.float64)
        image = Image.fromarray(np.clip(np.round(values / 257), 0, 255).astype(np.uint8))
    try:
        if image.has_transparency_data:
            white = Image.new("RGBA", image.size, (255, 255, 255, 255))
            return Image.alpha_composite(white, image.convert("RGBA")).convert("RGB")
        return image.convert("RGB")
    except ValueError as error:
        raise ValueError(f"cannot convert an image of mode {image.mode!r} to RGB ({error})") from None


def encoder_size(width: int, height: int, max_size: int, min_size: int, stride: int) -> tuple[int, int]:
    """The (width, height) an image of this size is resized to for an encoder, as the official pipeline does.

    One scale keeps the aspect ratio: shrink so the long side is at most `max_size` (never enlarge for
    that), then enlarge if needed so the short side is at least `min_size`. Each side is rounded to a
    whole pixel and then to the nearest multiple of `stride` (at least one stride). If the long side now
    exceeds `max_size` (the minimum won for a thin strip), the result is scaled down once more the same
    way, so the long-side limit wins: a 1x5000 strip becomes stride x max_size, and an image smaller
    than one patch becomes at least one patch.
    """
    if stride < 1 or min_size < 1 or min_size > max_size or min_size % stride or max_size % stride:
        raise ValueError(
            f"need 0 < min_size <= max_size, both multiples of stride; got max_size {max_size}, "
            f"min_size {min_size}, stride {stride}"
        )
    if width < 1 or height < 1:
        raise ValueError(f"image has no pixels: size {width}x{height}")

    def scaled(width: int, height: int, scale: float) -> tuple[int, int]:
        return tuple(max(stride, round(round(side * scale) / stride) * stride) for side in (width, height))

    scale = max(min(max_size / max(width, height), 1.0), min_size / min(width, height))
    width, height = scaled(width, height, scale)
    if max(width, height) > max_size:
        width, height = scaled(width, height, max_size / max(width, height))
    return width, height


def vit_resize(config: BagelConfig) -> tuple[int, int, int]:
    """(max_size, min_size, stride) for the ViT, as training and inference both resize.

    The released inferencer's ImageTransform(980, 224, 14): the long side fills the position table
    (70 patches of 14), the short side is at least 224 pixels. Smaller presets keep the rule, capped at
    their table.
    """
    stride = config.vit.patch_size
    max_size = stride * config.vit_max_num_patch_per_side
    return max_size, min(224 // stride * stride, max_size), stride


def vae_resize(config: BagelConfig) -> tuple[int, int, int]:
    """(max_size, min_size, stride) for the autoencoder: the released ImageTransform(1024, 512, 16).

    The long side fills the latent position table (released: 64 tokens of 16 pixels), the short side is at
    least half of that; the stride is one latent token (8x downsampling times the latent patch: 2x2 released,
    1x1 in the toy).
    """
    stride = config.pixels_per_latent_token
    max_size = stride * config.max_latent_size
    return max_size, max(stride, max_size // 2 // stride * stride), stride


def resize_for_encoder(image: Image.Image, max_size: int, min_size: int, stride: int) -> Image.Image:
    """Resize with bicubic filtering (antialiased when shrinking) to `encoder_size`."""
    size = encoder_size(image.width, image.height, max_size, min_size, stride)
    return image.resize(size, Image.Resampling.BICUBIC)


def to_tensor(image: Image.Image) -> Tensor:
    """An image as a (3, H, W) float32 tensor in [-1, 1]: (u / 255 - 0.5) / 0.5 for each 8-bit value u."""
    pixels = torch.from_numpy(np.array(to_rgb(image), dtype=np.uint8))  # (H, W, 3)
    return (pixels.permute(2, 0, 1).float() / 255 - 0.5) / 0.5


def patchify(x: Tensor, p: int) -> Tensor:
    """(C, H, W) -> (h * w, p * p * C) tokens of p x p patches, h = H / p and w = W / p.

    Tokens run over patches row by row; inside a token the values run over the row in the patch, then
    the column, then the channel.
    """
    if x.ndim != 3 or x.shape[1] % p or x.shape[2] % p:
        raise ValueError(f"patchify needs (C, H, W) with H and W multiples of the patch size {p}, got {tuple(x.shape)}")
    return rearrange(x, "c (h p) (w q) -> (h w) (p q c)", p=p, q=p)


def unpatchify(tokens: Tensor, h: int, w: int, p: int, channels: int) -> Tensor:
    """The inverse of `patchify`: (h * w, p * p * channels) tokens -> (channels, h * p, w * p)."""
    if tuple(tokens.shape) != (h * w, p * p * channels):
        raise ValueError(
            f"unpatchify expected tokens of shape ({h * w}, {p * p * channels}) for a {h}x{w} grid "
            f"of {p}x{p}x{channels} patches, got {tuple(tokens.shape)}"
        )
    return rearrange(tokens, "(h w) (p q c) -> c (h p) (w q)", h=h, w=w, p=p, q=p, c=channels)


def grid_position_ids(h: int, w: int, max_per_side: int, interpolate: bool = False) -> Tensor:
    """Position ids (h * w,) of an h x w patch grid, in patchify's order, into a table of
    max_per_side x max_per_side cells: row * max_per_side + col.

    By default (BAGEL's choice) a smaller grid uses the top-left corner of the table. With
    `interpolate` the grid is stretched over the whole table instead: patch row r takes table row
    floor(r * max_per_side / h).
    """
    if interpolate:
        rows = torch.arange(h) * max_per_side // h
        cols = torch.arange(w) * max_per_side // w
    elif not 1 <= h <= max_per_side or not 1 <= w <= max_per_side:
        raise ValueError(f"a {h}x{w} patch grid does not fit the position table of {max_per_side} patches per side")
    else:
        rows, cols = torch.arange(h), torch.arange(w)
    return (rows[:, None] * max_per_side + cols[None, :]).flatten()
