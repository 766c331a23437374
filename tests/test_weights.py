"""Specification of weights files: round trip, safe loading, errors naming the misfit tensor."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from grownet.arch import Architecture
from grownet.errors import ArchitectureError, UsageError, WeightsError
from grownet.models import build_model
from grownet.weights import load_model, load_weights, read_weights, save_model

DATA = Path(__file__).resolve().parent / "data"
SMALL = Architecture("vgg", ((4,), (6,)), input_size=8, num_classes=3)
DEEPER = SMALL.with_extra_layer(1)  # stages ((4,), (6, 6))
WIDER = SMALL.with_width("stages.0.0", 5)


def trained(arch: Architecture, seed: int = 0) -> torch.nn.Module:
    """A model whose BN statistics moved away from their defaults."""
    torch.manual_seed(seed)
    model = build_model(arch)
    model(torch.randn(4, arch.in_channels, arch.input_size, arch.input_size))
    return model.eval()


@pytest.mark.parametrize("example", ["vgg_seed.json", "resnet_grown.json"])
def test_round_trip_restores_the_function(example, tmp_path):
    arch = Architecture.from_json(DATA / example)
    model = trained(arch)
    path = save_model(model, tmp_path / "weights.pt")
    assert path == tmp_path / "weights.pt"
    assert [p.name for p in tmp_path.iterdir()] == ["weights.pt"]  # no temporary left behind
    torch.manual_seed(1)  # a different init, overwritten by the load
    loaded = load_model(DATA / example, path)
    assert not loaded.training
    assert loaded.arch == arch
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    state = torch.load(path, weights_only=True)
    assert set(state) == set(model.state_dict())
    assert all(t.device.type == "cpu" for t in state.values())


def test_arch_may_be_a_path_string_an_architecture_or_a_dict(tmp_path):
    model = trained(SMALL)
    state = model.state_dict()
    SMALL.save(tmp_path / "a.json")
    for arch in (str(tmp_path / "a.json"), tmp_path / "a.json", SMALL, SMALL.to_dict()):
        loaded = load_model(arch, state)  # weights may be a state_dict too
        assert loaded.arch == SMALL and not loaded.training
        assert torch.equal(loaded.state_dict()["stages.0.0.bn.running_mean"], state["stages.0.0.bn.running_mean"])


def test_without_weights_a_fresh_model_in_eval_mode():
    model = load_model(DATA / "resnet20.json")
    assert not model.training and model.arch == Architecture.from_json(DATA / "resnet20.json")
    assert "BasicBlock" in repr(model)
    assert next(model.parameters()).device == torch.device("cpu")


def test_wrong_shape_names_the_first_misfit_tensor(tmp_path):
    path = save_model(trained(SMALL), tmp_path / "w.pt")
    with pytest.raises(
        WeightsError,
        match=r"w\.pt: weights do not fit the architecture: stages\.0\.0\.conv\.weight: "
        r"expected shape \(5, 3, 3, 3\), found \(4, 3, 3, 3\); use the architecture JSON",
    ):
        load_model(WIDER, path)


def test_missing_and_unexpected_tensors_are_named(tmp_path):
    small = save_model(trained(SMALL), tmp_path / "small.pt")
    deeper = save_model(trained(DEEPER), tmp_path / "deeper.pt")
    missing = r"missing tensor stages\.1\.1\.conv\.weight \(expected shape \(6, 6, 3, 3\)\)"
    with pytest.raises(WeightsError, match=missing):
        load_model(DEEPER, small)
    with pytest.raises(WeightsError, match=r"unexpected tensor stages\.1\.1\.conv\.weight \(shape \(6, 6, 3, 3\)\)"):
        load_model(SMALL, deeper)
    state = trained(SMALL).state_dict()
    del state["classifier.bias"]
    misfit = r"^weights do not fit the architecture: missing tensor classifier\.bias \(expected shape \(3\)\)"
    with pytest.raises(WeightsError, match=misfit):
        load_model(SMALL, state)


def test_corrupt_or_missing_files_are_one_line_errors(tmp_path):
    good = save_model(trained(SMALL), tmp_path / "good.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(good[: len(good) // 2])
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "text.pt").write_text("not weights\n")
    for name in ("cut.pt", "empty.pt", "text.pt"):
        with pytest.raises(WeightsError, match=rf"{name}: not a PyTorch weights file, or corrupt \(") as info:
            load_model(SMALL, tmp_path / name)
        assert "\n" not in str(info.value)
    with pytest.raises(WeightsError, match=r"nope\.pt: file not found"):
        load_model(SMALL, tmp_path / "nope.pt")
    with pytest.raises(WeightsError, match=r": cannot read weights"):
        read_weights(tmp_path)  # a folder


class Payload:
    """Unpickling this would create a file: the loader must refuse before running it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_pickled_code_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"stages.0.0.conv.weight": torch.zeros(1), "x": Payload(marker)}, tmp_path / "evil.pt")
    with pytest.raises(WeightsError, match=r"evil\.pt: holds a pickled (posix|nt)\.mkdir, not just tensors; ") as info:
        load_model(SMALL, tmp_path / "evil.pt")
    assert "\n" not in str(info.value)
    assert not marker.exists()
    torch.save(trained(SMALL), tmp_path / "module.pt")  # a whole pickled module
    with pytest.raises(WeightsError, match=r"module\.pt: holds a pickled grownet\.models\.VGG"):
        read_weights(tmp_path / "module.pt")


def test_content_must_be_a_state_dict(tmp_path):
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    expected = r"list\.pt: not a state_dict: expected a mapping of tensor names to tensors, got list$"
    with pytest.raises(WeightsError, match=expected):
        load_model(SMALL, tmp_path / "list.pt")
    torch.save({"classifier.bias": 3}, tmp_path / "int.pt")
    expected = r"int\.pt: not a state_dict: entry 'classifier\.bias' is a int, not a tensor$"
    with pytest.raises(WeightsError, match=expected):
        read_weights(tmp_path / "int.pt")
    with pytest.raises(UsageError, match=r"^weights: expected a file path or a state_dict, got list$"):
        load_model(SMALL, [1])


def test_load_weights_into_an_existing_model(tmp_path):
    source = trained(SMALL, seed=0)
    path = save_model(source, tmp_path / "w.pt")
    target = build_model(SMALL)
    assert load_weights(target, path) is target
    assert all(torch.equal(a, b) for a, b in zip(target.state_dict().values(), source.state_dict().values()))
    with pytest.raises(WeightsError, match=r"w\.pt: weights do not fit the architecture: stages\.0\.0\.conv\.weight"):
        load_weights(build_model(WIDER), path)


def test_channels_last_model_saves_and_loads(tmp_path):
    model = trained(SMALL).to(memory_format=torch.channels_last)
    path = save_model(model, tmp_path / "w.pt")
    loaded = load_model(SMALL, path)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


def test_bad_device_and_bad_arch(tmp_path):
    with pytest.raises(UsageError, match=r"^device: unknown device 'gpu0'"):
        load_model(SMALL, device="gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match=r"^device: 'cuda' requested but CUDA is not available here; use 'cpu'$"):
            load_model(SMALL, device="cuda")
    with pytest.raises(ArchitectureError, match=r"nope\.json: file not found"):
        load_model(tmp_path / "nope.json")
    with pytest.raises(UsageError, match=r"^expected an Architecture or its dict, got int$"):
        load_model(3)


def test_save_into_a_missing_folder_is_an_error(tmp_path):
    with pytest.raises(WeightsError, match=r"missing/w\.pt: cannot write weights"):
        save_model(trained(SMALL), tmp_path / "missing" / "w.pt")


def test_a_run_folder_loads_its_architecture_and_weights(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    model = trained(DEEPER)
    DEEPER.with_meta(test_acc=0.5).save(run / "architecture.json")
    save_model(model, run / "weights.pt")
    x = torch.randn(2, 3, 8, 8)
    for folder in (run, str(run)):
        loaded = load_model(folder)
        assert loaded.arch == DEEPER and not loaded.training
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    # weights given beside a folder are the ones loaded
    other = trained(DEEPER, seed=5)
    with torch.no_grad():
        torch.testing.assert_close(load_model(run, other.state_dict())(x), other(x), rtol=0, atol=0)


def test_a_folder_without_the_run_files_is_a_one_line_error(tmp_path):
    with pytest.raises(ArchitectureError, match=r"^\S+/empty: no architecture\.json in this folder; pass a finished "
                                                r"grownet run folder or an architecture JSON file$"):
        (tmp_path / "empty").mkdir()
        load_model(tmp_path / "empty")
    half = tmp_path / "half"
    half.mkdir()
    SMALL.save(half / "architecture.json")
    with pytest.raises(WeightsError, match=r"^\S+/half: no weights\.pt next to its architecture\.json \(has the run "
                                           r"finished\?\); pass a finished run folder, or weights=FILE$"):
        load_model(half)
    assert isinstance(load_model(half, trained(SMALL).state_dict()), torch.nn.Module)
