"""grownet: grow compact convolutional networks with DessiLBI structural sparsity.

The public surface is flat: ``grownet.DessiLBI``, ``grownet.Architecture``,
``grownet.build_model``, ``grownet.load_model``, ``grownet.cost``, ``grownet.search`` ...
Functions named like their module (``cost``, ``search``, ``tune``, ``ticket``) shadow the
module as a package attribute; import submodules with ``from grownet.cost import ...``.
"""

from __future__ import annotations

from . import errors, seeds
from ._version import __version__
from .arch import Architecture
from .cost import Cost, cost
from .errors import GrownetError
from .models import build_model
from .optim import DessiLBI, dessilbi_param_groups, filter_activity
from .search import SearchResult, search
from .ticket import ticket
from .tune import tune
from .weights import load_model, save_model

__all__ = [
    "Architecture",
    "Cost",
    "DessiLBI",
    "GrownetError",
    "build_model",
    "cost",
    "dessilbi_param_groups",
    "errors",
    "filter_activity",
    "load_model",
    "save_model",
    "SearchResult",
    "search",
    "seeds",
    "ticket",
    "tune",
    "__version__",
]
