"""Specification of cost(): MACs and parameters against the conv / linear equations, the meta
count against a real module's count, the training FLOPs identity, caching."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from grownet.arch import Architecture, ResStage
from grownet.cost import Cost, LayerCost, _cost, cost
from grownet.models import build_model
from grownet.seeds import resnet20

DATA = Path(__file__).resolve().parent / "data"
EXAMPLES = sorted(DATA.glob("*.json"))

TINY_VGG = Architecture("vgg", ((4,), (6, 5)), input_size=8, num_classes=3)
TINY_RES = Architecture("resnet", (ResStage(6, (4, 5)), ResStage(8, (7,))), stem=3, input_size=8, num_classes=3)


def conv(cin: int, cout: int, side: int, k: int = 3) -> LayerCost:
    """A bias-free k x k conv producing a side x side map, plus its BN (weight and bias)."""
    return LayerCost(macs=cout * cin * k * k * side * side, params=cout * cin * k * k + 2 * cout)


def add(*costs: LayerCost) -> LayerCost:
    return LayerCost(sum(c.macs for c in costs), sum(c.params for c in costs))


def reference(arch: Architecture) -> dict[str, LayerCost]:
    """Per-layer cost from the equations (MACs = cout * cin * k^2 * H_out * W_out)."""
    side, layers = arch.input_size, {}
    if arch.family == "vgg":
        cin = arch.in_channels
        for s, stage in enumerate(arch.stages):
            if s:
                side //= 2
            for l, w in enumerate(stage):
                layers[f"stages.{s}.{l}"] = conv(cin, w, side)
                cin = w
    else:
        layers["stem"] = conv(arch.in_channels, arch.stem, side)
        cin = arch.stem
        for s, stage in enumerate(arch.stages):
            if s:
                side = (side + 1) // 2  # 3x3, stride 2, padding 1
            out = []
            for b, inner in enumerate(stage.blocks):
                layers[f"stages.{s}.{b}"] = conv(cin, inner, side)
                out.append(conv(inner, stage.width, side))
                if b == 0 and (s > 0 or cin != stage.width):
                    out.append(conv(cin, stage.width, side, k=1))
                cin = stage.width
            layers[f"stages.{s}"] = add(*out)
    layers["classifier"] = LayerCost(macs=cin * arch.num_classes, params=(cin + 1) * arch.num_classes)
    return layers


def real_macs(arch: Architecture) -> int:
    """FlopCounterMode / 2 on a real CPU module, one sample."""
    model = build_model(arch).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.randn(1, arch.in_channels, arch.input_size, arch.input_size))
    return counter.get_total_flops() // 2


@pytest.mark.parametrize("arch", [TINY_VGG, TINY_RES], ids=["vgg", "resnet"])
def test_cost_matches_the_equations(arch):
    c = cost(arch)
    expected = reference(arch)
    assert c.layers == expected
    assert list(c.layers) == list(arch.layer_widths()) + ["classifier"]
    assert c.macs == sum(v.macs for v in expected.values())
    assert c.params == sum(v.params for v in expected.values())
    assert c.params == sum(p.numel() for p in build_model(arch).parameters())


def test_tiny_vgg_by_hand():
    c = cost(TINY_VGG)
    assert c.layers["stages.0.0"] == LayerCost(macs=4 * 3 * 9 * 64, params=4 * 3 * 9 + 8)
    assert c.layers["stages.1.1"] == LayerCost(macs=5 * 6 * 9 * 16, params=5 * 6 * 9 + 10)
    assert c.layers["classifier"] == LayerCost(macs=15, params=18)
    assert c.macs == 6912 + 3456 + 4320 + 15


def test_resnet20_standard_size_and_meta_count_agrees_with_real_module():
    arch = resnet20()
    c = cost(arch)
    # He et al. report 0.27M for ResNet-20; projection shortcuts add 2 x (1x1 conv + BN).
    assert c.params == 272_474
    assert 0.26e6 < c.params < 0.28e6
    assert c.macs == sum(v.macs for v in reference(arch).values()) == 40_813_184
    real = real_macs(arch)
    assert abs(c.macs - real) <= 0.02 * real
    assert c.macs == real  # the meta-device count is in fact exact


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_meta_count_equals_real_count(path):
    arch = Architecture.from_json(path)
    c = cost(arch)
    assert c.macs == real_macs(arch)
    assert c.layers == reference(arch)
    if "macs" in arch.meta:  # the grown examples record their cost
        assert (arch.meta["macs"], arch.meta["params"]) == (c.macs, c.params)


@pytest.mark.parametrize("arch, first", [(TINY_VGG, "stages.0.0"), (TINY_RES, "stem")], ids=["vgg", "resnet"])
def test_training_flops_are_forward_plus_backward(arch, first):
    # Backward of a conv / linear costs two forwards (input and weight gradients) except for
    # the first conv, whose input needs no gradient: 2 * (3 * MACs - MACs_first).
    c = cost(arch)
    assert c.train_flops_per_sample == 2 * (3 * c.macs - c.layers[first].macs)


def test_cost_of_a_dict_and_meta_is_ignored():
    assert cost(TINY_VGG.to_dict()) == cost(TINY_VGG)
    assert cost(TINY_VGG.with_meta(macs=-1)) == cost(TINY_VGG)
    assert isinstance(cost(TINY_VGG), Cost)


def test_cost_is_cached_and_the_cache_cannot_be_corrupted():
    arch = TINY_VGG.with_width("stages.1.1", 11)
    first = cost(arch)
    hits = _cost.cache_info().hits
    first.layers.clear()
    again = cost(arch.with_meta(note="same net"))
    assert _cost.cache_info().hits == hits + 1
    assert again.layers == reference(arch)
    with pytest.raises(AttributeError):
        again.macs = 0  # frozen


def test_cost_leaves_global_state_alone():
    state = torch.random.get_rng_state()
    arch = TINY_RES.with_width("stem", 5)
    with torch.inference_mode():  # callers may sit in no_grad / inference mode
        c = cost(arch)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert c.macs == sum(v.macs for v in reference(arch).values())
    assert torch.get_default_device() == torch.device("cpu")


def test_to_dict_is_plain_json():
    d = cost(TINY_VGG).to_dict()
    assert d["layers"]["classifier"] == {"macs": 15, "params": 18}
    assert set(d) == {"macs", "params", "train_flops_per_sample", "layers"}
