"""grownet.families: the layer, conv and shortcut records an Architecture hands out agree with
the modules its family builds (names, stages, channels, strides, output sizes, Γ groups), and
growth's new modules are the ones the family names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

from grownet import grow
from grownet.arch import FAMILIES, Architecture, ResStage
from grownet.errors import ArchitectureError
from grownet.families import FAMILIES as RULES
from grownet.families import layer_name, parse_layer_name
from grownet.models import build_model
from grownet.optim import dessilbi_param_groups

DATA = Path(__file__).resolve().parent / "data"
ARCHS = {
    "vgg": Architecture("vgg", ((4,), (6, 5), (7,)), input_size=9, num_classes=3),
    "vgg_grown": Architecture.from_json(DATA / "vgg_grown.json"),
    # stem 3 -> stage width 6: block stages.0.0 projects
    "resnet_projection": Architecture("resnet", (ResStage(6, (4, 5)), ResStage(8, (7,))), stem=3, input_size=9,
                                      num_classes=3),
    # stem == stage 0's width: stem and stages.0 are the same channels
    "resnet_tied": Architecture("resnet", (ResStage(4, (4, 3)), ResStage(8, (5, 6)), ResStage(8, (2,))), stem=4,
                                input_size=9),
    "resnet_grown": Architecture.from_json(DATA / "resnet_grown.json"),
}


def _build(arch: Architecture) -> tuple[dict[str, nn.Module], dict[str, tuple[int, ...]], list[str]]:
    """The model's modules by name, each module's output shape (one image, meta device) and
    the order in which its convs ran."""
    with torch.device("meta"):
        model = build_model(arch)
    model.eval()
    shapes: dict[str, tuple[int, ...]] = {}
    ran: list[str] = []

    def hook(name: str):
        def record(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
            shapes[name] = tuple(out.shape[1:])
            if isinstance(module, nn.Conv2d):
                ran.append(name)
        return record

    for name, m in model.named_modules():
        if name:
            m.register_forward_hook(hook(name))
    with torch.no_grad():
        model(torch.empty(1, arch.in_channels, arch.input_size, arch.input_size, device="meta"))
    return dict(model.named_modules()), shapes, ran


def _field(data: dict, path: str) -> int:
    """The value at a field path such as ``stages[2].blocks[1]`` of an architecture dict."""
    value = data
    for key, index in re.findall(r"(\w+)|\[(\d+)\]", path):
        value = value[key] if key else value[int(index)]
    return value


@pytest.mark.parametrize("arch", ARCHS.values(), ids=ARCHS)
def test_layer_records_match_the_built_modules(arch: Architecture) -> None:
    modules, _, _ = _build(arch)
    data = arch.to_dict()
    assert [layer.name for layer in arch.layers] == list(arch.layer_widths())
    for layer in arch.layers:
        assert _field(data, layer.field) == layer.width == layer.out_channels
        assert len(layer.convs) == len(layer.bns) >= 1
        for conv, bn in zip(layer.convs, layer.bns):
            assert isinstance(modules[conv], nn.Conv2d) and modules[conv].out_channels == layer.width
            assert isinstance(modules[bn], nn.BatchNorm2d) and modules[bn].num_features == layer.width
            assert conv.rsplit(".", 1)[0] == bn.rsplit(".", 1)[0]  # the BatchNorm beside its conv
        assert layer.modules == [m for pair in zip(layer.convs, layer.bns) for m in pair]
        assert layer.conv_weights == [f"{c}.weight" for c in layer.convs]
        assert layer.bn_weights == [f"{b}.weight" for b in layer.bns]
        # in_channels: what the layer's unit reads (a residual width: its stage's first block's input)
        first = layer.convs[0] if layer.kind != "residual" else f"{layer_name(layer.stage, 0)}.conv1"
        assert modules[first].in_channels == layer.in_channels


@pytest.mark.parametrize("arch", ARCHS.values(), ids=ARCHS)
def test_layer_stage_index_and_kind_follow_the_name(arch: Architecture) -> None:
    kinds = {"vgg": {"conv"}, "resnet": {"stem", "inner", "residual"}}[arch.family]
    for layer in arch.layers:
        assert layer.kind in kinds
        if layer.kind == "stem":
            assert (layer.name, layer.stage, layer.index) == ("stem", 0, None)
        else:
            assert parse_layer_name(layer.name) == (layer.stage, layer.index)
            assert (layer.index is None) == (layer.kind == "residual")
    for s in range(arch.num_stages):
        indexed = [layer.index for layer in arch.layers if layer.stage == s and layer.index is not None]
        assert indexed == list(range(arch.depth(s)))
        assert arch.stage_layers(s) == [l.name for l in arch.layers if l.stage == s and l.kind != "stem"]
        assert arch.extra_layer_name(s) == layer_name(s, arch.depth(s))
        assert arch.extra_layer_name(s) in arch.with_extra_layer(s).layer_widths()


@pytest.mark.parametrize("arch", ARCHS.values(), ids=ARCHS)
def test_conv_records_are_every_conv_in_forward_order(arch: Architecture) -> None:
    modules, shapes, ran = _build(arch)
    widths = arch.layer_widths()
    assert [c.module for c in arch.convs] == ran
    assert {c.module for c in arch.convs} == {n for n, m in modules.items() if isinstance(m, nn.Conv2d)}
    for c in arch.convs:
        m = modules[c.module]
        assert (m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding) == (
            c.in_channels, c.out_channels, (c.kernel, c.kernel), (c.stride, c.stride), (c.kernel // 2, c.kernel // 2))
        assert shapes[c.module] == shapes[c.bn] == (c.out_channels, c.size, c.size)
        assert c.out_channels == widths[c.out_layer]
        assert c.in_channels == (arch.in_channels if c.in_layer is None else widths[c.in_layer])
        assert c.module in arch.layer(c.out_layer).convs


@pytest.mark.parametrize("arch", ARCHS.values(), ids=ARCHS)
def test_every_layer_carries_gamma_as_the_optimizer_groups_it(arch: Architecture) -> None:
    model = build_model(arch)
    names = {id(p): n for n, p in model.named_parameters()}
    groups = dessilbi_param_groups(model)
    structured = {names[id(p)] for g in groups if g.get("structure") == "filter" for p in g["params"]}
    for layer in arch.layers:
        assert layer.gamma == all(w in structured for w in layer.conv_weights) == True  # noqa: E712


def test_shortcut_records_match_the_blocks() -> None:
    for arch in (a for a in ARCHS.values() if a.family == "resnet"):
        model = build_model(arch)
        assert [(sc.stage, sc.index) for sc in arch.shortcuts] == [
            (s, b) for s, st in enumerate(arch.stages) for b in range(len(st.blocks))]
        for sc in arch.shortcuts:
            block = model.get_submodule(sc.block)
            assert sc.projection == (block.shortcut is not None)
            assert sc.module == (f"{sc.block}.shortcut" if sc.projection else None)
            assert block.conv1.stride == (sc.stride, sc.stride)
            assert block.conv1.in_channels == arch.width(sc.in_layer)
            assert block.conv2.out_channels == arch.width(sc.out_layer)
    assert ARCHS["vgg"].shortcuts == ()
    tied = ARCHS["resnet_tied"].shortcuts[0]
    assert (tied.in_layer, tied.out_layer, tied.tied, tied.by_width) == ("stem", "stages.0", True, False)
    proj = ARCHS["resnet_projection"].shortcuts
    assert (proj[0].tied, proj[0].by_width) == (False, True)  # stem 3 -> stage width 6
    assert (proj[2].tied, proj[2].by_width) == (False, False)  # stride 2: always a projection


def test_residual_producers_keep_their_summing_order() -> None:
    # Every block's conv2, then the projection: the order the growth signal sums in.
    layer = ARCHS["resnet_projection"].layer("stages.0")
    assert layer.convs == ("stages.0.0.conv2", "stages.0.1.conv2", "stages.0.0.shortcut.conv")
    assert layer.bns == ("stages.0.0.bn2", "stages.0.1.bn2", "stages.0.0.shortcut.bn")
    assert ARCHS["resnet_tied"].layer("stages.0").convs == ("stages.0.0.conv2", "stages.0.1.conv2")


@pytest.mark.parametrize("name, parsed", [
    ("stages.0", (0, None)), ("stages.12.3", (12, 3)), ("stem", None), ("classifier", None), ("stages.x", None),
    ("stages.1.2.3", None), ("stages.-1", None), ("stages.1.", None),
])
def test_layer_name_grammar(name: str, parsed) -> None:
    assert parse_layer_name(name) == parsed
    if parsed is not None:
        assert layer_name(*parsed) == name


def test_records_are_built_once_and_stay_out_of_equality() -> None:
    arch = ARCHS["resnet_grown"]
    assert arch.layers is arch.layers and arch.convs is arch.convs and arch.shortcuts is arch.shortcuts
    again = Architecture.from_dict(arch.to_dict())
    assert again == arch and hash(again) == hash(arch)
    assert again.to_dict() == arch.to_dict() and "layers" not in arch.to_dict()


def test_unknown_layer_names_its_known_ones() -> None:
    with pytest.raises(ArchitectureError, match=r"unknown layer 'stages.9'; known layers: stages.0.0, stages.1.0"):
        ARCHS["vgg"].layer("stages.9")


def test_with_widths_sets_several_layers_and_drops_meta() -> None:
    arch = ARCHS["resnet_grown"].with_meta(note="x")
    grown = arch.with_widths({"stem": 40, "stages.1.0": 33})
    assert grown.width("stem") == 40 and grown.width("stages.1.0") == 33 and grown.meta == {}
    assert grown == arch.with_width("stem", 40).with_width("stages.1.0", 33)
    with pytest.raises(ArchitectureError, match="stages.0: width must be a positive integer"):
        arch.with_widths({"stages.0": 0})


@pytest.mark.parametrize("key", ["vgg", "resnet_tied", "resnet_projection"])
def test_growth_initialises_exactly_the_units_the_family_names(key: str) -> None:
    arch = ARCHS[key]
    widen = {"stages.0.0": arch.width("stages.0.0") + 2}
    if arch.family == "resnet":
        widen["stages.0"] = arch.width("stem") + 5  # the tied stem/stage 0 gain a projection
    new = grow.grown_arch(arch, widen, (0, 1))
    units = new.rules.new_units(arch, new)
    torch.manual_seed(0)
    old_model, new_model = build_model(arch), build_model(new)
    new_names = {n for n, _ in new_model.named_modules()} - {n for n, _ in old_model.named_modules()}
    assert {u.module for u in units} == {n for n in new_names if not any(n.startswith(m + ".") for m in new_names)}
    for u in units:
        assert u.init in ("identity", "zero")
        assert isinstance(new_model.get_submodule(u.bn), nn.BatchNorm2d)
        assert u.conv is None or isinstance(new_model.get_submodule(u.conv), nn.Conv2d)
    projections = [u for u in units if u.channels is not None]
    assert len(projections) == (1 if key == "resnet_tied" else 0)


def test_the_registry_is_the_architecture_families() -> None:
    assert FAMILIES == tuple(RULES) == ("vgg", "resnet")
    assert [RULES[f].has_stem for f in FAMILIES] == [False, True]
    with pytest.raises(ArchitectureError, match="stem: only family 'resnet' has a stem; remove it"):
        Architecture("vgg", ((4,),), stem=4)
