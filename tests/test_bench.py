"""inceptionnext-bench on CPU at tiny sizes: files, sane numbers, mixer mode, plot, argument errors."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import re
import time
from pathlib import Path

import pytest
import torch

from inceptionnext_pl.bench.cli import main
from inceptionnext_pl.bench.measure import PeakMemory, count, cuda_math, with_oom_backoff
from inceptionnext_pl.bench.plot import PAPER_TOP1, figure1, top1
from inceptionnext_pl.bench.spec import SpecError, split_spec
from inceptionnext_pl.bench.suites import build_model, complexity, fixed_input_size
from inceptionnext_pl.models import create_model
from inceptionnext_pl.paper import PAPER

REPO = Path(__file__).resolve().parents[1]
TINY = ["--img-size", "32", "--batch-size", "2", "--warmup", "1", "--iters", "2", "--threads", "1"]


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _positive_finite(text: str) -> bool:
    value = float(text)
    return math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def models_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("bench")
    argv = ["--models", "inceptionnext_atto", "convnext_atto", "--baseline", "convnext_atto"]
    # fp16 on CPU runs autocast and the GradScaler path of the training step
    argv += [*TINY, "--precision", "fp16", "--memory-format", "best", "--out", str(out), "--plot"]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        main(argv)
    return out, stdout.getvalue()


def test_models_run_writes_csv_json_png_with_sane_numbers(models_run: tuple[Path, str]) -> None:
    out, printed = models_run
    stem = out / "models-cpu-fp16"
    rows = {r["model"]: r for r in _rows(stem.with_suffix(".csv"))}
    assert list(rows) == ["inceptionnext_atto", "convnext_atto"]
    for r in rows.values():
        for key in ("train_img_s", "infer_img_s", "train_step_ms", "params_m", "macs_g"):
            assert _positive_finite(r[key]), (key, r[key])
        assert int(r["train_batch"]) == 2 and int(r["infer_batch"]) == 2
        assert r["train_memory_format"] in ("channels-first", "channels-last")
        # every row carries its context
        assert r["device"] == "cpu" and r["precision"] == "fp16" and r["img_size"] == "32"
        assert r["torch"] == torch.__version__ and r["memory_kind"] in ("cpu_rss_delta", "none")
    base, other = rows["convnext_atto"], rows["inceptionnext_atto"]
    assert float(base["train_img_s_ratio"]) == 1.0 and float(base["infer_img_s_ratio"]) == 1.0
    expected = float(other["train_img_s"]) / float(base["train_img_s"])
    assert float(other["train_img_s_ratio"]) == pytest.approx(expected, abs=1e-4)
    # params and MACs are the table's, at the benchmarked size
    params, macs = count(create_model("inceptionnext_atto"), 32)
    assert float(other["params_m"]) == pytest.approx(params, abs=1e-3)
    assert float(other["macs_g"]) == pytest.approx(macs, rel=1e-3)

    meta = json.loads(stem.with_suffix(".json").read_text())
    env, settings = meta["environment"], meta["settings"]
    assert env["torch"] == torch.__version__ and env["device_name"].startswith("CPU")
    assert "cuda" in env and env["torch_threads"] == 1
    for key in ("precision", "memory_format", "compile", "img_size", "batch_size", "warmup"):
        assert key in settings
    assert settings["baseline"] == "convnext_atto" and settings["iters"] == 2
    # "best" measured both layouts for every model
    for r in meta["results"]:
        assert set(r["by_memory_format"]) == {"channels-first", "channels-last"}
        best = max(v["train_img_s"] for v in r["by_memory_format"].values())
        assert r["train_img_s"] == best

    png = stem.with_suffix(".png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert "| inceptionnext_atto |" in printed and "train ×" in printed
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_plot_mode_draws_several_csvs_and_rejects_others(
    models_run: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    src = models_run[0] / "models-cpu-fp16.csv"
    rows = _rows(src)
    second = tmp_path / "bf16.csv"
    with open(second, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**r, "precision": "bf16"} for r in rows)
    main(["--mode", "plot", "--csv", str(src), str(second), "--out", str(tmp_path)])
    assert (tmp_path / "figure1.png").read_bytes()[:4] == b"\x89PNG"
    assert "4 points" in capsys.readouterr().out

    unknown = tmp_path / "unknown.csv"
    unknown.write_text("model,train_img_s\nresnet18,10.0\n")
    with pytest.raises(SystemExit) as exc:
        main(["--mode", "plot", "--csv", str(unknown), "--out", str(tmp_path)])
    assert exc.value.code == 1
    assert "no model in the CSV has a paper top-1" in capsys.readouterr().err

    mixer_like = tmp_path / "mixer.csv"
    mixer_like.write_text("stage,op,fwd_img_s\n1,inception,3.0\n")
    with pytest.raises(SystemExit):
        main(["--mode", "plot", "--csv", str(mixer_like), "--out", str(tmp_path)])
    assert "has no model, train_img_s column" in capsys.readouterr().err


def test_mixer_mode_covers_tiny_stages_forward_and_backward(tmp_path: Path) -> None:
    argv = ["--mode", "mixer", "--img-size", "32", "--batch-size", "2", "--threads", "1"]
    argv += ["--warmup", "0", "--iters", "1", "--memory-format", "channels-last", "--rounds", "2"]
    argv += ["--clock", "cpu"]
    main([*argv, "--out", str(tmp_path)])
    rows = _rows(tmp_path / "mixer-cpu-fp32.csv")
    assert [(r["stage"], r["channels"], r["resolution"]) for r in rows[::3]] == [
        ("1", "96", "8"),
        ("2", "192", "4"),
        ("3", "384", "2"),
        ("4", "768", "1"),
    ]
    assert [r["op"] for r in rows[:3]] == ["inception", "dwconv7x7", "dwconv3x3"]
    for r in rows:
        for key in ("fwd_img_s", "fwd_bwd_img_s", "params_k", "macs_m"):
            assert _positive_finite(r[key]), (key, r)
        if r["op"] == "dwconv7x7":
            assert float(r["fwd_img_s_ratio"]) == 1.0 and float(r["fwd_bwd_img_s_ratio"]) == 1.0
    # two rounds: each row keeps its fastest round, all rounds stay in the JSON
    for r in json.loads((tmp_path / "mixer-cpu-fp32.json").read_text())["results"]:
        assert len(r["by_round"]["fwd_bwd_img_s"]) == 2
        assert r["fwd_bwd_img_s"] == max(r["by_round"]["fwd_bwd_img_s"])
    assert rows[0]["rounds"] == "2" and rows[0]["clock"] == "cpu"
    by = {(r["stage"], r["op"]): r for r in rows}
    # Inception DW conv convolves 3/8 of the channels with small kernels: far fewer weights than 7x7
    assert float(by["1", "inception"]["params_k"]) < float(by["1", "dwconv3x3"]["params_k"])
    assert float(by["1", "dwconv3x3"]["params_k"]) < float(by["1", "dwconv7x7"]["params_k"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--models", "inceptionnext_tinny"], "Did you mean: inceptionnext_tiny"),
        (["--batch-size", "0"], "argument --batch-size: must be at least 1, got 0"),
        (["--batch-size", "lots"], "argument --batch-size: expected an integer"),
        (["--img-size", "16"], "argument --img-size: must be at least 32"),
        (["--device", "cpu", "--precision", "tf32"], "tf32 is a CUDA tensor-core mode"),
        (["--device", "cuda"], "no CUDA GPU is visible"),
        (["--device", "tpu"], "is not a device"),
        (["--precision", "int8"], "invalid choice: 'int8'"),
        (["--models", "inceptionnext_atto", "--baseline", "resnet50"], "not in --models"),
        (["--models", "resnet50", "resnet50"], "lists a name twice"),
        (["--mode", "mixer", "--baseline", "dwconv5x5"], "is not one of --mixers"),
        (["--mode", "mixer", "--plot"], "does not apply to --mode mixer"),
        (["--compile", "--warmup", "0"], "--compile needs --warmup 1 or more"),
        (["--rounds", "0"], "argument --rounds: must be at least 1"),
        (["--mode", "plot"], "--mode plot needs --csv"),
        (["--mode", "plot", "--csv", "nowhere.csv"], "--csv nowhere.csv: no such file"),
    ],
)
def test_bad_arguments_get_one_clear_error(
    argv: list[str], message: str, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--device", "cpu"] if "--device" not in argv else argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("error:") == 1


def test_out_must_be_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    a_file = tmp_path / "results"
    a_file.write_text("not a folder")
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(a_file), "--device", "cpu"])
    assert exc.value.code == 2 and "is a file; give a folder" in capsys.readouterr().err


def test_oom_halves_the_batch_until_it_fits() -> None:
    tried = []

    def run(batch: int) -> str:
        tried.append(batch)
        if batch > 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return "ok"

    assert with_oom_backoff(run, 16, torch.device("cpu")) == ("ok", 2)
    assert tried == [16, 8, 4, 2]

    def always_oom(batch: int) -> None:
        raise torch.OutOfMemoryError("out of memory")

    with pytest.raises(torch.OutOfMemoryError):
        with_oom_backoff(always_oom, 4, torch.device("cpu"))

    def other_error(batch: int) -> None:
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        with_oom_backoff(other_error, 4, torch.device("cpu"))


def test_fixed_size_models_get_img_size() -> None:
    # ViT and Swin pin their input size (pretrained cfg fixed_input_size): without img_size a
    # 64x64 input is rejected. The CPU record in benchmarks/cpu runs Swin-T this way.
    assert fixed_input_size("swin_tiny_patch4_window7_224")
    assert not fixed_input_size("inceptionnext_atto") and not fixed_input_size("convnext_atto")
    small = dict(depth=1, embed_dim=32, num_heads=2, num_classes=10)  # a cheap ViT, same rule
    with pytest.raises(AssertionError):
        create_model("vit_tiny_patch16_224", **small)(torch.zeros(1, 3, 64, 64))
    model = build_model("vit_tiny_patch16_224", 64, **small)
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 10)


def test_cuda_math_restores_tf32_state_and_peak_memory_sees_allocations() -> None:
    def state() -> tuple:
        b = torch.backends
        return (b.cuda.matmul.fp32_precision, b.cudnn.conv.fp32_precision, b.cudnn.benchmark)

    before = state()
    with cuda_math(tf32=False):
        assert state() == ("ieee", "ieee", True)
    with cuda_math(tf32=True):
        assert state() == ("tf32", "tf32", True)
    assert state() == before
    with PeakMemory(torch.device("cpu")) as mem:
        big = torch.ones(64, 2**18)  # 64 MB of float32, touched
        time.sleep(0.1)  # let the sampling thread see it
        del big
    if mem.kind == "cpu_rss_delta":
        assert mem.mb is not None and mem.mb > 40


def test_top1_lookup_rules() -> None:
    # tags fall back to the model's row unless the tagged weights have a row of their own
    assert top1("convnext_tiny.fb_in1k") == PAPER["convnext_tiny"].top1
    assert top1("resnet50.a1_in1k") == PAPER["resnet50"].top1 == 79.8
    assert top1("resnet50.tv_in1k") == PAPER["resnet50.tv_in1k"].top1 == 76.1
    assert top1("resnet18") is None
    assert top1("metanext_attn_small") is None  # it does not converge: left off the figure
    assert top1("inceptionnext_base_384") is None  # the figure is at 224²
    # timm's InceptionNeXt is the same network and weights: same figure, its own label
    assert PAPER_TOP1["inception_next_tiny"] == ("InceptionNeXt-T (timm)", 82.3)
    assert top1("inceptionnext_tiny:fast=on") is None  # a spec, not a name: split it first


def test_paper_figures_are_read_from_one_module(tmp_path: Path) -> None:
    """The params table, the plot and the zoo take the paper's figures from inceptionnext_pl.paper."""
    from inceptionnext_pl.bench.table import PAPER as TABLE
    from inceptionnext_pl.registry import RegistryError, load_registry

    assert TABLE and all(
        TABLE[n] == (PAPER[n].params_m, PAPER[n].macs_g, PAPER[n].img_size) for n in TABLE
    )
    for name, (label, acc) in PAPER_TOP1.items():
        row = PAPER.get(name) or PAPER[name.replace("inception_next_", "inceptionnext_")]
        assert acc == row.top1 and label.startswith(row.label)
    reg = tmp_path / "registry.yaml"
    entry = dict(arch="convnext_tiny", input_size=[3, 224, 224], crop_pct=0.875)
    entry.update(interpolation="bicubic", license="mit", sources=[{"hf": "timm/x"}])
    entries = {"a": {**entry, "paper": "convnext_tiny"}}
    entries["b"] = {**entry, "paper": "resnet50", "top1": None, "top1_ref": "not in the paper"}
    reg.write_text(json.dumps({"version": 1, "entries": entries}))
    a, b = load_registry(reg).values()
    assert (a.top1, a.params_m, a.top1_ref) == (82.1, 28.6, f"paper {PAPER['convnext_tiny'].ref}")
    assert (b.top1, b.params_m, b.top1_ref) == (None, 26.0, "not in the paper")  # overrides
    entries["c"] = {**entry, "paper": "convnext_tinny"}
    reg.write_text(json.dumps({"version": 1, "entries": entries}))
    with pytest.raises(RegistryError, match="'convnext_tinny', which is not a row of"):
        load_registry(reg)


def _paper_text() -> str | None:
    for path in (REPO.parent / "shared" / "paper" / "inceptionnext-paper.txt",):
        if path.is_file():
            return path.read_text()
    return None


def test_paper_figures_match_the_papers_tables() -> None:
    # Every transcribed row: its numbers appear together on one line of the paper's text.
    text = _paper_text()
    if text is None:
        pytest.skip("the paper's text (shared/paper beside the checkout) is not here")
    lines = text.splitlines()

    def on_one_line(*numbers: float | None) -> bool:
        want = [f"{n:g}" if isinstance(n, float) else str(n) for n in numbers if n is not None]
        pattern = [re.compile(rf"(?<![\d.]){re.escape(w)}(?![\d])") for w in want]
        return any(all(p.search(line) for p in pattern) for line in lines)

    for name, r in PAPER.items():
        throughput = [*(r.a100_tf32 or ()), *(r.rtx2080ti_fp32 or ())]
        if throughput:
            assert on_one_line(*throughput, r.top1), name
        else:  # the Sec. 1 quote: a top-1 only
            assert on_one_line(r.top1), name


def test_figure1_labels_do_not_overlap(tmp_path: Path) -> None:
    from matplotlib.text import Text

    # ours and timm's InceptionNeXt-T land on the same point; ConvNeXt-T right beside them
    rows = [("inceptionnext_tiny", 41.3), ("inception_next_tiny", 41.1), ("convnext_tiny", 41.9)]
    rows += [("convnext_tiny_k3", 43.0), ("resnet50", 42.6), ("swin_tiny_patch4_window7_224", 26.2)]
    csv_path = tmp_path / "m.csv"
    csv_path.write_text("model,train_img_s,device_name,precision\n")
    with open(csv_path, "a") as f:
        f.writelines(f"{m},{v},CPU,fp32\n" for m, v in rows)
    fig, plotted = figure1([csv_path, csv_path])
    ax = fig.axes[0]
    renderer = fig.canvas.get_renderer()
    texts = [t for t in ax.texts if t.get_text()]
    assert len(texts) == len(plotted) == 2 * len(rows)
    # the text itself: an Annotation's own extent also covers its leader line
    fig.canvas.draw()
    boxes = [Text.get_window_extent(t, renderer) for t in texts]
    for i, a in enumerate(boxes):
        assert ax.get_window_extent(renderer).contains(a.x0, a.y0), texts[i].get_text()
        for j, b in enumerate(boxes[:i]):
            assert not a.overlaps(b), (texts[i].get_text(), texts[j].get_text())
    points = [ax.transData.transform(o.get_offsets()[0]) for o in ax.collections]
    for box, text in zip(boxes, texts, strict=True):
        assert not any(box.contains(*p) for p in points), text.get_text()


def test_model_specs_phases_and_keep_going(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["--models", "inceptionnext_atto:fast=off,drop_path_rate=0.1", "convnext_atto"]
    argv += ["inceptionnext_atto:band_kernel_size=4", *TINY, "--phases", "train"]
    argv += ["--memory-format", "channels-last", "--keep-going", "--out", str(tmp_path)]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 1  # the failed network, reported once all others ran
    err = capsys.readouterr().err
    assert "inceptionnext_atto:band_kernel_size=4: FAILED, going on" in err
    assert "kernel sizes must be odd" in err
    rows = _rows(tmp_path / "models-cpu-fp32.csv")
    assert [r["model"] for r in rows] == [
        "inceptionnext_atto:fast=off,drop_path_rate=0.1",
        "convnext_atto",
    ]
    assert all(float(r["train_img_s"]) > 0 and r["infer_img_s"] == "" for r in rows)
    meta = json.loads((tmp_path / "models-cpu-fp32.json").read_text())
    assert meta["settings"]["phases"] == ["train"]
    assert list(meta["settings"]["failed"]) == ["inceptionnext_atto:band_kernel_size=4"]
    with pytest.raises(SpecError, match="is not key=value"):
        split_spec("inceptionnext_atto:fast")
    assert split_spec("a:k=7,r=0.25,s=on,t=True") == (
        "a",
        {"k": 7, "r": 0.25, "s": "on", "t": True},
    )
    with pytest.raises(SystemExit) as exc:
        main(["--models", "inceptionnext_atto:fast", "--device", "cpu"])
    assert exc.value.code == 2 and "is not key=value" in capsys.readouterr().err


def test_complexity_is_counted_without_running_the_fast_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A GPU run builds ``fast=on`` models; their MACs are counted on the meta device through the
    # PyTorch mixers, so the count neither needs the kernel nor misses the mixer's MACs.
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    on = complexity("inceptionnext_atto:fast=on", 32)
    assert on == complexity("inceptionnext_atto:fast=off", 32)
    assert on == pytest.approx(count(create_model("inceptionnext_atto"), 32))


def test_fit_throughput_and_synthetic_data(tmp_path: Path) -> None:
    import lightning as L

    from inceptionnext_pl import ImageClassifier
    from inceptionnext_pl.bench.fit import FitThroughput
    from inceptionnext_pl.bench.synthetic import SyntheticImageDataModule

    dm = SyntheticImageDataModule(batch_size=4, image_size=32, num_classes=10, pool_batches=2)
    dm.setup("fit")
    images, labels = next(iter(dm.train_dataloader()))
    assert images.dtype == torch.uint8 and images.shape == (4, 3, 32, 32) and labels.shape == (4,)
    finished, _ = dm.on_after_batch_transfer((images, labels), 0)  # no trainer: no Mixup
    assert finished.dtype == torch.float32 and -3 < finished.mean() < 3

    def fit(setting: str, steps: int, warmup: int) -> FitThroughput:
        cb = FitThroughput(setting, csv=str(tmp_path / "fit.csv"), warmup_steps=warmup)
        model = ImageClassifier("inceptionnext_atto", num_classes=10, warmup_epochs=0)
        trainer = L.Trainer(
            accelerator="cpu", max_steps=steps, callbacks=[cb], logger=False,
            enable_checkpointing=False, enable_progress_bar=False, limit_val_batches=0,
            enable_model_summary=False,
        )  # fmt: skip
        trainer.fit(model, datamodule=SyntheticImageDataModule(4, 32, 10, pool_batches=2))
        return cb

    cb = fit("a", steps=4, warmup=1)
    assert cb.result["img_per_s"] > 0 and cb.result["device"].startswith("CPU")
    fit("b", steps=3, warmup=2)
    fit("a", steps=3, warmup=1)  # the same setting again: its row is replaced
    assert [r["setting"] for r in _rows(tmp_path / "fit.csv")] == ["b", "a"]
    runs = json.loads((tmp_path / "fit.json").read_text())["runs"]
    assert [(r["setting"], r["timed_steps"], r["timed_images"]) for r in runs] == [
        ("b", 1, 4),
        ("a", 2, 8),
    ]
    assert runs[1]["data"]["class"] == "SyntheticImageDataModule"
    with pytest.raises(ValueError, match="needs trainer.max_steps above it"):
        fit("c", steps=2, warmup=2)


def test_cpu_clock_is_refused_for_gpu_runs(
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(SystemExit) as exc:
        main(["--device", "cuda", "--clock", "cpu"])
    assert exc.value.code == 2 and "GPU runs need --clock wall" in capsys.readouterr().err


def test_a_failing_model_gets_one_error_and_keeps_earlier_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from inceptionnext_pl.bench import suites

    class Broken(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    real = suites.build_model
    monkeypatch.setattr(
        suites,
        "build_model",
        lambda name, *a, **k: Broken() if name == "convnext_atto" else real(name, *a, **k),
    )
    argv = ["--models", "inceptionnext_atto", "convnext_atto", "--img-size", "32"]
    argv += ["--batch-size", "2", "--warmup", "0", "--iters", "1", "--threads", "1"]
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--memory-format", "channels-first", "--out", str(tmp_path)])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert "convnext_atto failed while counting MACs at --img-size 32" in err
    assert "mat1 and mat2" in err
    assert [r["model"] for r in _rows(tmp_path / "models-cpu-fp32.csv")] == ["inceptionnext_atto"]
