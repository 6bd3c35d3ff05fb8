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

__all__ = ["DIGITS_SEED", "DIGITS_VAL_FRACTION", "load_digits_dataset"]

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
def load_digits_dataset():
    """`datasets.DatasetDict` with ``train`` (1,437) and ``validation`` (360) splits, stratified.

    Images stay at their native 8x8: decoding is then nearly free and the training transform does
    the (bicubic) upscaling to the configured size.
    """
    import datasets
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    # 0..16 ink levels -> 0..255, replicated into three channels (white digit on black).
    grey = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    labels = digits.target.astype(np.int64)
    idx_train, idx_val = train_test_split(
        np.arange(len(labels)),
        test_size=DIGITS_VAL_FRACTION,
        stratify=labels,
        random_state=DIGITS_SEED,
    )
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "label": datasets.ClassLabel(names=[str(d) for d in range(10)]),
        }
    )

    def split(indices: np.ndarray) -> datasets.Dataset:
        indices = np.sort(indices)
        return datasets.Dataset.from_dict(
            {
                "image": [{"bytes": _png(rgb[i]), "path": f"digit_{i:04d}.png"} for i in indices],
                "label": labels[indices].tolist(),
            },
            features=features,
        )

    return datasets.DatasetDict({"train": split(idx_train), "validation": split(idx_val)})
