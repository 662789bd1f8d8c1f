"""Benchmark with known answers: does `forms.select_form` (through `fit_summary`'s `best_form`) name the true curve form?

For each shape of `testing.synthetic_loss` (power law, power law with offset, exponential decaying to a floor,
stretched exponential, the schedule-aware law of Tissue et al. 2024) and each batch noise sigma in {0.10, 0.15, 0.30},
`n_seeds` runs at the study's size (50 epochs x 391 steps, warmup + cosine). Target: the true form is `best_form` in
>= 80 % of seeds for every shape at sigma 0.10 and 0.15 (the study's batch noise); sigma = 0.30 is a stress level,
printed without a target (measured 2026-12: power law with offset 73 %, the others >= 87 %). Also printed: the confusion matrix at sigma = 0.15, the median
trajectory R^2 per shape (R^2 alone cannot tell them apart), and the demo's size (16 epochs x 32 steps) where the
selection is expected to say `none` / fall back to the null form (no target: it shows the limit).

Run from the repository root:  python benchmarks/bench_forms.py [n_seeds]
"""

import sys
import time

import pandas as pd

from loss_lin_slope.forms import fit_summary
from loss_lin_slope.testing import SHAPE_FORMS, synthetic_loss

TARGET = 0.80


def runs(n_seeds: int, sigma: float, epochs: int = 50, steps_per_epoch: int = 391) -> pd.DataFrame:
    rows = []
    for shape, truth in SHAPE_FORMS.items():
        if truth is None:
            continue
        for seed in range(n_seeds):
            e, L, lr = synthetic_loss(shape, epochs, steps_per_epoch, sigma, seed=10_000 + seed)
            fs = fit_summary(e, L, lrs=lr, knee=False)
            rows.append(dict(truth=truth, best_form=fs["best_form"], r_squared=fs["r_squared"],
                             r_squared_cap=fs["r_squared_cap"], pl_excess=fs["holdout_error_excess"]))
    return pd.DataFrame(rows)


def hits(d: pd.DataFrame) -> pd.Series:
    return d.groupby("truth").apply(lambda g: (g.best_form == g.name).mean(), include_groups=False)


def main(n_seeds: int = 100) -> int:
    pd.set_option("display.width", 200)
    t0 = time.perf_counter()
    worst = {}
    for sigma in (0.10, 0.15, 0.30):
        d = runs(n_seeds, sigma)
        h = hits(d)
        if sigma < 0.2:  # the target's noise levels; 0.30 is printed as a stress level
            worst[sigma] = h.min()
        print(f"sigma = {sigma:.2f}: share of seeds where the true form wins: "
              + ", ".join(f"{k} {v:.0%}" for k, v in h.items()) + f"  ({time.perf_counter() - t0:.0f} s)")
        if sigma == 0.15:
            print(pd.crosstab(d.truth, d.best_form).to_string())
            print("median trajectory R^2 per true form:",
                  {k: round(v, 4) for k, v in d.groupby("truth").r_squared.median().items()})
    demo = runs(max(n_seeds // 5, 10), 0.15, epochs=16, steps_per_epoch=32)
    print("demo size (16 epochs x 32 steps, 8 batches per bin): true form wins "
          + ", ".join(f"{k} {v:.0%}" for k, v in hits(demo).items())
          + f"; 'none' in {(demo.best_form == 'none').mean():.0%}; median R^2 cap {demo.r_squared_cap.median():.3f}")
    low = min(worst.values())
    print(f"lowest share of seeds where the true form wins (any shape, sigma 0.10 and 0.15): {low:.0%} "
          f"(target >= {TARGET:.0%})")
    return 0 if low >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 100))
