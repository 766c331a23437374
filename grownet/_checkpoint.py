"""A search's checkpoint payload: what it holds, and reading it back.

Format ``"grownet.checkpoint"``, version 1 (unchanged since the first release, so every
checkpoint written so far resumes): a dict of tensors and plain types (``torch.load(...,
weights_only=True)``)::

    format, version      "grownet.checkpoint", 1
    arch                 Architecture.to_dict() of the net
    model                its state dict
    optimizer            the optimizer's state dict (DessiLBI: V, Γ, momentum per parameter)
    optimizer_kind       "dessilbi" or "sgd" (a fine-tune with finetune.optimizer = "sgd")
    best_model           state dict of the best fine-tune epoch so far, or None
    state                the loop's and the search's counters as plain data (SearchState)
    rng                  grownet.job.rng_state()
    loader               {"epoch": the training loader's next epoch}

The run folder (:class:`grownet.runfolder.RunFolder`) stores it atomically with a SHA-256
manifest; this module knows only its contents.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from .arch import Architecture
from .errors import ArchitectureError, RunError
from .models import build_model
from .validate import check_fields, check_int, check_object, cut, show

__all__ = ["FORMAT", "VERSION", "Checkpoint", "make_payload", "read_payload"]

FORMAT = "grownet.checkpoint"
VERSION = 1


@dataclass(frozen=True)
class Checkpoint:
    """A payload read back: the net (on the CPU, weights loaded), its architecture, and the
    rest as stored."""

    arch: Architecture
    model: nn.Module
    optimizer_kind: str
    optimizer: Mapping[str, Any]
    best_model: dict[str, torch.Tensor] | None
    state: dict[str, Any]
    rng: Mapping[str, Any]
    loader_epoch: int


def make_payload(*, arch: Architecture, model: nn.Module, optimizer: torch.optim.Optimizer,
                 best_model: Mapping[str, torch.Tensor] | None, state: Any, rng: Mapping[str, Any],
                 loader_epoch: int) -> dict[str, Any]:
    """The payload of one checkpoint (``state`` a dataclass of plain values)."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "arch": arch.to_dict(),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "optimizer_kind": "sgd" if isinstance(optimizer, torch.optim.SGD) else "dessilbi",
        "best_model": best_model,
        "state": _plain(asdict(state)),
        "rng": rng,
        "loader": {"epoch": loader_epoch},
    }


def read_payload(payload: Any, where: Path) -> Checkpoint:
    """Check a loaded payload's format and fields (:mod:`grownet.validate`) and rebuild its net.

    Raises:
        RunError: not a grownet checkpoint of this version, a field of the wrong type, or
            weights that do not fit the stored architecture (``where`` names the folder).
    """
    if not isinstance(payload, Mapping) or payload.get("format") != FORMAT or payload.get("version") != VERSION:
        raise RunError(f"{where}: not a grownet checkpoint of version {VERSION}")
    try:
        p = check_fields(payload, _PAYLOAD, path="checkpoint", error=RunError, required=_REQUIRED)
        arch = Architecture.from_dict(p["arch"])
        with torch.device("meta"):
            model = build_model(arch)
        model = model.to_empty(device="cpu")
        model.load_state_dict(p["model"])
    except ArchitectureError as exc:
        raise RunError(f"{where}: checkpoint.arch: {exc}; start again with --force") from None
    except RunError as exc:
        raise RunError(f"{where}: {exc}; start again with --force") from None
    except (RuntimeError, TypeError, ValueError, KeyError) as exc:  # load_state_dict: missing keys, other shapes
        raise RunError(f"{where}: checkpoint.model does not fit checkpoint.arch ({_first_line(exc)}); "
                       "start again with --force") from None
    return Checkpoint(arch, model, p["optimizer_kind"], p["optimizer"], p.get("best_model"), p["state"], p["rng"],
                      p["loader"]["epoch"])


def _state_dict(v: Any, path: str) -> Any:
    """A state dict: an object of tensors (None passes for ``best_model``)."""
    if v is None:
        return None
    obj = check_object(v, path, error=RunError)
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise RunError(f"{path}.{cut(key)}: must be a tensor, got {type(value).__name__}")
    return obj


def _kind(v: Any, path: str) -> str:
    if v not in ("dessilbi", "sgd"):
        raise RunError(f"{path}: must be 'dessilbi' or 'sgd', got {show(v)}")
    return v


def _object(v: Any, path: str) -> dict[str, Any]:
    return check_object(v, path, error=RunError)


def _loader(v: Any, path: str) -> dict[str, Any]:
    return check_fields(v, {"epoch": lambda e, p: check_int(e, p, error=RunError)}, path=path, error=RunError,
                        required=("epoch",))


def _first_line(exc: BaseException) -> str:
    return cut(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__, 200)


#: The payload's fields and their checks (``arch`` is checked by Architecture.from_dict).
_PAYLOAD: dict[str, Callable[[Any, str], Any]] = {
    "arch": _object, "model": _state_dict, "optimizer": _object, "optimizer_kind": _kind,
    "best_model": _state_dict, "state": _object, "rng": _object, "loader": _loader,
}
_REQUIRED = tuple(key for key in _PAYLOAD if key != "best_model")


def _plain(value: Any) -> Any:
    """Dataclass state as checkpoint-safe plain types."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
