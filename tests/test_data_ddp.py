"""Real 2-process DDP (gloo, CPU) over ImageDataModule: map-style and streaming shards.

One subprocess runs a script that calls Lightning's ``Trainer(strategy="ddp", devices=2)`` twice
(map-style, then streaming with 2 persistent loader workers per rank). Every sample carries a
unique label, so the labels each rank trains on show the shards: per epoch the two ranks' shards
must be disjoint, cover the split, take the same number of steps, and be reshuffled between
epochs.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

N_TRAIN, N_VAL, TRAIN_SHARDS = 32, 16, 4

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import lightning as L
    import torch
    from inceptionnext_pl.data import ImageDataModule

    data_dir, out_path = sys.argv[1], sys.argv[2]


    class Recorder(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.seen = {"train": {}, "val": {}}

        def training_step(self, batch, batch_idx):
            x, y = batch
            assert x.dtype == torch.float32 and y.dtype == torch.int64
            self.seen["train"].setdefault(str(self.current_epoch), []).extend(y.tolist())
            return (self.w * x.mean()).sum()

        def validation_step(self, batch, batch_idx):
            if not self.trainer.sanity_checking:
                seen = self.seen["val"].setdefault(str(self.current_epoch), [])
                seen.extend(batch[1].tolist())

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)


    results = {}
    for mode, streaming, workers in (("map", False, 1), ("stream", True, 2)):
        dm = ImageDataModule(
            dataset=data_dir, streaming=streaming, image_size=16, seed=7, mixup=None,
            loader=dict(batch_size=4, num_workers=workers, persistent_workers=True),
            augment=dict(auto_augment=None, reprob=0.0),
        )
        module = Recorder()
        trainer = L.Trainer(
            accelerator="cpu", devices=2, strategy="ddp", max_epochs=2, logger=False,
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            num_sanity_val_steps=0, use_distributed_sampler=True,
        )
        trainer.fit(module, datamodule=dm)
        gathered = [None] * trainer.world_size
        torch.distributed.all_gather_object(gathered, module.seen)
        results[mode] = gathered
    if trainer.global_rank == 0:
        with open(out_path, "w") as f:
            json.dump(results, f)
    """
)


def _write_parquet(root, n_train: int, n_val: int, train_shards: int) -> None:
    """Hub-schema parquet shards; sample i has label i (train) or n_train + i (val)."""
    import datasets
    from PIL import Image

    names = [f"c{i:03d}" for i in range(n_train + n_val)]
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=names)}
    )
    rng = np.random.default_rng(0)

    def png(i: int) -> dict:
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(buf, "PNG")
        return {"bytes": buf.getvalue(), "path": f"img_{i:04d}.png"}

    os.makedirs(root / "data")
    per = n_train // train_shards
    for s in range(train_shards):
        ids = range(s * per, (s + 1) * per)
        ds = datasets.Dataset.from_dict(
            {"image": [png(i) for i in ids], "label": list(ids)}, features=features
        )
        ds.to_parquet(str(root / "data" / f"train-{s:05d}-of-{train_shards:05d}.parquet"))
    ids = range(n_train, n_train + n_val)
    ds = datasets.Dataset.from_dict(
        {"image": [png(i) for i in ids], "label": list(ids)}, features=features
    )
    ds.to_parquet(str(root / "data" / "validation-00000-of-00001.parquet"))


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    _write_parquet(root / "ds", N_TRAIN, N_VAL, TRAIN_SHARDS)
    script = root / "ddp_run.py"
    script.write_text(SCRIPT)
    out = root / "seen.json"
    env = dict(os.environ, HF_DATASETS_CACHE=str(root / "cache"), HF_HUB_OFFLINE="1")
    env.pop("LOCAL_RANK", None)
    proc = subprocess.run(
        [sys.executable, str(script), str(root / "ds"), str(out)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("mode", ["map", "stream"])
def test_ddp_train_shards_are_disjoint_covering_and_reshuffled(ddp_results, mode):
    ranks = ddp_results[mode]
    assert len(ranks) == 2
    for epoch in ("0", "1"):
        a, b = ranks[0]["train"][epoch], ranks[1]["train"][epoch]
        assert len(a) == len(b) == N_TRAIN // 2  # same number of steps on both ranks
        assert len(set(a)) == len(a) and len(set(b)) == len(b)  # nothing read twice
        assert not set(a) & set(b)  # disjoint
        assert set(a) | set(b) == set(range(N_TRAIN))  # covering
    # set_epoch reached the sampler / the (persistent) stream workers: a new order per epoch.
    for r in ranks:
        assert r["train"]["0"] != r["train"]["1"]


@pytest.mark.parametrize("mode", ["map", "stream"])
def test_ddp_validation_reads_every_sample_once(ddp_results, mode):
    ranks = ddp_results[mode]
    for epoch in ("0", "1"):
        a, b = ranks[0]["val"][epoch], ranks[1]["val"][epoch]
        assert sorted(a + b) == list(range(N_TRAIN, N_TRAIN + N_VAL))


@pytest.mark.parametrize(
    "num_shards, world, workers, n, batch, by_shards",
    [
        (4, 2, 2, 32, 4, True),  # the DDP run above: one shard per worker, nothing dropped
        (294, 8, 8, 1_281_167, 128, False),  # ImageNet's 294 parquet files on 8 GPUs
        (294, 2, 7, 1_281_167, 128, True),  # 147 shards per rank, 21 per worker
        (3, 1, 2, 100, 8, True),  # uneven shards per worker
    ],
)
def test_stream_plan_gives_every_rank_the_same_steps(
    num_shards, world, workers, n, batch, by_shards
):
    from inceptionnext_pl.data import stream_plan

    plan = stream_plan(
        num_shards=num_shards,
        world_size=world,
        num_workers=workers,
        num_examples=n,
        batch_size=batch,
        equalize=True,
    )
    per_rank = num_shards // world if by_shards else num_shards
    assert sum(plan.shards_per_worker) == per_rank  # every shard of the rank has a reader
    assert plan.num_workers == min(workers, per_rank)
    assert all(q % batch == 0 for q in plan.quotas)  # whole batches: drop_last drops nothing
    # the rank's quota is its share of the split, less under one batch per worker
    share = n / world
    assert share - batch * plan.num_workers <= plan.length <= share
    assert plan.length > 0


def test_stream_plan_without_known_size_has_no_quota():
    from inceptionnext_pl.data import stream_plan

    plan = stream_plan(
        num_shards=1, world_size=1, num_workers=4, num_examples=None, batch_size=8, equalize=True
    )
    assert plan.quotas is None and plan.num_workers == 1  # one shard: extra workers would idle
