"""Face datasets behind one interface: identity folders, list files, InsightFace RecordIO.

``open_datasets([root, …])`` picks the reader by what each path holds and composes several
roots into one :class:`FaceDataset`; ``open_spec(spec)`` reopens what a run recorded;
``with_degraded_copies`` adds one degraded copy of a fraction of the items, in their identities.
"""

from trainer.datasets.base import FaceDataset, decode_image
from trainer.datasets.composed import ComposedDataset
from trainer.datasets.degraded import DegradedCopies, DegradeOptions, with_degraded_copies
from trainer.datasets.folders import IdentityFolders
from trainer.datasets.open import dataset_kind, open_dataset, open_datasets, open_spec, root_names

__all__ = [
    "ComposedDataset",
    "DegradeOptions",
    "DegradedCopies",
    "FaceDataset",
    "IdentityFolders",
    "dataset_kind",
    "decode_image",
    "open_dataset",
    "open_datasets",
    "open_spec",
    "root_names",
    "with_degraded_copies",
]
