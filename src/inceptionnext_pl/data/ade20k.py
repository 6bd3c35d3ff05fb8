"""ADE20K (the MIT Scene Parsing Benchmark, SceneParse150): where it lives and its 150 classes.

The hub repo ``zhoubolei/scene_parse_150`` is a loading script on its ``main`` branch, which
`datasets` >= 4 cannot run. The hub's automatic parquet conversion at revision
``refs/convert/parquet`` holds the same data, one directory per config:
``scene_parsing/{train,validation,test}/NNNN.parquet`` (20,210 train and 2,000 validation images)
with the columns ``image`` (the RGB JPEG), ``annotation`` (the mask, a grey PNG: 0 = "other",
1..150 = the classes below; the test split has no masks) and ``scene_category`` (a ClassLabel of
the scene, not used here). ``instance_segmentation/`` holds the other config, which we do not read.

The same images and masks come as ``ADEChallengeData2016.zip`` from the benchmark's site, in the
layout ``images/{training,validation}/ADE_*.jpg`` + ``annotations/{training,validation}/ADE_*.png``
that mmsegmentation reads.

Class names are mmsegmentation's ``ADE20KDataset.METAINFO`` (the mask value minus one, after
``reduce_zero_label``).
"""

from __future__ import annotations

__all__ = [
    "ADE20K_CLASSES",
    "ADE20K_DATA_DIR",
    "ADE20K_HUB_ID",
    "ADE20K_IMAGE_COLUMN",
    "ADE20K_MASK_COLUMN",
    "ADE20K_REVISION",
]

ADE20K_HUB_ID = "zhoubolei/scene_parse_150"
ADE20K_REVISION = "refs/convert/parquet"
ADE20K_DATA_DIR = "scene_parsing"
ADE20K_IMAGE_COLUMN = "image"
ADE20K_MASK_COLUMN = "annotation"

ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain",
    "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field",
    "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub", "railing",
    "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter", "sand", "sink",
    "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs", "runway", "case",
    "pool table", "pillow", "screen door", "stairway", "river", "bridge", "bookcase", "blind",
    "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm",
    "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
    "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth",
    "television receiver", "airplane", "dirt track", "apparel", "pole", "land", "bannister",
    "escalator", "ottoman", "bottle", "buffet", "poster", "stage", "van", "ship", "fountain",
    "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool", "barrel", "basket",
    "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank",
    "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen",
    "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan",
    "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator", "glass",
    "clock", "flag",
)  # fmt: skip
