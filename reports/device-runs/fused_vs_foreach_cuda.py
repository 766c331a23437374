"""DessiLBI's fused=True against foreach=True (and torch's SGD) on CUDA, for the two nets of
benchmarks/optimizer_step.py: steps back to back with one synchronize at the end, alternating
(the default); with --profile, the ops, CUDA kernels and host time of one step of each.

Run from the repository root on a machine with CUDA:
python3 reports/device-runs/fused_vs_foreach_cuda.py [--profile]
"""
import copy
import statistics
import sys
import time

sys.path.insert(0, ".")
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from grownet.arch import Architecture
from grownet.models import build_model
from grownet.optim import DessiLBI, dessilbi_param_groups

HP = {"lr": 0.05, "kappa": 1.0, "mu": 100.0, "lam": 1.0, "momentum": 0.9}
MAKERS = {
    "fused": lambda m: DessiLBI(dessilbi_param_groups(m), fused=True, **HP),
    "foreach": lambda m: DessiLBI(dessilbi_param_groups(m), foreach=True, **HP),  # the default on CUDA
    "sgd": lambda m: torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, foreach=True),
}


def back_to_back(opts, models, x, y):
    step, train = {n: [] for n in opts}, {n: [] for n in opts}
    for rep in range(12):
        for n, o in (list(opts.items()) if rep % 2 else list(opts.items())[::-1]):
            torch.cuda.synchronize(); t = time.perf_counter()
            for _ in range(100):
                o.step()
            torch.cuda.synchronize(); step[n].append((time.perf_counter() - t) / 100)
            m = models[n]; torch.cuda.synchronize(); t = time.perf_counter()
            for _ in range(30):
                o.zero_grad(set_to_none=True); F.cross_entropy(m(x), y).backward(); o.step()
            torch.cuda.synchronize(); train[n].append((time.perf_counter() - t) / 30)
    s = {n: statistics.median(v[2:]) for n, v in step.items()}
    t = {n: statistics.median(v[2:]) for n, v in train.items()}
    return ("step back to back (us): " + ", ".join(f"{n} {s[n]*1e6:.0f} ({s[n]/s['sgd']:.2f}x)" for n in s)
            + "; train step back to back (ms): " + ", ".join(f"{n} {t[n]*1e3:.2f} ({t[n]/t['sgd']:.2f}x)" for n in t))


def profiled(opts):
    out = []
    for n, o in opts.items():
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(10):
                o.step()
            torch.cuda.synchronize()
        ev = prof.key_averages()
        kernels = sum(e.count for e in ev if e.device_type == torch.autograd.DeviceType.CUDA) / 10
        out.append(f"-- {n}: CUDA kernels per step {kernels:.1f}\n"
                   + ev.table(sort_by="cpu_time_total", row_limit=18, max_name_column_width=40))
    return "\n".join(out)


def main() -> None:
    dev = torch.device("cuda")
    x = torch.randn(128, 3, 32, 32, device=dev)
    y = torch.randint(0, 10, (128,), device=dev)
    for label, arch in (("grown", Architecture.from_json("reports/cifar10-gpu/architecture.json")),
                        ("vgg", Architecture(family="vgg", stages=[[64], [128], [256], [512]]))):
        base = build_model(arch).to(dev)
        opts, models = {}, {}
        for name, make in MAKERS.items():
            models[name] = m = copy.deepcopy(base)
            opts[name] = o = make(m)
            F.cross_entropy(m(x), y).backward()
            o.step()
        print(f"{label}: " + (profiled(opts) if "--profile" in sys.argv else back_to_back(opts, models, x, y)), flush=True)


if __name__ == "__main__":
    main()
