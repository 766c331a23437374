"""What an architecture costs: inference MACs, parameters, training FLOPs per sample.

Everything is counted by :class:`torch.utils.flop_counter.FlopCounterMode` (which sees
functional ops too) on a model built on the ``meta`` device: no weights are allocated, so
costing a large candidate is cheap. MACs = FLOPs / 2. Only convolutions and matrix products
are counted (BatchNorm, ReLU, pooling and additions are not), as is usual in this field.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import Any, Mapping

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .arch import Architecture
from .models import as_architecture, build_model

__all__ = ["Cost", "LayerCost", "cost"]


@dataclass(frozen=True)
class LayerCost:
    """Cost of the modules that produce one layer (its convs and their BatchNorms)."""

    macs: int  #: inference multiply-accumulates for one sample
    params: int  #: trainable parameters (conv weights, BN weight and bias)


@dataclass(frozen=True)
class Cost:
    """Cost of one architecture, for one input sample of shape
    ``(in_channels, input_size, input_size)``.

    Attributes:
        macs: inference multiply-accumulates (FLOPs / 2).
        params: trainable parameters (BN running statistics are buffers, not counted).
        train_flops_per_sample: FLOPs of one forward and one backward pass (gradients of
            every parameter; none for the input).
        layers: per-layer breakdown keyed by the architecture's layer names (in network
            order), plus ``"classifier"``; layer costs sum to the totals.
    """

    macs: int
    params: int
    train_flops_per_sample: int
    layers: dict[str, LayerCost]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return {
            "macs": self.macs,
            "params": self.params,
            "train_flops_per_sample": self.train_flops_per_sample,
            "layers": {name: {"macs": c.macs, "params": c.params} for name, c in self.layers.items()},
        }


def cost(arch: Architecture | Mapping[str, Any]) -> Cost:
    """Cost of ``arch`` (an Architecture or its JSON dict); see :class:`Cost`.

    Results are cached per architecture (``meta`` is ignored), so calling this in a loop is
    cheap; the global RNG is left untouched.
    """
    found = _cost(as_architecture(arch))
    # A fresh dict per call: a caller editing its breakdown cannot corrupt the cache.
    return replace(found, layers=dict(found.layers))


@functools.lru_cache(maxsize=1024)
def _cost(arch: Architecture) -> Cost:  # Architecture hashes without its meta
    # Callers may sit under no_grad / inference_mode (the grower does); counting needs autograd.
    with torch.inference_mode(False), torch.enable_grad():
        return _count(arch)


def _count(arch: Architecture) -> Cost:
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        model = build_model(arch)
    model.eval()  # batch of one: train-mode BN would reject 1x1 feature maps; FLOPs are equal
    x = torch.empty(1, arch.in_channels, arch.input_size, arch.input_size, device="meta")

    # One counted forward + backward; each conv's / linear's forward share is read off the
    # running total by hooks.
    module_flops: dict[str, int] = {}
    counter = FlopCounterMode(display=False)
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            handles.append(module.register_forward_pre_hook(_start(counter, module_flops, name)))
            handles.append(module.register_forward_hook(_stop(counter, module_flops, name)))
    try:
        with counter:
            out = model(x)
            forward_flops = counter.get_total_flops()
            out.sum().backward()  # the loss adds no counted FLOPs; its gradient's shape is what matters
    finally:
        for handle in handles:
            handle.remove()

    modules = dict(model.named_modules())

    def layer_cost(names: list[str]) -> LayerCost:
        return LayerCost(
            macs=sum(module_flops.get(n, 0) for n in names) // 2,
            params=sum(p.numel() for n in names for p in modules[n].parameters()),
        )

    layers = {layer.name: layer_cost(layer.modules) for layer in arch.layers}
    layers["classifier"] = layer_cost(["classifier"])
    return Cost(
        macs=forward_flops // 2,
        params=sum(p.numel() for p in model.parameters()),
        train_flops_per_sample=counter.get_total_flops(),
        layers=layers,
    )


def _start(counter: FlopCounterMode, flops: dict[str, int], name: str) -> Any:
    def hook(module: nn.Module, args: Any) -> None:
        flops[name] = flops.get(name, 0) - counter.get_total_flops()

    return hook


def _stop(counter: FlopCounterMode, flops: dict[str, int], name: str) -> Any:
    def hook(module: nn.Module, args: Any, output: Any) -> None:
        flops[name] += counter.get_total_flops()

    return hook
