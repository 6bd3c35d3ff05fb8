"""The config of one fit setting of benchmarks/gpu/check.sh, printed as YAML.

    python benchmarks/gpu/fit_config.py SETTING --csv FIT.csv --steps 200 --warmup 50 --root DIR
        [--compile-fast configs/tiny.yaml]

It adds the FitThroughput callback (inceptionnext_pl.bench.fit) for SETTING beside the project's
Throughput logger, the run length and directory. ``--compile-fast BASE`` also sets
``model.compile: true`` and ``fast: auto`` in BASE's ``model.model_kwargs`` (a dict option is
replaced as a whole by a later config, so BASE's other keyword arguments are carried over).
``auto`` runs the fused kernel on channels_last CUDA input, which tiny.yaml's model gets; "on"
cannot be written there: jsonargparse reads a string "on" of a ``dict[str, Any]`` as ``True``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml


def config(args: argparse.Namespace) -> dict:
    fit = {
        "class_path": "inceptionnext_pl.bench.fit.FitThroughput",
        "init_args": {"setting": args.setting, "csv": args.csv, "warmup_steps": args.warmup},
    }
    cfg: dict = {
        "trainer": {
            "max_steps": args.steps,
            "default_root_dir": args.root,
            "callbacks": [{"class_path": "inceptionnext_pl.callbacks.Throughput"}, fit],
        }
    }
    if args.compile_fast:
        base = yaml.safe_load(Path(args.compile_fast).read_text()) or {}
        kwargs = dict((base.get("model") or {}).get("model_kwargs") or {})
        cfg["model"] = {"compile": True, "model_kwargs": {**kwargs, "fast": "auto"}}
    return cfg


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("setting")
    p.add_argument("--csv", required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--warmup", type=int, required=True)
    p.add_argument("--root", required=True)
    p.add_argument("--compile-fast", metavar="BASE", default=None)
    print(yaml.safe_dump(config(p.parse_args()), sort_keys=False), end="")


if __name__ == "__main__":
    main()
