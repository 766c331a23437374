"""The one training loop (grownet.loop.fit): its history rows, the best validation state, the
per-step hook, and the divergence policy (a retry is the epoch trained again from the last good
state at the lower rate; past the retries the job stops at its last good state)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
import torch
from torch import nn

from grownet.cost import Cost
from grownet.errors import DivergenceError
from grownet.loop import Divergence, InMemory, LoopState, Phase, Trainee, cpu_state, fit
from grownet.runfolder import HISTORY_COLUMNS

#: A rate that makes SGD's weights overflow within two steps (a real non-finite loss).
BLOW_UP = 1e38
#: The devices the loop is checked on: the CPU, and CUDA where present.
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"))]


class Batches:
    """A small in-memory loader: ``n`` batches of 8 images whose order is a function of
    ``(seed, epoch)``, with the ``epoch`` / ``set_epoch`` protocol of grownet.data's loaders."""

    def __init__(self, n: int = 4, *, seed: int = 0, device: str = "cpu") -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(8 * n, 3, 8, 8, generator=g).to(device)
        self.y = torch.randint(0, 10, (8 * n,), generator=g).to(device)
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(8 * self.n, generator=torch.Generator().manual_seed(1000 * self.seed + self.epoch))
        self.epoch += 1
        for i in range(self.n):
            idx = order[8 * i: 8 * i + 8]
            yield self.x[idx], self.y[idx]


class Data:
    def __init__(self, device: str = "cpu") -> None:
        self.train, self.val = Batches(4, seed=0, device=device), Batches(2, seed=1, device=device)


def trainee(seed: int = 0, device: str = "cpu") -> Trainee:
    """A linear net with dropout (so the global RNG matters) and momentum SGD."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(3 * 8 * 8, 10)).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return Trainee(model, optimizer, Cost(macs=1920, params=1930, train_flops_per_sample=3 * 2 * 1920, layers={}))


def train(net: Trainee, data: Data, phase: Phase, divergence: Divergence, **kw) -> LoopState:
    state = LoopState()
    device = next(net.model.parameters()).device
    torch.manual_seed(7)  # the dropout masks' stream (CPU and CUDA)
    fit(net, data, state, phase, last_good=InMemory(net, state, data.train, device),
        divergence=divergence, clock=lambda: 0.0, **kw)
    return state


def test_rows_count_epochs_flops_and_keep_the_best_validation_state() -> None:
    net, data = trainee(), Data()
    kept: dict[int, dict[str, torch.Tensor]] = {}
    state = train(net, data, Phase("control", 3, lambda e, i: 0.1 / (1 + e), keep_best=True), Divergence(0, 0.5),
                  on_epoch_end=lambda row: kept.__setitem__(row["epoch"], cpu_state(net.model)))
    rows = state.history
    assert [list(r) for r in rows] == [list(HISTORY_COLUMNS)] * 3
    assert [r["epoch"] for r in rows] == [1, 2, 3] and [r["lr"] for r in rows] == [0.1, 0.05, 0.1 / 3]
    assert [r["train_flops"] for r in rows] == [net.cost.train_flops_per_sample * 32 * k for k in (1, 2, 3)]
    vals = [r["val_acc"] for r in rows]
    best = 1 + vals.index(max(vals))  # the first of equal bests
    assert (state.best_epoch, state.best_val) == (best, max(vals))
    assert all(torch.equal(net.best[k], kept[best][k]) for k in kept[best])


def test_on_step_is_called_after_every_step_with_the_job_step() -> None:
    net, data = trainee(), Data()
    steps: list[tuple[int, int]] = []
    state = train(net, data, Phase("grow", 2, lambda e, i: 0.1), Divergence(0, 0.5),
                  on_step=lambda i, g: steps.append((i, g)))
    assert steps == [(1, 1), (2, 2), (3, 3), (4, 4), (1, 5), (2, 6), (3, 7), (4, 8)]
    steps.clear()
    fit(net, data, state, Phase("grow", 3, lambda e, i: 0.1), start=2,  # a later call goes on counting
        last_good=InMemory(net, state, data.train, torch.device("cpu")), divergence=Divergence(0, 0.5),
        clock=lambda: 0.0, on_step=lambda i, g: steps.append((i, g)))
    assert steps == [(1, 9), (2, 10), (3, 11), (4, 12)]


@pytest.mark.parametrize("device", DEVICES)
def test_a_retry_is_the_epoch_trained_again_from_the_last_good_state_at_the_lower_rate(device: str) -> None:
    rate = lambda e, i: BLOW_UP if e == 1 else 0.1  # noqa: E731 - epoch 2 diverges
    net, data = trainee(device=device), Data(device)
    state = train(net, data, Phase("grow", 3, rate), Divergence(max_retries=2, factor=1e-39))
    # The same job with the lowered rate from epoch 2 on, without a divergence.
    ref, ref_data = trainee(device=device), Data(device)
    ref_state = train(ref, ref_data, Phase("grow", 3, lambda e, i: rate(e, i) * (1e-39 if e >= 1 else 1.0)),
                      Divergence(0, 0.5))
    assert state.history == ref_state.history
    assert all(torch.equal(a, b) for a, b in zip(net.model.state_dict().values(), ref.model.state_dict().values()))
    (event,) = state.events
    assert event["epoch"] == 2 and event["phase"] == "grow" and event["event"] == "divergence"
    assert "restored the last good state (epoch 1) and retrying with lr x 1e-39" in event["detail"]
    assert (state.retries, state.lr_scale) == (1, 1e-39)


def test_past_its_retries_the_job_stops_at_the_last_good_state_with_the_events_recorded() -> None:
    net, data = trainee(), Data()
    state = LoopState()
    last_good = InMemory(net, state, data.train, torch.device("cpu"))
    after_one: dict[str, torch.Tensor] = {}
    with pytest.raises(DivergenceError, match=r"the loss was non-finite 2 times \(run\.max_retries 1\); it stopped at "
                                              r"its last good state \(epoch 1\); lower finetune\.lr and start again"):
        fit(net, data, state, Phase("finetune", 3, lambda e, i: BLOW_UP if e >= 1 else 0.1), last_good=last_good,
            divergence=Divergence(max_retries=1, factor=0.5, lower="finetune.lr"), clock=lambda: 0.0,
            on_epoch_end=lambda row: after_one.update(cpu_state(net.model)))
    assert state.epoch == 1 and len(state.history) == 1
    assert [e["event"] for e in state.events] == ["divergence"] * 2 and "gave up after 1 retries" in state.events[1]["detail"]
    assert all(torch.equal(v, after_one[k]) for k, v in net.model.state_dict().items())
    assert data.train.epoch == 1  # the loader is back at the epoch that diverged


def test_no_command_keeps_a_training_loop_of_its_own() -> None:
    """search, baseline and ticket train only through fit (the ticket job through
    baseline.train_fixed, which calls it): none calls train_epoch itself."""
    import grownet

    root = Path(grownet.__file__).parent
    texts = {name: (root / name).read_text(encoding="utf-8")
             for name in ("search.py", "_search_job.py", "baseline.py", "ticket/_job.py")}
    assert [name for name, text in texts.items() if "train_epoch" in text] == []
    trains = [name for name, text in texts.items() if "fit(" in text or "train_fixed(" in text]
    assert trains == ["_search_job.py", "baseline.py", "ticket/_job.py"]  # search.py runs _search_job
