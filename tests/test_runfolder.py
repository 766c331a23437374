"""grownet.runfolder.job_folder: the one way a job opens its folder (create, lock, check, log,
RNG scope) and what a refused or failed start leaves behind."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest
import torch

from grownet.errors import ConfigError, RunError
from grownet.runfolder import JobFolder, RunLock, job_folder

CPU = torch.device("cpu")
log = logging.getLogger("grownet.test")


def files(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): p.read_text() for p in sorted(path.rglob("*")) if p.is_file()}


def test_the_body_runs_locked_with_its_log_and_the_callers_rng_streams_kept(tmp_path: Path) -> None:
    out = tmp_path / "a" / "run"
    random.seed(1)
    expected = random.random()
    random.seed(1)
    with job_folder(out, device=CPU) as folder:
        assert isinstance(folder, JobFolder) and (out / ".lock").is_file()
        with pytest.raises(RunError, match="is in use by another grownet process"):
            RunLock(out).__enter__()
        log.info("inside the job")
        random.seed(99)  # the job seeds the global RNGs as it likes
        folder.write_json(folder.config, {"k": 1})
        folder.start()
    assert random.random() == expected  # ... and the caller's stream goes on as if it had not run
    assert not (out / ".lock").exists()
    assert "inside the job" in (out / "grownet.log").read_text()


def test_a_failure_before_the_start_leaves_nothing_and_its_error_is_logged(tmp_path: Path) -> None:
    out = tmp_path / "new" / "run"
    with pytest.raises(ConfigError, match="bad key"):
        with job_folder(out, device=CPU) as folder:
            folder.write_json(folder.config, {"k": 1})
            raise ConfigError("bad key; fix it")
    assert not (tmp_path / "new").exists()  # the folders it made are gone too


def test_a_failure_after_the_start_keeps_the_files_with_the_error_in_the_log(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with pytest.raises(ConfigError):
        with job_folder(out, device=CPU) as folder:
            folder.write_json(folder.config, {"k": 1})
            folder.start()
            raise ConfigError("late failure")
    assert (out / "config.json").is_file() and "late failure" in (out / "grownet.log").read_text()


def test_a_refusal_in_check_leaves_an_existing_folder_as_it_was(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}")
    (out / "grownet.log").write_text("the old run's log\n")
    before = files(out)
    with pytest.raises(RunError, match="already exists; pass --resume"):
        with job_folder(out, device=CPU, check=lambda f: f.prepare(resume=False, force=False)):
            pytest.fail("the body ran")
    assert files(out) == before


def test_a_forced_start_that_fails_puts_the_replaced_run_back(tmp_path: Path) -> None:
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "config.json").write_text('{"old": true}')
    (out / "checkpoints" / "latest.json").write_text("{}")
    before = files(out)
    with pytest.raises(ConfigError):
        with job_folder(out, device=CPU, check=lambda f: f.prepare(resume=False, force=True)) as folder:
            assert sorted(p.name for p in out.iterdir()) == [".lock", ".replaced", "grownet.log"]
            folder.write_json(folder.config, {"new": True})
            raise ConfigError("the new run's data is bad")
    assert files(out) == before
    with job_folder(out, device=CPU, check=lambda f: f.prepare(resume=False, force=True)) as folder:
        folder.start()  # this one starts: the replaced run goes
    assert not (out / ".replaced").exists() and not (out / "config.json").exists()


def test_a_started_job_such_as_a_resume_keeps_what_it_found(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "history.csv").write_text("old rows\n")
    with pytest.raises(ConfigError):
        with job_folder(out, device=CPU, started=True):
            raise ConfigError("failed while resuming")
    assert (out / "history.csv").read_text() == "old rows\n" and (out / "grownet.log").is_file()
