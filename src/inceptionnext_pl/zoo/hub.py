"""Publish to the Hugging Face Hub in timm's format: export a folder, then upload it.

``export_hub(source, directory)`` writes ``config.json``, ``model.safetensors`` and a ``README.md``
model card (timm's ``save_for_hf`` layout), so ``timm.create_model("local-dir:DIR",
pretrained=True)`` rebuilds the network. Where timm has the same architecture (``models.twins``)
the folder names timm's, and plain timm loads it without this package.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch
from timm.models import save_for_hf
from torch import nn

from ..models import OUR_MODELS
from ..models.twins import timm_twin
from ..paper import ARXIV, BIBTEX, CODE, TITLE, reported
from ..registry import ZooEntry
from .convert import Checkpoint, read_checkpoint
from .errors import ZooError
from .transfer import model_from, resolve

CARD_METRICS = ("acc1", "acc5", "loss", "mIoU", "mAcc", "aAcc")


class PublishError(ZooError):
    """The hub refused the upload, or could not be reached; the folder stays for a retry."""


@dataclass
class HubExport:
    directory: Path
    architecture: str  # as config.json names it
    plain_timm: bool  # timm alone loads it (the architecture is timm's)
    num_classes: int
    source: str
    model_name: str  # as this package names it
    model_args: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)

    def timm_call(self, where: str | None = None) -> str:
        """The line that loads the folder (or the hub repo ``where``, e.g. ``hf-hub:me/model``)."""
        name = where or f"local-dir:{self.directory}"
        call = f"timm.create_model({name!r}, pretrained=True)"
        return (
            call
            if self.plain_timm
            else f"import inceptionnext_pl  # registers {self.architecture}\n{call}"
        )


def _same_outputs(ours: nn.Module, twin: nn.Module, size: int) -> None:
    """The twin must compute what ours does before it is written under timm's name."""
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = ours.eval()(x), twin.eval()(x)
    if not torch.allclose(a, b, rtol=1e-4, atol=1e-5):
        raise RuntimeError(f"timm's twin differs by {(a - b).abs().max():.3g}: a key map is wrong")


def _data_config(model: nn.Module, ckpt: Checkpoint, entry: ZooEntry | None) -> dict[str, Any]:
    """The evaluation preprocessing the weights were measured with."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    out: dict[str, Any] = {
        k: cfg[k] for k in ("input_size", "crop_pct", "interpolation") if k in cfg
    }
    if entry is not None:
        out.update(input_size=tuple(entry.input_size), crop_pct=entry.crop_pct)
        out["interpolation"] = entry.interpolation
    data = ckpt.data_hparams
    if data.get("image_size"):
        out["input_size"] = (3, int(data["image_size"]), int(data["image_size"]))
    for key in ("crop_pct", "mean", "std"):
        if data.get(key) is not None:
            out[key] = tuple(data[key]) if key in ("mean", "std") else data[key]
    if data.get("interpolation") in ("bicubic", "bilinear", "nearest"):  # not "random" (training)
        out["interpolation"] = data["interpolation"]
    return out


def _count(model: nn.Module, input_size: tuple[int, int, int]) -> tuple[float, float]:
    from ..bench.measure import count  # params and MACs as the size table counts them

    return count(model, tuple(input_size[1:]))


def model_card(
    export: HubExport,
    model: nn.Module,
    ckpt: Checkpoint,
    entry: ZooEntry | None,
    data: dict,
    repo_id: str | None = None,
) -> str:
    """A model card with the weights' own sizes and measured metrics; the paper's are quoted apart."""
    from timm.models._hub import generate_readme

    params, macs = _count(model, data["input_size"])
    h, w = data["input_size"][1:]
    arch = export.architecture
    args = ", ".join(f"{k}={v!r}" for k, v in export.model_args.items() if k != "num_classes")
    details: dict[str, Any] = {
        "Model Type": "Image classification / feature backbone",
        "Architecture": f"`{arch}`" + (f" ({args})" if args else ""),
        "Model Stats": {
            "Params (M)": f"{params:.2f}",
            "GMACs": f"{macs:.2f}",
            "Image size": f"{h} x {w}",
            "Classes": export.num_classes,
        },
        "Papers": {TITLE: ARXIV},
        "Original": CODE,
        "Exported from": f"`{export.source}` ({ckpt.description})",
    }
    needs = "" if export.plain_timm else "import inceptionnext_pl  # registers the architecture\n"
    where = f"hf-hub:{repo_id}" if repo_id else "local-dir:PATH/TO/THIS/FOLDER"
    usage = (
        "```python\nimport timm\n"
        + needs
        + f"model = timm.create_model({where!r}, pretrained=True).eval()\n"
        + "cfg = timm.data.resolve_data_config({}, model=model)\n"
        + "transform = timm.data.create_transform(**cfg)\n```\n"
    )
    card = {"details": details, "usage": usage, "citation": BIBTEX, "license": _license(entry)}
    card["tags"] = ["image-classification", "timm", "inceptionnext-pl"]
    text = generate_readme(card, export.model_name)
    text += "\n## Metrics of these weights\n"
    if export.metrics:
        text += "Measured by the run that trained them, on its own validation data:\n\n"
        text += "| metric | value |\n|---|---|\n"
        text += "".join(f"| {k} | {v:.4g} |\n" for k, v in export.metrics.items())
        trained = ckpt.lightning.trained if ckpt.lightning else {}
        if trained:
            text += f"\nSaved at epoch {trained.get('epoch')}, step {trained.get('step')}.\n"
    else:
        text += "The source file records no measured metrics.\n"
    row = reported(entry.name if entry else export.model_name) or reported(export.model_name)
    if row is not None and row.top1 is not None:
        text += (
            f"\n## Quoted from the paper (not measured here)\n{row.label}: {row.top1}% ImageNet-1k "
            f"top-1 at {row.img_size} px ({row.ref} of the InceptionNeXt paper).\n"
        )
    return text


def _license(entry: ZooEntry | None) -> str:
    """A released file's licence; a run's weights are their owner's to license ("other")."""
    return entry.license if entry is not None and entry.license else "other"


def _tag(entry: ZooEntry | None) -> str:
    """The pretrained tag the folder's config gives: the release's (``sail_in1k``), else ours."""
    names = (entry.name, *entry.aliases) if entry is not None else ()
    return next((n.split(".", 1)[1] for n in names if "." in n), "inceptionnext_pl")


def _card_metrics(ckpt: Checkpoint) -> dict[str, float]:
    """The run's last evaluation of the weights exported: ``val_ema/*`` for EMA weights."""
    logged = ckpt.lightning.metrics if ckpt.lightning else {}
    prefix = "val_ema/" if ckpt.ema else "val/"
    return {
        k: v for k, v in logged.items() if k.startswith(prefix) and k.split("/")[1] in CARD_METRICS
    }


def export_hub(
    source: str | os.PathLike,
    directory: str | os.PathLike,
    *,
    ema: bool = False,
    model_name: str | None = None,
    trust: bool = False,
    progress: bool = True,
    repo_id: str | None = None,
) -> HubExport:
    """Write ``source`` (a zoo name, checkpoint file or run directory; raw or ``ema``) as a folder
    in timm's hub format; ``repo_id`` is where the card says it is published. The folder appears
    complete or not at all."""
    directory = Path(directory)
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise ZooError(f"{directory} already exists and is not empty: give a new folder.")
    path, entry = resolve(source, progress=progress)
    ckpt = read_checkpoint(path, ema=ema, trust=trust)
    model, _ = model_from(ckpt, entry, model_name=model_name)
    arch = model_name or ckpt.arch.get("model_name") or (entry.arch if entry else "")
    kwargs = dict(ckpt.arch.get("model_kwargs") or {})
    twin = timm_twin(arch, kwargs)
    data = _data_config(model, ckpt, entry)
    if twin is not None:
        target = timm.create_model(twin.name, num_classes=model.num_classes, **twin.model_args)
        target.load_state_dict(twin.to_timm(model.state_dict(), target), strict=True)
        _same_outputs(model, target, size=64)
        name, args = twin.name, dict(twin.model_args)
    else:
        target, name, args = model, arch, kwargs
    plain = twin is not None or arch not in OUR_MODELS  # timm's baselines are timm's already
    metrics = _card_metrics(ckpt)
    export = HubExport(directory, name, plain, model.num_classes, str(source), arch, args, metrics)
    partial = directory.with_name(f".{directory.name}.partial")
    if partial.exists():  # left by an export that died: this one starts afresh
        shutil.rmtree(partial)
    own = {"pretrained_cfg": {"tag": _tag(entry), "license": _license(entry)}}
    save_for_hf(
        target.eval(), str(partial), model_config=own, safe_serialization=True, data_config=data
    )
    card = model_card(export, target, ckpt, entry, data, repo_id)
    (partial / "README.md").write_text(card, "utf-8")
    if directory.exists():
        directory.rmdir()  # empty, checked above
    os.replace(partial, directory)
    return export


def push_to_hub(directory: str | os.PathLike, repo_id: str, *, private: bool = False) -> str:
    """Upload an exported folder to ``repo_id`` (created if needed) with the token of the
    environment (``HF_TOKEN`` or ``hf auth login``); returns the repo's URL."""
    import huggingface_hub
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError, HTTPError, OfflineModeIsEnabled

    directory = Path(directory)
    kept = f"The folder {directory} is kept: run the upload again when that is fixed."
    if constants.HF_HUB_OFFLINE:
        raise PublishError(f"HF_HUB_OFFLINE is set, so nothing can be uploaded. {kept}")
    token = huggingface_hub.get_token()
    if not token:
        raise PublishError(
            f"No Hugging Face token: set HF_TOKEN to a token with write access to {repo_id} "
            f"(or run `hf auth login`). {kept}"
        )
    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(repo_id=url.repo_id, folder_path=str(directory))
    except HfHubHTTPError as e:
        status = getattr(e.response, "status_code", None)
        why = {
            401: "the hub rejected the token (expired or mistyped): set HF_TOKEN to a valid one",
            403: f"the token may not write to {repo_id}: use a write token of its owner, or a "
            "repo id under your own name",
        }.get(status, f"the hub answered HTTP {status}")
        raise PublishError(f"Upload to {repo_id} failed: {why}. {kept}") from e
    except (HTTPError, OfflineModeIsEnabled) as e:  # the HTTP client's transport errors: no answer
        raise PublishError(
            f"Upload to {repo_id} failed: the hub cannot be reached ({type(e).__name__}: {e}). "
            f"{kept}"
        ) from e
    return str(url)
