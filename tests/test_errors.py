"""Known errors reach a command's user as one message and an exit code; faults surface."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from inceptionnext_pl.commands import DEBUG_ENV, run_command
from inceptionnext_pl.errors import ConfigError, InceptionNextError
from inceptionnext_pl.models import UnknownModelError

ROOT = Path(__file__).resolve().parents[1]


def _raises(exc: BaseException):
    def main(argv):
        raise exc

    return main


def test_known_error_is_one_line_and_exit_1(capsys):
    assert run_command("prog", _raises(UnknownModelError("Unknown model 'x'")), []) == 1
    err = capsys.readouterr().err
    assert err.startswith("prog: error: Unknown model 'x'") and "Traceback" not in err


def test_debug_flag_and_environment_show_the_traceback(monkeypatch):
    with pytest.raises(ConfigError):
        run_command("prog", _raises(ConfigError("bad")), ["--debug"])
    monkeypatch.setenv(DEBUG_ENV, "1")
    with pytest.raises(ConfigError):
        run_command("prog", _raises(ConfigError("bad")), [])


def test_every_room_derives_its_errors_from_the_base():
    from inceptionnext_pl.bench.spec import SpecError
    from inceptionnext_pl.bench.suites import BenchError
    from inceptionnext_pl.cam import CamError
    from inceptionnext_pl.data import DataError
    from inceptionnext_pl.zoo import ZooError

    for cls in (
        ConfigError,
        UnknownModelError,
        DataError,
        ZooError,
        CamError,
        SpecError,
        BenchError,
    ):
        assert issubclass(cls, InceptionNextError), cls


def test_faults_are_not_swallowed():
    with pytest.raises(ZeroDivisionError):
        run_command("prog", _raises(ZeroDivisionError("a bug")), [])


def test_console_script_prints_no_traceback():
    script = Path(sys.executable).parent / "lightning"
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    env.pop(DEBUG_ENV, None)
    cmd = [
        str(script),
        "fit",
        "--config",
        "configs/demo.yaml",
        "--model.model_name=inceptionnext_tinny",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert (
        "Unknown model 'inceptionnext_tinny'" in proc.stderr and "inceptionnext_tiny" in proc.stderr
    )


def test_import_stays_light():
    code = (
        "import sys, inceptionnext_pl as p; "
        "assert 'lightning' not in sys.modules, 'lightning imported'; "
        "assert p.ImageClassifier.__name__ == 'ImageClassifier'; "
        "from inceptionnext_pl import ImageDataModule, SemanticSegmenter, SegmentationDataModule"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_table_command_names_an_unknown_model(capsys):
    from inceptionnext_pl.bench.table import main

    assert main(["inceptionnext_tinny"]) == 1
    err = capsys.readouterr().err
    assert "Unknown model 'inceptionnext_tinny'" in err and "Traceback" not in err
