"""grownet.distributed: disjoint batch shards; a data-parallel DessiLBI epoch on two gloo
processes equals the single-process epoch on the whole batches (W, V, Γ, statistics) and stops
on every rank at a non-finite loss on one; a two-rank smoke search (interrupted, resumed) ends
with one architecture on both ranks and writes one run folder, as does `torchrun -m grownet`."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from _smoke import FAST, REPO, SMOKE, smoke_dataset
from grownet.distributed import LOCAL, ShardedLoader, init_distributed, launch
from grownet.errors import UsageError
from grownet.progress import Reporter

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")

#: Smoke search for two ranks: batch 64 = 2 x 32; two rounds of two epochs (the first check
#: widens every layer, the second is held by max_rounds) and a fine-tune epoch.
DDP = {**FAST, "data.limit_test": 200, "budget.max_rounds": 2}
RUN_FILES = {"config.json", "architecture.json", "weights.pt", "history.csv", "rounds.json", "summary.json",
             "grownet.log", "checkpoints"}


def test_shards_are_disjoint_contiguous_and_cover_every_batch():
    batches = [(torch.arange(10).view(10, 1).float(), torch.arange(10)), (torch.arange(10, 17).view(7, 1).float(), torch.arange(10, 17))]
    shards = [list(ShardedLoader(batches, r, 3)) for r in range(3)]
    for b, (x, y) in enumerate(batches):
        parts = [shards[r][b][1] for r in range(3)]
        assert torch.equal(torch.cat(parts), y)  # disjoint, in order, nothing left out
        assert [len(p) for p in parts] == ([4, 3, 3] if b == 0 else [3, 2, 2])
    assert len(ShardedLoader(batches, 1, 3)) == 2
    with pytest.raises(UsageError, match=r"rank 3 is not in \[0, 3\)"):
        ShardedLoader(batches, 3, 3)


def test_single_process_context_changes_nothing():
    model = nn.Linear(2, 2)
    assert LOCAL.wrap(model) is model and LOCAL.sync_fn is None and LOCAL.share(lambda: 7) == 7 and LOCAL.is_main


def test_init_outside_torchrun_is_a_usage_error(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(UsageError, match=r"^--ddp: start the processes with torchrun --nproc_per_node N -m grownet search"):
        init_distributed("cpu")


# ---- one data-parallel epoch on two processes -------------------------------------------------------


def _tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, bias=False), nn.ReLU(), nn.Conv2d(6, 8, 3, bias=False), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))


def _batches(n: int = 4, size: int = 16, *, bad: tuple[int, int] | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    out = []
    for b in range(n):
        x = torch.randn(size, 3, 8, 8, generator=g)
        if bad is not None and b == bad[0]:
            x[bad[1]] = float("inf")  # one sample of this batch makes its shard's loss non-finite
        out.append((x, torch.randint(0, 4, (size,), generator=g)))
    return out


def _epoch(model: nn.Module, loader, dist) -> dict:
    from grownet.optim import DessiLBI, dessilbi_param_groups
    from grownet.train import train_epoch

    opt = DessiLBI(dessilbi_param_groups(model), lr=0.1, kappa=1.0, mu=2.0, lam=0.05, momentum=0.9)
    stats = train_epoch(dist.wrap(model), loader, opt, sync=dist.sync_fn)
    state = {n: {k: v.clone() for k, v in opt.state[p].items() if torch.is_tensor(v)} for n, p in model.named_parameters()}
    return {"stats": stats, "params": {n: p.detach().clone() for n, p in model.named_parameters()}, "state": state}


def _epochs_on_this_rank(dist, out: Path) -> None:
    result = {"rank": dist.rank, "ddp": _epoch(_tiny_model(), ShardedLoader(_batches(), dist.rank, 2), dist)}
    # sample 12 of batch 2 is in rank 1's shard only: both ranks must stop there, before its step
    result["nan"] = _epoch(_tiny_model(), ShardedLoader(_batches(bad=(2, 12)), dist.rank, 2), dist)["stats"]
    torch.save(result, out / f"rank{dist.rank}.pt")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return smoke_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def ranks(tmp_path_factory, data):
    """Two gloo processes (started once for the module): their results in rank0/1.pt/.json."""
    out = tmp_path_factory.mktemp("ddp")
    launch(_rank_main, 2, str(out), *data)
    return out


def test_a_data_parallel_epoch_equals_the_whole_batch_epoch(ranks):
    r0, r1 = (torch.load(ranks / f"rank{r}.pt", weights_only=False) for r in range(2))
    ref = _epoch(_tiny_model(), _batches(), LOCAL)
    for name, p in ref["params"].items():
        assert torch.equal(r0["ddp"]["params"][name], r1["ddp"]["params"][name]), name  # identical on both ranks
        torch.testing.assert_close(r0["ddp"]["params"][name], p, rtol=1e-5, atol=1e-6)
        for key in ("V", "gamma", "momentum_buffer"):
            if key in ref["state"][name]:
                assert torch.equal(r0["ddp"]["state"][name][key], r1["ddp"]["state"][name][key]), (name, key)
                torch.testing.assert_close(r0["ddp"]["state"][name][key], ref["state"][name][key], rtol=1e-5, atol=1e-6)
    assert any(bool(v["gamma"].ne(0).any()) for v in ref["state"].values() if "gamma" in v)  # Γ has a support to compare
    s0, s1, s = r0["ddp"]["stats"], r1["ddp"]["stats"], ref["stats"]
    assert s0.samples == s1.samples == s.samples == 64  # the statistics cover both ranks' samples
    assert s0.loss == s1.loss and abs(s0.loss - s.loss) < 1e-6 and s0.acc == s1.acc == s.acc
    n0, n1 = r0["nan"], r1["nan"]
    assert not n0.finite and not n1.finite and n0.samples == n1.samples == 32  # both stopped at batch 2 of 4


# ---- the smoke search on two ranks ----------------------------------------------------------------------


class _StopAfterEpoch(Reporter):
    """Ctrl-C after a given epoch (every rank gets it, as from torchrun)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def epoch_end(self, row):
        if row["epoch"] == self.epoch:
            raise KeyboardInterrupt


def _rank_main(out: str, dataset: str, data_dir: str | None) -> None:
    """One rank of the two-process group: the epoch comparisons, then the smoke search."""
    from grownet.search import SearchInterrupted, search

    torch.set_num_threads(1)
    dist, device = init_distributed("cpu", timeout_s=120)  # a broken collective fails the test, not hangs it
    run = Path(out) / "run"
    kw = dict(recipe=SMOKE, overrides=DDP, out=run, data_dir=data_dir, seed=4, device=device, dist=dist)
    try:
        _epochs_on_this_rank(dist, Path(out))
        try:  # every rank is stopped after epoch 3, in the grown net's round (a Ctrl-C reaches every process)
            search(dataset, reporter=_StopAfterEpoch(3), **kw)
            raise AssertionError("not interrupted")
        except SearchInterrupted:
            pass
        result = search(dataset, resume=True, **kw)
        (Path(out) / f"rank{dist.rank}.json").write_text(json.dumps({
            "arch": result.arch.to_dict(), "val_acc": result.val_acc, "test_acc": result.test_acc, "epochs": result.epochs,
            "run_dir": str(result.run_dir)}))
    finally:
        dist.close()




def test_two_rank_search_ends_with_one_architecture_and_one_run_folder(ranks):
    r0, r1 = (json.loads((ranks / f"rank{r}.json").read_text()) for r in range(2))
    assert r0 == r1  # same architecture, accuracies, epochs and run folder on both ranks
    run = ranks / "run"
    assert r0["run_dir"] == str(run)
    assert {p.name for p in ranks.iterdir()} == {"run", "rank0.json", "rank1.json", "rank0.pt", "rank1.pt"}
    assert RUN_FILES <= {p.name for p in run.iterdir()} <= RUN_FILES | {"report.html"}  # no .lock once finished
    summary = json.loads((run / "summary.json").read_text())
    assert summary["val_acc"] == r0["val_acc"] and summary["final_arch"]["stages"] == r0["arch"]["stages"]
    rounds = json.loads((run / "rounds.json").read_text())
    assert [r["grew"] for r in rounds] == [True, False]  # the net grew while data-parallel
    assert summary["final_arch"]["stages"] != summary["seed_arch"]["stages"]
    with open(run / "history.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == list(range(1, r0["epochs"] + 1))  # resumed, none repeated
    assert "resumed" in (run / "grownet.log").read_text()


def test_torchrun_search_matches_the_spawned_run(ranks, data, tmp_path):
    """`torchrun --nproc_per_node 2 -m grownet search` (uninterrupted) ends where the
    interrupted-and-resumed two-rank run ended: resume is exact under DDP too."""
    dataset, data_dir = data
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "grownet",
            "search", "--dataset", dataset, "--recipe", str(SMOKE), "--out", str(out), "--seed", "4", "--device", "cpu",
            "--quiet"]
    if data_dir:
        argv += ["--data-dir", data_dir]
    for key, value in DDP.items():
        argv += [f"--{key}", str(value)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and its workers
        proc.communicate()
        pytest.fail("torchrun search did not finish in 300 s")
    assert proc.returncode == 0, err[-3000:]
    spawned = json.loads((ranks / "run" / "summary.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final_arch"]["stages"] == spawned["final_arch"]["stages"]
    assert (summary["val_acc"], summary["test_acc"], summary["epochs"]) == (spawned["val_acc"], spawned["test_acc"], spawned["epochs"])
    assert json.loads((out / "config.json").read_text())["recipe"] == json.loads((ranks / "run" / "config.json").read_text())["recipe"]
