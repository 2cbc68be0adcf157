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
