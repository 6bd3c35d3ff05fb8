"""The inceptionnext-cam command and the stroke-energy ('meaning') check."""

from __future__ import annotations

import json

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from inceptionnext_pl import create_model
from inceptionnext_pl.cam.meaning import stroke_energy, stroke_mask
from inceptionnext_pl.cam_cli import LoadedModel, eval_transform, main
from inceptionnext_pl.tasks import ImageClassifier


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[str]:
    from sklearn.datasets import load_digits

    d = load_digits()
    root = tmp_path_factory.mktemp("images")
    paths = []
    for i in range(3):
        grey = np.round(d.images[i] * 255 / 16).astype(np.uint8)
        path = root / f"digit{i}.png"
        Image.fromarray(np.repeat(grey[..., None], 3, -1)).resize((48, 48)).save(path)
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def lightning_ckpt(tmp_path_factory) -> str:
    """A checkpoint of ImageClassifier as Lightning writes it (with the data settings of the run)."""
    module = ImageClassifier("inceptionnext_atto", num_classes=10)
    path = tmp_path_factory.mktemp("ckpt") / "run.ckpt"
    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": dict(module.hparams),
            "pytorch-lightning_version": L.__version__,
            "datamodule_hyper_parameters": {"dataset": "digits", "image_size": 64, "crop_pct": 1.0},
            "rng_states": {"numpy": np.random.get_state()},  # as ImageClassifier saves them
        },
        path,
    )
    return str(path)


def _run(argv, capsys):
    code = main(argv)
    return code, capsys.readouterr()


def test_lightning_ckpt_overlays(tmp_path, images, lightning_ckpt, capsys):
    out = tmp_path / "out"
    code, cap = _run(["--ckpt", lightning_ckpt, "--images", *images, "--out", str(out)], capsys)
    assert code == 0
    for i in range(3):
        with Image.open(out / "inceptionnext_atto" / f"digit{i}_gradcam.png") as im:
            assert im.size == (64, 64)  # the run's image_size, not the model's 224
    assert not (out / "comparison.png").exists()  # one model, one method: no comparison
    summary = json.loads((out / "summary.json").read_text())
    assert summary["models"]["inceptionnext_atto"]["input_size"] == [3, 64, 64]
    assert "predicted" in cap.out


def test_state_dict_with_model_loads_the_weights(tmp_path, images, capsys):
    model = create_model("inceptionnext_atto", num_classes=7).eval()
    sd = tmp_path / "weights.pth"
    torch.save(model.state_dict(), sd)
    out = tmp_path / "out"
    argv = ["--ckpt", str(sd), "--model", "inceptionnext_atto", "--images", *images]
    code, _ = _run([*argv, "--out", str(out), "--img-size", "64", "--target-class", "6"], capsys)
    assert code == 0
    res = json.loads((out / "summary.json").read_text())["models"]["inceptionnext_atto"]["gradcam"]
    # the very weights were loaded (7 classes inferred from the file): same answers as the model
    tf, _ = eval_transform(LoadedModel("m", model), 64)
    x = torch.stack([tf(Image.open(p).convert("RGB")) for p in images])
    with torch.no_grad():
        assert res["predictions"] == model(x).argmax(-1).tolist()
    assert res["targets"] == [6, 6, 6]


def test_several_models_and_methods_give_a_comparison(tmp_path, images, capsys):
    out = tmp_path / "out"
    argv = ["--model", "inceptionnext_atto", "--weights", "none", "--model", "resnet18"]
    argv += ["--weights", "none", "--num-classes", "10", "--img-size", "64", "--images", *images]
    with pytest.warns(UserWarning, match="random initialisation.*inceptionnext-zoo download"):
        code, cap = _run([*argv, "--method", "gradcam", "layercam", "--out", str(out)], capsys)
    assert code == 0
    for model in ("inceptionnext_atto", "resnet18"):
        for method in ("gradcam", "layercam"):
            assert (out / model / f"digit0_{method}.png").is_file()
    with Image.open(out / "comparison.png") as im:
        assert im.height > im.width / 2  # 3 rows x 5 columns (input + 2 models x 2 methods)
    assert "side-by-side" in cap.out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--method", "gradkam"],
            "Unknown CAM method 'gradkam'; choose one of: gradcam, gradcam++",
        ),
        (["--target-class", "10"], "class index 10 is out of range: the model has 10 classes"),
        (["--target-layer", "stages.7"], "'stages.7' is not a submodule"),
    ],
)
def test_bad_arguments(tmp_path, images, lightning_ckpt, capsys, extra, message):
    argv = ["--ckpt", lightning_ckpt, "--images", *images, "--out", str(tmp_path), *extra]
    assert main(argv) == 1  # one message, no traceback
    assert message in capsys.readouterr().err


def test_bad_inputs(tmp_path, images, lightning_ckpt, capsys):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    cases = [
        (["--ckpt", lightning_ckpt, "--images", str(broken)], f"cannot open image {broken}"),
        (
            ["--ckpt", lightning_ckpt, "--images", str(tmp_path / "nope.jpg")],
            "nope.jpg does not exist",
        ),
        (
            ["--ckpt", str(tmp_path / "missing.ckpt"), "--images", *images],
            "missing.ckpt does not exist",
        ),
        (
            ["--model", "inceptionnext_atom", "--images", *images],
            "Unknown model 'inceptionnext_atom'",
        ),
        (["--ckpt", lightning_ckpt, "--images", *images], None),  # no --out
    ]
    for argv, message in cases:
        if "--out" not in argv and message is not None:
            argv = [*argv, "--out", str(tmp_path / "o")]
        assert main(argv) == 1
        assert (message or "--out DIR") in capsys.readouterr().err


class _InkModel(nn.Module):
    """A classifier whose last feature map is the ink itself (or the background, ``invert``)."""

    def __init__(self, invert: bool) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 1, 1)
        sign = -1.0 if invert else 1.0
        with torch.no_grad():
            self.features.weight.fill_(sign / 3)
            self.features.bias.fill_(0.0 if not invert else 3.0)
        self.fc = nn.Linear(1, 2)
        with torch.no_grad():
            self.fc.weight.fill_(1.0)

    def forward(self, x):
        return self.fc(torch.relu(self.features(x)).mean((2, 3)))


def _digit_dataset(n: int = 12):
    from sklearn.datasets import load_digits

    imgs = torch.tensor(load_digits().images[:n], dtype=torch.float32) / 16
    x = torch.nn.functional.interpolate(imgs[:, None], size=32, mode="bilinear").repeat(1, 3, 1, 1)
    return [(x[i], 0) for i in range(n)]  # mean 0, std 1: the images are their own display


def test_stroke_energy_measures_what_it_claims():
    data = _digit_dataset()
    on_ink = stroke_energy(_InkModel(False), data, (0, 0, 0), (1, 1, 1), target_layer="features")
    on_background = stroke_energy(
        _InkModel(True), data, (0, 0, 0), (1, 1, 1), target_layer="features"
    )
    assert 0.2 < on_ink.stroke_share < 0.6
    assert on_ink.ratio > 1.5 and on_ink.above_chance == 1.0
    assert on_background.ratio < 0.7 and on_background.above_chance == 0.0
    assert "of CAM mass on stroke pixels" in str(on_ink)


def test_stroke_mask_either_polarity():
    img = np.zeros((8, 8))
    img[2:6, 3:5] = 1.0
    assert stroke_mask(img).sum() == 8
    assert (stroke_mask(1 - img) == stroke_mask(img)).all()
    assert not stroke_mask(np.ones((8, 8))).any()


def test_meaning_command(tmp_path, lightning_ckpt, capsys):
    out = tmp_path / "m"
    argv = ["--meaning", "--ckpt", lightning_ckpt, "--limit", "16", "--target-layer", "stages.2"]
    code, cap = _run([*argv, "--method", "gradcam", "eigencam", "--out", str(out)], capsys)
    assert code == 0
    reports = json.loads((out / "meaning.json").read_text())
    assert [r["method"] for r in reports] == ["gradcam", "eigencam"]
    assert all(
        r["images"] == 16 and r["image_size"] == 64 and 0 < r["stroke_share"] < 1 for r in reports
    )
    assert "of CAM mass on stroke pixels" in cap.out
    # 32px: the last stage is 1x1, so the maps are constant: say so instead of a number
    assert main(["--meaning", "--ckpt", lightning_ckpt, "--limit", "4", "--img-size", "32"]) == 1
    assert "has a 1x1 grid at 32px" in capsys.readouterr().err


def test_meaning_needs_a_model(capsys):
    assert main(["--meaning"]) == 1
    assert "--meaning needs --ckpt PATH" in capsys.readouterr().err
