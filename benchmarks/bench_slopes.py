"""Benchmark: every headline number of `slopes` for the whole sweep, as the export computes it.

216 synthetic runs (4 variants x lr {0.05, 0.1, 0.2} x wd {1e-4, 1e-3, 1e-2} x 6 seeds), each 50 epochs x 391 steps =
19,550 per-batch losses with warmup + cosine, noise and a few dirty points. For every run `fit_summary` computes:
burn-in, alpha_early (epochs 5-15), alpha_full + per-batch R², its noise cap and noise-corrected value, the trajectory
fit on quarter-epoch geometric means (H1's r_squared), the knee (two-segment scan of the bins between burn-in and the
start of annealing), the curve-form comparison on the bins (power law, + offset, exponential, stretched exponential,
the schedule form of Tissue et al. 2024 from S1/S2; AIC/BIC), the held-out error of every form, and the
schedule-aware slope against the cumulative learning rate from the logged `lr` column.
Data generation is not timed. Target: < 5 s on the project's 2-core machine; the figure is printed last.

Run from the repository root:  python benchmarks/bench_slopes.py
"""

import itertools
import math
import os
import time

import numpy as np

from loss_lin_slope.forms import cumulative_lr, fit_summary, schedule_lr
from loss_lin_slope.slopes import StreamingLogLogFit

EPOCHS, SPE = 50, 391
TARGET_S = 5.0


def make_run(seed: int, lr: float, wd: float, variant: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    "Per-batch training CE whose shape depends on the run: a power law with offset in the cumulative LR."
    rng = np.random.default_rng(seed * 1000 + variant * 100 + int(lr * 100) + int(-math.log10(wd)))
    steps = np.arange(1, EPOCHS * SPE + 1)
    lrs = schedule_lr(steps, lr, 5 * SPE, EPOCHS * SPE)
    S = cumulative_lr(lrs)
    b = rng.uniform(0.4, 0.8)
    l_inf = rng.uniform(0.005, 0.05) * (1 + 10 * wd)
    loss = (l_inf + (2.3 - l_inf) * (1 + S / rng.uniform(2, 10)) ** -b) * np.exp(0.15 * rng.standard_normal(steps.size))
    bad = rng.choice(steps.size, 5, replace=False)
    loss[bad[:3]] = np.nan
    loss[bad[3:]] = 0.0  # underflowed late-training losses are possible
    return steps / SPE, loss, lrs


def main():
    grid = list(itertools.product(range(4), [0.05, 0.1, 0.2], [1e-4, 1e-3, 1e-2], range(6)))
    runs = [make_run(seed, lr, wd, v) for v, lr, wd, seed in grid]
    print(f"{len(runs)} runs x {runs[0][0].size} points; {os.cpu_count()} CPUs; "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}")
    fit_summary(*runs[0][:2], lrs=runs[0][2])  # warm up imports and caches

    t0, c0 = time.perf_counter(), time.process_time()
    summaries = [fit_summary(epochs, losses, lrs=lrs) for epochs, losses, lrs in runs]
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0

    r2 = np.array([s["r_squared"] for s in summaries])
    r2b = np.array([s["r_squared_batch"] for s in summaries])
    early = np.array([s["alpha_early"] for s in summaries])
    forms = {f: sum(s["best_form"] == f for s in summaries) for f in {s["best_form"] for s in summaries}}
    assert np.isfinite(r2).all() and np.isfinite(early).all(), "every run must give finite headline numbers"
    print(f"alpha_early {early.mean():.3f} +- {early.std():.3f}; R² after burn-in: trajectory {np.median(r2):.3f}, "
          f"per batch {np.median(r2b):.3f} (medians); best forms {forms}")

    # the callback side: one scalar update per optimizer step
    epochs, losses, _ = runs[0]
    sf = StreamingLogLogFit(burn_in_threshold=1.0)
    t1 = time.perf_counter()
    for x, y in zip(epochs.tolist(), losses.tolist()):
        sf.update(x, y)
    us = (time.perf_counter() - t1) / epochs.size * 1e6
    print(f"streaming: {us:.2f} us per per-batch update (result() {sf.result().slope:.4f})")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"per run: {dt / len(runs) * 1e3:.1f} ms wall, {cpu / len(runs) * 1e3:.1f} ms CPU "
          f"({cpu:.2f} s CPU in all; 1-min load average {load:.1f})")
    print(f"slopes: {len(runs)} runs in {dt:.2f} s (target < {TARGET_S:g} s)")


if __name__ == "__main__":
    main()
