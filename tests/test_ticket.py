"""grownet.ticket: keep sets from Γ's support, masked and physically pruned nets, constant
folding, the ticket job's files and report."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from grownet.arch import Architecture, ResStage
from grownet.cost import cost
from grownet.errors import UsageError
from grownet.models import build_model, layer_conv_weights
from grownet.ticket import (
    FOLD_MODES,
    keep_sets,
    layer_supports,
    mask_model,
    prune_model,
    reduced_arch,
    removed_constants,
    tap_coverage,
    wiring,
)
from grownet.weights import load_model, save_model

VGG = Architecture("vgg", ((8, 6), (10, 12), (12,)), input_size=16)
RESNET_TIED = Architecture("resnet", (ResStage(8, (6, 6)), ResStage(12, (6, 5))), stem=8, input_size=16)  # no stage-0 shortcut
RESNET_PROJ = Architecture("resnet", (ResStage(10, (6, 6)), ResStage(12, (6, 6))), stem=8, input_size=16)  # stage-0 shortcut


def _model(arch: Architecture, seed: int = 0) -> nn.Module:
    """A net with non-trivial BatchNorm (shifts that make removed channels non-zero constants)."""
    torch.manual_seed(seed)
    m = build_model(arch)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.5, 0.5)
                mod.running_mean.uniform_(-0.3, 0.3)
                mod.running_var.uniform_(0.5, 2.0)
    return m.eval()


def _random_supports(arch: Architecture, seed: int, p: float = 0.6) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {layer: torch.rand(w, generator=g) < p for layer, w in arch.layer_widths().items()}


def _x(arch: Architecture, n: int = 8, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, arch.in_channels, arch.input_size, arch.input_size, generator=torch.Generator().manual_seed(seed))


# ---- keep sets ---------------------------------------------------------------------------------


def test_keep_sets_are_the_support_indices():
    sup = {layer: torch.zeros(w, dtype=torch.bool) for layer, w in VGG.layer_widths().items()}
    sup["stages.0.0"][[1, 4, 6]] = True
    sup["stages.1.1"][[0, 11]] = True
    keep = keep_sets(VGG, {k: v | (torch.arange(len(v)) == 2) for k, v in sup.items()})
    assert keep["stages.0.0"] == [1, 2, 4, 6]
    assert keep["stages.1.1"] == [0, 2, 11]
    assert keep["stages.2.0"] == [2]


def test_empty_support_keeps_the_highest_scoring_filter():
    sup = {layer: torch.zeros(w, dtype=torch.bool) for layer, w in VGG.layer_widths().items()}
    scores = {layer: torch.arange(w, dtype=torch.float32) % 5 for layer, w in VGG.layer_widths().items()}
    keep = keep_sets(VGG, sup, scores=scores)
    assert keep == {layer: [4] for layer in VGG.layer_widths()}
    small = reduced_arch(VGG, keep)
    assert set(small.layer_widths().values()) == {1}
    pruned = prune_model(_model(VGG), keep)
    assert pruned.model(_x(VGG)).shape == (8, 10)


def test_residual_width_is_the_union_over_every_producing_conv():
    arch = RESNET_PROJ
    convs = {name: torch.zeros(p.shape[0], dtype=torch.bool) for name, p in build_model(arch).named_parameters() if p.dim() == 4}
    producers = layer_conv_weights(arch, "stages.1")
    assert producers == ["stages.1.0.conv2.weight", "stages.1.1.conv2.weight", "stages.1.0.shortcut.conv.weight"]
    convs[producers[0]][[0, 3]] = True
    convs[producers[1]][[3, 7]] = True
    convs[producers[2]][[11]] = True
    sup = layer_supports(arch, convs)
    assert torch.nonzero(sup["stages.1"]).flatten().tolist() == [0, 3, 7, 11]
    keep = keep_sets(arch, sup)
    assert keep["stages.1"] == [0, 3, 7, 11]
    pruned = prune_model(_model(arch), keep)
    assert pruned.arch.stages[1].width == 4
    sd = pruned.model.state_dict()
    for name in producers:  # every producer of the residual channels has exactly the kept filters
        assert sd[name].shape[0] == 4
    assert sd["stages.1.1.conv1.weight"].shape[1] == 4  # and every consumer the kept fan-in
    assert sd["classifier.weight"].shape[1] == 4


def test_stem_and_stage0_share_residual_channels_without_a_projection_shortcut():
    arch = RESNET_TIED
    convs = {name: torch.zeros(p.shape[0], dtype=torch.bool) for name, p in build_model(arch).named_parameters() if p.dim() == 4}
    convs["stem.conv.weight"][[1]] = True
    convs["stages.0.0.conv2.weight"][[5]] = True
    convs["stages.0.1.conv2.weight"][[2]] = True
    keep = keep_sets(arch, layer_supports(arch, convs))
    assert keep["stem"] == keep["stages.0"] == [1, 2, 5]
    small = reduced_arch(arch, keep)
    assert small.stem == small.stages[0].width == 3
    model = _model(arch)
    with pytest.raises(UsageError, match="stem, stages.0 share residual channels"):
        prune_model(model, {**keep, "stem": [1, 2, 6]})


def test_stage0_projection_shortcut_survives_equal_kept_widths():
    arch = RESNET_PROJ  # stem 8 -> stage 0 width 10: a projection shortcut
    sup = {layer: torch.zeros(w, dtype=torch.bool) for layer, w in arch.layer_widths().items()}
    sup["stem"][[0, 1, 2]] = True
    sup["stages.0"][[4, 5, 6]] = True
    for layer in ("stages.0.0", "stages.0.1", "stages.1.0", "stages.1.1", "stages.1"):
        sup[layer][0] = True
    keep = keep_sets(arch, sup)
    assert len(keep["stem"]) == 4 and len(keep["stages.0"]) == 3  # one more stem filter, so widths differ
    small = prune_model(_model(arch), keep)
    assert "stages.0.0.shortcut.conv.weight" in small.model.state_dict()


def test_bad_keep_sets_are_rejected_by_message():
    model = _model(VGG)
    keep = {layer: list(range(w)) for layer, w in VGG.layer_widths().items()}
    with pytest.raises(UsageError, match=r"keep\['stages.1.0'\]: every layer must keep at least one filter"):
        prune_model(model, {**keep, "stages.1.0": []})
    with pytest.raises(UsageError, match=r"keep\['stages.0.0'\]: indices must be distinct and in \[0, 7\]"):
        prune_model(model, {**keep, "stages.0.0": [0, 8]})
    with pytest.raises(UsageError, match="fold: must be one of mean, interior, none"):
        prune_model(model, keep, fold="edge")
    with pytest.raises(UsageError, match=r"supports\['stages.0.0'\]: 3 entries, but the layer has width 8"):
        keep_sets(VGG, {**_random_supports(VGG, 0), "stages.0.0": torch.ones(3, dtype=torch.bool)})


# ---- the pruned net: widths, cost, weights --------------------------------------------------------


def _independent_vgg_cost(arch: Architecture) -> tuple[int, int]:
    """MACs (convs + classifier) and parameters (conv weights, BN weight+bias, classifier) by hand."""
    macs = params = 0
    cin, side = arch.in_channels, arch.input_size
    for s, stage in enumerate(arch.stages):
        if s:
            side //= 2
        for w in stage:
            macs += side * side * 9 * cin * w
            params += 9 * cin * w + 2 * w
            cin = w
    macs += cin * arch.num_classes
    params += cin * arch.num_classes + arch.num_classes
    return macs, params


def test_pruned_vgg_parameters_and_macs_match_the_kept_widths():
    keep = keep_sets(VGG, _random_supports(VGG, 3))
    pruned = prune_model(_model(VGG), keep)
    widths = {layer: len(idx) for layer, idx in keep.items()}
    assert pruned.arch.layer_widths() == widths
    c = cost(pruned.arch)
    macs, params = _independent_vgg_cost(pruned.arch)
    assert (c.macs, c.params) == (macs, params)
    assert sum(p.numel() for p in pruned.model.parameters()) == params
    assert c.params < cost(VGG).params


def test_pruned_weights_are_slices_of_the_dense_weights():
    dense = _model(VGG)
    keep = keep_sets(VGG, _random_supports(VGG, 4))
    sd = prune_model(dense, keep, fold="none").model.state_dict()
    d = dense.state_dict()
    o, i = keep["stages.1.0"], keep["stages.0.1"]
    assert torch.equal(sd["stages.1.0.conv.weight"], d["stages.1.0.conv.weight"][o][:, i])
    for key in ("weight", "bias", "running_mean", "running_var"):
        assert torch.equal(sd[f"stages.1.0.bn.{key}"], d[f"stages.1.0.bn.{key}"][o])
    assert torch.equal(sd["classifier.weight"], d["classifier.weight"][:, keep["stages.2.0"]])


@pytest.mark.parametrize("arch", [VGG, RESNET_TIED, RESNET_PROJ], ids=["vgg", "resnet-tied", "resnet-proj"])
def test_ticket_files_load_with_load_model_and_give_the_same_outputs(tmp_path, arch):
    pruned = prune_model(_model(arch), keep_sets(arch, _random_supports(arch, 5)))
    pruned.arch.save(tmp_path / "architecture.json")
    save_model(pruned.model, tmp_path / "weights.pt")
    loaded = load_model(tmp_path / "architecture.json", tmp_path / "weights.pt")
    x = _x(arch)
    with torch.no_grad():
        assert torch.equal(loaded(x), pruned.model(x))


def test_keeping_everything_is_the_identity():
    for arch in (VGG, RESNET_TIED, RESNET_PROJ):
        dense = _model(arch)
        full = {layer: list(range(w)) for layer, w in arch.layer_widths().items()}
        pruned = prune_model(dense, full)
        assert pruned.arch == arch and pruned.folds == []
        with torch.no_grad():
            assert torch.equal(pruned.model(_x(arch)), dense(_x(arch)))


# ---- masked net and folding --------------------------------------------------------------------


def test_masked_net_zeroes_every_producer_of_removed_channels():
    arch = RESNET_PROJ
    keep = keep_sets(arch, _random_supports(arch, 6))
    masked = mask_model(_model(arch), keep)
    params = dict(masked.named_parameters())
    for layer, idx in keep.items():
        removed = [i for i in range(arch.width(layer)) if i not in idx]
        for name in layer_conv_weights(arch, layer):
            assert params[name][removed].abs().sum() == 0
            assert params[name][idx].abs().sum() > 0


def test_removed_channel_constant_is_relu_of_the_bn_shift():
    dense = _model(VGG)
    keep = keep_sets(VGG, _random_supports(VGG, 7))
    consts = removed_constants(mask_model(dense, keep), keep)
    bn = dense.stages[0][0].bn
    removed = [i for i in range(8) if i not in keep["stages.0.0"]]
    shift = bn.bias - bn.running_mean * bn.weight / torch.sqrt(bn.running_var + bn.eps)
    torch.testing.assert_close(consts["stages.0.1.conv"], F.relu(shift[removed]).double(), rtol=1e-6, atol=1e-6)


def test_fold_into_the_classifier_is_exact():
    """Removing filters of the last VGG layer only: the constant reaches the classifier through
    global average pooling and folds exactly into its bias."""
    dense = _model(VGG)
    keep = {layer: list(range(w)) for layer, w in VGG.layer_widths().items()}
    keep["stages.2.0"] = [0, 3, 4, 9]
    pruned = prune_model(dense, keep)
    assert [f.module for f in pruned.folds] == ["classifier"] and pruned.exact
    assert pruned.folds[0].nonzero > 0
    masked = mask_model(dense, keep)
    with torch.no_grad():
        torch.testing.assert_close(pruned.model(_x(VGG)), masked(_x(VGG)), rtol=1e-5, atol=1e-5)
        assert (prune_model(dense, keep, fold="none").model(_x(VGG)) - masked(_x(VGG))).abs().max() > 1e-3


def test_fold_through_a_1x1_shortcut_is_exact():
    """Removing stem channels of a ResNet whose stage 0 has a projection shortcut: the 1x1
    shortcut (no padding) folds exactly; conv1 (3x3, padding 1) differs only at the border."""
    arch = RESNET_PROJ
    dense = _model(arch)
    keep = {layer: list(range(w)) for layer, w in arch.layer_widths().items()}
    keep["stem"] = [0, 2, 5]
    pruned = prune_model(dense, keep, fold="interior")
    by_module = {f.module: f for f in pruned.folds}
    assert by_module["stages.0.0.shortcut.conv"].exact
    assert not by_module["stages.0.0.conv1"].exact
    x = _x(arch)
    outs = {}
    for name, model in (("masked", mask_model(dense, keep)), ("pruned", pruned.model)):
        hooks = [model.get_submodule(m).register_forward_hook(lambda mod, a, out, m=m: outs.__setitem__((name, m), out))
                 for m in ("stages.0.0.shortcut.bn", "stages.0.0.bn1")]
        with torch.no_grad():
            model(x)
        for h in hooks:
            h.remove()
    torch.testing.assert_close(outs["pruned", "stages.0.0.shortcut.bn"], outs["masked", "stages.0.0.shortcut.bn"],
                               rtol=1e-5, atol=1e-5)
    inner = (slice(None), slice(None), slice(1, -1), slice(1, -1))
    a, b = outs["pruned", "stages.0.0.bn1"], outs["masked", "stages.0.0.bn1"]
    torch.testing.assert_close(a[inner], b[inner], rtol=1e-5, atol=1e-5)
    assert (a - b).abs().max() > 1e-4  # the border is where the interior fold is approximate


def test_interior_fold_is_exact_away_from_the_border():
    dense = _model(VGG)
    keep = {layer: list(range(w)) for layer, w in VGG.layer_widths().items()}
    keep["stages.0.0"] = [1, 2, 6]
    outs = {}
    for name, model in (("masked", mask_model(dense, keep)), ("pruned", prune_model(dense, keep, fold="interior").model)):
        h = model.get_submodule("stages.0.1.bn").register_forward_hook(lambda m, a, out, n=name: outs.__setitem__(n, out))
        with torch.no_grad():
            model(_x(VGG))
        h.remove()
    torch.testing.assert_close(outs["pruned"][..., 1:-1, 1:-1], outs["masked"][..., 1:-1, 1:-1], rtol=1e-5, atol=1e-5)


def test_tap_coverage_counts_in_image_positions():
    conv = nn.Conv2d(1, 1, 3, padding=1)
    cov = tap_coverage(conv, (4, 4))  # corner taps miss one row/column of 4
    torch.testing.assert_close(cov, torch.outer(torch.tensor([0.75, 1.0, 0.75]), torch.tensor([0.75, 1.0, 0.75])).double())
    assert torch.equal(tap_coverage(nn.Conv2d(1, 1, 1, stride=2), (8, 8)), torch.ones(1, 1, dtype=torch.float64))


def test_mean_fold_matches_the_masked_mean_shift():
    """With fold="mean" the BN after a 3x3 consumer sees, averaged over positions, exactly the
    masked net's input."""
    dense = _model(VGG)
    keep = {layer: list(range(w)) for layer, w in VGG.layer_widths().items()}
    keep["stages.1.0"] = [0, 4, 5]
    outs = {}
    for name, model in (("masked", mask_model(dense, keep)), ("pruned", prune_model(dense, keep, fold="mean").model)):
        h = model.get_submodule("stages.1.1.bn").register_forward_hook(lambda m, a, out, n=name: outs.__setitem__(n, out))
        with torch.no_grad():
            model(_x(VGG))
        h.remove()
    torch.testing.assert_close(outs["pruned"].mean((0, 2, 3)), outs["masked"].mean((0, 2, 3)), rtol=1e-5, atol=1e-5)


def test_wiring_lists_every_conv_and_the_classifier_once():
    for arch in (VGG, RESNET_TIED, RESNET_PROJ):
        model = build_model(arch)
        convs = {n.removesuffix(".weight") for n, p in model.named_parameters() if p.dim() == 4}
        w = wiring(arch)
        assert {c.module for c in w if c.out_layer is not None} == convs
        assert [c.module for c in w][-1] == "classifier" and len(w) == len(convs) + 1
        assert FOLD_MODES == ("mean", "interior", "none")


# ---- the ticket job: files, numbers, report, CLI ----------------------------------------------------


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny nets train faster on one thread, above all on a shared CPU."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _gratings(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """4 classes of noisy coloured gratings (horizontal, vertical, two diagonals), uint8."""
    g = np.random.default_rng(seed)
    y = g.integers(0, 4, n)
    i = np.arange(size, dtype=np.float64)
    r, c = np.meshgrid(i, i, indexing="ij")
    coords = np.stack([r, c, (r + c) / 1.4142, (r - c) / 1.4142])
    period = 3 + 4 * g.random(n)
    phase = 2 * np.pi * g.random(n)
    wave = np.sin(2 * np.pi * coords[y] / period[:, None, None] + phase[:, None, None])
    colour = g.random((n, 3)) * 2 - 1
    x = wave[:, None] * colour[:, :, None, None] + 0.5 * g.standard_normal((n, 3, size, size))
    return np.clip(128 + 60 * x, 0, 255).astype(np.uint8), y.astype(np.int64)


@pytest.fixture(scope="module")
def npz(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("data") / "gratings.npz"
    x_train, y_train = _gratings(480, 16, 1)
    x_test, y_test = _gratings(160, 16, 2)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return f"npz:{path}"


TINY = Architecture("vgg", ((8,), (12, 12)), input_size=16, num_classes=4)
OVERRIDES = {"data.val_size": 96, "data.batch_size": 32, "data.eval_batch_size": 200, "optim.mu": 1.0,
             "finetune.optimizer": "sgd", "finetune.lr": 0.05}


@pytest.fixture(scope="module")
def job(tmp_path_factory, npz):
    from grownet.ticket import ticket

    out = tmp_path_factory.mktemp("runs") / "ticket <b>&amp;"  # a name that must be escaped in the report
    result = ticket(TINY, epochs=3, at_epoch=2, finetune_epochs=2, dataset=npz, out=out, overrides=OVERRIDES,
                    device="cpu", seed=3)
    return result, out


def _dessilbi_ticket(arch: Architecture, seed: int, steps: int = 60) -> tuple[nn.Module, dict[str, list[int]]]:
    """A net trained ``steps`` DessiLBI steps on gratings, and the keep sets of its Γ support."""
    from grownet.optim import DessiLBI, dessilbi_param_groups
    from grownet.ticket import filter_scores, filter_support

    torch.manual_seed(seed)
    model = build_model(arch)
    opt = DessiLBI(dessilbi_param_groups(model), lr=0.05, mu=1.0)
    for step in range(steps):
        x, y = _gratings(32, arch.input_size, 1000 * seed + step)
        loss = F.cross_entropy(model((torch.from_numpy(x).float() - 128) / 64), torch.from_numpy(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
    keep = keep_sets(arch, layer_supports(arch, filter_support(model, opt)), scores=filter_scores(arch, model, opt))
    return model.eval(), keep


@pytest.mark.parametrize("arch", [
    Architecture("vgg", ((8, 8), (12, 12)), input_size=32, num_classes=4),
    Architecture("resnet", (ResStage(10, (6,)), ResStage(12, (6,))), stem=8, input_size=16, num_classes=4),
], ids=["vgg", "resnet"])
def test_pruned_accuracy_on_a_fixed_batch_is_within_half_a_point_of_the_masked_net(arch):
    """Real tickets (Γ's support after 60 DessiLBI steps, seeds 0-7) on 400 fixed images (32x32
    for the VGG, 16x16 for the ResNet: a quarter of the cost, six informative tickets), those
    that prune something from a net that works (masked accuracy > 0.5; chance is 0.25): the
    folded, pruned net scores within 0.5 points (2 images) of the masked net on all but at most
    one, and within 2 points on every one (the fold is approximate where a pruned filter's BN
    mean is not constant: one VGG seed is off by 4-6 images, whichever float32 rounding the
    optimizer's path takes); without folding the same tickets are off by over 4x as many."""
    x, y = _gratings(400, arch.input_size, 7)
    x, y = (torch.from_numpy(x).float() - 128) / 64, torch.from_numpy(y)

    def acc(net: nn.Module) -> float:
        with torch.no_grad():
            return (net(x).argmax(1) == y).float().mean().item()

    folded, unfolded = [], []
    for seed in range(8):
        model, keep = _dessilbi_ticket(arch, seed=seed)
        masked = acc(mask_model(model, keep))
        if masked > 0.5 and any(len(idx) < arch.width(layer) for layer, idx in keep.items()):
            folded.append(abs(acc(prune_model(model, keep).model) - masked))
            unfolded.append(abs(acc(prune_model(model, keep, fold="none").model) - masked))
    assert len(folded) >= 3, "too few informative tickets"
    assert sum(f > 0.005 for f in folded) <= 1 and max(folded) <= 0.02, folded
    assert sum(unfolded) > 4 * sum(folded), (folded, unfolded)


def test_supports_json_records_every_epoch_and_the_ticket(job):
    result, out = job
    data = json.loads((out / "supports.json").read_text())
    assert data["format"] == "grownet.supports" and data["at_epoch"] == 2
    assert sorted(data["sizes"], key=int) == ["1", "2", "3"]
    for epoch, bits in data["supports"].items():
        for layer, text in bits.items():
            assert len(text) == TINY.width(layer)
            assert data["sizes"][epoch][layer] == text.count("1") == result.support_sizes[int(epoch)][layer]
    for layer, idx in data["keep"].items():  # the ticket keeps epoch 2's support (at least one filter)
        support = [i for i, b in enumerate(data["supports"]["2"][layer]) if b == "1"]
        assert idx == support or (not support and len(idx) == 1)
    assert data["keep"] == result.keep


def test_ticket_files_reproduce_from_the_epoch_checkpoint(job):
    from grownet.ticket import prune_model

    result, out = job
    ckpt = torch.load(out / "checkpoints" / "epoch-2.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["keep"] == result.keep
    dense = build_model(Architecture.from_dict(ckpt["arch"]))
    dense.load_state_dict(ckpt["model"])
    rebuilt = prune_model(dense.eval(), ckpt["keep"], fold=result.fold)
    arch = Architecture.from_json(out / "ticket" / "architecture.json")
    assert arch == rebuilt.arch == result.arch
    assert arch.layer_widths() == {layer: len(idx) for layer, idx in result.keep.items()}
    loaded = load_model(out / "ticket" / "architecture.json", out / "ticket" / "weights.pt")
    x = _x(TINY, n=4)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), rebuilt.model(x), rtol=1e-5, atol=1e-5)
    final = load_model(out / "architecture.json", out / "weights.pt")  # the fine-tuned ticket
    assert final.arch == arch


def test_comparison_numbers_are_consistent(job):
    result, out = job
    summary = json.loads((out / "summary.json").read_text())
    rows = {s["name"]: s for s in summary["scores"]}
    assert list(rows) == ["dense", "masked", "ticket", "finetuned", "fresh"]
    assert (rows["dense"]["macs"], rows["dense"]["params"]) == (cost(TINY).macs, cost(TINY).params)
    assert rows["masked"]["macs"] == rows["dense"]["macs"]  # masking removes nothing physically
    small = cost(result.arch)
    for name in ("ticket", "finetuned", "fresh"):
        assert (rows[name]["macs"], rows[name]["params"]) == (small.macs, small.params)
    assert rows["ticket"]["test_acc"] == summary["fold_check"][result.fold]["test_acc"]
    assert set(summary["fold_check"]) == {"interior", "mean", "none"}
    assert rows["finetuned"]["test_acc"] == summary["test_acc"]
    assert 3 <= rows["finetuned"]["epoch"] <= 5 and 1 <= rows["fresh"]["epoch"] <= 2  # best validation epochs
    arch_meta = json.loads((out / "architecture.json").read_text())["meta"]
    assert arch_meta["test_acc"] == rows["finetuned"]["test_acc"] and arch_meta["macs"] == small.macs
    history = (out / "history.csv").read_text().splitlines()
    phases = [line.split(",")[2] for line in history[1:]]
    assert phases == ["dense"] * 3 + ["finetune"] * 2
    fresh = json.loads((out / "controls" / "fresh" / "summary.json").read_text())
    assert fresh["test_acc"] == rows["fresh"]["test_acc"]


def test_report_shows_every_section_and_escapes_text(job):
    from grownet.ticket import REPORT_SECTIONS

    _, out = job
    text = (out / "report.html").read_text()
    for anchor, _label in REPORT_SECTIONS:
        assert f'id="{anchor}"' in text
    assert "ticket &lt;b&gt;&amp;amp;" in text and "<b>&amp;" not in text
    assert "http://" not in text and "https://" not in text
    assert text.count("data:image/svg+xml;base64,") == 3  # supports, comparison, curves


def test_bad_arguments_are_rejected_by_message(npz):
    from grownet.ticket import ticket

    with pytest.raises(UsageError, match=r"--at-epoch: must be at most --epochs \(2\), got 3"):
        ticket(TINY, epochs=2, at_epoch=3, dataset=npz)
    with pytest.raises(UsageError, match=r"--epochs: must be an integer in \[1, 9223372036854775807\], got 0"):
        ticket(TINY, epochs=0, dataset=npz)
    with pytest.raises(UsageError, match="--fold: must be one of mean, interior, none, got 'edges'"):
        ticket(TINY, epochs=1, dataset=npz, fold="edges")
    with pytest.raises(UsageError, match="--arch: the architecture has num_classes 10, the dataset needs 4"):
        ticket(VGG.with_meta(), epochs=1, dataset=npz, overrides=OVERRIDES, device="cpu")


def test_cli_ticket_writes_a_resnet_ticket(tmp_path, npz, capsys):
    from grownet.cli import main

    arch = Architecture("resnet", (ResStage(6, (4,)), ResStage(8, (4,))), stem=6, input_size=16, num_classes=4)
    arch.save(tmp_path / "arch.json")
    flags = [f"--{k}={v}" for k, v in OVERRIDES.items()]
    out = tmp_path / "out"
    code = main(["ticket", "--arch", str(tmp_path / "arch.json"), "--dataset", npz, "--epochs", "1",
                 "--finetune-epochs", "1", "--device", "cpu", "--out", str(out), "--quiet", *flags])
    assert code == 0
    ticket_arch = Architecture.from_json(out / "architecture.json")
    keep = json.loads((out / "supports.json").read_text())["keep"]
    assert ticket_arch.stem == ticket_arch.stages[0].width == len(keep["stem"]) == len(keep["stages.0"])
    assert main(["ticket", "--preset", "vgg16", "--dataset", npz, "--epochs", "1", "--at-epoch", "2",
                 "--out", str(tmp_path / "x")]) == 2
    assert "grownet: error: --at-epoch: must be at most --epochs (1), got 2" in capsys.readouterr().err


# ---- divergence: the one policy of grownet.loop ----------------------------------------------------------

#: A coupling 1/nu a million times the default's: DessiLBI's W - Γ is amplified at every step
#: and the dense net's loss turns non-finite within its first epoch unless the rate drops.
DIVERGING = {**OVERRIDES, "optim.mu": 1e-6}


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device"))])
def test_a_diverging_ticket_retries_at_the_lowered_rate_and_records_the_event(tmp_path, npz, device):
    from grownet.ticket import ticket

    result = ticket(TINY, epochs=1, finetune_epochs=1, dataset=npz, out=tmp_path / "t", device=device, seed=3,
                    overrides={**DIVERGING, "run.retry_lr_factor": 1e-6})
    assert [e["phase"] for e in result.events] == ["dense"]
    assert "retrying with lr x 1e-06" in result.events[0]["detail"]
    assert json.loads((tmp_path / "t" / "summary.json").read_text())["events"] == list(result.events)


def test_a_ticket_that_keeps_diverging_stops_with_a_divergence_error(tmp_path, npz):
    from grownet.errors import DivergenceError
    from grownet.ticket import ticket

    with pytest.raises(DivergenceError, match=r"the loss was non-finite 1 times \(run\.max_retries 0\); it stopped at its "
                                              r"last good state \(epoch 0\); lower optim\.lr and start again"):
        ticket(TINY, epochs=2, finetune_epochs=1, dataset=npz, out=tmp_path / "t", device="cpu", seed=3,
               overrides={**DIVERGING, "run.max_retries": 0})
    assert (tmp_path / "t" / "config.json").exists() and not (tmp_path / "t" / "summary.json").exists()
    assert "gave up after 0 retries" in (tmp_path / "t" / "grownet.log").read_text()
