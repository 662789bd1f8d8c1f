"""What the tests share: the one runner of the real `lls` console script, and the helpers that start, wait for, stop
and read papermill jobs of `nbs/train.ipynb`.

Test modules import it as `helpers` (pytest puts `tests/` on `sys.path` for the modules it collects there);
`conftest.py` also gives the runner as the `lls` fixture."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

if TYPE_CHECKING:
    import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
TRAIN_NB = ROOT / "nbs" / "train.ipynb"
# One BLAS/OpenMP thread per job (the test machines are shared), and no warnings in the logs the tests read.
ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def console_script(name: str) -> str:
    "The console script `name` next to this interpreter (the venv's), else the one on PATH."
    here = Path(sys.executable).with_name(name)
    return str(here) if here.exists() else (shutil.which(name) or name)


def user_env(env: Mapping | None = None, inherit_env: bool = True) -> dict:
    "The environment of a process started as a user starts it: this one's (unless not `inherit_env`) updated with\n"
    "`env`, without `IN_TEST` (nbdev_test sets it: the train notebook would run its tiny test configuration instead)."
    e = {**(os.environ if inherit_env else {}), **(env or {})}
    e.pop("IN_TEST", None)
    return {k: str(v) for k, v in e.items()}


def lls(*args, exe: str | os.PathLike | None = None, cwd=ROOT, env: Mapping | None = None, inherit_env: bool = True,
        timeout: float = 900, check: bool = False) -> subprocess.CompletedProcess:
    "Run `lls ARGS…` (the console script `exe`, by default this venv's) in a real subprocess from `cwd`, stdout and\n"
    "stderr captured as text; raise with its output when `check` and it exits non-zero."
    p = subprocess.run([str(exe or console_script("lls")), *map(str, args)], cwd=cwd, capture_output=True, text=True,
                       timeout=timeout, env=user_env(env, inherit_env))
    if check and p.returncode != 0:
        raise AssertionError(f"lls {' '.join(map(str, args))} exited {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


def lls_popen(*args, cwd=ROOT, env: Mapping | None = None, **popen_kw) -> subprocess.Popen:
    "Start `lls ARGS…` like `lls` runs it, without waiting: stdout and stderr piped as text (`communicate()` them)."
    return subprocess.Popen([console_script("lls"), *map(str, args)], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=user_env(env), **popen_kw)


def papermill_cmd(out_nb: Path, notebook="nbs/train.ipynb", **params) -> list[str]:
    "The command line `papermill NOTEBOOK OUT_NB --no-progress-bar -p KEY VALUE …`."
    cmd = [console_script("papermill"), str(notebook), str(out_nb), "--no-progress-bar"]
    for k, v in params.items():
        cmd += ["-p", k, str(v)]
    return cmd


def start(tmp: Path, tag: str, **params) -> subprocess.Popen:
    "Start papermill nbs/train.ipynb from the repository root in its own session; stdout+stderr go to tmp/<tag>.log."
    out = tmp / f"{tag}.ipynb"
    logf = open(tmp / f"{tag}.log", "w")
    return subprocess.Popen(papermill_cmd(out, **params), cwd=ROOT, stdout=logf, stderr=subprocess.STDOUT,
                            env={**os.environ, **ENV}, start_new_session=True)


def kill_tree(pid: int, sig) -> list[int]:
    "Send `sig` to `pid` and all its descendants (as SLURM signals every process of a job step); returns the pids."
    try:
        procs = [psutil.Process(pid)] + psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    for p in procs:
        try:
            p.send_signal(sig)
        except psutil.NoSuchProcess:
            pass
    return [p.pid for p in procs]


def finish(p: subprocess.Popen, timeout: float = 240) -> int:
    "Wait for `p` and return its exit code; after `timeout` seconds kill it and its descendants and raise."
    try:
        return p.wait(timeout)
    except subprocess.TimeoutExpired:
        kill_tree(p.pid, signal.SIGKILL)
        raise


def kernel_of(p: subprocess.Popen) -> psutil.Process:
    "The Jupyter kernel process (the training process) of a papermill job."
    kids = [c for c in psutil.Process(p.pid).children(recursive=True) if "ipykernel" in " ".join(c.cmdline())]
    assert kids, "no kernel process found"
    return kids[0]


def wait_until(pred, timeout: float = 180, what: str = "condition", interval: float = 1.0,
               proc: subprocess.Popen | None = None):
    "Poll `pred()` every `interval` seconds until it returns something truthy (returned); fail with `what` after\n"
    "`timeout` seconds, or as soon as `proc` (when given) has exited."
    t0 = time.time()
    while True:
        v = pred()
        if v:
            return v
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited ({proc.returncode}) while waiting for {what}")
        if time.time() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def summary_of(rd: Path) -> dict:
    "A run directory's summary.json ({} when there is none yet)."
    from loss_lin_slope import run

    for _ in range(20):
        try:
            return run.read_summary(rd) or {}
        except json.JSONDecodeError:  # cannot happen with atomic writes; retry defensively
            time.sleep(0.05)
    return {}


def steps_done(rd: Path) -> int:
    "The steps a run has completed, once it has a checkpoint to resume from (else 0)."
    s = summary_of(rd)
    return int(s.get("steps_completed") or 0) if (rd / "checkpoints" / "last.ckpt").exists() else 0


def values(rd: Path) -> pd.DataFrame:
    "The run's metrics without the wall-clock column, indexed by (metric, step)."
    from loss_lin_slope import store

    df = store.read_metrics(rd)
    return df.drop(columns="time").set_index(["metric", "step"]).sort_index()
