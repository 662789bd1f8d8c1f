"""What the curvature monitor costs in the study, and whether a warm start pays, on a real training trajectory.

One process, one model: a CIFAR ResNet-18 (`--width`) trained with SGD (momentum 0.9, weight decay 5e-4) on
augmented synthetic CIFAR-shaped data at the study's batch size (128), in the study's channels_last layout
(`--contiguous`: NCHW; `measure` runs its HVPs on a contiguous copy on a CPU either way). Every `--every` steps (the study's 500), on
one fixed probe set of `--probe` unaugmented training images (the monitor's default: one batch, 128 images,
`curvature.probe_indices` seed 0, BatchNorm with micro-batch statistics, micro-batches of the batch size), it runs
the monitor's one call, `curvature.measure` at its defaults (Lanczos to 1e-3 + the Krylov-aware trace), three ways:

* **cold**: Lanczos from a seeded random vector (what the monitor does);
* **warm**: from the previous measurement's top eigenvector (`init=`);
* **block**: from the sum of the previous measurement's top `--block` Ritz vectors (the previous Ritz block folded
  into one start vector).

Warm ÷ cold is the ratio of Lanczos HVPs summed over the measurements after the first (target ≤ 0.5: "a warm start
that pays"). Every training step (forward, backward, optimizer step) and one noise-monitor measurement
(`noise.gradient_variance` on 8 batches) are timed too, and the study's overhead is projected from the measured times
(50 epochs × 391 steps; curvature every 500 steps = 39 measurements; noise every 2 epochs = 25):

    curvature overhead = 39 · mean(seconds of one cold `measure`) / (19,550 · median seconds per training step)

With one thread the clock is this thread's CPU time (`time.thread_time`), so other load on the machine does not distort
the ratios. Printed last: the curvature overhead beside its goal (≤ 5 %, ≤ 10 % required).

    python benchmarks/bench_curvature_cost.py                    # CPU: width 0.0625, 5 measurements 500 steps apart
    python benchmarks/bench_curvature_cost.py --measurements 3   # shorter
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from loss_lin_slope import curvature, noise
from loss_lin_slope.loaders import augment, make_synthetic, normalize
from loss_lin_slope.model import resnet18_cifar

STUDY = dict(epochs=50, steps_per_epoch=391, curvature_every=500, noise_every_epochs=2, noise_batches=8)
TARGETS = dict(warm_cold=0.5, curvature_goal=0.05, curvature_required=0.10, all_monitors=0.10, matvecs=20)


def ritz_block(lam: curvature.Estimate, Q: torch.Tensor, r: int) -> torch.Tensor:
    "Sum of the top `r` unit Ritz vectors of a Lanczos run (its `alphas`/`betas` and basis `Q`)."
    from scipy.linalg import eigh_tridiagonal

    a, b = np.array(lam.info["alphas"]), np.array(lam.info["betas"])
    theta, S = eigh_tridiagonal(a, b) if len(a) > 1 else (a, np.ones((1, 1)))
    top = S[:, np.argsort(theta)[::-1][:r]]
    return (Q.T @ torch.as_tensor(top, dtype=Q.dtype, device=Q.device)).sum(1)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--width", type=float, default=0.0625)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--probe", type=int, default=128, help="probe images (the monitor's default: one batch)")
    ap.add_argument("--every", type=int, default=500, help="steps between measurements (the study's 500)")
    ap.add_argument("--measurements", type=int, default=5)
    ap.add_argument("--warmup-steps", type=int, default=100, help="SGD steps before the first measurement")
    ap.add_argument("--block", type=int, default=3, help="Ritz vectors folded into the block start")
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--n-train", type=int, default=8192)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--contiguous", action="store_true", help="train in NCHW (the study: channels_last, the default)")
    a = ap.parse_args(argv)
    if a.measurements < 2:
        ap.error("--measurements must be >= 2 (warm starts need a previous measurement)")
    torch.set_num_threads(a.threads)
    clock = time.thread_time if a.threads == 1 else time.perf_counter
    torch.manual_seed(0)
    model = resnet18_cifar(width_mult=a.width)
    fmt = torch.contiguous_format if a.contiguous else torch.channels_last  # the study's model.channels_last
    model = model.to(memory_format=fmt)
    x, y = make_synthetic(a.n_train, "train")
    opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=0.9, weight_decay=5e-4)
    g = torch.Generator().manual_seed(0)
    idx = curvature.probe_indices(a.n_train, a.probe, seed=0)
    probe = (normalize(x[idx]), y[idx])
    n_params = sum(p.numel() for p in model.parameters())
    print(f"ResNet-18 width {a.width:g} ({n_params / 1e6:.3f} M parameters), {a.threads} thread(s); batch {a.batch}; "
          f"{'NCHW' if a.contiguous else 'channels_last'}; probe {a.probe} images in micro-batches of {a.batch}, "
          f"BatchNorm train mode; measure() defaults "
          f"{curvature.MEASURE}; measurements every {a.every} steps", flush=True)
    step_times = []

    def train_steps(k):
        model.train()
        for _ in range(k):
            i = torch.randint(0, a.n_train, (a.batch,), generator=g)
            xb = augment(x[i], g).contiguous(memory_format=fmt)
            t0 = clock()
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(xb), y[i]).backward()
            opt.step()
            step_times.append(clock() - t0)

    def lanczos(seed, init=None):
        "The Lanczos run of `measure` (same tol, max_iter, seed) → (Estimate, basis)."
        with curvature.hessian_operator(model, F.cross_entropy, probe, bn_mode="train", micro_batch_size=a.batch) as op:
            lam, Q = curvature._lanczos(op, op.n, curvature.MEASURE["tol"], curvature.MEASURE["max_iter"], seed, "LA",
                                        "gap", True, op.device, op.dtype, init)
            return lam, Q.clone()

    train_steps(a.warmup_steps)
    step_times.clear()  # the first steps include one-off allocations
    rows, prev = [], None
    for m in range(a.measurements):
        if m:
            train_steps(a.every)
        t0 = clock()
        lam_m, tr = curvature.measure(model, F.cross_entropy, probe, micro_batch_size=a.batch, seed=m)  # the monitor's
        t_meas = clock() - t0
        cold, Qc = lanczos(m)
        row = dict(step=a.warmup_steps + m * a.every, cold=cold.n_matvecs, lam=cold.value, trace=tr.value,
                   trace_se=tr.stderr, hvps=lam_m.n_matvecs + tr.n_matvecs, t_meas=t_meas, conv=lam_m.converged,
                   rr=lam_m.rel_residual)
        if prev is not None:
            warm = lanczos(m, init=prev[0].vector)[0]
            block = lanczos(m, init=ritz_block(prev[0], prev[1], a.block))[0]
            row.update(warm=warm.n_matvecs, block=block.n_matvecs, lam_warm=warm.value, lam_block=block.value)
        rows.append(row)
        prev = (cold, Qc)
        print(f"  step {row['step']:5d}: lambda_max {cold.value:.5g} (cold {cold.n_matvecs} Lanczos HVPs"
              + (f", warm {row['warm']}, block {row['block']}" if 'warm' in row else "")
              + f"); trace {tr.value:.4g} ± {tr.stderr:.3g} ({tr.stderr / abs(tr.value):.1%}); one measure() "
              f"{row['hvps']} HVPs, {t_meas:.2f} s, rel. residual {row['rr']:.1e}", flush=True)

    batches = []
    for _ in range(STUDY["noise_batches"]):
        i = torch.randint(0, a.n_train, (a.batch,), generator=g)
        batches.append((augment(x[i], g), y[i]))
    t0 = clock()
    noise.gradient_variance(model, F.cross_entropy, batches)
    t_noise = clock() - t0

    t_step = statistics.median(step_times)
    later = rows[1:]
    cold_mv, warm_mv, block_mv = (sum(r[k] for r in later) for k in ("cold", "warm", "block"))
    agree = max(abs(r["lam_warm"] - r["lam"]) / abs(r["lam"]) for r in later)
    t_meas = statistics.mean(r["t_meas"] for r in rows)
    hvps = statistics.mean(r["hvps"] for r in rows)
    steps = STUDY["epochs"] * STUDY["steps_per_epoch"]
    n_curv = steps // STUDY["curvature_every"]
    n_noise = STUDY["epochs"] // STUDY["noise_every_epochs"]
    bare = steps * t_step
    curv, noise_ov = n_curv * t_meas / bare, n_noise * t_noise / bare
    se = statistics.mean(r["trace_se"] / abs(r["trace"]) for r in rows)
    print(f"\ntraining step {t_step * 1e3:.1f} ms (median of {len(step_times)}); one measure() {t_meas:.2f} s "
          f"= {t_meas / t_step:.1f} steps ({hvps:.1f} HVPs: {t_meas / hvps / t_step:.2f} steps per HVP, the build "
          f"included); noise measurement {t_noise:.2f} s; warm and cold lambda_max agree to {agree:.1e}")
    print(f"study: {n_curv} curvature and {n_noise} noise measurements in {steps} steps")
    print(f"\n{'figure':<66} {'value':>8}  target")
    print(f"{'Lanczos HVPs warm / cold (previous eigenvector), ' + str(len(later)) + ' measurements':<66} "
          f"{warm_mv / cold_mv:>8.2f}  <= {TARGETS['warm_cold']} (pays)")
    print(f"{'Lanczos HVPs block / cold (previous top-' + str(a.block) + ' Ritz vectors)':<66} {block_mv / cold_mv:>8.2f}"
          f"  <= {TARGETS['warm_cold']} (pays)")
    print(f"{'HVPs per measurement (Lanczos + trace probes), mean':<66} {hvps:>8.1f}  <= {TARGETS['matvecs']}")
    print(f"{'trace stated stderr / trace, mean':<66} {se:>8.1%}  report")
    print(f"{'noise overhead of the study':<66} {noise_ov:>8.1%}  report")
    print(f"{'all monitors (curvature + noise)':<66} {curv + noise_ov:>8.1%}  <= {TARGETS['all_monitors']:.0%}")
    print(f"{'curvature overhead of the study (probe ' + str(a.probe) + ', every ' + str(STUDY['curvature_every']) + ')':<66}"
          f" {curv:>8.1%}  <= {TARGETS['curvature_goal']:.0%} goal, <= {TARGETS['curvature_required']:.0%} required")
    return dict(rows=rows, t_step=t_step, t_meas=t_meas, curvature=curv, noise=noise_ov,
                warm_cold=warm_mv / cold_mv, block_cold=block_mv / cold_mv, hvps=hvps,
                agree=agree if math.isfinite(agree) else None)


if __name__ == "__main__":
    main()
