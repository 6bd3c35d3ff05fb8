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
            dataset=data_dir, streaming=streaming, num_workers=workers, persistent_workers=True,
            batch_size=4, image_size=16, mixup=0.0, cutmix=0.0, auto_augment=None, reprob=0.0,
            seed=7,
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
