import time, torch, torchmetrics
from lightning_convergence.stats.window import DeviceWindow
torch.set_num_threads(1)
class M(torchmetrics.Metric):
    full_state_update = False
    def __init__(self):
        super().__init__(sync_on_compute=False)
        self.add_state("steps", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("norm_max", torch.zeros((), dtype=torch.float64), dist_reduce_fx="max")
    def update(self, norm):
        self.steps += 1
        self.norm_max = torch.maximum(self.norm_max, norm)
    def compute(self): return self.steps
m = M(); w = DeviceWindow(); w.declare("steps"); w.declare("norm_max", reduce="max"); w.allocate("cpu")
one = torch.ones((), dtype=torch.float64); x = torch.tensor(3.0, dtype=torch.float64)
def plain():
    steps = torch.zeros((), dtype=torch.float64); mx = torch.zeros((), dtype=torch.float64)
    return steps, mx
s, mx = plain()
def run(f, n=20000):
    for _ in range(500): f()
    t=time.perf_counter()
    for _ in range(n): f()
    return (time.perf_counter()-t)/n*1e6
def f_plain():
    s.add_(one); torch.maximum(mx, x, out=mx)
res = {}
for rep in range(3):
    res.setdefault("torchmetrics Metric.update", []).append(run(lambda: m.update(x)))
    res.setdefault("DeviceWindow.update", []).append(run(lambda: w.update(steps=one, norm_max=x)))
    res.setdefault("two plain in-place ops", []).append(run(f_plain))
for k,v in res.items(): print(f"{k}: {min(v):.1f} us per update (min of 3 x 20000)")
