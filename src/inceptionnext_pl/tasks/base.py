"""What every task module shares: building the network with its weights, the optimizer and
schedule from the recipe, evaluation under a metric prefix, and the default callbacks."""

from __future__ import annotations

from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torchmetrics import MetricCollection

from .. import optim
from ..callbacks import EMA, FreezeBackbone, RankSeeds, ReduceBatchNorm
from ..errors import ConfigError
from ..zoo.convert import LAYOUT_KEY, LightningLayout

DistBN = Literal["reduce", "none"]


def check_range(
    name: str,
    value: float | None,
    low: float | None,
    high: float | None,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Raise a ConfigError naming ``name`` when ``value`` (unless None) is outside the range."""
    if value is None:
        return
    bad_low = low is not None and (value <= low if low_open else value < low)
    bad_high = high is not None and (value >= high if high_open else value > high)
    if bad_low or bad_high:
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        raise ConfigError(
            f"{name}={value} is out of range: expected {lo}{low if low is not None else '-inf'}, "
            f"{high if high is not None else 'inf'}{hi}"
        )


def check_recipe(hp: Any) -> None:
    """The recipe arguments both task modules take."""
    check_range("base_lr", hp.base_lr, 0.0, None, low_open=True)
    check_range("weight_decay", hp.weight_decay, 0.0, None)
    check_range("drop_path_rate", hp.drop_path_rate, 0.0, 1.0, high_open=True)
    check_range("ema_decay", hp.ema_decay, 0.0, 1.0, high_open=True)
    check_range("layer_decay", hp.layer_decay, 0.0, 1.0, low_open=True)
    check_range("freeze_backbone_epochs", hp.freeze_backbone_epochs, 0, None)
    if hp.num_classes is not None and hp.num_classes < 1:
        raise ConfigError(
            f"num_classes={hp.num_classes} must be a positive class count "
            "(or null to take it from the data)"
        )


class TaskModule(L.LightningModule):
    """Base of ``ImageClassifier`` and ``SemanticSegmenter``.

    Subclasses keep the network as ``self.model`` and implement ``build_network``,
    ``make_metrics``, ``evaluate``, ``head_parameter_names`` and ``load_pretrained_weights``.
    Their hyper-parameters include the recipe: ``base_lr`` (per ``lr_base_batch`` images),
    ``optimizer``, ``weight_decay``, ``opt_eps``, ``betas``, ``scheduler``, ``warmup_lr``,
    ``min_lr``, ``layer_decay``, ``ema_decay``, ``freeze_backbone_epochs``, ``dist_bn``,
    ``pretrained``, ``channels_last`` and ``compile``.
    """

    model: nn.Module | None
    task: str = ""  # the name this task declares in its checkpoints' LightningLayout

    def __init__(self) -> None:
        super().__init__()
        self.model = None
        self.eval_metrics = nn.ModuleDict()
        self._eval_prefixes = ["val", "test"]

    # ------------------------------------------------------------ subclass API
    def build_network(self, num_classes: int) -> nn.Module:
        raise NotImplementedError

    def make_metrics(self) -> MetricCollection:
        raise NotImplementedError

    def evaluate(self, batch: Any, prefix: str, net: nn.Module | None = None) -> None:
        """Update and log the ``prefix`` metrics on ``batch`` with ``net`` (default: the model)."""
        raise NotImplementedError

    def head_parameter_names(self) -> list[str]:
        """Parameters that train while ``FreezeBackbone`` holds the rest."""
        raise NotImplementedError

    def load_pretrained_weights(self, source: str) -> Any:
        """Load ``source`` (zoo name or file) into ``self.model``; returns a printable report."""
        raise NotImplementedError

    def network_arch(self) -> dict[str, Any]:
        """The arguments that rebuild ``self.model`` outside Lightning, declared in checkpoints."""
        raise NotImplementedError

    def layer_ids(self) -> dict[str, int] | None:
        """Each parameter's layer for ``layer_decay``; None: timm's ``group_matcher``."""
        return None

    def schedule_steps(self, steps_per_epoch: int) -> tuple[float, int]:
        """(warmup steps, cooldown steps) of the LR schedule."""
        hp = self.hparams
        return hp.warmup_epochs * steps_per_epoch, hp.cooldown_epochs * steps_per_epoch

    # ------------------------------------------------------------------ build
    def build(self, num_classes: int) -> None:
        """The network, in its memory format, with the pretrained weights in place."""
        self.model = self.build_network(num_classes)
        if self.hparams.channels_last:
            self.model.to(memory_format=torch.channels_last)
        if self.hparams.pretrained:
            report = self.load_pretrained_weights(self.hparams.pretrained)
            rank_zero_info(f"Loaded pretrained weights {self.hparams.pretrained}: {report}")

    def add_eval_prefix(self, prefix: str) -> None:
        """Evaluate under another metric prefix too (the EMA callback's ``val_ema``)."""
        if prefix not in self._eval_prefixes:
            self._eval_prefixes.append(prefix)
        if self.model is not None:
            self._make_eval_metrics()

    def _make_eval_metrics(self) -> None:
        for prefix in self._eval_prefixes:
            if prefix not in self.eval_metrics:
                self.eval_metrics[prefix] = self.make_metrics()

    def setup(self, stage: str) -> None:
        num_classes = self._num_classes_from_data()
        if self.model is None:
            self.build(num_classes)
        self._make_eval_metrics()
        if self.hparams.compile and stage == "fit":
            self.model.compile()

    def _num_classes_from_data(self) -> int:
        hp = self.hparams
        dm = getattr(self._trainer, "datamodule", None) if self._trainer else None
        data_classes = getattr(dm, "num_classes", None)
        if hp.num_classes is None:
            if data_classes is None:
                raise ConfigError(
                    "num_classes is not set and the datamodule does not give one: "
                    "set model.num_classes"
                )
            hp.num_classes = data_classes
        elif data_classes is not None and data_classes != hp.num_classes:
            if hasattr(dm, "check_num_classes"):
                dm.check_num_classes(hp.num_classes)  # names the dataset and the fix
            raise ConfigError(
                f"The model head has {hp.num_classes} classes but the data has {data_classes}. "
                "Fix: leave model.num_classes unset to take it from the data."
            )
        return hp.num_classes

    def weights_layout(self) -> LightningLayout:
        """Where this module's checkpoints keep the network and its EMA, how to rebuild it, and
        what it measured (the evaluation metrics logged last, e.g. ``val/acc1``, ``val_ema/acc1``)."""
        trainer = self._trainer
        logged = trainer.callback_metrics if trainer is not None else {}
        metrics = {
            k: float(v)
            for k, v in logged.items()
            if k.split("/")[0] in self._eval_prefixes and torch.as_tensor(v).numel() == 1
        }
        trained = {"epoch": self.current_epoch, "step": self.global_step} if trainer else {}
        return LightningLayout(
            self.task, "model.", EMA.state_key, self.network_arch(), metrics, trained
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The weights layer reads the file's layout from here, never from this class.
        checkpoint[LAYOUT_KEY] = self.weights_layout().to_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.model is None:  # Module.load_from_checkpoint with num_classes from the data
            self.build(checkpoint["hyper_parameters"]["num_classes"])
            self._make_eval_metrics()

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, **kwargs: Any) -> Any:
        """As Lightning's, but the checkpoint's own weights replace any ``pretrained`` source
        without loading (or downloading) it first."""
        kwargs.setdefault("pretrained", None)
        return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.hparams.channels_last else x

    def metrics_for(self, prefix: str) -> MetricCollection:
        return self.eval_metrics[prefix]

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.evaluate(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self.evaluate(batch, "test")

    # ------------------------------------------------------------ callbacks
    def configure_callbacks(self) -> list[L.Callback]:
        """Per-rank seeds always; BN reduce, EMA and freezing as the recipe asks."""
        hp = self.hparams
        callbacks: list[L.Callback] = [RankSeeds()]
        if hp.dist_bn == "reduce":
            callbacks.append(ReduceBatchNorm())
        if hp.ema_decay:
            callbacks.append(EMA(hp.ema_decay))
        if hp.freeze_backbone_epochs:
            callbacks.append(FreezeBackbone(hp.freeze_backbone_epochs))
        return callbacks

    # ------------------------------------------------------------ optimizers
    def _batch_size(self) -> int:
        dm = getattr(self.trainer, "datamodule", None)
        batch_size = getattr(dm, "batch_size", None)
        if batch_size is None:  # plain dataloaders instead of a datamodule
            _ = self.trainer.estimated_stepping_batches  # makes Lightning load the train loader
            batch_size = getattr(self.trainer.train_dataloader, "batch_size", None)
        if batch_size is None:
            raise ValueError("The datamodule must expose batch_size for the LR scaling rule")
        return batch_size

    def configure_optimizers(self) -> dict[str, Any]:
        hp, trainer = self.hparams, self.trainer
        batch_size = self._batch_size()
        lr = optim.scaled_lr(
            hp.base_lr,
            batch_size,
            trainer.world_size,
            trainer.accumulate_grad_batches,
            base_batch=hp.lr_base_batch,
        )
        groups = optim.param_groups(
            self.model,
            hp.weight_decay,
            layer_decay=hp.layer_decay,
            layer_ids=self.layer_ids(),
            head=self.head_parameter_names(),
        )
        optimizer = optim.create_optimizer(
            groups,
            hp.optimizer,
            lr=lr,
            weight_decay=hp.weight_decay,
            eps=hp.opt_eps,
            betas=hp.betas,
        )
        rank_zero_info(
            f"Effective LR {lr:.3g} = base_lr {hp.base_lr:g} x batch {batch_size} x world "
            f"{trainer.world_size} x accumulate {trainer.accumulate_grad_batches} / {hp.lr_base_batch}"
        )
        self.effective_lr = lr
        if hp.scheduler == "none":
            return {"optimizer": optimizer}
        total = trainer.estimated_stepping_batches
        per_epoch = optim.steps_per_epoch(
            total, trainer.num_training_batches, trainer.accumulate_grad_batches
        )
        warmup, cooldown = self.schedule_steps(per_epoch)
        scheduler = optim.create_schedule(
            optimizer,
            hp.scheduler,
            total_steps=int(total),
            warmup_steps=warmup,
            warmup_lr=hp.warmup_lr,
            min_lr=hp.min_lr,
            cooldown_steps=cooldown,
            power=hp.get("poly_power", 0.9),
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        # timm schedulers are not torch LRSchedulers: step them by the optimizer-step count.
        scheduler.step_update(num_updates=self.global_step)
