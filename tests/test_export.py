"""``grownet export``: both families in both formats computing the run's net within 1e-3 on
real test images (checked here again, independently of the exporter's own check), BatchNorm
folded (no BatchNorm operator in the file), a record that lets a runtime preprocess images,
and refusals that write nothing."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from _runfolder import smoke_run
from _smoke import FAST, SMOKE, smoke_dataset
from grownet.cli import main
from grownet.data import load_dataset
from grownet.errors import GrownetError, UsageError
from grownet.export import TOLERANCE, ExportError, export, fold_batchnorm
from grownet.models import build_model
from grownet.weights import load_model, save_model

#: torch 2.13 marks TorchScript deprecated; exporting to it is what these tests ask for.
pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")

ONNX_REASON = "ONNX export needs the export extra: pip install 'grownet-lbi[export]' (onnx, onnxscript, onnxruntime)"


@pytest.fixture(scope="module")
def vgg_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return smoke_run(tmp_path_factory)


@pytest.fixture(scope="module")
def resnet_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real search from a ResNet seed: two one-epoch rounds and a fine-tune epoch (a few seconds)."""
    from grownet.search import search

    base = tmp_path_factory.mktemp("resnet")
    dataset, data_dir = smoke_dataset(base)
    overrides = {**FAST, "model.seed_arch": "resnet", "budget.max_rounds": 2, "grow.local_epochs": 1}
    search(dataset, recipe=SMOKE, overrides=overrides, out=base / "run", data_dir=data_dir, device="cpu", seed=0)
    return base / "run"


def _runs(request: pytest.FixtureRequest, family: str) -> Path:
    return request.getfixturevalue(f"{family}_run")


def _images(run: Path, record: dict, n: int) -> np.ndarray:
    """The first ``n`` test images of the run's dataset, preprocessed by hand as the record says."""
    config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    limits = config["recipe"]["data"]
    ds = load_dataset(config["dataset"], data_dir=config["data_dir"], limit_train=limits["limit_train"] or None,
                      limit_test=limits["limit_test"] or None)
    mean = np.asarray(record["input"]["mean"], np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(record["input"]["std"], np.float32).reshape(1, -1, 1, 1)
    return ((ds.x_test[:n].numpy().astype(np.float32) / 255 - mean) / std).astype(np.float32)


def _run_file(fmt: str, path: Path, x: np.ndarray) -> np.ndarray:
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(["logits"], {"images": x})[0]
    with torch.no_grad():
        return torch.jit.load(str(path))(torch.from_numpy(x)).numpy()


def _ops(fmt: str, path: Path) -> str:
    """The operators of an exported file, as text."""
    if fmt == "onnx":
        import onnx

        ops = " ".join(node.op_type for node in onnx.load(str(path)).graph.node)
    else:
        ops = str(torch.jit.load(str(path)).inlined_graph)
    assert ("Conv" if fmt == "onnx" else "aten::_convolution") in ops
    return ops


def _needs(fmt: str) -> None:
    if fmt == "onnx":
        for module in ("onnx", "onnxscript", "onnxruntime"):
            pytest.importorskip(module, reason=ONNX_REASON)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("family", ["vgg", "resnet"])
def test_the_exported_file_computes_the_run_s_net_on_real_images(family, fmt, request, tmp_path):
    _needs(fmt)
    run = _runs(request, family)
    net = load_model(run)
    assert net.arch.family == family
    if family == "resnet":  # stride-2 stages: projection shortcuts, whose BatchNorms fold too
        assert any(name.endswith("shortcut.bn") for name, _ in net.named_modules())
    out = tmp_path / f"net.{fmt}"
    result = export(run, format=fmt, out=out)
    assert (result.path, result.record, result.format) == (out, tmp_path / f"net.{fmt}.json", fmt)
    assert result.samples == 64 and result.max_abs_diff <= TOLERANCE
    assert result.sha256 == hashlib.sha256(out.read_bytes()).hexdigest()
    record = json.loads(result.record.read_text(encoding="utf-8"))
    assert (record["format"], record["file"], record["sha256"], record["batchnorm_folded"]) == (fmt, out.name, result.sha256, True)
    assert record["checked"]["images"] == 64 and record["checked"]["max_abs_diff"] == result.max_abs_diff
    assert record["checked"]["tolerance"] == TOLERANCE and record["checked"]["split"] == "test"
    assert {"grownet", "torch", "python"} <= set(record["versions"])
    if fmt == "onnx":
        assert {"onnx", "onnxscript", "onnxruntime"} <= set(record["versions"])

    assert not re.search("batch_?norm", _ops(fmt, out), re.IGNORECASE)  # folded into the convs
    # independently: images preprocessed by hand from the record, any batch size, vs PyTorch
    x = _images(run, record, 70)
    with torch.no_grad():
        expected = load_model(run)(torch.from_numpy(x)).numpy()
    for batch in (x[:3], x):
        got = _run_file(fmt, out, batch)
        assert got.shape == (len(batch), record["output"]["shape"][1])
        assert np.abs(got - expected[: len(batch)]).max() <= TOLERANCE


@pytest.mark.parametrize("example", ["vgg_grown.json", "resnet_grown.json"])
def test_folding_batchnorm_keeps_the_function(example):
    from grownet.arch import Architecture

    arch = Architecture.from_json(Path(__file__).resolve().parent / "data" / example)
    torch.manual_seed(0)
    model = build_model(arch)
    with torch.no_grad():  # BatchNorm statistics and affine parameters away from their defaults
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-0.5, 0.5)
    model.eval()
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the original is untouched
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-4)


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_file_that_differs_by_more_than_1e_3_is_refused_and_nothing_written(vgg_run, tmp_path):
    """Logits of ~1e7 (a classifier scaled up 1e6x): float32 rounding of the folded convs
    moves them by more than 1e-3, so the check must refuse."""
    run = tmp_path / "run"
    shutil.copytree(vgg_run, run)
    model = load_model(run)
    with torch.no_grad():
        model.classifier.weight.mul_(1e6)
    save_model(model, run / "weights.pt")
    before = _snapshot(tmp_path)
    with pytest.raises(ExportError, match=r"^model\.torchscript\.pt: the exported torchscript net differs from the "
                                          r"PyTorch net by \S+ \(max abs logit, on 64 test images; logits up to \S+\) "
                                          r"> 0\.001; nothing written: the file would not compute the run's net$"):
        export(run, format="torchscript")
    assert _snapshot(tmp_path) == before


def test_onnx_without_its_packages_says_how_to_install_them(vgg_run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # what an environment without it shows
    with pytest.raises(ExportError, match=r"^ONNX export needs onnx, onnxscript and onnxruntime \(onnxscript is "
                                          r"missing\); install them with pip install 'grownet-lbi\[export\]'$"):
        export(vgg_run, format="onnx", out=tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_the_command_exports_and_refuses_in_one_line(vgg_run, tmp_path, capsys):
    out = tmp_path / "m.pt"
    assert main(["export", str(vgg_run), "--format", "torchscript", "--out", str(out), "--samples", "10", "--quiet"]) == 0
    assert "exported torchscript: " in capsys.readouterr().err
    record = json.loads((tmp_path / "m.pt.json").read_text(encoding="utf-8"))
    assert record["checked"]["images"] == 10
    kept = out.read_bytes()

    (tmp_path / "empty").mkdir()
    half = tmp_path / "half"
    shutil.copytree(vgg_run, half)
    (half / "weights.pt").unlink()
    cases = {
        ("export", str(vgg_run), "--format", "torchscript", "--out", str(out)): "m.pt already exists; pass --force",
        ("export", str(vgg_run), "--format", "tflite"): "argument --format: invalid choice: 'tflite'",
        ("export", str(tmp_path / "nope"), "--format", "torchscript"): "nope: no such run folder",
        ("export", str(tmp_path / "empty"), "--format", "torchscript"): "empty: no architecture.json in this folder",
        ("export", str(half), "--format", "torchscript"): "half: no weights.pt next to its architecture.json",
        ("export", str(vgg_run), "--format", "torchscript", "--samples", "0"): "samples: must be a positive integer",
        ("export", str(vgg_run), "--format", "torchscript", "--out", str(tmp_path / "no" / "m.pt")): "no: no such folder",
    }
    for argv, message in cases.items():
        assert main(list(argv)) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("grownet: error: ") and message in err, err
    assert out.read_bytes() == kept
    assert main(["export", str(vgg_run), "--format", "torchscript", "--out", str(out), "--force", "--quiet"]) == 0


def test_a_run_without_config_is_refused(vgg_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(vgg_run, run)
    (run / "config.json").unlink()
    with pytest.raises(GrownetError, match=r"config\.json: missing; is \S+ a finished grownet run folder\?$"):
        export(run, format="torchscript")
    with pytest.raises(UsageError, match=r"^--format: must be one of onnx, torchscript, got 'ONNX'$"):
        export(run, format="ONNX")
