"""The built-in segmentation demo set: scenes of scikit-learn digits with per-pixel labels.

Each scene is a square RGB canvas (64 px by default) with a dark, slightly noisy background on
which 1-3 handwritten digits are drawn at random sizes and places, each in its own bright colour.
The 8x8 digits are upsampled smoothly (bicubic); a pixel belongs to a digit's stroke where the
upsampled ink is at least half the full ink, and it is labelled with the digit's class: digit
``d`` is class ``d + 1``, the background class 0, so there are 11 classes. Where a later digit's
stroke covers an earlier one, the later label wins; a digit that would hide more than
:data:`MAX_OVERLAP` of its own stroke under earlier ones is moved (up to 10 tries) or left out.

The train scenes use only the digits of the classification demo's train split, the validation
scenes only those of its validation split (:func:`.digits.digits_split`), each digit drawn in
turn from a seeded shuffle of its split, so the ten digit classes appear equally often. The scenes
are seeded and built once per process in memory (well under 2 s), in the hub's schema: ``image``
and ``mask`` image columns (uncompressed PPM / PGM; the mask holds class indices, mode L) and
``digits``, the scikit-learn indices drawn in the scene.
"""

from __future__ import annotations

import io
from functools import lru_cache

import numpy as np

__all__ = [
    "DIGIT_SCENE_CLASSES",
    "DIGIT_SCENE_SIZE",
    "MAX_OVERLAP",
    "SCENES_PER_SPLIT",
    "load_digit_scenes",
    "render_split",
]

DIGIT_SCENE_SIZE = 64
DIGIT_SCENE_CLASSES = ("background", *(str(d) for d in range(10)))
SCENES_PER_SPLIT = {"train": 2000, "validation": 500}
DIGITS_PER_SCENE = (1, 3)  # inclusive
DIGIT_SIZE = (0.4, 0.6)  # side of a drawn digit, as a fraction of the canvas side
STROKE_INK = 0.5  # a stroke pixel holds at least this share of the full ink
MAX_OVERLAP = 0.05
PLACE_TRIES = 10
# Part of the demo's definition, like the digits split: not the user's seed.
SPLIT_SEEDS = {"train": 1, "validation": 2}


def _upsampled(digits: np.ndarray, side: int) -> np.ndarray:
    """8x8 uint8 digits ``(N, 8, 8)`` as smooth ``(N, side, side)`` ink maps in [0, 1] (bicubic)."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(digits).float().div_(255.0).unsqueeze(1)
    up = F.interpolate(x, size=(side, side), mode="bicubic", align_corners=False)
    return up.squeeze(1).clamp_(0.0, 1.0).numpy()


def render_split(
    split: str, size: int = DIGIT_SCENE_SIZE, count: int | None = None
) -> tuple[np.ndarray, np.ndarray, list[list[int]]]:
    """Render one split: ``(images (N, size, size, 3) uint8, masks (N, size, size) uint8, digits)``.

    ``digits[i]`` lists the scikit-learn indices drawn in scene ``i`` (left out ones excluded).
    """
    from .digits import digits_split

    grey, labels, splits = digits_split()
    pool = splits[split]
    count = SCENES_PER_SPLIT[split] if count is None else count
    rng = np.random.default_rng(SPLIT_SEEDS[split])
    lo, hi = (max(8, round(f * size)) for f in DIGIT_SIZE)
    sides = np.unique(np.linspace(lo, hi, 9).round().astype(int))

    # All random draws up front, in bulk (a loop of small draws would dominate the build time).
    per_scene = rng.integers(DIGITS_PER_SCENE[0], DIGITS_PER_SCENE[1] + 1, size=count)
    slots = int(per_scene.sum())
    laps = -(-slots // len(pool))  # each digit of the split once per lap, in a new order
    order = np.concatenate([rng.permutation(pool) for _ in range(laps)])[:slots]
    side_of = sides[rng.integers(0, len(sides), size=slots)]
    colours = rng.uniform(0.55, 1.0, size=(slots, 3)).astype(np.float32)
    places = rng.random(size=(slots, PLACE_TRIES, 2))
    places = (places * (size - side_of + 1)[:, None, None]).astype(np.int64)  # top-left corners
    # The ink map of every slot, one batched interpolation per side.
    inks: list[np.ndarray] = [np.empty(0)] * slots
    for side in sides:
        (at,) = np.nonzero(side_of == side)
        for k, ink in zip(at, _upsampled(grey[order[at]], int(side))):
            inks[k] = ink
    backgrounds = rng.uniform(0.0, 0.3, size=(count, 3)).astype(np.float32)
    canvas = rng.standard_normal(size=(count, size, size, 1), dtype=np.float32)
    canvas *= 0.03  # grey sensor-like noise on a flat dark background
    canvas = canvas + backgrounds[:, None, None, :]
    masks = np.zeros((count, size, size), dtype=np.uint8)
    drawn: list[list[int]] = [[] for _ in range(count)]
    slot = 0
    for n in range(count):
        mask, image = masks[n], canvas[n]
        for _ in range(per_scene[n]):
            index, side, ink = int(order[slot]), int(side_of[slot]), inks[slot]
            stroke = ink >= STROKE_INK
            spots, colour = places[slot], colours[slot]
            slot += 1
            allowed = MAX_OVERLAP * np.count_nonzero(stroke)
            if not allowed:
                continue
            for y, x in spots:
                if np.count_nonzero(mask[y : y + side, x : x + side][stroke]) <= allowed:
                    break
            else:
                continue  # no free place: leave this digit out
            alpha = ink[..., None]
            window = image[y : y + side, x : x + side]
            window *= 1.0 - alpha
            window += alpha * colour
            mask[y : y + side, x : x + side][stroke] = labels[index] + 1
            drawn[n].append(index)
    canvas *= 255.0
    canvas += 0.5
    images = np.clip(canvas, 0, 255, out=canvas).astype(np.uint8)
    return images, masks, drawn


def _netpbm(pixels: np.ndarray) -> bytes:
    """Uncompressed PPM (RGB) / PGM (grey) bytes: 10-30x faster than PNG both ways at 64 px."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PPM")
    return buf.getvalue()


@lru_cache(maxsize=2)
def load_digit_scenes(size: int = DIGIT_SCENE_SIZE):
    """`datasets.DatasetDict` with ``train`` (2,000) and ``validation`` (500) scenes."""
    import datasets

    features = datasets.Features(
        {
            "image": datasets.Image(),
            "mask": datasets.Image(),
            "digits": datasets.Sequence(datasets.Value("int32")),
        }
    )
    out = {}
    for split in SCENES_PER_SPLIT:
        images, masks, drawn = render_split(split, size)
        out[split] = datasets.Dataset.from_dict(
            {
                "image": [
                    {"bytes": _netpbm(im), "path": f"{split}_scene_{i:04d}.ppm"}
                    for i, im in enumerate(images)
                ],
                "mask": [
                    {"bytes": _netpbm(m), "path": f"{split}_scene_{i:04d}_mask.pgm"}
                    for i, m in enumerate(masks)
                ],
                "digits": drawn,
            },
            features=features,
        )
    return datasets.DatasetDict(out)
