"""MetaNeXt (Sec. 3.1, Eq. 1-3): the block, the 4-stage network and the isotropic network.

Module names and parameter shapes follow the official release and timm's ``inception_next``,
so their state dicts load unchanged (stem.0/1, stages.i.downsample.0/1,
stages.i.blocks.j.{token_mixer, norm, mlp.fc1, mlp.fc2, gamma}, head.{fc1, norm, fc2}).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from timm.layers import DropPath, LayerNorm2d, trunc_normal_
from timm.models._manipulate import checkpoint_seq
from torch import nn

from .token_mixers import MixerCfg, build_token_mixer

NormName = Literal["batch", "layer"]


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
    ) -> None:
        super().__init__()
        self.token_mixer = build_token_mixer(dim, mixer)
        self.norm = norm_layer(norm, dim)
        self.mlp = ConvMlp(dim, int(mlp_ratio * dim))
        self.gamma = nn.Parameter(ls_init_value * torch.ones(dim)) if ls_init_value else None
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.mlp(self.norm(self.token_mixer(x)))
        if self.gamma is not None:
            y = y.mul(self.gamma.reshape(1, -1, 1, 1))
        return self.drop_path(y) + x


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
    ) -> None:
        super().__init__()
        self.grad_checkpointing = False
        if stride > 1:
            self.downsample = nn.Sequential(
                norm_layer(norm, in_chs), nn.Conv2d(in_chs, out_chs, stride, stride=stride)
            )
        else:
            self.downsample = nn.Identity()
        rates = drop_path_rates or [0.0] * depth
        self.blocks = nn.Sequential(
            *[
                MetaNeXtBlock(out_chs, mixer, norm, mlp_ratio, ls_init_value, rates[i])
                for i in range(depth)
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)


class MlpClassifierHead(nn.Module):
    """avg-pool -> fc1 -> GELU -> LayerNorm -> dropout -> fc2 (InceptionNeXt's head)."""

    def __init__(
        self, dim: int, num_classes: int, mlp_ratio: float = 3.0, drop: float = 0.0
    ) -> None:
        super().__init__()
        hidden = int(mlp_ratio * dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.norm = nn.LayerNorm(hidden, eps=1e-6)
        self.drop = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden, num_classes) if num_classes > 0 else nn.Identity()
        self.classifier_name = "fc2"

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(self.norm(self.act(self.fc1(x.mean((2, 3))))))
        return x if pre_logits else self.fc2(x)


class NormLinearHead(nn.Module):
    """avg-pool -> LayerNorm -> dropout -> fc (ConvNeXt's head)."""

    def __init__(self, dim: int, num_classes: int, drop: float = 0.0) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.drop = nn.Dropout(drop)
        self.fc = nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity()
        self.classifier_name = "fc"

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(self.norm(x.mean((2, 3))))
        return x if pre_logits else self.fc(x)


HeadName = Literal["mlp", "linear"]


def build_head(
    kind: HeadName, dim: int, num_classes: int, drop: float, mlp_ratio: float = 3.0
) -> nn.Module:
    if kind == "mlp":
        return MlpClassifierHead(dim, num_classes, mlp_ratio=mlp_ratio, drop=drop)
    if kind == "linear":
        return NormLinearHead(dim, num_classes, drop=drop)
    raise ValueError(f"head={kind!r} is unknown; use 'mlp' or 'linear'")


class _ClassifierMixin:
    """timm's model API shared by both MetaNeXt networks."""

    head: nn.Module
    num_classes: int
    drop_rate: float

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return getattr(self.head, self.head.classifier_name)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool not in (None, "avg"):
            raise ValueError(f"global_pool={global_pool!r}: MetaNeXt heads only average-pool")
        self.num_classes = num_classes
        old = self.get_classifier()
        in_features = (
            old.in_features if isinstance(old, nn.Linear) else self.head.norm.normalized_shape[0]
        )
        fc = nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()
        if isinstance(fc, nn.Linear):
            _init_weights(fc)
        setattr(self.head, self.head.classifier_name, fc)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Conv2d | nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


class MetaNeXt(_ClassifierMixin, nn.Module):
    """The 4-stage MetaNeXt network (InceptionNeXt, and ConvNeXt built from the same blocks)."""

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
    ) -> None:
        super().__init__()
        if len(depths) != len(dims):
            raise ValueError(
                f"depths {tuple(depths)} and dims {tuple(dims)} must have the same length"
            )
        if global_pool != "avg":
            raise ValueError(f"global_pool={global_pool!r}: MetaNeXt heads only average-pool")
        if not 0.0 <= drop_path_rate < 1.0 or not 0.0 <= drop_rate < 1.0:
            raise ValueError(
                f"drop_path_rate={drop_path_rate} and drop_rate={drop_rate} must be in [0, 1)"
            )
        n = len(depths)
        ratios = list(mlp_ratios) if isinstance(mlp_ratios, Sequence) else [mlp_ratios] * n
        if len(ratios) != n:
            raise ValueError(f"mlp_ratios {tuple(ratios)} needs one value per stage ({n})")
        self.num_classes, self.drop_rate = num_classes, drop_rate
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, dims[0], 4, stride=4), norm_layer(norm, dims[0])
        )
        rates = drop_path_rates(drop_path_rate, sum(depths))
        dp = [rates[sum(depths[:i]) : sum(depths[: i + 1])] for i in range(n)]
        stages, prev = [], dims[0]
        self.feature_info = []
        for i in range(n):
            stages.append(
                MetaNeXtStage(
                    prev,
                    dims[i],
                    depths[i],
                    mixer,
                    norm,
                    1 if i == 0 else 2,
                    ratios[i],
                    ls_init_value,
                    dp[i],
                )
            )
            prev = dims[i]
            self.feature_info.append(dict(num_chs=prev, reduction=4 * 2**i, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self.num_features = self.head_hidden_size = prev
        self.head = build_head(head, prev, num_classes, drop_rate, head_mlp_ratio)
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

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))


class MetaNeXtIsotropic(_ClassifierMixin, nn.Module):
    """Single-stage (ViT-style) MetaNeXt: 16x16 patch stem, ``depth`` blocks at one width (Table 5)."""

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
        if global_pool != "avg":
            raise ValueError(f"global_pool={global_pool!r}: MetaNeXt heads only average-pool")
        self.num_classes, self.drop_rate = num_classes, drop_rate
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
        self.feature_info = [dict(num_chs=dim, reduction=patch_size, module="blocks")]
        self.num_features = self.head_hidden_size = dim
        self.head = build_head("linear", dim, num_classes, drop_rate)
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
        return {
            "pos_embed"
        }  # full names; 1-D parameters (norms, biases, gamma) are excluded anyway

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if self.pos_embed is not None:
            pos = self.pos_embed
            if pos.shape[-2:] != x.shape[-2:]:
                pos = nn.functional.interpolate(
                    pos, size=x.shape[-2:], mode="bicubic", align_corners=False
                )
            x = x + pos
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)
