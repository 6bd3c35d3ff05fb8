"""``inceptionnext-zoo``: list, inspect, download, convert and export checkpoints."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from ..commands import run_command
from ..registry import Source, ZooEntry, get_entry, list_entries, registry_path
from .convert import TARGETS, convert_file, export_checkpoint
from .download import HASH_STORE_NAME, HashStore, cache_dir, cached_file, fetch, forget_hashes
from .transfer import resolve

COLUMNS = (
    "Name",
    "timm name",
    "Res",
    "Crop",
    "Interp",
    "Top-1",
    "Params (M)",
    "Licence",
    "Sources",
)


def _source_label(s: Source) -> str:
    if s.hf:
        return "hf-hub"
    return "github" if s.url and s.url.startswith("https://github.com/") else "url"


def _row(e: ZooEntry) -> list[str]:
    labels = list(dict.fromkeys(_source_label(s) for s in e.sources))
    return [
        e.name,
        e.timm_arch or "—",
        str(e.resolution),
        str(e.crop_pct),
        e.interpolation,
        "—" if e.top1 is None else f"{e.top1:.1f}",
        "—" if e.params_m is None else f"{e.params_m:g}",
        e.license,
        "+".join(labels),
    ]


def _markdown(entries: list[ZooEntry]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_row(e)) + " |" for e in entries]
    return "\n".join(lines)


def cmd_list(args: argparse.Namespace) -> int:
    entries = [e for e in list_entries() if not args.group or args.group.lower() in e.group.lower()]
    if args.markdown:
        print(_markdown(entries))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"inceptionnext-pl model zoo ({registry_path()})", title_justify="left")
    for col in (*COLUMNS, "Cached"):
        table.add_column(col, justify="right" if col in ("Res", "Crop", "Top-1") else "left")
    group = None
    for e in entries:
        if e.group != group:
            group = e.group
            table.add_section()
            table.add_row(f"[bold]{group}[/bold]", *[""] * len(COLUMNS))
        table.add_row(*_row(e), "yes" if cached_file(e) else "")
    Console(width=max(160, Console().width)).print(table)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    e = get_entry(args.name)
    store = HashStore(cache_dir() / HASH_STORE_NAME)
    data = e.to_dict()
    for src, raw in zip(e.sources, data["sources"]):
        if src.sha256:
            raw["sha256_status"] = "published"
        else:
            recorded = store.get(src.key)
            raw["sha256"] = recorded
            raw["sha256_status"] = "recorded on first download" if recorded else "not yet known"
        if src.url:
            raw["fetch_from"] = src.resolved_url()
    path = cached_file(e)
    data["cached_file"] = str(path) if path else None
    data["cache_dir"] = str(cache_dir())
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    for key, value in data.items():
        if key == "sources":
            print("sources:")
            for i, raw in enumerate(value):
                print(f"  [{i}] " + ", ".join(f"{k}={v}" for k, v in raw.items()))
        elif value not in (None, "", []):
            print(f"{key}: {value}")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    entry = get_entry(args.name)
    if args.forget_hash:
        for key in forget_hashes(entry):
            print(f"forgot the recorded sha256 of {key}", file=sys.stderr)
    path = fetch(entry, source=args.source, progress=not args.no_progress, force=args.force)
    print(path)
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    src, _ = resolve(args.src)  # a zoo name or run directory stands for its file
    res = convert_file(
        src,
        args.dst,
        to=args.to,
        model_name=args.model,
        ema=args.ema,
        prefix=args.prefix,
        trust=args.trust_pickle,
    )
    checked = f", checked against {res.model_name}" if res.model_name else ""
    print(f"{res.source} -> {res.target} format{checked}: {res.dst}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    if args.hub_format or args.push_to_hub:
        from .hub import export_hub, push_to_hub

        out = export_hub(
            args.src,
            args.dst,
            ema=args.ema,
            model_name=args.model,
            trust=args.trust_pickle,
            progress=not args.no_progress,
            repo_id=args.push_to_hub,
        )
        kind = "timm's" if out.plain_timm else "this package's"
        print(
            f"{out.source} -> {out.directory} ({kind} {out.architecture}, {out.num_classes} classes)"
        )
        where = None
        if args.push_to_hub:
            print(f"uploaded: {push_to_hub(out.directory, args.push_to_hub, private=args.private)}")
            where = f"hf-hub:{args.push_to_hub}"
        print("Load it with:\n  import timm")
        print("  " + out.timm_call(where).replace("\n", "\n  "))
        return 0
    src, _ = resolve(args.src)
    res = export_checkpoint(
        src,
        args.dst,
        ema=args.ema,
        model_name=args.model,
        prefix=args.prefix,
        trust=args.trust_pickle,
    )
    print(f"{res.source} -> {res.dst} ({res.model_name}, {res.num_classes} classes)")
    print("Load it with:\n  import timm, inceptionnext_pl  # registers inceptionnext_*")
    print(f"  model = {res.timm_call()}")
    return 0


def _ckpt_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ema", action="store_true", help="take the EMA weights (error if none)")
    p.add_argument("--model", help="architecture to check against (default: the checkpoint's)")
    p.add_argument(
        "--prefix",
        help="where a Lightning checkpoint keeps the network, for modules of other projects "
        "(ours declare it in the file)",
    )
    p.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow arbitrary pickled objects (only for files you trust)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inceptionnext-zoo",
        description="InceptionNeXt model zoo: official weights, Table 1 variants, timm baselines.",
        epilog="Cache: $TORCH_HOME/hub/checkpoints (URL sources) and $HF_HOME (hub sources). "
        "$INCEPTIONNEXT_ZOO_MIRROR=URL fetches release files from a mirror.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="print the zoo table")
    p.add_argument("--markdown", action="store_true", help="a Markdown table (for READMEs)")
    p.add_argument("--group", help="only entries whose group contains this text")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("info", help="everything about one entry")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("download", help="fetch an entry into the cache and print its path")
    p.add_argument("name")
    p.add_argument("--source", help="'url', 'hf' or a source index (default: in order)")
    p.add_argument("--force", action="store_true", help="download again even if cached")
    p.add_argument(
        "--forget-hash",
        action="store_true",
        help="drop the sha256 recorded on the first download (after an upstream update)",
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_download)

    p = sub.add_parser("convert", help="convert between official / timm / facebook / Lightning")
    p.add_argument("src", help="a checkpoint file, run directory or zoo name")
    p.add_argument("dst", type=Path, help=".pth / .safetensors, or .ckpt for Lightning")
    p.add_argument(
        "--to",
        choices=TARGETS,
        help="target format (default: lightning for .ckpt, timm otherwise); 'official' is timm "
        "keys for InceptionNeXt and facebook keys for the ConvNeXt variants",
    )
    _ckpt_options(p)
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser(
        "export", help="a run's weights -> a file timm loads, or a hub-format folder (and upload)"
    )
    p.add_argument(
        "src",
        help="a Lightning checkpoint or run directory; with --hub-format also a zoo name or any file",
    )
    p.add_argument("dst", type=Path, help=".safetensors / .pth, or the folder for --hub-format")
    p.add_argument(
        "--hub-format",
        action="store_true",
        help="write config.json + model.safetensors + README.md, for timm.create_model('local-dir:DST')",
    )
    p.add_argument(
        "--push-to-hub",
        metavar="REPO_ID",
        help="then upload the folder to this hub repo (token from HF_TOKEN or `hf auth login`)",
    )
    p.add_argument("--private", action="store_true", help="create the hub repo private")
    p.add_argument("--no-progress", action="store_true")
    _ckpt_options(p)
    p.set_defaults(func=cmd_export)
    return parser


def _run(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; ``--debug`` shows the traceback of a known error."""
    return run_command("inceptionnext-zoo", _run, argv, extra=(FileNotFoundError,))


if __name__ == "__main__":
    sys.exit(main())
