"""The growth signal: a scale-free share of each layer's filters that the loss relies on.

Why not Γ's support of the conv kernels (the first version's signal)? With BatchNorm after
every conv, the kernel's norm does not change the function, and before a filter enters,
V_g = (α/ν)·Σ_t W_g(t) only accumulates the kernel itself: measured on CIFAR-10 (README,
"How growth works"), ‖V_g‖ / ((α/ν)·Σ_t ‖W_g(t)‖) was 0.96-0.98 in every layer and the
spread of ‖V_g‖ inside a layer (3%) was the spread of the initial norms, so the support read
at a check was a step function of (λ, ν, α, round length, initial norm).

What the signal reads instead is the first-order loss change of switching a filter off,
through the BatchNorm scale γ_g that follows its conv (Taylor importance; Molchanov et al.,
CVPR 2019), accumulated along the growth round (V-like, restarted at every round):

    I_g(t) = Σ_{s ≤ t} |γ_g(s) · ∂L/∂γ_g(s)|

A ResNet stage width is produced by several convs; a channel's importance is the sum over the
BatchNorms that write it. Multiplying a conv's kernel by any c > 0 leaves its BatchNorm's
output, γ and ∂L/∂γ unchanged, so the signal is scale-free by construction. A filter is
*active* while its importance is at least ``rho`` times the mean importance of all filters of
the net, ``I_g(t) >= rho · mean_h I_h(t)``, and a layer's **activity** is its share of active
filters. The first step at which a filter is active is its *entry step*. Because a layer's
importance is shared among its filters, widening a layer lowers each filter's share: a layer
that does not need more filters stops reading as saturated.

:class:`ImportanceMeter` collects this from the gradients already computed by each training
step (a multiply, an abs and a sum per BatchNorm: no extra pass over the data).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
from torch import nn

from .arch import Architecture

__all__ = ["ImportanceMeter", "layer_bn_weights"]


def layer_bn_weights(arch: Architecture, layer: str) -> list[str]:
    """Names of the BatchNorm weights (γ) that scale the filters of ``layer``."""
    return arch.layer(layer).bn_weights


class ImportanceMeter:
    """Accumulates each filter's importance I_g over one growth round and reads activity.

    Args:
        model: the net being trained (its parameter names follow ``arch``).
        arch: the architecture of ``model``.
        rho: a filter is active when I_g >= rho · (mean I over every filter of the net).
        trace_every: record every layer's activity every this many steps (0: never).
        weights: ``{layer: w > 0}``: the test reads ``w·I_g`` for every filter of the layer
            instead (the search passes ``m ** -grow.activity_cost_exponent``, m the MACs one
            more filter of the layer adds: importance per MAC). Scaling every weight by one
            factor changes nothing; the importance shares and records stay unweighted.

    Call :meth:`observe` after every optimizer step (the gradients of the step must still be
    on the parameters). A growth changes the layers: make a new meter for the next round.
    """

    def __init__(self, model: nn.Module, arch: Architecture, *, rho: float, trace_every: int = 0,
                 weights: Mapping[str, float] | None = None) -> None:
        params = dict(model.named_parameters())
        self.rho = float(rho)
        self.weights = None if weights is None else {layer.name: float(weights[layer.name]) for layer in arch.layers}
        self.trace_every = int(trace_every)
        self.layers = [layer.name for layer in arch.layers]
        self._bn = [[params[n] for n in layer.bn_weights] for layer in arch.layers]
        device = self._bn[0][0].device
        widths = [layer.width for layer in arch.layers]
        # One flat vector for every filter of the net (layers are views into it), so a step is
        # a few tensor ops with one host sync, not a Python loop over filters.
        self._flat = torch.zeros(sum(widths), dtype=torch.float64, device=device)
        self._entry = torch.zeros(sum(widths), dtype=torch.int64, device=device)  # 0: never active
        self.importance = dict(zip(self.layers, self._flat.split(widths)))
        # Each filter's weight in the activity test (its layer's): None, all ones.
        self._weight = None if self.weights is None else torch.tensor(
            [self.weights[layer] for layer, width in zip(self.layers, widths) for _ in range(width)],
            dtype=torch.float64, device=device)
        self._entries = dict(zip(self.layers, self._entry.split(widths)))
        self.steps = 0
        self.trace: list[dict[str, Any]] = []

    @torch.no_grad()
    def observe(self) -> None:
        """Add this step's |γ · ∂L/∂γ| of every filter (a step whose gradients are not all
        finite, e.g. skipped by a gradient scaler, adds nothing)."""
        if any(w.grad is None for bns in self._bn for w in bns):
            return
        increment = torch.cat([sum((w.detach() * w.grad).abs().double() for w in bns) for bns in self._bn])
        if not bool(torch.isfinite(increment).all()):
            return
        self._flat += increment
        self.steps += 1
        active = self._active()
        self._entry.masked_fill_(active & (self._entry == 0), self.steps)
        if self.trace_every and self.steps % self.trace_every == 0:
            self.trace.append({"step": self.steps, "activity": self._shares(active)})

    def _active(self) -> torch.Tensor:
        """Every filter's mask, ``w·I_g >= rho · mean (w·I)`` (w = 1 without ``weights``; none
        before any importance)."""
        score = self._flat if self._weight is None else self._flat * self._weight
        total = score.sum()
        return (score >= self.rho * total / score.numel()) & (total > 0)

    @property
    def entry(self) -> dict[str, list[int | None]]:
        """{layer name: each filter's entry step} (``None``: never active)."""
        return {layer: [step or None for step in e.tolist()] for layer, e in self._entries.items()}

    def _shares(self, active: torch.Tensor) -> dict[str, float]:
        widths = [v.numel() for v in self.importance.values()]
        return {layer: round(float(mask.double().mean()), 6) for layer, mask in zip(self.layers, active.split(widths))}

    def activity(self) -> dict[str, float]:
        """{layer name: share of its filters that are active now}, in network order."""
        return self._shares(self._active())

    def importance_share(self) -> dict[str, float]:
        """{layer name: its share of the net's total importance} (sums to 1; all 0 before the
        first step)."""
        total = sum(float(v.sum()) for v in self.importance.values())
        return {layer: (round(float(v.sum()) / total, 6) if total > 0 else 0.0) for layer, v in self.importance.items()}

    def record(self) -> dict[str, Any]:
        """What ``rounds.json`` keeps of the round: steps observed, the threshold, the activity
        trace, and per layer the importance share, per-filter importance (sums over the round)
        and entry steps (``None``: never active)."""
        share, entry = self.importance_share(), self.entry
        return {
            "signal": "importance", "rho": self.rho, "steps": self.steps, "trace": list(self.trace),
            **({} if self.weights is None else {"weights": {k: _round(v) for k, v in self.weights.items()}}),
            "layers": {
                layer: {"importance_share": share[layer], "importance": [_round(x) for x in self.importance[layer].tolist()],
                        "entry": entry[layer]}
                for layer in self.layers
            },
        }

    # -- checkpoints ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Plain data to resume the round exactly (see :meth:`load_state_dict`)."""
        return {"steps": self.steps, "importance": {k: v.tolist() for k, v in self.importance.items()},
                "entry": self.entry, "trace": list(self.trace)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned for the same architecture."""
        self.steps = int(state["steps"])
        for layer, values in state["importance"].items():
            self.importance[layer].copy_(torch.tensor(values, dtype=torch.float64))
        for layer, steps in state["entry"].items():
            self._entries[layer].copy_(torch.tensor([step or 0 for step in steps], dtype=torch.int64))
        self.trace = list(state["trace"])


def _round(x: float) -> float:
    return float(f"{x:.6g}") if math.isfinite(x) else x
