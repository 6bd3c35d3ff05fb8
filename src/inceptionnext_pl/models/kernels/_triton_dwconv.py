"""Triton kernels for the fused Inception depthwise convolution (forward and backward).

This file is loaded by ``inception_op._kernels()`` once per Triton mode (compiled or
``TRITON_INTERPRET=1``), never imported directly: ``triton.jit`` decides at decoration time
whether a function is compiled or interpreted, so each mode gets its own module object.

Layout. Tensors are (N, C, H, W) with arbitrary strides; dense channels_last is the tuned case
(CHANNELS_LAST): the channel axis is contiguous, so a [pixels, channels] tile loads coalesced, and
the strides are rebuilt from the constexpr channel count so the compiler can prove alignment and
vectorise the loads. Channels are split as (identity | segment 0 | segment 1 | segment 2), each
conv segment ``GC`` channels wide, in the order hw, w, h of the branches that exist. ``SEG_*`` is
a branch's segment index, or -1 when removed. Channel counts are constexpr: a model has a handful
of distinct ones, one compiled variant each.

Grid. axis 0: one program per (image, spatial tile of BLOCK_H x BLOCK_W pixels); axis 1: channel
blocks of BLOCK_C, first ``NB_ID`` blocks over the identity channels, then ``NB_BR`` blocks per
conv segment. A block never straddles two segments, so each program runs one branch's taps.

Taps. Every tap is a masked load of the tile shifted by (di, dj); out-of-image positions read 0
(zero padding). The halo is re-read through L1/L2 rather than staged by hand; kernel sizes are
constexpr so the tap loops unroll and the loads can be in flight together.
"""

import triton
import triton.language as tl

# Only builtins of triton.language below, no functions of its jit'd standard library (tl.zeros,
# tl.sum): those are compiled or interpreted according to TRITON_INTERPRET when Triton is first
# imported, so under a late TRITON_INTERPRET=1 they would refuse to run. tl.sum(x, 0) is exactly
# tl.reduce(x, 0, _sum_combine); the interpreter recognises this combine function and uses numpy.
_sum_combine = tl.standard._sum_combine

# fmt: off
# (kernel argument lists read better one concept per line than one argument per line)


@triton.jit
def _taps_conv(
    src_ptr, base, hh0, ww0, c, mask_c, H, W, s_c, s_h, s_w, w_ptr, cl, acc,
    KH: tl.constexpr, KW: tl.constexpr, FLIP: tl.constexpr,
):
    # acc[p, c] += sum_taps src[h + i - KH//2, w + j - KW//2, c] * w[c, i, j]. With FLIP the taps
    # are mirrored, which turns the convolution into its transpose: the input gradient.
    for i in tl.static_range(KH):
        hh = hh0 + (i - KH // 2)
        mh = (hh >= 0) & (hh < H)
        for j in tl.static_range(KW):
            ww = ww0 + (j - KW // 2)
            m = mh & (ww >= 0) & (ww < W)
            offs = base + hh[:, None] * s_h + ww[:, None] * s_w + c[None, :] * s_c
            v = tl.load(src_ptr + offs, mask=m[:, None] & mask_c[None, :], other=0.0)
            tap = (KH - 1 - i) * KW + (KW - 1 - j) if FLIP else i * KW + j
            wt = tl.load(w_ptr + cl * (KH * KW) + tap, mask=mask_c, other=0.0)
            acc += v.to(tl.float32) * wt.to(tl.float32)[None, :]
    return acc


@triton.jit
def _taps_wgrad(
    x_ptr, base, hh0, ww0, c, mask_c, H, W, s_c, s_h, s_w, g, part_ptr, part_off,
    KH: tl.constexpr, KW: tl.constexpr,
):
    # part[tile, c, tap] = sum over the tile's pixels of grad_out * shifted input.
    for i in tl.static_range(KH):
        hh = hh0 + (i - KH // 2)
        mh = (hh >= 0) & (hh < H)
        for j in tl.static_range(KW):
            ww = ww0 + (j - KW // 2)
            m = mh & (ww >= 0) & (ww < W)
            offs = base + hh[:, None] * s_h + ww[:, None] * s_w + c[None, :] * s_c
            v = tl.load(x_ptr + offs, mask=m[:, None] & mask_c[None, :], other=0.0)
            tl.store(part_ptr + part_off + i * KW + j, tl.reduce(g * v.to(tl.float32), 0, _sum_combine), mask=mask_c)


@triton.jit
def inception_dw_fwd_kernel(
    x_ptr, out_ptr, w_hw, b_hw, w_w, b_w, w_h, b_h,
    H, W, TILES_W, TILES_PER_IMG,
    sx_n, sx_c, sx_h, sx_w, so_n, so_c, so_h, so_w,
    C: tl.constexpr, C_ID: tl.constexpr, GC: tl.constexpr, NB_ID: tl.constexpr, NB_BR: tl.constexpr,
    SEG_HW: tl.constexpr, SEG_W: tl.constexpr, SEG_H: tl.constexpr,
    SK: tl.constexpr, KW_W: tl.constexpr, KH_H: tl.constexpr,
    CHANNELS_LAST: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr,
):
    if CHANNELS_LAST:
        # dense NHWC: strides from the constexpr channel count, so the compiler knows alignments
        sx_c = 1
        sx_w = C
        sx_h = W * C
        sx_n = H * W * C
        so_c, so_w, so_h, so_n = sx_c, sx_w, sx_h, sx_n
    pid_s = tl.program_id(0)
    pid_c = tl.program_id(1)
    n = pid_s // TILES_PER_IMG
    t = pid_s % TILES_PER_IMG
    p = tl.arange(0, BLOCK_H * BLOCK_W)
    hh0 = (t // TILES_W) * BLOCK_H + p // BLOCK_W
    ww0 = (t % TILES_W) * BLOCK_W + p % BLOCK_W
    mask_p = (hh0 < H) & (ww0 < W)
    xb = n.to(tl.int64) * sx_n
    out_p = n.to(tl.int64) * so_n + hh0 * so_h + ww0 * so_w
    lanes = tl.arange(0, BLOCK_C)
    if pid_c < NB_ID:
        # identity channels: copied in the same launch as the convolutions
        c = pid_c * BLOCK_C + lanes
        m = mask_p[:, None] & (c < C_ID)[None, :]
        v = tl.load(x_ptr + xb + hh0[:, None] * sx_h + ww0[:, None] * sx_w + c[None, :] * sx_c, mask=m)
        tl.store(out_ptr + out_p[:, None] + c[None, :] * so_c, v, mask=m)
    else:
        k = pid_c - NB_ID
        seg = k // NB_BR
        cl = (k % NB_BR) * BLOCK_C + lanes
        mask_c = cl < GC
        c = C_ID + seg * GC + cl
        acc = tl.full([BLOCK_H * BLOCK_W, BLOCK_C], 0.0, tl.float32)
        # Outer tests are compile-time (a removed branch is not compiled), inner ones run-time.
        if SEG_HW >= 0:  # noqa: SIM102
            if seg == SEG_HW:
                acc = _taps_conv(x_ptr, xb, hh0, ww0, c, mask_c, H, W, sx_c, sx_h, sx_w, w_hw, cl, acc, SK, SK, False)
                acc += tl.load(b_hw + cl, mask=mask_c, other=0.0).to(tl.float32)[None, :]
        if SEG_W >= 0:  # noqa: SIM102
            if seg == SEG_W:
                acc = _taps_conv(x_ptr, xb, hh0, ww0, c, mask_c, H, W, sx_c, sx_h, sx_w, w_w, cl, acc, 1, KW_W, False)
                acc += tl.load(b_w + cl, mask=mask_c, other=0.0).to(tl.float32)[None, :]
        if SEG_H >= 0:  # noqa: SIM102
            if seg == SEG_H:
                acc = _taps_conv(x_ptr, xb, hh0, ww0, c, mask_c, H, W, sx_c, sx_h, sx_w, w_h, cl, acc, KH_H, 1, False)
                acc += tl.load(b_h + cl, mask=mask_c, other=0.0).to(tl.float32)[None, :]
        m = mask_p[:, None] & mask_c[None, :]
        tl.store(out_ptr + out_p[:, None] + c[None, :] * so_c, acc.to(out_ptr.dtype.element_ty), mask=m)


@triton.jit
def inception_dw_bwd_kernel(
    gy_ptr, x_ptr, gx_ptr, part_ptr, w_hw, w_w, w_h,
    H, W, TILES_W, TILES_PER_IMG,
    sg_n, sg_c, sg_h, sg_w, sx_n, sx_c, sx_h, sx_w, sd_n, sd_c, sd_h, sd_w,
    C: tl.constexpr, C_ID: tl.constexpr, GC: tl.constexpr, NB_ID: tl.constexpr, NB_BR: tl.constexpr,
    C_CONV: tl.constexpr, TP: tl.constexpr,
    SEG_HW: tl.constexpr, SEG_W: tl.constexpr, SEG_H: tl.constexpr,
    SK: tl.constexpr, KW_W: tl.constexpr, KH_H: tl.constexpr,
    CHANNELS_LAST: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr,
):
    # One pass over grad_out: grad_in (conv with mirrored taps) and per-tile partial sums of the
    # weight and bias gradients, part[tile, c - C_ID, tap] (bias in slot TP - 1). The host sums
    # over tiles afterwards: a deterministic two-stage reduction, no atomics.
    if CHANNELS_LAST:
        sx_c = 1
        sx_w = C
        sx_h = W * C
        sx_n = H * W * C
        sg_c, sg_w, sg_h, sg_n = sx_c, sx_w, sx_h, sx_n
        sd_c, sd_w, sd_h, sd_n = sx_c, sx_w, sx_h, sx_n
    pid_s = tl.program_id(0)
    pid_c = tl.program_id(1)
    n = pid_s // TILES_PER_IMG
    t = pid_s % TILES_PER_IMG
    p = tl.arange(0, BLOCK_H * BLOCK_W)
    hh0 = (t // TILES_W) * BLOCK_H + p // BLOCK_W
    ww0 = (t % TILES_W) * BLOCK_W + p % BLOCK_W
    mask_p = (hh0 < H) & (ww0 < W)
    gb = n.to(tl.int64) * sg_n
    xb = n.to(tl.int64) * sx_n
    g_p = gb + hh0 * sg_h + ww0 * sg_w
    d_p = n.to(tl.int64) * sd_n + hh0 * sd_h + ww0 * sd_w
    lanes = tl.arange(0, BLOCK_C)
    if pid_c < NB_ID:
        c = pid_c * BLOCK_C + lanes
        m = mask_p[:, None] & (c < C_ID)[None, :]
        v = tl.load(gy_ptr + g_p[:, None] + c[None, :] * sg_c, mask=m)
        tl.store(gx_ptr + d_p[:, None] + c[None, :] * sd_c, v, mask=m)
    else:
        k = pid_c - NB_ID
        seg = k // NB_BR
        cl = (k % NB_BR) * BLOCK_C + lanes
        mask_c = cl < GC
        c = C_ID + seg * GC + cl
        m = mask_p[:, None] & mask_c[None, :]
        g = tl.load(gy_ptr + g_p[:, None] + c[None, :] * sg_c, mask=m, other=0.0).to(tl.float32)
        part_off = pid_s.to(tl.int64) * C_CONV * TP + (seg * GC + cl) * TP
        tl.store(part_ptr + part_off + TP - 1, tl.reduce(g, 0, _sum_combine), mask=mask_c)
        acc = tl.full([BLOCK_H * BLOCK_W, BLOCK_C], 0.0, tl.float32)
        if SEG_HW >= 0:  # noqa: SIM102
            if seg == SEG_HW:
                acc = _taps_conv(gy_ptr, gb, hh0, ww0, c, mask_c, H, W, sg_c, sg_h, sg_w, w_hw, cl, acc, SK, SK, True)
                _taps_wgrad(x_ptr, xb, hh0, ww0, c, mask_c, H, W, sx_c, sx_h, sx_w, g, part_ptr, part_off, SK, SK)
        if SEG_W >= 0:  # noqa: SIM102
            if seg == SEG_W:
                acc = _taps_conv(gy_ptr, gb, hh0, ww0, c, mask_c, H, W, sg_c, sg_h, sg_w, w_w, cl, acc, 1, KW_W, True)
                _taps_wgrad(x_ptr, xb, hh0, ww0, c, mask_c, H, W, sx_c, sx_h, sx_w, g, part_ptr, part_off, 1, KW_W)
        if SEG_H >= 0:  # noqa: SIM102
            if seg == SEG_H:
                acc = _taps_conv(gy_ptr, gb, hh0, ww0, c, mask_c, H, W, sg_c, sg_h, sg_w, w_h, cl, acc, KH_H, 1, True)
                _taps_wgrad(x_ptr, xb, hh0, ww0, c, mask_c, H, W, sx_c, sx_h, sx_w, g, part_ptr, part_off, KH_H, 1)
        tl.store(gx_ptr + d_p[:, None] + c[None, :] * sd_c, acc.to(gx_ptr.dtype.element_ty), mask=m)
