"""Finding the objects of a Shapes World image, of any size and from any renderer.

GenEval detects objects with a trained detector; Shapes World is simple enough to detect them by
geometry, so a score never depends on another network, nor on our renderer's exact pixels:

1. background: the median colour of the image border;
2. paint: every pixel is explained as a blend of the background and one palette colour, which is what
   anti-aliasing makes; a pixel is paint when its best blend is at least half palette colour and lies
   within RESIDUAL of it;
3. objects: 8-connected components of paint (union-find over the runs of each row), tiny ones dropped;
   the colour is the majority of their pixels;
4. shape: each shape of the world is drawn with the component's area and centroid, over the share of
   each pixel the component's colour covers; the shape that redraws it best, if well enough, is its shape.
"""

from dataclasses import dataclass

import numpy as np
from PIL import Image

from bagel_mini.images import to_rgb
from bagel_mini.shapes_world.scene import BACKGROUNDS, COLORS, CROSS_ARM, SHAPES

RESIDUAL = 60.0  # how far (0-255 RGB) a pixel may lie from its background-to-palette blend and still be paint
MIN_AREA = 0.002  # components below this share of the image are noise (the smallest object covers ~0.005)
SUBSAMPLES = 48  # candidate shapes are drawn with at least this many samples across
MAX_SHAPE_ERROR = 0.3  # the most paint (a share of the component's) a candidate may draw wrongly

PALETTE = np.array(list(COLORS.values()), dtype=np.float32)  # (K, 3)
COLOR_NAMES = list(COLORS)


@dataclass(frozen=True)
class Detection:
    shape: str | None  # None when no shape of the world fits
    color: str
    x: float  # box centre and size as fractions of the image width and height
    y: float
    width: float
    height: float
    area: float  # share of the image's pixels


def background_color(pixels: np.ndarray) -> np.ndarray:
    """The median colour of the border pixels of an (H, W, 3) image: objects keep off the border."""
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    return np.median(border, axis=0)


def paint_labels(pixels: np.ndarray, background: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) palette index of each paint pixel (-1 elsewhere), and (H, W, K) the share of each palette
    colour in each pixel. A pixel p is explained as background + alpha (colour - background), by the
    colour whose best alpha leaves the least residual."""
    offsets = pixels - background  # (H, W, 3)
    directions = PALETTE - background  # (K, 3)
    alpha = np.clip(offsets @ directions.T / np.maximum((directions**2).sum(1), 1.0), 0.0, 1.0)  # (H, W, K)
    residual = np.linalg.norm(offsets[..., None, :] - alpha[..., None] * directions, axis=-1)  # (H, W, K)
    best = residual.argmin(-1)
    best_alpha = np.take_along_axis(alpha, best[..., None], -1)[..., 0]
    best_residual = np.take_along_axis(residual, best[..., None], -1)[..., 0]
    return np.where((best_alpha >= 0.5) & (best_residual <= RESIDUAL), best, -1), alpha


def connected_runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """8-connected components of a boolean (H, W) image, as its runs (row, start, end) and the component
    of each run. Runs of neighbouring rows that touch (diagonals included) are joined by union-find."""
    edges = np.diff(np.pad(mask, ((0, 0), (1, 1))).astype(np.int8), axis=1)
    rows, starts = np.nonzero(edges == 1)  # row-major order: by row, then by column
    ends = np.nonzero(edges == -1)[1]  # exclusive
    parent = list(range(len(rows)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first = np.searchsorted(rows, np.arange(mask.shape[0] + 1)).tolist()  # runs of row r: first[r]..first[r+1]
    start_list, end_list = starts.tolist(), ends.tolist()
    for row in range(1, mask.shape[0]):
        above, above_end = first[row - 1], first[row]
        for i in range(first[row], first[row + 1]):
            while above < above_end and end_list[above] < start_list[i]:  # ends before this run, even diagonally
                above += 1
            j = above
            while j < above_end and start_list[j] <= end_list[i]:
                parent[root(j)] = root(i)
                j += 1
    roots = np.array([root(i) for i in range(len(parent))], dtype=np.int64)
    return rows, starts, ends, np.unique(roots, return_inverse=True)[1]


AREA = {"circle": np.pi / 4, "square": 1.0, "triangle": 0.5, "diamond": 0.5, "cross": 1 - (1 - CROSS_ARM) ** 2}
CENTROID = {shape: 2 / 3 if shape == "triangle" else 0.5 for shape in SHAPES}  # from the top, in box heights


def inside(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Which points (u, v) of the unit box, (0, 0) at the top left, a shape of the world covers."""
    in_box = (u >= 0) & (u <= 1) & (v >= 0) & (v <= 1)
    if shape == "circle":
        return (u - 0.5) ** 2 + (v - 0.5) ** 2 <= 0.25
    if shape == "square":
        return in_box
    if shape == "triangle":
        return in_box & (np.abs(u - 0.5) <= v / 2)
    if shape == "diamond":
        return np.abs(u - 0.5) + np.abs(v - 0.5) <= 0.5
    return in_box & ((np.abs(u - 0.5) <= CROSS_ARM / 2) | (np.abs(v - 0.5) <= CROSS_ARM / 2))


def classify_shape(coverage: np.ndarray) -> str | None:
    """The shape that best redraws a component, from the (h, w) share of each pixel its colour covers.

    For each shape, the size that gives the measured area and the position that gives the measured
    centroid fix one candidate; it is drawn on the same pixels (sub-sampled) and compared. Working with
    coverage rather than a thresholded mask keeps the sub-pixel information anti-aliasing leaves, so
    shapes ten pixels wide are still told apart.
    """
    total = coverage.sum()
    rows, cols = np.indices(coverage.shape) + 0.5
    centre_y, centre_x = (coverage * rows).sum() / total, (coverage * cols).sum() / total
    factor = max(1, -(-SUBSAMPLES // max(coverage.shape)))  # sub-samples per pixel side
    y, x = ((np.arange(n * factor) + 0.5) / factor for n in coverage.shape)
    errors = {}
    for shape in SHAPES:
        side = np.sqrt(total / AREA[shape])
        covered = inside(shape, (x[None, :] - centre_x) / side + 0.5, (y[:, None] - centre_y) / side + CENTROID[shape])
        drawn = covered.reshape(coverage.shape[0], factor, coverage.shape[1], factor).mean(axis=(1, 3))
        errors[shape] = np.abs(drawn - coverage).sum() / total
    best = min(errors, key=errors.get)
    return best if errors[best] <= MAX_SHAPE_ERROR else None


def detect(image: Image.Image) -> list[Detection]:
    """The objects of an image of any size, largest first."""
    pixels = np.asarray(to_rgb(image), dtype=np.float32)
    height, width = pixels.shape[:2]
    paint, alpha = paint_labels(pixels, background_color(pixels))
    rows, starts, ends, component = connected_runs(paint >= 0)
    areas = np.bincount(component, weights=ends - starts)
    detections = []
    for index in np.nonzero(areas >= MIN_AREA * height * width)[0]:
        mine = component == index
        r, s, e = rows[mine], starts[mine], ends[mine]
        top, bottom, left, right = r.min(), r.max() + 1, s.min(), e.max()
        votes = sum(np.bincount(paint[row, a:b], minlength=len(COLOR_NAMES)) for row, a, b in zip(r, s, e))
        color = int(np.argmax(votes))
        # The component and the pixels next to it (where the rest of its anti-aliased edge is), with room around.
        pad = 2 + max(bottom - top, right - left) // 3
        window = (slice(max(top - pad, 0), bottom + pad), slice(max(left - pad, 0), right + pad))
        near = np.zeros((height, width), dtype=bool)
        for row, a, b in zip(r, s, e):
            near[max(row - 1, 0) : row + 2, max(a - 1, 0) : b + 1] = True
        coverage = np.where(near[window], alpha[window][..., color], 0.0)
        detections.append(
            Detection(
                shape=classify_shape(coverage),
                color=COLOR_NAMES[color],
                x=(left + right) / 2 / width,
                y=(top + bottom) / 2 / height,
                width=(right - left) / width,
                height=(bottom - top) / height,
                area=areas[index] / (height * width),
            )
        )
    return sorted(detections, key=lambda d: -d.area)


def background_name(image: Image.Image) -> str | None:
    """The world's background nearest to the image's, or None if none is within RESIDUAL."""
    color = background_color(np.asarray(to_rgb(image), dtype=np.float32))
    distances = {name: np.linalg.norm(color - np.array(rgb)) for name, rgb in BACKGROUNDS.items()}
    best = min(distances, key=distances.get)
    return best if distances[best] <= RESIDUAL else None
