"""Helpers shared by tests/test_sweep_*.py: a sweep's ledger, job records and metric steps, `lls sweep status`, and
the Slurm cluster probe (the `lls` runner and the waiting are `helpers`')."""
import json
import shutil
import subprocess
from pathlib import Path

from helpers import ROOT, lls, summary_of

CLUSTER_SH = ROOT / "tests" / "slurm" / "cluster.sh"

# A run of a few seconds of training on a CPU (monitors off: the sweep tests exercise the plumbing, and the
# instrumented notebook has its own tests). Every job is one real papermill execution of nbs/train.ipynb.
TINY = ["--batch-size", "32", "--width-mult", "0.125", "--n-train", "256", "--n-val", "64",
        "--set", "monitors.curvature=false", "monitors.noise=false", "monitors.flush_every_n_steps=4",
        "data.eval_batch_size=64"]


def ledger(out: Path, name: str) -> dict:
    return json.loads((Path(out) / name / "sweep.json").read_text())


def summary(out: Path, name: str, rid: str) -> dict:
    return summary_of(Path(out) / name / rid)


def events(out: Path, name: str, rid: str) -> list[dict]:
    p = Path(out) / name / ".jobs" / f"{rid}.jsonl"
    return [json.loads(x) for x in p.read_text().splitlines() if x.strip()] if p.exists() else []


def status(out: Path, name: str, *extra) -> dict:
    return json.loads(lls("sweep", "status", name, "--out-dir", out, "--json", *extra, check=True).stdout)


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

    from loss_lin_slope.store import live_chunks

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
