"""Measuring primitives: precision settings, synchronised median timings, peak memory, OOM back-off,
params and MACs."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

T = TypeVar("T")

PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
MEMORY_FORMATS = {"channels-first": torch.contiguous_format, "channels-last": torch.channels_last}


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a precision name; None means plain fp32 (with or without TF32)."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)


@contextlib.contextmanager
def cuda_math(tf32: bool) -> Iterator[None]:
    """Let (or forbid) CUDA run fp32 matmuls and convolutions in TF32, and let cuDNN pick the
    fastest convolution algorithm per shape (as timm's benchmark does); restores the old state.

    TF32 is what the paper's A100 numbers use; plain fp32 must switch it off explicitly because
    cuDNN convolutions default to TF32.
    """
    mode = "tf32" if tf32 else "ieee"
    matmul, conv, cudnn = (
        torch.backends.cuda.matmul,
        torch.backends.cudnn.conv,
        torch.backends.cudnn,
    )
    old = (matmul.fp32_precision, conv.fp32_precision, cudnn.benchmark)
    matmul.fp32_precision, conv.fp32_precision, cudnn.benchmark = mode, mode, True
    try:
        yield
    finally:
        matmul.fp32_precision, conv.fp32_precision, cudnn.benchmark = old


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    dtype = autocast_dtype(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def synchronize(device: torch.device) -> None:
    # CUDA kernels run asynchronously: without this the clock would stop at launch time.
    if device.type == "cuda":
        torch.cuda.synchronize(device)


CLOCKS: dict[str, Callable[[], float]] = {
    # wall time is throughput as the paper means it
    "wall": time.perf_counter,
    # CPU time of this process: on a CPU shared with other jobs it counts only the time the
    # benchmark actually ran, so waiting for a core is not charged to the model
    "cpu": time.process_time,
}


def median_step_time(
    step: Callable[[], object],
    device: torch.device,
    warmup: int,
    iters: int,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Seconds per call of ``step``: the median of ``iters`` synchronised timings after warm-up."""
    for _ in range(warmup):
        step()
    synchronize(device)
    times = []
    for _ in range(iters):
        start = clock()
        step()
        synchronize(device)
        times.append(clock() - start)
    return statistics.median(times)


def _release_free_heap() -> None:
    """Give freed heap pages back to the OS (glibc), so that reusing them shows up in the RSS again."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class PeakMemory:
    """Peak memory inside a ``with`` block, in MB.

    CUDA: ``torch.cuda.max_memory_allocated`` (kind ``cuda_max_allocated``; weights included).
    CPU on Linux: peak resident set size above the level at entry, sampled every few ms by a thread
    (kind ``cpu_rss_delta``; approximate: short peaks between samples are missed, and freed heap is
    trimmed at entry so that its reuse counts). Elsewhere: None.
    """

    def __init__(self, device: torch.device, interval_s: float = 0.005) -> None:
        self.device = device
        self.interval_s = interval_s
        self.mb: float | None = None
        self._stop = threading.Event()
        self._peak = 0
        self._thread: threading.Thread | None = None
        self._start_rss: int | None = None

    @property
    def kind(self) -> str:
        return memory_kind(self.device)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._peak = max(self._peak, _rss_bytes() or 0)

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            _release_free_heap()
            self._start_rss = _rss_bytes()
            if self._start_rss is not None:
                self._peak = self._start_rss
                self._thread = threading.Thread(target=self._sample, daemon=True)
                self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            self.mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        elif self._thread is not None and self._start_rss is not None:
            self._stop.set()
            self._thread.join()
            self._peak = max(self._peak, _rss_bytes() or 0)
            self.mb = (self._peak - self._start_rss) / 2**20


def memory_kind(device: torch.device) -> str:
    if device.type == "cuda":
        return "cuda_max_allocated"
    return "cpu_rss_delta" if _rss_bytes() is not None else "none"


def is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
    )


def free_memory(device: torch.device) -> None:
    """Return cached CUDA blocks between runs. On CPU, refcounting already freed the tensors (and a
    full gc.collect costs ~0.5 s with timm loaded), so nothing is done."""
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()


def with_oom_backoff(
    run: Callable[[int], T],
    batch_size: int,
    device: torch.device,
    log: Callable[[str], None] = lambda msg: None,
) -> tuple[T, int]:
    """Call ``run(batch)``, halving the batch on out-of-memory as the paper did; returns (result, batch)."""
    batch = batch_size
    while True:
        oom = False
        try:
            return run(batch), batch
        except (torch.OutOfMemoryError, RuntimeError) as exc:
            if batch == 1 or not is_oom(exc):
                raise
            oom = True  # free the failed attempt's tensors outside the handler, whose frame holds them
        if oom:
            free_memory(device)
            log(f"out of memory at batch {batch}; retrying with {batch // 2}")
            batch //= 2


def _sdpa_cpu_flops(q, k, v, *args, out_shape=None, **kwargs) -> int:
    # torch's counter knows the CUDA attention kernels but not the CPU one.
    return sdpa_flop_count(q, k, v)


def count(
    model: torch.nn.Module, img_size: int | tuple[int, int], in_chans: int = 3
) -> tuple[float, float]:
    """(params in M, MACs in G) for one image of ``img_size`` (square, or (H, W)), counting
    convs, matmuls and attention like fvcore."""
    h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
    params = sum(p.numel() for p in model.parameters()) / 1e6
    custom = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flops}
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    with FlopCounterMode(display=False, custom_mapping=custom) as counter, torch.no_grad():
        model(torch.zeros(1, in_chans, h, w, device=device))
    model.train(was_training)
    return params, counter.get_total_flops() / 2e9


def takes_img_size(name: str) -> bool:
    # Swin's window grid is fixed at build time, so it must be told the resolution.
    return name.startswith("swin")
