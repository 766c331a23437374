"""A short DessiLBI run that reads the growth signal, for the scale-freeness tests of
tests/test_signal.py (activity) and tests/test_ticket_study.py (the ticket's kept fraction).

One run's reading is a sample, not the signal's property. On an AMD EPYC (2026-11-27), over
the six seeds below, a layer's initial kernel x4 moved its activity after a 2-epoch round by
0.03-0.13 (mean 0.07) and its kept fraction with the net-wide threshold by 0.00-0.22 (mean
0.12); and one run, seed 0, read that kept fraction within 0.15 on the Intel Xeon and 0.19 on
the EPYC: float32 rounding of another vendor's CPU. The tests therefore specify the mean over
:data:`SEEDS`."""

from __future__ import annotations

import torch

from grownet.arch import Architecture
from grownet.data import Augment, make_loaders
from grownet.job import seed_all
from grownet.models import build_model, layer_conv_weights
from grownet.optim import DessiLBI, dessilbi_param_groups
from grownet.signal import ImportanceMeter
from grownet.train import train_epoch

#: The seeds whose mean reading the scale-freeness tests bound.
SEEDS = tuple(range(6))


def signal_after(ds, arch: Architecture, *, scale: float, layer: str = "stages.2.0", epochs: int = 2, mu: float,
                 lam: float, seed: int = 0) -> ImportanceMeter:
    """The meter after ``epochs`` DessiLBI epochs (lr 0.1, momentum 0.9, batch 50) of ``arch``
    on ``ds``, with ``layer``'s initial kernel multiplied by ``scale``; ``seed`` sets the
    initialisation, the validation split and the batch order."""
    seed_all(seed)
    loaders = make_loaders(ds, batch_size=50, val_fraction=0.1, seed=seed, augment=Augment())
    model = build_model(arch)
    with torch.no_grad():
        dict(model.named_parameters())[layer_conv_weights(arch, layer)[0]].mul_(scale)
    opt = DessiLBI(dessilbi_param_groups(model), lr=0.1, mu=mu, lam=lam, momentum=0.9)
    meter = ImportanceMeter(model, arch, rho=0.75)
    for _ in range(epochs):
        train_epoch(model, loaders.train, opt, progress=lambda i, n: meter.observe(), label_smoothing=0.1)
    return meter
