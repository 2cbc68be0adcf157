"""Pretraining the SigLIP ViT with the sigmoid image-text loss (Zhai et al. 2023, "Sigmoid Loss for Language
Image Pre-Training"), and a linear probe that reports what it has learned.

The released BAGEL starts from a pretrained SigLIP2 ViT; the toy model would otherwise start from a random one.
Here the toy ViT learns to see on Shapes World: each scene is paired with its caption, a small text tower
embeds the caption, and the loss asks every (image, text) pair of a batch whether it belongs together. Unlike
CLIP's softmax, each pair is its own binary question, so no row or column normalisation is needed.

`scene_batch` draws scenes, their captions and probe labels; `pack_images` packs images NaViT style, as
navit.py does for the ViT; `linear_probe` on the mean of `vit_tokens` per image measures whether the frozen
ViT tells shapes, colours, counts and backgrounds apart, and on single tokens whether each knows the shape
that covers it. `PatchLoss` adds a per-token objective, as SigLIP2 adds location-aware ones.
"""

import math
import random

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bagel_mini.config import BagelConfig
from bagel_mini.images import grid_position_ids, patchify, to_tensor
from bagel_mini.shapes_world import BACKGROUNDS, COLORS, SHAPES, random_scene, render
from bagel_mini.shapes_world.scene import MAX_OBJECTS, Scene, object_map
from bagel_mini.shapes_world.text import caption
from bagel_mini.siglip import SiglipVisionModel

# The probe labels of `scene_batch` and how many classes each has.
PROBE_CLASSES = {"count": MAX_OBJECTS, "background": len(BACKGROUNDS), "shape": len(SHAPES), "color": len(COLORS)}
# What a patch token names in the patch loss: the shape covering it or none, its colour or the background's.
PATCH_SHAPES = ("none", *SHAPES)
PATCH_COLORS = (*BACKGROUNDS, *COLORS)
MIN_COVER = 0.15  # the share of a patch an object must paint to be what covers it


def mean_per_image(tokens: Tensor, lengths: list[int]) -> Tensor:
    """The mean of each image's tokens: (N, hidden) packed, lengths summing to N -> (B, hidden)."""
    return torch.stack([image.mean(0) for image in tokens.split(lengths)])


class TextTower(nn.Module):
    """A small bidirectional transformer over a caption, mean-pooled to one embedding.

    Pre-norm layers (as SigLIP's towers), with a final LayerNorm because pre-norm leaves the residual stream
    unnormalised. Padding is masked out of attention and of the pooling, so it never changes an embedding.
    """

    def __init__(self, vocab_size: int, width: int, dim: int, layers: int = 1, heads: int = 4, max_length: int = 64):
        super().__init__()
        self.max_length = max_length
        self.token_embed = nn.Embedding(vocab_size, width)
        self.position_embed = nn.Embedding(max_length, width)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                width, heads, 4 * width, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
            )
            for _ in range(layers)
        )
        self.norm = nn.LayerNorm(width)
        self.proj = nn.Linear(width, dim)

    def forward(self, ids: Tensor, lengths: Tensor) -> Tensor:
        """ids: (B, T) right-padded token ids; lengths: (B,) real tokens per row. Returns (B, dim)."""
        T = ids.shape[1]
        if T > self.max_length:
            raise ValueError(f"captions of {T} tokens exceed the text tower's max_length {self.max_length}")
        if bool((lengths < 1).any() or (lengths > T).any()):
            raise ValueError(f"caption lengths must lie in 1..{T} (the padded length), got {lengths.tolist()}")
        real = torch.arange(T, device=ids.device) < lengths[:, None]  # (B, T), True on real tokens
        x = self.token_embed(ids) + self.position_embed(torch.arange(T, device=ids.device))  # (B, T, width)
        for layer in self.layers:
            x = layer(x, src_key_padding_mask=~real)
        x = self.norm(x).masked_fill(~real[..., None], 0.0)
        return self.proj(x.sum(1) / lengths[:, None].to(x.dtype))


class ImageHead(nn.Module):
    """Each packed image's ViT tokens, mean-pooled and projected into the shared embedding space."""

    def __init__(self, vit_hidden: int, dim: int):
        super().__init__()
        self.proj = nn.Linear(vit_hidden, dim)

    def forward(self, tokens: Tensor, lengths: list[int]) -> Tensor:
        """tokens: (N, vit_hidden) from the ViT; lengths: patches per image. Returns (B, dim)."""
        return self.proj(mean_per_image(tokens, lengths))


class PatchLoss(nn.Module):
    """Every patch token names what covers its patch: a shape (or none) and a colour (or the background).

    SigLIP2 adds location-aware losses to the sigmoid loss (LocCa: a decoder captions and grounds regions),
    because a loss on a pooled embedding says little about where things are, and a Bagel reads the ViT token by
    token. The toy's stand-in is this per-token classification: a caption asks the ViT which shapes a scene
    holds, but a 2-layer ViT answers with colours and counts (the probe moves on those, not on shapes); asked
    per patch, it learns shapes.
    """

    def __init__(self, vit_hidden: int):
        super().__init__()
        self.proj = nn.Linear(vit_hidden, len(PATCH_SHAPES) + len(PATCH_COLORS))

    def forward(self, tokens: Tensor, shapes: Tensor, colors: Tensor) -> Tensor:
        """tokens: (N, vit_hidden) packed; shapes, colors: (N,) class indexes from `patch_labels`."""
        logits = self.proj(tokens)
        shape_logits, color_logits = logits.split([len(PATCH_SHAPES), len(PATCH_COLORS)], dim=-1)
        return F.cross_entropy(shape_logits, shapes) + F.cross_entropy(color_logits, colors)


def patch_labels(scene: Scene, image_size: int, patch: int, supersample: int = 4) -> tuple[Tensor, Tensor]:
    """What covers each patch, row by row as `patchify` orders them: (P,) indexes into PATCH_SHAPES and (P,) into
    PATCH_COLORS. A patch belongs to the object that paints the most of it, if at least MIN_COVER of it."""
    side, cell = image_size * supersample, patch * supersample
    painter = np.asarray(object_map(scene, side))  # (side, side): 0 background, i + 1 objects[i]
    rows = side // cell
    cells = painter.reshape(rows, cell, rows, cell).transpose(0, 2, 1, 3).reshape(rows * rows, cell * cell)
    cover = np.stack([(cells == i + 1).mean(1) for i in range(len(scene.objects))], axis=1)  # (P, objects)
    owner, covered = cover.argmax(1), cover.max(1) >= MIN_COVER  # (P,) each patch's object, and whether it counts
    shape_of = np.array([PATCH_SHAPES.index(o.shape) for o in scene.objects])
    color_of = np.array([PATCH_COLORS.index(o.color) for o in scene.objects])
    shapes = np.where(covered, shape_of[owner], PATCH_SHAPES.index("none"))
    colors = np.where(covered, color_of[owner], PATCH_COLORS.index(scene.background))
    return torch.from_numpy(shapes), torch.from_numpy(colors)


class SigmoidLoss(nn.Module):
    """SigLIP's loss: every (image i, text j) pair is a binary question, "do they match?" (yes iff i == j).

    The scale starts at 10 and the bias at -10, as in the paper: a strongly negative bias says "no" to all
    B^2 pairs at first, which is right for all but B of them, so training does not start with a large loss
    from the many negatives.
    """

    def __init__(self):
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        self.bias = nn.Parameter(torch.tensor(-10.0))

    def forward(self, image_emb: Tensor, text_emb: Tensor) -> Tensor:
        """image_emb, text_emb: (B, D), row i of each from the same pair. Returns the scalar loss."""
        x, y = F.normalize(image_emb, dim=-1), F.normalize(text_emb, dim=-1)
        logits = self.log_scale.exp() * x @ y.T + self.bias  # (B, B)
        labels = 2 * torch.eye(len(x), dtype=logits.dtype, device=logits.device) - 1  # +1 matched, -1 not
        return -F.logsigmoid(labels * logits).sum() / len(x)  # the paper divides by B, not B^2


def scene_batch(
    rng: random.Random, count: int, image_size: int, tokenizer, patch: int
) -> tuple[list[Tensor], Tensor, Tensor, dict[str, Tensor]]:
    """`count` random scenes as (images, ids, lengths, labels).

    images: [(3, S, S) in [-1, 1]]; ids: (B, T) captions right-padded with 0 (the text tower masks padding, so
    its value does not matter); lengths: (B,); labels: a (B,) tensor per PROBE_CLASSES key: the number of
    objects - 1, the background, and the first object's shape and colour (indexes into BACKGROUNDS, SHAPES,
    COLORS); and "patch_shape", "patch_color": (B * P,) what covers each patch of each image (`patch_labels`).
    """
    scenes = [random_scene(rng) for _ in range(count)]
    images = [to_tensor(render(scene, image_size)) for scene in scenes]
    captions = [tokenizer.encode(caption(scene)) for scene in scenes]
    lengths = torch.tensor([len(ids) for ids in captions])
    ids = torch.zeros(count, int(lengths.max()), dtype=torch.long)
    for row, caption_ids in zip(ids, captions):
        row[: len(caption_ids)] = torch.tensor(caption_ids)
    labels = {
        "count": torch.tensor([len(scene.objects) - 1 for scene in scenes]),
        "background": torch.tensor([list(BACKGROUNDS).index(scene.background) for scene in scenes]),
        "shape": torch.tensor([SHAPES.index(scene.objects[0].shape) for scene in scenes]),
        "color": torch.tensor([list(COLORS).index(scene.objects[0].color) for scene in scenes]),
    }
    patches = [patch_labels(scene, image_size, patch) for scene in scenes]
    labels["patch_shape"], labels["patch_color"] = (torch.cat(column) for column in zip(*patches))
    return images, ids, lengths, labels


def pack_images(images: list[Tensor], config: BagelConfig) -> tuple[Tensor, Tensor, list[int]]:
    """Images (3, H, W) -> the ViT's inputs, as navit.py packs them: patches (N, p * p * 3), position ids (N,)
    and patches per image."""
    patch = config.vit.patch_size
    patches, position_ids, lengths = [], [], []
    for pixels in images:
        rows, cols = pixels.shape[1] // patch, pixels.shape[2] // patch
        patches.append(patchify(pixels, patch))
        position_ids.append(grid_position_ids(rows, cols, config.vit_max_num_patch_per_side, config.interpolate_pos))
        lengths.append(rows * cols)
    return torch.cat(patches), torch.cat(position_ids), lengths


@torch.no_grad()
def vit_tokens(vit: SiglipVisionModel, images: list[Tensor], config: BagelConfig) -> tuple[Tensor, list[int]]:
    """The frozen ViT's output tokens of packed images, (N, hidden), and the patches per image."""
    parameter = next(vit.parameters())
    patches, position_ids, lengths = pack_images(images, config)
    return vit(patches.to(parameter), position_ids.to(parameter.device), lengths), lengths


def linear_probe(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, classes: int) -> float:
    """Test accuracy of a multinomial logistic regression on frozen features (B, D), labels (B,) in 0..classes-1.

    Full-batch L-BFGS from zero weights in float64, so the result is deterministic. The features are
    standardised with the training statistics, and a small L2 penalty keeps the weights finite on separable data.
    """
    train_x, test_x = train_x.detach().cpu().double(), test_x.detach().cpu().double()
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)  # a constant feature is left at 0, not divided by 0
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    weight = torch.zeros(train_x.shape[1], classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(train_x @ weight + bias, train_y.cpu()) + 1e-3 * weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():
        predicted = (test_x @ weight + bias).argmax(1)
    return (predicted == test_y.cpu()).double().mean().item()
