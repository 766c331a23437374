"""The run report: info records checked against the run files, the page checked for every
section and figure, for self-containment (no URL of another host) and for escaping."""

from __future__ import annotations

import base64
import html
import json
import re
import shutil
import tomllib
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest

from grownet.arch import Architecture
from grownet.cost import cost
from grownet.errors import RunError, UsageError
from grownet.report import (
    SECTIONS,
    ModelPoint,
    activity_info,
    arch_info,
    controls_info,
    curves_info,
    decision_info,
    growth_info,
    load_run,
    pareto_front,
    render_report,
    repro_info,
    round_cost_info,
    summary_info,
    write_report,
)
from grownet.report.formatting import duration, pct, ratio, si
from grownet.report.html import Safe, esc, render, table

from _runfolder import FINAL, ROUND2, ROUND3, SEED, XSS, smoke_run, write_control, write_synthetic_run

_URL_ATTRS = {"src", "href", "xlink:href", "action", "formaction", "poster", "data", "srcset", "background", "ping"}


class _Refs(HTMLParser):
    """Collects every URL-bearing attribute value and every CSS url()/@import of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._in_style = tag == "style"
        for name, value in attrs:
            if name in _URL_ATTRS:
                self.urls.append(value or "")
            elif name == "style":
                self._css(value or "")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        self._in_style = False

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self._css(data)

    def _css(self, css: str) -> None:
        self.urls += [u.strip("'\" ") for u in re.findall(r"url\(([^)]*)\)", css)]
        self.urls += ["@import"] * css.count("@import")


def external_urls(page: str) -> list[str]:
    """Every URL in ``page`` (HTML or SVG) that is neither a data URI nor an in-page anchor."""
    parser = _Refs()
    parser.feed(page)
    parser.close()
    return [u for u in parser.urls if not (u.startswith("data:") or u.startswith("#"))]


HOSTILE_NAME = "vgg <img src=x onerror=alert(1)>"
IMG_SVG = re.compile(r'<img src="data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)"')


def figures(html: str) -> list[str]:
    """The SVG documents of every embedded figure."""
    return [base64.b64decode(b).decode("utf-8") for b in IMG_SVG.findall(html)]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # A hostile folder name: it shows in the title and footer, so it must be escaped there.
    run = write_synthetic_run(tmp_path_factory.mktemp("runs") / HOSTILE_NAME)
    write_control(run, "scratch", FINAL, val_acc=0.62, test_acc=0.61)
    write_control(run, "seed", SEED, val_acc=0.55, test_acc=0.54)
    return run


@pytest.fixture(scope="module")
def report(run_dir: Path) -> str:
    return write_report(run_dir).read_text(encoding="utf-8")


# ---- the page ------------------------------------------------------------------------------------


def test_report_is_written_into_the_run_folder(run_dir: Path, report: str) -> None:
    assert (run_dir / "report.html").read_text(encoding="utf-8") == report
    assert report.startswith("<!DOCTYPE html>")


def test_report_holds_every_section(report: str) -> None:
    for anchor, label in SECTIONS:
        assert f'<section id="{anchor}">' in report
        assert f'<a href="#{anchor}">{esc(label)}</a>' in report
    for text in ("Summary", "Growth timeline", "Filter activity", "Training curves", "MACs and parameters per round",
                 "Final architecture", "Controls", "Decision log", "Reproducibility"):
        assert f"<h2>{text}</h2>" in report


def test_report_embeds_every_figure_as_valid_svg(report: str) -> None:
    svgs = figures(report)
    # growth, activity, curves, cost per round, controls (accuracy vs MACs)
    assert len(svgs) == 5
    assert report.count("<img ") == 5
    for svg in svgs:
        root = ET.fromstring(svg)
        assert root.tag == "{http://www.w3.org/2000/svg}svg"
        assert float(root.get("width").removesuffix("pt")) > 100 and float(root.get("height").removesuffix("pt")) > 50
    # Every figure has a text alternative.
    assert len(re.findall(r'<img src="data:[^"]+" alt="[^"]+">', report)) == 5


def test_report_requests_nothing_from_any_host(report: str) -> None:
    assert external_urls(report) == []
    assert "<script" not in report.lower() and "<link" not in report.lower() and "<iframe" not in report.lower()
    # The page forbids every fetch; inline styles and data-URI images are all it allows.
    csp = html.unescape(re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)">', report).group(1))
    assert csp.startswith("default-src 'none'; img-src data:; style-src 'unsafe-inline';")
    for svg in figures(report):
        assert external_urls(svg) == []


def test_url_check_catches_external_references() -> None:
    page = ('<img src="https://example.org/x.png"><a href=http://h/>x</a><style>a{background:url("//cdn/x")}</style>'
            '<p style="background: url(y.png)">src=z</p><svg><image xlink:href="i.png"/></svg>')
    assert external_urls(page) == ["https://example.org/x.png", "http://h/", "//cdn/x", "y.png", "i.png"]
    assert external_urls('<img src="data:image/png;base64,AA=="><a href="#summary">src=x href=y</a>') == []


def test_report_escapes_run_text(run_dir: Path, report: str) -> None:
    assert XSS not in report
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in report  # the class name, shown as text
    # command line, data_dir, decision reasons, event text: all shown escaped
    assert "--tag &lt;i&gt;x&lt;/i&gt;" in report and "<i>x</i>" not in report
    assert '&quot;runs/a&amp;b&quot;' in report
    assert "/data/&lt;b&gt;cifar&lt;/b&gt;" in report
    assert "&lt;widen&gt;" in report and "<widen>" not in report
    assert "&lt;nan&gt;" in report
    assert "<img src=x" not in report and esc(HOSTILE_NAME) in report


def test_report_is_printable_and_fits_a_laptop_screen(report: str) -> None:
    assert "@media print" in report and "@page" in report
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in report
    assert "max-width: 1080px" in report


def test_report_is_regenerated_identically_from_the_folder_alone(run_dir: Path, report: str, tmp_path: Path) -> None:
    # A copy of the folder elsewhere gives the same page (deterministic figures, no clock),
    # but for the folder's path in the footer.
    moved = Path(shutil.copytree(run_dir, tmp_path / "elsewhere" / run_dir.name))
    out = write_report(moved, out=tmp_path / "copy.html")
    assert out == tmp_path / "copy.html"
    assert out.read_text(encoding="utf-8").replace(esc(str(moved)), "RUN") == report.replace(esc(str(run_dir)), "RUN")


def test_report_of_a_run_without_architecture_or_controls(tmp_path: Path) -> None:
    run = write_synthetic_run(tmp_path / "partial")
    (run / "architecture.json").unlink()
    (run / "rounds.json").unlink()
    html = render_report(run)
    assert "architecture.json is missing" in html
    assert "No controls yet" in html
    assert len(figures(html)) == 4  # growth, activity and cost say "no checks recorded"; curves drawn


# ---- reading the run folder --------------------------------------------------------------------------


def test_load_run_reads_every_file(run_dir: Path) -> None:
    run = load_run(run_dir)
    assert run.name == HOSTILE_NAME
    assert run.arch == FINAL
    assert len(run.history) == 8 and run.history[0]["epoch"] == 1 and run.history[-1]["phase"] == "finetune"
    assert isinstance(run.history[0]["macs"], int) and isinstance(run.history[0]["val_acc"], float)
    assert [r["round"] for r in run.rounds] == [1, 2, 3]
    assert sorted(run.controls) == ["scratch", "seed"] and run.controls["seed"].arch == SEED


def test_load_run_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="no such run folder"):
        load_run(tmp_path / "absent")
    run = write_synthetic_run(tmp_path / "r")
    (run / "summary.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(RunError, match=r"summary\.json: not valid JSON"):
        load_run(run)
    write_synthetic_run(run)
    text = (run / "history.csv").read_text(encoding="utf-8").replace("val_acc", "valacc", 1)
    (run / "history.csv").write_text(text, encoding="utf-8")
    with pytest.raises(RunError, match=r"history\.csv: column 'val_acc' is missing"):
        load_run(run)
    write_synthetic_run(run)
    (run / "config.json").unlink()
    with pytest.raises(RunError, match=r"config\.json: missing"):
        load_run(run)


def test_empty_and_non_finite_history_cells_read_as_none(tmp_path: Path) -> None:
    run = write_synthetic_run(tmp_path / "r")
    lines = (run / "history.csv").read_text(encoding="utf-8").splitlines()
    cells = lines[1].split(",")
    cells[4], cells[6] = "nan", ""  # train_loss, val_loss
    lines[1] = ",".join(cells)
    (run / "history.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    row = load_run(run).history[0]
    assert row["train_loss"] is None and row["val_loss"] is None and row["train_acc"] == pytest.approx(0.18)


# ---- info records ---------------------------------------------------------------------------------------


def test_summary_info(run_dir: Path) -> None:
    s = summary_info(load_run(run_dir))
    assert (s.dataset, s.family, s.seed, s.rounds, s.epochs, s.device) == ("cifar10", "vgg", 7, 3, 8, "cpu")
    assert s.classes[0] == XSS and len(s.classes) == 10
    assert (s.val_acc, s.test_acc) == (0.66, 0.65)
    assert (s.macs, s.params) == (cost(FINAL).macs, cost(FINAL).params)
    assert s.wall_time == pytest.approx(16.0)
    assert s.seed_widths == SEED.layer_widths() and s.final_widths == FINAL.layer_widths()
    assert s.versions["torch"] == "2.13.0" and s.command.startswith("grownet search")
    assert s.events == ["epoch: 5; event: divergence; detail: non-finite loss <nan>; retried with lr 0.025"]


def test_growth_info_is_the_width_of_every_layer_per_round(run_dir: Path) -> None:
    g = growth_info(load_run(run_dir))
    assert g.columns == ["round 1", "round 2", "round 3", "final"] and g.rounds == [1, 2, 3]
    assert g.layers == list(FINAL.layer_widths())  # network order, the deepened layer included
    table_ = dict(zip(g.layers, g.widths))
    assert table_["stages.0.0"] == [16, 24, 24, 24]
    assert table_["stages.2.1"] == [16, 24, 28, 28]
    assert table_["stages.2.2"] == [None, None, 28, 28]  # added by the deepening at check 2
    for j, arch in enumerate((SEED, ROUND2, ROUND3, FINAL)):
        assert {l: w[j] for l, w in table_.items() if w[j] is not None} == arch.layer_widths()


def test_growth_info_orders_resnet_layers_like_the_architecture() -> None:
    from grownet.report._info import layer_order_key

    names = ["stages.1", "stages.0.1", "stem", "stages.1.0", "stages.0", "stages.0.0", "stages.10.0", "stages.2.0"]
    assert sorted(names, key=layer_order_key) == [
        "stem", "stages.0.0", "stages.0.1", "stages.0", "stages.1.0", "stages.1", "stages.2.0", "stages.10.0"]


def test_activity_info_holds_activity_tau_and_decision(run_dir: Path) -> None:
    a = activity_info(load_run(run_dir))
    assert a.rounds == [1, 2, 3] and a.epochs == [2, 4, 6] and a.taus == [0.8]
    i = a.layers.index("stages.2.1")
    assert a.activity[i] == [0.8125, 0.9583, 0.5]
    assert a.decision[i] == ["widen", "clipped", "keep"]
    j = a.layers.index("stages.2.2")
    assert a.activity[j] == [None, None, 0.1071] and a.decision[j] == [None, "deepen", "keep"]
    assert all(t in (0.8, None) for row in a.tau for t in row)


def test_curves_info_marks_growth_and_fine_tune(run_dir: Path) -> None:
    c = curves_info(load_run(run_dir))
    assert c.epochs == list(range(1, 9))
    assert c.growth_epochs == [2, 4]  # check 3 grew nothing
    assert c.finetune_start == 7
    assert c.val_acc[0] == pytest.approx(0.17) and c.train_loss[-1] == pytest.approx(0.7)
    assert sorted(c.controls) == ["scratch", "seed"] and c.controls["seed"][0] == list(range(1, 9))


def test_round_cost_info(run_dir: Path) -> None:
    r = round_cost_info(load_run(run_dir))
    assert r.labels == ["1", "2", "3", "final"]
    assert r.macs == [cost(a).macs for a in (SEED, ROUND2, ROUND3, FINAL)]
    assert r.params == [cost(a).params for a in (SEED, ROUND2, ROUND3, FINAL)]
    assert r.val_acc[-1] == 0.66


def test_arch_info_is_the_cost_breakdown_of_the_final_net(run_dir: Path) -> None:
    info = arch_info(load_run(run_dir))
    c = cost(FINAL)
    assert [row.layer for row in info.rows] == list(FINAL.layer_widths()) + ["classifier"]
    assert [row.width for row in info.rows] == list(FINAL.layer_widths().values()) + [None]
    assert (info.macs, info.params) == (c.macs, c.params)
    assert sum(row.macs for row in info.rows) == c.macs and sum(row.params for row in info.rows) == c.params
    assert sum(row.macs_share for row in info.rows) == pytest.approx(1.0)
    assert sum(row.params_share for row in info.rows) == pytest.approx(1.0)
    row = info.rows[1]
    assert row.macs_share == pytest.approx(c.layers["stages.0.1"].macs / c.macs)


def test_decision_info_counts_every_decision(run_dir: Path) -> None:
    d = decision_info(load_run(run_dir))
    assert len(d.decisions) == 6 + 7 + 7  # check 1: 6 layers; check 2: 6 + deepening; check 3: 7
    assert d.counts == {"widen": 3, "keep": 14, "clipped": 1, "skipped": 1, "deepen": 1}
    assert [(c.round, c.layer, c.decision, c.new_width) for c in d.changes()] == [
        (1, "stages.0.0", "widen", 24), (1, "stages.2.1", "widen", 24),
        (2, "stages.0.1", "skipped", 16), (2, "stages.1.0", "widen", 24), (2, "stages.2.1", "clipped", 28),
        (2, "stages.2.2", "deepen", 28)]


def test_repro_info_toml_reads_back_as_the_recipe(run_dir: Path) -> None:
    run = load_run(run_dir)
    info = repro_info(run)
    assert tomllib.loads(info.recipe_toml) == run.config["recipe"]
    assert ("grow.tau", 0.8) in info.recipe and ("finetune.epochs", 2) in info.recipe
    assert ("versions.torch", "2.13.0") in info.config and ("seed", 7) in info.config
    assert not any(k.startswith("recipe") for k, _ in info.config)


def test_controls_info_lists_the_grown_net_then_controls(run_dir: Path) -> None:
    points = controls_info(load_run(run_dir))
    assert [p.name for p in points] == ["grown", "scratch", "seed"]
    assert (points[1].val_acc, points[1].test_acc, points[1].macs) == (0.62, 0.61, cost(FINAL).macs)
    assert points[2].epochs == 8 and points[2].wall_time == pytest.approx(12.0)


def test_pareto_front() -> None:
    def p(macs: float | None, acc: float | None) -> ModelPoint:
        return ModelPoint("x", "x", acc, acc, macs, None, None, None, None)

    points = [p(1, 0.5), p(2, 0.7), p(2, 0.6), p(3, 0.7), p(4, 0.9), p(None, 0.99), p(5, None), p(1, 0.5)]
    # (2, 0.6) and (3, 0.7) are dominated by (2, 0.7); equal points do not dominate each other.
    assert pareto_front(points) == [True, True, False, False, True, False, False, True]


# ---- HTML and formatting helpers ----------------------------------------------------------------------------


def test_render_escapes_fields_but_not_safe_html() -> None:
    assert render("<td>$v</td>", v='<a href="x">&') == "<td>&lt;a href=&quot;x&quot;&gt;&amp;</td>"
    assert render("<td>$v</td>", v=Safe("<b>ok</b>")) == "<td><b>ok</b></td>"
    assert render("<td>$v</td>", v=None) == "<td>&mdash;</td>"
    with pytest.raises(KeyError):
        render("<td>$missing</td>")
    html = table(["<h>"], [["<c>"]], numeric=(0,))
    assert '<th class="num">&lt;h&gt;</th>' in html and '<td class="num">&lt;c&gt;</td>' in html


def test_number_formats() -> None:
    assert pct(0.93125) == "93.12 %" and pct(None) is None and pct(float("nan")) is None
    assert si(40_960_000) == "41 M" and si(1_234_567_890_123) == "1.23 T" and si(512) == "512"
    assert duration(42.04) == "42.0 s" and duration(185) == "3 min 05 s" and duration(7625) == "2 h 07 min"
    assert ratio(3.0, 4.0) == "0.75×" and ratio(1.0, 0.0) is None and ratio(None, 1.0) is None


def test_summary_json_is_the_contract_shape(run_dir: Path) -> None:
    """The synthetic folder keeps to COMMON.md, so these tests check the real contract."""
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary) == {"dataset", "classes", "seed", "val_acc", "test_acc", "macs", "params", "train_flops",
                            "wall_time", "rounds", "epochs", "seed_arch", "final_arch", "events"}
    config = json.loads((run_dir / "config.json").read_text())
    assert set(config) == {"recipe", "seed", "dataset", "data_dir", "device", "versions", "command", "started"}


# ---- compare ----------------------------------------------------------------------------------------------


def test_compare_puts_runs_and_controls_side_by_side(run_dir: Path, tmp_path: Path) -> None:
    from grownet.compare import compare_points, write_compare

    other = write_synthetic_run(tmp_path / "bigger")
    summary = json.loads((other / "summary.json").read_text())
    summary.update(macs=2 * summary["macs"], test_acc=0.6, val_acc=0.7)  # dominated on test, not on val
    (other / "summary.json").write_text(json.dumps(summary))
    runs = [load_run(run_dir), load_run(other)]
    points = compare_points(runs)
    assert [(p.run, p.name) for p in points] == [
        (HOSTILE_NAME, "grown"), (HOSTILE_NAME, "scratch"), (HOSTILE_NAME, "seed"), ("bigger", "grown")]
    assert [p.name for p in compare_points(runs, controls=False)] == ["grown", "grown"]
    # grown 0.65 @ final MACs; scratch 0.61 @ same MACs (dominated); seed 0.54 @ fewer MACs; bigger 0.60 @ 2x MACs
    assert pareto_front(points, metric="test_acc") == [True, False, True, False]
    assert pareto_front(points, metric="val_acc") == [True, False, True, True]

    out = write_compare([run_dir, other], tmp_path / "cmp.html")
    page = out.read_text(encoding="utf-8")
    assert len(figures(page)) == 2 and external_urls(page) == []
    assert '<section id="pareto">' in page and '<section id="table">' in page and '<section id="runs">' in page
    assert page.count("<tr>") == 1 + len(points) + 1 + 2  # header + nets, header + runs
    assert "<img src=x" not in page and esc(HOSTILE_NAME) in page and "<i>x</i>" not in page


def test_compare_rejects_bad_arguments(run_dir: Path, tmp_path: Path) -> None:
    from grownet.compare import render_compare, write_compare

    with pytest.raises(UsageError, match="compare needs at least one run folder"):
        render_compare([])
    with pytest.raises(UsageError, match=r"--out: .*cmp\.txt should be an \.html file"):
        write_compare([run_dir], tmp_path / "cmp.txt")
    with pytest.raises(RunError, match="no such run folder"):
        render_compare([tmp_path / "nope"])


# ---- command line -----------------------------------------------------------------------------------------


def test_cli_report_and_compare(run_dir: Path, report: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from grownet.cli import main

    assert main(["report", str(run_dir), "--out", str(tmp_path / "r.html"), "--quiet"]) == 0
    assert (tmp_path / "r.html").read_text(encoding="utf-8") == report
    assert main(["report", str(tmp_path / "missing"), "--quiet"]) == 2
    assert capsys.readouterr().err.endswith(f"grownet: error: {tmp_path / 'missing'}: no such run folder; "
                                            "pass the --out folder of a grownet search\n")
    assert main(["compare", str(run_dir), "--out", str(tmp_path / "c.html"), "--no-controls", "--quiet"]) == 0
    assert len(figures((tmp_path / "c.html").read_text(encoding="utf-8"))) == 2
    assert main(["compare", "--out", str(tmp_path / "c.html")]) == 2  # argparse: RUN_DIR is required


# ---- a real smoke run ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the session's real smoke run (grownet.search.search, recipes/smoke.toml) with a
    hostile class name in summary.json and a one-epoch seed control."""
    from grownet.baseline import run_control

    src = smoke_run(tmp_path_factory)
    run = Path(shutil.copytree(src, tmp_path_factory.mktemp("smoke") / "smoke-run",
                               ignore=shutil.ignore_patterns("checkpoints", ".lock")))
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    summary["classes"][0] = XSS
    (run / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    run_control(run, "seed", epochs=1, device="cpu")
    return run


def test_report_of_a_real_smoke_run(smoke: Path) -> None:
    page = write_report(smoke).read_text(encoding="utf-8")
    for anchor, _ in SECTIONS:
        assert f'<section id="{anchor}">' in page
    assert len(figures(page)) == 6 and external_urls(page) == []  # the importance signal adds activity-along-the-round
    assert XSS not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script" not in page.lower()

    run = load_run(smoke)
    s, rounds = run.summary, run.rounds
    g = growth_info(run)
    assert {l: w[-1] for l, w in zip(g.layers, g.widths) if w[-1] is not None} == run.arch.layer_widths()
    first = {l: w[0] for l, w in zip(g.layers, g.widths) if w[0] is not None}
    assert first == summary_info(run).seed_widths
    c = curves_info(run)
    assert c.epochs == list(range(1, s["epochs"] + 1))
    assert c.growth_epochs == [r["epoch"] for r in rounds if r["grew"]] and c.growth_epochs  # the smoke run grows
    assert c.finetune_start == min(h["epoch"] for h in run.history if h["phase"] == "finetune")
    a = activity_info(run)
    assert a.rounds == [r["round"] for r in rounds] and a.taus == [0.8]
    info = arch_info(run)
    assert (info.macs, info.params) == (s["macs"], s["params"])
    points = controls_info(run)
    assert [p.name for p in points] == ["grown", "seed"]
    assert points[1].macs == cost(Architecture.from_dict(s["seed_arch"])).macs


def test_a_control_with_the_grown_widths_is_called_out(tmp_path: Path) -> None:
    run = write_synthetic_run(tmp_path / "r")
    write_control(run, "scratch", FINAL, val_acc=0.62, test_acc=0.61)
    write_control(run, "uniform", FINAL, val_acc=0.62, test_acc=0.61)
    html = write_report(run).read_text(encoding="utf-8")
    assert "The uniform width, equal MACs control has exactly the grown net&#x27;s widths" in html
    write_control(run, "uniform", SEED, val_acc=0.55, test_acc=0.54)
    assert "has exactly the grown net" not in write_report(run).read_text(encoding="utf-8")


def test_other_modules_import_only_the_public_report_surface():
    """tune, compare and the ticket report use grownet.report's public names and public
    modules (html, plots, formatting), never a private ``report._*`` module or name."""
    import ast

    package = Path(__file__).resolve().parents[1] / "grownet"
    private = []
    for path in sorted(package.rglob("*.py")):
        if path.parent.name == "report":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom) or not node.module:
                continue
            parts = node.module.split(".")
            if "report" not in parts:
                continue
            below = parts[parts.index("report") + 1:]
            names = [a.name for a in node.names] if not below else []
            if any(p.startswith("_") for p in below + names):
                private.append(f"{path.relative_to(package)}:{node.lineno} from {node.module} import {names or '...'}")
    assert private == []
