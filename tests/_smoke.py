"""Data and recipe overrides for the fast search runs of tests/test_search.py and tests/test_cli.py.

The runs use the real CIFAR-10 copy in ../shared/data (or $GROWNET_SHARED_DATA) when present,
else a generated, learnable 10-class npz set of the same shape, so the tests never skip.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "grownet" / "recipes" / "smoke.toml"

#: grownet/recipes/smoke.toml cut down for tests: 700 training images (10 steps per epoch),
#: rounds of 2 epochs, lambda low enough that filters enter the support within a round; 3 checks (the
#: first two grow, the third is held by max_rounds), then one fine-tune epoch.
FAST = {
    "data.limit_train": 1000,
    "data.val_size": 300,
    "data.limit_test": 300,
    "optim.lam": 0.1,
    "grow.local_epochs": 2,
    "finetune.epochs": 1,
    "budget.max_rounds": 3,
}


def shared_data() -> Path | None:
    env = os.environ.get("GROWNET_SHARED_DATA")
    root = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"
    return root if (root / "cifar-10-batches-py").is_dir() else None


def smoke_dataset(tmp: Path) -> tuple[str, str | None]:
    """``(dataset, data_dir)`` for :func:`grownet.search.search`."""
    root = shared_data()
    if root is not None:
        return "cifar10", str(root)
    path = tmp / "synthetic.npz"
    if not path.exists():
        rng = np.random.default_rng(0)
        templates = rng.integers(0, 256, size=(10, 3, 32, 32))

        def split(n: int) -> tuple[np.ndarray, np.ndarray]:
            y = rng.integers(0, 10, size=n)
            x = 0.6 * templates[y] + 0.4 * rng.integers(0, 256, size=(n, 3, 32, 32))
            return x.astype(np.uint8), y.astype(np.int64)

        x_train, y_train = split(1000)
        x_test, y_test = split(300)
        np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return f"npz:{path}", None
