"""grownet: grow compact convolutional networks with DessiLBI structural sparsity."""

from __future__ import annotations

from . import errors
from .arch import Architecture
from .errors import GrownetError
from .models import build_model

__version__ = "0.1.0"

__all__ = [
    "Architecture",
    "GrownetError",
    "build_model",
    "errors",
    "__version__",
]
