"""Optimizer, parameter groups, the LR scaling rule and LR schedules, shared by every task.

Plain functions over a network and numbers, so they are tested without a Trainer. The task
modules (``tasks/``) feed them the recipe's values and the Trainer's batch geometry.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Literal

from timm.optim import create_optimizer_v2, param_groups_layer_decay, param_groups_weight_decay
from timm.scheduler import create_scheduler_v2
from timm.scheduler.scheduler import Scheduler
from torch import nn
from torch.optim import Optimizer

LR_BASE_BATCH = 1024
ScheduleName = Literal["cosine", "poly", "none"]


def scaled_lr(
    base_lr: float,
    batch_size: int,
    world_size: int = 1,
    accumulate: int = 1,
    base_batch: int = LR_BASE_BATCH,
) -> float:
    """The paper's linear rule: lr = base_lr * global batch / 1024 (1e-3 -> 4e-3 at 4096).

    ``base_batch`` is the batch that ``base_lr`` is quoted for (the segmentation recipes quote
    their LR at batch 16 or 32).
    """
    return base_lr * batch_size * world_size * accumulate / base_batch


def param_groups(
    model: nn.Module,
    weight_decay: float,
    *,
    layer_decay: float | None = None,
    layer_ids: Mapping[str, int] | None = None,
    head: Collection[str] = (),
) -> list[dict[str, Any]]:
    """timm's groups: no weight decay on norms, biases, layer scale (1-D) and ``no_weight_decay()``.

    ``layer_decay`` adds layer-wise LR scales (``lr_scale``): ``layer_decay ** (top - layer)``
    by ``layer_ids`` (each parameter's layer, ``top`` the highest) where given, else by timm's
    ``group_matcher``.
    Parameters named in ``head`` get groups of their own and every group is tagged
    ``backbone: bool``, which :class:`~inceptionnext_pl.callbacks.FreezeBackbone` acts on.
    """
    skip = set(getattr(model, "no_weight_decay", lambda: set())())
    if layer_decay and layer_ids is not None:
        groups = _groups_by_layer(model, weight_decay, skip, layer_decay, layer_ids)
    elif layer_decay:
        groups = param_groups_layer_decay(
            model, weight_decay, no_weight_decay_list=skip, layer_decay=layer_decay
        )
    else:
        groups = param_groups_weight_decay(model, weight_decay, no_weight_decay_list=skip)
    named = dict(model.named_parameters())
    unknown = sorted(set(head) - set(named))
    if unknown:
        raise ValueError(f"head parameters {unknown[:5]} are not parameters of the model")
    head_ids = {id(named[n]) for n in head}
    split = []
    for g in groups:
        for is_head in (False, True):
            params = [p for p in g["params"] if (id(p) in head_ids) == is_head]
            if params:
                split.append({**g, "params": params, "backbone": not is_head})
    return split


def _groups_by_layer(
    model: nn.Module,
    weight_decay: float,
    skip: Collection[str],
    layer_decay: float,
    layer_ids: Mapping[str, int],
) -> list[dict[str, Any]]:
    top = max(layer_ids.values())
    groups: dict[tuple[int, float], dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decay = 0.0 if p.ndim <= 1 or name in skip else weight_decay
        layer = layer_ids[name]
        group = groups.setdefault(
            (layer, decay),
            {"params": [], "weight_decay": decay, "lr_scale": layer_decay ** (top - layer)},
        )
        group["params"].append(p)
    return list(groups.values())


def create_optimizer(
    groups: list[dict[str, Any]],
    name: str = "adamw",
    *,
    lr: float,
    weight_decay: float,
    eps: float = 1e-8,
    betas: Sequence[float] = (0.9, 0.999),
) -> Optimizer:
    """Any optimizer timm knows by name, over prepared parameter groups."""
    return create_optimizer_v2(
        groups, opt=name, lr=lr, weight_decay=weight_decay, eps=eps, betas=tuple(betas)
    )


def steps_per_epoch(total_steps: float, batches_per_epoch: float, accumulate: int) -> int:
    """Optimizer steps per epoch; a run of unknown epoch length counts as one epoch."""
    if not math.isfinite(total_steps):
        raise ValueError(
            "The LR schedule needs a known length: set trainer.max_steps, or trainer.max_epochs "
            "with a dataset of known size."
        )
    if math.isfinite(batches_per_epoch):
        return max(1, math.ceil(batches_per_epoch / accumulate))
    return max(1, int(total_steps))


def create_schedule(
    optimizer: Optimizer,
    name: ScheduleName,
    *,
    total_steps: int,
    warmup_steps: float = 0,
    warmup_lr: float = 1e-6,
    min_lr: float = 0.0,
    cooldown_steps: int = 0,
    power: float = 0.9,
) -> Scheduler | None:
    """A timm schedule counted in optimizer steps: linear warmup, then cosine or poly decay.

    ``poly`` is mmseg's ``(1 - t / T) ** power`` decay (the segmentation recipes); ``cosine`` is
    Table 9's. ``cooldown_steps`` hold ``min_lr`` at the end. ``none`` keeps the LR constant.
    """
    if name == "none":
        return None
    if name not in ("cosine", "poly"):
        raise ValueError(f"scheduler={name!r} is unknown; use cosine, poly or none")
    scheduler, _ = create_scheduler_v2(
        optimizer,
        sched=name,
        num_epochs=max(1, total_steps - cooldown_steps),
        warmup_epochs=warmup_steps,
        warmup_lr=warmup_lr,
        min_lr=min_lr,
        cooldown_epochs=cooldown_steps,
        decay_rate=power,
        step_on_epochs=False,
        updates_per_epoch=1,
    )
    return scheduler
