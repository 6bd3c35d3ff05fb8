"""The InceptionNeXt paper's reported figures, in one place.

Every number the project quotes from the paper (CVPR 2024; text in ``shared/paper``) lives here:
ImageNet-1k top-1, parameters, MACs and the measured throughputs, cited by table. The params
/ MACs table (``inceptionnext-table``), the Figure 1 plot (``inceptionnext-bench --mode plot``)
and the zoo registry (``inceptionnext-zoo list``) read them from this module.

Keys are model names as ``create_model`` knows them (ours, or timm's for the baselines); a name
with a pretrained tag (``convnext_tiny.fb_in1k``) falls back to the name without it, unless the
tagged weights have their own row (``resnet50.tv_in1k``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Reported:
    """One row of the paper. Throughputs are (train, inference) images/s at batch 128."""

    label: str  # the name the paper prints, used in figures
    ref: str  # where the row is: "Table 4", "Table 1", ...
    top1: float | None = None  # ImageNet-1k top-1 (%)
    params_m: float | None = None
    macs_g: float | None = None
    img_size: int = 224
    a100_tf32: tuple[int, int] | None = None  # Tables 1, 4 (PyTorch 1.13, CUDA 11.7)
    rtx2080ti_fp32: tuple[int, int] | None = None  # Tables 4, 5 (PyTorch 1.8.1, CUDA 10.2)


_T1 = "Table 1"
_T4 = "Table 4"
_T5 = "Table 5"

# InceptionNeXt params and MACs are Table 3's (one more digit than Table 4), atto's MACs Table 4's.
PAPER: dict[str, Reported] = {
    "inceptionnext_atto": Reported(
        "InceptionNeXt-A", _T4, 75.3, 4.2, 0.51, 224, (2661, 9876), (992, 3595)
    ),
    "inceptionnext_tiny": Reported(
        "InceptionNeXt-T", _T4, 82.3, 28.1, 4.2, 224, (901, 2900), (254, 822)
    ),
    "inceptionnext_small": Reported(
        "InceptionNeXt-S", _T4, 83.5, 49.4, 8.4, 224, (521, 1750), (130, 447)
    ),
    "inceptionnext_base": Reported(
        "InceptionNeXt-B", _T4, 84.0, 86.7, 14.9, 224, (375, 1244), (80, 287)
    ),
    "inceptionnext_base_384": Reported(
        "InceptionNeXt-B (384²)", _T4, 85.2, 86.7, 43.6, 384, (139, 428), (27, 97)
    ),
    "inceptionnext_small_iso": Reported(
        "InceptionNeXt-S (iso.)", _T5, 79.7, 22.0, 4.2, rtx2080ti_fp32=(310, 998)
    ),
    "convnext_small_iso": Reported(
        "ConvNeXt-S (iso.)", _T5, 79.7, 22.0, 4.3, rtx2080ti_fp32=(270, 879)
    ),
    # It does not converge (3.9%); figures leave it out.
    "metanext_attn_small": Reported(
        "MetaNeXt-Attn", _T5, 3.9, 22.0, 4.6, rtx2080ti_fp32=(288, 816)
    ),
    "convnext_atto": Reported("ConvNeXt-A", _T4, 75.7, 3.7, 0.55, 224, (835, 4539), (345, 1568)),
    # ConvNeXt-T's 28.6M is Table 1's (Table 4 rounds to 29); its top-1 is the ConvNeXt paper's.
    "convnext_tiny": Reported(
        "ConvNeXt-T",
        "Tables 1 and 4 (from the ConvNeXt paper)",
        82.1,
        28.6,
        4.5,
        224,
        (575, 2413),
        (177, 590),
    ),
    "convnext_small": Reported("ConvNeXt-S", _T4, 83.1, 50, 8.7, 224, (361, 1535), (105, 353)),
    "convnext_base": Reported("ConvNeXt-B", _T4, 83.8, 89, 15.4, 224, (267, 1122), (68, 236)),
    # Table 1: ConvNeXt-T with smaller kernels, then convolving only part of the channels.
    "convnext_tiny_k5": Reported("ConvNeXt-T/k5", _T1, 82.0, 28.4, 4.4, 224, (675, 2704)),
    "convnext_tiny_k3": Reported("ConvNeXt-T/k3", _T1, 81.5, 28.3, 4.4, 224, (798, 2802)),
    "convnext_tiny_k3_par1_2": Reported(
        "ConvNeXt-T/k3 r1/2", _T1, 81.4, 28.3, 4.4, 224, (818, 2740)
    ),
    "convnext_tiny_k3_par3_8": Reported(
        "ConvNeXt-T/k3 r3/8", _T1, 81.4, 28.3, 4.4, 224, (847, 2762)
    ),
    "convnext_tiny_k3_par1_4": Reported(
        "ConvNeXt-T/k3 r1/4", _T1, 81.3, 28.3, 4.4, 224, (871, 2808)
    ),
    "convnext_tiny_k3_par1_8": Reported(
        "ConvNeXt-T/k3 r1/8", _T1, 80.8, 28.3, 4.4, 224, (901, 2833)
    ),
    "convnext_tiny_k3_par1_16": Reported(
        "ConvNeXt-T/k3 r1/16", _T1, 80.1, 28.3, 4.4, 224, (916, 2846)
    ),
    # "RSB" rows: the "ResNet strikes back" recipe at 224².
    "resnet50": Reported(
        "ResNet-50 (RSB)", "Table 4 (RSB-ResNet-50)", 79.8, 26, 4.1, 224, (969, 3149), (278, 977)
    ),
    "resnet101": Reported("ResNet-101 (RSB)", _T4, 81.3, 45, 7.9, 224, (620, 2057), (168, 592)),
    "resnet152": Reported("ResNet-152 (RSB)", _T4, 81.8, 60, 11.6, 224, (437, 1457), (115, 415)),
    # torchvision's weights: the original recipe, quoted in the introduction only.
    "resnet50.tv_in1k": Reported("ResNet-50", "Sec. 1 (original ResNet-50 recipe)", 76.1, 26),
    "swin_tiny_patch4_window7_224": Reported(
        "Swin-T", _T4, 81.3, 29, 4.5, 224, (564, 1768), (184, 554)
    ),
    "swin_small_patch4_window7_224": Reported(
        "Swin-S", _T4, 83.0, 50, 8.7, 224, (359, 1131), (109, 328)
    ),
    "swin_base_patch4_window7_224": Reported(
        "Swin-B", _T4, 83.5, 88, 15.4, 224, (271, 843), (72, 223)
    ),
    "deit_small_patch16_224": Reported("DeiT-S", _T4, 79.8, 22, 4.6, 224, (1227, 3781), (276, 784)),
    "deit_base_patch16_224": Reported("DeiT-B", _T4, 81.8, 86, 17.5, 224, (541, 1608), (86, 259)),
}


def reported(name: str) -> Reported | None:
    """The paper's row for a model name (a pretrained tag is dropped if it has no row of its own)."""
    return PAPER.get(name) or PAPER.get(name.split(".")[0])


@dataclass(frozen=True)
class ReportedSeg:
    """One ADE20K row (Tables 6 and 7): params, MACs at ``input_size`` (H, W), FPS on a 2080Ti
    and mIoU on the validation set."""

    label: str
    ref: str
    params_m: float
    macs_g: float
    input_size: tuple[int, int]
    fps_2080ti: float | None
    miou: float


_T6, _T7 = "Table 6 (UperNet)", "Table 7 (Semantic FPN)"
_UPER, _FPN = (512, 2048), (512, 512)

# Keys are (decoder, backbone) as SemanticSegmenter takes them.
PAPER_SEG: dict[tuple[str, str], ReportedSeg] = {
    ("upernet", "swin_tiny_patch4_window7_224"): ReportedSeg(
        "Swin-T", _T6, 60, 945, _UPER, 20.6, 45.8
    ),
    ("upernet", "convnext_tiny"): ReportedSeg("ConvNeXt-T", _T6, 60, 939, _UPER, 20.6, 46.7),
    ("upernet", "inceptionnext_tiny"): ReportedSeg(
        "InceptionNeXt-T", _T6, 56, 933, _UPER, 22.7, 47.9
    ),
    ("upernet", "inceptionnext_small"): ReportedSeg(
        "InceptionNeXt-S", _T6, 78, 1020, _UPER, 17.6, 50.0
    ),
    ("upernet", "inceptionnext_base"): ReportedSeg(
        "InceptionNeXt-B", _T6, 115, 1159, _UPER, 17.5, 50.6
    ),
    ("fpn", "resnet50"): ReportedSeg("ResNet-50", _T7, 29, 46, _FPN, 30.2, 36.7),
    ("fpn", "inceptionnext_tiny"): ReportedSeg("InceptionNeXt-T", _T7, 28, 44, _FPN, 31.4, 43.1),
    ("fpn", "inceptionnext_small"): ReportedSeg("InceptionNeXt-S", _T7, 50, 65, _FPN, 20.7, 45.6),
    ("fpn", "inceptionnext_base"): ReportedSeg("InceptionNeXt-B", _T7, 85, 100, _FPN, 20.2, 46.4),
}


TITLE = "InceptionNeXt: When Inception Meets ConvNeXt"
ARXIV = "https://arxiv.org/abs/2303.16900"
CODE = "https://github.com/sail-sg/inceptionnext"
BIBTEX = """@inproceedings{yu2024inceptionnext,
  title={InceptionNeXt: When Inception Meets ConvNeXt},
  author={Yu, Weihao and Zhou, Pan and Yan, Shuicheng and Wang, Xinchao},
  booktitle={Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year={2024}
}"""
