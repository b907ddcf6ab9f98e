"""Data for Embodied-R: the record type, loaders for the real benchmarks, and a synthetic egocentric world."""

from embodied_data.manifest import read_gt_captions, read_manifest, write_manifest
from embodied_data.records import Record, SkipReport, choice_letters
from embodied_data.split import assign_splits, split_scenes

__all__ = [
    "Record",
    "SkipReport",
    "assign_splits",
    "choice_letters",
    "read_gt_captions",
    "read_manifest",
    "split_scenes",
    "write_manifest",
]
