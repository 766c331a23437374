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
from typing import Any, Mapping

import torch
from torch import nn

from .arch import Architecture
from .errors import RunError
from .models import build_model

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


def read_payload(payload: Mapping[str, Any], where: Path) -> Checkpoint:
    """Check a loaded payload's format and rebuild its net.

    Raises:
        RunError: not a grownet checkpoint of this version (``where`` names the folder).
    """
    if payload.get("format") != FORMAT or payload.get("version") != VERSION:
        raise RunError(f"{where}: not a grownet checkpoint of version {VERSION}")
    arch = Architecture.from_dict(payload["arch"])
    with torch.device("meta"):
        model = build_model(arch)
    model = model.to_empty(device="cpu")
    model.load_state_dict(payload["model"])
    return Checkpoint(arch, model, payload["optimizer_kind"], payload["optimizer"], payload.get("best_model"),
                      dict(payload["state"]), payload["rng"], int(payload["loader"]["epoch"]))


def _plain(value: Any) -> Any:
    """Dataclass state as checkpoint-safe plain types."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
