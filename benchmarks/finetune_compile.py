"""A fine-tune of the CPU recipe's final net, eager against compiled (``run.compile``), in one process.

Evidence: none yet; the lead runs it on the idle machine and records the figures in the
README's *Benchmarks*. The acceptance line (issue 17): ``fine-tune: compiled N.NNx`` for a
12-epoch fine-tune with the compile included; the CPU recipe compiles (``run.compile``) if
that is above 1.05x.

What is timed: the published CPU run's final net (``reports/cifar10-cpu/architecture.json``,
a VGG of about 24M MACs) trained with the ``cifar10-cpu`` recipe's fine-tune (fresh Nesterov
SGD, weight decay, label smoothing, batch 256, the cosine schedule of ``--finetune-epochs``
epochs, channels-last on the CPU) on CIFAR-10 from ``--data-dir``, through grownet's one
training loop (:func:`grownet.loop.fit`): each epoch trains, evaluates the validation split
(5,000 images, or a tenth of ``--limit``), keeps the best state and commits the last good
one, as a search's fine-tune does. Two copies of one initialisation train side by side, one
eager and one compiled in place as grownet compiles it (:class:`grownet.train.CompileChoice`,
``nn.Module.compile``); their epochs alternate (eager, compiled, eager, ...) and see the same
batches, so a change in the machine's load falls on both.

Each trains ``--epochs`` + 1 epochs. The first compiled epoch carries the compile (the
training graph, the last partial batch and the evaluation graphs), so

- compile seconds = first compiled epoch - compiled seconds per epoch;
- seconds per epoch = the mean of the later epochs, eager and compiled;
- the ratio = eager seconds for ``--finetune-epochs`` epochs (its first, then the mean) /
  (compile seconds + compiled seconds per epoch x ``--finetune-epochs``).

The extrapolation from a few timed epochs to 12 is printed with what it rests on.

Run: ``python benchmarks/finetune_compile.py [--data-dir ../shared/data] [--epochs 2]
[--finetune-epochs 12] [--limit N] [--threads N] [--device cpu|cuda]``; the last line reads
``fine-tune: compiled 1.15x (...)``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from _machine import machine  # benchmarks/ is sys.path[0] when run as a script

from grownet.arch import Architecture
from grownet.cost import cost
from grownet.job import finetune_schedule, make_data, make_finetune_optimizer, seed_all
from grownet.loop import Clock, Divergence, InMemory, LoopState, Phase, Trainee, fit
from grownet.models import build_model
from grownet.recipe import load_recipe
from grownet.train import amp_dtype, compile_choice, prepare_model, resolve_device, wants_channels_last

ARCH = REPO / "reports" / "cifar10-cpu" / "architecture.json"
RECIPE = "cifar10-cpu"


class Side:
    """One of the two nets: its trainee, counters and last good state, and its epoch times."""

    def __init__(self, model: torch.nn.Module, recipe: Any, arch: Architecture, data: Any, device: torch.device) -> None:
        self.net = Trainee(model, make_finetune_optimizer(model, recipe), cost(arch))
        self.state = LoopState()
        self.last_good = InMemory(self.net, self.state, data.train, device)
        self.seconds: list[float] = []

    def epoch(self, e: int, phase: Phase, data: Any, *, divergence: Divergence, amp: torch.dtype | None,
              sync: Callable[[], None]) -> None:
        """Train epoch ``e`` of ``phase`` (and evaluate, keep the best, commit), timed."""
        data.train.set_epoch(e)  # both nets see the same batches
        start = time.perf_counter()
        fit(self.net, data, self.state, replace(phase, epochs=e + 1), start=e, last_good=self.last_good,
            divergence=divergence, clock=Clock(), amp=amp)
        sync()
        self.seconds.append(time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default="../shared/data", help="folder holding cifar-10-batches-py (default ../shared/data)")
    ap.add_argument("--dataset", default="cifar10", help="a grownet dataset name (default cifar10; npz:PATH for a slice "
                                                         "of it where the whole set cannot travel, e.g. to a lent GPU)")
    ap.add_argument("--epochs", type=int, default=2, help="timed epochs of each net after its first (default 2)")
    ap.add_argument("--finetune-epochs", type=int, default=12, help="the fine-tune length the ratio is for (default 12)")
    ap.add_argument("--limit", type=int, default=0, help="read only the first N training images, a tenth of them held out "
                                                         "for validation (default 0: all, 5,000 held out)")
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads (default: torch's)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    args = ap.parse_args(argv)
    if args.epochs < 1 or args.finetune_epochs < 1 or args.limit < 0:
        ap.error("--epochs and --finetune-epochs must be >= 1, --limit >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)

    print(machine())
    overrides: dict[str, Any] = {"data.limit_test": 1000}  # the test split is not used
    if args.limit:
        overrides.update({"data.limit_train": args.limit, "data.val_size": max(1, args.limit // 10)})
    recipe = load_recipe(RECIPE).with_overrides(overrides)
    arch = Architecture.from_json(ARCH)
    channels_last = wants_channels_last(recipe.run.channels_last, device)
    amp = amp_dtype("auto", device)  # grownet's default: bf16 on CUDA, full precision on the CPU
    seed_all(0)
    data = make_data({"dataset": args.dataset, "data_dir": args.data_dir, "seed": 0}, recipe, device, channels_last=channels_last)
    steps = len(data.train)
    compiled = compile_choice("on", device, steps=steps * args.finetune_epochs)  # a one-line error where it cannot run
    base = prepare_model(build_model(arch), device, channels_last=channels_last)
    eager = Side(copy.deepcopy(base), recipe, arch, data, device)
    comp = Side(compiled.apply(copy.deepcopy(base)), recipe, arch, data, device)  # copied before the compile
    f = recipe.finetune
    print(f"model: {ARCH.relative_to(REPO)}, VGG widths {list(arch.layer_widths().values())} ({cost(arch).macs / 1e6:.1f}M "
          f"MACs); fine-tune of {RECIPE}: {f.optimizer} lr {f.lr:g}, batch {recipe.data.batch_size}, "
          f"{data.train.num_samples:,} train / {data.val.num_samples:,} val images, steps per epoch: {steps}; {device}, "
          f"{'channels-last' if channels_last else 'contiguous'}, amp {amp or 'off'}")

    phase = Phase("finetune", args.finetune_epochs, finetune_schedule(recipe, epochs=args.finetune_epochs, steps=steps),
                  label_smoothing=f.label_smoothing, keep_best=True)
    divergence = Divergence.from_recipe(recipe, lower="finetune.lr")
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    for e in range(args.epochs + 1):
        for side in (eager, comp) if e % 2 == 0 else (comp, eager):
            side.epoch(e, phase, data, divergence=divergence, amp=amp, sync=sync)
        print(f"epoch {e + 1}: eager {eager.seconds[-1]:.2f} s (val acc {eager.state.history[-1]['val_acc']:.4f}), "
              f"compiled {comp.seconds[-1]:.2f} s (val acc {comp.state.history[-1]['val_acc']:.4f})", flush=True)

    n = args.finetune_epochs
    eager_epoch = statistics.mean(eager.seconds[1:])
    comp_epoch = statistics.mean(comp.seconds[1:])
    compile_s = comp.seconds[0] - comp_epoch
    eager_total = eager.seconds[0] + (n - 1) * eager_epoch
    comp_total = compile_s + n * comp_epoch
    print(f"measured: compile {compile_s:.1f} s (first compiled epoch {comp.seconds[0]:.2f} s minus a later one), "
          f"eager {eager_epoch:.2f} s/epoch (first {eager.seconds[0]:.2f} s), compiled {comp_epoch:.2f} s/epoch "
          f"({'means of epochs 2-' if args.epochs > 1 else 'epoch '}{args.epochs + 1})")
    print(f"fine-tune: compiled {eager_total / comp_total:.2f}x ({n} epochs, extrapolated from {args.epochs} timed "
          f"epoch{'s' * (args.epochs != 1)} of each: eager {eager_total:.0f} s vs compile + compiled {comp_total:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
