"""Image loading, colour modes, the resize rule, pixel normalisation, patch order and position ids."""

import numpy as np
import pytest
import torch
from helpers import assert_names
from PIL import Image

from bagel_mini.config import preset
from bagel_mini.images import (
    encoder_size,
    grid_position_ids,
    load_image,
    patchify,
    resize_for_encoder,
    to_rgb,
    to_tensor,
    unpatchify,
    vae_resize,
    vit_resize,
)

# The released pipeline's settings, official ImageTransform(max_size, min_size, stride) of the inferencer.
VIT, VAE = (980, 224, 14), (1024, 512, 16)


def test_resize_settings_follow_the_official_rule_at_every_preset():
    assert (vit_resize(preset("bagel-7b-mot")), vae_resize(preset("bagel-7b-mot"))) == (VIT, VAE)
    # Smaller presets: the long side fills their position tables; the ViT minimum 224 is capped there.
    assert (vit_resize(preset("small")), vae_resize(preset("small"))) == ((448, 224, 14), (512, 256, 16))
    assert (vit_resize(preset("toy")), vae_resize(preset("toy"))) == ((64, 64, 8), (64, 32, 8))


def pixels(image: Image.Image) -> list:
    return np.asarray(image).tolist()


# ---------------------------------------------------------------------------------------------
# Colour modes


def test_rgba_is_composited_onto_white():
    image = Image.new("RGBA", (3, 1))
    image.putdata([(255, 0, 0, 0), (0, 0, 255, 255), (0, 0, 0, 51)])  # transparent, opaque, 20% black
    assert pixels(to_rgb(image)) == [[[255, 255, 255], [0, 0, 255], [204, 204, 204]]]


def test_gray_with_alpha_is_composited_onto_white():
    image = Image.new("LA", (2, 1))
    image.putdata([(0, 0), (10, 255)])
    assert pixels(to_rgb(image)) == [[[255, 255, 255], [10, 10, 10]]]


def test_palette_with_transparent_index_becomes_white_there():
    image = Image.new("P", (2, 1))
    image.putpalette([0, 0, 0, 0, 200, 0])  # index 0 black, index 1 green
    image.putdata([0, 1])
    image.info["transparency"] = 0
    assert pixels(to_rgb(image)) == [[[255, 255, 255], [0, 200, 0]]]


def test_palette_without_transparency_keeps_its_colours():
    image = Image.new("P", (2, 1))
    image.putpalette([0, 0, 0, 0, 200, 0])
    image.putdata([0, 1])
    assert pixels(to_rgb(image)) == [[[0, 0, 0], [0, 200, 0]]]


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I"])
def test_sixteen_bit_gray_is_scaled_not_clipped(mode):
    image = Image.new(mode, (4, 1))
    image.putdata([0, 65535, 257 * 100, 1000])  # 1000 / 257 = 3.89
    assert pixels(to_rgb(image)) == [[[0, 0, 0], [255, 255, 255], [100, 100, 100], [4, 4, 4]]]


def test_sixteen_bit_png_file_is_scaled(tmp_path):
    path = tmp_path / "depth16.png"
    Image.fromarray(np.array([[0, 65535, 257 * 100]], dtype=np.uint16)).save(path)
    assert pixels(load_image(path)) == [[[0, 0, 0], [255, 255, 255], [100, 100, 100]]]


def test_cmyk_converts():
    image = Image.new("CMYK", (3, 1))
    image.putdata([(0, 0, 0, 0), (0, 255, 255, 0), (0, 0, 0, 255)])  # white paper, red, black ink
    assert pixels(to_rgb(image)) == [[[255, 255, 255], [255, 0, 0], [0, 0, 0]]]


def test_grayscale_and_one_bit_images_become_gray_rgb():
    gray = Image.new("L", (2, 1))
    gray.putdata([0, 77])
    assert pixels(to_rgb(gray)) == [[[0, 0, 0], [77, 77, 77]]]
    bits = Image.new("1", (2, 1))
    bits.putdata([0, 1])
    assert pixels(to_rgb(bits)) == [[[0, 0, 0], [255, 255, 255]]]


def test_to_rgb_returns_a_new_image():
    image = Image.new("RGB", (2, 2), (1, 2, 3))
    converted = to_rgb(image)
    assert converted is not image and converted.mode == "RGB"


# ---------------------------------------------------------------------------------------------
# Loading files


def test_load_image_reads_a_png_as_rgb(tmp_path):
    path = tmp_path / "ok.png"
    Image.new("RGBA", (5, 4), (10, 20, 30, 255)).save(path)
    image = load_image(path)
    assert image.mode == "RGB" and image.size == (5, 4)
    assert pixels(image)[0][0] == [10, 20, 30]


def random_image_bytes(tmp_path, name: str, format: str) -> bytes:
    path = tmp_path / f"whole_{name}"
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path, format=format)
    return path.read_bytes()


@pytest.mark.parametrize("name, format", [("cut.png", "PNG"), ("cut.jpg", "JPEG")])
def test_truncated_file_is_rejected_naming_it(tmp_path, name, format):
    data = random_image_bytes(tmp_path, name, format)
    path = tmp_path / name
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError) as error:
        load_image(path)
    assert_names(error, name, "truncated")  # the file and the cause


def test_text_file_named_png_is_rejected_naming_it(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not a picture\n")
    with pytest.raises(ValueError) as error:
        load_image(path)
    assert_names(error, "notes.png", "not an image")


def test_empty_file_is_rejected_naming_it(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(ValueError) as error:
        load_image(path)
    assert_names(error, "empty.jpg")


def test_missing_file_is_reported_by_name(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        load_image(tmp_path / "absent.png")
    assert_names(error, "absent.png")


# ---------------------------------------------------------------------------------------------
# The resize rule


@pytest.mark.parametrize("settings", [VIT, VAE, (64, 32, 8)], ids=["vit", "vae", "toy"])
@pytest.mark.parametrize(
    "width, height",
    [
        (640, 480),
        (480, 640),
        (4000, 3000),
        (100, 100),
        (300, 2000),
        (2000, 300),
        (5, 3),
        (1, 5000),
        (5000, 1),
        (980, 224),
        (1023, 1025),
        (513, 10000),
    ],
)
def test_resize_rule_holds(settings, width, height):
    max_size, min_size, stride = settings
    new_width, new_height = encoder_size(width, height, max_size, min_size, stride)
    assert new_width % stride == 0 and new_height % stride == 0
    assert min(new_width, new_height) >= stride
    assert max(new_width, new_height) <= max_size
    if max(width, height) / min(width, height) * min_size <= max_size:  # both limits can hold
        assert min(new_width, new_height) >= min_size
    if min(new_width, new_height) > stride:  # one scale for both sides, up to rounding by half a stride each
        assert abs(new_width / width - new_height / height) <= stride / 2 * (1 / width + 1 / height)


@pytest.mark.parametrize(
    "width, height, settings, expected",
    [
        (640, 480, VAE, (688, 512)),  # short side up to 512; 640 * 512 / 480 = 682.7 -> 688
        (4000, 3000, VAE, (1024, 768)),  # long side down to 1024
        (100, 100, VIT, (224, 224)),
        (5, 3, VIT, (378, 224)),  # smaller than one patch: up to the minimum; 5 * 224 / 3 = 373.3 -> 378
        (5, 3, (28, 14, 14), (28, 14)),
        (1, 5000, VAE, (16, 1024)),  # the long-side limit wins; the short side keeps one stride
        (5000, 1, VIT, (980, 14)),
    ],
)
def test_resize_examples(width, height, settings, expected):
    assert encoder_size(width, height, *settings) == expected


def test_resize_for_encoder_produces_that_size_even_for_a_one_pixel_strip():
    strip = Image.new("RGB", (1, 5000), (200, 10, 10))
    resized = resize_for_encoder(strip, *VAE)
    assert resized.size == (16, 1024)
    assert np.abs(np.asarray(resized).astype(int) - [200, 10, 10]).max() <= 1  # a flat colour stays flat


@pytest.mark.parametrize(
    "arguments, facts",
    [
        ((10, 10, 1000, 512, 16), ("max_size", "1000")),
        ((10, 10, 512, 600, 16), ("min_size", "600")),
        ((0, 5, *VAE), ("0x5",)),
    ],
    ids=["max-not-a-multiple", "min-above-max", "no-pixels"],
)
def test_bad_resize_settings_and_empty_images_are_rejected(arguments, facts):
    with pytest.raises(ValueError) as error:
        encoder_size(*arguments)
    assert all(fact in str(error.value) for fact in facts)


# ---------------------------------------------------------------------------------------------
# Pixels to tensors


def test_to_tensor_normalises_to_minus_one_one():
    image = Image.new("RGB", (2, 1))
    image.putdata([(0, 255, 51), (102, 153, 204)])
    x = to_tensor(image)
    assert x.shape == (3, 1, 2) and x.dtype == torch.float32
    expected = torch.tensor([[[-1.0, -0.2]], [[1.0, 0.2]], [[-0.6, 0.6]]])  # u / 127.5 - 1
    torch.testing.assert_close(x, expected, rtol=0, atol=1e-6)


def test_patchify_orders_tokens_by_patch_row_and_values_by_row_column_channel():
    x = torch.arange(2 * 4 * 6).reshape(2, 4, 6)  # x[c, r, q] = 24 c + 6 r + q: a 2x3 grid of 2x2 patches
    tokens = patchify(x, 2)
    assert tokens.shape == (6, 8)
    # values listed by hand: (row 0, col 0, ch 0), (row 0, col 0, ch 1), (row 0, col 1, ch 0), ...
    assert tokens[0].tolist() == [0, 24, 1, 25, 6, 30, 7, 31]  # patch row 0, patch column 0
    assert tokens[1].tolist() == [2, 26, 3, 27, 8, 32, 9, 33]  # patch row 0, patch column 1
    assert tokens[3].tolist() == [12, 36, 13, 37, 18, 42, 19, 43]  # patch row 1, patch column 0
    assert tokens[5].tolist() == [16, 40, 17, 41, 22, 46, 23, 47]  # patch row 1, patch column 2


def test_unpatchify_inverts_patchify():
    x = torch.randn(16, 6, 10)
    torch.testing.assert_close(unpatchify(patchify(x, 2), 3, 5, 2, 16), x, rtol=0, atol=0)
    tokens = torch.randn(12, 14 * 14 * 3)
    torch.testing.assert_close(patchify(unpatchify(tokens, 3, 4, 14, 3), 14), tokens, rtol=0, atol=0)


def test_patch_shape_errors_name_the_shapes():
    with pytest.raises(ValueError) as error:
        patchify(torch.zeros(3, 28, 30), 14)
    assert_names(error, "14", "(3, 28, 30)")
    with pytest.raises(ValueError) as error:
        unpatchify(torch.zeros(5, 64), 2, 3, 2, 16)
    assert_names(error, "(6, 64)", "(5, 64)")  # expected and given


def test_grid_position_ids_are_row_times_table_side_plus_column():
    ids = grid_position_ids(2, 3, 70)
    assert ids.tolist() == [0, 1, 2, 70, 71, 72]
    assert ids.dtype == torch.int64
    assert grid_position_ids(4, 4, 4).tolist() == list(range(16))


def test_grid_larger_than_the_position_table_is_rejected():
    with pytest.raises(ValueError) as error:
        grid_position_ids(3, 71, 70)
    assert_names(error, "3x71", "70")  # the grid and the table's side
    with pytest.raises(ValueError) as error:
        grid_position_ids(71, 3, 70)
    assert_names(error, "71x3", "70")


@pytest.mark.parametrize("side", [4, 16, 70])
def test_interpolated_position_ids_bucket_each_patch_by_its_fraction_of_the_image(side):
    """Against the definition: the fraction r / h of the image falls in table bucket b when b / side <= r / h."""
    for h in range(1, 2 * side + 2):
        fractions = torch.arange(h, dtype=torch.float64) / h
        boundaries = torch.arange(1, side, dtype=torch.float64) / side
        expected_rows = torch.bucketize(fractions, boundaries, right=True)
        ids = grid_position_ids(h, 1, side, interpolate=True)
        assert torch.equal(ids, expected_rows * side), h
    assert grid_position_ids(2, 3, 6, interpolate=True).tolist() == [0, 2, 4, 18, 20, 22]
