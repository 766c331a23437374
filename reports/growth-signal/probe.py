"""What each candidate growth signal reads after one growth round, and whether it is scale-free.

One round (2 epochs, 156 steps) of DessiLBI (lr 0.1, mu 50, lam 0.3, momentum 0.9, batch 128)
on a 10,000-image slice of CIFAR-10 with the CPU recipe's seed VGG (16-32-64-64-64), once as
built and once with one conv's initial kernel multiplied by 4 (BatchNorm makes it the same
function). Per layer it prints:

- ``|W0|``, ``|W|``: mean filter norm at init and after the round;
- ``coh``: mean coherence ‖V_g‖ / ((α/ν)·Σ_t ‖W_g(t)‖) (1 = V_g only accumulated the kernel);
- ``cvV``: coefficient of variation of ‖V_g‖ inside the layer;
- ``support``: share of filters in Γ's support (‖V_g‖ > λ), the first version's signal;
- ``imp@rho``: share of filters whose importance Σ_t |γ_g ∂L/∂γ_g| is >= rho x the net's mean
  (grownet.signal), for rho = 0.5, 0.75, 1.0.

Run: ``python reports/growth-signal/probe.py --data-dir ../shared/data > reports/growth-signal/probe.txt``
"""

from __future__ import annotations

import argparse

import torch

from grownet.data import Augment, load_dataset, make_loaders
from grownet.job import seed_all
from grownet.models import build_model, layer_conv_weights
from grownet.optim import DessiLBI, dessilbi_param_groups
from grownet.seeds import preset
from grownet.signal import ImportanceMeter
from grownet.train import train_epoch

LR, MU, LAM = 0.1, 50.0, 0.3
RHOS = (0.5, 0.75, 1.0)


def one_round(ds, scaled: str | None, seed: int) -> dict[str, dict[str, float]]:
    seed_all(seed)
    loaders = make_loaders(ds, batch_size=128, val_fraction=1000 / 11000, seed=seed, augment=Augment(), channels_last=True)
    arch = preset("vgg", width=(16, 32, 64, 64, 64))
    model = build_model(arch).to(memory_format=torch.channels_last)
    params = dict(model.named_parameters())
    kernels = {layer: params[layer_conv_weights(arch, layer)[0]] for layer in arch.layer_widths()}
    if scaled:
        with torch.no_grad():
            kernels[scaled].mul_(4.0)
    w0 = {layer: w.detach().flatten(1).norm(dim=1).clone() for layer, w in kernels.items()}
    sum_w = {layer: torch.zeros_like(v) for layer, v in w0.items()}
    opt = DessiLBI(dessilbi_param_groups(model), lr=LR, mu=MU, lam=LAM, momentum=0.9)
    meters = {rho: ImportanceMeter(model, arch, rho=rho) for rho in RHOS}

    def step(i: int, n: int) -> None:
        for layer, w in kernels.items():
            sum_w[layer] += w.detach().flatten(1).norm(dim=1)
        for m in meters.values():
            m.observe()

    for _ in range(2):
        train_epoch(model, loaders.train, opt, progress=step, label_smoothing=0.1)
    out = {}
    for layer, w in kernels.items():
        v = opt.state[w]["V"].flatten(1).norm(dim=1)
        row = {"|W0|": float(w0[layer].mean()), "|W|": float(w.detach().flatten(1).norm(dim=1).mean()),
               "coh": float((v / (LR / MU * sum_w[layer])).mean()), "cvV": float(v.std() / v.mean()),
               "support": float((v > LAM).double().mean())}
        for rho, m in meters.items():
            row[f"imp@{rho:g}"] = m.activity()[layer]
        out[layer] = row
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scaled", default="stages.2.0", help="the layer whose initial kernel is multiplied by 4")
    args = p.parse_args()
    ds = load_dataset("cifar10", data_dir=args.data_dir, limit_train=11000, limit_test=1000)
    for label, scaled in (("as built", None), (f"{args.scaled} kernel x4", args.scaled)):
        rows = one_round(ds, scaled, args.seed)
        keys = list(next(iter(rows.values())))
        print(f"\n{label} (seed {args.seed}, 156 steps)")
        print(f"{'layer':12s}" + "".join(f"{k:>9s}" for k in keys))
        for layer, row in rows.items():
            print(f"{layer:12s}" + "".join(f"{row[k]:9.3f}" for k in keys))


if __name__ == "__main__":
    main()
