"""Import torchvision, also where its C extension cannot load.

The torchvision wheel on PyPI is a CUDA build. Installed next to a CPU-only torch, its C
extension fails to load (it links libc10_cuda) and ``import torchvision`` then dies while
registering fake kernels for the extension's ``nms``/``qnms`` ops, which were never defined.
grownet only needs torchvision's pure-Python parts (dataset downloaders, and the transforms
the throughput benchmark compares against), so on that failure we define those two op
schemas ourselves and import again. The detection ops stay unusable, as they were.
"""

from __future__ import annotations

import logging
import sys
from types import ModuleType

import torch

from ..errors import DataError
from ._dataset import describe

__all__ = ["import_torchvision"]

log = logging.getLogger(__name__)

# Held for the life of the process: dropping a Library removes its definitions.
_shim: torch.library.Library | None = None


def import_torchvision() -> ModuleType:
    """Return the ``torchvision`` module (see the module docstring for the CPU-torch case).

    Raises:
        DataError: torchvision is not installed or cannot be imported.
    """
    global _shim
    try:
        import torchvision

        return torchvision
    except ImportError as exc:
        raise DataError(
            f"torchvision is needed to download datasets but cannot be imported ({describe(exc)}); pip install "
            "torchvision"
        ) from None
    except RuntimeError as exc:
        if "torchvision::" not in str(exc) or _shim is not None:
            raise DataError(
                f"torchvision cannot be imported ({describe(exc)}); reinstall a torchvision that matches torch "
                f"{torch.__version__}"
            ) from None
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    _shim = torch.library.Library("torchvision", "FRAGMENT")
    _shim.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _shim.define("qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor")
    log.debug("torchvision's C extension did not load (CUDA build on a CPU torch); using its Python parts only")
    try:
        import torchvision
    except Exception as exc:  # noqa: BLE001 - any failure here means torchvision is unusable
        raise DataError(
            f"torchvision cannot be imported ({describe(exc)}); reinstall a torchvision that matches torch "
            f"{torch.__version__}"
        ) from None
    return torchvision
