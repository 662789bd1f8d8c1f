"""Benchmark: `lls demo`, the README's main command, end to end — 16 real papermill runs (4 variants × lr {0.05, 0.2}
× wd 1e-3 × 2 seeds, 10 epochs, width 0.125, 1,024 synthetic images, batch 32) on the local executor with 2 workers,
then verify → export → report. Target (issue 9): ≤ 10 minutes on 2 CPU cores; the figure is printed last.

Besides the time it prints what the demo found, from its dataset: runs complete, the verdict lines, and the median
R² of the post-burn-in log-log fit on the quarter-epoch geometric means (H1's `r_squared`) beside the same fit on
per-batch losses (`r_squared_batch`, capped by the batch noise) and on one-epoch bins recomputed here from the metrics.

Run from the repository root (one BLAS thread per process, as tests/check.sh sets):
    OMP_NUM_THREADS=1 python benchmarks/bench_demo.py [--out DIR]   (default: a temporary directory, removed after)
"""

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from loss_lin_slope import slopes
from loss_lin_slope.store import read_metrics

TARGET_S = 600.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="keep the demo's output here (default: a temporary directory)")
    args = ap.parse_args()
    tmp = None if args.out else tempfile.TemporaryDirectory()
    out = Path(args.out or tmp.name) / "demo"
    lls = Path(sys.executable).with_name("lls")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    p = subprocess.run([str(lls), "demo", "--out", str(out)], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"lls demo failed (exit {p.returncode}):\n{p.stderr[-3000:]}")
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / 2**30  # the largest process
    print("\n".join(line for line in p.stdout.splitlines() if line.startswith(("verify:", "verdict:", "  H"))))

    runs = pd.read_parquet(out / "dataset" / "runs.parquet")
    done = runs[runs.state == "complete"]
    per_epoch = []
    for rid in done.run_id:
        m = read_metrics(out / "runs" / "demo" / rid, metrics=["loss_train_nats"])
        f = slopes.binned_full_slope(m.epoch.to_numpy(), m.value.to_numpy(), bins_per_epoch=1)
        per_epoch.append(f.r2)
    r2_epoch = np.nanmedian(per_epoch) if np.isfinite(per_epoch).any() else float("nan")
    print(f"median R² after burn-in over {done.r_squared.notna().sum()} runs: per batch "
          f"{done.r_squared_batch.median():.3f}, trajectory (quarter-epoch geometric means: H1's r_squared) "
          f"{done.r_squared.median():.3f}, one-epoch means {r2_epoch:.3f}")
    print(f"peak RSS of the largest process: {peak_gb:.2f} GB; load average after: {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} CPUs")
    verdict = "PASS" if wall <= TARGET_S else "FAIL"
    print(f"lls demo ({len(runs)} runs, {len(done)} complete, 2 workers): {wall:.0f} s wall "
          f"(target ≤ {TARGET_S:.0f} s: {verdict})")
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
