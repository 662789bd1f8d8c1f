"""What the curvature monitor costs, and what its warm start saves, on a real training trajectory.

One process, one model: a CIFAR ResNet-18 (`--width`) trained with SGD (momentum 0.9) on augmented synthetic
CIFAR-shaped data at the study's batch size. Every `--every` steps, on one fixed probe set of `--probe` unaugmented
training images (the monitor's default: `curvature.probe_indices`, seed 0), with BatchNorm in train mode and
micro-batches of `--micro` (the monitor's defaults), it builds the micro-batched Hessian operator and runs

* Lanczos from a seeded random vector (cold) and from the previous measurement's top eigenvector (warm), both to
  `--tol` (the monitor's 1e-3) — the matvec counts give warm ÷ cold;
* the seconds per HVP over the probe set are the Lanczos wall time per matvec (orthogonalisation included); the
  trace (Hutch++, `--trace-matvecs` = the monitor's 30 HVPs) is costed at that rate.

An HVP over N images is a sum over N / micro independent micro-batch HVPs, so its cost scales with N: the projection
is printed for several probe sizes (`--project`) from the measured per-image rate, the last line for the default.

It also times every training step (forward, backward, optimizer step) and one noise-monitor measurement
(`noise.gradient_variance` on `noise_batches` = 8 batches of the training batch size), and projects the
instrumentation overhead of the study (50 epochs × 391 steps; curvature every 500 steps, noise every 2 epochs)
from those measured ratios:

    curvature overhead = n_curv · (t_build + (warm matvecs + trace matvecs) · t_hvp) / (steps · t_step)

The loss-slope logger and norms are not measured here (no extra forward/backward passes; see
`bench_instrumentation.py`). Ratios are measured in this one process so machine load cancels to first order.

    python benchmarks/bench_curvature_cost.py                       # CPU defaults (width 0.0625, probe 128, every 100)
    python benchmarks/bench_curvature_cost.py --width 1 --every 500  # the study's network and cadence (a GPU)
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
import torch.nn.functional as F

from loss_lin_slope import curvature, noise
from loss_lin_slope.loaders import augment, make_synthetic, normalize
from loss_lin_slope.model import resnet18_cifar

STUDY = dict(epochs=50, steps_per_epoch=391, curvature_every=500, noise_every_epochs=2, noise_batches=8)
TARGETS = dict(warm_cold=0.5, curvature=0.15, all_monitors=0.25)


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--width", type=float, default=0.0625)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--probe", type=int, default=128, help="probe images measured on")
    ap.add_argument("--project", type=int, nargs="+", default=[128, 256, 1024, 512],
                    help="probe sizes to project the overhead for (the last is the headline: the default 512)")
    ap.add_argument("--micro", type=int, default=None, help="default: --batch")
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("--measurements", type=int, default=4)
    ap.add_argument("--warmup-steps", type=int, default=50, help="SGD steps before the first measurement")
    ap.add_argument("--tol", type=float, default=1e-3)
    ap.add_argument("--trace-matvecs", type=int, default=30)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--n-train", type=int, default=8192)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args(argv)
    micro = a.micro or a.batch
    if a.measurements < 2:
        ap.error("--measurements must be >= 2 (warm starts need a previous measurement)")
    if a.probe > a.n_train:
        ap.error(f"--probe={a.probe} is larger than --n-train={a.n_train}")
    torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    torch.manual_seed(0)
    model = resnet18_cifar(width_mult=a.width).to(dev)
    x, y = (t.to(dev) for t in make_synthetic(a.n_train, "train"))
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=0.9, weight_decay=5e-4)
    g = torch.Generator(device=dev).manual_seed(0)
    idx = curvature.probe_indices(a.n_train, a.probe, seed=0).to(dev)
    probe = (normalize(x[idx]), y[idx])
    print(f"ResNet-18 width {a.width:g} ({n_params / 1e6:.3f} M parameters) on {dev}, {a.threads} thread(s); batch "
          f"{a.batch}; probe {a.probe} images in micro-batches of {micro}, BatchNorm train mode; tol {a.tol:g}")

    step_times = []

    def train_steps(k):
        model.train()
        for _ in range(k):
            i = torch.randint(0, a.n_train, (a.batch,), generator=g, device=dev)
            xb = augment(x[i], g)
            _sync(dev)
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(xb), y[i]).backward()
            opt.step()
            _sync(dev)
            step_times.append(time.perf_counter() - t0)

    train_steps(a.warmup_steps)
    step_times.clear()  # the first steps include one-off allocations
    rows, prev = [], None
    for m in range(a.measurements):
        if m:
            train_steps(a.every)
        _sync(dev)
        t0 = time.perf_counter()
        with curvature.hessian_operator(model, F.cross_entropy, probe, bn_mode="train", micro_batch_size=micro) as op:
            _sync(dev)
            t_build = time.perf_counter() - t0
            kw = dict(tol=a.tol, max_iter=200, device=op.device, dtype=op.dtype)
            cold = curvature.lanczos(op, op.n, seed=m, **kw)
            warm = curvature.lanczos(op, op.n, seed=m, init=prev, **kw) if prev is not None else None
            _sync(dev)
            mv = cold.n_matvecs + (warm.n_matvecs if warm else 0)
            t_hvp = (cold.seconds + (warm.seconds if warm else 0.0)) / mv
        prev = (warm or cold).vector
        rows.append(dict(cold=cold.n_matvecs, warm=warm.n_matvecs if warm else None, lam_cold=cold.value,
                         lam_warm=warm.value if warm else math.nan, t_build=t_build, t_hvp=t_hvp))
        print(f"  measurement {m} (after {a.warmup_steps + m * a.every} steps): lambda_max cold {cold.value:.5g} "
              f"({cold.n_matvecs} matvecs)" + (f", warm {warm.value:.5g} ({warm.n_matvecs} matvecs, start residual "
                                               f"→ {warm.rel_residual:.1e})" if warm else "")
              + f"; build {t_build:.3f} s, {t_hvp:.3f} s per HVP", flush=True)

    # the noise monitor's measurement: gradients of 8 batches of the training batch size
    batches = []
    for _ in range(STUDY["noise_batches"]):
        i = torch.randint(0, a.n_train, (a.batch,), generator=g, device=dev)
        batches.append((augment(x[i], g), y[i]))
    _sync(dev)
    t0 = time.perf_counter()
    noise.gradient_variance(model, F.cross_entropy, batches)
    _sync(dev)
    t_noise = time.perf_counter() - t0

    t_step = statistics.median(step_times)
    t_hvp = statistics.median(r["t_hvp"] for r in rows)
    t_build = statistics.median(r["t_build"] for r in rows)
    warm_rows = [r for r in rows if r["warm"] is not None]
    cold_mv = sum(r["cold"] for r in warm_rows) / max(1, len(warm_rows))
    warm_mv = sum(r["warm"] for r in warm_rows) / max(1, len(warm_rows))
    agree = max((abs(r["lam_warm"] - r["lam_cold"]) / abs(r["lam_cold"]) for r in warm_rows), default=math.nan)
    steps = STUDY["epochs"] * STUDY["steps_per_epoch"]
    n_curv = steps // STUDY["curvature_every"]
    n_noise = STUDY["epochs"] // STUDY["noise_every_epochs"]
    bare = steps * t_step
    noise_ov = n_noise * t_noise / bare
    print(f"\ntraining step {t_step * 1e3:.1f} ms (median of {len(step_times)}); one HVP over the {a.probe}-image probe "
          f"{t_hvp * 1e3:.1f} ms; operator build {t_build * 1e3:.1f} ms; noise measurement {t_noise * 1e3:.1f} ms")
    print(f"warm and cold lambda_max agree to {agree:.1e} (relative); measured every {a.every} steps "
          f"(the study: every {STUDY['curvature_every']}); {n_curv} curvature and {n_noise} noise measurements "
          f"in the study's {steps} steps")
    print(f"\n{'probe':>6} {'HVP/step':>9} {'s/meas warm':>12} {'curv cold':>10} {'curv warm':>10} {'all (warm)':>11}")
    for n in a.project:
        scale = n / a.probe  # micro-batch sums: cost ∝ images
        per_warm = scale * (t_build + (warm_mv + a.trace_matvecs) * t_hvp)
        per_cold = scale * (t_build + (cold_mv + a.trace_matvecs) * t_hvp)
        curv, curv_cold = n_curv * per_warm / bare, n_curv * per_cold / bare
        print(f"{n:>6} {scale * t_hvp / t_step:>9.2f} {per_warm:>12.2f} {curv_cold:>10.1%} {curv:>10.1%} "
              f"{curv + noise_ov:>11.1%}")
    print(f"\n{'figure':<62} {'value':>8}  target")
    print(f"{'s per HVP over the ' + str(a.probe) + '-image probe / s per training step':<62} {t_hvp / t_step:>8.2f}  report")
    print(f"{'matvecs per measurement, Lanczos cold':<62} {cold_mv:>8.1f}  report")
    print(f"{'matvecs per measurement, Lanczos warm':<62} {warm_mv:>8.1f}  report")
    print(f"{'matvecs per measurement, trace (Hutch++)':<62} {a.trace_matvecs:>8d}  report")
    print(f"{'noise overhead (share of bare training)':<62} {noise_ov:>8.1%}  report")
    print(f"{'all monitors, probe ' + str(n) + ' (curvature warm + noise)':<62} {curv + noise_ov:>8.1%}  "
          f"<= {TARGETS['all_monitors']:.0%}")
    print(f"{'curvature overhead, probe ' + str(n) + ', warm start':<62} {curv:>8.1%}  <= {TARGETS['curvature']:.0%}")
    print(f"{'Lanczos matvecs warm / cold, same tol':<62} {warm_mv / cold_mv:>8.2f}  <= {TARGETS['warm_cold']}")

if __name__ == "__main__":
    main()
