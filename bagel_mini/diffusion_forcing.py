"""Diffusion forcing for samples with several images (paper section 2.4, after Chen et al. 2024).

In a video-like sample every frame is a generation target, yet each frame is noised to its own level
and later frames condition on the *noised* earlier ones (instead of on clean copies). The model thus
learns to continue from frames it has only partly generated. To keep neighbouring frames consistent,
consecutive frames are grouped at random: a group shares one noise level and its frames attend to each
other fully.

In the packed sequence (navit.py) a frame is a `VaeImage(loss=True, frame_delta=d)`: unlike an
ordinary noised target (mode `noise`, hidden from what follows), its split is `full`, so later tokens
see it; the RoPE position advances by `d` after it. A frame with `joins_previous=True` extends the
split of the frame before it and reuses its noise level. For frames [A] [B C] (two groups):

              A  B  C          A: own noise level t1, sees only itself (and the text before it)
          A   1  0  0          B, C: one noise level t2, see each other and the noised A
          B   1  1  1
          C   1  1  1
"""

import random

from torch import Tensor

from bagel_mini.navit import VaeImage


def random_group_sizes(num_frames: int, max_group: int, rng: random.Random) -> list[int]:
    """Cut num_frames consecutive frames into groups: each size drawn uniformly from 1..max_group, the last
    one cut to fit (so the ways to split are not equally likely)."""
    if num_frames < 1 or max_group < 1:
        raise ValueError(f"need at least one frame and a group size of at least 1, got {num_frames}, {max_group}")
    sizes = []
    while sum(sizes) < num_frames:
        sizes.append(min(rng.randint(1, max_group), num_frames - sum(sizes)))
    return sizes


def frame_items(frames: list[Tensor], group_sizes: list[int], frame_delta: int = 1) -> list[VaeImage]:
    """The frames as diffusion-forcing items: each group one split and one noise level."""
    if sum(group_sizes) != len(frames) or min(group_sizes, default=0) < 1:
        raise ValueError(f"group sizes {group_sizes} do not split {len(frames)} frames")
    items = []
    for size in group_sizes:
        for index_in_group in range(size):
            pixels = frames[len(items)]
            items.append(VaeImage(pixels, loss=True, frame_delta=frame_delta, joins_previous=index_in_group > 0))
    return items


def draw_example(path: str) -> None:
    """Pack a caption and three frames in groups [1, 2] and save a picture of the attention mask."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from bagel_mini.attention import dense_mask, draw_mask
    from bagel_mini.cfg import NO_DROPOUT
    from bagel_mini.flow import training_timesteps
    from bagel_mini.navit import PackConfig, Text, pack

    config = PackConfig(
        bos=1,
        eos=2,
        start_of_image=3,
        end_of_image=4,
        vit_patch_size=8,
        vit_max_patches_per_side=8,
        pixels_per_latent_token=16,
        max_latent_size=8,
        dropout=NO_DROPOUT,
    )
    frames = [torch.zeros(3, 32, 16) for _ in range(3)]  # 2 latent tokens each
    batch = pack([[Text([5, 6]), *frame_items(frames, [1, 2])]], config, random.Random(0))
    t = training_timesteps(batch.raw_timesteps, shift=1.0)
    title = f"caption | frame A (t={t[0]:.2f}) | frames B, C (t={t[2]:.2f})"
    draw_mask(dense_mask(batch.splits), batch.splits, title=title)
    plt.savefig(path, dpi=120, bbox_inches="tight")


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 2:
        sys.exit("usage: python -m bagel_mini.diffusion_forcing OUT.png")
    draw_example(sys.argv[1])
    print(f"wrote {sys.argv[1]}")
