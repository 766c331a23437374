"""The memory estimate before a net is built (grownet.models.estimate_memory / check_memory):
its counts against the modules themselves, and the refusal of nets the machine cannot hold."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from grownet.arch import Architecture
from grownet.cost import cost
from grownet.errors import ArchitectureError
from grownet.models import build_model, check_memory, estimate_memory, memory_limit
from grownet.seeds import preset

ARCHS = {
    "vgg preset": preset("vgg"),
    "resnet preset": preset("resnet"),
    "odd vgg": Architecture("vgg", ((3, 5), (7,), (2,)), input_size=9, in_channels=1, num_classes=4),
    "odd resnet": Architecture("resnet", ({"width": 4, "blocks": [3, 4]}, {"width": 6, "blocks": [5]}), stem=4, input_size=7),
}
#: 64 convs of 65,536 filters: 2.4 million million parameters, tens of TiB to train.
HUGE = Architecture("vgg", ((65536,) * 64,))


def conv_output_elements(arch: Architecture) -> int:
    """Elements of every conv output for one sample, read off a forward pass on the meta device."""
    with torch.device("meta"):
        model = build_model(arch)
    total = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_hook(lambda mod, args, out: total.append(out[0].numel()))
    model.eval()
    model(torch.empty(1, arch.in_channels, arch.input_size, arch.input_size, device="meta"))
    return sum(total)


@pytest.mark.parametrize("name", list(ARCHS))
def test_estimate_counts_what_the_modules_hold(name):
    arch = ARCHS[name]
    est = estimate_memory(arch, batch_size=3)
    assert est.params == cost(arch).params
    assert est.param_bytes == 4 * 5 * est.params  # float32 weight, gradient, V, Gamma, momentum
    per_sample = arch.in_channels * arch.input_size**2 + conv_output_elements(arch)
    assert est.activation_bytes == 4 * 4 * per_sample * 3  # 4 float32 copies per element, batch of 3


def test_the_largest_layer_is_named_by_its_json_field():
    assert estimate_memory(Architecture("vgg", ((8, 64), (4,)))).largest == "stages[0][1]"
    res = Architecture("resnet", ({"width": 8, "blocks": [8, 1000]},), stem=8)
    assert estimate_memory(res).largest == "stages[0].blocks[1]"
    assert estimate_memory(Architecture("resnet", ({"width": 300, "blocks": [8]},), stem=8)).largest == "stages[0].width"


def test_a_net_past_the_limit_is_refused_naming_the_layer():
    arch = Architecture("vgg", ((16, 256), (256,)), input_size=4)  # parameters outweigh activations
    est = estimate_memory(arch)
    assert est.param_bytes > est.activation_bytes
    assert check_memory(arch, limit_bytes=est.param_bytes) == est
    with pytest.raises(ArchitectureError, match=r"^stages\[1\]\[0\]: the net has 630,746 parameters, needing ~12\.0 MiB to "
                                                r"train, more than the 12\.0 MiB limit; use narrower layers$"):
        check_memory(arch, limit_bytes=est.param_bytes - 1)


def test_activations_past_the_limit_are_refused_naming_the_batch_size():
    arch = ARCHS["vgg preset"]
    est = estimate_memory(arch, batch_size=128)
    check_memory(arch, batch_size=128, limit_bytes=est.activation_bytes)
    with pytest.raises(ArchitectureError, match=r"^input_size: 32 px images .* at batch size 128, .*lower data\.batch_size"):
        check_memory(arch, batch_size=128, limit_bytes=est.activation_bytes - 1)


def test_build_model_refuses_a_net_larger_than_the_machine_before_allocating():
    assert memory_limit("cpu") is not None and memory_limit("cpu") < estimate_memory(HUGE).param_bytes
    with pytest.raises(ArchitectureError, match=r"^stages\[0\]\[1\]: the net has 2,435,257,270,282 parameters.*half of this machine's"):
        build_model(HUGE)
    with pytest.raises(ArchitectureError, match="^input_size: 8192 px images"):
        build_model(Architecture("vgg", ((4096,),), input_size=8192))


def test_the_meta_device_builds_anything():
    with torch.device("meta"):
        model = build_model(HUGE)
    assert sum(p.numel() for p in model.parameters()) == estimate_memory(HUGE).params


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_the_limit_is_half_the_gpus_memory():
    assert memory_limit("cuda") == int(torch.cuda.get_device_properties(0).total_memory * 0.5)
    with torch.device("cuda"):
        assert next(build_model(ARCHS["vgg preset"]).parameters()).is_cuda
        with pytest.raises(ArchitectureError, match=r"more than half of the GPU's .* memory"):
            build_model(HUGE)
    with pytest.raises(ArchitectureError, match=r"at batch size 10000000, more than half of the GPU's"):
        check_memory(ARCHS["vgg preset"], batch_size=10_000_000, device="cuda")
