"""The weights layer: every loader finds, reads and loads weights here.

``resolve(source)`` gives a local file for a zoo name, a file, a run or hub-format directory, a URL
or ``hf-hub:ID``; ``read_checkpoint(file)`` a state dict from any format we accept;
``load_pretrained(model, source)`` loads it with a report. timm's ``pretrained=True`` for our
models, the tasks' ``pretrained``, the segmentation encoder, ``inceptionnext-cam``, the notebook and
``inceptionnext-zoo`` all go through them.

from inceptionnext_pl import create_model
from inceptionnext_pl.zoo import load_pretrained

model = create_model("inceptionnext_tiny", num_classes=10)
report = load_pretrained(model, "inceptionnext_tiny")  # or a file path, any format
print(report)  # backbone loaded, head.fc2 kept as initialised (1000 vs 10 classes)
"""

from ..registry import (
    RegistryError,
    Source,
    UnknownEntryError,
    ZooEntry,
    find_entry,
    get_entry,
    list_entries,
    registry_path,
)
from .convert import (
    LAYOUT_KEY,
    Checkpoint,
    ConvertResult,
    LightningLayout,
    canonical,
    check_fits,
    convert_file,
    export_checkpoint,
    read_checkpoint,
    save_state_dict,
)
from .download import (
    HashStore,
    cache_dir,
    cached_file,
    download_url,
    fetch,
    fetch_source,
    forget_hashes,
    sha256_file,
)
from .errors import (
    CheckpointFormatError,
    ChecksumError,
    DownloadError,
    StateDictMismatchError,
    ZooError,
)
from .matching import classifier_names, freeze_backbone, split_parameters
from .transfer import (
    LoadReport,
    load_checkpoint,
    load_pretrained,
    model_from,
    model_from_checkpoint,
    resolve,
)

__all__ = [
    "LAYOUT_KEY",
    "Checkpoint",
    "CheckpointFormatError",
    "ChecksumError",
    "ConvertResult",
    "DownloadError",
    "HashStore",
    "LightningLayout",
    "LoadReport",
    "RegistryError",
    "Source",
    "StateDictMismatchError",
    "UnknownEntryError",
    "ZooEntry",
    "ZooError",
    "cache_dir",
    "cached_file",
    "canonical",
    "check_fits",
    "classifier_names",
    "convert_file",
    "download_url",
    "export_checkpoint",
    "fetch",
    "fetch_source",
    "find_entry",
    "forget_hashes",
    "freeze_backbone",
    "get_entry",
    "list_entries",
    "load_checkpoint",
    "load_pretrained",
    "model_from",
    "model_from_checkpoint",
    "read_checkpoint",
    "registry_path",
    "resolve",
    "save_state_dict",
    "sha256_file",
    "split_parameters",
]
