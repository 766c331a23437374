"""Does the allocation of width matter on the growth study's setup? Two deliberately skewed
allocations trained as controls of each seed of a growth study, beside its own arms.

For every ``seed-K`` folder of a finished ``grownet study`` (``--study``), two architectures
at the grown net's MACs: the seed's layout with layer i of L multiplied by 2^(1 - 2i/(L-1))
(``early``: x2 for the first conv down to x1/2 for the last) or by its reverse (``late``),
then by the one common factor that matches the MACs (``grownet.baseline.allocated_architecture``,
as the random control is made). Each is trained with
``grownet.baseline.run_control(..., arch=...)``: the study's control protocol (same data split,
seed, epochs and schedule as its scratch, uniform and random arms). Rerunning skips finished
controls. Then ``summary.json`` here: per seed, every arm's test accuracy (the study's five
from its runs.csv, these two from their summary.json) and the allocations' widths.

    python reports/allocation-study/run.py --study runs/growth-study-cpu --data-dir ../shared/data --out reports/allocation-study/12m.json
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from grownet.arch import Architecture  # noqa: E402
from grownet.baseline import allocated_architecture, run_control  # noqa: E402
from grownet.cost import cost  # noqa: E402

ALLOCATIONS = ("early", "late")


def skewed(seed: Architecture, macs: int, allocation: str) -> Architecture:
    """The seed's layout skewed towards its first (``early``) or last (``late``) layers by
    factors 2 ... 1/2 log-linear in the layer index, then scaled to ``macs``."""
    layers = list(seed.layer_widths())
    n = len(layers)
    factors = [2.0 ** (1 - 2 * i / (n - 1)) for i in range(n)]
    if allocation == "late":
        factors.reverse()
    return allocated_architecture(seed, dict(zip(layers, factors)), macs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", required=True, type=Path, help="a finished grownet study folder (seed-K/ runs, runs.csv)")
    ap.add_argument("--data-dir", default=None, help="folder holding the dataset (default: each run's own)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", required=True, type=Path, help="the summary JSON to write")
    args = ap.parse_args(argv)

    with open(args.study / "runs.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    seeds = sorted({int(r["seed"]) for r in rows})
    acc = {(r["arm"], int(r["seed"])): float(r["test_acc"]) for r in rows}
    widths: dict[str, dict[int, list[int]]] = {a: {} for a in ALLOCATIONS}
    macs: dict[str, dict[int, int]] = {a: {} for a in ALLOCATIONS}
    for seed in seeds:
        run = args.study / f"seed-{seed}"
        summary = json.loads((run / "summary.json").read_text())
        seed_arch = Architecture.from_dict(summary["seed_arch"])
        for allocation in ALLOCATIONS:
            arch = skewed(seed_arch, int(summary["macs"]), allocation)
            out = run / "controls" / allocation / "summary.json"
            if not out.exists():
                run_control(run, allocation, arch=arch, data_dir=args.data_dir, device=args.device,
                            force=out.parent.exists())
            s = json.loads(out.read_text())
            acc[(allocation, seed)] = float(s["test_acc"])
            widths[allocation][seed] = list(arch.layer_widths().values())
            macs[allocation][seed] = cost(arch).macs
            print(f"seed {seed} {allocation}: test {s['test_acc']:.4f}, {cost(arch).macs / 1e6:.2f}M MACs, "
                  f"widths {'-'.join(map(str, widths[allocation][seed]))}", flush=True)

    arms = [a for a in ("grown", "scratch", "uniform", "random", "grown_uniform", *ALLOCATIONS)
            if all((a, s) in acc for s in seeds)]

    def stats(values: list[float]) -> dict[str, float]:
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return {"mean": statistics.fmean(values), "std": sd, "se": sd / math.sqrt(len(values))}

    table = {a: {"per_seed": [acc[(a, s)] for s in seeds], **stats([100 * acc[(a, s)] for s in seeds])} for a in arms}
    diffs = {f"{a}-{b}": stats([100 * (acc[(a, s)] - acc[(b, s)]) for s in seeds])
             for a, b in (("early", "late"), ("early", "uniform"), ("late", "uniform"), ("grown", "early"),
                          ("grown", "late"), ("scratch", "early"), ("scratch", "late"))
             if a in arms and b in arms}
    result = {"study": str(args.study), "seeds": seeds, "test_acc_percent": table, "differences_points": diffs,
              "widths": widths, "macs": macs}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for a in arms:
        print(f"{a:>14}: {table[a]['mean']:.2f} +- {table[a]['std']:.2f}")
    for k, v in diffs.items():
        print(f"{k:>16}: {v['mean']:+.2f} +- {v['std']:.2f} (se {v['se']:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
