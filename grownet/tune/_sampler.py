"""The study's sampler: a fresh optuna sampler per trial, seeded from (seed, trial number)."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from ..errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    import optuna

#: Sampler kinds :func:`make_sampler` knows.
SAMPLERS = ("tpe", "nsga2", "random")


def make_sampler(kind: str = "tpe", *, seed: int = 0) -> "optuna.samplers.BaseSampler":
    """The study's sampler: ``tpe`` (multivariate, multi-objective TPE with the constant
    liar, so workers running at once spread out), ``nsga2`` or ``random``. A fresh sampler
    of that kind serves each trial, seeded from ``(seed, trial number)``.

    Raises:
        UsageError: an unknown ``kind``.
    """
    import optuna

    if kind not in SAMPLERS:
        raise UsageError(f"--sampler: must be one of {', '.join(SAMPLERS)}, got {kind!r}")

    class _TrialSeeded(optuna.samplers.BaseSampler):
        """A fresh ``kind`` sampler per trial, seeded from (seed, trial number). Trial numbers
        are unique across workers, so workers sharing a study never draw the same random
        points, and one worker's study is reproducible."""

        def __init__(self) -> None:
            self._inner: dict[int, optuna.samplers.BaseSampler] = {}

        def _for(self, trial: Any) -> optuna.samplers.BaseSampler:
            if trial.number not in self._inner:
                import numpy as np

                s = int(np.random.SeedSequence([seed, trial.number]).generate_state(1)[0])
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    if kind == "tpe":
                        inner = optuna.samplers.TPESampler(seed=s, multivariate=True, constant_liar=True)
                    elif kind == "nsga2":
                        inner = optuna.samplers.NSGAIISampler(seed=s)
                    else:
                        inner = optuna.samplers.RandomSampler(seed=s)
                self._inner[trial.number] = inner
            return self._inner[trial.number]

        def infer_relative_search_space(self, study: Any, trial: Any) -> Any:
            return self._for(trial).infer_relative_search_space(study, trial)

        def sample_relative(self, study: Any, trial: Any, search_space: Any) -> Any:
            return self._for(trial).sample_relative(study, trial, search_space)

        def sample_independent(self, study: Any, trial: Any, param_name: str, param_distribution: Any) -> Any:
            return self._for(trial).sample_independent(study, trial, param_name, param_distribution)

        def before_trial(self, study: Any, trial: Any) -> None:
            self._for(trial).before_trial(study, trial)

        def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
            self._for(trial).after_trial(study, trial, state, values)
            self._inner.pop(trial.number, None)

        def reseed_rng(self) -> None:  # seeds derive from trial numbers; nothing to reseed
            pass

    return _TrialSeeded()
