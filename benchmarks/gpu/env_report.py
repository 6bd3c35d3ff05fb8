"""Every version the GPU run works with, and whether the package imports there (check.sh, setup).

    python benchmarks/gpu/env_report.py OUT.json

Prints the JSON and writes it; exits 1 when the package or its command-line modules do not
import (``datasets`` failing is recorded only: the steps that need it say so again).
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import json
import os
import platform
import sys

DISTRIBUTIONS = (
    "torch",
    "triton",
    "lightning",
    "pytorch-lightning",
    "timm",
    "torchmetrics",
    "torchvision",
    "numpy",
    "pyarrow",
    "datasets",
    "huggingface-hub",
    "fsspec",
    "jsonargparse",
    "pillow",
    "grad-cam",
    "pytest",
    "pytest-xdist",
    "matplotlib",
)
MODULES = ("inceptionnext_pl", "inceptionnext_pl.cli", "inceptionnext_pl.bench.fit", "datasets")


def report() -> dict:
    import torch

    versions: dict[str, str | None] = {}
    for name in DISTRIBUTIONS:
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    versions["cuda"] = torch.version.cuda
    versions["cudnn"] = torch.backends.cudnn.version() if torch.cuda.is_available() else None
    versions["python"] = platform.python_version()
    imports = {}
    for mod in MODULES:
        try:
            importlib.import_module(mod)
            imports[mod] = "ok"
        except Exception as exc:  # any import failure is the finding here; it is recorded
            imports[mod] = f"{type(exc).__name__}: {exc}"
    cuda = torch.cuda.is_available()
    return {
        "device": torch.cuda.get_device_name() if cuda else f"CPU {platform.processor()}".strip(),
        "gpu_memory_gb": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
        if cuda
        else None,
        "cpu_count": os.cpu_count(),
        "versions": versions,
        "imports": imports,
        "executable": sys.executable,
    }


def main() -> None:
    env = report()
    text = json.dumps(env, indent=2)
    print(text)
    with open(sys.argv[1], "w") as f:
        f.write(text + "\n")
    if any(v != "ok" for k, v in env["imports"].items() if k != "datasets"):
        sys.exit(1)


if __name__ == "__main__":
    main()
