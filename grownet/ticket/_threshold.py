"""Which filters a ticket keeps: a scale-free score, and a threshold solved for a MACs target.

Γ's support early in training is a step function of the initial kernel norms (METHOD.md §6):
with BatchNorm after every conv, ``V_g`` accumulates the kernel itself, so a layer whose
weights start 4x larger enters the support first, whatever the loss needs. The ticket ranks
filters instead by the growth signal's importance (:mod:`grownet.signal`),

    I_g = Σ_{s ≤ t} |γ_g(s) · ∂L/∂γ_g(s)|

accumulated from the first step to the ticket epoch; rescaling a conv's kernel leaves its
BatchNorm's γ and ∂L/∂γ unchanged, so the ranking is scale-free. One global threshold θ keeps
every filter with ``I_g >= θ`` (``relative_to="net"``), or with ``I_g >= θ · mean_{h in its layer} I_h``
(``relative_to="layer"``: each layer's filters ranked against their own layer's mean, so no
layer is emptied because its filters share less of the loss); θ is *solved* (not tuned per layer) so that the reduced net's
inference MACs come closest to ``target`` times the dense net's. Kept MACs never decrease as θ
falls, so the solution is a bisection over the number ``k`` of top-ranked filters kept. Every
layer keeps at least its most important filter, and tied layers share one keep set
(:func:`grownet.ticket.keep_sets`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Mapping

import torch

from ..arch import Architecture
from ..cost import cost
from ..errors import UsageError
from ._prune import keep_sets, reduced_arch, tied_layers

__all__ = ["KeepSolution", "RELATIVE_TO", "solve_keep", "random_keep"]


@dataclass(frozen=True)
class KeepSolution:
    """A solved keep set.

    Attributes:
        keep: layer name -> kept filter indices (sorted), in network order.
        threshold: θ, the smallest score kept by the global rule (before the
            at-least-one-per-layer rule), in units of the mean score (the net's mean filter
            importance, or for ``relative_to="layer"`` 1 = the filter's layer's mean).
        macs_fraction: the reduced net's inference MACs / the dense net's.
        kept_fraction: layer name -> kept filters / layer width.
    """

    keep: dict[str, list[int]]
    threshold: float
    macs_fraction: float
    kept_fraction: dict[str, float]


#: What the threshold is relative to: the net's mean filter importance, or each filter's layer's.
RELATIVE_TO = ("net", "layer")


def solve_keep(arch: Architecture, importance: Mapping[str, torch.Tensor], target: float, *,
               relative_to: str = "net") -> KeepSolution:
    """The keep set whose global importance threshold gives MACs closest to ``target`` x the dense net's.

    Args:
        arch: the dense architecture.
        importance: layer name -> per-filter importance ``(width,)`` (non-negative).
        target: wanted MACs fraction, in (0, 1].
        relative_to: ``"net"`` ranks raw importances across the net; ``"layer"`` ranks each
            filter's importance over its layer's mean (see the module docstring).

    Raises:
        UsageError: a target outside (0, 1], an unknown ``relative_to``, or a layer missing or
            of the wrong width.
    """
    if relative_to not in RELATIVE_TO:
        raise UsageError(f"relative_to: must be one of {', '.join(RELATIVE_TO)}, got {relative_to!r}")
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0 < target <= 1:
        raise UsageError(f"target: the MACs fraction to keep must be in (0, 1], got {target!r}")
    widths = arch.layer_widths()
    for layer, width in widths.items():
        if layer not in importance or torch.as_tensor(importance[layer]).numel() != width:
            raise UsageError(f"importance[{layer!r}]: needs {width} per-filter values")
    names = list(widths)
    scores = {layer: torch.as_tensor(importance[layer], dtype=torch.float64).reshape(-1).cpu() for layer in names}
    for group in tied_layers(arch):  # tied channels are one channel: rank them by their summed importance
        total = sum(scores[m] for m in group)
        for m in group:
            scores[m] = total
    if relative_to == "layer":
        scores = {layer: v / v.mean() if float(v.mean()) > 0 else torch.ones_like(v) for layer, v in scores.items()}
    flat = torch.cat([scores[layer] for layer in names])
    order = torch.argsort(flat, descending=True, stable=True)
    dense = cost(arch).macs

    @functools.lru_cache(maxsize=None)
    def top(k: int) -> tuple[dict[str, list[int]], float]:
        """The keep sets of the ``k`` top-ranked filters and their MACs fraction."""
        mask = torch.zeros(flat.numel(), dtype=torch.bool)
        mask[order[:k]] = True
        keep = keep_sets(arch, dict(zip(names, mask.split([widths[n] for n in names]))), scores=scores)
        return keep, cost(reduced_arch(arch, keep)).macs / dense

    lo, hi = 0, flat.numel()  # fraction(lo) <= target <= fraction(hi) = 1, where reachable
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if top(mid)[1] < target:
            lo = mid
        else:
            hi = mid
    k = min((lo, hi), key=lambda n: abs(top(n)[1] - target))
    keep, fraction = top(k)
    mean = float(flat.mean()) if flat.numel() else 0.0
    theta = float(flat[order[k - 1]]) / mean if k > 0 and mean > 0 else float("inf")
    return KeepSolution(keep, round(theta, 6), round(fraction, 6),
                        {layer: round(len(keep[layer]) / widths[layer], 6) for layer in names})


def random_keep(arch: Architecture, counts: Mapping[str, int], *, seed: int) -> dict[str, list[int]]:
    """Per layer, ``counts[layer]`` filter indices drawn uniformly without replacement
    (``torch.Generator().manual_seed(seed)``; tied layers share one draw), sorted."""
    gen = torch.Generator().manual_seed(int(seed))
    keep: dict[str, list[int]] = {}
    for layer, width in arch.layer_widths().items():
        if layer not in keep:
            keep[layer] = sorted(torch.randperm(width, generator=gen)[: counts[layer]].tolist())
    for group in tied_layers(arch):
        for m in group[1:]:
            keep[m] = keep[group[0]]
    return keep
