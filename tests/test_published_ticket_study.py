"""The committed ticket study (reports/ticket-cpu/ and its net-threshold variant): read back by
the study code its summary.json is what its arms say, it holds every arm for at least 3 seeds,
the ticket keeps 30-70% of the dense MACs, and the README quotes the summary's numbers."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from grownet.arch import Architecture
from grownet.cost import cost
from grownet.recipe import Recipe, upgrade_stored
from grownet.ticket import DIFFERENCES, TICKET_ARMS, run_ticket_study

REPO = Path(__file__).resolve().parents[1]
STUDY = REPO / "reports" / "ticket-cpu"
STUDIES = [STUDY, STUDY / "variant-net-threshold"]

pytestmark = pytest.mark.skipif(not (STUDY / "summary.json").is_file(), reason="no committed ticket study")


@pytest.mark.parametrize("study", STUDIES, ids=["layer-threshold", "net-threshold"])
def test_rereading_the_study_gives_its_summary(study, tmp_path):
    """run_ticket_study on a copy of the folder trains nothing (every arm is finished) and
    writes the same summary.json."""
    copy = tmp_path / "study"
    shutil.copytree(study, copy)
    config = json.loads((study / "study.json").read_text())
    s = config["settings"]
    recipe = Recipe.from_dict(upgrade_stored(config["recipe"]))  # as it ran: eager, fp32
    result = run_ticket_study(config["dataset"], out=copy, recipe=recipe, seeds=3,
                              epochs=s["epochs"], ticket_at=0.15, target=s["target"], finetune_epochs=s["finetune_epochs"],
                              finetune_lr_scale=s["finetune_lr_scale"], relative_to=s.get("relative_to", "net"),
                              device="cpu")
    assert result.summary == json.loads((study / "summary.json").read_text())
    assert s["ticket_epoch"] == max(1, math.floor(0.15 * s["epochs"] + 0.5))
    arms = result.summary["arms"]
    assert set(arms) == set(TICKET_ARMS) and all(a["n"] >= 3 for a in arms.values())
    assert set(result.summary["differences"]) == {f"{a}-{b}" for a, b in DIFFERENCES}
    for row in result.rows:  # every arm's architecture costs what its summary says
        arch = Architecture.from_json(study / f"seed-{row['seed']}" / row["arm"] / "architecture.json")
        assert cost(arch).macs == row["macs"] and list(arch.layer_widths().values()) == list(row["widths"].values())


@pytest.mark.parametrize("study", STUDIES, ids=["layer-threshold", "net-threshold"])
def test_the_ticket_keeps_30_to_70_percent_of_the_dense_macs(study):
    summary = json.loads((study / "summary.json").read_text())
    dense = summary["arms"]["sgd"]["macs"]["mean"]
    for arm in ("rewound", "finetuned", "scratch", "random"):
        assert 0.30 <= summary["arms"][arm]["macs"]["mean"] / dense <= 0.70, arm
    assert abs(summary["arms"]["uniform"]["macs"]["mean"] / summary["arms"]["rewound"]["macs"]["mean"] - 1) <= 0.02


def test_readme_quotes_the_study():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    main = json.loads((STUDY / "summary.json").read_text())
    for arm, a in main["arms"].items():
        text = f"{100 * a['test_acc']['mean']:.2f} ± {100 * a['test_acc']['std']:.2f}"
        assert text in readme, f"README lacks the {arm} arm's test accuracy {text}"
    for pair in ("lbi-sgd", "rewound-sgd", "rewound-random", "rewound-scratch", "rewound-uniform", "finetuned-sgd",
                 "finetuned-random"):
        assert _quoted(main["differences"][pair]) in readme, pair
    variant = json.loads((STUDIES[1] / "summary.json").read_text())
    for key in ("lbi-sgd", "rewound-uniform"):
        assert _quoted(variant["differences"][key]) in readme, key
    for arm in ("rewound", "uniform"):
        a = variant["arms"][arm]
        assert f"{100 * a['test_acc']['mean']:.2f} ± {100 * a['test_acc']['std']:.2f}" in readme, arm


def _quoted(d: dict) -> str:
    """A difference as the README writes it: signed, with a true minus sign."""
    return f"{100 * d['mean']:+.2f} ± {100 * d['std']:.2f}".replace("-", "\u2212")
