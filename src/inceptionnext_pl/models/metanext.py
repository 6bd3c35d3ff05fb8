"""MetaNeXt (Sec. 3.1, Eq. 1-3): the block, the 4-stage network and the isotropic network.

Module names and parameter shapes follow the official release and timm's ``inception_next``,
so their state dicts load unchanged (stem.0/1, stages.i.downsample.0/1,
stages.i.blocks.j.{token_mixer, norm, mlp.fc1, mlp.fc2, gamma}, head.{fc1, norm, fc2}).
Both networks carry timm's model API: classifier reset with any of timm's pooling types,
``forward_intermediates`` / ``prune_intermediate_layers``, gradient checkpointing, and
TorchScript / FX compatibility.
"""

# No ``from __future__ import annotations``: TorchScript reads the forward annotations.
from collections.abc import Sequence
from typing import Literal

import torch
import torch.fx
import torch.nn.functional as F
from timm.layers import (
    DropPath,
    LayerNorm2d,
    SelectAdaptivePool2d,
    get_device_dtype,
    register_notrace_function,
    trunc_normal_,
)
from timm.models._features import feature_take_indices
from timm.models._manipulate import checkpoint, checkpoint_seq
from torch import nn

from .token_mixers import MixerCfg, build_token_mixer

NormName = Literal["batch", "layer"]
HeadName = Literal["mlp", "linear"]
# timm's SelectAdaptivePool2d types; '' keeps the map, and the head then runs at every position.
POOL_TYPES = (
    "",
    "avg",
    "max",
    "avgmax",
    "catavgmax",
    "fast",
    "fastavg",
    "fastmax",
    "fastavgmax",
    "fastcatavgmax",
)
OUTPUT_FORMATS = ("NCHW", "NLC")
OUTPUT_STRIDES = (8, 16, 32)


def drop_path_rates(rate: float, depth: int) -> list[float]:
    """Stochastic depth rising linearly from 0 to ``rate`` over the blocks (plain floats, meta-safe)."""
    return [rate * i / max(depth - 1, 1) for i in range(depth)]


def norm_layer(name: NormName, dim: int) -> nn.Module:
    """BatchNorm (the paper's default, for speed) or channels-first LayerNorm (Table 8)."""
    if name == "batch":
        return nn.BatchNorm2d(dim)
    if name == "layer":
        return LayerNorm2d(dim, eps=1e-6)
    raise ValueError(f"norm={name!r} is unknown; use 'batch' or 'layer'")


def stage_strides(num_stages: int, output_stride: int = 32) -> list[tuple[int, int, int]]:
    """(stride, downsample dilation, block dilation) of each stage after the stride-4 stem.

    Past ``output_stride`` a stage keeps the resolution and dilates instead (DeepLab): its 2x2
    downsampling conv runs at stride 1 with the previous stage's dilation, its blocks' mixers at
    the product of the strides given up, so every kernel still sees the same input pixels.
    """
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(
            f"output_stride={output_stride} is not supported; use one of {OUTPUT_STRIDES}"
        )
    out, reduction, dilation = [], 4, 1
    for i in range(num_stages):
        stride = 1 if i == 0 else 2
        first = dilation
        if reduction >= output_stride and stride > 1:
            dilation *= stride
            stride = 1
        reduction *= stride
        out.append((stride, first, dilation))
    return out


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Conv2d | nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


class ConvMlp(nn.Module):
    """1x1 conv -> GELU -> 1x1 conv (Eq. 3)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class MetaNeXtBlock(nn.Module):
    """Y = Norm(TokenMixer(X)); out = X + DropPath(gamma * MLP(Y)) (Eq. 1-3).

    ``ls_init_value=0`` removes layer scale (timm's create_model drops ``None`` kwargs).
    """

    def __init__(
        self,
        dim: int,
        mixer: MixerCfg,
        norm: NormName = "batch",
        mlp_ratio: float = 4.0,
        ls_init_value: float | None = 1e-6,
        drop_path: float = 0.0,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        self.token_mixer = build_token_mixer(dim, mixer, dilation)
        self.norm = norm_layer(norm, dim)
        self.mlp = ConvMlp(dim, int(mlp_ratio * dim))
        self.gamma = nn.Parameter(ls_init_value * torch.ones(dim)) if ls_init_value else None
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.mlp(self.norm(self.token_mixer(x)))
        if self.gamma is not None:
            y = y.mul(self.gamma.reshape(1, -1, 1, 1))
        return self.drop_path(y) + x


class DilatedDownsampleConv(nn.Conv2d):
    """The 2x2 downsampling conv of a dilated stage: stride 1, padded bottom and right.

    Each output reads the same pixels as the stride-2 conv it replaces would (output ``2i`` the
    pixels ``2i`` and ``2i + dilation``), so a dilated network's features at every second
    position are exactly the undilated network's. timm pads 'same' (both sides), which shifts
    the grid by a pixel at ``dilation=2``.
    """

    def __init__(self, in_chs: int, out_chs: int, dilation: int) -> None:
        super().__init__(in_chs, out_chs, 2, dilation=dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.dilation[0]
        return super().forward(F.pad(x, (0, d, 0, d)))


class MetaNeXtStage(nn.Module):
    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        depth: int,
        mixer: MixerCfg,
        norm: NormName = "batch",
        stride: int = 2,
        mlp_ratio: float = 4.0,
        ls_init_value: float | None = 1e-6,
        drop_path_rates: Sequence[float] | None = None,
        dilation: tuple[int, int] = (1, 1),
    ) -> None:
        super().__init__()
        self.grad_checkpointing = False
        first, inner = dilation
        if stride > 1 or first != inner:
            conv = (
                nn.Conv2d(in_chs, out_chs, 2, stride=stride)
                if stride > 1
                else DilatedDownsampleConv(in_chs, out_chs, first)
            )
            self.downsample = nn.Sequential(norm_layer(norm, in_chs), conv)
        else:
            self.downsample = nn.Identity()
        rates = drop_path_rates or [0.0] * depth
        self.blocks = nn.Sequential(
            *[
                MetaNeXtBlock(out_chs, mixer, norm, mlp_ratio, ls_init_value, rates[i], inner)
                for i in range(depth)
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)


# ----------------------------------------------------------------------------------- heads
def _pool(pool_type: str) -> SelectAdaptivePool2d:
    if pool_type not in POOL_TYPES:
        raise ValueError(
            f"global_pool={pool_type!r} is unknown; use one of {POOL_TYPES} "
            "('' keeps the feature map and applies the head at every position)"
        )
    return SelectAdaptivePool2d(pool_type=pool_type, flatten=bool(pool_type))


class _Head(nn.Module):
    """Pooling, then layers on the channel axis; with pool ``''`` they run at every position.

    The layers before the classifier are pretrained and kept by ``reset`` unless
    ``reset_other``; the first of them (``first``) reads the pooled width, so a pooling type that
    changes it (catavgmax) needs them removed. Parameter names stay those of the released heads.
    """

    classifier_name = "fc"
    first = ""  # name of the pre-classifier layer that reads the pooled features

    def _setup_pool(self, pool_type: str) -> None:
        self.global_pool = _pool(pool_type)
        self.dense = not pool_type  # a plain bool: FX and TorchScript branch on it as a constant

    def _pooled_width(self, pool: SelectAdaptivePool2d) -> int:
        return self.in_features * pool.feat_mult()

    def _drop_pre(self) -> None:
        raise NotImplementedError

    def reset(
        self,
        num_classes: int,
        pool_type: str | None = None,
        reset_other: bool = False,
        in_features: int | None = None,
    ) -> None:
        dd = get_device_dtype(self)
        first = getattr(self, self.first)
        has_pre = isinstance(first, nn.Linear | nn.LayerNorm)
        if in_features is not None and in_features != self.in_features:
            if has_pre and not reset_other:
                raise ValueError(
                    f"the head's {self.first} takes {self.in_features} features, not "
                    f"{in_features}: pass reset_other=True to remove the layers before the classifier"
                )
            self.in_features = in_features
        if pool_type is not None:
            pool = _pool(pool_type)
            width = self._pooled_width(pool)
            if has_pre and not reset_other and _in_width(first) != width:
                raise ValueError(
                    f"global_pool={pool_type!r} pools to {width} features, but the head's "
                    f"{self.first} takes {_in_width(first)}: pass reset_other=True to remove the "
                    "layers before the classifier, or build the model with this global_pool"
                )
            self._setup_pool(pool_type)
            self.global_pool.train(self.training)
        if reset_other:
            self._drop_pre()
        if reset_other or not has_pre:
            self.num_features = self._pooled_width(self.global_pool)
        fc = nn.Linear(self.num_features, num_classes, **dd) if num_classes > 0 else nn.Identity()
        _init_weights(fc)
        setattr(self, self.classifier_name, fc.train(self.training))


def _in_width(layer: nn.Module) -> int:
    return layer.in_features if isinstance(layer, nn.Linear) else layer.normalized_shape[0]


class MlpClassifierHead(_Head):
    """pool -> fc1 -> GELU -> LayerNorm -> dropout -> fc2 (InceptionNeXt's head)."""

    classifier_name = "fc2"
    first = "fc1"

    def __init__(
        self,
        dim: int,
        num_classes: int,
        pool_type: str = "avg",
        mlp_ratio: float = 3.0,
        drop: float = 0.0,
    ) -> None:
        super().__init__()
        self.in_features = dim
        self._setup_pool(pool_type)
        hidden = int(mlp_ratio * dim)
        self.fc1 = nn.Linear(self._pooled_width(self.global_pool), hidden)
        self.act = nn.GELU()
        self.norm = nn.LayerNorm(hidden, eps=1e-6)
        self.drop = nn.Dropout(drop)
        self.num_features = hidden
        self.fc2 = nn.Linear(hidden, num_classes) if num_classes > 0 else nn.Identity()

    def _drop_pre(self) -> None:
        self.fc1, self.act, self.norm = nn.Identity(), nn.Identity(), nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if self.dense:
            x = x.permute(0, 2, 3, 1)
        x = self.drop(self.norm(self.act(self.fc1(x))))
        if not pre_logits:
            x = self.fc2(x)
        if self.dense:
            x = x.permute(0, 3, 1, 2)
        return x


class NormLinearHead(_Head):
    """pool -> LayerNorm -> dropout -> fc (ConvNeXt's head)."""

    classifier_name = "fc"
    first = "norm"

    def __init__(
        self, dim: int, num_classes: int, pool_type: str = "avg", drop: float = 0.0
    ) -> None:
        super().__init__()
        self.in_features = dim
        self._setup_pool(pool_type)
        width = self._pooled_width(self.global_pool)
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.drop = nn.Dropout(drop)
        self.num_features = width
        self.fc = nn.Linear(width, num_classes) if num_classes > 0 else nn.Identity()

    def _drop_pre(self) -> None:
        self.norm = nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if self.dense:
            x = x.permute(0, 2, 3, 1)
        x = self.drop(self.norm(x))
        if not pre_logits:
            x = self.fc(x)
        if self.dense:
            x = x.permute(0, 3, 1, 2)
        return x


def build_head(
    kind: HeadName,
    dim: int,
    num_classes: int,
    pool_type: str,
    drop: float,
    mlp_ratio: float = 3.0,
) -> _Head:
    if kind == "mlp":
        return MlpClassifierHead(dim, num_classes, pool_type, mlp_ratio=mlp_ratio, drop=drop)
    if kind == "linear":
        return NormLinearHead(dim, num_classes, pool_type, drop=drop)
    raise ValueError(f"head={kind!r} is unknown; use 'mlp' or 'linear'")


def _check_fmt(output_fmt: str, allowed: tuple[str, ...]) -> None:
    if output_fmt not in allowed:
        raise ValueError(f"output_fmt={output_fmt!r} is not supported here; use one of {allowed}")


# -------------------------------------------------------------------------------- networks
class _ClassifierMixin:
    """timm's classifier API, shared by both MetaNeXt networks."""

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return getattr(self.head, self.head.classifier_name)

    def reset_classifier(
        self, num_classes: int, global_pool: str | None = None, reset_other: bool = False
    ) -> None:
        """A new classifier for ``num_classes`` (0: none), optionally with another pooling.

        ``global_pool=''`` keeps the spatial map: ``forward`` then returns (B, C, H, W) with the
        head applied at every position. ``reset_other`` also removes the pretrained layers before
        the classifier (needed for a pooling that changes the width, such as ``catavgmax``).
        """
        self.num_classes = num_classes
        self.head.reset(
            num_classes, global_pool, reset_other=reset_other, in_features=self.num_features
        )
        self.head_hidden_size = self.head.num_features
        if global_pool is not None:
            self.global_pool = global_pool

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return set()

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class MetaNeXt(_ClassifierMixin, nn.Module):
    """The 4-stage MetaNeXt network (InceptionNeXt, and ConvNeXt built from the same blocks).

    ``output_stride`` 16 or 8 keeps the resolution of the last stages and dilates them instead
    (for DeepLab-style decoders); the parameters are the same at every stride.
    """

    def __init__(
        self,
        depths: Sequence[int] = (3, 3, 9, 3),
        dims: Sequence[int] = (96, 192, 384, 768),
        mixer: MixerCfg = MixerCfg(),
        norm: NormName = "batch",
        mlp_ratios: float | Sequence[float] = (4, 4, 4, 3),
        head: HeadName = "mlp",
        head_mlp_ratio: float = 3.0,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        ls_init_value: float | None = 1e-6,
        output_stride: int = 32,
    ) -> None:
        super().__init__()
        if len(depths) != len(dims):
            raise ValueError(
                f"depths {tuple(depths)} and dims {tuple(dims)} must have the same length"
            )
        if not 0.0 <= drop_path_rate < 1.0 or not 0.0 <= drop_rate < 1.0:
            raise ValueError(
                f"drop_path_rate={drop_path_rate} and drop_rate={drop_rate} must be in [0, 1)"
            )
        n = len(depths)
        ratios = list(mlp_ratios) if isinstance(mlp_ratios, Sequence) else [mlp_ratios] * n
        if len(ratios) != n:
            raise ValueError(f"mlp_ratios {tuple(ratios)} needs one value per stage ({n})")
        self.num_classes, self.drop_rate, self.in_chans = num_classes, drop_rate, in_chans
        self.global_pool = global_pool
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, dims[0], 4, stride=4), norm_layer(norm, dims[0])
        )
        rates = drop_path_rates(drop_path_rate, sum(depths))
        dp = [rates[sum(depths[:i]) : sum(depths[: i + 1])] for i in range(n)]
        stages, prev, reduction = [], dims[0], 4
        self.feature_info = []
        for i, (stride, first, dilation) in enumerate(stage_strides(n, output_stride)):
            stages.append(
                MetaNeXtStage(
                    prev,
                    dims[i],
                    depths[i],
                    mixer,
                    norm,
                    stride,
                    ratios[i],
                    ls_init_value,
                    dp[i],
                    (first, dilation),
                )
            )
            prev, reduction = dims[i], reduction * stride
            self.feature_info.append(dict(num_chs=prev, reduction=reduction, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self.num_features = prev
        self.head = build_head(head, prev, num_classes, global_pool, drop_rate, head_mlp_ratio)
        self.head_hidden_size = self.head.num_features
        self.apply(_init_weights)

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for s in self.stages:
            s.grad_checkpointing = enable

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(
            stem=r"^stem",
            blocks=r"^stages\.(\d+)"
            if coarse
            else [(r"^stages\.(\d+)\.downsample", (0,)), (r"^stages\.(\d+)\.blocks\.(\d+)", None)],
        )

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Stage outputs (timm's semantics: ``indices`` int = last n, sequence = those stages).

        ``norm`` is accepted for timm's wrappers and changes nothing: MetaNeXt has no norm after
        the last stage (the head normalises pooled features).
        """
        _check_fmt(output_fmt, ("NCHW",))
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        intermediates = []
        x = self.stem(x)
        stages = (
            self.stages
            if torch.jit.is_scripting() or not stop_early
            else self.stages[: max_index + 1]
        )
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take_indices:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(
        self,
        indices: int | list[int] = 1,
        prune_norm: bool = False,
        prune_head: bool = True,
    ) -> list[int]:
        """Drop the stages after the last of ``indices`` (and the head); returns the indices kept."""
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        prune_end = max_index < len(self.stages) - 1
        self.stages = self.stages[: max_index + 1]
        if prune_end:
            self.num_features = self.feature_info[max_index]["num_chs"]
        if prune_head or prune_end:
            self.reset_classifier(0, "", reset_other=True)
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))


@register_notrace_function
def add_pos_embed(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """``x + pos``, the embedding resized (bicubic) when the grid differs (an FX leaf)."""
    if pos.shape[-2:] != x.shape[-2:]:
        pos = F.interpolate(pos, size=x.shape[-2:], mode="bicubic", align_corners=False)
    return x + pos


torch.fx.wrap("add_pos_embed")


class MetaNeXtIsotropic(_ClassifierMixin, nn.Module):
    """Single-stage (ViT-style) MetaNeXt: 16x16 patch stem, ``depth`` blocks at one width (Table 5).

    Its features for timm's wrappers are the block outputs (``feature_info`` has one per block).
    """

    def __init__(
        self,
        depth: int = 18,
        dim: int = 384,
        mixer: MixerCfg = MixerCfg(),
        norm: NormName = "batch",
        mlp_ratio: float = 4.0,
        patch_size: int = 16,
        pos_embed: bool = False,
        img_size: int = 224,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        ls_init_value: float | None = 1e-6,
    ) -> None:
        super().__init__()
        self.num_classes, self.drop_rate, self.in_chans = num_classes, drop_rate, in_chans
        self.global_pool = global_pool
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, dim, patch_size, stride=patch_size), norm_layer(norm, dim)
        )
        grid = img_size // patch_size
        # A learned position embedding, resized when the input size differs (attention has no other
        # notion of position; the conv mixers do not need one).
        self.pos_embed = nn.Parameter(torch.zeros(1, dim, grid, grid)) if pos_embed else None
        self.grad_checkpointing = False
        rates = drop_path_rates(drop_path_rate, depth)
        self.blocks = nn.Sequential(
            *[
                MetaNeXtBlock(dim, mixer, norm, mlp_ratio, ls_init_value, rates[i])
                for i in range(depth)
            ]
        )
        self.feature_info = [
            dict(num_chs=dim, reduction=patch_size, module=f"blocks.{i}") for i in range(depth)
        ]
        self.num_features = dim
        self.head = build_head("linear", dim, num_classes, global_pool, drop_rate)
        self.head_hidden_size = self.head.num_features
        self.apply(_init_weights)
        if self.pos_embed is not None:
            trunc_normal_(self.pos_embed, std=0.02)

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(stem=r"^stem|^pos_embed", blocks=r"^blocks\.(\d+)")

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        # Full names; 1-D parameters (norms, biases, gamma) are excluded anyway.
        return {"pos_embed"} if self.pos_embed is not None else set()

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if self.pos_embed is not None:
            x = add_pos_embed(x, self.pos_embed)
        return x

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Block outputs (timm's semantics), as NCHW maps or NLC token sequences.

        ``norm`` changes nothing: there is no norm after the last block (the head has its own).
        """
        _check_fmt(output_fmt, OUTPUT_FORMATS)
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        intermediates = []
        x = self._embed(x)
        blocks = (
            self.blocks
            if torch.jit.is_scripting() or not stop_early
            else self.blocks[: max_index + 1]
        )
        for i, block in enumerate(blocks):
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint(block, x)
            else:
                x = block(x)
            if i in take_indices:
                intermediates.append(x if output_fmt == "NCHW" else x.flatten(2).transpose(1, 2))
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(
        self,
        indices: int | list[int] = 1,
        prune_norm: bool = False,
        prune_head: bool = True,
    ) -> list[int]:
        """Drop the blocks after the last of ``indices`` (and the head); returns the indices kept."""
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        self.blocks = self.blocks[: max_index + 1]
        if prune_head:
            self.reset_classifier(0, "", reset_other=True)
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self._embed(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)
