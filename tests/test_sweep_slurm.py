"""`lls sweep submit | status | recover --executor slurm` against a real single-node Slurm cluster.

Needs the test cluster (2 fake GPUs, accounting): `sudo bash tests/slurm/cluster.sh start` (CI: `.ci/run`), stop it
with `... stop`. Without it every test here is skipped, with that reason.

To stay within a few minutes on 2 cores, one module fixture submits everything at once and injects the faults as
soon as their moment comes (a USR2 mid-run, a scancel, a kill -9); the tests then check the outcomes:
- `usr2`: 1 run (3 epochs) signalled with USR2 after its first checkpoint → requeued, resumed, completed;
- `oom`:  1 run with --mem 0.5 GB → killed by Slurm for host RAM (OUT_OF_MEMORY) → recovered with a larger --mem,
  batch kept (a GPU OOM, which would halve the batch, cannot be produced without a GPU: 17_sweep tests that path);
- `mini`: 8 runs submitted by two concurrent `lls sweep submit` → each submitted once; one run scancel'ed, the
  training process of another killed with SIGKILL → both recovered; all 8 complete; status agrees with sacct; resubmitting submits nothing.
Every job is a papermill execution of the real `nbs/train.ipynb` (tiny synthetic config)."""
import json
import subprocess
import time

import pytest
from helpers import TRAIN_NB, lls, lls_popen, wait_until
from sweeplib import TINY, cluster_state, events, intervals, ledger, max_overlap, metric_steps, sacct, status, summary

UP, WHY = cluster_state()
pytestmark = [pytest.mark.slurm, pytest.mark.skipif(not UP, reason=WHY)]

SLURM = ["--executor", "slurm", "--time", "15", "--mem", "3", "--cpus-per-task", "1", "--gpus-per-task", "1",
         "--notebook", TRAIN_NB]
MINI = ["--variants", "base,narrow", "--lrs", "0.05,0.1", "--wds", "0.0001", "--seeds", "0,1", "--epochs", "1"]


def _running(out, name, rid, min_steps=1):
    s = summary(out, name, rid)
    return s.get("status") == "running" and (s.get("steps_completed") or 0) >= min_steps


def _kernel_of(out, name, rid):
    "The Jupyter kernel process of a run's job (a child of the job process recorded in `.jobs/<run_id>.jsonl`)."
    import psutil

    starts = [e for e in events(out, name, rid) if e["event"] == "start"]
    try:
        kids = psutil.Process(starts[-1]["pid"]).children(recursive=True) if starts else []
    except psutil.NoSuchProcess:
        return None
    return next((k for k in kids if "ipykernel" in " ".join(k.cmdline())), None)


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    assert TRAIN_NB.exists(), "nbs/train.ipynb is missing"
    out = tmp_path_factory.mktemp("slurm") / "runs"
    t0 = time.time()
    ctx = {"out": out, "t0": time.time(), "log": []}
    # 1. the USR2 run first (it starts at once), then the OOM run, then the mini sweep twice, concurrently
    lls("sweep", "submit", "usr2", "--runs-dir", out, "--variants", "base", "--lrs", "0.1", "--wds", "0.0001",
        "--seeds", "0", "--epochs", "3", *TINY, *SLURM, check=True)
    lls("sweep", "submit", "oom", "--runs-dir", out, "--variants", "base", "--lrs", "0.1", "--wds", "0.0001",
        "--seeds", "0", "--epochs", "1", *TINY, *SLURM, "--mem", "0.5", check=True)
    procs = [lls_popen("sweep", "submit", "mini", "--runs-dir", out, *MINI, *TINY, *SLURM, "--json") for _ in range(2)]
    ctx["mini_submits"] = [p.communicate(timeout=120) + (p.returncode,) for p in procs]
    ctx["submitted_s"] = time.time() - t0
    usr2_rid = next(iter(ledger(out, "usr2")["runs"]))
    mini = ledger(out, "mini")["runs"]
    ctx.update(usr2_rid=usr2_rid, usr2_job=ledger(out, "usr2")["runs"][usr2_rid]["job_id"])
    # 2. inject the faults when their moment comes
    todo = {"usr2", "cancel", "kill"}
    while todo:
        if time.time() - t0 > 600:
            raise AssertionError(f"faults not injected after 600 s: {todo}")
        if "usr2" in todo and _running(out, "usr2", usr2_rid, 4) and \
                (out / "usr2" / usr2_rid / "checkpoints" / "last.ckpt").exists():
            ctx["usr2_step"] = summary(out, "usr2", usr2_rid)["steps_completed"]
            subprocess.run(["scancel", "--signal=USR2", ctx["usr2_job"]], check=True)
            ctx["log"].append((time.time() - t0, "USR2", ctx["usr2_job"]))
            todo.discard("usr2")
        for rid, e in mini.items():
            if rid in (ctx.get("cancel"), ctx.get("kill")) or not _running(out, "mini", rid):
                continue
            if "cancel" in todo:  # plain scancel: SIGTERM (the notebook checkpoints), then the job is gone
                subprocess.run(["scancel", e["job_id"]], check=True)
                ctx["cancel"], ctx["cancel_job"] = rid, e["job_id"]
                todo.discard("cancel")
            elif "kill" in todo:  # kill -9 of the training process (the job's Jupyter kernel): no chance to save
                kernel = _kernel_of(out, "mini", rid)
                if kernel is None:
                    continue
                kernel.kill()
                ctx["kill"], ctx["kill_job"] = rid, e["job_id"]
                todo.discard("kill")
            ctx["log"].append((time.time() - t0, "kill" if "cancel" not in todo and ctx.get("kill") == rid else
                               "scancel", e["job_id"]))
        time.sleep(0.5)
    yield ctx
    # teardown: cancel whatever of ours is still in the queue (by job id)
    ids = set()
    for name in ("usr2", "oom", "mini"):
        with_ledger = out / name / "sweep.json"
        if with_ledger.exists():
            ids |= {str(e["job_id"]).split("_")[0] for e in ledger(out, name)["runs"].values() if e.get("job_id")}
    if ids:
        subprocess.run(["scancel", *sorted(ids)], capture_output=True)


def test_concurrent_submits_submit_each_run_once(sweeps):
    outs = sweeps["mini_submits"]
    assert all(rc == 0 for _, _, rc in outs), outs
    n = sorted(len(json.loads(o)["submit"]) for o, _, _ in outs)
    assert n == [0, 8], outs  # the second `submit` waited for the lock and found 8 queued runs
    runs = ledger(sweeps["out"], "mini")["runs"]
    assert len(runs) == 8 and len({e["job_id"] for e in runs.values()}) == 8
    assert len({e["job_id"].split("_")[0] for e in runs.values()}) == 1  # one job array
    prio = sorted(runs.values(), key=lambda e: int(e["job_id"].split("_")[1]))
    assert [e["priority"] for e in prio] == sorted((e["priority"] for e in prio), reverse=True)  # index = priority
    print(f"\nsubmitted usr2, oom and mini (twice) in {sweeps['submitted_s']:.1f} s; faults: {sweeps['log']}")


def test_usr2_requeues_and_resumes_from_checkpoint(sweeps):
    out, rid, job = sweeps["out"], sweeps["usr2_rid"], sweeps["usr2_job"]
    wait_until(lambda: summary(out, "usr2", rid).get("status") == "completed" and
               status(out, "usr2")["counts"]["completed"] == 1, 420, "the USR2 run to complete")
    evs = events(out, "usr2", rid)
    assert [e["event"] for e in evs] == ["start", "requeue", "start", "end"], evs
    assert evs[1]["status"] == "interrupted"  # the notebook had saved and marked the run before the requeue
    assert evs[2]["resume_from"] and evs[2]["restart_count"] == 1 and evs[2]["job_id"] == job
    hist = summary(out, "usr2", rid)["history"]
    assert [h["action"] for h in hist] == ["new", "resume"], hist
    assert hist[1]["from_step"] >= sweeps["usr2_step"], (hist, sweeps["usr2_step"])
    s = summary(out, "usr2", rid)
    assert s["steps_completed"] == 3 * 8
    assert metric_steps(out / "usr2" / rid) == list(range(1, 25))  # every step exactly once
    dup = subprocess.run(["sacct", "-n", "-P", "-X", "--duplicates", "-o", "JobID,State", "-j", job],
                         capture_output=True, text=True).stdout
    assert "REQUEUED" in dup and "COMPLETED" in dup, dup
    led = ledger(out, "usr2")["runs"][rid]
    assert led["attempts"] == 1 and led["state"] == "completed"  # a requeue is not a new attempt


def test_host_oom_is_classified_and_recovered_with_more_memory(sweeps):
    "SLURM kills the `oom` run for host RAM (--mem 0.5 GB, OUT_OF_MEMORY): recover raises --mem and keeps the batch."
    out = sweeps["out"]
    rid = next(iter(ledger(out, "oom")["runs"]))
    st = wait_until(lambda: (s := status(out, "oom"))["counts"]["failed"] == 1 and s, 300, "the OOM run to fail")
    assert st["runs"][rid]["state"] == "failed"
    plan = json.loads(lls("sweep", "recover", "oom", "--runs-dir", out, "--dry-run", "--json", check=True).stdout)
    (row,) = plan["rows"]
    assert row["kind"] == "host_oom" and row["action"] == "resubmit", row
    assert row["note"].startswith("host RAM: --mem 0.5 GB → 1 GB") and "batch 32 kept" in row["note"], row
    p = lls("sweep", "recover", "oom", "--runs-dir", out, "--mem", "3", check=True)
    assert "resubmitted 1" in p.stdout, p.stdout
    wait_until(lambda: status(out, "oom")["counts"]["completed"] == 1, 420, "the recovered OOM run to complete")
    e = ledger(out, "oom")["runs"][rid]
    assert e["attempts"] == 2 and len(e["adjustments"]) == 1
    adj = e["adjustments"][0]
    assert adj["kind"] == "host_oom" and adj["change"] == {"mem_gb": [0.5, 3.0]}, adj  # the explicit --mem 3 wins
    assert e["params"]["batch_size"] == 32
    s = summary(out, "oom", rid)
    assert s["status"] == "completed" and s["attempt"] == 2 and s["adjustments"][0]["change"] == adj["change"]
    import yaml

    cfg = yaml.safe_load((out / "oom" / rid / "config.yaml").read_text())
    assert cfg["data"]["batch_size"] == 32 and cfg["trainer"]["accumulate_grad_batches"] == 1
    assert s["steps_completed"] == 8


def test_killed_runs_show_failed_and_recover_completes_them(sweeps):
    out = sweeps["out"]
    cancel, kill = sweeps["cancel"], sweeps["kill"]

    def ended():
        st = status(out, "mini")
        return st if {st["runs"][cancel]["state"], st["runs"][kill]["state"]} <= {"failed", "interrupted"} else None

    st = wait_until(ended, 180, "the cancelled and killed runs to end")
    assert st["runs"][kill]["state"] == "failed", st["runs"][kill]  # kill -9: the summary still says running
    assert st["runs"][cancel]["state"] == "interrupted", st["runs"][cancel]  # SIGTERM: checkpointed first
    assert "CANCELLED" in (st["runs"][cancel]["reason"] or "") + str(st["runs"][cancel]["scheduler_state"])
    acct = sacct([sweeps["cancel_job"], sweeps["kill_job"]])
    assert acct[sweeps["cancel_job"]] == "CANCELLED" and acct[sweeps["kill_job"]] == "FAILED", acct
    plan = json.loads(lls("sweep", "recover", "mini", "--runs-dir", out, "--dry-run", "--json", check=True).stdout)
    assert {r["run_id"] for r in plan["rows"]} == {cancel, kill}, plan
    assert {r["kind"] for r in plan["rows"]} == {"other"} and {r["action"] for r in plan["rows"]} == {"resubmit"}
    p = lls("sweep", "recover", "mini", "--runs-dir", out, check=True)
    assert "resubmitted 2" in p.stdout, p.stdout
    runs = ledger(out, "mini")["runs"]
    assert runs[cancel]["attempts"] == runs[kill]["attempts"] == 2
    assert runs[cancel]["job_id"] != sweeps["cancel_job"] and runs[cancel]["history"][-1]["resume"] is True


def test_mini_sweep_completes_and_status_agrees_with_sacct(sweeps):
    out = sweeps["out"]
    st = wait_until(lambda: (s := status(out, "mini"))["counts"]["completed"] == 8 and s, 600,
                    "all 8 runs of the mini sweep to complete")
    runs, dup = ledger(out, "mini")["runs"], {}
    for rid, e in runs.items():
        rd = out / "mini" / rid
        for f in ("config.yaml", "summary.json", "train.ipynb", "run.log", "checkpoints/last.ckpt"):
            assert (rd / f).exists(), (rid, f)
        assert summary(out, "mini", rid)["status"] == "completed"
        steps = metric_steps(rd)
        assert sorted(set(steps)) == list(range(1, 9)), (rid, steps)  # 256 images / batch 32: 8 steps
        dup[rid] = sorted({s for s in steps if steps.count(s) > 1})
        assert e["state"] == "completed" and st["runs"][rid]["job_id"] == e["job_id"]
    acct = sacct([e["job_id"] for e in runs.values()])
    assert {rid: acct[e["job_id"]] for rid, e in runs.items()} == {rid: "COMPLETED" for rid in runs}, acct
    assert {rid: r["state"] for rid, r in st["runs"].items()} == {rid: "completed" for rid in runs}
    # 2 fake GPUs: never more than 2 jobs at once, and every job saw exactly one of them
    spans = intervals(out, "mini")
    assert max_overlap(spans) <= 2
    assert {s[2]["cuda_visible_devices"] for s in spans} <= {"0", "1"}
    assert not [a for a in st["alerts"] if a["kind"] in ("nan", "stuck")], st["alerts"]
    # each (step, metric) stored exactly once, also in the run resumed after its kernel was killed with SIGKILL
    assert not any(dup.values()), f"steps stored twice after a resume: {dup}"


def test_resubmitting_submits_nothing(sweeps):
    out = sweeps["out"]
    before = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout
    r = json.loads(lls("sweep", "submit", "mini", "--runs-dir", out, *MINI, *TINY, *SLURM, "--json", check=True).stdout)
    assert r["submit"] == [] and set(r["skipped"].values()) == {"completed"} and len(r["skipped"]) == 8
    assert subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout == before
    print(f"\nslurm sweep tests: {time.time() - sweeps['t0']:.0f} s from the first submission")


def test_unsatisfiable_array_shows_reason_and_alert(tmp_path):
    "An array asking for more CPUs per task than any node has stays PENDING forever (PartitionConfig): `status` shows\n"
    "each job's reason and an `unschedulable` alert saying what to change, instead of 'queued … alerts: none'."
    import os

    ncpu = max(int(x) for x in subprocess.run(["sinfo", "-h", "-o", "%c"], capture_output=True, text=True,
                                             check=True).stdout.split())
    out = tmp_path / "runs"
    i = SLURM.index("--cpus-per-task")
    args = [*SLURM[:i], "--cpus-per-task", str(ncpu + 6), *SLURM[i + 2:]]  # more than any node has
    p = lls("sweep", "submit", "toobig", "--runs-dir", out, "--variants", "base", "--lrs", "0.1", "--wds", "0.0001",
            "--seeds", "0,1", "--epochs", "1", *TINY, *args, "--json", check=True)
    ids = [e["job_id"] for e in ledger(out, "toobig")["runs"].values()]
    try:
        assert len(ids) == 2 and all(ids), ids
        st = wait_until(lambda: (lambda s: s if all(r.get("pending_reason") for r in s["runs"].values()) else None)(
            status(out, "toobig")), 60, "squeue to give the pending reasons")
        assert {r["pending_reason"] for r in st["runs"].values()} == {"PartitionConfig"}, st["runs"]
        (alert,) = [a for a in st["alerts"] if a["kind"] == "unschedulable"]
        assert sorted(alert["runs"]) == sorted(st["runs"]) and "--cpus-per-task" in alert["message"], alert
        text = lls("sweep", "status", "toobig", "--runs-dir", out, check=True).stdout
        assert "pending (Slurm reason): PartitionConfig 2" in text and "ALERT [unschedulable]" in text, text
    finally:
        subprocess.run(["scancel", *sorted({i.split("_")[0] for i in ids if i})], check=False)
    assert p.returncode == 0 and os.path.isdir(out / "toobig")


def _scontrol(job_id: str) -> str:
    return subprocess.run(["scontrol", "show", "job", str(job_id)], capture_output=True, text=True, check=True).stdout


def test_site_options_reach_slurm_and_recover_reuses_them(tmp_path):
    """--gres, --comment and --slurm-extra on the real cluster: in `scontrol show job`, recorded in the ledger and
    resubmitted by `recover`. The jobs are submitted held (`--slurm-extra hold`) and cancelled: nothing trains. The
    test node has no features, so --constraint is checked by sbatch refusing an unknown one (and in --dry-run)."""
    out = tmp_path / "runs"
    site = ["--gres", "gpu:1", "--gpus-per-task", "0", "--comment", "lls site test", "--slurm-extra", "hold",
            "nice=7"]
    one = ["--variants", "base", "--lrs", "0.1", "--wds", "0.0001", "--seeds", "0", "--epochs", "1", *TINY]
    base = ["--executor", "slurm", "--time", "5", "--mem", "1", "--cpus-per-task", "1", "--notebook", TRAIN_NB]
    dry = lls("sweep", "submit", "site", "--runs-dir", out, *one, *base, *site, "--constraint", "a100&ib",
              "--dry-run", check=True).stdout
    for line in ("#SBATCH --gres=gpu:1", "#SBATCH --constraint='a100&ib'", "#SBATCH --comment='lls site test'",
                 "#SBATCH --hold", "#SBATCH --nice=7"):
        assert line in dry, dry
    bad = lls("sweep", "submit", "feat", "--runs-dir", out, *one, *base, "--constraint", "a100")
    assert bad.returncode == 2 and "Invalid feature specification" in bad.stderr, bad.stderr
    jobs = []
    try:
        r = json.loads(lls("sweep", "submit", "site", "--runs-dir", out, *one, *base, *site, "--json",
                           check=True).stdout)
        ((rid, jid),) = r["job_ids"].items()
        jobs.append(jid)
        show = _scontrol(jid)
        assert "TresPerNode=gres:gpu:1" in show and "Comment=lls site test" in show, show
        assert "Reason=JobHeldUser" in show and "Nice=7" in show, show
        ex = ledger(out, "site")["executor"]
        assert (ex["gres"], ex["comment"], ex["slurm_extra"]) == ("gpu:1", "lls site test", {"hold": True, "nice": "7"})
        subprocess.run(["scancel", jid], check=True)
        wait_until(lambda: sacct([jid]).get(jid, "").startswith("CANCELLED"), 120,
                   "sacct to show the held job CANCELLED")
        rec = json.loads(lls("sweep", "recover", "site", "--runs-dir", out, "--json", check=True).stdout)
        new = rec["job_ids"][rid]
        jobs.append(new)
        assert new != jid
        show = _scontrol(new)  # resubmitted with the sweep's site options, as recorded
        assert "TresPerNode=gres:gpu:1" in show and "Comment=lls site test" in show and "Nice=7" in show, show
    finally:
        if jobs:
            subprocess.run(["scancel", *jobs], check=False)
