"""Which Hessian-vector-product route is cheapest on this device: double backward vs forward-over-reverse vs several
vectors at once (vmap over tangents), BatchNorm in train mode, and the memory layout the HVPs run in.

One process, one thread (CPU time of this thread, so other load does not distort the ratios): a CIFAR ResNet-18
(`--width`, default 0.125) in the study's channels_last layout, one `--probe`-image batch (128: the monitors' probe),
BatchNorm with batch statistics. For every route of `curvature.HVP_METHODS` it times building the operator and
applying it to `--k` vectors — one by one (`op(v)`, what Lanczos does) and all at once (`op.matmat(V)`, what the
trace's probes use; vmapped for the `_vmap` routes) — on the contiguous copy `curvature.hvp_model` makes on a CPU,
and once on the channels_last model itself; each route's products are checked against double backward's. The unit is
one training step of the same batch (forward + backward + SGD step, channels_last: what the study trains with).

Printed last: the cheapest route per vector ÷ double backward, beside `curvature.HVP_DEFAULT` for this device.

    python benchmarks/bench_curvature_hvp.py                  # CPU
    python benchmarks/bench_curvature_hvp.py --device cuda    # on a GPU (bench_gpu.py runs this too)
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from loss_lin_slope import curvature
from loss_lin_slope.loaders import make_synthetic, normalize
from loss_lin_slope.model import resnet18_cifar


def hvp_routes(width=0.125, probe=128, k=8, reps=3, device="cpu", seed=0, say=print) -> dict:
    "Seconds per HVP of every route (one by one and `matmat`), in training steps of the same batch; see the module doc."
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    clock = time.thread_time if not cuda else time.perf_counter

    def sync():
        if cuda:
            torch.cuda.synchronize(dev)

    def timed(f):
        sync()
        t0 = clock()
        out = f()
        sync()
        return clock() - t0, out

    torch.manual_seed(seed)
    model = resnet18_cifar(width_mult=width).to(dev).to(memory_format=torch.channels_last)
    x, y = make_synthetic(probe, "train")
    xb, yb = normalize(x).to(dev), y.to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=1e-9, momentum=0.9)  # a real step that barely moves the weights

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(xb.contiguous(memory_format=torch.channels_last)), yb).backward()
        opt.step()

    model.train()
    step()
    t_step = statistics.median(timed(step)[0] for _ in range(reps + 2))
    n = sum(p.numel() for p in model.parameters())
    V = torch.randn(k, n, generator=torch.Generator().manual_seed(1)).to(dev)
    def time_route(m, route):
        "(build seconds, one-by-one seconds, matmat seconds, H V) of `route` on module `m`."
        with curvature.curvature_mode(m, bn_mode="train"):
            t_build, op = timed(lambda: curvature.HessianOperator(m, F.cross_entropy, (xb, yb), method=route))
            op(V[0])  # warm-up
            t_one = min(timed(lambda: torch.stack([op(v) for v in V]))[0] for _ in range(reps))
            t_mat, HV = min((timed(lambda: op.matmat(V)) for _ in range(reps)), key=lambda r: r[0])
            op.close()
        return t_build, t_one, t_mat, HV

    rows, ref = {}, None
    layouts = [("copy", curvature.hvp_model(model)), ("channels_last", model)] if not cuda else [("model", model)]
    for layout, m in layouts:
        routes = curvature.HVP_METHODS if layout != "channels_last" else ("double_backward",)
        for route in routes:
            t_build, t_one, t_mat, HV = time_route(m, route)
            ref = HV if ref is None else ref
            err = ((HV - ref).norm() / ref.norm()).item()
            rows[f"{route} ({layout})"] = dict(build=t_build / t_step, one=t_one / k / t_step, mat=t_mat / k / t_step,
                                               err=err)
            say(f"  {route:<22} {layout:<14} build {t_build / t_step:5.2f}  one by one {t_one / k / t_step:5.2f}  "
                f"{k} at once {t_mat / k / t_step:5.2f} steps per HVP   (rel. difference {err:.1e})", flush=True)
    return dict(t_step=t_step, rows=rows, n=n)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--width", type=float, default=0.125)
    ap.add_argument("--probe", type=int, default=128)
    ap.add_argument("--k", type=int, default=8, help="vectors per timing (the trace's probes)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    print(f"ResNet-18 width {a.width:g}, probe {a.probe} images, BatchNorm train mode, device {a.device}, 1 thread; "
          f"unit: one training step of the same batch (channels_last)")
    r = hvp_routes(a.width, a.probe, a.k, a.reps, a.device)
    rows = r["rows"]
    base_key = next(k for k in rows if k.startswith("double_backward"))
    best = min(rows, key=lambda k: min(rows[k]["one"], rows[k]["mat"]))
    b = min(rows[best]["one"], rows[best]["mat"])
    dtype = torch.device(a.device).type
    print(f"\ntraining step {r['t_step'] * 1e3:.0f} ms; cheapest: {best}, {b:.2f} steps per HVP; "
          f"HVP_DEFAULT[{dtype!r}] = {curvature.HVP_DEFAULT.get(dtype)!r}")
    print(f"cheapest route per vector / double backward: {b / rows[base_key]['one']:.2f}   (the default is the cheapest "
          f"when this is 1.00 and the default is double_backward)")
    return r


if __name__ == "__main__":
    main()
