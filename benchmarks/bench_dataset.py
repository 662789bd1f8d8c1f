"""Benchmark: `lls verify` + `lls export` + `lls report` on a synthetic 216-run sweep (50 epochs × 391 steps).

Target (issue 8): the three commands together < 30 s wall and < 4 GB peak memory on the 2-core dev machine.

The sweep is written once by `dataset.make_synthetic_sweep` (not timed; `--keep DIR` reuses it). Each command runs
as a user runs it, a real `lls` subprocess, one after the other, with a fresh (cold) result cache; peak memory is the
largest total RSS of the command's process tree (the command and its worker processes), sampled every 20 ms.

Chunking (`--chunking`): `compacted` (default) is what runs leave today: `store.MetricStore` flushes a chunk every 100
steps and at every validation (≈ 400 per run) and `run_experiment` merges them into one `chunk-N.all.parquet` when
the run stops, so a finished run is one file (216 files in all). `store` keeps the ≈ 400 chunks per run (85 k files:
the layout before compaction, or runs killed before they could compact); `epochs10` keeps one chunk per 10 epochs.
`--no-cache` also measures the three commands without the cache (each rereads every run).

    python benchmarks/bench_dataset.py                       # the target figure (compacted runs, cold cache)
    python benchmarks/bench_dataset.py --chunking store --no-cache
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from loss_lin_slope.testing import make_synthetic_sweep

TARGET_S, TARGET_GB = 30.0, 4.0


def lls_cmd() -> list[str]:
    here = Path(sys.executable).with_name("lls")
    return [str(here)] if here.exists() else [shutil.which("lls") or "lls"]


def _cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_measured(args: list[str], env: dict) -> tuple[float, float, int, subprocess.CompletedProcess]:
    "Wall time, CPU time (user + sys of the command and its workers), peak total RSS of the process tree (bytes)."
    peak = [0]
    cpu0 = _cpu_children()
    t0 = time.perf_counter()
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    done = threading.Event()

    def sample():
        try:
            proc = psutil.Process(p.pid)
        except psutil.Error:
            return
        while not done.is_set():
            try:
                procs = [proc] + proc.children(recursive=True)
                rss = 0
                for q in procs:
                    try:
                        rss += q.memory_info().rss
                    except psutil.Error:
                        pass
                peak[0] = max(peak[0], rss)
            except psutil.Error:
                pass
            done.wait(0.02)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    out, err = p.communicate()
    wall = time.perf_counter() - t0
    done.set()
    th.join()
    return wall, _cpu_children() - cpu0, peak[0], subprocess.CompletedProcess(args, p.returncode, out, err)


def measure(root: Path, name: str, out: Path, cache: bool, workers: int | None) -> dict:
    env = dict(os.environ)
    cache_dir = Path(tempfile.mkdtemp(prefix="lls-bench-cache-"))
    env["LLS_CACHE_DIR"] = str(cache_dir)
    extra = ([] if cache else ["--no-cache"]) + ([] if workers is None else ["--workers", str(workers)])
    cmds = {
        "verify": ["verify", name, "--runs-dir", str(root)],
        "export": ["export", name, "--runs-dir", str(root), "--out", str(out / "dataset")],
        "report": ["report", name, "--runs-dir", str(root), "--out", str(out / "report")],
    }
    res = {}
    for k, a in cmds.items():
        wall, cpu, peak, p = run_measured(lls_cmd() + a + extra, env)
        ok = p.returncode in ((0, 1) if k == "verify" else (0,))  # verify exits 1 when a run is not complete
        if not ok:
            raise SystemExit(f"lls {' '.join(a)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
        last = (p.stdout.strip().splitlines() or [""])[-1]
        res[k] = {"wall_s": wall, "cpu_s": cpu, "peak_bytes": peak, "last_line": last}
        print(f"  lls {k:7s} {wall:6.2f} s wall, {cpu:6.2f} s CPU, peak {peak / 1e9:5.2f} GB   {last[:100]}")
    shutil.rmtree(cache_dir, ignore_errors=True)
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=216)
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--steps-per-epoch", type=int, default=391)
    ap.add_argument("--chunking", choices=("compacted", "store", "epochs10"), default="compacted")
    ap.add_argument("--keep", type=Path, default=None, help="write (or reuse) the synthetic sweep here")
    ap.add_argument("--workers", type=int, default=None, help="--workers for the lls commands (default: auto)")
    ap.add_argument("--no-cache", action="store_true", help="also measure the commands with --no-cache")
    args = ap.parse_args(argv)

    tmp = tempfile.TemporaryDirectory(prefix="lls-bench-")
    root = args.keep or Path(tmp.name) / "runs"
    name = f"bench-{args.runs}x{args.epochs}x{args.steps_per_epoch}-{args.chunking}"
    if not (root / name / "sweep.json").exists():
        t0 = time.perf_counter()
        make_synthetic_sweep(root, name, n_runs=args.runs, epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
                             chunk_epochs=10 if args.chunking == "epochs10" else None,
                             compact=args.chunking == "compacted")
        print(f"wrote the synthetic sweep in {time.perf_counter() - t0:.1f} s (not timed)")
    files = sum(1 for _ in (root / name).rglob("chunk-*.parquet"))
    size = sum(p.stat().st_size for p in (root / name).rglob("*") if p.is_file())
    print(f"sweep {root / name}: {args.runs} runs × {args.epochs} epochs × {args.steps_per_epoch} steps, "
          f"{files} metric chunks, {size / 1e9:.2f} GB; {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")

    results = {}
    for cache in ([True, False] if args.no_cache else [True]):
        label = "cold cache" if cache else "no cache"
        print(f"{label}:")
        out = Path(tmp.name) / ("out-cache" if cache else "out-nocache")
        results[label] = measure(root, name, out, cache, args.workers)

    print()
    print(f"load average after: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (wall time grows with it; CPU "
          "time does not)")
    for label, r in results.items():
        total = sum(v["wall_s"] for v in r.values())
        cpu = sum(v["cpu_s"] for v in r.values())
        peak = max(v["peak_bytes"] for v in r.values())
        print(f"verify+export+report ({args.runs} runs × {args.epochs} epochs × {args.steps_per_epoch} steps, "
              f"{args.chunking} chunks, {label}): {total:.1f} s wall (target < {TARGET_S:.0f} s: "
              f"{'PASS' if total < TARGET_S else 'FAIL'}), {cpu:.1f} s CPU, peak {peak / 1e9:.2f} GB "
              f"(target < {TARGET_GB:.0f} GB: {'PASS' if peak < TARGET_GB * 1e9 else 'FAIL'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
