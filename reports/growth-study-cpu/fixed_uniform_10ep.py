"""The 12M study's ``fixed_uniform`` arm with two rounds instead of three: 10 epochs (two
2-epoch DessiLBI rounds, nothing grows, then the 6-epoch fine-tune), fewer training FLOPs than
the grower's 12 epochs of growing nets. Writes ``seed-k/controls/fixed_uniform_10ep/`` of the
study folder (a search, resumable: a finished seed is skipped).

Run: ``python reports/growth-study-cpu/fixed_uniform_10ep.py runs/growth-study-cpu ../shared/data``
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
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    recipe = resolve_recipe("growth-study-cpu", {"run.amp": "off", "run.compile": "off"})
    for run_dir in sorted(args.study.glob("seed-*")):
        seed = int(run_dir.name.split("-")[1])
        out = run_dir / "controls" / "fixed_uniform_10ep"
        if (out / "summary.json").exists():
            continue
        r = fixed_width_recipe(recipe, run_dir / "controls" / "uniform" / "architecture.json", load_run(run_dir))
        r = r.with_overrides({"budget.max_rounds": 2, "budget.min_rounds": 2})
        result = search("cifar10", recipe=r, out=out, data_dir=args.data_dir, seed=seed, device="cpu",
                        force=out.exists())
        print(f"seed {seed}: test acc {result.test_acc:.4f}", flush=True)


if __name__ == "__main__":
    main()
