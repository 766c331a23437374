"""Datasets, the validation split, and the in-memory batched loader.

Typical use::

    ds = load_dataset("cifar10", data_dir="../shared/data")
    train, val, test = make_loaders(ds, batch_size=128, seed=0, device="cuda")
    for epoch in range(epochs):
        train.set_epoch(epoch)          # order + augmentation = f(seed, epoch)
        for x, y in train: ...          # float (B, C, H, W) normalised, int64 (B,), on the device

``val`` is held out from the training set (:func:`split_validation`); ``test`` is for final
reporting only.
"""

from __future__ import annotations

from ._augment import Augment, batch_crop_flip, batch_cutout, derive_seed
from ._dataset import Dataset, channel_stats, default_data_dir
from ._load import load_dataset
from ._loader import DEFAULT_MAX_MEMORY_BYTES, Loader, Loaders, StreamLoader, make_loaders, split_validation
from ._named import KNOWN_DATASETS
from ._torchvision import import_torchvision

__all__ = [
    "KNOWN_DATASETS",
    "DEFAULT_MAX_MEMORY_BYTES",
    "Dataset",
    "load_dataset",
    "default_data_dir",
    "channel_stats",
    "split_validation",
    "Augment",
    "Loader",
    "StreamLoader",
    "Loaders",
    "make_loaders",
    "batch_crop_flip",
    "batch_cutout",
    "derive_seed",
    "import_torchvision",
]
