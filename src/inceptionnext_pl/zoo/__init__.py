"""Model zoo: registry of checkpoints, verified downloads, format conversion, transfer learning.

from inceptionnext_pl import create_model
from inceptionnext_pl.zoo import load_pretrained

model = create_model("inceptionnext_tiny", num_classes=10)
report = load_pretrained(model, "inceptionnext_tiny")  # or a file path, any format
print(report)  # backbone loaded, head.fc2 kept as initialised (1000 vs 10 classes)
"""

from .convert import (
    Checkpoint,
    ConvertResult,
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
    UnknownEntryError,
    ZooError,
)
from .matching import classifier_names, freeze_backbone, split_parameters
from .registry import Source, ZooEntry, find_entry, get_entry, list_entries, registry_path
from .transfer import LoadReport, load_pretrained, resolve

__all__ = [
    "Checkpoint",
    "CheckpointFormatError",
    "ChecksumError",
    "ConvertResult",
    "DownloadError",
    "HashStore",
    "LoadReport",
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
    "load_pretrained",
    "read_checkpoint",
    "registry_path",
    "resolve",
    "save_state_dict",
    "sha256_file",
    "split_parameters",
]
