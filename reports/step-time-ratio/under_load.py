"""The step-time ratio that a growth check under a time budget reads, by the two ways grownet has
measured it, on a quiet machine and under a periodic load.

The nets are check 1 of reports/cifar10-cpu-epyc-width8 (the CPU recipe, all of CIFAR-10): the
seed (6.64M MACs) and the full plan that check planned (15.13M MACs), whose probe read 6.80 in
that run (43 s elapsed + about 3,037 s "would pass" the 2,100 s budget, so the growth was cut to
11.08M MACs) while two test files ran beside it. "two probes": grownet.plan.probe of the plan,
then of the present net, their mean steps divided (what SearchJob.step_ratio did before);
"in turn": grownet.plan.step_time_ratio, the two nets stepping in turn, the median of the pairs'
ratios. The load: two busy processes (one per core), on for 2 s and off for 3 s, over and over.
The two ways alternate, so that each meets the load at every phase.

Run: python reports/step-time-ratio/under_load.py DATA_DIR [--reps 8]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from grownet.arch import Architecture
from grownet.cost import cost
from grownet.job import make_data, make_dessilbi
from grownet.models import build_model
from grownet.plan import probe, step_time_ratio
from grownet.recipe import resolve_recipe

RUN = REPO / "reports" / "cifar10-cpu-epyc-width8"


def hog(stop: mp.Event, on: float = 2.0, off: float = 3.0) -> None:
    while not stop.is_set():
        end = time.time() + on
        while time.time() < end:
            pass
        stop.wait(off)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data_dir")
    ap.add_argument("--reps", type=int, default=8)
    args = ap.parse_args()
    recipe = resolve_recipe("cifar10-cpu")
    cpu = torch.device("cpu")
    data = make_data({"dataset": "cifar10", "data_dir": args.data_dir, "seed": 0}, recipe, cpu, channels_last=False)
    seed = Architecture.from_dict(json.loads((RUN / "summary.json").read_text())["seed_arch"])
    plan = seed.with_widths({"stages.0.0": 32, "stages.1.0": 64, "stages.2.0": 88, "stages.2.1": 88, "stages.4.1": 120})
    print(f"present {cost(seed).macs:,} MACs, plan {cost(plan).macs:,} MACs; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads", flush=True)
    torch.manual_seed(0)
    present, new = build_model(seed), build_model(plan)
    opt = lambda m: make_dessilbi(m, recipe)

    def two_probes() -> float:
        return probe(new, opt, data, device=cpu)[0] / probe(present, opt, data, device=cpu)[0]

    def in_turn() -> float:
        return step_time_ratio(new, present, opt, data, device=cpu)

    for label, load in (("quiet", False), ("periodic load", True)):
        stop, procs = mp.Event(), []
        if load:
            procs = [mp.Process(target=hog, args=(stop,)) for _ in range(2)]
            for p in procs:
                p.start()
        got: dict[str, list[float]] = {"two probes": [], "in turn": []}
        try:
            for _ in range(args.reps):
                for name, fn in (("two probes", two_probes), ("in turn", in_turn)):
                    got[name].append(fn())
        finally:
            stop.set()
            for p in procs:
                p.join()
        for name, xs in got.items():
            print(f"{label:13s} {name:10s}: median {statistics.median(xs):.3f}, range {min(xs):.3f}-{max(xs):.3f}; "
                  + " ".join(f"{x:.2f}" for x in xs), flush=True)


if __name__ == "__main__":
    main()
