"""`lls sweep submit --executor local`: the bounded pool, through real `lls` processes and papermill jobs.

The first test runs the real `nbs/train.ipynb` (tiny synthetic config); the others use a stand-in notebook of a
second (they test the pool — pinning, the lock, Ctrl-C — not training). The last one needs no cluster either: a
`--executor slurm --dry-run` only renders the sbatch script."""
import json
import os
import signal
import time
from pathlib import Path

import nbformat
import pytest
from helpers import TRAIN_NB, lls, lls_popen, wait_until
from sweeplib import TINY, events, intervals, ledger, max_overlap, status

from loss_lin_slope.store import live_chunks


def test_local_pool_two_workers_four_runs(tmp_path):
    "2 workers on a CPU machine run a 4-run sweep: never more than 2 at once, highest priority first, all complete."
    assert TRAIN_NB.exists(), "nbs/train.ipynb is missing"
    out = tmp_path / "runs"
    args = ["sweep", "submit", "loc", "--runs-dir", out, "--variants", "base", "--lrs", "0.05,0.1", "--wds", "0.0001",
            "--seeds", "0,1", "--epochs", "1", *TINY, "--executor", "local", "--workers-per-gpu", "2", "--gpus", "none",
            "--notebook", TRAIN_NB]
    t0 = time.time()
    p = lls(*args, timeout=900, check=True)
    wall = time.time() - t0
    assert "submitted 4 of 4 runs (local)" in p.stdout and "4 completed" in p.stdout, p.stdout
    assert "4/4" in p.stderr  # the tqdm progress bar
    led = ledger(out, "loc")
    assert {e["state"] for e in led["runs"].values()} == {"completed"}
    for rid, e in led["runs"].items():
        rd = out / "loc" / rid
        assert json.loads((rd / "summary.json").read_text())["status"] == "completed"
        assert (rd / "train.ipynb").exists() and (rd / "config.yaml").exists()
        live = [c.name for c in live_chunks(rd / "metrics")]  # what `status` reads: compacted when the run stopped
        assert len(live) == 1 and live[0].endswith(".all.parquet"), live
        assert (rd / "checkpoints" / "last.ckpt").exists()
        assert e["attempts"] == 1 and e["executor"] == "local"
    spans = intervals(out, "loc")
    assert len(spans) == 4
    assert max_overlap(spans) == 2, spans  # it did run two at a time, and never more
    # highest priority first: the pool dispatched the runs in decreasing priority
    by_dispatch = sorted(led["runs"].values(), key=lambda e: e["history"][-1]["dispatch"])
    prios = [e["priority"] for e in by_dispatch]
    assert prios == sorted(prios, reverse=True) and len(set(prios)) == 4, prios
    print(f"local pool: 4 tiny runs with 2 workers in {wall:.1f} s")
    # resubmitting submits nothing
    p = lls(*args, check=True)
    assert "submitted 0 of 4 runs" in p.stdout and "skipped: 4 completed" in p.stdout, p.stdout
    st = status(out, "loc")
    assert st["counts"]["completed"] == 4 and not st["alerts"], st


def stand_in(path: Path, seconds: float = 1.0) -> Path:
    "A one-cell stand-in for the train notebook: sleeps, then writes a completed summary.json."
    params = nbformat.v4.new_code_cell(
        'variant = "base"\nlr = 0.1\nweight_decay = 1e-4\nseed = 0\nepochs = 1\ndataset = "synthetic"\n'
        'batch_size = 32\nwidth_mult = 1.0\ndata_dir = "data"\nout_dir = "runs"\nsweep = "s"\nresume = True\n'
        'n_train = None\nn_val = None\nmax_steps = -1\noverrides = "{}"\nname = ""\nadjustments = "[]"\nattempt = 1')
    params.metadata["tags"] = ["parameters"]
    body = nbformat.v4.new_code_cell(
        "import json, os, time, pathlib\n"
        "rd = pathlib.Path(out_dir) / sweep / name\n"
        "rd.mkdir(parents=True, exist_ok=True)\n"
        "(rd / 'summary.json').write_text(json.dumps({'status': 'running'}))\n"
        "import signal\n"
        "def stop(signum, frame):  # like the train notebook: mark the run interrupted, exit non-zero\n"
        "    (rd / 'summary.json').write_text(json.dumps({'status': 'interrupted'}))\n"
        "    os._exit(3)\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        f"time.sleep({seconds})\n"
        "(rd / 'summary.json').write_text(json.dumps({'status': 'completed', 'wall_time_s': 1.0,\n"
        "    'cvd': os.environ.get('CUDA_VISIBLE_DEVICES')}))")
    nb = nbformat.v4.new_notebook(cells=[params, body])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_local_pool_pins_gpus_and_concurrent_submits_run_each_once(tmp_path):
    "`--gpus 0,1` pins one job per GPU; two `submit`s of the same sweep at once execute each run exactly once."
    nb = stand_in(tmp_path / "stand_in.ipynb", seconds=1.0)
    out = tmp_path / "runs"
    args = ["sweep", "submit", "pin", "--runs-dir", out, "--variants", "base,adamw", "--lrs", "0.1", "--wds", "0.0001",
            "--seeds", "0,1", "--executor", "local", "--gpus", "0,1", "--workers-per-gpu", "1", "--notebook", nb,
            "--json", "--no-progress"]
    procs = [lls_popen(*args), lls_popen(*args)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    submitted = sorted(len(json.loads(o)["submit"]) for o, _ in outs)
    assert submitted == [0, 4], outs  # the second one waited for the lock, then saw 4 queued runs
    led = ledger(out, "pin")
    for rid, e in led["runs"].items():
        evs = events(out, "pin", rid)
        assert [x["event"] for x in evs] == ["start", "end"], evs  # executed once
        assert evs[0]["cuda_visible_devices"] in ("0", "1")
        assert e["history"][-1]["gpu"] == int(evs[0]["cuda_visible_devices"])
    spans = intervals(out, "pin")
    for gpu in ("0", "1"):
        assert max_overlap([s for s in spans if s[2]["cuda_visible_devices"] == gpu]) == 1


def test_local_pool_ctrl_c_stops_jobs_and_requeues_unstarted(tmp_path):
    "Ctrl-C: the running job is stopped (not left 'running'), runs that never started go back to pending."
    nb = stand_in(tmp_path / "slow.ipynb", seconds=60.0)
    out = tmp_path / "runs"
    p = lls_popen("sweep", "submit", "cc", "--runs-dir", out, "--variants", "base", "--lrs", "0.1", "--wds", "0.0001",
                  "--seeds", "0,1,2", "--executor", "local", "--gpus", "none", "--workers-per-gpu", "1",
                  "--notebook", nb, "--no-progress")
    try:
        first = wait_until(lambda: [rid for rid, e in ledger(out, "cc")["runs"].items() if e["state"] == "running"]
                           if (out / "cc" / "sweep.json").exists() else None, 120, "a running job")[0]
        wait_until(lambda: (out / "cc" / first / "summary.json").exists(), 120, "the notebook to start")
        os.kill(p.pid, signal.SIGINT)
        p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode != 0
    led = ledger(out, "cc")
    states = {rid: e["state"] for rid, e in led["runs"].items()}
    assert states.pop(first) == "interrupted"
    assert set(states.values()) == {"pending"} and all(led["runs"][r]["attempts"] == 0 for r in states)
    st = status(out, "cc")
    assert st["counts"]["running"] == 0 and st["counts"]["pending"] == 2


def test_slurm_dry_run_shows_account_qos_exclude(tmp_path):
    "`submit --executor slurm --dry-run` (no cluster needed) prints the sbatch script with --account, --qos, --exclude."
    p = lls("sweep", "submit", "acct", "--runs-dir", tmp_path / "runs", "--variants", "base", "--lrs", "0.1", "--wds",
            "0.0001", "--seeds", "0,1", "--executor", "slurm", "--mem", "8", "--account", "proj42", "--qos", "high",
            "--exclude", "gpu[07-08]", "--dry-run", check=True)
    for line in ("#SBATCH --account=proj42", "#SBATCH --qos=high", "#SBATCH --exclude='gpu[07-08]'",
                 "#SBATCH --mem=8GB", "#SBATCH --array=0-1%"):
        assert line in p.stdout, p.stdout
    assert "acct: would submit 2 of 2 runs (slurm)" in p.stdout, p.stdout
    assert not (tmp_path / "runs").exists()  # a dry run writes nothing


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT-inherited-ignored", "SIGTERM"])
def test_local_pool_stops_on_signal_even_when_sigint_was_ignored(tmp_path, sig):
    "A pool started from a non-interactive shell inherits SIGINT as ignored: SIGINT (and SIGTERM) must still stop it,\n"
    "stopping and marking the running job and putting the unstarted runs back to pending."
    nb = stand_in(tmp_path / "slow.ipynb", seconds=60.0)
    out = tmp_path / "runs"
    p = lls_popen("sweep", "submit", "ig", "--runs-dir", out, "--variants", "base", "--lrs", "0.1", "--wds", "0.0001",
                  "--seeds", "0,1,2", "--executor", "local", "--gpus", "none", "--workers-per-gpu", "1",
                  "--notebook", nb, "--no-progress",
                  preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))  # what `cmd &` gives it
    try:
        first = wait_until(lambda: [rid for rid, e in ledger(out, "ig")["runs"].items() if e["state"] == "running"]
                           if (out / "ig" / "sweep.json").exists() else None, 120, "a running job")[0]
        wait_until(lambda: (out / "ig" / first / "summary.json").exists(), 120, "the notebook to start")
        t0 = time.time()
        os.kill(p.pid, sig)
        p.communicate(timeout=120)
        stopped_s = time.time() - t0
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode != 0
    assert stopped_s < 50, stopped_s  # stopped, not finished: the job sleeps 60 s
    led = ledger(out, "ig")
    states = {rid: e["state"] for rid, e in led["runs"].items()}
    assert states.pop(first) == "interrupted", led["runs"][first]
    assert set(states.values()) == {"pending"} and all(led["runs"][r]["attempts"] == 0 for r in states)
