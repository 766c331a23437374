"""Specification of the presets: shapes, standard depths, name lookup, and every preset runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from grownet import seeds
from grownet.arch import Architecture, ResStage
from grownet.errors import UsageError
from grownet.models import build_model

DATA = Path(__file__).resolve().parent / "data"


def weighted_layers(arch: Architecture) -> int:
    """Convs on the main path plus the classifier (how ResNet-n and VGG-n are named)."""
    model = build_model(arch)
    convs = [n for n, _ in model.named_modules() if n.endswith(("conv", "conv1", "conv2")) and "shortcut" not in n]
    return len(convs) + 1


def test_vgg_seed_default():
    arch = seeds.vgg()
    assert arch.stages == ((16,), (16,), (16, 16), (16, 16), (16, 16))
    assert (arch.in_channels, arch.input_size, arch.num_classes) == (3, 32, 10)
    assert arch == Architecture.from_json(DATA / "vgg_seed.json")
    assert weighted_layers(arch) == 9


def test_vgg_arguments():
    arch = seeds.vgg(8, (2, 1), num_classes=100, in_channels=1, input_size=28)
    assert arch.stages == ((8, 8), (8,))
    assert (arch.in_channels, arch.input_size, arch.num_classes) == (1, 28, 100)
    assert seeds.vgg((8, 16, 32), (1, 2, 1)).stages == ((8,), (16, 16), (32,))


def test_resnet_seed_default():
    arch = seeds.resnet()
    assert arch.stem == 16
    assert arch.stages == (ResStage(16, (16,)), ResStage(32, (32,)), ResStage(64, (64,)))
    assert seeds.resnet(stem=8).stem == 8
    assert seeds.resnet((8, 12), (2, 1)).stages == (ResStage(8, (8, 8)), ResStage(12, (12,)))


def test_standard_presets():
    assert seeds.vgg16().stages == ((64, 64), (128, 128), (256,) * 3, (512,) * 3, (512,) * 3)
    assert weighted_layers(seeds.vgg16()) == 14  # 13 convs + one linear (VGG-16 has 3 linears)
    assert seeds.resnet20() == Architecture.from_json(DATA / "resnet20.json")
    assert weighted_layers(seeds.resnet20()) == 20
    assert weighted_layers(seeds.resnet56()) == 56
    assert seeds.resnet56().stages[2] == ResStage(64, (64,) * 9)
    assert seeds.resnet20(num_classes=100).num_classes == 100


def test_preset_by_name():
    assert set(seeds.PRESETS) == {"vgg", "resnet", "vgg16", "resnet20", "resnet56"}
    assert seeds.preset("vgg", width=8) == seeds.vgg(8)
    assert seeds.preset("resnet56", input_size=64) == seeds.resnet56(input_size=64)
    known = r"known presets: vgg, resnet, vgg16, resnet20, resnet56$"
    with pytest.raises(UsageError, match=rf"^unknown preset 'vgg19'; {known}"):
        seeds.preset("vgg19")
    with pytest.raises(UsageError, match=r"^preset 'resnet20' takes no argument 'width'; it takes: num_classes, "):
        seeds.preset("resnet20", width=8)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: seeds.vgg(0), r"^width: must be a positive integer, got 0$"),
        (lambda: seeds.vgg((8, 8)), r"^width: needs one value per stage \(5\), got 2$"),
        (lambda: seeds.vgg(8, ()), r"^depths: must be a non-empty sequence of positive integers, got \(\)$"),
        (lambda: seeds.vgg(8, (1, 0)), r"^depths\[1\]: must be a positive integer, got 0$"),
        (lambda: seeds.resnet((16, 32), (1, 1, 1)), r"^blocks: needs one value per stage \(2\), got 3$"),
        (lambda: seeds.resnet("16"), r"^widths: must be a non-empty sequence of positive integers"),
        (lambda: seeds.resnet(blocks=True), r"^blocks: must be a non-empty sequence of positive integers"),
    ],
)
def test_bad_arguments(call, message):
    with pytest.raises(UsageError, match=message):
        call()


@pytest.mark.parametrize("name", sorted(seeds.PRESETS))
def test_every_preset_builds_and_runs(name):
    torch.manual_seed(0)
    arch = seeds.preset(name, num_classes=7)
    model = build_model(arch)
    x = torch.randn(2, 3, 32, 32)
    out = model(x)  # training mode: batch statistics
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    with torch.no_grad():
        out = model.eval()(x)
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
