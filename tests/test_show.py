"""``grownet show``: per-layer records from grownet.cost and a meta forward pass, a run's
seed-to-final widths, the table on stdout, and one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from _runfolder import smoke_run
from grownet.arch import Architecture
from grownet.cli import main
from grownet.cost import cost
from grownet.errors import ArchitectureError, RunError
from grownet.show import LayerRow, WidthChange, show_info

DATA = Path(__file__).resolve().parent / "data"
RESNET = DATA / "resnet_grown.json"  # stem 16; stages 20 [24, 16, 16], 36 [32, 40], 64 [72, 64, 64, 64]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return smoke_run(tmp_path_factory)


def test_rows_carry_grownet_cost_per_layer_and_their_shares(run_dir):
    info = show_info(run_dir)
    c = cost(info.arch)
    assert info.arch == Architecture.from_json(run_dir / "architecture.json")
    assert [r.layer for r in info.layers] == [*info.arch.layer_widths(), "classifier"]
    assert {r.layer: (r.macs, r.params) for r in info.layers} == {k: (v.macs, v.params) for k, v in c.layers.items()}
    assert (info.macs, info.params) == (c.macs, c.params)
    assert sum(r.macs for r in info.layers) == c.macs and sum(r.params for r in info.layers) == c.params
    for r in info.layers:
        assert r.macs_share == r.macs / c.macs and r.params_share == r.params / c.params


def test_a_run_shows_its_seed_to_final_widths_and_accuracies(run_dir):
    info = show_info(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    seed = Architecture.from_dict(summary["seed_arch"]).layer_widths()
    final = info.arch.layer_widths()
    assert info.growth == [WidthChange(layer, seed.get(layer), width) for layer, width in final.items()]
    assert any(g.final > g.seed for g in info.growth if g.seed is not None)  # the smoke run grows
    assert (info.val_acc, info.test_acc) == (summary["val_acc"], summary["test_acc"])
    assert info.source == run_dir


def test_vgg_kinds_and_output_shapes(run_dir):
    info = show_info(run_dir)
    size = info.arch.input_size
    for s, stage in enumerate(info.arch.stages):  # a 2x2 max-pool between stages halves the side
        for l, width in enumerate(stage):
            row = next(r for r in info.layers if r.layer == f"stages.{s}.{l}")
            assert (row.kind, row.width, row.output) == ("conv3x3", width, (width, size >> s, size >> s))
    last, head = info.arch.stages[-1][-1], info.layers[-1]  # a linear layer last -> 10 classes
    assert head == LayerRow("classifier", "linear", 10, (10,), 10 * last, 10 * last + 10, head.macs_share, head.params_share)


def test_resnet_kinds_name_strides_and_the_projection_shortcut():
    info = show_info(RESNET)
    rows = {r.layer: r for r in info.layers}
    assert (rows["stem"].kind, rows["stem"].output) == ("conv3x3", (16, 32, 32))
    assert (rows["stages.0.0"].kind, rows["stages.0.0"].output) == ("conv3x3", (24, 32, 32))
    assert (rows["stages.0"].kind, rows["stages.0"].output) == ("residual: 3×conv3x3 + conv1x1", (20, 32, 32))
    assert (rows["stages.1.0"].kind, rows["stages.1.0"].output) == ("conv3x3/2", (32, 16, 16))
    assert (rows["stages.1"].kind, rows["stages.1"].output) == ("residual: 2×conv3x3 + conv1x1/2", (36, 16, 16))
    assert (rows["stages.2"].kind, rows["stages.2"].width) == ("residual: 4×conv3x3 + conv1x1/2", 64)
    assert info.growth == [] and info.val_acc is None and info.source == RESNET
    assert show_info(Architecture.from_json(RESNET)).layers == info.layers


def test_without_a_projection_shortcut_the_residual_is_the_blocks_alone():
    arch = Architecture("resnet", [{"width": 16, "blocks": [16, 16]}], stem=16)
    assert [r.kind for r in show_info(arch).layers] == ["conv3x3", "conv3x3", "conv3x3", "residual: 2×conv3x3", "linear"]


def test_show_prints_grownet_cost_s_macs(capsys):
    c = cost(Architecture.from_json(RESNET))
    assert main(["show", "--quiet", str(RESNET)]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[0].split("\t")
    assert header == ["layer", "kind", "width", "output", "macs", "macs_share", "params", "params_share"]
    rows = {cells[0]: dict(zip(header, cells)) for cells in (line.split("\t") for line in lines[1:])}
    for layer, lc in c.layers.items():
        assert (int(rows[layer]["macs"]), int(rows[layer]["params"])) == (lc.macs, lc.params)
    assert rows["stages.1"]["output"] == "36×16×16"
    assert (int(rows["total"]["macs"]), int(rows["total"]["params"])) == (c.macs, c.params)
    assert main(["show", str(RESNET)]) == 0
    out = capsys.readouterr().out
    assert f"{c.macs:,} MACs, {c.params:,} params" in out and "residual:" in out and "49.93M" in out


def test_show_of_a_run_draws_the_seed_to_final_table(run_dir, capsys):
    assert main(["show", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "seed → final widths" in out and "test acc" in out
    assert main(["show", "--quiet", str(run_dir)]) == 0
    out = capsys.readouterr().out
    growth = out.split("\n\n")[1].splitlines()
    assert growth[0] == "layer\tseed\tfinal"
    assert len(growth) == 1 + len(show_info(run_dir).arch.layer_widths())


def test_bad_sources_are_one_line_errors(tmp_path, run_dir, capsys):
    (tmp_path / "empty").mkdir()
    half = tmp_path / "half"
    shutil.copytree(run_dir, half)
    (half / "architecture.json").unlink()
    (tmp_path / "bad.json").write_text("[1, 2]", encoding="utf-8")
    cases = {
        str(tmp_path / "nope.json"): "nope.json: file not found",
        str(tmp_path / "empty"): "config.json: missing; is ",
        str(half): "half: no architecture.json in this folder (has the run finished?)",
        str(tmp_path / "bad.json"): "bad.json: architecture must be a JSON object, got list",
    }
    for source, message in cases.items():
        assert main(["show", source]) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and captured.err.count("\n") == 1 and message in captured.err, captured.err
    with pytest.raises(ArchitectureError):
        show_info(half)
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    del summary["seed_arch"]
    broken = tmp_path / "broken"
    shutil.copytree(run_dir, broken)
    (broken / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    with pytest.raises(RunError, match=r"summary\.json: seed_arch: missing or invalid"):
        show_info(broken)
