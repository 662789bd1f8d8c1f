"""`lls sweep prune` on a live sweep, for real: two tiny runs of the real `nbs/train.ipynb` train at once (local pool,
or the single-node Slurm cluster); when both have passed the decision epoch, the slope rule prunes one and the
command stops it through its executor (local: SIGTERM to the run lock's holder; Slurm: `scancel --signal=TERM`).
The run records `pruned` itself; every command then reports it — `sweep status`, `verify`, `export`, the report's
exclusions, `recover` (which leaves it alone) — and `lls sweep submit --unprune` resumes it from its checkpoint.

The decision is made known by the rule's parameters: with two runs, `--keep 0.5` keeps k = 1 and `--conf 0.5`
prunes a run ranked below k as soon as its prediction is not better (confidence ≥ 0.5 ⇔ difference ≥ 0), so exactly
the run with the worse prediction is pruned. Bad input and the dry run are checked while the runs train: nothing is
stopped. The commands other than `submit` run in this process (`cli.main`): the same code as the console script, without a
Python start per command (the prune too: what crosses processes there is the stop signal to the run's process); the
submits (the local pool, sbatch) are real `lls` processes."""
import contextlib
import io
import json
import subprocess

import pandas as pd
import pytest
from helpers import TRAIN_NB, lls, lls_popen, summary_of, wait_until
from sweeplib import TINY, cluster_state, events, ledger, metric_steps, sacct

from loss_lin_slope.run import PRUNE_REQUEST, checkpoint_step

EPOCHS, AT, SPE = 6, 1.5, 4  # 128 images, batch 32: 4 steps per epoch, a validation every step
FAST = [("128" if a == "256" and TINY[i - 1] == "--n-train" else a) for i, a in enumerate(TINY)]
GRID = ["--variants", "base", "--lrs", "0.05,0.1", "--wds", "0.0001", "--seeds", "0", "--epochs", str(EPOCHS), *FAST,
        "--notebook", TRAIN_NB]
DECIDE = ["--at-epoch", str(AT), "--keep", "0.5", "--conf", "0.5"]
SLURM = ["--executor", "slurm", "--time", "15", "--mem", "3", "--cpus-per-task", "1", "--gpus-per-task", "1",
         "--array-parallelism", "2"]


def cli(*argv) -> tuple[int, str, str]:
    "(exit code, stdout, stderr) of `lls ARGV` run in this process (`cli.main`)."
    from loss_lin_slope.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def both_past(out, name, epoch: float) -> bool:
    "Both runs are training and have validated at (or after) `epoch`."
    if not (out / name / "sweep.json").exists():
        return False
    runs = ledger(out, name)["runs"]
    ss = [summary_of(out / name / rid) for rid in runs]
    return len(ss) == 2 and all(s.get("status") == "running" and (s.get("epochs_completed") or 0) >= epoch for s in ss)


def bad_input_stops_nothing(out, name):
    "While both runs train: bad input is one line naming the option, exit 2, and nothing is stopped."
    base = ["sweep", "prune", name, "--runs-dir", out]
    for argv, msg in [(["--at-epoch", EPOCHS], f"--at-epoch={float(EPOCHS)!r} is not allowed: a number of epochs in "
                                                f"(0, {EPOCHS})"),
                      ([*DECIDE, "--rule", "median"], "--rule='median' is not allowed: one of slope"),
                      ([*DECIDE, "--keep", "1.5"], "--keep=1.5 is not allowed: a share of runs in (0, 1]")]:
        code, _, err = cli(*base, *argv)
        assert code == 2 and msg in err and len(err.strip().splitlines()) == 1, (argv, err)
    assert requests(out, name) == [] and both_past(out, name, 0.25), "bad input stopped something"


def requests(out, name) -> list:
    return sorted(p.parent.name for p in (out / name).glob(f"*/{PRUNE_REQUEST}"))


def decide_and_prune(out, name, slurm: bool) -> tuple[str, str, dict]:
    """Both runs past the decision epoch: the dry run stops nothing; then the prune stops exactly one run, which
    records `pruned`. Returns (pruned run, kept run, its summary)."""
    base = ["sweep", "prune", name, "--runs-dir", out]
    code, dry, _ = cli(*base, *DECIDE, "--dry-run", "--json")
    assert code == 0, dry
    dry = json.loads(dry)
    assert [r["action"] for r in dry["rows"]].count("prune") == 1 and dry["stopped"] == {}, dry["rows"]
    assert requests(out, name) == [] and both_past(out, name, AT), "a dry run stopped something"
    code, text, err = cli(*base, *DECIDE, "--json")
    assert code == 0, text + err
    res = json.loads(text)
    acts = {r["run_id"]: r["action"] for r in res["rows"]}
    pruned = next(rid for rid, a in acts.items() if a == "prune")
    kept = next(rid for rid, a in acts.items() if a == "keep")
    ranks = {r["run_id"]: r["rank"] for r in res["rows"]}
    assert (ranks[pruned], ranks[kept]) == (2, 1) and res["ended"] == {pruned: "pruned"}, res
    job = ledger(out, name)["runs"][pruned]["job_id"]
    route = f"scancel --signal=TERM {job}" if slurm else "SIGTERM to pid "
    assert res["stopped"][pruned].startswith(route), res["stopped"]
    s = summary_of(out / name / pruned)
    assert s["status"] == "pruned" and s["failure"] is None, s
    pr = s["pruned"]
    assert (pr["rule"], pr["at_epoch"], pr["reason"], pr["params"]["keep"], pr["evidence"]["rank"]) == \
        ("slope", AT, f"pruned at epoch {AT:g} by the slope rule", 0.5, 2), pr
    assert AT <= pr["epoch"] < EPOCHS and pr["step"] == s["steps_completed"] < EPOCHS * SPE, (pr, s)
    assert checkpoint_step(out / name / pruned / "checkpoints" / "last.ckpt") == pr["step"]  # the checkpoint stays
    e = ledger(out, name)["runs"][pruned]
    assert (e["state"], e["reason"]) == ("pruned", f"pruned at epoch {AT:g} by the slope rule"), e
    # again, while the kept run trains on: the same decision, nothing new stopped (or, if it has just ended, refused)
    code, again, err = cli(*base, *DECIDE, "--json")
    if code == 0:
        again = json.loads(again)
        assert {r["run_id"]: r["action"] for r in again["rows"]} == {pruned: "pruned", kept: "keep"}, again["rows"]
        assert again["stopped"] == {}, again
    else:
        assert code == 2 and "none of its 2 runs is running" in err, err
    return pruned, kept, s


def every_command_reports_pruned(out, name, pruned, kept, tmp_path):
    "status, verify, export, the report's exclusions and recover, once the kept run has completed."
    why = f"pruned at epoch {AT:g} by the slope rule"
    code, text, _ = cli("sweep", "status", name, "--runs-dir", out)
    assert code == 0 and "pruned 1" in text and f"  pruned      {pruned}  {why}" in text, text
    st = json.loads(cli("sweep", "status", name, "--runs-dir", out, "--json")[1])
    assert {k: v for k, v in st["counts"].items() if v} == {"completed": 1, "pruned": 1}, st["counts"]
    assert (st["runs"][pruned]["state"], st["runs"][pruned]["reason"]) == ("pruned", why), st["runs"][pruned]
    assert not st["alerts"] and st["progress"]["done"] == 2, st["alerts"]
    code, text, _ = cli("verify", name, "--runs-dir", out, "--json", "--no-cache")
    chk = {r["run_id"]: r for r in json.loads(text)["runs"]}
    assert code == 0 and chk[pruned]["state"] == "pruned" and chk[kept]["state"] == "complete", chk
    assert chk[pruned]["reason"].startswith(f"{why}, stopped at ") and not chk[pruned]["issues"], chk[pruned]
    code, text, _ = cli("export", name, "--runs-dir", out, "--out", tmp_path / "export", "--no-cache")
    runs = pd.read_parquet(tmp_path / "export" / "runs.parquet").set_index("run_id")
    assert code == 0 and (runs.loc[pruned, "state"], runs.loc[pruned, "status"]) == ("pruned", "pruned"), text
    code, text, err = cli("report", name, "--runs-dir", out, "--out", tmp_path / "report", "--n-boot", "20",
                          "--no-cache")
    assert code == 0, err
    ex = json.loads((tmp_path / "report" / "report.json").read_text())["exclusions"]
    mine = [x for x in ex if x["run_id"] == pruned]
    assert mine and mine[0]["state"] == "pruned" and mine[0]["reason"].startswith(why), ex
    before = ledger(out, name)["runs"][pruned]
    code, text, _ = cli("sweep", "recover", name, "--runs-dir", out)
    assert code == 0 and f"{name}: 0 failed run(s); resubmitted 0" in text, text
    assert ledger(out, name)["runs"][pruned] == before  # not resubmitted
    code, _, err = cli("sweep", "prune", name, "--runs-dir", out, *DECIDE)
    assert code == 2 and "none of its 2 runs is running (1 completed, 1 pruned)" in err, err


def resumed(out, name, pruned, pruned_summary):
    "After `--unprune`: the run resumed from its checkpoint, completed, each metric row once; the sweep verifies."
    s = summary_of(out / name / pruned)
    assert s["status"] == "completed" and s["pruned"] is None, s
    assert [h["action"] for h in s["history"]] == ["new", "resume"], s["history"]
    assert s["history"][-1]["from_step"] == pruned_summary["steps_completed"], (s["history"], pruned_summary)
    assert metric_steps(out / name / pruned) == list(range(1, EPOCHS * SPE + 1))
    assert requests(out, name) == []
    assert json.loads(cli("sweep", "status", name, "--runs-dir", out, "--json")[1])["counts"]["completed"] == 2
    e = ledger(out, name)["runs"][pruned]  # (status wrote the reconciled state back, for SLURM)
    assert e["state"] == "completed" and e["history"][0]["unpruned"]["request"]["rule"] == "slope", e
    code, text, _ = cli("verify", name, "--runs-dir", out, "--no-cache")
    assert code == 0 and "2 complete" in text, text


def test_live_prune_local(tmp_path):
    out = tmp_path / "runs"
    pool = lls_popen("sweep", "submit", "pl", "--runs-dir", out, *GRID, "--executor", "local", "--workers-per-gpu",
                     "2", "--gpus", "none", "--no-progress")
    try:
        wait_until(lambda: both_past(out, "pl", 0.25), 300, "both runs training", interval=0.5, proc=pool)
        bad_input_stops_nothing(out, "pl")
        wait_until(lambda: both_past(out, "pl", AT), 300, f"both runs past epoch {AT}", interval=0.5, proc=pool)
        pruned, kept, s = decide_and_prune(out, "pl", slurm=False)
        stdout, stderr = pool.communicate(timeout=600)
    finally:
        if pool.poll() is None:
            pool.kill()
            pool.communicate()
    assert pool.returncode == 0 and "finished 2 runs: 1 completed, 1 pruned" in stdout, stdout + stderr
    evs = events(out, "pl", pruned)
    assert (evs[-1]["event"], evs[-1]["outcome"], evs[-1]["status"]) == ("end", "ok", "pruned"), evs
    assert ledger(out, "pl")["runs"][pruned]["state"] == "pruned"  # the pool wrote it too, the same
    every_command_reports_pruned(out, "pl", pruned, kept, tmp_path)
    p = lls("sweep", "submit", "pl", "--runs-dir", out, "--unprune", pruned, "--notebook", TRAIN_NB, "--no-progress",
            timeout=600)
    assert p.returncode == 0 and "pl: un-pruned 1 run(s)" in p.stdout and "finished 1 runs: 1 completed" in p.stdout, \
        p.stdout + p.stderr
    resumed(out, "pl", pruned, s)


UP, WHY = cluster_state()


@pytest.mark.slurm
@pytest.mark.skipif(not UP, reason=WHY)
def test_live_prune_slurm(tmp_path):
    out = tmp_path / "runs"
    ids = set()
    try:
        lls("sweep", "submit", "ps", "--runs-dir", out, *GRID, *SLURM, check=True)
        ids |= {e["job_id"] for e in ledger(out, "ps")["runs"].values()}
        busy = "at once (a busy Slurm node runs them one after the other: see squeue)"
        wait_until(lambda: both_past(out, "ps", 0.25), 600, f"both runs training {busy}", interval=0.5)
        bad_input_stops_nothing(out, "ps")
        wait_until(lambda: both_past(out, "ps", AT), 300, f"both runs past epoch {AT} {busy}", interval=0.5)
        pruned, kept, s = decide_and_prune(out, "ps", slurm=True)
        job = ledger(out, "ps")["runs"][pruned]["job_id"]
        wait_until(lambda: sacct([job]).get(job) == "COMPLETED", 300, "the pruned job to end COMPLETED")
        wait_until(lambda: summary_of(out / "ps" / kept).get("status") == "completed", 600, "the kept run to complete")
        wait_until(lambda: sacct([ledger(out, "ps")["runs"][kept]["job_id"]]).get(
            ledger(out, "ps")["runs"][kept]["job_id"]) == "COMPLETED", 300, "the kept job to end")
        every_command_reports_pruned(out, "ps", pruned, kept, tmp_path)
        p = lls("sweep", "submit", "ps", "--runs-dir", out, "--unprune", pruned, "--notebook", TRAIN_NB)
        assert p.returncode == 0 and "ps: un-pruned 1 run(s)" in p.stdout, p.stdout + p.stderr
        new = ledger(out, "ps")["runs"][pruned]["job_id"]
        ids.add(new)
        assert new != job and ledger(out, "ps")["runs"][pruned]["attempts"] == 2
        wait_until(lambda: summary_of(out / "ps" / pruned).get("status") == "completed", 600, "the resumed run")
        wait_until(lambda: sacct([new]).get(new) == "COMPLETED", 300, "the resumed job to end")
        resumed(out, "ps", pruned, s)
    finally:
        arrays = sorted({str(j).split("_")[0] for j in ids if j})
        if arrays:
            subprocess.run(["scancel", *arrays], capture_output=True)
