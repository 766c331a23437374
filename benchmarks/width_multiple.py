"""Seconds per MAC of a training step, grown widths as they come against the same widths
rounded to a multiple of ``--multiple`` (``grow.width_multiple``), measured in one process.

Why: a CPU convolution kernel works on blocks of channels (16 float32 lanes with AVX-512, 8
with AVX2), so a layer of 33 channels costs much of what one of 48 does. The fourteenth session's
probes on a 2-core AMD EPYC with AVX-512 (torch 2.13 CPU, channels-last, batch 128): a 3x3
conv from 33 channels to 64 at 32x32 took 1.22x the time of one from 32 (3% more MACs), one
from 40 took 1.43x and one from 48 1.34x; at 16x16 a conv to 76 output channels cost what one
to 80 did, and 88 what 96 did. A growth rule that adds ``ceil(1.1 x C)`` filters lands between
blocks almost every time.

Nets: ``--nets`` VGGs of the CPU recipe's seed shape (depths 1-1-2-2-2, widths 16-32-64-64-64),
every layer widened by a random factor 2^U(0, 1.3) (the CPU recipe grows by up to 2.5x), one
net never on the grid of ``--multiple``; beside each, the same widths rounded to the nearest
multiple (never below the seed's), so both have about the same MACs. Each training step
(forward, cross-entropy, backward, momentum-SGD step; channels-last on the CPU, batch
``--batch`` of random 3x32x32 images) is timed ``--reps`` times in a shuffled order of all the
nets (a new order each repetition), and the medians' seconds per MAC are compared.

Run: ``python benchmarks/width_multiple.py [--nets 10] [--reps 8] [--multiple 16] [--batch 256]
[--seed 0] [--device cpu|cuda]``; the last line reads ``width multiple 16: seconds per MAC
0.83x the unrounded widths' (median of 10 nets; rounded faster in 9)``.

Measured (fourteenth session, 2026-11-27, nothing else running; the README's *Benchmarks*
section has the rest): the 2-core AMD EPYC above, multiple 8: 0.74x and 0.85x (seeds 0, 1);
16: 0.83x and 0.71x. The Intel Xeon host of a lent H200 (AVX-512, 2 threads): 8, 0.67x and
0.63x. The H200 itself (float32): 8, 0.97x and 0.95x.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from _machine import machine  # benchmarks/ is sys.path[0] when run as a script

from grownet.arch import Architecture
from grownet.cost import cost
from grownet.models import build_model

SEED_WIDTHS = (16, 32, 64, 64, 64)
DEPTHS = (1, 1, 2, 2, 2)


def vgg(widths: list[int]) -> Architecture:
    """A VGG of DEPTHS convs per stage with ``widths`` (one per conv, in order)."""
    it = iter(widths)
    return Architecture("vgg", tuple(tuple(next(it) for _ in range(d)) for d in DEPTHS))


def pairs(n: int, multiple: int, rng: random.Random) -> list[tuple[Architecture, Architecture]]:
    """``n`` (grown, rounded) pairs: random widenings of the seed, and the same rounded to the
    nearest multiple of ``multiple`` (at least the seed's width)."""
    seed = [w for w, d in zip(SEED_WIDTHS, DEPTHS) for _ in range(d)]
    out = []
    while len(out) < n:
        grown = [max(s, int(s * 2 ** rng.uniform(0.0, 1.3))) for s in seed]
        if all(w % multiple == 0 for w in grown):
            continue
        rounded = [max(s, multiple * round(w / multiple)) for w, s in zip(grown, seed)]
        out.append((vgg(grown), vgg(rounded)))
    return out


def step_seconds(archs: list[Architecture], *, reps: int, batch: int, device: torch.device,
                 rng: random.Random) -> dict[Architecture, float]:
    """Median seconds of one training step of each net, the nets timed in a new shuffled order
    every repetition (the first two repetitions, warm-up, left out)."""
    fmt = torch.channels_last if device.type == "cpu" else torch.contiguous_format
    x = torch.randn(batch, 3, 32, 32, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch,), device=device)
    nets = {}
    for a in archs:
        model = build_model(a).to(device=device, memory_format=fmt)
        nets[a] = (model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9))
    times: dict[Architecture, list[float]] = {a: [] for a in archs}
    for _ in range(reps + 2):
        order = list(archs)
        rng.shuffle(order)
        for a in order:
            model, opt = nets[a]
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[a].append(time.perf_counter() - t)
    return {a: statistics.median(ts[2:]) for a, ts in times.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nets", type=int, default=10, help="grown nets (each timed beside its rounded twin)")
    ap.add_argument("--reps", type=int, default=8, help="timed training steps per net")
    ap.add_argument("--multiple", type=int, default=16, help="the width multiple the twins are rounded to")
    ap.add_argument("--batch", type=int, default=256, help="images per step (the CPU recipe's batch)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random widths and the timing order")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    torch.manual_seed(args.seed)
    print(machine(), flush=True)
    twins = pairs(args.nets, args.multiple, rng)
    seconds = step_seconds([a for pair in twins for a in pair], reps=args.reps, batch=args.batch,
                           device=torch.device(args.device), rng=rng)
    ratios = []
    for grown, rounded in twins:
        per = {a: seconds[a] / cost(a).macs for a in (grown, rounded)}
        ratios.append(per[rounded] / per[grown])
        print(f"{'-'.join(map(str, grown.layer_widths().values()))} {cost(grown).macs / 1e6:.2f}M MACs "
              f"{seconds[grown] * 1e3:.0f} ms | {'-'.join(map(str, rounded.layer_widths().values()))} "
              f"{cost(rounded).macs / 1e6:.2f}M MACs {seconds[rounded] * 1e3:.0f} ms | per MAC {ratios[-1]:.3f}x",
              flush=True)
    faster = sum(r < 1 for r in ratios)
    print(f"width multiple {args.multiple}: seconds per MAC {statistics.median(ratios):.2f}x the unrounded widths' "
          f"(median of {len(ratios)} nets; rounded faster in {faster})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
