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


def files(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


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


def test_a_refused_start_of_an_existing_run_cuts_its_log_back_to_what_it_was(tmp_path: Path) -> None:
    """A resume that fails before it starts (its data gone, say) leaves the log as it found it,
    byte for byte, although the failure was logged while the body ran."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "grownet.log").write_bytes(b"the run's own lines\n")
    before = files(out)
    with pytest.raises(ConfigError):
        with job_folder(out, device=CPU):
            log.info("resumed at epoch 3")
            raise ConfigError("the data is gone")
    assert files(out) == before


def test_remove_stale_deletes_temporaries_and_checkpoints_an_uninterrupted_run_would_not_hold(tmp_path: Path) -> None:
    from grownet.files import atomic_write_text

    folder = JobFolder(tmp_path / "run")
    folder.path.mkdir()
    for seq in range(1, 4):  # ckpt-000002 and ckpt-000003 kept, as save_checkpoint keeps them
        folder.save_checkpoint({"seq": seq})
    atomic_write_text(folder.config, "{}\n")  # a real temporary file's name, for the pattern below
    kept = files(folder.path)
    stale = [folder.checkpoints / ".ckpt-000004.pt.a1b2c3d4.tmp", folder.checkpoints / ".latest.json.zz_zz_zz.tmp",
             folder.path / ".history.csv.0123abcd.tmp", folder.checkpoints / "ckpt-000004.pt",
             folder.checkpoints / "ckpt-000001.pt"]
    for path in stale:
        path.write_text("half written")
    (folder.path / "notes.tmp").write_text("the user's")  # not an atomic writer's name: kept
    (folder.path / "controls" / "seed").mkdir(parents=True)
    (folder.path / "controls" / "seed" / ".summary.json.a1b2c3d4.tmp").write_text("another job's")

    assert sorted(folder.remove_stale()) == sorted(stale)

    assert files(folder.path) == {**kept, "notes.tmp": b"the user's", "controls/seed/.summary.json.a1b2c3d4.tmp": b"another job's"}
    assert folder.load_checkpoint() == {"seq": 3}
