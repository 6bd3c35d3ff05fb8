"""The built-in demo set: scikit-learn's handwritten digits in the Hugging Face hub's image schema.

scikit-learn ships the 1,797 8x8 grey-level digits of the UCI "Optical Recognition of Handwritten
Digits" set inside its wheel, so this needs no network. Each digit becomes a small RGB PNG in an
``image`` column (a `datasets.Image` feature) with a ``label`` ClassLabel named "0".."9": the same
schema as ImageNet on the hub, so the demo exercises exactly the code path of real data.
"""

from __future__ import annotations

import io
from functools import lru_cache

import numpy as np

__all__ = ["DIGITS_SEED", "DIGITS_VAL_FRACTION", "digits_split", "load_digits_dataset"]

# The split is part of the demo's definition: it does not follow the user's `seed`, so validation
# numbers are comparable between runs.
DIGITS_SEED = 0
DIGITS_VAL_FRACTION = 0.2


def _png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


@lru_cache(maxsize=1)
def digits_split() -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """scikit-learn's digits and the demo's split: ``(images, labels, {split: sorted indices})``.

    ``images`` are ``(1797, 8, 8)`` uint8 ink levels scaled to 0..255 (white digit on black),
    ``labels`` int64 0..9; the splits are ``train`` (1,437) and ``validation`` (360), stratified.
    The segmentation demo (:mod:`.digit_scenes`) draws its scenes from the same split.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    grey = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)  # 0..16 ink levels
    labels = digits.target.astype(np.int64)
    idx_train, idx_val = train_test_split(
        np.arange(len(labels)),
        test_size=DIGITS_VAL_FRACTION,
        stratify=labels,
        random_state=DIGITS_SEED,
    )
    return grey, labels, {"train": np.sort(idx_train), "validation": np.sort(idx_val)}


@lru_cache(maxsize=1)
def load_digits_dataset():
    """`datasets.DatasetDict` with ``train`` (1,437) and ``validation`` (360) splits, stratified.

    Images stay at their native 8x8: decoding is then nearly free and the training transform does
    the (bicubic) upscaling to the configured size.
    """
    import datasets

    grey, labels, splits = digits_split()
    rgb = np.repeat(grey[..., None], 3, axis=-1)  # three channels, as RGB photos have
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "label": datasets.ClassLabel(names=[str(d) for d in range(10)]),
        }
    )

    def split(indices: np.ndarray) -> datasets.Dataset:
        return datasets.Dataset.from_dict(
            {
                "image": [{"bytes": _png(rgb[i]), "path": f"digit_{i:04d}.png"} for i in indices],
                "label": labels[indices].tolist(),
            },
            features=features,
        )

    return datasets.DatasetDict({name: split(idx) for name, idx in splits.items()})
