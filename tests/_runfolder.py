"""A synthetic run folder written exactly as COMMON.md "The run folder" specifies, for tests
of the report, the controls and compare that must not wait for a real search.

The run: a VGG seed [[16, 16], [16, 16], [16, 16]] grown over three checks (epochs 2, 4, 6),
then fine-tuned for epochs 7-8:

- check 1: stages.0.0 and stages.2.1 widen 16 -> 24;
- check 2: stages.1.0 widens 16 -> 24, stages.2.1 is clipped 24 -> 28 by the budget,
  stages.0.1 is skipped, stage 2 is deepened (stages.2.2, width 28);
- check 3: nothing saturates (grew false).

Final: [[24, 16], [24, 16], [16, 28, 28]].
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Sequence

import pytest

from grownet.arch import Architecture
from grownet.cost import cost
from grownet.recipe import Recipe

HISTORY_COLUMNS = ["round", "epoch", "phase", "lr", "train_loss", "train_acc", "val_loss", "val_acc",
                   "macs", "params", "train_flops", "wall_time"]
XSS = "<script>alert(1)</script>"
CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

SEED = Architecture("vgg", ((16, 16), (16, 16), (16, 16)))
ROUND2 = Architecture("vgg", ((24, 16), (16, 16), (16, 24)))
ROUND3 = Architecture("vgg", ((24, 16), (24, 16), (16, 28, 28)))
FINAL = ROUND3
TAU = 0.8
#: (check epoch, architecture while the round trained, activities, decisions {layer: (decision, new_width)})
CHECKS = [
    (2, SEED, {"stages.0.0": 0.875, "stages.0.1": 0.5, "stages.1.0": 0.625, "stages.1.1": 0.25,
               "stages.2.0": 0.3125, "stages.2.1": 0.8125},
     {"stages.0.0": ("widen", 24), "stages.2.1": ("widen", 24)}),
    (4, ROUND2, {"stages.0.0": 0.5, "stages.0.1": 0.875, "stages.1.0": 0.9375, "stages.1.1": 0.5,
                 "stages.2.0": 0.375, "stages.2.1": 0.9583},
     {"stages.1.0": ("widen", 24), "stages.2.1": ("clipped", 28), "stages.0.1": ("skipped", 16)}),
    (6, ROUND3, {"stages.0.0": 0.25, "stages.0.1": 0.375, "stages.1.0": 0.5, "stages.1.1": 0.4375,
                 "stages.2.0": 0.5, "stages.2.1": 0.5, "stages.2.2": 0.1071}, {}),
]
EPOCHS = 8


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def _write_history(path: Path, rows: Sequence[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


def history_rows(arch_per_epoch: Sequence[Architecture], *, finetune_from: int | None, seconds: float = 2.0,
                 samples: int = 512) -> list[dict]:
    """One row per epoch; accuracies rise, losses fall, train_flops and wall_time accumulate."""
    rows, flops, wall = [], 0, 0.0
    for e, arch in enumerate(arch_per_epoch, start=1):
        c = cost(arch)
        flops += c.train_flops_per_sample * samples
        wall += seconds
        rows.append({
            "round": min(1 + (e - 1) // 2, 3), "epoch": e,
            "phase": "finetune" if finetune_from is not None and e >= finetune_from else "grow",
            "lr": 0.05, "train_loss": 2.3 - 0.2 * e, "train_acc": 0.1 + 0.08 * e,
            "val_loss": 2.35 - 0.18 * e, "val_acc": 0.1 + 0.07 * e,
            "macs": c.macs, "params": c.params, "train_flops": flops, "wall_time": wall,
        })
    return rows


def write_synthetic_run(path: Path, *, classes: Sequence[str] | None = None, command: str | None = None,
                        dataset: str = "cifar10", data_dir: str | None = "/data/<b>cifar</b>",
                        recipe: dict[str, dict[str, Any]] | None = None) -> Path:
    """Write the run described in the module docstring to ``path``; return ``path``.
    ``recipe``: nested overrides of the default recipe (``{"data": {"val_size": 32}}``)."""
    path.mkdir(parents=True, exist_ok=True)
    classes = list(classes) if classes is not None else [XSS] + CIFAR10[1:]
    resolved = Recipe().to_dict()
    resolved["grow"]["local_epochs"] = 2
    resolved["finetune"]["epochs"] = 2
    for section, values in (recipe or {}).items():
        resolved[section].update(values)
    Recipe.from_dict(resolved)  # the fixture writes valid recipes only
    _write_json(path / "config.json", {
        "recipe": resolved, "seed": 7, "dataset": dataset, "data_dir": data_dir, "device": "cpu",
        "versions": {"grownet": "0.1.0", "torch": "2.13.0", "torchvision": "0.28.0", "python": "3.11.2"},
        "command": command if command is not None else 'grownet search --dataset cifar10 --out "runs/a&b" --tag <i>x</i>',
        "started": "2025-01-01T12:00:00+00:00",
    })
    rounds = []
    for r, (epoch, arch, activity, grow) in enumerate(CHECKS, start=1):
        c = cost(arch)
        layers = []
        for layer, width in arch.layer_widths().items():
            decision, new = grow.get(layer, ("keep", width))
            a = activity[layer]
            layers.append({"layer": layer, "width": width, "activity": a, "tau": TAU, "decision": decision,
                           "new_width": new, "reason": f"activity {a:.3f} vs tau {TAU:g} <{decision}>"})
        deepened = [2] if r == 2 else []
        if deepened:
            layers.append({"layer": "stages.2.2", "width": 0, "activity": None, "tau": TAU, "decision": "deepen",
                           "new_width": 28, "reason": "every layer of stage 2 saturated twice"})
        rounds.append({"round": r, "epoch": epoch, "macs": c.macs, "params": c.params, "val_acc": 0.1 + 0.07 * epoch,
                       "layers": layers, "deepened": deepened, "grew": bool(grow) or bool(deepened)})
    _write_json(path / "rounds.json", rounds)
    per_epoch = [SEED, SEED, ROUND2, ROUND2, ROUND3, ROUND3, FINAL, FINAL]
    hist = history_rows(per_epoch, finetune_from=7)
    _write_history(path / "history.csv", hist)
    fc = cost(FINAL)
    final = FINAL.with_meta(macs=fc.macs, params=fc.params, val_acc=0.66, test_acc=0.65, dataset="cifar10",
                            grownet_version="0.1.0")
    final.save(path / "architecture.json")
    _write_json(path / "summary.json", {
        "dataset": dataset, "classes": classes, "seed": 7, "val_acc": 0.66, "test_acc": 0.65,
        "macs": fc.macs, "params": fc.params, "train_flops": hist[-1]["train_flops"], "wall_time": hist[-1]["wall_time"],
        "rounds": len(CHECKS), "epochs": EPOCHS, "seed_arch": SEED.to_dict(), "final_arch": final.to_dict(),
        "events": [{"epoch": 5, "event": "divergence", "detail": "non-finite loss <nan>; retried with lr 0.025"}],
    })
    return path


def write_control(run: Path, name: str, arch: Architecture, *, val_acc: float, test_acc: float, epochs: int = EPOCHS) -> Path:
    """A finished control folder ``run/controls/<name>/`` as grownet.baseline writes it."""
    out = run / "controls" / name
    out.mkdir(parents=True, exist_ok=True)
    c = cost(arch)
    hist = history_rows([arch] * epochs, finetune_from=None, seconds=1.5)
    for row in hist:
        row["round"], row["phase"] = 0, "control"
    _write_history(out / "history.csv", hist)
    arch.with_meta(macs=c.macs, params=c.params, val_acc=val_acc, test_acc=test_acc).save(out / "architecture.json")
    _write_json(out / "summary.json", {
        "control": name, "val_acc": val_acc, "test_acc": test_acc, "macs": c.macs, "params": c.params,
        "train_flops": hist[-1]["train_flops"], "wall_time": hist[-1]["wall_time"], "epochs": epochs,
    })
    return out


# ---- a real smoke run ---------------------------------------------------------------------------------

_SMOKE: dict[str, Path] = {}


def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run folder of one real ``grownet.search.search`` with recipes/smoke.toml cut down as
    tests/_smoke.py does for test_search (CIFAR-10 when the shared copy is present, else its
    generated npz set), made once per test session: memoised here, so every test module shares
    it. Treat the folder as read-only: copy it before changing anything."""
    if "run" not in _SMOKE:
        from grownet.search import search

        from _smoke import FAST, SMOKE, smoke_dataset

        base = tmp_path_factory.getbasetemp()
        dataset, data_dir = smoke_dataset(base)
        out = base / "smoke-run"
        search(dataset, recipe=SMOKE, overrides=FAST, out=out, data_dir=data_dir, device="cpu", seed=0,
               command=f"grownet search --recipe recipes/smoke.toml --dataset {dataset}")
        _SMOKE["run"] = out
    return _SMOKE["run"]
