"""Optimizer, parameter groups, the LR rule and schedules, without a Trainer."""

from __future__ import annotations

import math

import pytest
import torch

from inceptionnext_pl import create_model
from inceptionnext_pl.optim import (
    create_optimizer,
    create_schedule,
    param_groups,
    scaled_lr,
    steps_per_epoch,
)
from inceptionnext_pl.zoo import split_parameters


def test_scaled_lr_rule():
    assert scaled_lr(1e-3, 128, 8, 4) == pytest.approx(4e-3)  # Table 9: 4e-3 at 4096
    assert scaled_lr(1e-3, 128, 4 * 2, 4) == scaled_lr(1e-3, 256, 4, 4)
    assert scaled_lr(6e-5, 2, 8, 1, base_batch=16) == pytest.approx(6e-5)  # Table 6 at 16


@pytest.fixture(scope="module")
def atto():
    return create_model("inceptionnext_atto", num_classes=10)


def test_no_decay_on_norms_biases_and_layer_scale(atto):
    groups = param_groups(atto, 0.05)
    by_id = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    assert by_id[id(atto.stages[0].blocks[0].gamma)] == 0.0
    assert by_id[id(atto.stem[1].weight)] == 0.0 and by_id[id(atto.stem[0].bias)] == 0.0
    assert by_id[id(atto.stem[0].weight)] == 0.05
    assert len(by_id) == len(list(atto.parameters()))  # every parameter, once


def test_head_groups_are_tagged_for_freezing(atto):
    head = split_parameters(atto)[1]
    groups = param_groups(atto, 0.05, layer_decay=0.8, head=head)
    head_ids = {id(p) for n, p in atto.named_parameters() if n in head}
    for g in groups:
        assert all((id(p) in head_ids) == (not g["backbone"]) for p in g["params"])
    scales = {g["lr_scale"] for g in groups}
    assert len(scales) > 2 and max(scales) == pytest.approx(1.0)  # layer-wise decay
    with pytest.raises(ValueError, match="not parameters of the model"):
        param_groups(atto, 0.05, head=["head.fc9.weight"])


def test_optimizer_by_name(atto):
    opt = create_optimizer(param_groups(atto, 0.05), "adamw", lr=1e-3, weight_decay=0.05)
    assert type(opt).__name__ == "AdamW" and opt.param_groups[0]["lr"] == 1e-3


def _lrs(schedule, optimizer, steps):
    out = []
    for t in range(steps):
        schedule.step_update(num_updates=t)
        out.append(optimizer.param_groups[0]["lr"])
    return out


def test_warmup_then_cosine_and_poly():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    cos = create_schedule(
        opt, "cosine", total_steps=100, warmup_steps=10, warmup_lr=0.0, min_lr=0.0
    )
    lrs = _lrs(cos, opt, 100)
    assert lrs[0] == 0.0 and lrs[5] == pytest.approx(0.5)  # linear warmup from warmup_lr
    # then timm's cosine over the whole run (warmup inside it, as the official runs had it)
    assert lrs[10] == pytest.approx(0.5 * (1 + math.cos(math.pi * 10 / 100)))
    assert lrs[50] == pytest.approx(0.5) and lrs[-1] < 0.01
    opt = torch.optim.SGD([p], lr=1.0)
    poly = create_schedule(opt, "poly", total_steps=100, power=0.9, min_lr=0.0)
    lrs = _lrs(poly, opt, 100)
    assert lrs[50] == pytest.approx(0.5**0.9, rel=1e-6)  # mmseg's (1 - t/T) ** 0.9
    assert create_schedule(opt, "none", total_steps=10) is None
    with pytest.raises(ValueError, match="scheduler='step'"):
        create_schedule(opt, "step", total_steps=10)


def test_steps_per_epoch():
    assert steps_per_epoch(40, 10, 1) == 10
    assert steps_per_epoch(40, 10, 4) == 3  # ceil(10 / 4): the last, shorter accumulation
    assert steps_per_epoch(500, float("inf"), 1) == 500  # streamed data: one long epoch
    with pytest.raises(ValueError, match="known length"):
        steps_per_epoch(float("inf"), 10, 1)
