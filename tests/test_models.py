"""Specification of the model builder: stable parameter names, shapes, layer -> module maps."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from grownet.arch import Architecture, ResStage
from grownet.errors import ArchitectureError, UsageError
from grownet.models import build_model, has_shortcut, layer_conv_weights, layer_modules

DATA = Path(__file__).resolve().parent / "data"

TINY_VGG = Architecture("vgg", ((4,), (6, 5)), input_size=8, num_classes=3)
# Stem narrower than stage 0 (projection in stage 0), uneven inner widths.
TINY_RES = Architecture("resnet", (ResStage(6, (4, 5)), ResStage(8, (7,))), stem=3, input_size=8, num_classes=3)
BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def bn(prefix: str) -> set[str]:
    return {f"{prefix}.{k}" for k in BN}


def test_vgg_parameter_names_and_shapes():
    model = build_model(TINY_VGG)
    state = model.state_dict()
    assert set(state) == (
        {"stages.0.0.conv.weight", "stages.1.0.conv.weight", "stages.1.1.conv.weight"}
        | {"classifier.weight", "classifier.bias"}
        | bn("stages.0.0.bn") | bn("stages.1.0.bn") | bn("stages.1.1.bn")
    )  # fmt: skip
    assert state["stages.0.0.conv.weight"].shape == (4, 3, 3, 3)
    assert state["stages.1.0.conv.weight"].shape == (6, 4, 3, 3)
    assert state["stages.1.1.conv.weight"].shape == (5, 6, 3, 3)
    assert state["stages.1.1.bn.running_var"].shape == (5,)
    assert state["classifier.weight"].shape == (3, 5)
    assert model.arch is TINY_VGG


def test_resnet_parameter_names_and_shapes():
    state = build_model(TINY_RES).state_dict()
    assert set(state) == (
        {"stem.conv.weight", "classifier.weight", "classifier.bias"} | bn("stem.bn")
        | {f"stages.0.{b}.conv{i}.weight" for b in (0, 1) for i in (1, 2)}
        | {f"stages.1.0.conv{i}.weight" for i in (1, 2)}
        | {"stages.0.0.shortcut.conv.weight", "stages.1.0.shortcut.conv.weight"}
        | bn("stages.0.0.shortcut.bn") | bn("stages.1.0.shortcut.bn")
        | {f"stages.0.{b}.bn{i}.{k}" for b in (0, 1) for i in (1, 2) for k in BN}
        | {f"stages.1.0.bn{i}.{k}" for i in (1, 2) for k in BN}
    )  # fmt: skip
    assert state["stem.conv.weight"].shape == (3, 3, 3, 3)
    assert state["stages.0.0.conv1.weight"].shape == (4, 3, 3, 3)
    assert state["stages.0.0.conv2.weight"].shape == (6, 4, 3, 3)
    assert state["stages.0.0.shortcut.conv.weight"].shape == (6, 3, 1, 1)
    assert state["stages.0.1.conv1.weight"].shape == (5, 6, 3, 3)
    assert state["stages.1.0.conv1.weight"].shape == (7, 6, 3, 3)
    assert state["stages.1.0.shortcut.conv.weight"].shape == (8, 6, 1, 1)
    assert state["classifier.weight"].shape == (3, 8)


def test_resnet_without_projection_where_widths_match():
    arch = Architecture("resnet", (ResStage(4, (4, 4)),), stem=4, input_size=4)
    assert not any("shortcut" in n for n in build_model(arch).state_dict())
    assert not has_shortcut(arch, 0, 0)


def test_has_shortcut_matches_built_modules():
    arch = Architecture.from_json(DATA / "resnet_grown.json")
    model = build_model(arch)
    for s, stage in enumerate(arch.stages):
        for b in range(len(stage.blocks)):
            assert has_shortcut(arch, s, b) == (model.stages[s][b].shortcut is not None)
    assert has_shortcut(arch, 0, 0)  # stem 16 -> stage width 20
    assert has_shortcut(arch, 1, 0) and not has_shortcut(arch, 1, 1)


@pytest.mark.parametrize("arch", [TINY_VGG, TINY_RES], ids=["vgg", "resnet"])
def test_layer_conv_weights_produce_each_layer(arch):
    model = build_model(arch)
    params = dict(model.named_parameters())
    modules = dict(model.named_modules())
    for layer, width in arch.layer_widths().items():
        names = layer_conv_weights(arch, layer)
        assert names, layer
        for name in names:
            assert params[name].shape[0] == width, name
        mods = layer_modules(arch, layer)
        assert len(mods) == 2 * len(names)
        for conv, norm in zip(mods[::2], mods[1::2]):
            assert f"{conv}.weight" in names
            assert modules[norm].num_features == width


def test_layer_conv_weights_of_a_resnet_stage():
    assert layer_conv_weights(TINY_RES, "stages.0") == [
        "stages.0.0.conv2.weight", "stages.0.1.conv2.weight", "stages.0.0.shortcut.conv.weight",
    ]  # fmt: skip
    assert layer_conv_weights(TINY_RES, "stages.0.1") == ["stages.0.1.conv1.weight"]
    assert layer_conv_weights(TINY_RES, "stem") == ["stem.conv.weight"]
    assert layer_modules(TINY_RES, "stages.1") == [
        "stages.1.0.conv2", "stages.1.0.bn2", "stages.1.0.shortcut.conv", "stages.1.0.shortcut.bn",
    ]  # fmt: skip
    assert layer_modules(TINY_VGG, "stages.1.1") == ["stages.1.1.conv", "stages.1.1.bn"]
    with pytest.raises(ArchitectureError, match=r"^unknown layer 'stages.2'"):
        layer_conv_weights(TINY_VGG, "stages.2")


def test_vgg_forward_is_conv_bn_relu_pool_then_linear():
    torch.manual_seed(0)
    model = build_model(TINY_VGG).eval()
    x = torch.randn(2, 3, 8, 8)
    s = model.state_dict()

    def cbr(x, p):
        x = F.conv2d(x, s[f"{p}.conv.weight"], padding=1)
        x = F.batch_norm(x, s[f"{p}.bn.running_mean"], s[f"{p}.bn.running_var"], s[f"{p}.bn.weight"], s[f"{p}.bn.bias"])
        return F.relu(x)

    h = F.max_pool2d(cbr(x, "stages.0.0"), 2)
    h = cbr(cbr(h, "stages.1.0"), "stages.1.1").mean((2, 3))
    torch.testing.assert_close(model(x), F.linear(h, s["classifier.weight"], s["classifier.bias"]))


def test_resnet_block_with_zero_last_bn_passes_the_shortcut():
    # relu(bn2(...) + x) with bn2 = 0 and an identity shortcut is relu(x): what deepening relies on.
    arch = Architecture("resnet", (ResStage(4, (4,)),), stem=4, input_size=4)
    block = build_model(arch).stages[0][0].eval()
    with torch.no_grad():
        block.bn2.weight.zero_()
        block.bn2.bias.zero_()
    x = torch.randn(2, 4, 4, 4)
    torch.testing.assert_close(block(x), F.relu(x))


@pytest.mark.parametrize("arch", [TINY_VGG, TINY_RES], ids=["vgg", "resnet"])
def test_channels_last_gives_the_same_output(arch):
    torch.manual_seed(0)
    model = build_model(arch).eval()
    x = torch.randn(2, 3, 8, 8)
    expected = model(x)
    model = model.to(memory_format=torch.channels_last)
    torch.testing.assert_close(model(x.to(memory_format=torch.channels_last)), expected)


def test_build_from_dict_and_on_meta():
    model = build_model(TINY_RES.to_dict())
    assert model.arch == TINY_RES
    with torch.device("meta"):
        meta = build_model(TINY_RES)
    assert all(t.is_meta for t in meta.state_dict().values())
    assert {k: v.shape for k, v in meta.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    with pytest.raises(UsageError, match=r"^expected an Architecture or its dict, got str$"):
        build_model("tests/data/vgg_seed.json")


def test_init_is_seeded_by_the_global_rng():
    torch.manual_seed(3)
    a = build_model(TINY_VGG).state_dict()
    torch.manual_seed(3)
    b = build_model(TINY_VGG).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(a["stages.0.0.bn.weight"], torch.ones(4))
    assert torch.equal(a["stages.0.0.bn.bias"], torch.zeros(4))
