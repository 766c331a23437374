"""The growth study: does growing beat the controls at equal MACs, over several seeds?

For every seed ``k`` in ``range(seeds)``, :func:`run_study` runs one search (the *grown*
arm, ``OUT/seed-k/``) and three controls at the grown net's MACs, each trained from a fresh
init for the search's total epochs with the fine-tune's schedule on the same data split
(:mod:`grownet.baseline`, written to ``OUT/seed-k/controls/<arm>/``):

- ``scratch``: the grown widths from scratch;
- ``uniform``: the seed scaled by one width multiplier;
- ``random``: the seed with a random growth factor per layer (a new draw per seed), scaled
  to the same MACs;

and a second search, ``grown_uniform`` (``OUT/seed-k/controls/grown_uniform/``): the same
recipe, seed and split with ``grow.signal = "uniform"`` (every layer widened by the same
factor at every check), set by :func:`uniform_growth_recipe` to grow as often as the grown
arm did (or as often as fits its MACs) and to end just under its MACs, and to train the grown
arm's rounds whatever it grows (``budget.min_rounds``). It trains as the grown arm does
(DessiLBI rounds, then the fine-tune, the same epochs), so grown − grown_uniform is what the signal's
allocation adds to growing, where the other controls also change how the net is trained.
A third search, ``fixed_uniform`` (the control of :func:`grownet.baseline.fixed_width_recipe`), trains the ``uniform``
control's widths from the first step exactly as the grown arm trains (the same rounds,
nothing grows, then the fine-tune): grown_uniform − fixed_uniform is what growing adds over
training the final net with the grower's schedule, and fixed_uniform − uniform what that
schedule adds over the controls' one cosine schedule.

Validation chooses every arm's weights; the test set is evaluated once per run. The study
folder gets ``runs.csv`` (one row per run), ``summary.json`` (per arm: mean and standard
deviation of val and test accuracy, MACs, params, training FLOPs and wall time; per seed the
grown net's growth factors and their coefficient of variation) and ``study.html``.

Rerunning the same call continues where it stopped: finished runs are read back, an
interrupted search resumes from its checkpoint, an unfinished control is trained again.
``arms`` limits a call to some arms (the grown arm always runs); a later call may add others.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .arch import Architecture
from .baseline import run_control, same_rounds
from .cost import cost
from .errors import RunError, UsageError
from .files import atomic_write_text, stored_dir
from .policy import widen_all
from .recipe import Recipe, resolve_recipe, upgrade_stored
from .runfolder import RunRecord, load_run
from .search import search_or_resume
from .validate import check_int, check_summary, check_text, read_json, read_run_file

__all__ = ["ARMS", "CONTRASTS", "StudyResult", "METRICS", "check_arms", "check_study_config", "growth_factors", "mean_std",
           "read_summary", "run_study", "summarize", "uniform_growth_recipe", "write_study_files"]

logger = logging.getLogger(__name__)

#: The arms, in the order tables show them.
ARMS = ("grown", "scratch", "uniform", "random", "grown_uniform", "fixed_uniform")
METRICS = ("val_acc", "test_acc", "macs", "params", "train_flops", "wall_time")


@dataclass(frozen=True)
class StudyResult:
    """A finished study: its folder, one row per run, and the per-arm summary."""

    path: Path
    rows: list[dict[str, Any]]
    summary: dict[str, Any]


def run_study(
    dataset: str,
    *,
    out: str | os.PathLike,
    recipe: Any = None,
    seeds: int = 3,
    data_dir: str | os.PathLike | None = None,
    device: str = "auto",
    overrides: Mapping[str, Any] | None = None,
    arms: Sequence[str] = ARMS,
) -> StudyResult:
    """Run (or continue) the study in ``out`` and write its CSV, summary and page.

    Args:
        dataset: a grownet dataset name (``"cifar10"``, ``"npz:PATH"``, ...).
        out: the study folder (created; a rerun continues it).
        recipe: the search recipe (a Recipe, a TOML path or a bundled name; default: the defaults).
        seeds: number of seeds (0 .. seeds-1), each three searches (grown, grown_uniform,
            fixed_uniform) and three controls.
        data_dir: folder holding the dataset.
        device: ``"auto"``, ``"cpu"`` or ``"cuda[:N]"``.
        overrides: ``{"grow.tau": 0.6, ...}`` applied on top of ``recipe``.
        arms: the arms to run, names from :data:`ARMS`; ``grown`` runs whether named or not
            (every other arm is defined by it). A later call may name others: they are added
            to the same folder, and the files show every arm that has finished runs.

    Raises:
        UsageError: bad ``seeds`` or an unknown arm.
        RunError: ``out`` holds a study of another configuration.
    """
    check_int(seeds, "--seeds", error=UsageError, low=1, high=100)
    wanted = check_arms(arms)
    path = Path(check_text(os.fspath(out), "--out"))
    resolved = resolve_recipe(recipe, overrides)
    config = {"dataset": dataset, "recipe": resolved.to_dict(), "data_dir": stored_dir(data_dir)}
    check_study_config(path, config)
    rows: list[dict[str, Any]] = []
    for seed in range(seeds):
        run_dir = path / f"seed-{seed}"
        grown, seed_arch = _grown(run_dir, dataset, resolved, seed, data_dir, device)
        rows.append(grown)
        for arm in ARMS[1:]:  # those named in this call, and those an earlier call finished (read back)
            if arm not in wanted and not (run_dir / "controls" / arm / "summary.json").is_file():
                continue
            if arm == "grown_uniform":  # a search of the study's own
                uniform = uniform_growth_recipe(resolved, seed_arch, load_run(run_dir))
                rows.append(_grown(run_dir / "controls" / arm, dataset, uniform, seed, data_dir, device, arm=arm)[0])
            else:  # a control of the grown run (grownet.baseline.run_control)
                rows.append(_control(run_dir, arm, seed, seed_arch, data_dir, device))
        _write(path, rows)  # partial results are readable while the study runs
    summary = _write(path, rows)
    return StudyResult(path, rows, summary)


def check_arms(arms: Sequence[str]) -> tuple[str, ...]:
    """The arms to run, in :data:`ARMS` order, ``grown`` always among them.

    Raises:
        UsageError: an arm that is not in :data:`ARMS`, or none given.
    """
    if isinstance(arms, str) or not arms:
        raise UsageError(f"--arms: give one or more of {', '.join(ARMS)}, comma-separated")
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise UsageError(f"--arms: unknown arm {str(unknown[0])[:40]!r}; choose from {', '.join(ARMS)}")
    return tuple(a for a in ARMS if a == "grown" or a in arms)


def uniform_growth_recipe(recipe: Recipe, seed_arch: Architecture, grown: RunRecord) -> Recipe:
    """The ``grown_uniform`` arm's recipe: ``recipe`` with ``grow.signal = "uniform"``,
    ``grow.min_add = 1``, no deepening, the ``grown`` run's MACs as ``budget.max_macs``, its
    round count as both ``budget.max_rounds`` and ``budget.min_rounds`` (so the arm trains the
    grown run's epochs whatever it grows), and the largest ``grow.ratio`` (to 1e-4) with which
    ``k`` uniform widenings of ``seed_arch`` stay within those MACs: ``k`` is the grown run's
    growth count, or fewer where even widenings by one filter per layer would pass the MACs
    (a grower that spent its MACs in a few cheap layers); the arm ends just under the grown
    net's MACs (a ratio step moves one layer by one filter; a clipped growth would move all of
    them by a common fraction, much coarser). When not even one such widening fits, the
    recipe's ratio stays and the growth is clipped to the MACs."""
    g = recipe.grow
    target, growths = int(grown.summary["macs"]), sum(1 for r in grown.rounds if r.get("grew"))

    def reach(ratio: float, k: int) -> int:
        arch = seed_arch
        for _ in range(k):
            arch = widen_all(arch, ratio=ratio, min_add=1, max_width=g.max_width, multiple=g.width_multiple) or arch
        return cost(arch).macs

    k = growths
    while k and reach(1.0, k) > target:
        k -= 1
    ratio = g.ratio
    if k:
        lo, hi = 1.0, _MAX_RATIO
        while hi - lo > 1e-5:  # reach() grows with the ratio: the largest ratio that stays within
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if reach(mid, k) <= target else (lo, mid)
        ratio = max(1.0, math.floor(lo * 1e4) / 1e4)
    return recipe.with_overrides({"grow.signal": "uniform", "grow.ratio": ratio, "grow.min_add": 1, "grow.deepen": False,
                                  "budget.max_macs": target, **same_rounds(grown)})


#: The largest widening factor :func:`uniform_growth_recipe` considers (``grow.ratio``'s limit).
_MAX_RATIO = 16.0


def check_study_config(path: Path, config: Mapping[str, Any]) -> None:
    """Bind the study folder ``path`` to ``config`` (``study.json``): create both on the first
    call, refuse another configuration later (RunError naming the first differing key and the
    file). ``data_dir`` may change between calls, as on a search's resume: the same data read
    from another place."""
    file = path / "study.json"
    if file.exists():
        stored = read_json(file, error=RunError, missing="missing")
        if isinstance(stored, dict) and isinstance(stored.get("recipe"), dict):  # as the study was run (recipe.upgrade_stored)
            stored = {**stored, "recipe": Recipe.from_dict(upgrade_stored(stored["recipe"])).to_dict()}
        wanted = json.loads(json.dumps(config))
        if isinstance(stored, dict):
            stored, wanted = ({k: v for k, v in d.items() if k != "data_dir"} for d in (stored, wanted))
        differ = _first_difference(stored, wanted)
        if differ is not None:
            key, old, now = differ
            raise RunError(f"{path} holds a study of another configuration ({key} = {old!r}, now {now!r}; see {file}); "
                           f"use another --out")
        return
    path.mkdir(parents=True, exist_ok=True)
    atomic_write_text(file, json.dumps(config, indent=2) + "\n")


class _Missing:
    def __repr__(self) -> str:
        return "missing"


def _first_difference(old: Any, new: Any, where: str = "") -> tuple[str, Any, Any] | None:
    """``(dotted key, old value, new value)`` of the first place where two JSON values differ
    (keys in ``new``'s order, then those only ``old`` has), or None when they are equal."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in [*new, *(k for k in old if k not in new)]:
            differ = _first_difference(old.get(key, _Missing()), new.get(key, _Missing()), f"{where}.{key}" if where else key)
            if differ is not None:
                return differ
        return None
    if isinstance(old, _Missing) or isinstance(new, _Missing) or old != new:
        return (where or "study.json", old, new)
    return None


def _grown(run_dir: Path, dataset: str, recipe: Any, seed: int, data_dir: Any, device: str,
           arm: str = "grown") -> tuple[dict[str, Any], Architecture]:
    """A growing arm's row (the search run, or resumed, if its summary is not there yet) and
    its seed architecture, against which the row's growth factors are."""
    summary = run_dir / "summary.json"
    if not summary.exists():
        logger.info("study: seed %d, %s arm", seed, arm)
        search_or_resume(run_dir, dataset=dataset, recipe=recipe, seed=seed, data_dir=data_dir, device=device,
                         command="grownet study")
    s = read_summary(summary, "seed_arch", "final_arch")
    own = Architecture.from_dict(s["seed_arch"])
    return _row(arm, seed, s, Architecture.from_dict(s["final_arch"]), own), own


def _control(run_dir: Path, arm: str, seed: int, seed_arch: Architecture, data_dir: Any, device: str) -> dict[str, Any]:
    """A control arm's row, the control trained first where its summary is not there yet (an
    unfinished ``fixed_uniform`` search resumes; another unfinished control is trained again)."""
    folder = run_dir / "controls" / arm
    if not (folder / "summary.json").exists():
        logger.info("study: seed %d, %s arm", seed, arm)
        run_control(run_dir, arm, data_dir=data_dir, device=device, force=folder.exists())
    s = read_summary(folder / "summary.json")
    return _row(arm, seed, s, Architecture.from_json(folder / "architecture.json"), seed_arch)


def read_summary(path: Path, *need: str) -> dict[str, Any]:
    """A finished run's, control's or study arm's summary.json, checked (:func:`grownet.validate.check_summary`),
    with the metrics and the ``need``ed keys present.

    Raises:
        RunError: naming the file and the field; deleting the run's folder trains it again.
    """
    s = read_run_file(path, check_summary, missing="missing")
    for key in (*METRICS, *need):
        if s.get(key) is None:
            raise RunError(f"{path}: {key}: missing or null; the file was changed or damaged (delete {path.parent} "
                           "to train that run again)")
    return s


def _row(arm: str, seed: int, s: Mapping[str, Any], arch: Architecture, seed_arch: Architecture) -> dict[str, Any]:
    factors = growth_factors(seed_arch, arch)
    return {"arm": arm, "seed": seed, **{k: s[k] for k in METRICS}, "widths": arch.layer_widths(),
            "growth_factors": dict(factors), "growth_cv": _cv(list(factors.values()))}


def growth_factors(seed: Architecture, final: Architecture) -> dict[str, float]:
    """{layer: final width / seed width} for the layers the seed has (deepened layers have
    no seed width and are left out)."""
    seed_widths = seed.layer_widths()
    return {layer: round(w / seed_widths[layer], 6) for layer, w in final.layer_widths().items() if layer in seed_widths}


def mean_std(values: Sequence[float]) -> dict[str, float]:
    """``{"mean", "std"}`` of ``values`` (sample standard deviation; 0 for one value)."""
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def _cv(values: Sequence[float]) -> float:
    """Coefficient of variation (population standard deviation / mean)."""
    if not values:
        return 0.0
    mean = statistics.fmean(values)
    return statistics.pstdev(values) / mean if mean else 0.0


def summarize(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per arm: ``n`` and, for every metric, ``{"mean", "std"}`` (sample standard deviation;
    0 for one run); per seed: the grown arm's growth-factor CV and each control's MACs
    relative to the grown net's; the grown arm's mean test-accuracy difference to each
    control with the standard deviation of the per-seed differences (``grown_minus``), and the
    same for the pairs of :data:`CONTRASTS` (``contrasts``, keyed ``"a - b"``)."""
    arms: dict[str, Any] = {}
    for arm in ARMS:
        runs = [r for r in rows if r["arm"] == arm]
        if not runs:
            continue
        arms[arm] = {"n": len(runs)}
        for key in METRICS:
            arms[arm][key] = mean_std([float(r[key]) for r in runs])
    grown = {r["seed"]: r for r in rows if r["arm"] == "grown"}
    seeds = {}
    for seed, g in sorted(grown.items()):
        entry: dict[str, Any] = {"growth_factors": g["growth_factors"], "growth_cv": g["growth_cv"]}
        for r in rows:
            if r["seed"] == seed and r["arm"] != "grown":
                entry[f"{r['arm']}_macs_ratio"] = round(r["macs"] / g["macs"], 4)
        seeds[str(seed)] = entry
    diffs = {}
    for arm in ARMS[1:]:
        if (d := _paired(rows, "grown", arm)):
            diffs[arm] = {**mean_std(d), "n": len(d)}
    contrasts = {f"{a} - {b}": {**mean_std(d), "n": len(d)} for a, b in CONTRASTS if (d := _paired(rows, a, b))}
    return {"arms": arms, "seeds": seeds, "grown_minus": diffs, "contrasts": contrasts}


#: Differences of test accuracy between two arms besides grown − arm (``summary["contrasts"]``):
#: what growing adds at the grower's schedule (both arms trained so, uniform widths), and what
#: that schedule adds at fixed uniform widths (against the controls' one cosine schedule).
CONTRASTS = (("grown_uniform", "fixed_uniform"), ("fixed_uniform", "uniform"))


def _paired(rows: Sequence[Mapping[str, Any]], a: str, b: str) -> list[float]:
    """Arm ``a``'s test accuracy minus arm ``b``'s, per seed that has both (in ``b``'s row order)."""
    first = {r["seed"]: r for r in rows if r["arm"] == a}
    return [first[r["seed"]]["test_acc"] - r["test_acc"] for r in rows if r["arm"] == b and r["seed"] in first]


def _write(path: Path, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    from .study_page import write_study_page

    summary = summarize(rows)
    write_study_files(path, ["arm", "seed", *METRICS, "growth_cv", "widths"],
                      [[r["arm"], r["seed"], *(r[k] for k in METRICS), round(r["growth_cv"], 6),
                        " ".join(str(w) for w in r["widths"].values())] for r in rows],
                      summary, lambda page: write_study_page(page, rows, summary))
    return summary


def write_study_files(path: Path, header: Sequence[str], lines: Sequence[Sequence[Any]], summary: Mapping[str, Any],
                      write_page: Callable[[Path], None]) -> None:
    """A study folder's outputs: ``runs.csv`` (``header``, then one of ``lines`` per run),
    ``summary.json`` and, through ``write_page``, ``study.html``; each written atomically."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(lines)
    atomic_write_text(path / "runs.csv", buf.getvalue())
    atomic_write_text(path / "summary.json", json.dumps(summary, indent=2) + "\n")
    write_page(path / "study.html")
