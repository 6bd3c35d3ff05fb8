"""What the classification and segmentation data modules share.

:class:`SplitDataModule` opens the splits of one source (:mod:`.sources`), keeps seeded subsets,
wraps each split in a map-style or streaming dataset over a :class:`~.image_datasets.RowDecoder`
(lazy decoding in the workers, the ``skip_corrupt`` policy, equal steps on every DDP rank) and
builds the loaders from the ``data.loader`` group. Subclasses say which columns a row has and what
a sample is; see :class:`~.datamodule.ImageDataModule` and
:class:`~.segmentation.SegmentationDataModule`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, ClassVar

import lightning as L
import torch
from torch.utils.data import DataLoader

from .errors import DataError
from .image_datasets import (
    MapImageDataset,
    RowDecoder,
    StreamImageDataset,
    TrainLoader,
    stream_plan,
)
from .options import LoaderConfig
from .sources import Source, open_split, resolve_source

__all__ = ["SplitDataModule"]

log = logging.getLogger(__name__)

AnyDataset = MapImageDataset | StreamImageDataset


class SplitDataModule(L.LightningDataModule):
    """Base of the data modules: sources, splits, subsets, DDP / streaming shards and loaders.

    Subclasses set ``self.loader`` (a :class:`~.options.LoaderConfig`) and save hyper-parameters
    holding at least ``dataset``, ``revision``, ``train_split``, ``val_split``, ``test_split``,
    ``streaming``, ``cache_dir``, ``skip_corrupt``, ``seed``, ``max_train_samples`` and
    ``max_val_samples``; they implement :meth:`_build`.
    """

    # Built-in in-memory sets this module reads, and the module that reads each other one.
    builtin_sets: ClassVar[tuple[str, ...]] = ()
    other_builtins: ClassVar[dict[str, str]] = {}
    loader: LoaderConfig

    def _init_splits(self) -> None:
        self.train_dataset: AnyDataset | None = None
        self.val_dataset: AnyDataset | None = None
        self.test_dataset: AnyDataset | None = None
        self._source: Source | None = None

    @staticmethod
    def _check_limits(max_train_samples: int | None, max_val_samples: int | None) -> None:
        for arg, value in (
            ("max_train_samples", max_train_samples),
            ("max_val_samples", max_val_samples),
        ):
            if value is not None and value < 1:
                raise DataError(f"data.{arg} must be a positive number or null, got {value}.")

    # ------------------------------------------------------------------ helpers
    @property
    def batch_size(self) -> int:
        """Training batch per device (what the LR rule and Lightning's tuner read)."""
        return self.loader.batch_size

    @property
    def source(self) -> Source:
        if self._source is None:
            source = resolve_source(self.hparams.dataset)
            if source.kind == "digits" and source.location not in self.builtin_sets:
                other = self.other_builtins.get(source.location, "another data module")
                raise DataError(
                    f"data.dataset '{source.location}' is a built-in set for {other}, not for "
                    f"{type(self).__name__}. Fix: use {' or '.join(map(repr, self.builtin_sets))}"
                    f" here, or {other} for '{source.location}'."
                )
            self._source = source
        return self._source

    def _trainer_or_none(self):
        return getattr(self, "trainer", None)

    def _rank_world(self) -> tuple[int, int]:
        trainer = self._trainer_or_none()
        if trainer is not None:
            return int(trainer.global_rank), int(trainer.world_size)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def _current_epoch(self) -> int | None:
        trainer = self._trainer_or_none()
        return int(trainer.current_epoch) if trainer is not None else None

    def _open_split(self, split: str, arg: str, *, streaming: bool, num_shards: int = 1):
        """``(datasets split, number of rows or None)``; subclasses add sources of their own."""
        hp = self.hparams
        return open_split(
            self.source,
            split,
            arg=arg,
            streaming=streaming,
            revision=hp.revision,
            cache_dir=hp.cache_dir,
            data_dir=hp.get("data_dir"),
            num_shards=num_shards,
        )

    # ------------------------------------------------------------------ Lightning hooks
    def prepare_data(self) -> None:
        """Download / convert once per node (Lightning calls this on local rank 0 only)."""
        if self.hparams.streaming or self.source.kind in ("digits", "disk"):
            return
        for split, arg in self._splits_for("fit"):
            self._open_split(split, arg, streaming=False)

    def _splits_for(self, stage: str | None) -> list[tuple[str, str]]:
        hp = self.hparams
        val = (hp.val_split, "val_split")
        test = (hp.test_split, "test_split") if hp.test_split else val
        if stage == "fit":
            return [(hp.train_split, "train_split"), val]
        if stage == "validate":
            return [val]
        if stage in ("test", "predict"):
            return [test]
        return [(hp.train_split, "train_split"), val] + ([test] if test != val else [])

    def _setup_splits(self, stage: str | None) -> None:
        for split, arg in self._splits_for(stage):
            attr = {"train_split": "train_dataset", "val_split": "val_dataset"}.get(
                arg, "test_dataset"
            )
            if getattr(self, attr) is None:
                setattr(self, attr, self._build(split, arg, arg == "train_split"))

    def _build(self, split: str, arg: str, training: bool) -> AnyDataset:
        raise NotImplementedError

    # ------------------------------------------------------------------ datasets
    def _open(self, split: str, arg: str):
        _, world = self._rank_world()
        workers = max(1, self.loader.num_workers)
        return self._open_split(
            split, arg, streaming=self.hparams.streaming, num_shards=world * workers
        )

    def _make_dataset(
        self,
        hf: Any,
        num_examples: int | None,
        rows: RowDecoder,
        *,
        split: str,
        training: bool,
        finisher: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> AnyDataset:
        """The torch dataset of one split: a seeded subset if asked, map-style or streamed."""
        hp = self.hparams
        limit = hp.max_train_samples if training else hp.max_val_samples
        common = dict(dataset=hp.dataset, split=split, skip_corrupt=hp.skip_corrupt)
        if not hp.streaming:
            if limit is not None and limit < len(hf):
                generator = torch.Generator().manual_seed(hp.seed)
                keep = torch.randperm(len(hf), generator=generator)[:limit].sort().values
                hf = hf.select(keep.tolist())
            return MapImageDataset(hf, rows, finisher=finisher, **common)
        return self._stream_dataset(hf, num_examples, limit, training, rows, common)

    def _stream_dataset(
        self, hf, num_examples, limit, training, rows, common
    ) -> StreamImageDataset:
        from datasets.distributed import split_dataset_by_node

        hp, loader = self.hparams, self.loader
        rank, world = self._rank_world()
        batch = loader.batch_size if training else loader.eval_batch_size
        if hf.num_shards < world * max(1, loader.num_workers):
            hf = hf.reshard()  # parquet: one shard per row group instead of per file
        if limit is not None:
            hf = hf.take(limit)
            num_examples = limit if num_examples is None else min(limit, num_examples)
        plan = stream_plan(
            num_shards=hf.num_shards,
            world_size=world,
            num_workers=loader.num_workers,
            num_examples=num_examples,
            batch_size=batch,
            equalize=training,
        )
        if training:
            # Same seed on every rank: the ranks must agree on the shard permutation. Interleaving
            # several shards per worker improves the shuffle, but `datasets` then reads them with
            # threads and sleeps 5 s whenever such a stream stops (apache/arrow#45214), so it is
            # only used where a worker has several shards to interleave.
            hf = hf.shuffle(
                seed=hp.seed,
                buffer_size=loader.shuffle_buffer_size,
                max_buffer_input_shards=min(10, max(plan.shards_per_worker)),
            )
            if hf.num_shards % world:
                log.warning(
                    "dataset '%s': %d shards are not divisible by world_size=%d, so every rank "
                    "reads all shards and keeps 1 example in %d (correct, but each rank downloads "
                    "everything). Use a world size that divides the shard count.",
                    hp.dataset, hf.num_shards, world, world,
                )  # fmt: skip
            if len(set(plan.shards_per_worker)) > 1 or plan.num_workers < loader.num_workers:
                log.warning(
                    "dataset '%s': each rank reads %d shard(s) with %d loader worker(s); choose "
                    "num_workers dividing the shards per rank so that workers get equal work.",
                    hp.dataset, sum(plan.shards_per_worker), loader.num_workers,
                )  # fmt: skip
        if training and plan.quotas is not None and sum(plan.quotas) == 0:
            raise DataError(
                f"dataset '{hp.dataset}': {num_examples} training examples shared by {world} "
                f"rank(s) x {len(plan.quotas)} worker(s) leave less than one batch of {batch} per "
                f"worker. Fix: lower data.loader.batch_size or data.loader.num_workers."
            )
        if world > 1:
            hf = split_dataset_by_node(hf, rank=rank, world_size=world)
        return StreamImageDataset(
            hf, rows, quotas=plan.quotas, rank=rank, loader_workers=plan.num_workers, **common
        )

    # ------------------------------------------------------------------ loaders
    def _collate(self, train: bool) -> Callable[[list[Any]], Any] | None:
        """The loaders' collate_fn (None: PyTorch's default)."""
        return None

    def _finisher(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """Applied to training images by a loader iterated outside a Trainer (see TrainLoader)."""
        return None

    def _loader(self, ds: AnyDataset | None, *, train: bool) -> DataLoader:
        loader = self.loader
        if ds is None:
            raise DataError(
                f"{type(self).__name__}: call setup() with the matching stage before asking for a "
                f"loader."
            )
        workers = ds.loader_workers if isinstance(ds, StreamImageDataset) else loader.num_workers
        kwargs: dict[str, Any] = dict(
            batch_size=loader.batch_size if train else loader.eval_batch_size,
            num_workers=workers,
            pin_memory=bool(loader.pin_memory and torch.cuda.is_available()),
            persistent_workers=bool(loader.persistent_workers and workers > 0),
            drop_last=train,
        )
        collate = self._collate(train)
        if collate is not None:
            kwargs["collate_fn"] = collate
        if not train:
            return DataLoader(ds, **kwargs)
        # Under a Trainer the uint8 batches are finished on the device (on_after_batch_transfer);
        # iterated directly, the loader finishes them itself.
        return TrainLoader(
            ds,
            shuffle=not isinstance(ds, StreamImageDataset),
            finisher=None if self._trainer_or_none() is not None else self._finisher(),
            epoch_fn=self._current_epoch,
            **kwargs,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_dataset, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(
            self.test_dataset if self.test_dataset is not None else self.val_dataset, train=False
        )

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()
