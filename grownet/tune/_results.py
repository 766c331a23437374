"""A study's results as plain records (read from the storage only), and the files written
from them: ``trials.csv``, ``pareto/trial-NNNN/architecture.json`` and ``tune.html``."""

from __future__ import annotations

import io
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ..files import atomic_write_text
from ._space import SEARCHED

if TYPE_CHECKING:  # pragma: no cover
    import optuna
    import pandas as pd

#: Study user attribute holding the tune configuration.
CONFIG_ATTR = "grownet.tune"
#: Trial user attribute: the run folder's name (kept by retries, so a retry resumes the folder).
RUN_ATTR = "grownet.run"


@dataclass(frozen=True)
class TrialRow:
    """One trial as plain data (from the storage only).

    ``val_acc``/``test_acc`` are fractions; ``macs``/``n_params`` of the final net;
    ``wall_time`` in seconds; ``params`` the sampled hyperparameters by ``[tune]`` key.
    """

    number: int
    state: str
    pareto: bool
    val_acc: float | None
    macs: float | None
    test_acc: float | None
    n_params: float | None
    train_flops: float | None
    wall_time: float | None
    rounds: int | None
    epochs: int | None
    params: Mapping[str, Any]
    run: str | None
    host: str | None
    run_dir: str | None
    widths: str | None
    error: str | None
    architecture: Mapping[str, Any] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class TuneResult:
    """What :func:`grownet.tune.tune` leaves: the output folder, the study's (masked)
    storage URL and name, every trial, the Pareto-optimal ones, and the written files."""

    out: Path
    storage: str
    study_name: str
    trials: tuple[TrialRow, ...]
    pareto: tuple[TrialRow, ...]
    ran: tuple[int, ...]
    paths: Mapping[str, Path]

    def frame(self) -> "pd.DataFrame":
        """The trials table (:func:`trials_frame`)."""
        return trials_frame(self.trials)


def trial_rows(study: "optuna.Study") -> list[TrialRow]:
    """Every trial of ``study`` as a :class:`TrialRow`, by trial number; ``pareto`` marks
    optuna's best trials (the Pareto front of the objectives)."""
    front = {t.number for t in study.best_trials}
    rows = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        values = t.values or [None, None]
        rows.append(TrialRow(
            number=t.number, state=t.state.name, pareto=t.number in front,
            val_acc=values[0], macs=values[1], test_acc=a.get("test_acc"), n_params=a.get("params"),
            train_flops=a.get("train_flops"), wall_time=a.get("wall_time"), rounds=a.get("rounds"), epochs=a.get("epochs"),
            params={k: t.params[k] for k in SEARCHED if k in t.params}, run=a.get(RUN_ATTR), host=a.get("host"),
            run_dir=a.get("run_dir"), widths=a.get("widths"), error=a.get("error"), architecture=a.get("architecture"),
        ))
    return rows


def trials_frame(rows: Sequence[TrialRow]) -> "pd.DataFrame":
    """The trials table: one row per trial; columns number, state, pareto, val_acc, macs,
    test_acc, n_params, train_flops, wall_time (s), rounds, epochs, one column per
    :data:`SEARCHED` key, widths, run, host, run_dir, error."""
    import pandas as pd

    cols = ["number", "state", "pareto", "val_acc", "macs", "test_acc", "n_params", "train_flops", "wall_time", "rounds",
            "epochs", *SEARCHED, "widths", "run", "host", "run_dir", "error"]
    data = [{**{c: getattr(r, c) for c in cols if c not in SEARCHED}, **{k: r.params.get(k) for k in SEARCHED}} for r in rows]
    return pd.DataFrame(data, columns=cols)


def write_outputs(study: "optuna.Study", out: str | os.PathLike, *, storage_label: str = "") -> dict[str, Path]:
    """Write ``trials.csv``, ``pareto/trial-NNNN/architecture.json`` and ``tune.html`` for
    ``study`` into ``out``; return their paths (``{"csv", "html", "pareto"}``).
    ``storage_label`` is shown on the page (pass a masked URL)."""
    from ..arch import Architecture
    from ._page import render_page

    out = Path(out)
    rows = trial_rows(study)
    buf = io.StringIO()
    trials_frame(rows).to_csv(buf, index=False)
    csv_path = out / "trials.csv"
    atomic_write_text(csv_path, buf.getvalue())
    pareto_dir = out / "pareto"
    keep = set()
    for r in rows:
        if r.pareto and r.architecture:
            name = f"trial-{r.number:04d}"
            keep.add(name)
            (pareto_dir / name).mkdir(parents=True, exist_ok=True)
            Architecture.from_dict(r.architecture).save(pareto_dir / name / "architecture.json")
    if pareto_dir.is_dir():
        for old in pareto_dir.iterdir():
            if re.fullmatch(r"trial-\d{4,}", old.name) and old.name not in keep:
                shutil.rmtree(old, ignore_errors=True)
    html_path = out / "tune.html"
    atomic_write_text(html_path, render_page(rows, out=out, study_name=study.study_name, storage_label=storage_label,
                                             config=study.user_attrs.get(CONFIG_ATTR) or {}))
    return {"csv": csv_path, "html": html_path, "pareto": pareto_dir}
