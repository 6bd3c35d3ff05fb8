"""Dependencies point down: commands, then tasks / data / callbacks / segmentation, then the
weights layer, Grad-CAM and the benchmark, then the models, then facts and the error base. A lower
room never imports a higher one, not even inside a function."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "inceptionnext_pl"

FACTS, MODELS, WEIGHTS, TASKS, COMMANDS, FACADE = range(6)
# The room of each module, by its longest listed prefix (relative to inceptionnext_pl).
ROOMS = {
    "errors": FACTS,
    "paper": FACTS,
    "files": FACTS,
    "registry": FACTS,
    "models": MODELS,
    "zoo": WEIGHTS,
    "cam": WEIGHTS,
    "bench": WEIGHTS,
    "optim": TASKS,
    "seg": TASKS,
    "data": TASKS,
    "callbacks": TASKS,
    "tasks": TASKS,
    "commands": COMMANDS,
    "cli": COMMANDS,
    "cam_cli": COMMANDS,
    "zoo.cli": COMMANDS,
    # The benchmark's commands: they drive `lightning fit`, segmentation nets and the tables.
    "bench.__main__": COMMANDS,
    "bench.cli": COMMANDS,
    "bench.fit": COMMANDS,
    "bench.synthetic": COMMANDS,
    "bench.seg": COMMANDS,
    "bench.table": COMMANDS,
    "__init__": FACADE,  # runs before any module of the package: its imports are exempt
}


def room(module: str) -> int:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in ROOMS:
            return ROOMS[key]
    raise KeyError(f"{module} has no room: add it to ROOMS")


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        out[".".join(parts)] = path
    return out


def _exists(module: str) -> bool:
    path = PACKAGE.joinpath(*module.split("."))
    return (path / "__init__.py").is_file() or path.with_suffix(".py").is_file()


def _executed(name: str) -> set[str]:
    """The files ``import inceptionnext_pl.<name>`` runs: each package's ``__init__`` on the way,
    then the module. The package's own ``__init__`` (the facade, run first by any import) aside."""
    parts = name.split(".")
    out = {
        ".".join([*parts[:n], "__init__"])
        for n in range(1, len(parts) + 1)
        if (PACKAGE.joinpath(*parts[:n]) / "__init__.py").is_file()
    }
    if PACKAGE.joinpath(*parts).with_suffix(".py").is_file():
        out.add(name)
    return out


def imports(module: str, path: Path) -> set[str]:
    """Every module of the package that ``module`` runs by its imports, at any depth of its code."""
    package = module.split(".")[:-1]  # a/b.py and a/__init__.py both live in package a
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            elif (node.module or "").startswith("inceptionnext_pl"):
                target = node.module.partition(".")[2]
            else:
                continue
            for alias in node.names:  # `from .. import optim` imports the module optim
                sub = f"{target}.{alias.name}".lstrip(".")
                names.add(sub if _exists(sub) else target)
        elif isinstance(node, ast.Import):
            names |= {
                a.name.partition(".")[2]
                for a in node.names
                if a.name.startswith("inceptionnext_pl.")
            }
    return {m for name in names if name for m in _executed(name)}


def test_every_module_has_a_room() -> None:
    for module in _modules():
        room(module)


def test_no_import_runs_back_up_the_layers() -> None:
    upward = []
    for module, path in _modules().items():
        for target in imports(module, path):
            if room(target) > room(module):
                upward.append(f"{module} -> {target}")
    assert not upward, "imports that run back up:\n" + "\n".join(sorted(upward))


def test_the_checker_sees_imports_inside_functions(tmp_path: Path) -> None:
    path = tmp_path / "probe.py"
    path.write_text("def f():\n    from ..zoo import load_pretrained\n    from .. import optim\n")
    assert imports("models.probe", path) == {"zoo.__init__", "optim"}
    assert room("zoo") > room("models.probe") and room("optim") > room("models.probe")


@pytest.mark.parametrize(
    "module, absent",
    [
        (
            "inceptionnext_pl.models",
            (
                "inceptionnext_pl.zoo",
                "inceptionnext_pl.data",
                "inceptionnext_pl.tasks",
                "lightning",
            ),
        ),
        (
            "inceptionnext_pl.errors",
            (
                "inceptionnext_pl.zoo",
                "inceptionnext_pl.data",
                "inceptionnext_pl.tasks",
                "lightning",
            ),
        ),
        ("inceptionnext_pl.zoo", ("inceptionnext_pl.data", "inceptionnext_pl.tasks", "lightning")),
    ],
)
def test_importing_a_room_loads_nothing_above_it(module: str, absent: tuple[str, ...]) -> None:
    code = f"import sys, {module}; print('\\n'.join(sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded = proc.stdout.split()
    assert not [m for m in loaded if m.startswith(absent)], [
        m for m in loaded if m.startswith(absent)
    ]
