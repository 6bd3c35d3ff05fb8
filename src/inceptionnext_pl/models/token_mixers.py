"""Token mixers for MetaNeXt blocks: Inception depthwise conv, (partial) depthwise conv, attention.

Every mixer maps (B, C, H, W) -> (B, C, H, W). Their options live in one ``MixerCfg`` so the
paper's ablations (Tables 1 and 8) are values of one implementation, not copies of it.
"""

# No ``from __future__ import annotations``: TorchScript reads the forward annotations.
from dataclasses import dataclass
from typing import Literal

import torch
import torch.fx
import torch.nn.functional as F
from timm.layers import register_notrace_function
from torch import nn

from .kernels import inception_dwconv, unsupported_reason

BRANCHES = ("hw", "w", "h")
FAST_MODES = ("auto", "on", "off")


@dataclass(frozen=True)
class MixerCfg:
    """Options of a token mixer.

    kind: ``inception`` (Sec. 3.2), ``dwconv`` (ConvNeXt, optionally on part of the channels,
    Table 1) or ``attn`` (MetaNeXt-Attn, Table 5).
    fast: the fused Triton kernel for the Inception mixer (``kernels/``). ``auto`` uses it for
    channels_last CUDA inputs when Triton is installed, else the PyTorch modules; ``on`` insists
    (CUDA, or CPU under ``TRITON_INTERPRET=1``); ``off`` always runs the PyTorch modules.
    The default stays ``off`` until the kernel has been measured on a GPU.
    """

    kind: Literal["inception", "dwconv", "attn"] = "inception"
    # inception
    square_kernel_size: int = 3
    band_kernel_size: int = 11
    branch_ratio: float = 0.125
    branches: tuple[str, ...] = BRANCHES
    band_sequential: bool = False
    # dwconv
    kernel_size: int = 7
    conv_ratio: float = 1.0
    # attn
    num_heads: int = 6
    # fused kernel for kind="inception"
    fast: Literal["auto", "on", "off"] = "off"  # "auto" once the kernel is measured on a GPU

    def __post_init__(self) -> None:
        if self.kind not in ("inception", "dwconv", "attn"):
            raise ValueError(
                f"token mixer kind {self.kind!r} is unknown; use inception, dwconv or attn"
            )
        unknown = [b for b in self.branches if b not in BRANCHES]
        if unknown or len(set(self.branches)) != len(self.branches):
            raise ValueError(
                f"branches={self.branches!r}: each must be one of {BRANCHES}, without repeats"
            )
        if self.band_sequential and not {"w", "h"} <= set(self.branches):
            raise ValueError(
                "band_sequential=True chains the 1xk and kx1 kernels: keep both 'w' and 'h' branches"
            )
        for name in ("square_kernel_size", "band_kernel_size", "kernel_size"):
            k = getattr(self, name)
            if k < 1 or k % 2 == 0:
                raise ValueError(
                    f"{name}={k}: kernel sizes must be odd and positive to keep the spatial size"
                )
        if not 0.0 < self.branch_ratio <= 1.0 / max(len(self.branches), 1):
            raise ValueError(
                f"branch_ratio={self.branch_ratio}: with {len(self.branches)} conv branches it must be in "
                f"(0, {1.0 / max(len(self.branches), 1):.4g}] so that the branches fit in the channels"
            )
        if not 0.0 < self.conv_ratio <= 1.0:
            raise ValueError(f"conv_ratio={self.conv_ratio} must be in (0, 1]")
        if self.fast not in FAST_MODES:
            raise ValueError(f"fast={self.fast!r} is unknown; use one of {FAST_MODES}")
        if self.fast == "on" and (self.kind != "inception" or self.band_sequential):
            raise ValueError(
                "fast='on' needs the fused Inception kernel, which covers kind='inception' without "
                "band_sequential; use fast='auto' or 'off' for this mixer"
            )


class InceptionDWConv2d(nn.Module):
    """Inception depthwise convolution (Eq. 5-7).

    Channels split as (identity, k_s x k_s, 1 x k_b, k_b x 1), the order of the released weights
    (Algorithm 1 in the paper prints identity last; only this order matches the checkpoints).
    Removed branches give their channels to the identity. With ``band_sequential`` the two band
    groups are merged and go through 1 x k_b then k_b x 1 (Inception v3 style, Table 8).
    """

    def __init__(self, dim: int, cfg: MixerCfg = MixerCfg(), dilation: int = 1) -> None:
        super().__init__()
        gc = int(dim * cfg.branch_ratio)
        if gc < 1:
            raise ValueError(
                f"branch_ratio={cfg.branch_ratio} leaves no channel for a branch at dim={dim}; "
                f"use a ratio of at least {1.0 / dim:.4g}"
            )
        if dilation > 1 and cfg.fast == "on":
            raise ValueError(
                f"fast='on' cannot run a dilated mixer (dilation={dilation}, from output_stride): "
                "the fused kernel is undilated. Use fast='auto', which keeps the PyTorch path "
                "for dilated stages."
            )
        self.cfg = cfg
        self.dilation = dilation
        # Plain attributes for forward (TorchScript cannot read the dataclass). The fused kernel
        # has no dilation, so dilated mixers always take the PyTorch modules.
        self.fast: str = cfg.fast if dilation == 1 else "off"
        self.band_sequential: bool = cfg.band_sequential
        sk, bk, d = cfg.square_kernel_size, cfg.band_kernel_size, dilation
        self.dwconv_hw = (
            nn.Conv2d(gc, gc, sk, padding=d * (sk // 2), dilation=d, groups=gc)
            if "hw" in cfg.branches
            else None
        )
        # Each band kernel is dilated along its own axis only.
        band_w = dict(kernel_size=(1, bk), padding=(0, d * (bk // 2)), dilation=(1, d))
        band_h = dict(kernel_size=(bk, 1), padding=(d * (bk // 2), 0), dilation=(d, 1))
        if cfg.band_sequential:
            bc = 2 * gc
            self.dwconv_w = nn.Conv2d(bc, bc, groups=bc, **band_w)
            self.dwconv_h = nn.Conv2d(bc, bc, groups=bc, **band_h)
            conv_groups = [gc] * ("hw" in cfg.branches) + [bc]
        else:
            self.dwconv_w = nn.Conv2d(gc, gc, groups=gc, **band_w) if "w" in cfg.branches else None
            self.dwconv_h = nn.Conv2d(gc, gc, groups=gc, **band_h) if "h" in cfg.branches else None
            conv_groups = [gc for b in BRANCHES if b in cfg.branches]
        self.split_indexes = (dim - sum(conv_groups), *conv_groups)

    @torch.jit.ignore
    def use_fast_path(self, x: torch.Tensor) -> bool:
        """Whether ``forward`` runs the fused kernel on ``x`` (raises if ``fast='on'`` cannot)."""
        if self.fast == "off" or self.band_sequential:
            return False
        reason = unsupported_reason(x, cuda_only=self.fast == "auto")
        if reason is not None and self.fast == "on":
            raise RuntimeError(
                f"InceptionDWConv2d(fast='on') cannot run the fused kernel: {reason}. "
                "Use fast='auto' to fall back to the PyTorch path where it cannot, or fast='off'."
            )
        return reason is None

    @torch.jit.ignore
    def forward_fused(self, x: torch.Tensor) -> torch.Tensor:
        params: list[torch.Tensor | None] = []
        for conv in (self.dwconv_hw, self.dwconv_w, self.dwconv_h):
            params += [None, None] if conv is None else [conv.weight, conv.bias]
        return inception_dwconv(x, *params)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The choice depends on the input's device and layout, so it runs inside an FX leaf;
        # with fast="off" (a constant) tracing and scripting see the PyTorch modules.
        if torch.jit.is_scripting() or self.fast == "off" or self.band_sequential:
            return self.forward_reference(x)
        else:
            return fused_or_reference(self, x)

    def forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        # Indexing, not unpacking, so that FX never iterates the split's proxy.
        parts = torch.split(x, self.split_indexes, dim=1)
        outs = [parts[0]]
        i = 1
        if self.dwconv_hw is not None:
            outs.append(self.dwconv_hw(parts[i]))
            i += 1
        if self.band_sequential and self.dwconv_w is not None and self.dwconv_h is not None:
            outs.append(self.dwconv_h(self.dwconv_w(parts[i])))
        else:
            if self.dwconv_w is not None:
                outs.append(self.dwconv_w(parts[i]))
                i += 1
            if self.dwconv_h is not None:
                outs.append(self.dwconv_h(parts[i]))
        return torch.cat(outs, dim=1)


@register_notrace_function
def fused_or_reference(mixer: InceptionDWConv2d, x: torch.Tensor) -> torch.Tensor:
    """The fused kernel where ``x`` allows it, else the PyTorch modules (an FX leaf)."""
    if mixer.use_fast_path(x):
        return mixer.forward_fused(x)
    return mixer.forward_reference(x)


torch.fx.wrap("fused_or_reference")  # a leaf for plain torch.fx / torchvision tracing too


class PartialDWConv2d(nn.Module):
    """Depthwise k x k conv on the last ``conv_ratio`` share of the channels (Table 1).

    conv_ratio=1 is ConvNeXt's depthwise conv. The split (identity, conv) follows the
    released ConvNeXt-T variants.
    """

    def __init__(
        self, dim: int, cfg: MixerCfg = MixerCfg(kind="dwconv"), dilation: int = 1
    ) -> None:
        super().__init__()
        cc = int(dim * cfg.conv_ratio)
        if cc < 1:
            raise ValueError(
                f"conv_ratio={cfg.conv_ratio} leaves no channel to convolve at dim={dim}"
            )
        k = cfg.kernel_size
        self.conv = nn.Conv2d(cc, cc, k, padding=dilation * (k // 2), dilation=dilation, groups=cc)
        self.split_indexes = (dim - cc, cc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.split_indexes[0] == 0:
            return self.conv(x)
        x_id, x_conv = torch.split(x, self.split_indexes, dim=1)
        return torch.cat((x_id, self.conv(x_conv)), dim=1)


class Attention2d(nn.Module):
    """Multi-head self-attention over the H*W tokens of a (B, C, H, W) map (MetaNeXt-Attn)."""

    def __init__(self, dim: int, cfg: MixerCfg = MixerCfg(kind="attn")) -> None:
        super().__init__()
        if dim % cfg.num_heads:
            raise ValueError(f"dim={dim} is not divisible by num_heads={cfg.num_heads}")
        self.num_heads = cfg.num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # B, N, C
        qkv = self.qkv(tokens).reshape(b, h * w, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)
        out = self.proj(out.transpose(1, 2).reshape(b, h * w, c))
        return out.transpose(1, 2).reshape(b, c, h, w)


def build_token_mixer(dim: int, cfg: MixerCfg, dilation: int = 1) -> nn.Module:
    """Build the mixer that ``cfg.kind`` names, for ``dim`` channels.

    ``dilation`` (from a dilated stage) spreads the conv kernels; attention is global already.
    """
    if cfg.kind == "inception":
        return InceptionDWConv2d(dim, cfg, dilation)
    if cfg.kind == "dwconv":
        return PartialDWConv2d(dim, cfg, dilation)
    return Attention2d(dim, cfg)
