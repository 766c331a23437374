"""A ``fixed_uniform`` control with fewer rounds than the grower (default two: at 12M, 10
epochs, two 2-epoch DessiLBI rounds, nothing grows, then the 6-epoch fine-tune), so fewer
epochs and training FLOPs. For each run of a growth study's folder (its ``seed-k/``, the
study's own recipe from ``study.json``), or for one run folder (its own recipe, seed and
dataset from ``config.json``), writes ``controls/fixed_uniform_<E>ep/``, E its epochs (a
search, resumable: a finished one is skipped, an interrupted one resumes).

Run: ``python reports/growth-study-cpu/fixed_uniform_fewer_rounds.py runs/growth-study-cpu ../shared/data``
(12M, 10 epochs); ``... runs/growth-study-cpu-24m ../shared/data --rounds 3`` (24M, 12 epochs);
``... runs/growth-study-cpu-ft18 ../shared/data`` (the 18-epoch fine-tune: 22 epochs);
``... runs/cifar10-cpu ../shared/data --rounds 3`` (the CPU recipe's run: 28 epochs).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from grownet.baseline import fixed_width_recipe
from grownet.recipe import Recipe, upgrade_stored
from grownet.runfolder import load_run
from grownet.search import search_or_resume


def runs(folder: Path) -> list[tuple[Path, Recipe, int, str]]:
    """``(run folder, recipe, seed, dataset)`` of each grower in ``folder`` (a study or a run)."""
    if (folder / "study.json").exists():
        study = json.loads((folder / "study.json").read_text())
        recipe = Recipe.from_dict(upgrade_stored(study["recipe"]))
        return [(d, recipe, int(d.name.split("-")[1]), study["dataset"]) for d in sorted(folder.glob("seed-*"))]
    config = json.loads((folder / "config.json").read_text())
    return [(folder, Recipe.from_dict(upgrade_stored(config["recipe"])), int(config["seed"]), config["dataset"])]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path, help="a growth study's folder, or a run folder")
    ap.add_argument("data_dir", help="folder holding cifar-10-batches-py")
    ap.add_argument("--rounds", type=int, default=2, help="DessiLBI rounds before the fine-tune")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for run_dir, recipe, seed, dataset in runs(args.folder):
        widths = run_dir / "controls" / "fixed_uniform.arch.json"  # written by the fixed_uniform control
        if not widths.exists():  # studies run before that control existed
            widths = run_dir / "controls" / "uniform" / "architecture.json"
        r = fixed_width_recipe(recipe, widths, load_run(run_dir))
        r = r.with_overrides({"budget.max_rounds": args.rounds, "budget.min_rounds": args.rounds})
        out = run_dir / "controls" / f"fixed_uniform_{args.rounds * r.grow.local_epochs + r.finetune.epochs}ep"
        if (out / "summary.json").exists():
            continue
        result = search_or_resume(out, dataset=dataset, recipe=r, seed=seed, data_dir=args.data_dir, device="cpu")
        print(f"seed {seed}: test acc {result.test_acc:.4f}", flush=True)


if __name__ == "__main__":
    main()
