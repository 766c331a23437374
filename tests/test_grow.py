"""grownet.grow: growth preserves the function (eval mode), carries BatchNorm statistics and
DessiLBI state, and rejects growths that cannot be done."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from grownet import grow
from grownet.arch import Architecture, ResStage
from grownet.errors import UsageError
from grownet.models import build_model, has_shortcut, layer_conv_weights
from grownet.optim import DessiLBI, dessilbi_param_groups

VGG = Architecture(family="vgg", stages=((4, 5), (6, 8)), in_channels=3, input_size=8, num_classes=5)
# stem == stages.0 width: block stages.0.0 has no shortcut until one of them grows.
RES = Architecture(
    family="resnet", stem=4, stages=(ResStage(4, (4,)), ResStage(8, (4, 8))), in_channels=3, input_size=8, num_classes=5
)
ARCHS = {"vgg": VGG, "resnet": RES}
LAYERS = [(family, layer) for family, arch in ARCHS.items() for layer in arch.layer_widths()]
RTOL = 1e-5


def _model(arch: Architecture, *, channels_last: bool = False, seed: int = 0) -> nn.Module:
    """A model with non-trivial BatchNorm affine parameters and running statistics, in eval mode."""
    torch.manual_seed(seed)
    model = build_model(arch)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.2)
                m.running_mean.normal_(0.0, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.num_batches_tracked.fill_(7)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model.eval()


def _inputs(n: int = 6, *, channels_last: bool = False, seed: int = 1) -> torch.Tensor:
    x = torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
    return x.to(memory_format=torch.channels_last) if channels_last else x


def _rel_err(new: torch.Tensor, ref: torch.Tensor) -> float:
    return ((new - ref).abs().max() / ref.abs().max()).item()


def _assert_same_function(new_model: nn.Module, ref_out: torch.Tensor, x: torch.Tensor) -> None:
    assert not new_model.training
    with torch.no_grad():
        out = new_model(x)
    assert out.shape == ref_out.shape
    assert _rel_err(out, ref_out) <= RTOL


def _dessilbi(model: nn.Module, *, lr: float = 0.05) -> DessiLBI:
    # mu and lam small enough that filters enter Γ's support within a few steps.
    return DessiLBI(dessilbi_param_groups(model), lr=lr, kappa=1.0, mu=0.5, lam=0.05, momentum=0.9)


def _train(
    model: nn.Module, opt: torch.optim.Optimizer, steps: int, *, seed: int = 2, channels_last: bool = False
) -> list[float]:
    """``steps`` DessiLBI steps in train mode on random data; returns the losses."""
    g = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.train()
    losses = []
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for _ in range(steps):
        x = torch.randn(8, 3, 8, 8, generator=g).to(memory_format=fmt)
        y = torch.randint(0, 5, (8,), generator=g)
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.train(was_training)
    return losses


def _leading(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t[tuple(slice(0, n) for n in like.shape)]


def _new_part(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Entries of ``t`` outside the leading slice of ``like``'s shape."""
    mask = torch.ones_like(t, dtype=torch.bool)
    mask[tuple(slice(0, n) for n in like.shape)] = False
    return t[mask]


# ---- function preservation -----------------------------------------------------------------


@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
@pytest.mark.parametrize("family,layer", LAYERS)
def test_widen_every_layer_preserves_function(family: str, layer: str, channels_last: bool) -> None:
    arch = ARCHS[family]
    model = _model(arch, channels_last=channels_last)
    x = _inputs(channels_last=channels_last)
    with torch.no_grad():
        ref = model(x)
    width = arch.width(layer) + 3
    new_model, new_arch = grow.widen(model, arch, layer, width)
    assert new_arch.width(layer) == width
    assert new_model.arch == new_arch
    params = dict(new_model.named_parameters())
    for name in layer_conv_weights(new_arch, layer):
        assert params[name].shape[0] == width
    if channels_last:
        assert all(p.is_contiguous(memory_format=torch.channels_last) for p in new_model.parameters() if p.dim() == 4)
    _assert_same_function(new_model, ref, x)
    # The old model is untouched (growth is a pure function).
    with torch.no_grad():
        assert torch.equal(model(x), ref)


@pytest.mark.parametrize("layer", ["stem", "stages.0"])
def test_widening_stem_or_residual_creates_identity_shortcut(layer: str) -> None:
    assert not has_shortcut(RES, 0, 0)
    model = _model(RES)
    x = _inputs()
    with torch.no_grad():
        ref = model(x)
    new_model, new_arch = grow.widen(model, RES, layer, 7)
    assert has_shortcut(new_arch, 0, 0)
    sc = new_model.stages[0][0].shortcut
    expected = torch.zeros_like(sc.conv.weight)
    for i in range(4):  # the 4 old channels pass through; new channels are ignored
        expected[i, i, 0, 0] = 1.0
    assert torch.equal(sc.conv.weight, expected)
    assert torch.equal(sc.bn.running_var, torch.full_like(sc.bn.running_var, 1 - sc.bn.eps))
    assert torch.equal(sc.bn.running_mean, torch.zeros_like(sc.bn.running_mean))
    _assert_same_function(new_model, ref, x)


@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
@pytest.mark.parametrize("family,stage", [(f, s) for f, a in ARCHS.items() for s in range(a.num_stages)])
def test_deepen_every_stage_preserves_function(family: str, stage: int, channels_last: bool) -> None:
    arch = ARCHS[family]
    model = _model(arch, channels_last=channels_last)
    x = _inputs(channels_last=channels_last)
    with torch.no_grad():
        ref = model(x)
    new_model, new_arch = grow.deepen(model, arch, stage)
    assert new_arch == arch.with_extra_layer(stage)
    new_index = len(arch.stage_layers(stage)) - (1 if family == "resnet" else 0)
    unit = new_model.stages[stage][new_index]
    if family == "vgg":
        w = unit.conv.weight
        assert torch.equal(w, nn.init.dirac_(torch.empty_like(w)))  # identity kernel
        assert torch.equal(unit.bn.weight, torch.ones_like(unit.bn.weight))
        assert torch.equal(unit.bn.bias, torch.zeros_like(unit.bn.bias))
    else:
        assert unit.shortcut is None
        assert torch.equal(unit.bn2.weight, torch.zeros_like(unit.bn2.weight))
        assert torch.equal(unit.bn2.bias, torch.zeros_like(unit.bn2.bias))
    _assert_same_function(new_model, ref, x)


@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
@pytest.mark.parametrize("family", ["vgg", "resnet"])
def test_chained_growth_preserves_function(family: str, channels_last: bool) -> None:
    arch = ARCHS[family]
    model = _model(arch, channels_last=channels_last)
    x = _inputs(channels_last=channels_last)
    with torch.no_grad():
        ref = model(x)
    first = next(iter(arch.layer_widths()))
    model, arch = grow.widen(model, arch, first, arch.width(first) + 2)
    _assert_same_function(model, ref, x)
    model, arch = grow.deepen(model, arch, 0)
    _assert_same_function(model, ref, x)
    # widen again, now including the layer that was just added, and the last layer
    new_layer = arch.stage_layers(0)[-2 if family == "resnet" else -1]
    last = list(arch.layer_widths())[-1]
    model, arch = grow.apply(model, arch, {new_layer: arch.width(new_layer) + 3, last: arch.width(last) + 1}, [1])
    _assert_same_function(model, ref, x)


def test_apply_grows_several_layers_in_one_rebuild_and_deepens_after_widening() -> None:
    model = _model(VGG)
    x = _inputs()
    with torch.no_grad():
        ref = model(x)
    new_model, new_arch = grow.apply(model, VGG, {"stages.0.1": 9, "stages.1.0": 7}, [0, 0])
    # The two appended convs take the widened width of stage 0's last layer.
    assert new_arch.stages == ((4, 9, 9, 9), (7, 8))
    assert new_arch == grow.grown_arch(VGG, {"stages.0.1": 9, "stages.1.0": 7}, [0, 0])
    _assert_same_function(new_model, ref, x)


def test_result_unpacks_as_model_and_arch() -> None:
    result = grow.widen(_model(VGG), VGG, "stages.0.0", 6)
    assert isinstance(result, grow.Grown)
    model, arch = result
    assert model is result.model and arch is result.arch


# ---- what is carried over ------------------------------------------------------------------


def test_old_tensors_fill_leading_slices_and_new_channels_are_fresh_or_ignored() -> None:
    model = _model(RES)
    old = dict(model.state_dict())
    new_model, _ = grow.widen(model, RES, "stages.1", 11)
    new = new_model.state_dict()
    for name, t in old.items():
        assert torch.equal(_leading(new[name], t), t), name  # weights and BN statistics of old channels
    assert new["stages.1.0.bn2.num_batches_tracked"].item() == 7
    # fresh BN for the 3 new channels of stages.1
    bn = "stages.1.1.bn2"
    assert torch.equal(new[f"{bn}.weight"][8:], torch.ones(3))
    assert torch.equal(new[f"{bn}.bias"][8:], torch.zeros(3))
    assert torch.equal(new[f"{bn}.running_mean"][8:], torch.zeros(3))
    assert torch.equal(new[f"{bn}.running_var"][8:], torch.ones(3))
    # new filters are random; every old filter's fan-in from the new channels is zero
    assert new["stages.1.0.conv2.weight"][8:].abs().sum() > 0
    assert torch.equal(new["stages.1.1.conv1.weight"][:, 8:], torch.zeros(8, 3, 3, 3))
    assert torch.equal(new["classifier.weight"][:, 8:], torch.zeros(5, 3))


def test_new_filters_come_from_the_global_rng() -> None:
    model = _model(VGG)
    torch.manual_seed(123)
    a, _ = grow.widen(model, VGG, "stages.1.0", 9)
    torch.manual_seed(123)
    b, _ = grow.widen(model, VGG, "stages.1.0", 9)
    torch.manual_seed(124)
    c, _ = grow.widen(model, VGG, "stages.1.0", 9)
    wa, wb, wc = (m.stages[1][0].conv.weight[6:] for m in (a, b, c))
    assert torch.equal(wa, wb)
    assert not torch.equal(wa, wc)


def test_keeps_dtype_and_train_mode() -> None:
    model = _model(RES).double().train()
    new_model, _ = grow.widen(model, RES, "stem", 6)
    assert new_model.training and all(m.training for m in new_model.modules())
    assert {p.dtype for p in new_model.parameters()} == {torch.float64}
    assert new_model.stem.bn.num_batches_tracked.dtype == torch.long


@pytest.mark.parametrize("family", ["vgg", "resnet"])
def test_optimizer_state_carried_in_place(family: str) -> None:
    arch = ARCHS[family]
    model = _model(arch)
    opt = _dessilbi(model)
    _train(model, opt, 3)
    opt.param_groups[0]["lr"] = 0.0123  # a current lr that differs from the default
    old_params = dict(model.named_parameters())
    old_buffers = {n: b.clone() for n, b in model.named_buffers()}
    old_state = {n: {k: v.clone() for k, v in opt.state[p].items()} for n, p in old_params.items()}
    name_of = {id(p): n for n, p in old_params.items()}
    old_structure = {name_of[id(p)]: g["structure"] for g in opt.param_groups for p in g["params"]}
    conv = "stages.0.0.conv.weight" if family == "vgg" else "stages.0.0.conv1.weight"
    assert old_state[conv]["gamma"].abs().sum() > 0, "test setup: Γ should be non-zero after training"
    assert old_state[conv]["V"].abs().sum() > 0 and old_state[conv]["momentum_buffer"].abs().sum() > 0

    widths = {layer: w + 2 for layer, w in arch.layer_widths().items()}
    groups_before = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
    defaults_before = dict(opt.defaults)
    new_model, new_arch = grow.apply(model, arch, widths, [1], optimizer=opt)

    # same object, same hyperparameters, now over exactly the new model's parameters
    assert [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups] == groups_before
    assert opt.defaults == defaults_before and opt.param_groups[0]["lr"] == 0.0123
    in_opt = [p for g in opt.param_groups for p in g["params"]]
    assert len(in_opt) == len(set(map(id, in_opt))) == len(list(new_model.parameters()))
    assert {id(p) for p in in_opt} == {id(p) for p in new_model.parameters()}
    # each parameter sits in the group dessilbi_param_groups gives it (old ones in their old group)
    structure = {id(p): g["structure"] for g in opt.param_groups for p in g["params"]}
    for ref in dessilbi_param_groups(new_model):
        for p in ref["params"]:
            assert structure[id(p)] == ref.get("structure")
    new_params = dict(new_model.named_parameters())
    for name, s in old_structure.items():
        assert structure[id(new_params[name])] == s

    new_buffers = dict(new_model.named_buffers())
    for name, b in old_buffers.items():  # BatchNorm statistics of old channels, after training
        assert torch.equal(_leading(new_buffers[name], b), b), name
    for name, p in new_params.items():
        state = opt.state.get(p, {})
        if name in old_state:
            for key, old in old_state[name].items():
                assert torch.equal(_leading(state[key], old), old), (name, key)
                assert not _new_part(state[key], old).any(), (name, key)
                assert state[key].shape == p.shape
        elif structure[id(p)] == "filter":  # a new layer: zero V and Γ, no momentum yet
            assert set(state) == {"V", "gamma"}
            assert not state["V"].any() and not state["gamma"].any()
        else:
            assert not state
    assert {id(p) for p in opt.state} <= {id(p) for p in new_params.values()}  # nothing of the old model left


@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
@pytest.mark.parametrize("family", ["vgg", "resnet"])
def test_grown_model_keeps_training(family: str, channels_last: bool) -> None:
    arch = ARCHS[family]
    model = _model(arch, channels_last=channels_last)
    opt = _dessilbi(model)
    _train(model, opt, 2, channels_last=channels_last)
    model.train()
    first = next(iter(arch.layer_widths()))  # ResNet: the stem, which adds a shortcut to stages.0.0
    model, arch = grow.apply(model, arch, {first: arch.width(first) + 3}, [0], optimizer=opt)
    assert model.training
    for p in model.parameters():  # state laid out like its parameter (fused kernels need it)
        for value in opt.state.get(p, {}).values():
            assert value.shape == p.shape and value.stride() == p.stride()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    losses = _train(model, opt, 2, seed=5, channels_last=channels_last)
    assert all(torch.isfinite(torch.tensor(losses)))
    for name, p in model.named_parameters():
        assert torch.isfinite(p).all(), name
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert len(changed) == len(before)  # every parameter, old and new, moved
    # the grown net can be widened again with the same optimizer
    model, arch = grow.widen(model, arch, "stages.0.0", arch.width("stages.0.0") + 1, optimizer=opt)
    assert all(torch.isfinite(torch.tensor(_train(model, opt, 1, seed=6, channels_last=channels_last))))


def test_optimizer_state_dict_after_growth_loads_into_a_fresh_optimizer() -> None:
    """A checkpoint written after growth resumes into DessiLBI(dessilbi_param_groups(new_model))."""
    model = _model(RES)
    opt = _dessilbi(model)
    _train(model, opt, 2)
    model, _ = grow.apply(model, RES, {"stem": 6, "stages.1.0": 6}, [0, 1], optimizer=opt)
    _train(model, opt, 1)
    fresh = _dessilbi(model)
    fresh.load_state_dict(opt.state_dict())
    for g_old, g_new in zip(opt.param_groups, fresh.param_groups):
        assert [id(p) for p in g_old["params"]] == [id(p) for p in g_new["params"]]
        for p in g_old["params"]:
            assert opt.state[p].keys() == fresh.state[p].keys()
            for key, value in opt.state[p].items():
                assert torch.equal(fresh.state[p][key], value)


def test_new_parameters_of_a_kind_the_optimizer_left_out_stay_out() -> None:
    model = _model(VGG)
    convs = [p for n, p in model.named_parameters() if n.endswith("conv.weight")]
    opt = torch.optim.SGD(convs, lr=0.1)
    model, _ = grow.deepen(model, VGG, 1, optimizer=opt)
    held = {id(p) for p in opt.param_groups[0]["params"]}
    expected = {id(p) for n, p in model.named_parameters() if n.endswith("conv.weight")}
    assert held == expected  # the new conv joined; the new BatchNorm did not, like the old ones


def test_plain_sgd_optimizer_is_carried_too() -> None:
    model = _model(VGG)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    _train(model, opt, 2)
    buf = opt.state[model.stages[1][1].conv.weight]["momentum_buffer"].clone()
    model, _ = grow.apply(model, VGG, {"stages.1.1": 10}, [1], optimizer=opt)
    new_buf = opt.state[model.stages[1][1].conv.weight]["momentum_buffer"]
    assert torch.equal(new_buf[:8], buf) and not new_buf[8:].any()
    assert {id(p) for p in opt.param_groups[0]["params"]} == {id(p) for p in model.parameters()}
    assert all(torch.isfinite(torch.tensor(_train(model, opt, 1))))


# ---- errors --------------------------------------------------------------------------------


def test_unknown_layer() -> None:
    with pytest.raises(UsageError, match=r"unknown layer 'stages\.9\.9'; known layers: stages\.0\.0"):
        grow.widen(_model(VGG), VGG, "stages.9.9", 10)


@pytest.mark.parametrize("width", [4, 3, 0, 4.5, True])
def test_width_must_grow(width: object) -> None:
    with pytest.raises(UsageError, match=r"stages\.0\.0: new width must be an integer greater than the current width 4"):
        grow.widen(_model(VGG), VGG, "stages.0.0", width)  # type: ignore[arg-type]


@pytest.mark.parametrize("stage", [2, -1, "0"])
def test_deepen_unknown_stage(stage: object) -> None:
    with pytest.raises(UsageError, match=r"deepen: stage must be an integer in \[0, 1\]"):
        grow.deepen(_model(RES), RES, stage)  # type: ignore[arg-type]


def test_nothing_to_grow() -> None:
    with pytest.raises(UsageError, match="nothing to grow"):
        grow.apply(_model(VGG), VGG, {}, [])


def test_arch_must_match_model() -> None:
    with pytest.raises(UsageError, match="model was not built from arch"):
        grow.widen(_model(VGG), VGG.with_width("stages.0.0", 6), "stages.0.0", 7)


def test_optimizer_must_hold_the_models_parameters() -> None:
    model = _model(VGG)
    other = DessiLBI(dessilbi_param_groups(_model(VGG, seed=3)))
    with pytest.raises(UsageError, match=r"optimizer: param_groups\[0\] holds a tensor .* not a parameter of model"):
        grow.widen(model, VGG, "stages.0.0", 6, optimizer=other)


def test_growth_that_would_remove_a_projection_shortcut_is_refused() -> None:
    arch = Architecture(family="resnet", stem=4, stages=(ResStage(6, (4,)),), in_channels=3, input_size=8, num_classes=5)
    assert has_shortcut(arch, 0, 0)
    model = _model(arch)
    opt = _dessilbi(model)
    held = [id(p) for g in opt.param_groups for p in g["params"]]
    with pytest.raises(UsageError, match=r"stem=6 .* would remove its projection shortcut"):
        grow.widen(model, arch, "stem", 6, optimizer=opt)
    assert [id(p) for g in opt.param_groups for p in g["params"]] == held  # a refused growth changes nothing
    with pytest.raises(UsageError, match="projection shortcut"):
        grow.grown_arch(arch, {"stem": 9, "stages.0": 9})
