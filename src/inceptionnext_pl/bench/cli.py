"""`inceptionnext-bench`: training and inference throughput as the paper measures it.

Examples:
  inceptionnext-bench --models inceptionnext_tiny convnext_tiny resnet50 --precision tf32 --plot
  inceptionnext-bench --mode mixer --precision bf16
  inceptionnext-bench --mode seg --precision fp32          # Tables 6 and 7: FPS at batch 1
  inceptionnext-bench --mode plot --csv benchmarks/a100/models-cuda-tf32.csv --out benchmarks/a100
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..models import UnknownModelError, check_model_name
from ..paper import PAPER_SEG
from .measure import MEMORY_FORMATS, PRECISIONS, memory_kind
from .plot import plot_figure1
from .report import add_ratios, environment, format_table, write_results
from .seg import bench_segmentation, parse_seg_spec
from .spec import SpecError, split_spec
from .suites import (
    MIXER_BASELINE,
    MIXER_GROUPS,
    MIXERS,
    MODEL_GROUPS,
    BenchError,
    Settings,
    bench_mixers,
    bench_model,
    best_of_rounds,
)

# Figure 1's models: InceptionNeXt-T, ConvNeXt-T and its small-kernel variants, ResNet-50, Swin-T.
DEFAULT_MODELS = (
    "inceptionnext_tiny",
    "convnext_tiny",
    "convnext_tiny_k5",
    "convnext_tiny_k3",
    "resnet50",
    "swin_tiny_patch4_window7_224",
)

MODEL_COLUMNS = (
    ("model", "model", ""),
    ("params_m", "params (M)", ".2f"),
    ("macs_g", "MACs (G)", ".3f"),
    ("train_img_s", "train img/s", ".1f"),
    ("infer_img_s", "infer img/s", ".1f"),
    ("train_batch", "train batch", ""),
    ("train_peak_mem_mb", "train peak mem (MB)", ".0f"),
    ("train_img_s_ratio", "train ×", ".2f"),
    ("infer_img_s_ratio", "infer ×", ".2f"),
)

MIXER_COLUMNS = (
    ("stage", "stage", ""),
    ("channels", "C", ""),
    ("resolution", "H=W", ""),
    ("op", "mixer", ""),
    ("params_k", "params (K)", ".2f"),
    ("macs_m", "MACs (M)", ".2f"),
    ("fwd_img_s", "fwd img/s", ".1f"),
    ("fwd_bwd_img_s", "fwd+bwd img/s", ".1f"),
    ("fwd_bwd_peak_mem_mb", "fwd+bwd peak mem (MB)", ".1f"),
    ("fwd_img_s_ratio", "fwd ×", ".2f"),
    ("fwd_bwd_img_s_ratio", "fwd+bwd ×", ".2f"),
)

MEMORY_NOTE = {
    "cuda_max_allocated": "peak mem = torch.cuda.max_memory_allocated (weights included)",
    "cpu_rss_delta": "peak mem = rise of the process RSS during the timed steps (CPU, approximate)",
    "none": "peak mem not measured on this platform",
}


def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="inceptionnext-bench",
        description=__doc__.splitlines()[0],
        epilog="\n".join(__doc__.splitlines()[2:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--mode",
        choices=("models", "mixer", "seg", "plot"),
        default="models",
        help="models: whole networks; mixer: the token mixer alone at InceptionNeXt-T's stages; "
        "seg: segmentation FPS at batch 1 (Tables 6, 7); plot: redraw Figure 1 from models CSVs "
        "(default: models)",
    )
    p.add_argument(
        "--seg-models",
        nargs="+",
        default=[f"{d}/{b}" for d, b in PAPER_SEG],
        metavar="DECODER/BACKBONE",
        help="segmentation networks for --mode seg, e.g. fpn/inceptionnext_tiny "
        "upernet/convnext_tiny (default: every row of Tables 6 and 7 built here)",
    )
    p.add_argument(
        "--models",
        nargs="+",
        default=list(DEFAULT_MODELS),
        metavar="NAME",
        help="model names, ours or timm's, each optionally with create_model arguments as "
        "NAME:key=value[,key=value], e.g. inceptionnext_tiny:fast=on (default: Figure 1's set)",
    )
    p.add_argument(
        "--mixers",
        nargs="+",
        choices=tuple(MIXERS),
        default=list(MIXERS),
        help="token mixers for --mode mixer (default: all)",
    )
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda or cuda:N")
    p.add_argument(
        "--batch-size",
        type=_int_at_least(1),
        default=128,
        help="initial batch, halved on out-of-memory (default: 128, as in the paper)",
    )
    p.add_argument(
        "--img-size",
        type=_int_at_least(32),
        default=None,
        help="square input side; at least 32 (the networks downsample by 32) (default: 224; "
        "--mode seg: the short side, 512 as in the paper, UperNet 4x as wide)",
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=None,
        help="fp32 (TF32 off), tf32 (CUDA only), bf16 or fp16 autocast (default: tf32 on CUDA, "
        "as the paper's A100 numbers; fp32 on CPU)",
    )
    p.add_argument(
        "--memory-format",
        choices=(*MEMORY_FORMATS, "best"),
        default="best",
        help="best: run both layouts and report the faster for each column, as the paper does "
        "(default: best)",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile each network")
    p.add_argument(
        "--phases",
        nargs="+",
        choices=("train", "infer"),
        default=["train", "infer"],
        help="what to time per network (default: both); compiling inference is a second compile",
    )
    p.add_argument(
        "--keep-going",
        action="store_true",
        help="when a network fails, report it and go on with the others (exit status 1 at the end)",
    )
    p.add_argument(
        "--threads",
        type=_int_at_least(1),
        default=None,
        help="torch CPU threads (default: torch's choice); 1 is steadier on a busy shared CPU",
    )
    p.add_argument(
        "--baseline",
        default=None,
        help="row the ratios divide by: a --models name (default: convnext_tiny if measured, "
        f"else the first model) or a --mixers name (default: {MIXER_BASELINE})",
    )
    p.add_argument(
        "--warmup", type=_int_at_least(0), default=10, help="untimed steps first (default: 10)"
    )
    p.add_argument(
        "--iters",
        type=_int_at_least(1),
        default=30,
        help="timed steps; the median is reported (default: 30)",
    )
    p.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall: elapsed time (the paper's throughput); cpu: CPU time of this process, "
        "steadier on a CPU shared with other jobs (use with --threads 1; CPU only) (default: wall)",
    )
    p.add_argument(
        "--rounds",
        type=_int_at_least(1),
        default=1,
        help="measure the whole list this many times round-robin and keep each row's fastest "
        "round; use 2-3 on a shared or noisy machine (default: 1)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("bench-results"),
        help="folder for CSV, JSON and PNG (default: bench-results)",
    )
    p.add_argument(
        "--name",
        default=None,
        help="file stem (default: <mode>-<device>-<precision>[-compiled], figure1 for --mode plot)",
    )
    p.add_argument("--plot", action="store_true", help="also draw Figure 1 after a models run")
    p.add_argument(
        "--csv", nargs="+", type=Path, default=None, help="models CSVs to draw in --mode plot"
    )
    return p


def resolve_device(parser: argparse.ArgumentParser, text: str) -> torch.device:
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        parser.error(f"--device {text!r} is not a device; use auto, cpu, cuda or cuda:N")
    if device.type not in ("cpu", "cuda"):
        parser.error(f"--device {text!r}: only cpu and cuda are supported")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            parser.error(
                f"--device {text} was asked for but no CUDA GPU is visible to torch "
                "(torch.cuda.is_available() is False); use --device cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            parser.error(
                f"--device {text}: only {torch.cuda.device_count()} CUDA device(s) are visible"
            )
    return device


def validate(parser: argparse.ArgumentParser, args: argparse.Namespace) -> torch.device | None:
    """Check every argument before any work starts; parser.error exits with status 2."""
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} is a file; give a folder")
    if args.mode == "plot":
        if not args.csv:
            parser.error(
                "--mode plot needs --csv FILE [FILE ...] (models CSVs written by this tool)"
            )
        for path in args.csv:
            if not path.is_file():
                parser.error(f"--csv {path}: no such file")
        return None
    if args.csv:
        parser.error("--csv is for --mode plot")

    device = resolve_device(parser, args.device)
    if args.img_size is None:
        args.img_size = 512 if args.mode == "seg" else 224
    if args.precision is None:
        args.precision = "tf32" if device.type == "cuda" else "fp32"
    if args.precision == "tf32" and device.type != "cuda":
        parser.error("--precision tf32 is a CUDA tensor-core mode; on CPU use fp32, bf16 or fp16")
    if args.precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        parser.error(
            f"--precision bf16: {torch.cuda.get_device_name(device)} has no bf16; use fp16"
        )
    if args.clock == "cpu" and device.type != "cpu":
        parser.error("--clock cpu times CPU work only; GPU runs need --clock wall")
    if args.compile and args.warmup < 1:
        parser.error("--compile needs --warmup 1 or more, so that compilation is not timed")
    if args.compile and not any(shutil.which(c) for c in ("cc", "gcc", "g++", "clang")):
        parser.error("--compile needs a C/C++ compiler on PATH (torch.compile builds kernels)")

    if args.mode == "models":
        for spec in args.models:
            try:
                check_model_name(split_spec(spec)[0])
            except (UnknownModelError, SpecError) as exc:
                parser.error(f"--models: {exc}")
        if len(set(args.models)) != len(args.models):
            parser.error("--models lists a name twice")
        if args.baseline is None:
            args.baseline = "convnext_tiny" if "convnext_tiny" in args.models else args.models[0]
        elif args.baseline not in args.models:
            parser.error(f"--baseline {args.baseline} is not in --models; add it to --models")
        if args.plot and not args.models:
            parser.error("--plot needs models")
    elif args.mode == "seg":
        try:
            args.seg_specs = [parse_seg_spec(s) for s in args.seg_models]
            for _, backbone in args.seg_specs:
                check_model_name(backbone)
        except (BenchError, UnknownModelError) as exc:
            parser.error(str(exc))
        if args.plot:
            parser.error("--plot draws Figure 1 from a models run; it does not apply to --mode seg")
    else:  # mixer
        if args.plot:
            parser.error(
                "--plot draws Figure 1 from a models run; it does not apply to --mode mixer"
            )
        if args.baseline is None:
            args.baseline = MIXER_BASELINE if MIXER_BASELINE in args.mixers else args.mixers[0]
        elif args.baseline not in args.mixers:
            parser.error(
                f"--baseline {args.baseline} is not one of --mixers ({', '.join(args.mixers)})"
            )
    return device


def _settings(args: argparse.Namespace, device: torch.device) -> Settings:
    formats = tuple(MEMORY_FORMATS) if args.memory_format == "best" else (args.memory_format,)
    return Settings(
        device=device,
        precision=args.precision,
        memory_formats=formats,
        batch_size=args.batch_size,
        img_size=args.img_size,
        compile=args.compile,
        warmup=args.warmup,
        iters=args.iters,
        clock=args.clock,
        phases=tuple(args.phases),
    )


def _meta(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    settings = {
        "mode": args.mode,
        "models": args.models if args.mode == "models" else None,
        "mixers": args.mixers if args.mode == "mixer" else None,
        "precision": args.precision,
        "memory_format": args.memory_format,
        "compile": args.compile,
        "threads": torch.get_num_threads(),
        "img_size": args.img_size,
        "batch_size": args.batch_size,
        "batch_policy": "halved on out-of-memory; the batch used is in each row",
        "warmup": args.warmup,
        "iters": args.iters,
        "statistic": "median of per-step timings, synchronised on CUDA; with rounds > 1, "
        "each row's fastest round",
        "rounds": args.rounds,
        "clock": args.clock,
        "train_step": "forward, cross-entropy, backward, torch AdamW step (GradScaler for fp16); "
        "random inputs and labels, weights not pretrained",
        "infer_step": "forward under torch.inference_mode",
        "phases": args.phases,
        "cudnn_benchmark": device.type == "cuda",
        "baseline": args.baseline,
        "memory_kind": memory_kind(device),
        "command": "inceptionnext-bench " + " ".join(sys.argv[1:]),
    }
    return {"environment": environment(device), "settings": settings}


def _stem(args: argparse.Namespace, device: torch.device) -> str:
    if args.name:
        return args.name
    return f"{args.mode}-{device.type}-{args.precision}" + ("-compiled" if args.compile else "")


def _print_notes(args: argparse.Namespace, meta: dict[str, Any]) -> None:
    print(f"({MEMORY_NOTE[meta['settings']['memory_kind']]})")
    if args.clock == "cpu":
        print("(img/s per second of process CPU time, --clock cpu: not wall-clock throughput)")
    if args.rounds > 1:
        print(f"(each row: the fastest of {args.rounds} round-robin rounds)")


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_models(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    settings, meta, stem = _settings(args, device), _meta(args, device), _stem(args, device)
    env = meta["environment"]
    _log(
        f"benchmarking {len(args.models)} models on {env['device_name']} ({args.precision}, "
        f"{args.memory_format}, batch {args.batch_size}, {args.img_size}², "
        f"{'compiled' if args.compile else 'eager'})"
    )
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in args.models}
    failed: dict[str, str] = {}
    rows: list[dict[str, Any]] = []
    for r in range(1, args.rounds + 1):
        # round-robin over the list, so that slow phases of a shared machine hit every model
        for i, name in enumerate(args.models, 1):
            if name in failed:
                continue
            try:
                row = bench_model(name, settings, log=_log)
            except BenchError as exc:
                if not args.keep_going:
                    raise
                failed[name] = str(exc)
                meta["settings"]["failed"] = failed
                _log(f"[{i}/{len(args.models)}] {name}: FAILED, going on: {exc}")
                continue
            rounds[name].append(row)
            _log(
                f"[{f'round {r}, ' if args.rounds > 1 else ''}{i}/{len(args.models)}] {name}: "
                + ", ".join(_phase_summary(row, p) for p in args.phases)
            )
            rows = [best_of_rounds(v, MODEL_GROUPS) for v in rounds.values() if v]
            add_ratios(rows, "model", args.baseline, ("train_img_s", "infer_img_s"))
            # written after every model: a failure late in a long GPU run keeps what was measured
            csv_path, json_path = write_results(args.out, stem, rows, meta)
    if not rows:
        raise BenchError("every network failed: " + "; ".join(failed.values()))
    if failed:  # the JSON names the networks that failed after the last one measured
        csv_path, json_path = write_results(args.out, stem, rows, meta)
    mode = "compiled" if args.compile else "eager"
    _report(
        args, meta, rows, MODEL_COLUMNS, f"{args.img_size}² · {mode} · ratios to {args.baseline}"
    )
    print(f"wrote {csv_path} and {json_path}")
    if args.plot:
        png = args.out / f"{stem}.png"
        try:
            plot_figure1([csv_path], png)
            print(f"wrote {png}")
        except ValueError as exc:
            _log(f"no plot: {exc}")
    if failed:
        raise BenchError(f"{len(failed)} network(s) failed: " + "; ".join(failed.values()))
    return rows


def _phase_summary(row: dict[str, Any], phase: str) -> str:
    return (
        f"{phase} {row[f'{phase}_img_s']:.1f} img/s ({row[f'{phase}_memory_format']}, batch "
        f"{row[f'{phase}_batch']})"
    )


def _report(args: argparse.Namespace, meta: dict, rows: list, columns: Any, detail: str) -> None:
    """The settings line, the table and the notes, for both modes."""
    env = meta["environment"]
    print(
        f"\n{env['device_name']} · torch {env['torch']}"
        + (f" · CUDA {env['cuda']}" if env["cuda"] else "")
        + f" · {args.precision} · {args.memory_format} · batch {args.batch_size} · {detail}"
    )
    print(format_table(rows, columns))
    _print_notes(args, meta)


def run_mixer(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    settings, meta, stem = _settings(args, device), _meta(args, device), _stem(args, device)
    env = meta["environment"]
    _log(f"token mixers at InceptionNeXt-T's stages on {env['device_name']} ({args.precision})")
    rounds = [bench_mixers(settings, args.mixers, log=_log) for _ in range(args.rounds)]
    rows = [best_of_rounds(same, MIXER_GROUPS) for same in zip(*rounds)]
    add_ratios(rows, "op", args.baseline, ("fwd_img_s", "fwd_bwd_img_s"), group_key="stage")
    csv_path, json_path = write_results(args.out, stem, rows, meta)
    _report(
        args,
        meta,
        rows,
        MIXER_COLUMNS,
        f"input {args.img_size}² · ratios to {args.baseline} per stage",
    )
    print(f"wrote {csv_path} and {json_path}")
    return rows


SEG_COLUMNS = (
    ("decoder", "head", ""),
    ("backbone", "backbone", ""),
    ("input", "input", ""),
    ("params_m", "params (M)", ".1f"),
    ("macs_g", "MACs (G)", ".1f"),
    ("fps", "FPS", ".2f"),
    ("ms", "ms / image", ".1f"),
    ("paper_fps_2080ti", "paper FPS (2080Ti)", ""),
    ("paper_miou", "paper mIoU", ""),
)


def run_seg(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    settings, meta, stem = _settings(args, device), _meta(args, device), _stem(args, device)
    meta["settings"]["seg_models"] = args.seg_models
    meta["settings"]["batch_size"] = 1
    meta["settings"]["infer_step"] = "forward at batch 1 under torch.inference_mode, 150 classes"
    _log(f"segmentation FPS on {meta['environment']['device_name']} ({args.precision})")
    rows = [bench_segmentation(d, b, settings, args.img_size, log=_log) for d, b in args.seg_specs]
    csv_path, json_path = write_results(args.out, stem, rows, meta)
    env = meta["environment"]
    print(
        f"\n{env['device_name']} · torch {env['torch']} · {args.precision} · batch 1 · "
        f"short side {args.img_size} (UperNet 4x wide)"
    )
    print(format_table(rows, SEG_COLUMNS))
    print(f"wrote {csv_path} and {json_path}")
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    device = validate(parser, args)
    old_threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        if args.mode == "plot":
            png = args.out / f"{args.name or 'figure1'}.png"
            names = plot_figure1(args.csv, png)
            print(f"wrote {png} ({len(names)} points)")
        elif args.mode == "mixer":
            run_mixer(args, device)
        elif args.mode == "seg":
            run_seg(args, device)
        else:
            run_models(args, device)
    except (BenchError, ValueError) as exc:
        parser.exit(1, f"{parser.prog}: error: {exc}\n")
    finally:
        torch.set_num_threads(old_threads)
