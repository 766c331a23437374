"""A short DessiLBI run that reads the growth signal, for the scale-freeness tests of
tests/test_signal.py (activity) and tests/test_ticket_study.py (the ticket's kept fraction)."""

from __future__ import annotations

import torch

from grownet.arch import Architecture
from grownet.data import Augment, make_loaders
from grownet.job import seed_all
from grownet.models import build_model, layer_conv_weights
from grownet.optim import DessiLBI, dessilbi_param_groups
from grownet.signal import ImportanceMeter
from grownet.train import train_epoch


def signal_after(ds, arch: Architecture, *, scale: float, layer: str = "stages.2.0", epochs: int = 2, mu: float,
                 lam: float) -> ImportanceMeter:
    """The meter after ``epochs`` DessiLBI epochs (lr 0.1, momentum 0.9, batch 50, seed 0) of
    ``arch`` on ``ds``, with ``layer``'s initial kernel multiplied by ``scale``."""
    seed_all(0)
    loaders = make_loaders(ds, batch_size=50, val_fraction=0.1, seed=0, augment=Augment())
    model = build_model(arch)
    with torch.no_grad():
        dict(model.named_parameters())[layer_conv_weights(arch, layer)[0]].mul_(scale)
    opt = DessiLBI(dessilbi_param_groups(model), lr=0.1, mu=mu, lam=lam, momentum=0.9)
    meter = ImportanceMeter(model, arch, rho=0.75)
    for _ in range(epochs):
        train_epoch(model, loaders.train, opt, progress=lambda i, n: meter.observe(), label_smoothing=0.1)
    return meter
