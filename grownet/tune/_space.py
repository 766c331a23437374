"""The search space: which recipe keys a study samples, their ranges, and the objectives."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from ..errors import ConfigError
from ..recipe import Recipe, load_recipe, recipe_path as recipe_file
from ..validate import read_toml

if TYPE_CHECKING:  # pragma: no cover
    import optuna

#: Searched hyperparameters: ``[tune]`` key -> recipe key it sets.
SEARCHED: dict[str, str] = {
    "tau": "grow.tau",
    "ratio": "grow.ratio",
    "min_add": "grow.min_add",
    "local_epochs": "grow.local_epochs",
    "deepen": "grow.deepen",
    "kappa": "optim.kappa",
    "mu": "optim.mu",
    "lr": "optim.lr",
    "activity_cost_exponent": "grow.activity_cost_exponent",
}
#: Keys searched only where the ``[tune]`` table or ``--tune.KEY`` names them (elsewhere the
#: recipe's value stays): a study stored before such a key existed reads back as it was.
OPTIONAL = frozenset({"activity_cost_exponent"})
#: The study's objectives, in order: (name, direction).
OBJECTIVES = (("val_acc", "maximize"), ("macs", "minimize"))
_LOG_SCALE = frozenset({"kappa", "mu", "lr"})  # positive scale parameters: sampled uniformly in log
_INT = frozenset({"min_add", "local_epochs"})
#: Default ranges: (low, high). local_epochs defaults to half to twice the recipe's value.
_DEFAULT_RANGES: dict[str, tuple[Any, Any]] = {
    "tau": (0.6, 0.95),
    "ratio": (1.05, 1.5),
    "min_add": (2, 16),
    "deepen": (True, False),
    "kappa": (0.5, 4.0),
    "mu": (10.0, 1000.0),
    "lr": (0.01, 0.2),
}


@dataclass(frozen=True)
class Param:
    """One searched hyperparameter: ``kind`` "float" / "int" sampled in ``[low, high]``
    (``log``: uniformly in log), or "bool" sampled from ``choices``. ``low == high`` or a
    single choice pins it."""

    name: str
    kind: str
    low: Any = None
    high: Any = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    @property
    def path(self) -> str:
        """The recipe key it sets (``grow.tau``)."""
        return SEARCHED[self.name]

    def to_dict(self) -> dict[str, Any]:
        """``{"choices": [...]}`` or ``{"low", "high", "log"}`` (as stored in the study)."""
        if self.kind == "bool":
            return {"choices": list(self.choices)}
        return {"low": self.low, "high": self.high, "log": self.log}

    def suggest(self, trial: "optuna.Trial") -> Any:
        """Sample this parameter in ``trial`` (or read it back when the trial has it)."""
        if self.kind == "bool":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.name, self.low, self.high, log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, log=self.log)


@dataclass(frozen=True)
class TuneSpace:
    """The searched hyperparameters: one :class:`Param` per key of :data:`SEARCHED`, those of
    :data:`OPTIONAL` only where named."""

    params: tuple[Param, ...]

    @classmethod
    def from_dict(cls, table: Mapping[str, Any] | None, *, recipe: Recipe) -> "TuneSpace":
        """Validate a ``[tune]`` table; keys left out take the defaults.

        A key's value is ``[low, high]`` (a range), a single value (pinned; not searched),
        or for ``deepen`` a list of booleans. Bounds must lie in the recipe key's own range.
        Keys of :data:`OPTIONAL` left out are not searched (no default range).

        Raises:
            ConfigError: naming ``tune.<key>`` (and the bound's index) for an unknown key, a
                wrong type, ``low > high`` or a bound the recipe would reject.
        """
        if table is not None and not isinstance(table, Mapping):
            raise ConfigError(f"tune: must be a table of ranges, got {type(table).__name__}")
        table = dict(table or {})
        unknown = sorted(set(table) - set(SEARCHED))
        if unknown:
            raise ConfigError(f"tune.{unknown[0]}: unknown key (searched: {', '.join(SEARCHED)})")
        return cls(tuple(_param(name, table[name] if name in table else _default_range(name, recipe))
                         for name in SEARCHED if name in table or name not in OPTIONAL))

    @classmethod
    def from_stored(cls, data: Mapping[str, Any]) -> "TuneSpace":
        """The space a study stored (:meth:`to_dict`), trusted as written by :func:`tune`
        (a key it lacks is not searched)."""
        params = []
        for name in SEARCHED:
            if name not in data:
                continue
            d = data[name]
            if "choices" in d:
                params.append(Param(name, "bool", choices=tuple(d["choices"])))
            else:
                kind = "int" if isinstance(d["low"], int) and name in _INT else "float"
                params.append(Param(name, kind, d["low"], d["high"], log=bool(d["log"])))
        return cls(tuple(params))

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """``{key: Param.to_dict()}`` of the searched keys in :data:`SEARCHED` order."""
        return {p.name: p.to_dict() for p in self.params}

    def suggest(self, trial: "optuna.Trial") -> dict[str, Any]:
        """Sample every parameter; return ``{recipe key: value}`` overrides."""
        return {p.path: p.suggest(trial) for p in self.params}


def _default_range(name: str, recipe: Recipe) -> Any:
    if name == "local_epochs":
        e = recipe.grow.local_epochs
        return [max(1, math.ceil(e / 2)), 2 * e]
    return list(_DEFAULT_RANGES[name])


def _param(name: str, value: Any) -> Param:
    path = f"tune.{name}"
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not values:
        raise ConfigError(f"{path}: must be a value or a non-empty list, got []")
    section, key = SEARCHED[name].split(".")
    for i, v in enumerate(values):
        where = f"{path}[{i}]" if isinstance(value, (list, tuple)) else path
        try:
            Recipe.from_dict({section: {key: v}})  # the recipe's own type and range check
        except ConfigError as exc:
            reason = str(exc).split(": ", 1)[-1]
            raise ConfigError(f"{where}: {reason}") from None
    kind = "bool" if name == "deepen" else "int" if name in _INT else "float"
    if kind == "bool":
        return Param(name, "bool", choices=tuple(dict.fromkeys(bool(v) for v in values)))
    if len(values) == 1:
        values = values * 2
    if len(values) != 2:
        raise ConfigError(f"{path}: must be [low, high] or a single value, got {len(values)} values")
    low, high = (int(v) if kind == "int" else float(v) for v in values)
    if low > high:
        raise ConfigError(f"{path}: low {low:g} is above high {high:g}")
    return Param(name, kind, low, high, log=name in _LOG_SCALE)


def tune_table(recipe_path: str | os.PathLike) -> dict[str, Any]:
    """The raw ``[tune]`` table of a recipe (file or bundled name; ``{}`` when it has none).

    Raises:
        ConfigError: an unreadable file, invalid TOML, or a ``tune`` that is not a table.
    """
    path = recipe_file(recipe_path)  # a bundled recipe's name or a file
    table = read_toml(path, error=ConfigError, what=" recipe", missing="recipe file not found").get("tune", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: tune: must be a table of ranges")
    return table


def load_space(recipe_path: str | os.PathLike | None, *, recipe: Recipe | None = None) -> TuneSpace:
    """The search space of a recipe file's ``[tune]`` table (defaults for missing keys, or
    when ``recipe_path`` is None). ``recipe`` is the resolved recipe (default: the file's)."""
    if recipe_path is None:
        return TuneSpace.from_dict(None, recipe=recipe or Recipe())
    table = tune_table(recipe_path)
    try:
        return TuneSpace.from_dict(table, recipe=recipe or load_recipe(recipe_path))
    except ConfigError as exc:
        raise ConfigError(f"{recipe_path}: {exc}") from None
