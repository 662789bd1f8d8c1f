"""Benchmark the sweep commands through the real `lls` console script (a fresh process each time, as a user runs it).

1. `lls sweep submit study --executor slurm --dry-run`: plan the 216-run study, check it against the ledger and
   print what would be submitted (with the sbatch script). Target: < 5 s.
2. `lls sweep status study`: reconcile a ledger of 216 runs with 216 run directories (summary.json + Parquet metric
   chunks, long format as `store.MetricStore` writes them) and run the data-quality checks. Target: < 1 s.
   The first call reads every chunk and caches per-run aggregates (`.status-cache.json`); later calls — what
   `--watch` and monitoring do — only stat each run's metrics directory and read chunks that are new. Both figures
   are printed; the target applies to the steady state.

    python benchmarks/bench_sweep.py [--chunks 40] [--rows 500] [--repeat 5]

The figures are printed last.
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from loss_lin_slope.files import write_json
from loss_lin_slope.ledger import Ledger, merge_grid, plan_runs

SCHEMA = pa.schema([("step", pa.int64()), ("epoch", pa.float64()), ("metric", pa.string()), ("value", pa.float64()),
                    ("time", pa.float64())])
BATCH = ("loss_train_nats", "loss_train_bits", "acc_train", "lr", "wd")


def lls_bin() -> str:
    here = Path(sys.executable).with_name("lls")
    return str(here) if here.exists() else (shutil.which("lls") or "lls")


def timed(*args) -> float:
    t0 = time.perf_counter()
    p = subprocess.run([lls_bin(), *map(str, args)], capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"lls {' '.join(map(str, args))} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return dt


def make_sweep(out: Path, chunks: int, rows: int, steps_per_epoch: int = 391) -> dict:
    "A ledger of the 216-run study and its run directories: 180 completed, 20 running, 10 failed, 6 pending."
    rng = np.random.default_rng(0)
    grid, runs = plan_runs("study")
    led = Ledger("study", out)
    me = {"host": socket.gethostname(), "pid": os.getpid(), "created": __import__("psutil").Process().create_time()}
    kinds = ["completed"] * 180 + ["running"] * 20 + ["failed"] * 10 + ["pending"] * 6
    per = max(1, rows // len(BATCH))
    n_files = 0
    with led.update() as d:
        merge_grid(d, grid, runs)
        for (rid, e), kind in zip(d["runs"].items(), kinds):
            if kind == "pending":
                continue
            e.update(state="running" if kind == "running" else kind, executor="local", job_id=f"local-{rid}",
                     attempts=1, owner=me, history=[{"attempt": 1, "started": time.time() - 600,
                                                     **({} if kind == "running" else {"ended": time.time()})}])
            rd = out / "study" / rid
            (rd / "metrics").mkdir(parents=True)
            n = chunks if kind != "running" else chunks // 2
            step = 0
            for c in range(1, n + 1):
                steps = np.arange(step + 1, step + per + 1)
                step += per
                loss = 2.3 * (steps / 10.0 + 1) ** -0.3 + rng.normal(0, 0.01, per)
                vals = {"loss_train_nats": loss, "loss_train_bits": loss / np.log(2), "acc_train": 1 - loss / 2.5,
                        "lr": 0.1 * np.cos(steps / 20000) ** 2 + 1e-4, "wd": np.full(per, e["weight_decay"])}
                t = pa.table({"step": np.tile(steps, len(BATCH)), "epoch": np.tile(steps / steps_per_epoch, len(BATCH)),
                              "metric": np.repeat(BATCH, per), "value": np.concatenate([vals[m] for m in BATCH]),
                              "time": np.full(per * len(BATCH), time.time())}, schema=SCHEMA)
                pq.write_table(t, rd / "metrics" / f"chunk-{c:06d}.parquet")
                n_files += 1
            write_json(rd / "summary.json", {
                "status": kind, "run_id": rid, "variant": e["variant"], "wall_time_s": 1800.0 + rng.normal(0, 60),
                "epochs_completed": step / steps_per_epoch, "knee_epoch": 3.0, "steps_completed": int(step)})
    return {"runs": len(runs), "run_dirs": 210, "chunk_files": n_files, "rows": n_files * per * len(BATCH)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--chunks", type=int, default=40, help="Parquet chunks per finished run (running: half)")
    ap.add_argument("--rows", type=int, default=500, help="rows per chunk (MetricStore: 100 steps × 5 metrics)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", help="also write the figures to this JSON file")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "runs"
        dry = [timed("sweep", "submit", "study", "--runs-dir", out, "--executor", "slurm", "--dry-run")
               for _ in range(a.repeat)]
        t0 = time.perf_counter()
        info = make_sweep(out, a.chunks, a.rows)
        gen = time.perf_counter() - t0
        cold = timed("sweep", "status", "study", "--runs-dir", out)
        warm = [timed("sweep", "status", "study", "--runs-dir", out) for _ in range(a.repeat)]
        warm_json = [timed("sweep", "status", "study", "--runs-dir", out, "--json") for _ in range(a.repeat)]
        st = json.loads(subprocess.run([lls_bin(), "sweep", "status", "study", "--runs-dir", str(out), "--json"],
                                       capture_output=True, text=True).stdout)
        # a new chunk in every running run (what happens between two --watch refreshes)
        for rid, r in st["runs"].items():
            if r["state"] == "running":
                src = sorted((out / "study" / rid / "metrics").glob("chunk-*.parquet"))[-1]
                shutil.copy(src, src.with_name("chunk-999999.parquet"))
        incr = timed("sweep", "status", "study", "--runs-dir", out)
        dry_run_again = timed("sweep", "submit", "study", "--runs-dir", out, "--executor", "slurm", "--dry-run")
    assert st["counts"]["completed"] == 180 and st["counts"]["running"] == 20, st["counts"]
    res = {
        "submit_dry_run_216_s": statistics.median(dry), "submit_dry_run_216_max_s": max(dry),
        "submit_dry_run_216_with_ledger_s": dry_run_again,
        "status_216_warm_s": statistics.median(warm), "status_216_warm_max_s": max(warm),
        "status_216_warm_json_s": statistics.median(warm_json),
        "status_216_new_chunks_s": incr, "status_216_cold_s": cold, **info, "generate_s": gen,
        "cpus": os.cpu_count(), "load_avg_1m": os.getloadavg()[0],
    }
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    print(f"sweep of {info['runs']} runs, {info['run_dirs']} run directories, {info['chunk_files']} Parquet chunks "
          f"({info['rows']:,} metric rows); {res['cpus']} CPUs, load average {res['load_avg_1m']:.1f}")
    print(f"lls sweep status, first call (reads every chunk, fills the cache): {cold:.2f} s")
    print(f"lls sweep status after a new chunk in each of the 20 running runs:  {incr:.2f} s")
    print(f"lls sweep status --json (steady state, median of {a.repeat}):         {res['status_216_warm_json_s']:.2f} s")
    print(f"lls sweep submit --dry-run against the 216-run ledger:               {dry_run_again:.2f} s")
    ok1, ok2 = res["submit_dry_run_216_s"] < 5, res["status_216_warm_s"] < 1
    print(f"FIGURE lls sweep submit --dry-run, 216 runs: {res['submit_dry_run_216_s']:.2f} s median of {a.repeat} "
          f"(max {max(dry):.2f} s; target < 5 s: {'PASS' if ok1 else 'FAIL'})")
    print(f"FIGURE lls sweep status, 216 run directories: {res['status_216_warm_s']:.2f} s median of {a.repeat} "
          f"(max {max(warm):.2f} s; target < 1 s: {'PASS' if ok2 else 'FAIL'})")
    return 0 if ok1 and ok2 else 1


if __name__ == "__main__":
    sys.exit(main())
