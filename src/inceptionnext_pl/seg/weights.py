"""ImageNet classification weights into a segmentation encoder, exactly (the paper's
ImageNet-1k -> ADE20K flow).

smp's timm encoder wraps the backbone in timm's ``FeatureListNet``, which flattens the first
level of sequential modules (``stem.0.weight`` -> ``model.stem_0.weight``). The classifier's
weights are read by the zoo (any format, any source), then renamed the way the wrapper names
them, and loaded strictly: every encoder tensor comes from the checkpoint.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..models import create_model
from ..zoo.matching import diff_state_dicts, mismatch_error

ENCODER_PREFIX = "model."  # smp's TimmUniversalEncoder keeps the timm feature net as .model


def feature_net_names(classifier: nn.Module) -> dict[str, str]:
    """Classifier state-dict key -> the key timm's ``FeatureListNet(flatten_sequential=True)``
    gives the same tensor."""
    flattened = {n for n, m in classifier.named_children() if isinstance(m, nn.Sequential)}
    names = {}
    for key in classifier.state_dict():
        top, _, rest = key.partition(".")
        if top in flattened and rest:
            child, _, tail = rest.partition(".")
            names[key] = f"{top}_{child}.{tail}" if tail else f"{top}_{child}"
        else:
            names[key] = key
    return names


def load_backbone(
    encoder: nn.Module, backbone: str, source: str, **backbone_kwargs: Any
) -> tuple[Any, int]:
    """Load the classification weights ``source`` of ``backbone`` into an smp timm ``encoder``.

    Returns the zoo's load report and the number of encoder tensors set. Raises
    ``StateDictMismatchError`` naming every key when the weights do not cover the encoder.
    """
    from ..zoo import load_pretrained

    classifier = create_model(backbone, **backbone_kwargs)
    report = load_pretrained(classifier, source)
    names = feature_net_names(classifier)
    source_sd = classifier.state_dict()
    mapped = {ENCODER_PREFIX + names[k]: v for k, v in source_sd.items()}
    target = encoder.state_dict()
    wanted = {k: v for k, v in mapped.items() if k in target}  # the classifier head is not used
    diff = diff_state_dicts(wanted, target)
    if diff:
        raise mismatch_error(
            f"Weights {source}",
            f"the {backbone} encoder",
            diff,
            "The segmentation backbone must be the architecture the weights were trained with.",
        )
    with torch.no_grad():
        encoder.load_state_dict(wanted, strict=False)  # strict on the encoder: checked above
    return report, len(wanted)
