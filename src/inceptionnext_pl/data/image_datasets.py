"""Torch datasets over `datasets` splits: lazy decoding, corrupt-image policy, DDP-safe streams.

Map-style (:class:`MapImageDataset`)
    Rows are fetched from Arrow a batch at a time (``__getitems__``, one Arrow ``take`` per batch)
    and decoded + transformed in the loader worker. Under DDP Lightning wraps the loader in a
    ``DistributedSampler`` (seeded identically on every rank, ``set_epoch`` each epoch), which gives
    every rank a disjoint shard that together cover the split (padded by at most world_size - 1
    repeats when the split size is not a multiple of world_size).

Streaming (:class:`StreamImageDataset`)
    Lightning adds no sampler to an ``IterableDataset``; the split is divided with
    ``datasets.distributed.split_dataset_by_node`` before it gets here, and `datasets` divides each
    rank's shards among its loader workers. Pitfalls this class handles:

    * **Epochs.** Lightning calls ``set_epoch`` only on samplers, so :class:`TrainLoader` calls
      ``dataset.set_epoch(trainer.current_epoch)`` itself before every pass. `datasets` keeps the
      epoch in shared memory, so this also reaches persistent workers.
    * **Equal steps on every rank.** DDP hangs if one rank runs out of batches first, and with
      ``num_workers > 0`` and ``drop_last`` each *worker* drops its own partial batch. Each worker
      therefore yields a fixed quota, a multiple of the batch size, computed from the split size and
      the number of shards it reads (assuming shards of similar size). When shards are evenly
      divisible by ``world_size x num_workers`` no sample is read twice and at most
      ``batch_size - 1`` per worker wait for the next epoch. If a worker's shards are shorter than
      its quota (unequal shards) it re-reads the start of its stream, and logs it, instead of hanging.
    * **Shard counts.** With ``num_shards % world_size != 0`` `datasets` falls back to every rank
      reading all shards and keeping one example in ``world_size``: correct, but each rank downloads
      everything. A rank with fewer shards than workers leaves workers idle.
      See :func:`stream_plan`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch.utils.data import DataLoader, get_worker_info

from .decoding import CorruptImageError, decode_rgb
from .errors import DataError

__all__ = [
    "ClassificationRows",
    "MapImageDataset",
    "RowDecoder",
    "StreamImageDataset",
    "StreamPlan",
    "TrainLoader",
    "stream_plan",
]

log = logging.getLogger(__name__)

MAX_WORKER_SLOTS = 256


class RowDecoder(Protocol):
    """Turns one `datasets` row into a training sample; the datasets below are generic over it.

    ``columns`` are the row's columns it reads. Unreadable image bytes raise
    :class:`~.decoding.CorruptImageError` (the ``skip_corrupt`` policy handles those); anything
    else it raises surfaces unchanged.
    """

    columns: tuple[str, ...]

    def __call__(self, row: dict[str, Any], where: str) -> Any: ...


class ClassificationRows:
    """Row -> ``(transform(RGB image), int label)``."""

    def __init__(
        self, image_column: str, label_column: str, transform: Callable[[Any], torch.Tensor]
    ) -> None:
        self.image_column = image_column
        self.label_column = label_column
        self.transform = transform
        self.columns = (image_column, label_column)

    def __call__(self, row: dict[str, Any], where: str) -> tuple[torch.Tensor, int]:
        return self.transform(decode_rgb(row[self.image_column])), int(row[self.label_column])


def _rows_of_batch(batch: dict[str, list[Any]], columns: tuple[str, ...]) -> list[dict[str, Any]]:
    return [dict(zip(columns, values)) for values in zip(*(batch[c] for c in columns))]


class _CorruptPolicy:
    """Raise on an undecodable image, or skip it and count it in shared memory (all workers).

    Map-style data count each corrupt index once (a shared bitmap over the split); streams count
    skip events, one per corrupt image met in each epoch. Counters live in shared memory because
    the decoding happens in loader worker processes.
    """

    def __init__(self, skip: bool, dataset: str, split: str, size: int | None = None) -> None:
        self.skip = skip
        self.dataset = dataset
        self.split = split
        self.bad = torch.zeros(size or 0, dtype=torch.bool).share_memory_()
        # One slot per worker (slot 0: the main process) so workers never race on a counter.
        self.events = torch.zeros(MAX_WORKER_SLOTS + 1, dtype=torch.int64).share_memory_()

    @property
    def skipped(self) -> int:
        return int(self.bad.sum()) if len(self.bad) else int(self.events.sum())

    def known_bad(self, index: int) -> bool:
        return bool(len(self.bad) and self.bad[index])

    def handle(self, exc: CorruptImageError, where: str, index: int | None = None) -> None:
        path = exc.path
        if not self.skip:
            raise DataError(
                f"corrupt or truncated image in dataset '{self.dataset}' split '{self.split}' at "
                f"{where} (path {path}): {exc}. Fix: replace or delete that "
                f"file, or set data.skip_corrupt: true to skip such images (they are counted and "
                f"logged)."
            ) from exc.cause
        if index is not None and len(self.bad):
            self.bad[index] = True
        info = get_worker_info()
        self.events[0 if info is None else 1 + info.id % MAX_WORKER_SLOTS] += 1
        log.warning(
            "skipping corrupt image in dataset '%s' split '%s' at %s (path %s): %s "
            "[%d skipped so far]",
            self.dataset,
            self.split,
            where,
            path,
            exc,
            self.skipped,
        )


class MapImageDataset(torch.utils.data.Dataset):
    """Index -> sample, decoding the row in the calling worker with a :class:`RowDecoder`.

    With a ``finisher`` (training, see :class:`~.transforms.BatchFinisher`), the decoder's
    transform ends in a uint8 tensor: ``dataset[i]`` applies the finisher and returns the
    normalised float tensor, while the batched ``__getitems__`` that DataLoader workers call returns
    the uint8 tensors and leaves the finishing to the loader (or to the training device).
    """

    def __init__(
        self,
        hf_dataset: Any,
        rows: RowDecoder,
        *,
        dataset: str,
        split: str,
        skip_corrupt: bool = False,
        finisher: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.hf = hf_dataset
        self.rows = rows
        self.finisher = finisher
        self.corrupt = _CorruptPolicy(skip_corrupt, dataset, split, size=len(hf_dataset))

    @property
    def transform(self) -> Any:
        return self.rows.transform

    def __len__(self) -> int:
        return len(self.hf)

    @property
    def num_skipped(self) -> int:
        return self.corrupt.skipped

    def _sample(self, index: int, row: dict[str, Any]) -> Any | None:
        if self.corrupt.known_bad(index):
            return None
        where = f"index {index}"
        try:
            return self.rows(row, where)
        except CorruptImageError as exc:
            self.corrupt.handle(exc, where, index)
            return None

    def _row(self, index: int) -> dict[str, Any]:
        row = self.hf[index]
        return {c: row[c] for c in self.rows.columns}

    def _replacement(self, index: int) -> Any:
        # A skipped image is replaced by the next decodable one, so batches keep their size
        # (Mixup needs an even batch) and the epoch its length.
        n = len(self)
        for step in range(1, n):
            j = (index + step) % n
            if self.corrupt.known_bad(j):
                continue
            sample = self._sample(j, self._row(j))
            if sample is not None:
                return sample
        raise DataError(
            f"dataset '{self.corrupt.dataset}' split '{self.corrupt.split}': no image could be "
            f"decoded. Fix: check the files."
        )

    def _finish(self, sample: Any) -> Any:
        if self.finisher is None:
            return sample
        image, *rest = sample
        return (self.finisher(image), *rest)

    def __getitem__(self, index: int) -> Any:
        index = int(index)
        sample = self._sample(index, self._row(index))
        return self._finish(sample if sample is not None else self._replacement(index))

    def __getitems__(self, indices: list[int]) -> list[Any]:
        # One Arrow take for the whole batch instead of one per item; no finisher (see class doc).
        batch = self.hf[[int(i) for i in indices]]
        out = []
        for i, row in zip(indices, _rows_of_batch(batch, self.rows.columns)):
            sample = self._sample(int(i), row)
            out.append(sample if sample is not None else self._replacement(int(i)))
        return out


@dataclass(frozen=True)
class StreamPlan:
    """How one rank reads a stream: its workers and each worker's sample quota (None: no cap)."""

    num_workers: int
    shards_per_worker: tuple[int, ...]
    quotas: tuple[int, ...] | None

    @property
    def length(self) -> int | None:
        return None if self.quotas is None else sum(self.quotas)


def stream_plan(
    *,
    num_shards: int,
    world_size: int,
    num_workers: int,
    num_examples: int | None,
    batch_size: int,
    equalize: bool,
) -> StreamPlan:
    """Workers and quotas for one rank, identical on every rank (they must take the same steps).

    ``num_shards`` is the stream's shard count before the split by node. With
    ``num_shards % world_size == 0`` each rank reads ``num_shards / world_size`` whole shards,
    otherwise every rank reads all shards and keeps one example in ``world_size``.
    """
    by_shards = num_shards % world_size == 0
    shards_per_rank = num_shards // world_size if by_shards else num_shards
    workers = max(1, min(num_workers, shards_per_rank))
    # `datasets` gives worker w the shards w, w + W, w + 2W, ... of its rank.
    per_worker = tuple(len(range(w, shards_per_rank, workers)) for w in range(workers))
    loader_workers = workers if num_workers > 0 else 0
    if not equalize or num_examples is None:
        return StreamPlan(loader_workers, per_worker, None)
    quotas = []
    for count in per_worker:
        # Expected samples of this worker (shards of similar size), rounded down to whole batches.
        expected = count / num_shards * num_examples / (1 if by_shards else world_size)
        quotas.append(int(math.floor(expected / batch_size + 1e-9)) * batch_size)
    return StreamPlan(loader_workers, per_worker, tuple(quotas))


class StreamImageDataset(torch.utils.data.IterableDataset):
    """Iterates an (already node-split) `datasets.IterableDataset`, yielding decoded samples."""

    def __init__(
        self,
        hf_stream: Any,
        rows: RowDecoder,
        *,
        dataset: str,
        split: str,
        skip_corrupt: bool = False,
        quotas: tuple[int, ...] | None = None,
        rank: int = 0,
        loader_workers: int = 0,
    ) -> None:
        self.hf = hf_stream
        self.rows = rows
        self.quotas = quotas
        self.rank = rank
        self.loader_workers = loader_workers  # the DataLoader's num_workers this plan was made for
        self.corrupt = _CorruptPolicy(skip_corrupt, dataset, split)
        self.repeats = torch.zeros(MAX_WORKER_SLOTS + 1, dtype=torch.int64).share_memory_()

    @property
    def transform(self) -> Any:
        return self.rows.transform

    def set_epoch(self, epoch: int) -> None:
        self.hf.set_epoch(epoch)

    @property
    def num_skipped(self) -> int:
        return self.corrupt.skipped

    @property
    def num_repeated(self) -> int:
        """Samples re-read this run to fill a short worker's quota (0 with balanced shards)."""
        return int(self.repeats.sum())

    def __len__(self) -> int:
        if self.quotas is None:
            raise TypeError("this stream has no fixed length")
        return sum(self.quotas)

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        wid = 0 if info is None else info.id
        quota = None if self.quotas is None else self.quotas[wid % len(self.quotas)]
        if quota == 0:
            return
        produced = 0
        passes = 0
        bad_positions: set[int] = set()  # met in this epoch: counted once even when re-read
        while True:
            for position, row in enumerate(self.hf):
                if position in bad_positions:
                    continue
                where = f"stream position {position} of rank {self.rank} worker {wid}"
                try:
                    sample = self.rows(row, where)
                except CorruptImageError as exc:
                    self.corrupt.handle(exc, where)
                    bad_positions.add(position)
                    continue
                if passes:
                    self.repeats[1 + wid % MAX_WORKER_SLOTS] += 1
                yield sample
                produced += 1
                if quota is not None and produced >= quota:
                    return
            if quota is None:
                return
            if produced == 0:
                raise DataError(
                    f"dataset '{self.corrupt.dataset}' split '{self.corrupt.split}': loader worker "
                    f"{wid} of rank {self.rank} got no readable sample. Fix: use fewer "
                    f"data.loader.num_workers or a dataset with more shards."
                )
            passes += 1
            log.warning(
                "rank %d worker %d: its shards held fewer samples than its quota of %d; re-reading "
                "from the start so every rank takes the same number of steps (shards of unequal "
                "size). Shards divisible by world_size x num_workers avoid this.",
                self.rank,
                wid,
                quota,
            )


class TrainLoader(DataLoader):
    """The training DataLoader: finishes uint8 batches and sets the epoch of iterable datasets.

    * ``finisher``: applied to each batch's images in this (main) process, so that iterating the
      loader yields float normalised batches. The data module passes None when a Trainer drives
      it and finishes the batches on the device instead (``on_after_batch_transfer``).
    * ``epoch_fn``: Lightning calls ``set_epoch`` only on samplers and an ``IterableDataset`` has
      none, so this loader calls ``dataset.set_epoch(epoch_fn())`` before every pass; when
      ``epoch_fn`` is None or returns None the passes are counted instead.

    Both are constructor arguments so that Lightning can re-create the loader (it does to add a
    DistributedSampler) without losing them.
    """

    def __init__(
        self,
        dataset: Any,
        *args: Any,
        finisher: Callable[[torch.Tensor], torch.Tensor] | None = None,
        epoch_fn: Callable[[], int | None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(dataset, *args, **kwargs)
        self.finisher = finisher
        self.epoch_fn = epoch_fn
        self._passes = 0

    def __iter__(self):
        epoch = self.epoch_fn() if self.epoch_fn is not None else None
        epoch = self._passes if epoch is None else epoch
        self._passes += 1
        set_epoch = getattr(self.dataset, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(int(epoch))
        batches = super().__iter__()
        if self.finisher is None:
            return batches
        return ((self.finisher(images), *rest) for images, *rest in batches)
