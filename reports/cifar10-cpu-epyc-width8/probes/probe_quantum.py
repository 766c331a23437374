# Probe of the fourteenth session (reports/cifar10-cpu-epyc-width8/probes/probes.log): a w->64 or 64->w 3x3 conv,
# forward and backward, widths timed in a shuffled interleave; prints each width's time over the first's.
# Run: python probe_quantum.py HW cin|cout W1,W2,...
import time, torch, torch.nn as nn, statistics, random, sys
torch.manual_seed(0)
fmt = torch.channels_last
hw, what = int(sys.argv[1]), sys.argv[2]
ws = [int(w) for w in sys.argv[3].split(",")]
mods, xs = {}, {}
for w in ws:
    cin, cout = (w, 64) if what == "cin" else (64, w)
    mods[w] = nn.Conv2d(cin, cout, 3, padding=1, bias=False).to(memory_format=fmt)
    xs[w] = torch.randn(128, cin, hw, hw).to(memory_format=fmt).requires_grad_()
ts = {w: [] for w in ws}
for r in range(14):
    order = list(ws); random.shuffle(order)
    for w in order:
        t = time.perf_counter(); mods[w](xs[w]).sum().backward(); ts[w].append(time.perf_counter() - t)
b = statistics.median(ts[ws[0]][2:])
print(hw, what, "  ".join(f"{w}:{statistics.median(ts[w][2:])/b:.2f}" for w in ws))
