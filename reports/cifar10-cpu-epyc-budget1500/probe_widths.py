"""Step time of the --time-budget 1500 run's final net against the same net with one layer a little
wider (DessiLBI training steps, batch 256, channels-last, 2 threads, median of 6 after a warm-up;
two passes). Run from the repository root: python reports/cifar10-cpu-epyc-budget1500/probe_widths.py.
Output of the thirteenth session (AMD EPYC, 2 cores, nothing else running): probe_widths.log."""

import time, torch, torch.nn.functional as F
from grownet.arch import Architecture
from grownet.models import build_model
from grownet.train import prepare_model
from grownet.recipe import load_recipe
from grownet.job import make_dessilbi
from grownet.cost import cost
r = load_recipe("cifar10-cpu")
a1 = Architecture.from_json("reports/cifar10-cpu-epyc-budget1500/architecture.json")
x = torch.randn(256, 3, 32, 32).contiguous(memory_format=torch.channels_last); y = torch.randint(0, 10, (256,))
variants = {"as grown": a1,
            "stages.1.0 56->60": a1.with_width("stages.1.0", 60),
            "stages.1.0 56->64": a1.with_width("stages.1.0", 64),
            "stages.2.0 75->80": a1.with_width("stages.2.0", 80),
            "stages.0.0 32->34": a1.with_width("stages.0.0", 34),
            "stages.0.0 32->40": a1.with_width("stages.0.0", 40)}
def step_time(a, n=6):
    torch.manual_seed(0)
    m = prepare_model(build_model(a), torch.device("cpu"), channels_last=True); m.train(); opt = make_dessilbi(m, r); ts = []
    for i in range(n + 1):
        t = time.perf_counter(); loss = F.cross_entropy(m(x), y); opt.zero_grad(); loss.backward(); opt.step(); ts.append(time.perf_counter() - t)
    return sorted(ts[1:])[len(ts[1:]) // 2]
base = None
for rep in range(2):
    for name, a in variants.items():
        t = step_time(a); base = t if name == "as grown" else base
        print(rep, f"{name:20s} {cost(a).macs/1e6:6.2f}M MACs {t:.4f} s  ratio {t/base:.3f}")
