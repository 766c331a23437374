"""Recipes: every hyperparameter of a grownet search in one validated, TOML-backed structure.

A recipe is a :class:`Recipe` of nested sections (``[model]``, ``[data]``, ``[optim]``,
``[grow]``, ``[finetune]``, ``[budget]``, ``[run]``). The defaults are the reference setup
of METHOD.md §2 (a GPU-sized job); the bundled recipes (``grownet/recipes/*.toml``, addressed
by name: ``cifar10-cpu``) override some keys. Every key is
addressed by its dotted path (``grow.tau``): in TOML files, in CLI flags
(``--grow.tau 0.9``) and in error messages (``grow.tau: must be in (0, 1], got 1.5``).

The schema lives in the dataclass fields below (type, range, help text), so validation, the
CLI flags and the docs are generated from one place.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

from .errors import ConfigError
from .validate import MAX_INT, cut, read_toml, show

__all__ = [
    "Recipe",
    "ModelSection",
    "DataSection",
    "OptimSection",
    "GrowSection",
    "FinetuneSection",
    "BudgetSection",
    "RunSection",
    "KeySpec",
    "load_recipe",
    "resolve_recipe",
    "upgrade_stored",
    "recipe_path",
    "recipe_names",
    "default_recipe",
    "RECIPE_DIR",
    "DEFAULT_RECIPES",
    "recipe_keys",
    "parse_value",
]


def _key(default: Any, help: str, **spec: Any) -> Any:
    """A recipe key: its default, one-line help, and validation spec (see :class:`KeySpec`)."""
    return field(default=default, metadata={"help": help, **spec})


@dataclass(frozen=True)
class ModelSection:
    seed_arch: str = _key("vgg", "seed net: a preset of grownet.seeds ('vgg', 'resnet', ...) or the path of an architecture JSON")
    seed_width: int | tuple[int, ...] = _key(0, "vgg/resnet presets: width of every layer, or one per stage (0 = the preset's)", low=0, high=65536, per_stage=True)
    seed_depths: int | tuple[int, ...] = _key(0, "vgg/resnet presets: convs (VGG) or blocks (ResNet) per stage, one number for all or one per stage (0 = the preset's)", low=0, high=64, per_stage=True)


@dataclass(frozen=True)
class DataSection:
    val_size: int = _key(5000, "training images held out as the validation split (model selection; the test set is only reported)", low=1)
    limit_train: int = _key(0, "read only the first N training images, the validation split included (0 = all)", low=0)
    limit_test: int = _key(0, "read only the first N test images (0 = all)", low=0)
    batch_size: int = _key(128, "training batch size", low=1, high=65536)
    eval_batch_size: int = _key(1000, "batch size for validation and test passes (no effect on results)", low=1, high=65536)
    augment: bool = _key(True, "random crop (4 px padding) and horizontal flip of training images")
    cutout: int = _key(0, "cutout square side in pixels on training images (0 = off)", low=0, high=1024)


@dataclass(frozen=True)
class OptimSection:
    lr: float = _key(0.05, "DessiLBI learning rate alpha while growing (constant)", low=0.0, low_open=True, high=10.0)
    kappa: float = _key(1.0, "DessiLBI kappa: W moves with step kappa*alpha, Gamma = kappa*prox(V)", low=0.0, low_open=True, high=1000.0)
    mu: float = _key(100.0, "DessiLBI nu (coupling ||W - Gamma||^2 / 2nu); smaller nu lets filters enter the support sooner", low=0.0, low_open=True)
    lam: float = _key(1.0, "prox threshold lambda: filter g enters Gamma's support when ||V_g|| > lambda", low=0.0, low_open=True)
    momentum: float = _key(0.9, "momentum on the loss gradient", low=0.0, high=1.0, high_open=True)
    nesterov: bool = _key(False, "Nesterov momentum")
    weight_decay: float = _key(0.0, "L2 weight decay added to the loss gradient", low=0.0, high=1.0)
    label_smoothing: float = _key(0.0, "label smoothing of the cross-entropy while growing", low=0.0, high=1.0, high_open=True)


@dataclass(frozen=True)
class GrowSection:
    local_epochs: int = _key(10, "epochs of DessiLBI training per round, before each growth check", low=1)
    tau: float | tuple[float, ...] = _key(
        0.8,
        "activity threshold: a layer with activity >= tau is saturated and widened; one number, or one per stage",
        low=0.0, low_open=True, high=1.0, per_stage=True,
    )
    ratio: float = _key(1.1, "widening factor: C -> max(C + min_add, ceil(ratio * C))", low=1.0, high=16.0)
    min_add: int = _key(8, "least number of filters added to a widened layer", low=1)
    deepen: bool = _key(True, "deepen a stage whose layers were all saturated at this check and the previous one")
    max_layers_per_stage: int = _key(6, "deepening cap: convs per VGG stage, blocks per ResNet stage", low=1, high=64)
    max_width: int = _key(1024, "no layer grows past this width", low=1, high=65536)
    width_multiple: int = _key(
        1, "a widened layer's width is rounded up to a multiple of this, and budgets are spent in such steps (1: any "
        "width; 8 or 16 suit CPUs, whose convolutions cost a whole block of channels for part of one: "
        "benchmarks/width_multiple.py)", low=1, high=256)
    signal: str = _key(
        "importance",
        "growth signal: importance (scale-free filter importance along the round, grownet.signal), support "
        "(share of filters in Gamma's support, the first version's signal), uniform (no signal: every layer reads "
        "activity 1 and widens by the same factor; a control) or off (every layer reads 0: nothing grows; with "
        "budget.min_rounds, the seed trained with the growth phase's rounds, then the fine-tune)",
        choices=("importance", "support", "uniform", "off"),
    )
    rho: float = _key(0.75, "importance signal: a filter is active when its importance over the round is >= rho x the "
                      "mean importance of all filters of the net", low=0.0, low_open=True, high=100.0)
    activity_cost_exponent: float = _key(
        0.0, "importance signal: a filter is active when its importance / m ** activity_cost_exponent is >= rho x the mean "
        "of the same over all filters of the net, m the MACs one more filter of its layer adds (0: importance alone; "
        "1: importance per MAC, the currency of the greedy budget allocation)", low=0.0, high=4.0)
    cost_exponent: float = _key(1.0, "importance signal, over budget: layers are widened in order of importance / width / "
                                "(MACs per added filter) ** cost_exponent (0: importance alone)", low=0.0, high=4.0)


@dataclass(frozen=True)
class FinetuneSection:
    epochs: int = _key(40, "fine-tune epochs on the final architecture (0 = none); the best validation epoch is kept", low=0)
    optimizer: str = _key("dessilbi", "dessilbi (keep the growing optimizer and its state) or sgd (fresh momentum SGD)", choices=("dessilbi", "sgd"))
    lr: float = _key(0.05, "initial learning rate, cosine-decayed to min_lr over the fine-tune", low=0.0, low_open=True, high=10.0)
    min_lr: float = _key(0.0, "final learning rate of the cosine decay", low=0.0, high=10.0)
    warmup_epochs: float = _key(0.0, "linear warm-up from 0 to lr over this many epochs (fractions allowed)", low=0.0)
    momentum: float = _key(0.9, "momentum (sgd optimizer only; dessilbi keeps optim.momentum)", low=0.0, high=1.0, high_open=True)
    nesterov: bool = _key(False, "Nesterov momentum (sgd optimizer only)")
    weight_decay: float = _key(0.0, "L2 weight decay (sgd optimizer only; dessilbi keeps optim.weight_decay)", low=0.0, high=1.0)
    label_smoothing: float = _key(0.0, "label smoothing of the cross-entropy while fine-tuning", low=0.0, high=1.0, high_open=True)


@dataclass(frozen=True)
class BudgetSection:
    max_macs: int = _key(0, "inference MACs per image the final net may have (0 = no limit); growth is clipped to fit", low=0)
    max_params: int = _key(0, "parameters the final net may have (0 = no limit); growth is clipped to fit", low=0)
    time_budget: float = _key(
        0.0,
        "wall-clock seconds for the whole run (0 = no limit): a growth whose round and the fine-tune are estimated to pass "
        "it is cut to the most MACs that fit, and held where nothing larger than the present net fits",
        low=0.0,
    )
    max_rounds: int = _key(0, "growing rounds at most (0 = no limit); the last round's check grows nothing", low=0)
    min_rounds: int = _key(0, "growing rounds at least: a check that grows nothing before this round leaves the net "
                              "as it is for another round instead of starting the fine-tune (0 = none; at most "
                              "max_rounds; the time budget still stops it)", low=0)


@dataclass(frozen=True)
class RunSection:
    amp: str = _key("auto", "mixed precision on CUDA: auto (bf16 on a GPU with native bf16, else off), off, bf16 or fp16 "
                    "(ignored on the CPU)", choices=("auto", "off", "bf16", "fp16"))
    compile: str = _key("auto", "torch.compile the nets of fixed-architecture phases (fine-tune, controls, ticket fine-tunes; never "
                        "a growing round): auto (where torch.compile runs here and the phase has >= 1000 steps), on, off",
                        choices=("auto", "on", "off"))
    channels_last: str = _key("auto", "channels-last memory format: auto (on for the CPU, where convs run faster), on, off", choices=("auto", "on", "off"))
    max_retries: int = _key(3, "after a non-finite loss: times to restore the last checkpoint and retry with a lower lr", low=0, high=20)
    retry_lr_factor: float = _key(0.5, "learning-rate factor applied at each divergence retry", low=0.0, low_open=True, high=1.0, high_open=True)


_SECTIONS: dict[str, type] = {
    "model": ModelSection,
    "data": DataSection,
    "optim": OptimSection,
    "grow": GrowSection,
    "finetune": FinetuneSection,
    "budget": BudgetSection,
    "run": RunSection,
}


@dataclass(frozen=True)
class Recipe:
    """A complete, validated recipe (defaults: the reference setup of METHOD.md §2)."""

    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    grow: GrowSection = field(default_factory=GrowSection)
    finetune: FinetuneSection = field(default_factory=FinetuneSection)
    budget: BudgetSection = field(default_factory=BudgetSection)
    run: RunSection = field(default_factory=RunSection)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Recipe":
        """Validate a nested dict (``{"grow": {"tau": 0.9}}``); missing keys take defaults.

        Raises:
            ConfigError: for an unknown section or key, a wrong type or an out-of-range
                value, naming its dotted path.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"recipe must be a table of sections, got {type(data).__name__}")
        sections: dict[str, Any] = {}
        for name, values in data.items():
            if name == "tune":  # search ranges of `grownet tune`, validated by grownet.tune.TuneSpace
                continue
            if name not in _SECTIONS:
                raise ConfigError(f"{cut(name)}: unknown section (known: {', '.join(_SECTIONS)})")
            if not isinstance(values, Mapping):
                raise ConfigError(f"{name}: must be a table of keys, got {type(values).__name__}")
            sections[name] = _build_section(name, _SECTIONS[name], values)
        b = sections.get("budget", BudgetSection())
        if b.max_rounds and b.min_rounds > b.max_rounds:
            raise ConfigError(f"budget.min_rounds: {b.min_rounds} is more than budget.max_rounds {b.max_rounds}; "
                              f"lower it or raise budget.max_rounds")
        return cls(**sections)

    @classmethod
    def from_toml(cls, path: str | os.PathLike) -> "Recipe":
        """Read and validate a TOML recipe file."""
        return load_recipe(path)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain nested dict of every key (tuples as lists), as written to config.json."""
        return {
            name: {f.name: _plain(getattr(getattr(self, name), f.name)) for f in dataclasses.fields(section)}
            for name, section in _SECTIONS.items()
        }

    def with_overrides(self, overrides: Mapping[str, Any] | None) -> "Recipe":
        """A copy with dotted-path values replaced (``{"grow.tau": 0.9}``), validated.

        String values are parsed as on the command line (:func:`parse_value`).
        """
        if not overrides:
            return self
        data = self.to_dict()
        for path, value in overrides.items():
            spec = _spec(path)
            if isinstance(value, str) and spec.kind != "str":
                value = parse_value(path, value)
            data[spec.section][spec.key] = value
        return Recipe.from_dict(data)

    def get(self, path: str) -> Any:
        """Value at a dotted path (``"grow.tau"``)."""
        spec = _spec(path)
        return getattr(getattr(self, spec.section), spec.key)

    def diff(self, other: "Recipe") -> list[str]:
        """Dotted paths whose values differ between two recipes, in schema order."""
        a, b = self.to_dict(), other.to_dict()
        return [f"{s}.{k}" for s in a for k in a[s] if a[s][k] != b[s][k]]


# ---- schema ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeySpec:
    """One recipe key: where it lives, its type and accepted range, and its help line."""

    section: str
    key: str
    kind: str  # "int" | "float" | "bool" | "str"
    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] | None = None
    per_stage: bool = False

    @property
    def path(self) -> str:
        return f"{self.section}.{self.key}"

    def range_text(self) -> str:
        """The accepted range, e.g. ``(0, 1]`` or ``>= 1``."""
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.low is not None and self.high is not None:
            return f"{'(' if self.low_open else '['}{_num(self.low)}, {_num(self.high)}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {_num(self.low)}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {_num(self.high)}"
        return ""


def recipe_keys() -> Iterator[KeySpec]:
    """Every recipe key in schema order (sections, then fields)."""
    for name, section in _SECTIONS.items():
        for f in dataclasses.fields(section):
            yield _field_spec(name, f)


def _field_spec(section: str, f: dataclasses.Field) -> KeySpec:
    md = dict(f.metadata)
    kind = {int: "int", float: "float", bool: "bool", str: "str"}.get(type(f.default), "float")
    return KeySpec(section=section, key=f.name, kind=kind, default=f.default, **md)


def _spec(path: str) -> KeySpec:
    section, _, key = path.partition(".")
    if section not in _SECTIONS:
        raise ConfigError(f"{path}: unknown recipe key (sections: {', '.join(_SECTIONS)})")
    for f in dataclasses.fields(_SECTIONS[section]):
        if f.name == key:
            return _field_spec(section, f)
    known = ", ".join(f.name for f in dataclasses.fields(_SECTIONS[section]))
    raise ConfigError(f"{path}: unknown key (keys of [{section}]: {known})")


def _build_section(name: str, cls: type, values: Mapping[str, Any]) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"{name}.{cut(key)}: unknown key (keys of [{name}]: {', '.join(fields)})")
        kwargs[key] = _check(_field_spec(name, fields[key]), value)
    return cls(**kwargs)


def _check(spec: KeySpec, value: Any) -> Any:
    """Validate one value against its spec; return it normalised (ints as floats, lists as tuples)."""
    path = spec.path
    if spec.per_stage and isinstance(value, (list, tuple)):
        if not value:
            raise ConfigError(f"{path}: must be a number or a non-empty list of numbers (one per stage)")
        return tuple(_check_scalar(spec, v, f"{path}[{i}]") for i, v in enumerate(value))
    return _check_scalar(spec, value, path)


def _check_scalar(spec: KeySpec, value: Any, path: str) -> Any:
    if spec.kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: must be true or false, got {show(value)}")
        return value
    if spec.kind == "str":
        if not isinstance(value, str):
            raise ConfigError(f"{path}: must be a string, got {show(value)}")
        if spec.choices and value not in spec.choices:
            raise ConfigError(f"{path}: must be one of {', '.join(spec.choices)}, got {show(value)}")
        if not value:
            raise ConfigError(f"{path}: must not be empty")
        return value
    if spec.kind == "int":
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{path}: must be an integer, got {show(value)}")
        if abs(value) > MAX_INT:  # counts and sizes reach torch and numpy as int64
            raise ConfigError(f"{path}: must be at most {MAX_INT} (a 64-bit integer), got {show(value)}")
    else:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConfigError(f"{path}: must be a number, got {show(value)}")
        try:
            number = float(value)
        except OverflowError:  # an integer past the float range
            number = math.inf
        if not math.isfinite(number):
            raise ConfigError(f"{path}: must be finite, got {show(value)}")
        value = number
    too_low = spec.low is not None and (value <= spec.low if spec.low_open else value < spec.low)
    too_high = spec.high is not None and (value >= spec.high if spec.high_open else value > spec.high)
    if too_low or too_high:
        rng = spec.range_text()
        raise ConfigError(f"{path}: must be {'in ' + rng if rng[0] in '([' else rng}, got {_num(value)}")
    return value


# ---- text values (CLI flags, string overrides) ----------------------------------------------------

_SUFFIX = {"k": 10**3, "m": 10**6, "g": 10**9}
#: Longest number accepted on the command line (the int64 range needs 20 characters).
_MAX_CHARS = 40


def parse_value(path: str, text: str) -> Any:
    """Parse a command-line string for the key at ``path`` (then validated by the recipe).

    Integers accept SI suffixes (``40M`` = 40,000,000) and exponents (``4e7``); booleans accept
    true/false/yes/no/on/off/1/0; per-stage keys accept comma-separated lists (``0.8,0.9``).

    Raises:
        ConfigError: naming ``path`` when the text is not of the key's type.
    """
    spec = _spec(path)
    text = text.strip()
    if spec.per_stage and "," in text:
        return [parse_value(path, part) for part in text.split(",")]
    if spec.kind == "str":
        return text
    if spec.kind == "bool":
        low = text.lower()
        if low in ("true", "yes", "on", "1"):
            return True
        if low in ("false", "no", "off", "0"):
            return False
        raise ConfigError(f"{path}: must be true or false, got {show(text)}")
    m = re.fullmatch(r"([-+]?[0-9_.]+(?:[eE][-+]?\d+)?)([kKmMgG]?)", text)
    kind = "an integer" if spec.kind == "int" else "a number"
    if not m or len(m.group(1)) > _MAX_CHARS:
        raise ConfigError(f"{path}: must be {kind}{' of at most 40 characters' if m else ''}, got {show(text)}")
    digits, scale = m.group(1).replace("_", ""), _SUFFIX.get(m.group(2).lower(), 1)
    if spec.kind == "int" and re.fullmatch(r"[-+]?\d+", digits):
        return int(digits) * scale  # exact: 2**64 is not rounded to a float
    try:
        number = float(digits) * scale
    except ValueError:
        raise ConfigError(f"{path}: must be {kind}, got {show(text)}") from None
    if spec.kind == "int":
        if not number.is_integer():
            raise ConfigError(f"{path}: must be an integer, got {show(text)}")
        return int(number)
    return number


# ---- files -----------------------------------------------------------------------------------------


#: The bundled recipes: package data (not a copy of a repository folder), so a recipe name
#: resolves from any install, editable or not.
RECIPE_DIR = Path(__file__).with_name("recipes")

#: The bundled recipe ``grownet search`` runs without ``--recipe``, by the type of the device
#: it trains on, and why: the reference setup would take many hours on a CPU.
DEFAULT_RECIPES: dict[str, tuple[str, str]] = {
    "cpu": ("cifar10-cpu", "the run trains on the CPU: about 30 min on 2 cores"),
    "cuda": ("cifar10-vgg", "the run trains on a GPU: the reference setup of METHOD.md §2"),
}


def recipe_names() -> list[str]:
    """Names of the bundled recipes (``grownet/recipes/NAME.toml``), sorted."""
    return sorted(p.stem for p in RECIPE_DIR.glob("*.toml"))


def recipe_path(recipe: str | os.PathLike) -> Path:
    """The file of ``recipe``: a bundled recipe's name (a string without a path separator
    and without a ``.toml`` suffix, e.g. ``"cifar10-cpu"``), or else a TOML file path.

    Raises:
        ConfigError: an unknown name (the message lists the bundled ones).
    """
    text = os.fspath(recipe)
    if not isinstance(recipe, str) or "/" in text or os.sep in text or text.endswith(".toml"):
        return Path(text)
    if text not in recipe_names():
        raise ConfigError(f"{text}: no bundled recipe of that name (bundled: {', '.join(recipe_names())}); "
                          "give one of them or the path of a TOML file")
    return RECIPE_DIR / f"{text}.toml"


def default_recipe(device: Any) -> tuple[str, str]:
    """``(name, reason)``: the bundled recipe for a search on ``device`` (a torch.device or
    its name; :data:`DEFAULT_RECIPES`, the CPU's for any type but CUDA)."""
    kind = getattr(device, "type", str(device).split(":")[0])
    return DEFAULT_RECIPES.get(kind, DEFAULT_RECIPES["cpu"])


#: Keys whose default changed, with the value a stored recipe without the key ran with.
_STORED_DEFAULTS: dict[str, dict[str, Any]] = {
    "grow": {"signal": "support"},  # runs before grow.signal grew on Γ's support (now "importance")
    "run": {"amp": "off", "compile": "off"},  # runs before "auto" trained in full precision, eager
}


def upgrade_stored(recipe: Mapping[str, Any]) -> dict[str, Any]:
    """A run's stored recipe (config.json ``recipe``) with the meaning it had when written: a
    stored table without a key whose default has changed since reads as the value the run
    used (:data:`_STORED_DEFAULTS`): ``grow.signal`` as ``"support"`` (runs before the key
    grew on Γ's support), ``run.amp`` and ``run.compile`` as ``"off"`` (runs before them
    trained in full precision, eager), so a resume trains as the run did."""
    out = dict(recipe)
    for section, old in _STORED_DEFAULTS.items():
        table = out.get(section)
        if isinstance(table, Mapping):
            out[section] = {**table, **{k: v for k, v in old.items() if k not in table}}
    return out


def resolve_recipe(
    recipe: Recipe | str | os.PathLike | None,
    overrides: Mapping[str, Any] | None = None,
    default: Recipe | None = None,
) -> Recipe:
    """``recipe`` (a Recipe, a bundled recipe's name or a TOML path to load; ``None``:
    ``default``, else the defaults) with the dotted-key ``overrides`` applied."""
    if isinstance(recipe, Recipe):
        base = recipe
    elif recipe is not None:
        base = load_recipe(recipe)
    else:
        base = default if default is not None else Recipe()
    return base.with_overrides(overrides)


def load_recipe(path: str | os.PathLike) -> Recipe:
    """Read a TOML recipe (a file, or a bundled recipe's name: see :func:`recipe_path`) and
    validate it.

    Raises:
        ConfigError: for an unknown name, a missing or unreadable file, invalid TOML, or an
            invalid key (the message starts with the file name).
    """
    path = recipe_path(path)
    names = ", ".join(recipe_names())
    data = read_toml(path, error=ConfigError, what=" recipe",
                     missing=f"recipe file not found; give a TOML file or a bundled recipe's name ({names})")
    try:
        return Recipe.from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _num(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    return str(int(value)) if value.is_integer() and abs(value) < 1e16 else repr(float(value))
