"""ImageClassifier: a LightningModule around any model that ``create_model`` knows."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from timm.loss import SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2, param_groups_layer_decay, param_groups_weight_decay
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from .models import check_model_name, create_model

LR_BASE_BATCH = 1024


def scaled_lr(base_lr: float, batch_size: int, world_size: int, accumulate: int) -> float:
    """The paper's linear rule: lr = base_lr * global batch / 1024 (1e-3 -> 4e-3 at 4096)."""
    return base_lr * batch_size * world_size * accumulate / LR_BASE_BATCH


class ImageClassifier(L.LightningModule):
    """Image classification with the paper's recipe (Table 9).

    Args:
        model_name: any name ``inceptionnext_pl.create_model`` builds (ours or timm's).
        num_classes: head size; ``None`` takes it from the datamodule.
        pretrained: zoo name or checkpoint path; the backbone is loaded, a new head is kept
            when the class count differs.
        drop_path_rate, drop_rate: stochastic depth and head dropout.
        model_kwargs: further keyword arguments for ``create_model`` (e.g. ``ls_init_value``,
            ``band_kernel_size``, ``norm``).
        base_lr: learning rate per 1024 images; scaled by the global batch.
        warmup_epochs, warmup_lr, min_lr, cooldown_epochs: linear warmup, then cosine,
            stepped per optimizer step.
        layer_decay: layer-wise LR decay for fine-tuning (timm's grouping), ``None`` for off.
        freeze_backbone_epochs: train only the classifier for this many epochs.
        label_smoothing: used when targets are hard labels (Mixup smooths its own).
        ema_decay: keep an EMA of the weights and validate it beside the raw weights.
        dist_bn: ``reduce`` averages BatchNorm buffers across ranks before validation;
            ``none`` leaves them (use ``trainer.sync_batchnorm: true`` to sync every step).
        channels_last, compile: speed options.
    """

    def __init__(
        self,
        model_name: str = "inceptionnext_tiny",
        num_classes: int | None = None,
        pretrained: str | None = None,
        drop_path_rate: float = 0.0,
        drop_rate: float = 0.0,
        model_kwargs: dict[str, Any] | None = None,
        optimizer: str = "adamw",
        base_lr: float = 1e-3,
        weight_decay: float = 0.05,
        opt_eps: float = 1e-8,
        betas: Sequence[float] = (0.9, 0.999),
        scheduler: Literal["cosine", "none"] = "cosine",
        warmup_epochs: float = 20.0,
        warmup_lr: float = 1e-6,
        min_lr: float = 1e-5,
        cooldown_epochs: int = 0,
        layer_decay: float | None = None,
        freeze_backbone_epochs: int = 0,
        label_smoothing: float = 0.1,
        ema_decay: float | None = None,
        dist_bn: Literal["reduce", "none"] = "reduce",
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__()
        check_model_name(model_name)
        _check_range("base_lr", base_lr, 0.0, None, low_open=True)
        _check_range("weight_decay", weight_decay, 0.0, None)
        _check_range("label_smoothing", label_smoothing, 0.0, 1.0, high_open=True)
        _check_range("drop_path_rate", drop_path_rate, 0.0, 1.0, high_open=True)
        _check_range("drop_rate", drop_rate, 0.0, 1.0, high_open=True)
        if ema_decay is not None:
            _check_range("ema_decay", ema_decay, 0.0, 1.0, high_open=True)
        if layer_decay is not None:
            _check_range("layer_decay", layer_decay, 0.0, 1.0, low_open=True)
        if num_classes is not None and num_classes < 1:
            raise ValueError(
                f"num_classes={num_classes} must be a positive class count (or null to take it from the data)"
            )
        self.save_hyperparameters()
        self.model: nn.Module | None = None
        self.model_ema: ModelEmaV3 | None = None
        self._weights_ready = False  # pretrained or checkpoint weights are in place
        self.train_loss = SoftTargetCrossEntropy()
        if num_classes is not None:
            self._build(num_classes)

    # ----------------------------------------------------------------- build
    def _build(self, num_classes: int) -> None:
        hp = self.hparams
        kwargs = dict(num_classes=num_classes, **(hp.model_kwargs or {}))
        if hp.drop_path_rate:
            kwargs["drop_path_rate"] = hp.drop_path_rate
        if hp.drop_rate:
            kwargs["drop_rate"] = hp.drop_rate
        self.model = create_model(hp.model_name, **kwargs)
        if hp.channels_last:
            self.model.to(memory_format=torch.channels_last)
        if hp.ema_decay:
            self.model_ema = ModelEmaV3(self.model, decay=hp.ema_decay)
            self.model_ema.requires_grad_(False)  # not trained, and invisible to DDP
        top5 = min(5, num_classes)
        self.val_acc1 = MulticlassAccuracy(num_classes, top_k=1)
        self.val_acc5 = MulticlassAccuracy(num_classes, top_k=top5)
        self.test_acc1 = MulticlassAccuracy(num_classes, top_k=1)
        self.test_acc5 = MulticlassAccuracy(num_classes, top_k=top5)
        if self.model_ema is not None:
            self.val_ema_acc1 = MulticlassAccuracy(num_classes, top_k=1)
            self.val_ema_acc5 = MulticlassAccuracy(num_classes, top_k=top5)

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        data_classes = getattr(dm, "num_classes", None)
        if self.hparams.num_classes is None:
            if data_classes is None:
                raise ValueError(
                    "num_classes is not set and the datamodule does not give one: set model.num_classes"
                )
            self.hparams.num_classes = data_classes
        elif data_classes is not None and data_classes != self.hparams.num_classes:
            if hasattr(dm, "check_num_classes"):
                dm.check_num_classes(self.hparams.num_classes)  # names the dataset and the fix
            raise ValueError(
                f"The model head has {self.hparams.num_classes} classes but the data has {data_classes}. "
                f"Fix: leave model.num_classes unset to take it from the data."
            )
        if self.model is None:
            self._build(self.hparams.num_classes)
        self._offset_rng_by_rank()
        if self.hparams.compile and stage == "fit":
            self.model.compile()

    def _load_pretrained(self) -> None:
        """Zoo weights for a fresh start only: a resumed run or a loaded checkpoint has its own.

        Runs at the start of fit/validate/test/predict, i.e. after Lightning restored any
        ``ckpt_path`` (which marks the weights ready), so nothing is downloaded just to be overwritten.
        """
        if not self.hparams.pretrained or self._weights_ready:
            return
        from .zoo import load_pretrained

        source = resolve_run_dir(self.hparams.pretrained)
        report = load_pretrained(self.model, source)
        rank_zero_info(f"Loaded pretrained weights from {source}: {report}")
        if self.model_ema is not None:
            self.model_ema.set(self.model)
        self._weights_ready = True

    def on_fit_start(self) -> None:
        self._load_pretrained()

    def on_validation_start(self) -> None:
        self._load_pretrained()

    def on_test_start(self) -> None:
        self._load_pretrained()

    def on_predict_start(self) -> None:
        self._load_pretrained()

    def _offset_rng_by_rank(self) -> None:
        # seed_everything gives every rank the same seed; Mixup, DropPath and random erasing
        # must draw differently per rank (timm seeds seed + rank too).
        rank = self.trainer.global_rank if getattr(self, "_trainer", None) is not None else 0
        if rank:
            seed = (torch.initial_seed() + rank) % 2**32
            torch.manual_seed(seed)
            np.random.seed(seed)
            random.seed(seed)

    # --------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        if y.ndim == 2:  # Mixup/CutMix soft targets (already label-smoothed by Mixup)
            loss = self.train_loss(logits, y)
        else:
            loss = F.cross_entropy(logits, y, label_smoothing=self.hparams.label_smoothing)
        self.log(
            "train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=x.shape[0]
        )
        return loss

    def _evaluate(self, batch, prefix: str) -> None:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        acc1, acc5 = getattr(self, f"{prefix}_acc1"), getattr(self, f"{prefix}_acc5")
        acc1(logits, y)
        acc5(logits, y)
        self.log(f"{prefix}/loss", loss, sync_dist=True, batch_size=x.shape[0])
        self.log(f"{prefix}/acc1", acc1, prog_bar=True, batch_size=x.shape[0])
        self.log(f"{prefix}/acc5", acc5, batch_size=x.shape[0])
        if prefix == "val" and self.model_ema is not None:
            xe = (
                x.contiguous(memory_format=torch.channels_last) if self.hparams.channels_last else x
            )
            ema_logits = self.model_ema.module(xe)
            self.val_ema_acc1(ema_logits, y)
            self.val_ema_acc5(ema_logits, y)
            self.log("val_ema/acc1", self.val_ema_acc1, prog_bar=True, batch_size=x.shape[0])
            self.log("val_ema/acc5", self.val_ema_acc5, batch_size=x.shape[0])

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def predict_step(
        self, batch, batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, torch.Tensor]:
        x = batch[0] if isinstance(batch, list | tuple) else batch
        probs = self(x).softmax(-1)
        top = probs.topk(min(5, probs.shape[-1]), dim=-1)
        return {"probs": top.values, "classes": top.indices}

    # ------------------------------------------------------------ optimizers
    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        dm = getattr(self.trainer, "datamodule", None)
        batch_size = getattr(dm, "batch_size", None) or getattr(dm, "hparams", {}).get("batch_size")
        if batch_size is None:  # plain dataloaders instead of a datamodule
            _ = self.trainer.estimated_stepping_batches  # makes Lightning load the train loader
            batch_size = getattr(self.trainer.train_dataloader, "batch_size", None)
        if batch_size is None:
            raise ValueError("The datamodule must expose batch_size for the LR scaling rule")
        lr = scaled_lr(
            hp.base_lr, batch_size, self.trainer.world_size, self.trainer.accumulate_grad_batches
        )
        groups = self._param_groups()
        optimizer = create_optimizer_v2(
            groups,
            opt=hp.optimizer,
            lr=lr,
            weight_decay=hp.weight_decay,
            eps=hp.opt_eps,
            betas=tuple(hp.betas),
        )
        rank_zero_info(
            f"Effective LR {lr:.3g} = base_lr {hp.base_lr:g} x batch {batch_size} x world {self.trainer.world_size}"
            f" x accumulate {self.trainer.accumulate_grad_batches} / {LR_BASE_BATCH}"
        )
        self.effective_lr = lr
        if hp.scheduler == "none":
            return {"optimizer": optimizer}
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total):
            raise ValueError(
                "The LR schedule needs a known length: set trainer.max_steps or trainer.max_epochs "
                "with a dataset of known size."
            )
        batches = self.trainer.num_training_batches
        per_epoch = (
            max(1, math.ceil(batches / self.trainer.accumulate_grad_batches))
            if math.isfinite(batches)
            else max(1, int(total))
        )
        epochs = max(1, math.ceil(total / per_epoch))  # also right when only max_steps is set
        steps_per_epoch = per_epoch
        scheduler, _ = create_scheduler_v2(
            optimizer,
            sched=hp.scheduler,
            num_epochs=max(1, epochs - hp.cooldown_epochs),
            warmup_epochs=hp.warmup_epochs,
            warmup_lr=hp.warmup_lr,
            min_lr=hp.min_lr,
            cooldown_epochs=hp.cooldown_epochs,
            step_on_epochs=False,
            updates_per_epoch=steps_per_epoch,
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def _param_groups(self) -> list[dict[str, Any]]:
        """No weight decay on norms, biases, layer scale (1-D) and the model's own exclusions.

        Built from the network only, so an EMA copy is never optimized. With
        ``freeze_backbone_epochs`` the classifier gets groups of its own.
        """
        hp = self.hparams
        skip = set(getattr(self.model, "no_weight_decay", lambda: set())())
        if hp.layer_decay:
            groups = param_groups_layer_decay(
                self.model, hp.weight_decay, no_weight_decay_list=skip, layer_decay=hp.layer_decay
            )
        else:
            groups = param_groups_weight_decay(
                self.model, hp.weight_decay, no_weight_decay_list=skip
            )
        if not hp.freeze_backbone_epochs:
            return groups
        from .zoo import split_parameters

        params = dict(self.model.named_parameters())
        head = {id(params[n]) for n in split_parameters(self.model)[1]}
        split = []
        for g in groups:
            for is_head in (False, True):
                params = [p for p in g["params"] if (id(p) in head) == is_head]
                if params:
                    split.append({**g, "params": params, "backbone": not is_head})
        return split

    def lr_scheduler_step(self, scheduler, metric: Any) -> None:
        # timm schedulers are not torch LRSchedulers: step them by the optimizer-step count.
        scheduler.step_update(num_updates=self.global_step)

    def on_train_epoch_start(self) -> None:
        n = self.hparams.freeze_backbone_epochs
        if not n:
            return
        frozen = self.current_epoch < n
        for opt in self.trainer.optimizers:
            for g in opt.param_groups:
                if g.get("backbone"):
                    g.setdefault("unfrozen_lr_scale", g.get("lr_scale", 1.0))
                    g.setdefault("unfrozen_lr", g["lr"])
                    # lr 0 stops AdamW entirely (decay included) and keeps DDP's buckets intact;
                    # the timm scheduler multiplies every step's lr by lr_scale.
                    g["lr_scale"] = 0.0 if frozen else g["unfrozen_lr_scale"]
                    if frozen:
                        g["lr"] = 0.0
                    elif self.hparams.scheduler == "none":
                        g["lr"] = g["unfrozen_lr"]
        for config in self.trainer.lr_scheduler_configs:
            config.scheduler.step_update(num_updates=self.global_step)  # apply lr_scale now
        if frozen and self.current_epoch == 0:
            rank_zero_info(
                f"Backbone frozen for {n} epoch(s): only the classifier trains "
                "(BatchNorm statistics still adapt to the new data)"
            )

    # ----------------------------------------------------------- EMA and BN
    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # After the optimizer step (on_before_zero_grad would run before it, lagging a step).
        stepped = (
            batch_idx + 1
        ) % self.trainer.accumulate_grad_batches == 0 or self.trainer.is_last_batch
        if self.model_ema is not None and stepped:
            self.model_ema.update(self.model, step=self.global_step)

    def on_validation_epoch_start(self) -> None:
        if self.hparams.dist_bn != "reduce" or self.trainer.world_size < 2:
            return
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return
        for module in (self.model, getattr(self.model_ema, "module", None)):
            if module is None:
                continue
            for name, buf in module.named_buffers():
                if name.endswith(("running_mean", "running_var")):
                    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
                    buf /= self.trainer.world_size

    # ------------------------------------------------------------- checkpoint
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # RNG states make a resumed run continue exactly where an uninterrupted one would.
        # Tensors and ints only, so that Lightning's weights_only loading accepts them.
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        checkpoint["rng_states"] = {
            "torch": torch.get_rng_state(),
            "numpy": [
                kind,
                torch.from_numpy(keys.astype(np.int64)),
                int(pos),
                int(has_gauss),
                float(gauss),
            ],
            "python": random.getstate(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.model is None:
            self._build(checkpoint["hyper_parameters"]["num_classes"])
        self._weights_ready = True
        states = checkpoint.get("rng_states")
        if (
            states
            and getattr(self, "_trainer", None) is not None
            and self.trainer.state.fn == "fit"
        ):
            kind, keys, pos, has_gauss, gauss = states["numpy"]
            torch.set_rng_state(states["torch"])
            np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
            random.setstate(states["python"])
            self._offset_rng_by_rank()


def find_last_checkpoint(run_dir: str | Path) -> str | None:
    """The newest ``last*.ckpt`` under a run directory, or None."""
    found = sorted(Path(run_dir).rglob("last*.ckpt"), key=lambda p: p.stat().st_mtime)
    return str(found[-1]) if found else None


def resolve_run_dir(source: str) -> str:
    """A run directory stands for its newest ``last.ckpt``; anything else is returned as is."""
    if not Path(source).is_dir():
        return source
    found = find_last_checkpoint(source)
    if found is None:
        raise FileNotFoundError(
            f"pretrained={source!r} is a directory without a last.ckpt. Train it first "
            f"(e.g. `lightning fit --config configs/demo.yaml`) or give a checkpoint file or zoo name."
        )
    return found


def _check_range(
    name: str,
    value: float,
    low: float | None,
    high: float | None,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    bad_low = low is not None and (value <= low if low_open else value < low)
    bad_high = high is not None and (value >= high if high_open else value > high)
    if bad_low or bad_high:
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        raise ValueError(
            f"{name}={value} is out of range: expected {lo}{low if low is not None else '-inf'}, "
            f"{high if high is not None else 'inf'}{hi}"
        )
