"""Fault injection on a sweep's ledger and its local pool, as a user meets them, through real `lls` processes.

The sweep ledger `sweep.json` is untrusted input (a hand edit, a bad merge, a truncated copy): a traversal run id
writes nothing outside the sweep, a ledger of the wrong shape is refused in one line (exit 2) by every sweep command.
A local pool killed by SIGHUP (a closed terminal) leaves its job training: the run lock, not the ledger, says it is
alive, so `status` shows it running and `recover` never resubmits it; the run the pool had queued but not started
goes back to pending and the next `submit` starts it. Absurd values fail at config time, naming the key.

The jobs are a stand-in notebook that holds the real run lock (`run.RunLock`) until the test releases it: these
tests exercise the ledger, the pool and the lock, not training (the train notebook has its own tests)."""
import json
import os
import signal
from pathlib import Path

import nbformat
import pytest
from helpers import kill_tree, lls, lls_popen, wait_until
from sweeplib import events, ledger, status

from loss_lin_slope.config import ConfigError
from loss_lin_slope.ledger import Ledger, merge_grid, plan_runs
from loss_lin_slope.run import lock_state, notebook_config
from loss_lin_slope.testing import stand_in_notebook

GRID = ["--variants", "base", "--lrs", "0.1", "--wds", "0.0001", "--seeds", "0,1", "--epochs", "2"]


def tree(root: Path) -> dict:
    "Every file under `root` with its bytes: what a refused command must leave as it was."
    return {p: p.read_bytes() for p in Path(root).rglob("*") if p.is_file()}


def holding_notebook(path: Path) -> Path:
    "A job notebook that takes its run's lock, says `running`, waits for `<out_dir>/../release/<run_id>`, completes."
    names = ["variant", "lr", "weight_decay", "seed", "epochs", "dataset", "batch_size", "width_mult", "data_dir",
             "out_dir", "sweep", "resume", "n_train", "n_val", "max_steps", "overrides", "name", "adjustments",
             "attempt", "logger"]
    params = nbformat.v4.new_code_cell("\n".join(f"{n} = None" for n in names), metadata={"tags": ["parameters"]})
    body = nbformat.v4.new_code_cell(
        "import pathlib, time\n"
        "from loss_lin_slope.run import RunLock, write_summary\n"
        "rd = pathlib.Path(out_dir) / sweep / name\n"
        "lock = RunLock(rd).acquire()\n"
        "write_summary(rd / 'summary.json', {'status': 'running'})\n"
        "release, t0 = pathlib.Path(out_dir).parent / 'release' / name, time.time()\n"
        "while not release.exists() and time.time() - t0 < 120:\n"
        "    time.sleep(0.2)\n"
        "write_summary(rd / 'summary.json', {'status': 'completed', 'wall_time_s': 1.0})\n"
        "lock.release()")
    nb = nbformat.v4.new_notebook(cells=[params, body], metadata={"kernelspec": {"name": "python3", "language": "python",
                                                                                 "display_name": "Python 3"}})
    nbformat.write(nb, path)
    return path


@pytest.fixture
def sweep(tmp_path):
    "A two-run local sweep's ledger, as `lls sweep submit` plans it (nothing run yet): (runs dir, name, run ids)."
    out = tmp_path / "runs"
    with Ledger("s", out).update() as d:
        merge_grid(d, *plan_runs("s", variants=["base"], lrs=[0.1], wds=[1e-4], seeds=[0, 1], params={"epochs": 2}))
    return out, "s", list(ledger(out, "s")["runs"])


def one_line_error(p, path: Path, needle: str):
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr, p.stderr
    assert p.stderr.startswith(f"lls: error: {path}: ") and needle in p.stderr, p.stderr


def test_traversal_run_id_writes_nothing_outside_the_sweep(sweep, tmp_path):
    "A ledger entry keyed `../../victim` (state failed): recover, status and submit refuse the ledger; no file changes."
    out, name, (rid, _) = sweep
    led = ledger(out, name)
    led["runs"] = {"../../victim": {**led["runs"][rid], "state": "failed", "executor": "local", "attempts": 1}}
    (out / name / "sweep.json").write_text(json.dumps(led))
    victim = tmp_path / "victim"  # = runs/s/../../victim
    victim.mkdir()
    (victim / "train.ipynb").write_text("someone else's notebook")
    nb = stand_in_notebook(tmp_path / "job.ipynb")  # a job of a second: today's main ran it into victim/
    before = tree(tmp_path)
    for args in (["sweep", "recover", name, "--notebook", nb], ["sweep", "status", name],
                 ["sweep", "submit", name, *GRID, "--notebook", nb, "--gpus", "none"]):
        p = lls(*args, "--runs-dir", out, timeout=120)
        one_line_error(p, out / name / "sweep.json", "runs['../../victim']: run_id='../../victim' is not allowed")
        assert tree(tmp_path) == before, args


@pytest.mark.parametrize("text", ["{}", "[]", '{"runs": []}'])
def test_ledger_of_the_wrong_shape_is_refused_in_one_line(sweep, tmp_path, text):
    "`{}`, `[]` and `{\"runs\": []}` as sweep.json: status, submit and recover exit 2 naming the file; nothing written."
    out, name, _ = sweep
    (out / name / "sweep.json").write_text(text)
    before = tree(tmp_path)
    for args in (["sweep", "status", name], ["sweep", "submit", name, *GRID, "--gpus", "none"],
                 ["sweep", "recover", name]):
        p = lls(*args, "--runs-dir", out, timeout=120)
        one_line_error(p, out / name / "sweep.json", "the file" if text == "[]" else "runs")
        assert tree(tmp_path) == before, args


def test_orphaned_live_run_is_running_never_resubmitted_and_its_queue_is_picked_up(tmp_path):
    "SIGHUP to `lls sweep submit` (a closed terminal) while its job trains and a second run waits in its queue."
    out, nb, release = tmp_path / "runs", holding_notebook(tmp_path / "job.ipynb"), tmp_path / "release"
    release.mkdir()
    args = ["sweep", "submit", "hup", "--runs-dir", out, *GRID, "--executor", "local", "--gpus", "none",
            "--workers-per-gpu", "1", "--notebook", nb, "--no-progress"]
    # a terminal's lls has SIGHUP's default action; under `nohup` (or a CI runner that ignores SIGHUP) it would inherit SIG_IGN
    p = lls_popen(*args, preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))
    job_pids = []
    try:
        live = wait_until(lambda: next((rid for rid, e in ledger(out, "hup")["runs"].items() if e["state"] == "running"
                                        and lock_state(out / "hup" / rid)[0]), None)
                          if (out / "hup" / "sweep.json").exists() else None, 120, "a job holding its run lock", proc=p)
        job_pids = [e["pid"] for e in events(out, "hup", live) if e["event"] == "start"]
        never = next(rid for rid in ledger(out, "hup")["runs"] if rid != live)
        os.kill(p.pid, signal.SIGHUP)
        p.communicate(timeout=60)
        assert p.returncode == -signal.SIGHUP
        assert lock_state(out / "hup" / live)[0], "the job should outlive its pool"

        st = status(out, "hup", "--no-scheduler")
        assert (st["runs"][live]["state"], st["runs"][live]["reason"]) == ("running", None), st["runs"][live]
        assert "has ended, but the run is alive" in st["runs"][live]["warning"], st["runs"][live]
        assert st["counts"]["failed"] == 0 and not [a for a in st["alerts"] if a["kind"] == "failure_rate"], st
        assert st["runs"][never]["state"] == "pending" and [n["runs"] for n in st["notes"]] == [[never]], st
        assert ledger(out, "hup")["runs"][never]["attempts"] == 0  # the queued attempt is given back

        r = lls("sweep", "recover", "hup", "--runs-dir", out, "--notebook", nb, "--gpus", "none", timeout=120)
        assert r.returncode == 0 and "hup: 0 failed run(s); resubmitted 0" in r.stdout, (r.stdout, r.stderr)
        assert ledger(out, "hup")["runs"][live]["attempts"] == 1
        assert [e["event"] for e in events(out, "hup", live)] == ["start"]  # never started again

        (release / never).touch()  # the queued run may finish at once
        r = lls(*args, timeout=300)
        assert r.returncode == 0, (r.stdout, r.stderr)
        assert "hup: submitted 1 of 2 runs (local); skipped: 1 running" in r.stdout, r.stdout
        assert ledger(out, "hup")["runs"][never]["state"] == "completed"

        (release / live).touch()  # the orphaned job ends by itself; status records it
        wait_until(lambda: lock_state(out / "hup" / live)[0] is False, 120, "the live job to end")
        st = status(out, "hup", "--no-scheduler")
        assert st["counts"]["completed"] == 2 and not st["warnings"], st
        assert [a["kind"] for a in st["alerts"]] == ["corrupt"], st["alerts"]  # the stand-in writes no config.yaml
    finally:
        for rid in (ledger(out, "hup")["runs"] if (out / "hup" / "sweep.json").exists() else []):
            (release / rid).touch()
        if p.poll() is None:
            p.kill()
            p.communicate()
        for pid in job_pids:  # normally gone by now
            kill_tree(pid, signal.SIGKILL)


def test_absurd_values_fail_at_config_time_naming_the_key(tmp_path):
    "10⁸ epochs, 10⁷ steps, a width that floors every stage: refused by the config, the CLI and the notebook's parameters."
    p = lls("config", "base", "epochs=100000000")
    assert p.returncode == 2 and "trainer.max_epochs=100000000 is not allowed: at most MAX_EPOCHS" in p.stderr, p.stderr
    p = lls("sweep", "submit", "big", "--runs-dir", tmp_path, "--width-mult", "1e-9", "--dry-run")
    assert p.returncode == 2 and "model.width_mult=1e-09 is not allowed" in p.stderr, p.stderr
    with pytest.raises(ConfigError, match=r"epochs=100000000 is not allowed: .*\(config key trainer.max_epochs\)"):
        notebook_config({"epochs": 100_000_000})  # papermill -p epochs 100000000
    with pytest.raises(ConfigError, match="max_steps=10000000 is not allowed"):
        notebook_config({"max_steps": 10**7})
    cfg, _ = notebook_config({"epochs": 2000, "overrides": json.dumps({"trainer.allow_long_run": True})})
    assert cfg.trainer.max_epochs == 2000  # said to be meant: allowed
    assert not list(tmp_path.iterdir())
