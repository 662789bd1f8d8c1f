"""The trace estimators' variance per HVP on a briefly trained ResNet-18 probe: Krylov-aware vs Hutch++ vs Hutchinson
vs XTrace (the table in nbs/04_curvature.ipynb).

One process: a CIFAR ResNet-18 (`--width`, default 0.125) after `--steps` SGD steps (lr 0.05, momentum 0.9, augmented
synthetic data, batch 128); one 128-image probe (unaugmented), BatchNorm with batch statistics (the monitors'
operator), float32, one thread. `measure`'s Lanczos run (tol 1e-3) gives the basis Q (k vectors); then, all on the
same operator:

* **Hutchinson**: `--samples` Rademacher samples zᵀHz → the per-sample variance σ²; at m probes Var = σ²/m;
* **Krylov-aware** (ours): `--samples` deflated samples gᵀPHPg, P = I − QQᵀ → σ_P²; at m probes Var = σ_P²/m, and
  the k Lanczos HVPs are the ones λ_max needed anyway (both columns shown);
* **Hutch++** at 18 and 30 HVPs: its stated standard error (the deflated part's; calibrated in 04_curvature), mean of
  `--seeds` seeds;
* **XTrace** (curvlinops 3 `xtrace`, Epperly et al. 2024) at 18 HVPs: no stated error, so the spread over
  `--xtrace-seeds` (12) repeats (on our operator wrapped as a curvlinops operator: the same numbers).

The table gives each estimator's relative standard error at its budget, the work-normalised variance
(relative variance × HVPs charged to the trace; lower is better) and the HVPs it needs for a 5 % standard error.
Printed last: the Krylov-aware estimator's variance per HVP ÷ Hutch++'s at 30 HVPs.

    python benchmarks/bench_curvature_trace.py            # ~300 HVPs over a 128-image probe
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_curvature_peers import as_curvlinops, briefly_trained  # noqa: E402

from loss_lin_slope import curvature  # noqa: E402
from loss_lin_slope.loaders import normalize  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--width", type=float, default=0.125)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--probe", type=int, default=128)
    ap.add_argument("--samples", type=int, default=40, help="samples for the per-sample variances")
    ap.add_argument("--seeds", type=int, default=3, help="repeats of Hutch++ (its stated stderr is averaged)")
    ap.add_argument("--xtrace-seeds", type=int, default=12, help="repeats of XTrace (its spread is its error)")
    ap.add_argument("--bn-mode", default="train")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    t_all = time.perf_counter()
    net, x, y = briefly_trained(a.width, a.steps)
    idx = curvature.probe_indices(len(x), a.probe, seed=0)
    probe = (normalize(x[idx]), y[idx])
    n = sum(p.numel() for p in net.parameters())
    with curvature.hessian_operator(net, F.cross_entropy, probe, bn_mode=a.bn_mode) as op:
        lam, Q = curvature._lanczos(op, op.n, curvature.MEASURE["tol"], curvature.MEASURE["max_iter"], 0, "LA", "gap",
                                    True, op.device, op.dtype, None)
        k = lam.n_matvecs
        hz = curvature.hutchinson(op, op.n, n_matvecs=a.samples, seed=11)
        dz = curvature.deflated_hutchinson(op, op.n, Q, a.samples, seed=12)
        tr = hz.value  # the reference level (relative errors are ratios to it)
        kr_value = lam.info["tr_T"] + dz.value
        s_h, s_k = np.std(hz.info["samples"], ddof=1), np.std(dz.info["samples"], ddof=1)
        hpp = {m: [curvature.hutchpp(op, op.n, n_matvecs=m, seed=100 + s) for s in range(a.seeds)] for m in (18, 30)}
        from curvlinops import xtrace

        A = as_curvlinops(op)
        torch.manual_seed(0)
        xt = [float(xtrace(A, 18)) for _ in range(a.xtrace_seeds)]
    print(f"ResNet-18 width {a.width:g} ({n / 1e6:.3f} M parameters) after {a.steps} SGD steps; probe {a.probe} images, "
          f"BatchNorm {a.bn_mode}; lambda_max {lam.value:.4g} ({k} Lanczos HVPs, tr T_k = {lam.info['tr_T']:.4g} = "
          f"{lam.info['tr_T'] / tr:.1%} of the trace); trace ≈ {tr:.4g} (Hutchinson, {a.samples} probes), Krylov-aware "
          f"{kr_value:.4g}; {time.perf_counter() - t_all:.0f} s")
    rows = []
    for m in (8, 10, 30):
        rows.append((f"Krylov-aware, {m} deflated probes", m, k + m, s_k / math.sqrt(m) / abs(tr)))
    for m in (10, 30):
        rows.append((f"Hutchinson, {m} probes", m, m, s_h / math.sqrt(m) / abs(tr)))
    for m, ests in hpp.items():
        rows.append((f"Hutch++, {m} HVPs (stated stderr)", m, m, math.sqrt(np.mean([e.stderr**2 for e in ests])) / abs(tr)))
    rows.append((f"XTrace (curvlinops), 18 HVPs (spread of {len(xt)})", 18, 18, np.std(xt, ddof=1) / abs(tr)))
    print(f"\n{'estimator':<42} {'trace HVPs':>10} {'all HVPs':>9} {'rel. se':>8} {'rel.var×HVP':>12} {'HVPs→5%':>8}")
    out = []
    for name, m, total, se in rows:
        wv = se**2 * m
        print(f"{name:<42} {m:>10d} {total:>9d} {se:>8.2%} {wv:>12.4f} {math.ceil(wv / 0.05**2):>8d}")
        out.append(dict(estimator=name, trace_hvps=m, all_hvps=total, rel_se=se, work_var=wv))
    ratio = (s_k**2 / tr**2) / (np.mean([e.stderr**2 for e in hpp[30]]) / tr**2 * 30)
    print(f"\nper-probe relative sd: Hutchinson {s_h / abs(tr):.3f}, deflated (Krylov-aware) {s_k / abs(tr):.3f}")
    from scipy.stats import chi2

    xt_wv, df = np.var(xt, ddof=1) / tr**2 * 18, len(xt) - 1
    lo, hi = df / chi2.ppf(0.95, df), df / chi2.ppf(0.05, df)  # 90 % interval of a variance from df + 1 repeats
    print(f"XTrace's variance per HVP / Krylov-aware's: {xt_wv / (s_k**2 / tr**2):.2f} (90 % interval "
          f"[{lo * xt_wv / (s_k**2 / tr**2):.2f}, {hi * xt_wv / (s_k**2 / tr**2):.2f}] from {len(xt)} repeats)")
    print(f"Krylov-aware variance per trace HVP / Hutch++'s (30 HVPs): {ratio:.2f}   (report; < 1: ours is cheaper)")
    return dict(rows=out, ratio=ratio, k=k, trace=tr, lam=lam.value)


if __name__ == "__main__":
    main()
