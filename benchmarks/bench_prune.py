"""Benchmark with known answers: pruning backtests (`prune.backtest`) on simulated sweeps whose truth is known, and
on a real sweep (the demo's) when one is given.

Simulated sweeps (`prune.simulate_curves`, fixed in the notebook before this was run): 12 configurations x 2 seeds,
24 epochs, 4 validations per epoch, replayed 4 at a time, decided at epoch 6 (a quarter, the default):
- crossing: the eventual best is the worst at the decision epoch;
- parallel: one slope, the level decides;
- uninformative: one true slope, noisy validations: the fitted slopes differ by noise only;
- crossing_floor: crossing curves with a floor (v = 0.3 + power law), a form the slope rule's model does not fit
  (a robustness row, no target).
Per kind, `--sims` sweeps with different seeds; each rule's compute saved (1 - compute fraction) and regret (nats)
averaged over them (min-max in brackets), and in how many the best run was kept.

Targets (issue 24): on crossing sweeps the slope rule saves >= 50 % of compute with regret <= 0.01 nats while the
median rule loses the best run; on uninformative sweeps the slope rule's regret <= the median rule's + 0.01 nats.
Printed last, with the targets beside the figures; exit 1 when a target is missed.

Run from the repository root:  python benchmarks/bench_prune.py [--sims 8] [--demo /tmp/demo_i24/runs/demo]
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from loss_lin_slope.cli_args import format_rows
from loss_lin_slope.prune import RULES, backtest, backtest_note, backtest_rows, backtest_sweep, simulate_curves

KINDS = {"crossing": {}, "parallel": {}, "uninformative": {}, "crossing_floor": {"floor": 0.3}}
AT, CONCURRENCY = 6.0, 4


def simulated(kind: str, sims: int) -> pd.DataFrame:
    "One row per (sweep, rule): the backtest of `sims` simulated sweeps of `kind`."
    base = kind.removesuffix("_floor")
    rows = []
    for s in range(sims):
        c = simulate_curves(base, n_configs=12, seeds=2, epochs=24, seed=100 + s, **KINDS[kind])
        t = backtest(c, AT, RULES, concurrency=CONCURRENCY, n_boot=0)
        rows.append(t.assign(sim=s))
    return pd.concat(rows, ignore_index=True)


def summary(t: pd.DataFrame) -> pd.DataFrame:
    "Per rule: compute saved and regret (mean [min, max] over the sweeps), best kept (k/n), runs pruned (mean)."
    out = []
    for rule, g in t.groupby("rule", sort=False):
        saved, reg = 1 - g.compute_fraction, g.regret
        out.append({"rule": rule, "compute saved": f"{saved.mean():.0%} [{saved.min():.0%}, {saved.max():.0%}]",
                    "regret (nats)": f"{reg.mean():.4f} [{reg.min():.4f}, {reg.max():.4f}]",
                    "best kept": f"{int(g.kept_best.sum())}/{len(g)}", "pruned": f"{g.n_pruned.mean():.1f}/{g.n_runs.iloc[0]}",
                    "_saved": saved.mean(), "_regret": reg.mean(), "_regret_max": reg.max(), "_kept": g.kept_best.mean()})
    return pd.DataFrame(out).set_index("rule")


def main(sims: int = 8, demo: str | None = None) -> int:
    res = {}
    for kind in KINDS:
        t0 = time.perf_counter()
        res[kind] = summary(simulated(kind, sims))
        print(f"\n{kind}: {sims} simulated sweeps (12 configurations x 2 seeds, 24 epochs), decided at epoch {AT:g}, "
              f"{CONCURRENCY} at a time; {time.perf_counter() - t0:.1f} s")
        print(format_rows(res[kind].reset_index().filter(regex="^[^_]").to_dict("records"), "table"))
    if demo:
        t0 = time.perf_counter()
        table, meta, paths = backtest_sweep(demo, f"backtest-{Path(demo).name}", n_boot=200)
        print(f"\ndemo sweep {demo}: {time.perf_counter() - t0:.1f} s; wrote {paths['json']}")
        print(backtest_note(table, meta))
        print(format_rows(backtest_rows(table), "table"))
    cr, un = res["crossing"], res["uninformative"]
    s_saved, s_reg, m_kept = cr.loc["slope", "_saved"], cr.loc["slope", "_regret_max"], cr.loc["median", "_kept"]
    d_un = un.loc["slope", "_regret"] - un.loc["median", "_regret"]
    ok = s_saved >= 0.5 and s_reg <= 0.01 and m_kept < 0.5 and d_un <= 0.01
    print(f"\ncrossing: slope rule saves {s_saved:.0%} of compute (target >= 50 %) with regret <= {s_reg:.4f} nats "
          f"(target <= 0.01), the median rule keeps the best run in {m_kept:.0%} of sweeps (target: loses it); "
          f"uninformative: slope regret - median regret = {d_un:+.4f} nats (target <= +0.01) -> "
          f"{'all targets met' if ok else 'TARGET MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sims", type=int, default=8, help="simulated sweeps per kind (default 8)")
    ap.add_argument("--demo", default=None, help="a finished sweep directory to backtest too (e.g. the demo's)")
    a = ap.parse_args()
    np.seterr(all="ignore")
    sys.exit(main(a.sims, a.demo))
