"""The run-folder reader, kept here for the report's modules: it lives in
:mod:`grownet.runfolder` (writer and reader of one folder layout)."""

from __future__ import annotations

from ..runfolder import CONTROL_NAMES, ControlRecord, RunRecord, load_control, load_run, read_history, read_json

__all__ = ["CONTROL_NAMES", "ControlRecord", "RunRecord", "load_control", "load_run", "read_history", "read_json"]
