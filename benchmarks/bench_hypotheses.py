"""Benchmark with known answers: does the H1/H2 analysis find the truth it was given?

H1: 216 power-law runs (50 epochs x 391 steps, burn-in near epoch 3-6, exponent 0.4-0.8, per-batch log-noise
sigma = 0.2) must pass both of H1's criteria (>= 90 % of runs with trajectory R^2 >= 0.98, and the power law the
adequate form in >= 90 %); 216 exponential runs over the same loss range must fail the R^2 (share <= 10 %); 216
exponential runs decaying to a floor (testing.synthetic_loss) reach the R^2 but must fail the adequacy (<= 10 %);
adding 24 runs that never burn in must lower the share to n_pass / 240.
Pilot gate: 36-run synthetic sweeps (50 epochs x 100 steps) of exponentials to a floor must be NO-GO for the fits
alone, and of power laws GO.
H2: >= 200 simulated sweeps from a random-effects model (36 configurations x 6 seeds, configuration and seed effects,
known pooled Spearman rho); the configuration-resampled 95 % interval (h2_table, 2,000 resamples) must cover the true
rho in 90-98 % of sweeps. The run-resampled interval (corr_ci) is printed beside it for comparison.
Targets are printed beside each figure; coverage last.

Run from the repository root:  python benchmarks/bench_hypotheses.py [n_sweeps]
"""

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from loss_lin_slope.hypotheses import analyze_sweep, corr_ci, h1_table, h2_table, simulate_h1_runs, simulate_h2_sweep
from loss_lin_slope.testing import make_synthetic_sweep


def _all(t):
    return t.set_index("group").loc["all"]


def main(n_sweeps: int = 200, n_boot: int = 2000):
    t0 = time.perf_counter()
    pw = simulate_h1_runs("power", n_runs=216, seed=1)
    ex = simulate_h1_runs("exponential", n_runs=216, seed=2)
    fl = simulate_h1_runs("exponential_floor", n_runs=216, seed=4)
    stuck = simulate_h1_runs("stuck", n_runs=24, seed=3)
    h_pw, h_ex, h_fl = _all(h1_table(pw, n_boot=0)), _all(h1_table(ex, n_boot=0)), _all(h1_table(fl, n_boot=0))
    h_mix = _all(h1_table(pd.concat([pw, stuck], ignore_index=True), n_boot=0))
    print(f"H1 power law: share {h_pw.share:.3f} (target >= 0.90), adequate {h_pw.adequate_share:.3f} (target >= 0.90), "
          f"per-batch R^2 median {pw.r_squared_batch.median():.3f}"
          f" ({(pw.r_squared_batch >= 0.98).mean():.0%} would pass on per-batch points)")
    print(f"H1 exponential: share {h_ex.share:.3f} (target <= 0.10), trajectory R^2 median {ex.r_squared.median():.3f}")
    print(f"H1 exponential to a floor: share {h_fl.share:.3f} (R^2 alone), adequate {h_fl.adequate_share:.3f} "
          f"(target <= 0.10)")
    print(f"H1 power law + 24 never burned in: share {h_mix.share:.3f} (target {h_pw.n_pass / 240:.3f} = n_pass/240), "
          f"share_burned_in {h_mix.share_burned_in:.3f}; {time.perf_counter() - t0:.1f} s")
    ok_h1 = (h_pw.share >= 0.9 and h_pw.adequate_share >= 0.9 and h_ex.share <= 0.1 and h_fl.adequate_share <= 0.1
             and abs(h_mix.share - h_pw.n_pass / 240) < 1e-12)
    with tempfile.TemporaryDirectory() as tmp:
        kw = dict(n_runs=36, epochs=50, steps_per_epoch=100, chunk_epochs=10, curvature_every_n_steps=500)
        g_ex = analyze_sweep(make_synthetic_sweep(Path(tmp), "exp", shape="exponential", **kw).path, n_boot=500)
        g_pw = analyze_sweep(make_synthetic_sweep(Path(tmp), "pow", shape="power", **kw).path, n_boot=500)
    failed = [c["condition"] for c in g_ex.verdict.conditions if not c["holds"]]
    print(f"gate, 36 exponential-to-a-floor runs: {g_ex.verdict.word}, failed {failed} (target NO-GO, ['fits']); "
          f"36 power-law runs: {g_pw.verdict.word} (target GO)")
    print("  " + g_ex.lines()[0] + "\n  " + g_ex.lines()[1])
    ok_h1 = ok_h1 and failed == ["fits"] and g_pw.verdict.go

    t1 = time.perf_counter()
    hit_c = hit_r = 0
    width = []
    for k in range(n_sweeps):
        sim = simulate_h2_sweep(seed=1000 + k)
        tr = sim.attrs["true_rho"]
        h = _all(h2_table(sim, n_boot=n_boot, seed=k))
        hit_c += bool(h.spearman_lo <= tr <= h.spearman_hi)
        width.append(h.spearman_hi - h.spearman_lo)
        nv = corr_ci(sim.alpha_early, sim.best_val_ce, n_boot=n_boot, seed=k)
        hit_r += bool(nv["spearman_lo"] <= tr <= nv["spearman_hi"])
    cov = hit_c / n_sweeps
    print(f"H2: true rho {tr:.3f}; {n_sweeps} sweeps x {n_boot} resamples in {time.perf_counter() - t1:.1f} s; "
          f"median interval width {np.median(width):.3f}; runs resampled: coverage {hit_r / n_sweeps:.1%}")
    print(f"H2 coverage of the configuration-resampled 95 % interval: {cov:.1%} (target 90-98 %)")
    return 0 if ok_h1 and 0.90 <= cov <= 0.98 else 1


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 200))
