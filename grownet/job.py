"""What every training job shares (a search, a control, a ticket): data built from a run's
config and recipe, the recipe's DessiLBI and fine-tune optimizers and fine-tune schedule, the
seed architecture, seeding and scoping of the global RNGs, and the run's log file."""

from __future__ import annotations

import contextlib
import logging
import platform
import random
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch
from torch import nn

from ._version import __version__
from .arch import Architecture
from .data import Augment, load_dataset, make_loaders
from .errors import ConfigError, UsageError
from .optim import DessiLBI, dessilbi_param_groups
from .recipe import Recipe
from .seeds import PRESETS, preset
from .train import cosine_lr

__all__ = ["FILE_ONLY", "JobData", "finetune_schedule", "log_to_file", "make_data", "make_dessilbi",
           "make_finetune_optimizer", "provenance", "rng_scope", "rng_state", "seed_all", "seed_arch", "seed_arch_file",
           "set_rng_state"]


# ---- logging and random state -------------------------------------------------------------------


#: ``extra=`` of a log record meant for the run's log file only (console handlers skip it):
#: an error the caller reports itself.
FILE_ONLY = {"file_only": True}


@contextlib.contextmanager
def log_to_file(path: Path) -> Iterator[None]:
    """Send the package's log records (INFO and up) to ``path`` while the run lasts."""
    root = logging.getLogger("grownet")
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.DEBUG if root.getEffectiveLevel() <= logging.DEBUG else logging.INFO)
    old_level = root.level
    if root.getEffectiveLevel() > logging.INFO:
        root.setLevel(logging.INFO)
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()


@contextlib.contextmanager
def rng_scope(device: torch.device) -> Iterator[None]:
    """Run with torch's, Python's and NumPy's global RNGs restored afterwards (the search
    seeds them; the caller's streams are left as they were)."""
    py, npy = random.getstate(), np.random.get_state()
    devices = [device.index or 0] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)


def seed_all(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(device: torch.device) -> dict[str, Any]:
    """The global RNG states as checkpoint-safe tensors and plain types."""
    py = random.getstate()
    npy = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [npy[0], torch.from_numpy(npy[1].astype(np.int64)), int(npy[2]), int(npy[3]), float(npy[4])],
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: Mapping[str, Any], device: torch.device) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npy = state["numpy"]
    np.random.set_state((npy[0], npy[1].numpy().astype(np.uint32), npy[2], npy[3], npy[4]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def provenance(command: str) -> dict[str, Any]:
    """The ``versions``, ``command`` and ``started`` (UTC, ISO 8601) entries of a job's
    config.json."""
    return {
        "versions": {"grownet": __version__, "torch": torch.__version__, "torchvision": _version_of("torchvision"),
                     "python": platform.python_version()},
        "command": command,
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _version_of(package: str) -> str | None:
    """An installed package's version without importing it (None when absent)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


# ---- the recipe's parts ------------------------------------------------------------------------


def make_dessilbi(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """A fresh DessiLBI over ``model`` with the recipe's ``[optim]`` settings."""
    o = recipe.optim
    groups = dessilbi_param_groups(model, weight_decay=o.weight_decay)
    return DessiLBI(groups, lr=o.lr, kappa=o.kappa, mu=o.mu, lam=o.lam, momentum=o.momentum, nesterov=o.nesterov)


def make_finetune_optimizer(model: nn.Module, recipe: Recipe, *,
                            dessilbi: torch.optim.Optimizer | None = None) -> torch.optim.Optimizer:
    """The ``[finetune]`` optimizer over ``model``: momentum SGD with the ``finetune.*``
    settings, or for ``finetune.optimizer = "dessilbi"`` the optimizer ``dessilbi`` when given
    (a search keeps its growing optimizer and its state) or a fresh one (controls, tickets)."""
    f = recipe.finetune
    if f.optimizer == "dessilbi":
        return dessilbi if dessilbi is not None else make_dessilbi(model, recipe)
    return torch.optim.SGD(model.parameters(), lr=f.lr, momentum=f.momentum, nesterov=f.nesterov and f.momentum > 0,
                           weight_decay=f.weight_decay)


def finetune_schedule(recipe: Recipe, *, epochs: int, steps: int) -> Callable[[int, int], float]:
    """The fine-tune's rate at (epoch from 0, batch from 0) of ``epochs`` epochs of ``steps``
    batches: cosine from ``finetune.lr`` to ``finetune.min_lr`` over every step, after a
    linear warm-up of ``finetune.warmup_epochs`` (:func:`grownet.train.cosine_lr`)."""
    f = recipe.finetune
    total, warm = max(1, epochs * steps), f.warmup_epochs * steps

    def lr_at(epoch: int, i: int) -> float:
        return cosine_lr(epoch * steps + i, total, lr=f.lr, min_lr=f.min_lr, warmup=warm)

    return lr_at


def make_data(config: Mapping[str, Any], recipe: Recipe, device: torch.device, *, channels_last: bool) -> Any:
    """Load the dataset and build the train / validation / test loaders of the recipe."""
    d = recipe.data
    ds = load_dataset(config["dataset"], data_dir=config.get("data_dir"), limit_train=d.limit_train or None,
                      limit_test=d.limit_test or None)
    n = len(ds.y_train)
    if d.val_size >= n:
        raise ConfigError(f"data.val_size: {d.val_size} is not below the {n} training images read; lower it (or raise data.limit_train)")
    augment = Augment(cutout=d.cutout) if d.augment else (Augment(crop_padding=0, flip=False, cutout=d.cutout) if d.cutout else None)
    loaders = make_loaders(ds, batch_size=d.batch_size, val_fraction=d.val_size / n, seed=int(config["seed"]), device=device,
                           augment=augment, eval_batch_size=d.eval_batch_size, channels_last=channels_last)
    return JobData(loaders.train, loaders.val, loaders.test, list(ds.classes), ds.num_classes, ds.in_channels, ds.image_size)


@dataclass(frozen=True)
class JobData:
    """A job's loaders and the dataset's shape."""

    train: Any
    val: Any
    test: Any
    classes: list[str]
    num_classes: int
    in_channels: int
    input_size: int


def seed_arch(recipe: Recipe, data: Any) -> Architecture:
    """The seed net of ``recipe.model`` sized for ``data`` (classes, channels, input size).

    Raises:
        ConfigError: a bad preset shape, or a JSON architecture that does not fit the data.
    """
    m = recipe.model
    name = m.seed_arch
    dims = dict(num_classes=data.num_classes, in_channels=data.in_channels, input_size=data.input_size)
    if name in PRESETS:
        shape = _seed_shape(name, m.seed_width, m.seed_depths)
        try:
            return preset(name, **shape, **dims)
        except UsageError as exc:
            raise ConfigError(f"model.seed_arch: {exc}") from None
    arch = seed_arch_file(recipe)
    for key, value in dims.items():
        if getattr(arch, key) != value:
            raise ConfigError(f"model.seed_arch: {name} has {key} {getattr(arch, key)}, the dataset needs {value}")
    return arch.with_meta() if not arch.meta else Architecture.from_dict({**arch.to_dict(), "meta": {}})


def seed_arch_file(recipe: Recipe) -> Architecture:
    """The architecture JSON named by ``model.seed_arch`` (not a preset), parsed and validated."""
    m = recipe.model
    name = m.seed_arch
    if m.seed_width or m.seed_depths:
        raise ConfigError(f"model.seed_width and model.seed_depths apply to the vgg and resnet presets only, not to {name!r}")
    if not name.endswith(".json") and not Path(name).exists():
        raise ConfigError(f"model.seed_arch: must be a preset ({', '.join(PRESETS)}) or an architecture JSON path, got {name!r}")
    return Architecture.from_json(name)


def _seed_shape(name: str, width: int | tuple[int, ...], depths: int | tuple[int, ...]) -> dict[str, Any]:
    """Preset keyword arguments for ``model.seed_width`` / ``model.seed_depths`` (0 = the
    preset's own; one number applies to every stage of the preset)."""
    if name not in ("vgg", "resnet"):
        if width or depths:
            raise ConfigError(f"model.seed_width and model.seed_depths apply to the vgg and resnet presets only, not to {name!r}")
        return {}
    stages = len(depths) if isinstance(depths, tuple) else len(width) if isinstance(width, tuple) else (5 if name == "vgg" else 3)
    kw: dict[str, Any] = {}
    if depths:
        kw["depths" if name == "vgg" else "blocks"] = depths if isinstance(depths, tuple) else (depths,) * stages
    elif name == "vgg" and isinstance(width, tuple) and len(width) != 5:
        raise ConfigError(f"model.seed_width: {len(width)} values, but the vgg preset has 5 stages; give model.seed_depths too")
    if width:
        kw["width" if name == "vgg" else "widths"] = width if isinstance(width, tuple) else (width,) * stages
    return kw
