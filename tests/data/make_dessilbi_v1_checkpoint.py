"""Writes dessilbi_v1_checkpoint.pt: DessiLBI checkpoints in the format of grownet before the
per-filter-scale state (commit d631e73, where Γ was a stored state tensor), with the run each
one continues into, for tests/test_optim.py::test_a_checkpoint_of_the_previous_format_resumes.

Run from the repository root at that commit: ``PYTHONPATH=. python tests/data/make_dessilbi_v1_checkpoint.py``.
For each family (a VGG and a ResNet seed from grownet.seeds, float32): 10 DessiLBI steps, then
the model and optimizer state dicts (the checkpoint), then 6 more steps, then the parameters
and optimizer state dict that the 6 steps after the checkpoint must reproduce.
"""

from pathlib import Path

import torch
import torch.nn.functional as F

from grownet import seeds
from grownet.models import build_model
from grownet.optim import DessiLBI, dessilbi_param_groups

HP = dict(lr=0.1, kappa=2.0, mu=5.0, lam=0.25, momentum=0.9)
ARCHS = {
    "vgg": seeds.vgg(4, (1, 2), input_size=8, num_classes=4),
    "resnet": seeds.resnet((4, 6), 1, input_size=8, num_classes=4),
}


def main() -> None:
    g = torch.Generator().manual_seed(7)
    batches = [(torch.randn(8, 3, 8, 8, generator=g), torch.randint(0, 4, (8,), generator=g)) for _ in range(16)]
    out = {"hp": HP, "batches": batches, "torch": str(torch.__version__)}
    for family, arch in ARCHS.items():
        torch.manual_seed(0)
        model = build_model(arch)
        opt = DessiLBI(dessilbi_param_groups(model, linear="lasso", weight_decay=1e-3), foreach=False, **HP)
        for i, (x, y) in enumerate(batches):
            if i == 10:
                out[family] = {"arch": arch.to_json(), "model": {k: v.clone() for k, v in model.state_dict().items()},
                               "opt": _clone(opt.state_dict())}
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        out[family]["final_model"] = {k: v.clone() for k, v in model.state_dict().items()}
        out[family]["final_opt"] = _clone(opt.state_dict())
    torch.save(out, Path(__file__).with_name("dessilbi_v1_checkpoint.pt"))


def _clone(sd):
    return {"state": {i: {k: v.clone() if torch.is_tensor(v) else v for k, v in s.items()} for i, s in sd["state"].items()},
            "param_groups": [dict(g) for g in sd["param_groups"]]}


if __name__ == "__main__":
    main()
