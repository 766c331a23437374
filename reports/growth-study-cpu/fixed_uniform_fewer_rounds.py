"""A growth study's ``fixed_uniform`` arm with fewer rounds than the grower (default two: at
12M, 10 epochs, two 2-epoch DessiLBI rounds, nothing grows, then the 6-epoch fine-tune), so
fewer epochs and training FLOPs. Writes ``seed-k/controls/fixed_uniform_<E>ep/`` of the study
folder, E its epochs (a search, resumable: a finished seed is skipped).

Run: ``python reports/growth-study-cpu/fixed_uniform_fewer_rounds.py runs/growth-study-cpu ../shared/data``
(12M, 10 epochs); ``... runs/growth-study-cpu-24m ../shared/data --rounds 3`` (24M, 12 epochs).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from grownet.recipe import resolve_recipe
from grownet.runfolder import load_run
from grownet.search import search
from grownet.study import fixed_width_recipe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study", type=Path, help="the 12M growth study's folder")
    ap.add_argument("data_dir", help="folder holding cifar-10-batches-py")
    ap.add_argument("--rounds", type=int, default=2, help="DessiLBI rounds before the fine-tune")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    recipe = resolve_recipe("growth-study-cpu", {"run.amp": "off", "run.compile": "off"})
    for run_dir in sorted(args.study.glob("seed-*")):
        seed = int(run_dir.name.split("-")[1])
        r = fixed_width_recipe(recipe, run_dir / "controls" / "uniform" / "architecture.json", load_run(run_dir))
        r = r.with_overrides({"budget.max_rounds": args.rounds, "budget.min_rounds": args.rounds})
        out = run_dir / "controls" / f"fixed_uniform_{args.rounds * r.grow.local_epochs + r.finetune.epochs}ep"
        if (out / "summary.json").exists():
            continue
        result = search("cifar10", recipe=r, out=out, data_dir=args.data_dir, seed=seed, device="cpu",
                        force=out.exists())
        print(f"seed {seed}: test acc {result.test_acc:.4f}", flush=True)


if __name__ == "__main__":
    main()
