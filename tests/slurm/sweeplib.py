"""Helpers shared by tests/test_sweep_*.py: the `lls` runner, waiting, job records, and the Slurm cluster probe."""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TRAIN_NB = ROOT / "nbs" / "train.ipynb"
CLUSTER_SH = ROOT / "tests" / "slurm" / "cluster.sh"

# A run of a few seconds of training on a CPU (monitors off: the sweep tests exercise the plumbing, and the
# instrumented notebook has its own tests). Every job is one real papermill execution of nbs/train.ipynb.
TINY = ["--batch-size", "32", "--width-mult", "0.125", "--n-train", "256", "--n-val", "64",
        "--set", "monitors.curvature=false", "monitors.noise=false", "monitors.flush_every_n_steps=4",
        "data.eval_batch_size=64"]


def lls_bin() -> str:
    here = Path(sys.executable).with_name("lls")
    return str(here) if here.exists() else (shutil.which("lls") or "lls")


def lls(*args, cwd=None, timeout=900, check=True, env=None) -> subprocess.CompletedProcess:
    "Run the real `lls` console script; raise with its output when `check` and it fails."
    e = {**os.environ, **(env or {})}
    e.pop("IN_TEST", None)
    p = subprocess.run([lls_bin(), *map(str, args)], cwd=cwd or ROOT, capture_output=True, text=True,
                       timeout=timeout, env=e)
    if check and p.returncode != 0:
        raise AssertionError(f"lls {' '.join(map(str, args))} exited {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


def lls_popen(*args, cwd=None) -> subprocess.Popen:
    e = dict(os.environ)
    e.pop("IN_TEST", None)
    return subprocess.Popen([lls_bin(), *map(str, args)], cwd=cwd or ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=e)


def wait_until(pred, timeout: float, what: str, interval: float = 1.0):
    "Poll `pred()` until it returns something truthy (returned); fail with `what` after `timeout` seconds."
    t0 = time.time()
    while True:
        v = pred()
        if v:
            return v
        if time.time() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def ledger(out: Path, name: str) -> dict:
    return json.loads((Path(out) / name / "sweep.json").read_text())


def summary(out: Path, name: str, rid: str) -> dict:
    try:
        return json.loads((Path(out) / name / rid / "summary.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def events(out: Path, name: str, rid: str) -> list[dict]:
    p = Path(out) / name / ".jobs" / f"{rid}.jsonl"
    return [json.loads(x) for x in p.read_text().splitlines() if x.strip()] if p.exists() else []


def status(out: Path, name: str, *extra) -> dict:
    return json.loads(lls("sweep", "status", name, "--out-dir", out, "--json", *extra).stdout)


def intervals(out: Path, name: str) -> list[tuple[float, float, dict]]:
    "(start, end, start_record) of every job of a sweep, from the job records `.jobs/<run_id>.jsonl`."
    res = []
    for p in sorted((Path(out) / name / ".jobs").glob("*.jsonl")):
        start = None
        for e in (json.loads(x) for x in p.read_text().splitlines() if x.strip()):
            if e["event"] == "start":
                start = e
            elif e["event"] in ("end", "requeue") and start is not None:
                res.append((start["time"], e["time"], start))
                start = None
    return res


def max_overlap(spans) -> int:
    "The largest number of [start, end) intervals that overlap at any instant."
    pts = sorted([(s, 1) for s, _, *_ in spans] + [(e, -1) for _, e, *_ in spans], key=lambda x: (x[0], x[1]))
    cur = best = 0
    for _, d in pts:
        cur += d
        best = max(best, cur)
    return best


def metric_steps(run_dir: Path, metric: str = "loss_train_nats") -> list[int]:
    "The steps at which `metric` is stored, with repetitions (each step must appear once)."
    import pyarrow.parquet as pq

    from loss_lin_slope.run import live_chunks

    steps = []
    for f in live_chunks(Path(run_dir) / "metrics"):  # the reader's rule: a compacted .all supersedes older chunks
        t = pq.read_table(f, columns=["step", "metric"]).to_pydict()
        steps += [s for s, m in zip(t["step"], t["metric"]) if m == metric]
    return sorted(steps)


def sacct(job_ids) -> dict[str, str]:
    "job id → sacct State of the allocation (array tasks unfolded by sacct itself once they have run)."
    arrays = sorted({str(j).split("_")[0] for j in job_ids})
    out = subprocess.run(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(arrays)],
                         capture_output=True, text=True, check=True).stdout
    return {line.split("|")[0]: line.split("|")[1].split()[0] for line in out.splitlines() if "|" in line}


def cluster_state() -> tuple[bool, str]:
    "Whether the single-node Slurm test cluster takes jobs (with accounting), and why not."
    sh = CLUSTER_SH.relative_to(ROOT)
    hint = f"start it with `sudo bash {sh} start` (root, Debian 12; stop: `sudo bash {sh} stop`)"
    for tool in ("sbatch", "sinfo", "sacct", "scancel"):
        if shutil.which(tool) is None:
            return False, f"Slurm test cluster not available: `{tool}` is not installed — {hint}"
    try:
        node = subprocess.run(["sinfo", "-h", "-o", "%T %G"], capture_output=True, text=True, timeout=20)
        acct = subprocess.run(["sacct", "-n", "-X", "-o", "JobID", "-S", "now-1minute"], capture_output=True,
                              text=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as e:
        return False, f"Slurm test cluster not running ({e}) — {hint}"
    states = node.stdout.split()
    if node.returncode != 0 or not any(s.rstrip("*~#") in ("idle", "mixed", "allocated", "completing")
                                       for s in states):
        return False, f"Slurm test cluster not running (sinfo: {(node.stdout + node.stderr).strip()[:200]}) — {hint}"
    if acct.returncode != 0:
        return False, f"Slurm accounting (slurmdbd) not answering: {acct.stderr.strip()[:200]} — {hint}"
    if "gpu:" not in node.stdout:
        return False, f"the Slurm node has no (fake) GPUs (sinfo: {node.stdout.strip()}) — {hint}"
    return True, ""
