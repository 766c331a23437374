# Probe of the fourteenth session (reports/cifar10-cpu-epyc-width8/probes/probes.log): which op of a
# 3->w conv, BatchNorm+ReLU, w->64 conv block (32x32, batch 128) pays for a width past 32.
import time, torch, torch.nn as nn, statistics, random
torch.manual_seed(0)
fmt = torch.channels_last
def timeit(fn, reps=15):
    ts = []
    for i in range(reps + 3):
        t = time.perf_counter(); fn(); ts.append(time.perf_counter() - t)
    return statistics.median(ts[3:]) * 1000
for w in [32, 33, 40, 48]:
    c1 = nn.Conv2d(3, w, 3, padding=1, bias=False).to(memory_format=fmt)
    bn = nn.Sequential(nn.BatchNorm2d(w), nn.ReLU())
    c2 = nn.Conv2d(w, 64, 3, padding=1, bias=False).to(memory_format=fmt)
    x = torch.randn(128, 3, 32, 32).to(memory_format=fmt).requires_grad_()
    h = torch.randn(128, w, 32, 32).to(memory_format=fmt).requires_grad_()
    print(w, "conv1 fwd+bwd %.1f" % timeit(lambda: c1(x).sum().backward()),
          "bnrelu %.1f" % timeit(lambda: bn(h).sum().backward()),
          "conv2 %.1f" % timeit(lambda: c2(h).sum().backward()), flush=True)
