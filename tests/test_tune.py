"""grownet.tune: the search space, a 3-trial study on the default SQLite storage, resuming and
retrying trials (interrupted, or lost with their process), the outputs (trials.csv, Pareto
architectures, tune.html), masked storage passwords, and two concurrent `grownet tune`
workers sharing one study on a real PostgreSQL server (every trial completes exactly once)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pytest

from _smoke import FAST, REPO, SMOKE, smoke_dataset
from grownet.arch import Architecture
from grownet.cli import main
from grownet.errors import ConfigError, RunError, UsageError
from grownet.recipe import Recipe, load_recipe
from grownet.report import ModelPoint, pareto_front
from grownet.search import Reporter
from grownet.tune import (OPTIONAL, SEARCHED, TuneReporter, TuneSpace, load_space, make_sampler, mask_url, trial_rows, tune,
                          write_outputs)

optuna = pytest.importorskip("optuna")

#: The smoke recipe cut further: 300 training images (5 steps), one-epoch rounds, two checks,
#: one fine-tune epoch: a trial is a few seconds.
TINY = {**FAST, "data.limit_train": 500, "data.val_size": 200, "data.limit_test": 200, "budget.max_rounds": 2}
SPACE = {"local_epochs": 1, "tau": [0.3, 0.9], "lr": [0.02, 0.1]}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return smoke_dataset(tmp_path_factory.mktemp("data"))


def run_tune(out: Path, data, **kw):
    dataset, data_dir = data
    kw.setdefault("recipe", SMOKE)
    kw.setdefault("overrides", TINY)
    kw.setdefault("space", SPACE)
    return tune(dataset, out=out, data_dir=data_dir, seed=5, device="cpu", **kw)


def load(out: Path, name: str):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{out.resolve()}/study.db")


@pytest.fixture(scope="module")
def study3(tmp_path_factory, data):
    out = tmp_path_factory.mktemp("tune") / "t"
    result = run_tune(out, data, trials=3)
    return out, result


# ---- the search space ---------------------------------------------------------------------------


def test_default_space_covers_every_searched_key_within_the_recipe_ranges():
    recipe = load_recipe(SMOKE).with_overrides({"grow.local_epochs": 3})
    space = TuneSpace.from_dict(None, recipe=recipe)
    d = space.to_dict()
    assert list(d) == [k for k in SEARCHED if k not in OPTIONAL] == ["tau", "ratio", "min_add", "local_epochs", "deepen",
                                                                     "kappa", "mu", "lr"]
    assert d["local_epochs"] == {"low": 2, "high": 6, "log": False}  # half (rounded up) to twice the recipe's 3
    assert d["deepen"] == {"choices": [True, False]}
    assert d["lr"]["log"] and d["mu"]["log"] and d["kappa"]["log"] and not d["tau"]["log"]
    for p in space.params:  # every bound is a value the recipe accepts
        if p.kind != "bool":
            Recipe().with_overrides({p.path: p.low}).with_overrides({p.path: p.high})


@pytest.mark.parametrize("table, message", [
    ({"tau": [0.5, 1.5]}, r"^tune\.tau\[1\]: must be in \(0, 1\], got 1\.5$"),
    ({"lr": [0.2, 0.1]}, r"^tune\.lr: low 0\.2 is above high 0\.1$"),
    ({"min_add": [2, 4, 8]}, r"^tune\.min_add: must be \[low, high\] or a single value, got 3 values$"),
    ({"local_epochs": 0}, r"^tune\.local_epochs: must be >= 1, got 0$"),
    ({"deepen": "yes"}, r"^tune\.deepen: must be true or false, got 'yes'$"),
    ({"widen": [1, 2]}, (r"^tune\.widen: unknown key \(searched: tau, ratio, min_add, local_epochs, deepen, kappa, mu, "
                         r"lr, activity_cost_exponent\)$")),
    ({"activity_cost_exponent": [0, 5]}, r"^tune\.activity_cost_exponent\[1\]: must be in \[0, 4\], got 5$"),
])
def test_bad_ranges_are_rejected_naming_the_key(table, message):
    with pytest.raises(ConfigError, match=message):
        TuneSpace.from_dict(table, recipe=Recipe())


def test_a_single_value_pins_a_key(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text(SMOKE.read_text() + "\n[tune]\nlocal_epochs = 1\ndeepen = false\nmu = [20.0, 50]\n")
    space = load_space(recipe)
    d = space.to_dict()
    assert d["local_epochs"] == {"low": 1, "high": 1, "log": False}
    assert d["deepen"] == {"choices": [False]} and d["mu"] == {"low": 20.0, "high": 50.0, "log": True}
    bad = tmp_path / "bad.toml"
    bad.write_text("[tune]\ntau = [0.5, 2]\n")
    with pytest.raises(ConfigError, match=r"bad\.toml: tune\.tau\[1\]: must be in \(0, 1\], got 2"):
        load_space(bad)


def test_an_optional_key_is_searched_only_where_named_and_a_stored_space_without_it_reads_back_as_it_was():
    named = TuneSpace.from_dict({"activity_cost_exponent": [0, 1]}, recipe=Recipe())
    assert named.to_dict()["activity_cost_exponent"] == {"low": 0.0, "high": 1.0, "log": False}
    values = {k: (d["choices"][0] if "choices" in d else d["low"]) for k, d in named.to_dict().items()}
    values["activity_cost_exponent"] = 0.5
    assert named.suggest(optuna.trial.FixedTrial(values))["grow.activity_cost_exponent"] == 0.5
    default = TuneSpace.from_dict(None, recipe=Recipe())
    assert "activity_cost_exponent" not in default.to_dict()  # the recipe's value stays
    assert "grow.activity_cost_exponent" not in default.suggest(optuna.trial.FixedTrial(values))
    stored = default.to_dict()  # as a study written before the key existed holds it
    assert TuneSpace.from_stored(stored).to_dict() == stored
    assert TuneSpace.from_stored(named.to_dict()) == named


def test_a_study_that_searches_an_optional_key_stores_it_and_resumes_with_it(tmp_path, data):
    out = tmp_path / "o"
    first = run_tune(out, data, trials=0, space={**SPACE, "activity_cost_exponent": [0.0, 1.0]})
    config = load(out, first.study_name).user_attrs["grownet.tune"]
    assert config["space"]["activity_cost_exponent"] == {"low": 0.0, "high": 1.0, "log": False}
    assert "[0.0, 1.0]" in (out / "tune.html").read_text(encoding="utf-8")
    again = run_tune(out, data, trials=0, recipe=None, overrides=None, space=None)  # the study's own space
    assert again.study_name == first.study_name
    with pytest.raises(RunError, match=r"another search space \(tune\.activity_cost_exponent = \{.*\}, now None\)"):
        run_tune(out, data, trials=0)  # the same space without the key


def test_recipe_files_with_a_tune_table_still_load_as_recipes(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text(SMOKE.read_text() + "\n[tune]\ntau = [0.6, 0.9]\n")
    assert load_recipe(recipe) == load_recipe(SMOKE)


# ---- passwords -------------------------------------------------------------------------------------


def test_mask_url_hides_only_the_password():
    assert mask_url("postgresql://tuner:s3cr%40t@db.example:5432/grownet") == "postgresql://tuner:***@db.example:5432/grownet"
    assert mask_url("sqlite:////tmp/x/study.db") == "sqlite:////tmp/x/study.db"
    assert "hunter2" not in mask_url("not a url://me:hunter2@host/db")


def test_a_storage_that_cannot_be_reached_errors_without_the_password(tmp_path, capsys):
    pytest.importorskip("psycopg2")
    port = _free_port()  # nothing listens there
    code = main(["tune", "--trials", "1", "--out", str(tmp_path / "o"), "--quiet",
                 "--storage", f"postgresql://tuner:pw-Zq81x@127.0.0.1:{port}/grownet"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"grownet: error: cannot open study storage postgresql://tuner:***@127.0.0.1:{port}/grownet: ")
    assert "pw-Zq81x" not in err


# ---- a 3-trial study on SQLite ------------------------------------------------------------------------


def _summary(run_dir: str) -> dict:
    return json.loads((Path(run_dir) / "summary.json").read_text())


def test_three_trials_on_the_default_sqlite_storage(study3):
    out, result = study3
    assert (out / "study.db").is_file()
    assert result.storage == f"sqlite:///{out.resolve()}/study.db" and result.study_name.startswith("grownet-")
    assert [t.number for t in result.trials] == [0, 1, 2] and result.ran == (0, 1, 2)
    assert {t.state for t in result.trials} == {"COMPLETE"}
    for t in result.trials:
        # the objectives are the run folder's validation accuracy and MACs
        s = _summary(t.run_dir)
        assert (t.val_acc, t.macs) == (s["val_acc"], s["macs"]) and t.test_acc == s["test_acc"]
        assert Path(t.run_dir) == (out / "trials" / f"trial-{t.number:04d}").resolve()
        # the sampled values are the ones the search ran with
        recipe = json.loads((Path(t.run_dir) / "config.json").read_text())["recipe"]
        assert set(t.params) == set(SEARCHED) - OPTIONAL
        for key in t.params:
            section, name = SEARCHED[key].split(".")
            assert recipe[section][name] == t.params[key], key
        assert t.params["local_epochs"] == 1 and 0.3 <= t.params["tau"] <= 0.9 and 0.02 <= t.params["lr"] <= 0.1
        assert recipe["budget"]["max_rounds"] == 2 and recipe["data"]["limit_train"] == 500  # the recipe's budget
    assert len({t.params["tau"] for t in result.trials}) == 3  # sampled, not repeated


def test_the_sampler_is_seeded_by_trial_number(study3, tmp_path, data):
    """The same seed draws the same first parameters (no training: trials=0 after one ask)."""
    out, result = study3
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.sampler = make_sampler("tpe", seed=5)
    space = TuneSpace.from_dict(SPACE, recipe=load_recipe(SMOKE).with_overrides(TINY))
    first = study.ask()
    space.suggest(first)
    assert first.params == result.trials[0].params


def test_outputs_table_pareto_architectures_and_page(study3):
    out, result = study3
    with open(out / "trials.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["number"]) for r in rows] == [0, 1, 2]
    assert {"state", "pareto", "val_acc", "macs", "test_acc", "n_params", *SEARCHED, "run_dir"} <= set(rows[0])
    for r, t in zip(rows, result.trials):
        assert float(r["val_acc"]) == t.val_acc and float(r["macs"]) == t.macs and float(r["tau"]) == t.params["tau"]
    # the Pareto front, computed independently: no other trial with MACs <= and accuracy >=, one strict
    points = [ModelPoint("t", str(t.number), t.val_acc, None, t.macs, None, None, None, None) for t in result.trials]
    front = pareto_front(points, metric="val_acc")
    assert [t.pareto for t in result.trials] == front and any(front)
    assert [r["pareto"] for r in rows] == [str(f) for f in front]
    written = sorted(p.name for p in (out / "pareto").iterdir())
    assert written == [f"trial-{t.number:04d}" for t in result.trials if t.pareto]
    for t in result.pareto:
        arch = Architecture.from_json(out / "pareto" / f"trial-{t.number:04d}" / "architecture.json")
        assert arch.stages == Architecture.from_json(Path(t.run_dir) / "architecture.json").stages
    page = (out / "tune.html").read_text()
    assert page.count("<tr>") >= 2 * 3 and "Pareto front" in page and "data:image/svg+xml;base64," in page
    for t in result.pareto:
        assert f'href="pareto/trial-{t.number:04d}/architecture.json"' in page


def test_page_escapes_and_links_reports(tmp_path):
    """A study built by hand (no training): dominated points, links to existing reports only,
    every value escaped."""
    out = tmp_path / "o"
    (out / "trials" / "trial-0001").mkdir(parents=True)
    (out / "trials" / "trial-0001" / "report.html").write_text("<html></html>")
    study = optuna.create_study(storage=f"sqlite:///{out}/study.db", study_name="s", directions=["maximize", "minimize"])
    dist = {"tau": optuna.distributions.FloatDistribution(0.1, 1.0)}
    arch = Architecture("vgg", ((8,), (16,))).to_dict()
    for i, (acc, macs) in enumerate([(0.5, 2e6), (0.6, 1e6), (0.4, 3e6), (0.7, 4e6)]):
        attrs = {"grownet.run": f"trial-{i:04d}", "architecture": arch, "host": "<b>h</b>", "error": "<script>x()</script>"}
        study.add_trial(optuna.trial.create_trial(values=[acc, macs], params={"tau": 0.5}, distributions=dist, user_attrs=attrs))
    paths = write_outputs(study, out, storage_label="postgresql://u:***@h/db")
    assert [r.pareto for r in trial_rows(study)] == [False, True, False, True]  # (0.5, 2M) and (0.4, 3M) dominated by (0.6, 1M)
    assert sorted(p.name for p in paths["pareto"].iterdir()) == ["trial-0001", "trial-0003"]
    page = paths["html"].read_text()
    assert "<script>x()" not in page and "&lt;script&gt;x()&lt;/script&gt;" in page and "<b>h</b>" not in page
    assert 'href="trials/trial-0001/report.html"' in page and 'href="trials/trial-0003/report.html"' not in page
    assert "postgresql://u:***@h/db" in page


# ---- resume, retries ------------------------------------------------------------------------------


class _StopAtFirstEpoch(TuneReporter):
    class _R(Reporter):
        def epoch_end(self, row):
            raise KeyboardInterrupt

    def search_reporter(self, number):
        return self._R()


@pytest.mark.filterwarnings("ignore:.*retried_trial_number is experimental:optuna.exceptions.ExperimentalWarning")
def test_resume_retries_lost_and_interrupted_trials_and_adds_trials(study3, data):
    out, before = study3
    study = load(out, before.study_name)
    # a trial whose process died on this host (a finished child's pid) is failed and re-enqueued
    space = TuneSpace.from_dict(SPACE, recipe=load_recipe(SMOKE).with_overrides(TINY))
    lost = study.ask()
    space.suggest(lost)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    for k, v in {"host": socket.gethostname(), "pid": child.pid, "grownet.run": "trial-0003"}.items():
        lost.set_user_attr(k, v)
    again = run_tune(out, data, trials=3)  # the total is reached: nothing runs, the lost trial is retried
    assert again.ran == ()
    states = {t.number: t.state for t in again.trials}
    assert states == {0: "COMPLETE", 1: "COMPLETE", 2: "COMPLETE", 3: "FAIL", 4: "WAITING"}
    waiting = load(out, before.study_name).trials[4]
    assert waiting.user_attrs == {"grownet.run": "trial-0003"} and waiting.params == lost.params
    assert optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(waiting) == 3

    # the 4th trial starts in trial-0003 and is interrupted after its first epoch: failed and re-enqueued
    with pytest.raises(KeyboardInterrupt):
        run_tune(out, data, trials=4, reporter=_StopAtFirstEpoch())
    study = load(out, before.study_name)
    assert [t.state.name for t in study.trials[3:]] == ["FAIL", "FAIL", "WAITING"]
    assert (out / "trials" / "trial-0003" / "checkpoints" / "latest.json").is_file()

    # resuming adds the 4th trial (not a new study): the retry continues trial-0003's checkpoint
    result = run_tune(out, data, trials=4)
    assert result.ran == (5,)
    assert [(t.number, t.state) for t in result.trials if t.state == "COMPLETE"] == [(0, "COMPLETE"), (1, "COMPLETE"),
                                                                                    (2, "COMPLETE"), (5, "COMPLETE")]
    for old, new in zip(before.trials, result.trials):
        assert (old.params, old.val_acc, old.macs) == (new.params, new.val_acc, new.macs)
    t5 = result.trials[5]
    assert t5.params == lost.params and t5.run == "trial-0003"
    with open(Path(t5.run_dir) / "history.csv", newline="") as fh:
        epochs = [int(r["epoch"]) for r in csv.DictReader(fh)]
    assert epochs == list(range(1, len(epochs) + 1))
    assert "resumed" in (Path(t5.run_dir) / "grownet.log").read_text()
    assert (t5.val_acc, t5.macs) == (_summary(t5.run_dir)["val_acc"], _summary(t5.run_dir)["macs"])


@pytest.mark.filterwarnings("ignore:.*retried_trial_number is experimental:optuna.exceptions.ExperimentalWarning")
def test_a_trial_whose_heartbeat_stops_is_failed_and_re_enqueued(tmp_path, data):
    """A worker on another machine stops beating: after 4 heartbeats of silence the next
    claim fails its trial and enqueues it again (no training: the total is 0)."""
    out = tmp_path / "o"
    first = run_tune(out, data, trials=0, heartbeat=1)  # creates the study and its configuration
    assert first.trials == () and (out / "tune.html").is_file() and (out / "trials.csv").read_text().startswith("number,")
    url = f"sqlite:///{out.resolve()}/study.db"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        storage = optuna.storages.RDBStorage(url, heartbeat_interval=1)
        study = optuna.load_study(study_name=first.study_name, storage=storage)
        trial = study.ask()
    trial.suggest_float("tau", 0.3, 0.9)
    trial.set_user_attr("host", "another-machine")
    storage.record_heartbeat(trial._trial_id)
    time.sleep(6.0)  # > 4 s of silence (heartbeat times are stored to the second)
    result = run_tune(out, data, trials=0, heartbeat=1)
    assert [(t.number, t.state) for t in result.trials] == [(0, "FAIL"), (1, "WAITING")]
    again = optuna.load_study(study_name=first.study_name, storage=url).trials[1]
    assert again.user_attrs == {"grownet.run": "trial-0000"}  # not the lost worker's host
    assert again.params == {"tau": trial.params["tau"]}
    assert optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(again) == 0


def test_a_study_refuses_another_configuration(study3, data):
    out, before = study3
    with pytest.raises(RunError, match=r"was started with another recipe \(budget\.max_rounds = 2, now 3\)"):
        run_tune(out, data, trials=3, overrides={**TINY, "budget.max_rounds": 3})
    with pytest.raises(RunError, match=r"was started with another search space \(tune\.tau = "):
        run_tune(out, data, trials=3, space={**SPACE, "tau": [0.4, 0.9]})
    with pytest.raises(UsageError, match=r"^--trials: must be a non-negative integer"):
        run_tune(out, data, trials=-1)


def test_cli_trials_zero_rewrites_the_outputs_from_the_study(study3, capsys):
    out, before = study3
    (out / "tune.html").unlink()
    assert main(["tune", "--trials", "0", "--out", str(out), "--study-name", before.study_name, "--quiet"]) == 0
    assert (out / "tune.html").is_file()


# ---- PostgreSQL: two workers, one study -------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return candidates[-1].parent if candidates else None


PG_PASSWORD = "pg-Secret-7731"


@pytest.fixture(scope="module")
def postgres():
    """A throw-away PostgreSQL server on 127.0.0.1 and a free port, user ``tuner`` with a
    password (scram). Skips where PostgreSQL or psycopg2 is not installed."""
    pytest.importorskip("psycopg2", reason="psycopg2 is not installed (pip install psycopg2-binary)")
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (apt-get install -y postgresql)")
    root = Path(tempfile.mkdtemp(prefix="grownet-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        try:
            import pwd

            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no postgres user to run the server")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    (root / "pw").write_text(PG_PASSWORD)
    if run_as:
        os.chown(root / "pw", pw.pw_uid, pw.pw_gid)
    port = _free_port()
    data = root / "data"
    subprocess.run([*run_as, str(bindir / "initdb"), "-D", str(data), "-U", "tuner", f"--pwfile={root / 'pw'}",
                    "-A", "scram-sha-256", "--no-sync"], check=True, capture_output=True)
    subprocess.run([*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-t", "60", "-o",
                    f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off", "start"], check=True, capture_output=True)
    try:
        yield f"postgresql://tuner:{PG_PASSWORD}@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def _worker_argv(out: Path, data, url: str) -> list[str]:
    dataset, data_dir = data
    argv = [sys.executable, "-m", "grownet", "tune", "--dataset", dataset, "--recipe", str(SMOKE), "--trials", "4",
            "--storage", url, "--study-name", "shared", "--out", str(out), "--seed", "5", "--device", "cpu", "--quiet"]
    if data_dir:
        argv += ["--data-dir", data_dir]
    for key, value in {**TINY, "grow.local_epochs": 1}.items():
        argv += [f"--{key}", str(value)]
    argv += ["--tune.local_epochs", "1", "--tune.tau", "0.3,0.9", "--tune.lr", "0.02,0.1"]
    return argv


def test_two_workers_on_postgresql_complete_every_trial_exactly_once(postgres, data, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    outs = [tmp_path / "a", tmp_path / "b"]
    procs = [subprocess.Popen(_worker_argv(o, data, postgres), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for o in outs]
    try:
        logs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (so, se) in zip(procs, logs):
        assert p.returncode == 0, se[-3000:]
        assert PG_PASSWORD not in so + se
    study = optuna.load_study(study_name="shared", storage=postgres.replace("postgresql://", "postgresql+psycopg2://"))
    trials = study.trials
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4  # none lost, none failed, none extra
    runs = {o.name: sorted(p.name for p in (o / "trials").iterdir()) if (o / "trials").is_dir() else [] for o in outs}
    assert sorted(runs["a"] + runs["b"]) == ["trial-0000", "trial-0001", "trial-0002", "trial-0003"]  # each ran once
    for t in trials:
        s = _summary(t.user_attrs["run_dir"])
        assert t.values == [s["val_acc"], s["macs"]]
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 4
    for o in outs:  # the password is in no file either worker wrote
        for f in o.rglob("*"):
            if f.is_file():
                assert PG_PASSWORD.encode() not in f.read_bytes(), f
        assert "postgresql://tuner:***@127.0.0.1" in (o / "tune.html").read_text()
