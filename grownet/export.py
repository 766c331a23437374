"""Export a run's final net to ONNX or TorchScript, checked against PyTorch on real images.

:func:`export` loads the run's net (``architecture.json`` + ``weights.pt``) in eval mode,
folds every BatchNorm into the conv before it (both formats hold the folded net: plain
convs with a bias, no BatchNorm nodes), writes the file, loads that file back (ONNX with
onnxruntime, TorchScript with ``torch.jit.load``) and runs it on the first test images of
the run's dataset, normalised as in training. The largest absolute logit difference from
the PyTorch model must be at most :data:`TOLERANCE`, or nothing is written. Beside the file
goes ``FILE.json``: what was checked (format, SHA-256, inputs, difference, versions) and
the preprocessing a runtime needs.

The exported net takes ``images``, float32 ``(N, C, H, W)`` (any batch size), normalised
as ``(pixels / 255 - mean) / std`` with the ``mean`` and ``std`` of the JSON, and returns
``logits`` ``(N, classes)``.

ONNX needs the ``export`` extra (``pip install 'grownet-lbi[export]'``: onnx, onnxscript
for torch's exporter, onnxruntime for the check). TorchScript needs only torch (which marks
TorchScript deprecated; the file still loads with ``torch.jit.load`` and in LibTorch).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .errors import DataError, GrownetError, RunError, UsageError
from .files import atomic_write_bytes, atomic_write_text
from .job import provenance
from .models import layer_modules
from .recipe import Recipe
from .runfolder import read_config
from .weights import load_model

__all__ = ["FORMATS", "TOLERANCE", "ExportError", "ExportResult", "export", "fold_batchnorm"]

#: Formats and the suffix of their default file name (``RUN_DIR/model<suffix>``).
FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
#: Largest absolute logit difference between the exported file and PyTorch that passes.
TOLERANCE = 1e-3
_INPUT, _OUTPUT = "images", "logits"


class ExportError(GrownetError):
    """An export cannot be made or does not match the PyTorch model."""


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export` wrote and checked.

    Attributes:
        path: the exported file.
        record: the JSON beside it (``path`` + ``.json``).
        format: ``"onnx"`` or ``"torchscript"``.
        sha256: hex digest of the exported file.
        samples: test images the check ran on.
        max_abs_diff: largest absolute logit difference from the PyTorch model.
    """

    path: Path
    record: Path
    format: str
    sha256: str
    samples: int
    max_abs_diff: float


def export(
    run_dir: str | os.PathLike,
    *,
    format: str,
    out: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    samples: int = 64,
    force: bool = False,
) -> ExportResult:
    """Export the final net of ``run_dir`` and check the file on real images.

    Args:
        run_dir: a finished run folder (architecture.json, weights.pt, config.json).
        format: ``"onnx"`` or ``"torchscript"``.
        out: the file to write (default ``RUN_DIR/model.onnx`` or
            ``RUN_DIR/model.torchscript.pt``); its record goes to ``out + ".json"``.
        data_dir: folder holding the run's dataset (default: the run's own).
        samples: how many test images (the first ones) the check runs on.
        force: replace an existing ``out``.

    Returns:
        :class:`ExportResult`.

    Raises:
        UsageError: an unknown format, a bad ``samples``, or ``out`` exists without ``force``.
        ExportError: the format's packages are missing, the exporter fails, or the file's
            logits differ from PyTorch's by more than :data:`TOLERANCE` (nothing is written).
        RunError, ArchitectureError, WeightsError, DataError: the run folder or its dataset
            cannot be read.
    """
    if format not in FORMATS:
        raise UsageError(f"--format: must be one of {', '.join(FORMATS)}, got {format!r}")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise UsageError(f"samples: must be a positive integer, got {samples!r}")
    run = Path(run_dir)
    if not run.is_dir():
        raise RunError(f"{run}: no such run folder; pass the --out folder of a grownet search")
    path = Path(out) if out is not None else run / f"model{FORMATS[format]}"
    record_path = path.with_name(path.name + ".json")
    if not path.parent.is_dir():
        raise UsageError(f"{path.parent}: no such folder; pass --out FILE in an existing folder")
    if not force and (path.exists() or record_path.exists()):
        raise UsageError(f"{path if path.exists() else record_path} already exists; pass --force to replace it, "
                         "or --out FILE")
    runtime = _RUNTIMES[format]()  # missing packages are refused before any work
    model = load_model(run)
    config = read_config(run / "config.json")
    x, inputs = _test_images(config, model, data_dir, samples)
    with torch.no_grad():
        expected = model(x)

    folded = fold_batchnorm(model)
    with tempfile.TemporaryDirectory(prefix="grownet-export-") as tmp:
        made = Path(tmp) / path.name
        runtime.write(folded, x[[0, -1]], made)  # traced on two images (one would fix the batch size); checked on all
        got = runtime.run(made, x)
        data = made.read_bytes()
    diff = float((torch.as_tensor(got) - expected).abs().max())
    if not diff <= TOLERANCE:  # also refuses NaN
        raise ExportError(f"{path.name}: the exported {format} net differs from the PyTorch net by {diff:.3g} "
                          f"(max abs logit, on {len(x)} test images; logits up to {float(expected.abs().max()):.3g}) "
                          f"> {TOLERANCE:g}; nothing written: the file would not compute the run's net")
    sha = hashlib.sha256(data).hexdigest()
    versions = provenance("")
    record = {
        "format": format,
        "file": path.name,
        "sha256": sha,
        "bytes": len(data),
        "run": str(run),
        "batchnorm_folded": True,
        "input": {"name": _INPUT, "shape": ["N", *x.shape[1:]], "dtype": "float32", **inputs["preprocess"]},
        "output": {"name": _OUTPUT, "shape": ["N", int(expected.shape[1])], "classes": inputs["classes"]},
        "checked": {"dataset": inputs["dataset"], "split": "test", "images": len(x), "which": "the first",
                    "max_abs_diff": diff, "tolerance": TOLERANCE},
        "versions": {**versions["versions"], **runtime.versions},
        "created": versions["started"],
    }
    atomic_write_bytes(path, data)
    atomic_write_text(record_path, json.dumps(record, indent=2) + "\n")
    return ExportResult(path, record_path, format, sha, len(x), diff)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (eval mode) whose every BatchNorm is folded into the conv before
    it: the conv gains a bias, the BatchNorm becomes an identity. Same function up to
    float rounding."""
    folded = copy.deepcopy(model).eval()
    for layer in folded.arch.layer_widths():
        names = layer_modules(folded.arch, layer)  # each conv, then its BatchNorm
        for conv_name, bn_name in zip(names[::2], names[1::2]):
            conv, bn = folded.get_submodule(conv_name), folded.get_submodule(bn_name)
            _replace(folded, conv_name, fuse_conv_bn_eval(conv, bn))
            _replace(folded, bn_name, nn.Identity())
    return folded


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent), attr, module)


# ---- the run's inputs ----------------------------------------------------------------------------


def _test_images(config: Mapping[str, Any], model: nn.Module, data_dir: Any, samples: int) -> tuple[torch.Tensor, dict]:
    """The first ``samples`` test images of the run's dataset, normalised with the training
    split's statistics exactly as the run's loaders did, and what the record says of them."""
    from .data import Loader, load_dataset

    recipe = Recipe.from_dict(config["recipe"])
    ds = load_dataset(config["dataset"], data_dir=data_dir if data_dir is not None else config.get("data_dir"),
                      download=False, limit_train=recipe.data.limit_train or None,
                      limit_test=recipe.data.limit_test or None)
    arch = model.arch
    if (ds.in_channels, ds.image_size, ds.num_classes) != (arch.in_channels, arch.input_size, arch.num_classes):
        raise DataError(f"{ds.name}: {ds.in_channels}x{ds.image_size}x{ds.image_size} images in {ds.num_classes} classes "
                        f"do not fit the net ({arch.in_channels}x{arch.input_size}x{arch.input_size}, "
                        f"{arch.num_classes} classes); pass the run's own dataset folder with --data-dir")
    n = min(samples, len(ds.x_test))
    loader = Loader(ds.x_test[:n], ds.y_test[:n], batch_size=n, mean=ds.mean, std=ds.std, shuffle=False, augment=None)
    x, _ = next(iter(loader))
    preprocess = {"preprocess": "(pixels / 255 - mean) / std, per channel", "mean": list(ds.mean), "std": list(ds.std)}
    return x, {"dataset": ds.name, "classes": list(ds.classes), "preprocess": preprocess}


# ---- formats -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Runtime:
    """How one format is written and read back: ``write(model, example, path)``,
    ``run(path, x) -> logits``, and the versions of the packages it used (for the record)."""

    write: Callable[[nn.Module, torch.Tensor, Path], None]
    run: Callable[[Path, torch.Tensor], Any]
    versions: dict[str, str] = field(default_factory=dict)


def _onnx() -> _Runtime:
    try:
        import onnx
        import onnxruntime
        import onnxscript  # torch's ONNX exporter (dynamo=True) needs it
    except ImportError as exc:
        raise ExportError(f"ONNX export needs onnx, onnxscript and onnxruntime ({exc.name} is missing); "
                          "install them with pip install 'grownet-lbi[export]'") from None

    def write(model: nn.Module, example: torch.Tensor, path: Path) -> None:
        batch = torch.export.Dim("batch")
        try:
            with warnings.catch_warnings():  # torch's own deprecation notice to itself (pytree's LeafSpec)
                warnings.filterwarnings("ignore", message=".*LeafSpec", category=FutureWarning)
                torch.onnx.export(model, (example,), path, dynamo=True, external_data=False, verbose=False,
                                  input_names=[_INPUT], output_names=[_OUTPUT], dynamic_shapes=({0: batch},))
        except Exception as exc:  # the exporter raises many kinds; the first line says what failed
            raise ExportError(f"torch's ONNX exporter failed: {_first_line(exc)}") from None
        onnx.checker.check_model(str(path))

    def run(path: Path, x: torch.Tensor) -> np.ndarray:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run([_OUTPUT], {_INPUT: x.numpy()})[0]

    return _Runtime(write, run, {m.__name__: m.__version__ for m in (onnx, onnxscript, onnxruntime)})


def _torchscript() -> _Runtime:
    def write(model: nn.Module, example: torch.Tensor, path: Path) -> None:
        with torch.no_grad():
            traced = torch.jit.trace(model, example)
        torch.jit.save(torch.jit.freeze(traced), str(path))

    def run(path: Path, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.jit.load(str(path), map_location="cpu")(x)

    return _Runtime(write, run)


_RUNTIMES: dict[str, Callable[[], _Runtime]] = {"onnx": _onnx, "torchscript": _torchscript}


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__
