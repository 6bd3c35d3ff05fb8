"""Class activation maps over pytorch-grad-cam: target layers per family, isolation, batching.

``compute_cam`` is what the training callback, the ``inceptionnext-cam`` command and the notebook
call. It never changes the model it is given: train/eval mode, ``requires_grad``, ``.grad`` and
weights are as before, hooks are released, and the maps are computed in fp32 with autograd
enabled even inside ``torch.inference_mode()`` (Lightning's validation loop) or autocast.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from pytorch_grad_cam import (
    EigenCAM,
    GradCAM,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    ScoreCAM,
    XGradCAM,
)
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.utils.image import show_cam_on_image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn

from ..errors import InceptionNextError

METHODS: dict[str, type[BaseCAM]] = {
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "xgradcam": XGradCAM,
    "eigencam": EigenCAM,
    "scorecam": ScoreCAM,
    "hirescam": HiResCAM,
    "layercam": LayerCAM,
}
_ALIASES = {"gradcampp": "gradcam++", "gradcamplusplus": "gradcam++"}


class CamError(InceptionNextError, ValueError):
    """Bad input to the Grad-CAM API; the message says what was wrong and how to fix it."""


def resolve_method(method: str) -> str:
    """Canonical method name ('GradCAM++', 'grad_cam_pp' -> 'gradcam++'), or a CamError."""
    key = str(method).lower().replace("-", "").replace("_", "").replace(" ", "")
    key = _ALIASES.get(key, key)
    if key not in METHODS:
        raise CamError(f"Unknown CAM method {method!r}; choose one of: {', '.join(METHODS)}")
    return key


def nhwc_to_nchw(t: torch.Tensor) -> torch.Tensor:
    """Reshape for channels-last layers (timm's Swin): (B, H, W, C) -> (B, C, H, W)."""
    return t.permute(0, 3, 1, 2)


@dataclass(frozen=True)
class TargetLayer:
    """Where to hook: a dotted module name in the model, and how to bring its output to NCHW."""

    name: str
    reshape_transform: Callable[[torch.Tensor], torch.Tensor] | None = None
    family: str = "custom"


def _families() -> list[tuple[str, type, Callable[[nn.Module], str], Callable | None]]:
    """(family, class, last-layer name, reshape) for every family we know, checked in order."""
    from timm.models.convnext import ConvNeXt
    from timm.models.inception_next import MetaNeXt as TimmMetaNeXt
    from timm.models.resnet import ResNet
    from timm.models.swin_transformer import SwinTransformer

    from ..models.metanext import MetaNeXt, MetaNeXtIsotropic

    fams: list[tuple[str, type, Callable[[nn.Module], str], Callable | None]] = [
        ("metanext", MetaNeXt, lambda m: f"stages.{len(m.stages) - 1}", None),
        ("metanext_isotropic", MetaNeXtIsotropic, lambda m: f"blocks.{len(m.blocks) - 1}", None),
        ("timm_convnext", ConvNeXt, lambda m: f"stages.{len(m.stages) - 1}", None),
        ("timm_inception_next", TimmMetaNeXt, lambda m: f"stages.{len(m.stages) - 1}", None),
        # timm's Swin keeps (B, H, W, C) inside; norm1 of the last block sees the final grid.
        (
            "timm_swin",
            SwinTransformer,
            lambda m: f"layers.{len(m.layers) - 1}.blocks.{len(m.layers[-1].blocks) - 1}.norm1",
            nhwc_to_nchw,
        ),
        ("resnet", ResNet, lambda m: f"layer4.{len(m.layer4) - 1}", None),
    ]
    with contextlib.suppress(ImportError):
        from torchvision.models import ResNet as TvResNet

        fams.append(("resnet", TvResNet, lambda m: f"layer4.{len(m.layer4) - 1}", None))
    return fams


KNOWN_FAMILIES = (
    "InceptionNeXt / MetaNeXt / ConvNeXt variants (stages[-1]), isotropic MetaNeXt (blocks[-1]), "
    "timm ConvNeXt and InceptionNeXt (stages[-1]), timm Swin (layers[-1].blocks[-1].norm1, "
    "channels-last), ResNet (layer4[-1])"
)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain network behind torch.compile / DDP wrappers (hooks and names live there)."""
    while True:
        inner = getattr(model, "_orig_mod", None) or (
            model.module if isinstance(model, nn.parallel.DistributedDataParallel) else None
        )
        if inner is None:
            return model
        model = inner


def find_target_layer(
    model: nn.Module,
    target_layer: str | nn.Module | None = None,
    reshape_transform: Callable[[torch.Tensor], torch.Tensor] | str | None = None,
) -> TargetLayer:
    """The layer to hook for ``model``: its family's default, or ``target_layer`` given by name/module.

    ``reshape_transform="nhwc"`` marks a channels-last layer given explicitly.
    """
    model = unwrap(model)
    rt = nhwc_to_nchw if reshape_transform == "nhwc" else reshape_transform
    if isinstance(rt, str):
        raise CamError(f"reshape_transform={reshape_transform!r}: pass a callable or 'nhwc'")
    if target_layer is None:
        for family, cls, name_of, default_rt in _families():
            if isinstance(model, cls):
                return TargetLayer(name_of(model), rt or default_rt, family)
        raise CamError(
            f"No known Grad-CAM target layer for {type(model).__name__}. Pass one explicitly: "
            "target_layer='<dotted module name>' (e.g. 'stages.3' or 'layer4.1'; "
            "`inceptionnext-cam --target-layer NAME`), and reshape_transform='nhwc' when that "
            f"layer outputs (B, H, W, C). Known families: {KNOWN_FAMILIES}."
        )
    if isinstance(target_layer, nn.Module):
        for name, mod in model.named_modules():
            if mod is target_layer:
                return TargetLayer(name, rt, "custom")
        raise CamError("target_layer is a module that is not part of this model")
    try:
        model.get_submodule(target_layer)
    except AttributeError:
        top = ", ".join(n for n, _ in model.named_children())
        raise CamError(
            f"target_layer={target_layer!r} is not a submodule of {type(model).__name__}; "
            f"its top-level children are: {top}"
        ) from None
    return TargetLayer(target_layer, rt, "custom")


@dataclass
class CamResult:
    """Maps (B, H, W) in [0, 1], overlays (B, H, W, 3) uint8 RGB, and the model's answers."""

    maps: np.ndarray
    overlays: np.ndarray
    images: np.ndarray  # (B, H, W, 3) float RGB in [0, 1], what the overlays are drawn on
    predictions: np.ndarray  # (B,) argmax class
    confidences: np.ndarray  # (B,) softmax probability of the predicted class
    targets: np.ndarray  # (B,) class each map explains
    method: str
    layer: str
    grid: tuple[int, int]  # (h, w) of the hooked activation: 1x1 means constant, meaningless maps

    @property
    def degenerate(self) -> bool:
        return self.grid == (1, 1)


def degenerate_message(layer: str, size: int) -> str:
    return (
        f"the target layer {layer!r} has a 1x1 grid at {size}px input, so every map is constant. "
        "Hook an earlier layer (target_layer / --target-layer, e.g. 'stages.1' or 'stages.2') or "
        "use a larger input size."
    )


def _is_fp32(model: nn.Module) -> bool:
    return all(
        t.dtype == torch.float32
        for t in [*model.parameters(), *model.buffers()]
        if t.is_floating_point()
    )


@contextlib.contextmanager
def isolated(model: nn.Module) -> Iterator[nn.Module]:
    """A fp32 network to run CAM on, leaving ``model`` exactly as it was.

    fp32 models are used in place: BaseCAM's ``eval()`` and ``zero_grad()`` are undone (modes and
    ``.grad`` references restored), and parameters are frozen for the duration so that no
    parameter gradient is computed or accumulated (nor any DDP hook fired). This costs no copy.
    Models in another precision (bf16-true, fp16) are deep-copied and cast to fp32 instead.
    """
    if not _is_fp32(model):
        grads = [(p, p.grad) for p in model.parameters()]
        try:
            for p, _ in grads:  # so that the copy does not duplicate them
                p.grad = None
            net = copy.deepcopy(model).float()
        finally:
            for p, grad in grads:
                p.grad = grad
        net.requires_grad_(False)
        yield net
        return
    modes = [(m, m.training) for m in model.modules()]
    params = list(model.parameters())
    state = [(p, p.requires_grad, p.grad) for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        yield model
    finally:
        for p, req, grad in state:
            p.requires_grad_(req)
            p.grad = grad
        for m, training in modes:
            m.training = training


class _ClassTarget:
    """Score of one class (like ClassifierOutputTarget), with a clear error when out of range."""

    def __init__(self, index: int) -> None:
        self.index = index

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        n = output.shape[-1]
        if not 0 <= self.index < n:
            raise CamError(f"class index {self.index} is out of range: the model has {n} classes")
        return output[..., self.index]


def _num_classes(model: nn.Module) -> int | None:
    n = getattr(model, "num_classes", None)
    return n if isinstance(n, int) and n > 0 else None


def _targets(targets: int | Sequence[int] | None, batch: int, n_classes: int | None) -> list | None:
    if targets is None:
        return None
    if isinstance(targets, int | np.integer):
        targets = [int(targets)] * batch
    targets = [int(t) for t in targets]
    if len(targets) != batch:
        raise CamError(f"{len(targets)} target classes given for a batch of {batch} images")
    for t in targets:
        if t < 0 or (n_classes is not None and t >= n_classes):
            hi = f"0..{n_classes - 1}" if n_classes else "0 or more"
            raise CamError(
                f"class index {t} is out of range: the model has {n_classes} classes ({hi})"
            )
    return targets


def denormalize(inputs: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Normalised (B, 3, H, W) -> display images (B, H, W, 3) float in [0, 1]."""
    x = inputs.detach().float().cpu()
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (x * s + m).clamp(0, 1).permute(0, 2, 3, 1).numpy()


def _norm_stats(model: nn.Module) -> tuple[Sequence[float], Sequence[float]]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return cfg.get("mean", IMAGENET_DEFAULT_MEAN), cfg.get("std", IMAGENET_DEFAULT_STD)


def compute_cam(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: int | Sequence[int] | None = None,
    method: str = "gradcam",
    target_layer: str | nn.Module | None = None,
    reshape_transform: Callable[[torch.Tensor], torch.Tensor] | str | None = None,
    images: np.ndarray | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    image_weight: float = 0.5,
    batch_size: int = 16,
) -> CamResult:
    """Class activation maps of ``model`` for a batch of normalised ``inputs`` (B, C, H, W).

    ``targets``: a class index for every image, one per image, or None for the predicted class.
    ``images`` (B, H, W, 3, floats in [0, 1]) are what overlays are drawn on; by default the
    inputs de-normalised with ``mean``/``std`` (default: the model's pretrained config).
    Runs ``batch_size`` images at a time, which bounds memory.
    """
    name = resolve_method(method)
    if inputs.ndim == 3:
        inputs = inputs.unsqueeze(0)
    if inputs.ndim != 4:
        raise CamError(f"inputs must be (B, C, H, W); got shape {tuple(inputs.shape)}")
    base = unwrap(model)
    layer = find_target_layer(base, target_layer, reshape_transform)
    tgts = _targets(targets, inputs.shape[0], _num_classes(base))
    if images is None:
        dm, ds = _norm_stats(base)
        images = denormalize(inputs, mean or dm, std or ds)
    images = np.asarray(images, dtype=np.float32)
    if images.max(initial=0.0) > 1.0:
        images = images / 255.0

    maps, logits, grid = [], [], (0, 0)
    device = next(base.parameters()).device
    with (
        isolated(base) as net,
        torch.inference_mode(False),
        torch.enable_grad(),
        torch.autocast(device.type, enabled=False),
        # A compiled model (`model.compile()`) runs eagerly here: hooks would force recompiles.
        torch.compiler.set_stance("force_eager"),
    ):
        hook_at = net.get_submodule(layer.name)
        for i in range(0, inputs.shape[0], batch_size):
            # A fresh, normal (not inference-mode) fp32 tensor that autograd can track from.
            x = inputs[i : i + batch_size].detach().clone().to(device, torch.float32)
            x.requires_grad_(True)
            chunk = None if tgts is None else [_ClassTarget(t) for t in tgts[i : i + batch_size]]
            cam = METHODS[name](net, [hook_at], reshape_transform=layer.reshape_transform)
            if name == "scorecam":
                cam.batch_size = batch_size
            # try/finally, not BaseCAM's `with`: its __exit__ swallows IndexError silently.
            try:
                maps.append(cam(input_tensor=x, targets=chunk))
                logits.append(cam.outputs.detach().float().cpu())
                grid = tuple(cam.activations_and_grads.activations[0].shape[-2:])
            finally:
                cam.activations_and_grads.release()
                cam.outputs = None
    grayscale = np.concatenate(maps).astype(np.float32)
    out = torch.cat(logits)
    probs = out.softmax(-1)
    preds = out.argmax(-1).numpy()
    overlays = np.stack(
        [
            show_cam_on_image(img, m, use_rgb=True, image_weight=image_weight)
            for img, m in zip(images, grayscale)
        ]
    )
    return CamResult(
        maps=grayscale,
        overlays=overlays,
        images=images,
        predictions=preds,
        confidences=probs.max(-1).values.numpy(),
        targets=np.asarray(tgts if tgts is not None else preds),
        method=name,
        layer=layer.name,
        grid=(int(grid[0]), int(grid[1])),
    )
