"""Weights files: a model's ``state_dict`` saved with ``torch.save``, loaded without unpickling code.

A weights file belongs to an architecture JSON; :func:`load_model` rebuilds the module from
the JSON and checks every tensor's name and shape before loading, so a file saved for
other widths fails with an error naming the first tensor that does not fit. A run folder
holds the pair as ``architecture.json`` and ``weights.pt``: ``load_model(RUN_DIR)``.
"""

from __future__ import annotations

import io
import os
import pickle
import re
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from .arch import Architecture
from .errors import ArchitectureError, UsageError, WeightsError
from .files import atomic_write_bytes
from .models import as_architecture, build_model

__all__ = ["save_model", "load_model", "load_weights", "read_weights"]

_HINT = "use the architecture JSON the weights were saved with"


def save_model(model: nn.Module, path: str | os.PathLike) -> Path:
    """Write ``model``'s state_dict (tensors moved to the CPU) to ``path`` atomically; return
    the path. The file loads with ``torch.load(path, weights_only=True)``."""
    path = Path(path)
    state = _unwrap(model).state_dict()
    for name, tensor in state.items():  # in place: keeps the state_dict's version metadata
        state[name] = tensor.detach().cpu()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    try:
        atomic_write_bytes(path, buffer.getvalue())
    except OSError as exc:
        raise WeightsError(f"{path}: cannot write weights ({exc.strerror or exc})") from None
    return path


def read_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state_dict stored in ``path``, on the CPU. Never executes pickled code.

    Raises:
        WeightsError: the file is missing, unreadable, corrupt, holds pickled objects other
            than tensors, or is not a mapping of names to tensors.
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsError(f"{path}: file not found; pass the weights file saved with the architecture") from None
    except OSError as exc:
        raise WeightsError(f"{path}: cannot read weights ({exc.strerror or exc})") from None
    except pickle.UnpicklingError as exc:
        # torch's message is many lines of advice; keep the one fact that matters.
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if found:
            raise WeightsError(
                f"{path}: holds a pickled {found.group(1)}, not just tensors; grownet does not run pickled "
                "code: save a state_dict (grownet.save_model)"
            ) from None
        raise WeightsError(f"{path}: not a PyTorch weights file, or corrupt (cannot unpickle it safely)") from None
    except Exception as exc:  # torch raises RuntimeError, EOFError, ... for damaged archives
        raise WeightsError(f"{path}: not a PyTorch weights file, or corrupt ({_first_line(exc)})") from None
    _check_state(state, f"{path}: ")
    return state


def load_weights(model: nn.Module, weights: str | os.PathLike | Mapping[str, torch.Tensor]) -> nn.Module:
    """Load ``weights`` (a weights file or a state_dict) into ``model`` after checking that
    every tensor's name and shape fits; return ``model``.

    Raises:
        WeightsError: naming the first tensor that does not fit (model order; then the
            file's extra tensors), with the expected and the found shape.
    """
    where = ""
    if isinstance(weights, (str, os.PathLike)):
        where = f"{weights}: "
        weights = read_weights(weights)
    else:
        _check_state(weights, where)
    model = _unwrap(model)
    _check_fit(model.state_dict(), weights, where)
    model.load_state_dict(weights)
    return model


def load_model(
    arch: str | os.PathLike | Architecture | Mapping[str, Any],
    weights: str | os.PathLike | Mapping[str, torch.Tensor] | None = None,
    *,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """A ready model in eval mode on ``device``.

    Args:
        arch: a run folder (its ``architecture.json``, and its ``weights.pt`` unless
            ``weights`` is given), an architecture JSON path, an Architecture, or its dict.
        weights: a weights file (see :func:`save_model`) or a state_dict; ``None`` keeps the
            fresh initialisation (drawn from torch's global RNG), except for a run folder.
        device: where the model lives (default: ``"cpu"``).

    Raises:
        ArchitectureError: the architecture is invalid, or a folder has no architecture.json.
        WeightsError: the weights are unreadable or do not fit, or a run folder has no
        weights.pt. UsageError: bad argument types or an unavailable device.
    """
    if isinstance(arch, (str, os.PathLike)) and Path(arch).is_dir():
        arch, weights = _run_files(Path(arch), weights)
    if isinstance(arch, (str, os.PathLike)):
        arch = Architecture.from_json(arch)
    arch = as_architecture(arch)
    dev = _device(device)
    if weights is None:
        model = build_model(arch)
    else:
        if not isinstance(weights, (str, os.PathLike, Mapping)):
            raise UsageError(f"weights: expected a file path or a state_dict, got {type(weights).__name__}")
        # Every tensor is overwritten by the (checked, strict) load: skip initialising them.
        with torch.device("meta"):
            model = build_model(arch)
        model.to_empty(device=dev)
        load_weights(model, weights)
    return model.to(dev).eval()


# ---- helpers --------------------------------------------------------------------------------


def _run_files(folder: Path, weights: Any) -> tuple[Path, Any]:
    """A run folder's ``architecture.json``, and its ``weights.pt`` unless ``weights`` is given."""
    if not (folder / "architecture.json").is_file():
        raise ArchitectureError(f"{folder}: no architecture.json in this folder; pass a finished grownet run folder "
                                "or an architecture JSON file")
    if weights is None:
        weights = folder / "weights.pt"
        if not weights.is_file():
            raise WeightsError(f"{folder}: no weights.pt next to its architecture.json (has the run finished?); "
                               "pass a finished run folder, or weights=FILE")
    return folder / "architecture.json", weights


def _unwrap(model: nn.Module) -> nn.Module:
    """The module behind a ``torch.compile`` wrapper (whose names carry ``_orig_mod.``)."""
    return getattr(model, "_orig_mod", model)


def _device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise UsageError(f"device: unknown device {device!r}; use 'cpu', 'cuda' or 'cuda:N'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device: {device!r} requested but CUDA is not available here; use 'cpu'")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"device: {device!r} requested but MPS is not available here; use 'cpu'")
    return dev


def _shape(tensor: torch.Tensor) -> str:
    return "(" + ", ".join(map(str, tensor.shape)) + ")"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line if len(line) <= 160 else line[:157] + "..."


def _check_state(state: Any, where: str) -> None:
    if not isinstance(state, Mapping):
        raise WeightsError(
            f"{where}not a state_dict: expected a mapping of tensor names to tensors, got {type(state).__name__}"
        )
    for name, tensor in state.items():
        if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
            raise WeightsError(f"{where}not a state_dict: entry {name!r} is a {type(tensor).__name__}, not a tensor")


def _check_fit(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor], where: str) -> None:
    prefix = f"{where}weights do not fit the architecture: "
    for name, tensor in expected.items():
        if name not in found:
            raise WeightsError(f"{prefix}missing tensor {name} (expected shape {_shape(tensor)}); {_HINT}")
        if found[name].shape != tensor.shape:
            raise WeightsError(
                f"{prefix}{name}: expected shape {_shape(tensor)}, found {_shape(found[name])}; {_HINT}"
            )
    for name, tensor in found.items():
        if name not in expected:
            raise WeightsError(f"{prefix}unexpected tensor {name} (shape {_shape(tensor)}); {_HINT}")
