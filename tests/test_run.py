"""`papermill nbs/train.ipynb` as a real job: a tiny run completes with every metric at its frequency, bad parameters
fail before any compute, kill -9 / SIGUSR2 / SIGTERM mid-run resume exactly, a diverging run stops as `diverged`,
and a kill -9 at any moment of a metric-chunk compaction never loses or duplicates a row.

Each test starts papermill from the repository root in a subprocess (one torch thread: the test machines are
shared); runs are tiny (width 0.125, 256 synthetic images, batch 32 → 8 steps per epoch, 2 epochs)."""
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest
from helpers import (
    ENV,
    ROOT,
    console_script,
    finish,
    kernel_of,
    kill_tree,
    lls,
    papermill_cmd,
    start,
    steps_done,
    summary_of,
    values,
    wait_until,
)

from loss_lin_slope import run, store
from loss_lin_slope.callbacks import expected_counts
from loss_lin_slope.config import METRICS, ConfigError, ExperimentConfig

OVERRIDES = {"monitors.curvature_every_n_steps": 4, "monitors.noise_every_epochs": 1, "monitors.curvature_max_iter": 4,
             "monitors.trace_matvecs": 3, "monitors.noise_batches": 2, "monitors.early_window": [0.5, 1.0],
             "monitors.flush_every_n_steps": 3, "data.eval_batch_size": 64}
TINY = {"epochs": 2, "batch_size": 32, "width_mult": 0.125, "n_train": 256, "n_val": 64, "sweep": "t",
        "overrides": json.dumps(OVERRIDES)}


def log_text(tmp: Path, tag: str) -> str:
    return (tmp / f"{tag}.log").read_text()


def notebook_outputs(nb_path: Path) -> list[dict]:
    "Every output of an executed notebook's code cells, in order."
    nb = json.loads(Path(nb_path).read_text())
    return [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]


def run_dir_for(out_dir: Path, name: str) -> Path:
    return out_dir / TINY["sweep"] / name


def assert_once(rd: Path):
    "Every (step, metric) pair is stored exactly once across all live chunks."
    raw = pd.concat([pd.read_parquet(p) for p in store.live_chunks(rd / "metrics")])
    dup = raw[raw.duplicated(["metric", "step"], keep=False)]
    assert dup.empty, f"duplicated rows:\n{dup}"


def assert_same(a: pd.DataFrame, b: pd.DataFrame, tol: float = 1e-6):
    assert a.index.equals(b.index), f"different rows: {a.index.symmetric_difference(b.index)[:20].tolist()}"
    np.testing.assert_allclose(a.epoch.to_numpy(), b.epoch.to_numpy(), rtol=0, atol=1e-12)
    # curv_seconds is a wall time; everything else must agree
    m = a.index.get_level_values("metric") != "curv_seconds"
    va, vb = a.value.to_numpy()[m], b.value.to_numpy()[m]
    assert np.array_equal(np.isnan(va), np.isnan(vb))
    ok = ~np.isnan(va)
    bad = ~np.isclose(va[ok], vb[ok], rtol=1e-6, atol=tol)
    assert not bad.any(), f"{bad.sum()} values differ:\n{pd.DataFrame({'a': va[ok][bad], 'b': vb[ok][bad]}, index=a.index[m][ok][bad])}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    "An uninterrupted tiny run (started once, in the background; read by the tiny-run test and the resume tests):\n"
    "`reference()` waits for it and returns its values; `.run_dir`, `.notebook` (papermill's output), `.tmp`."
    tmp = tmp_path_factory.mktemp("reference")
    p = start(tmp, "ref", out_dir=tmp / "runs", name="tiny", **TINY)
    state = {}

    def get() -> pd.DataFrame:
        if "df" not in state:
            rc = finish(p, 400)
            assert rc == 0, log_text(tmp, "ref")[-3000:]
            state["df"] = values(run_dir_for(tmp / "runs", "tiny"))
        return state["df"]

    get.run_dir, get.notebook, get.tmp = run_dir_for(tmp / "runs", "tiny"), tmp / "ref.ipynb", tmp
    yield get
    if p.poll() is None:
        kill_tree(p.pid, signal.SIGKILL)


class TestAgainstReference:
    "The module's reference run read as it is, and runs interrupted and resumed compared with it (one class: pytest-xdist's\n    loadscope runs it on one worker, which starts the reference once)."

    def test_tiny_run_records_every_metric_at_its_frequency(self, reference):
        "The reference run (TINY at the default lr 0.1; read only): its directory, summary, metrics and notebook."
        reference()  # finished
        rd = reference.run_dir
        assert sorted(x.name for x in rd.iterdir()) == [".lock", "checkpoints", "config.yaml", "metrics", "run.log",
                                                        "summary.json"]  # .lock: the run lock's file (free now)
        cfg = ExperimentConfig.from_yaml((rd / "config.yaml").read_text())
        assert cfg.run_id == rd.name and cfg.optim.lr == 0.1 and cfg.trainer.max_epochs == 2
        s = summary_of(rd)
        assert s["status"] == "completed" and s["steps_completed"] == 16 and s["epochs_completed"] == 2.0
        assert s["steps_per_epoch"] == 8 and s["failure"] is None and s["retries"] == 0
        assert math.isfinite(s["best_val_ce"]) and s["best_val_epoch"] in {0.25 * k for k in range(1, 9)}
        assert s["checkpoints"]["last"] == "checkpoints/last.ckpt" and len(s["checkpoints"]["top_k"]) == 3
        assert (rd / s["checkpoints"]["best"]).exists()
        assert len(list((rd / "checkpoints").glob("*.ckpt"))) == 4
        for k in run.SUMMARY_FIELDS:
            assert k in s, k
        assert all(s["versions"][k] for k in ("python", "torch", "lightning", "loss_lin_slope")), s["versions"]
        (merged,) = (rd / "metrics").iterdir()  # the chunks were compacted when the run completed
        assert merged.name.endswith(".all.parquet"), merged

        df = store.read_metrics(rd)
        assert list(df.columns) == ["step", "epoch", "metric", "value", "time"]
        assert set(df.metric) == set(METRICS), set(METRICS) ^ set(df.metric)
        counts = df.groupby("metric").size().to_dict()
        assert counts == expected_counts(cfg, steps_per_epoch=8), counts
        assert_once(rd)
        np.testing.assert_allclose(df.epoch, df.step / 8)
        w = store.read_metrics(rd, wide=True).set_index("step")
        np.testing.assert_allclose(w.loss_train_bits, w.loss_train_nats / math.log(2), rtol=1e-12)
        assert w.loc[[2, 4, 6, 8, 10, 12, 14, 16], ["loss_val_nats", "grad_norm_l2", "weight_norm_l2"]].notna().all().all()
        assert sorted(df[df.metric == "lambda_max"].step) == [4, 8, 12, 16]
        assert sorted(df[df.metric == "gradient_variance"].step) == [8, 16]
        assert sorted(df[df.metric == "loss_slope_full"].step) == [8, 16]
        # the output notebook shows the summary and the plot, and no third-party noise
        outputs = notebook_outputs(reference.notebook)
        assert any("image/png" in o.get("data", {}) for o in outputs)
        text = json.dumps(outputs)
        for noise in ("srun", "LeafSpec", "litlogger", "Tip:", "Warning"):
            assert noise not in text, f"{noise!r} in the output notebook: {text[:3000]}"


    def test_kill9_then_rerun_equals_uninterrupted_run(self, tmp_path, reference):
        out = tmp_path / "runs"
        rd = run_dir_for(out, "tiny")
        # the module writes a chunk after every step, a checkpoint follows every 2nd step: kill while the store holds
        # rows the last checkpoint does not know about, so the rerun must drop the copies it recomputes
        params = {**TINY, "overrides": json.dumps({**OVERRIDES, "monitors.flush_every_n_steps": 1})}

        def rows_beyond_checkpoint():
            done = steps_done(rd)
            chunks = store.live_chunks(rd / "metrics")
            return done >= 5 and chunks and pd.read_parquet(chunks[-1]).step.max() > done

        p = start(tmp_path, "a1", out_dir=out, name="tiny", **params)
        wait_until(rows_beyond_checkpoint, interval=0.1, what="rows stored after the last checkpoint", proc=p)
        kill_tree(kernel_of(p).pid, signal.SIGKILL)  # the training process dies without any cleanup
        assert finish(p, 60) != 0
        s = summary_of(rd)
        assert s["status"] == "running" and 5 <= s["steps_completed"] < 16  # a crash leaves "running"
        ck = run.checkpoint_step(rd / "checkpoints" / "last.ckpt")
        assert store.read_metrics(rd).step.max() > ck, "the kill did not leave rows after the checkpoint"
        # "running" with its lock free is a dead run: verify says so (the one checker; `sweep status` uses it too)
        v = lls("verify", out / TINY["sweep"], "--no-cache", env=ENV)
        assert v.returncode == 1 and "dead run" in v.stdout and "interrupted" in v.stdout, v.stdout + v.stderr
        p = start(tmp_path, "a2", out_dir=out, name="tiny", **params)
        assert finish(p) == 0, log_text(tmp_path, "a2")[-3000:]
        assert "treating it as interrupted" in log_text(tmp_path, "a2") + (tmp_path / "a2.ipynb").read_text()
        s = summary_of(rd)
        assert s["status"] == "completed" and s["steps_completed"] == 16 and s["retries"] == 1
        assert s["history"][-1]["action"] == "resume" and s["history"][-1]["from_step"] == ck
        assert s["history"][0]["outcome"].startswith("interrupted (died while running"), s["history"]
        assert_once(rd)
        assert_same(values(rd), reference())
        assert len(store.live_chunks(rd / "metrics")) == len(list((rd / "metrics").iterdir())) == 1
        # a third start does not retrain: it says where the run is
        p = start(tmp_path, "a3", out_dir=out, name="tiny", **params)
        assert finish(p, 120) == 0
        assert "is already completed" in log_text(tmp_path, "a3") or "is already completed" in (tmp_path / "a3.ipynb").read_text()
        assert summary_of(rd)["retries"] == 1


    def test_signals_checkpoint_mark_interrupted_and_resume_exactly(self, tmp_path, reference):
        out = tmp_path / "runs"
        rd = run_dir_for(out, "tiny")
        # 1. SIGUSR2 (submitit's timeout warning) to the kernel only: papermill sees the cell fail and exits non-zero
        p = start(tmp_path, "b1", out_dir=out, name="tiny", **TINY)
        wait_until(lambda: steps_done(rd) >= 3, interval=0.1, what="step 3", proc=p)
        os.kill(kernel_of(p).pid, signal.SIGUSR2)
        t0 = time.time()
        rc = finish(p, 120)
        assert rc != 0 and time.time() - t0 < 60
        s = summary_of(rd)
        assert s["status"] == "interrupted" and s["failure"]["reason"] == "signal SIGUSR2", s
        assert "RunInterrupted" in (tmp_path / "b1.ipynb").read_text()
        assert (rd / "checkpoints" / "last.ckpt").exists() and s["checkpoints"]["last"] == "checkpoints/last.ckpt"
        step1 = s["steps_completed"]
        assert run.checkpoint_step(rd / "checkpoints" / "last.ckpt") == step1 < 16
        # 2. rerun resumes; SIGTERM to every process of the job (as SLURM does): papermill dies at once, the kernel saves
        p = start(tmp_path, "b2", out_dir=out, name="tiny", **TINY)
        wait_until(lambda: summary_of(rd).get("steps_completed", 0) >= step1 + 3 and summary_of(rd).get("status") == "running",
                   interval=0.1, what="three more steps", proc=p)
        kernel = kernel_of(p)
        kill_tree(p.pid, signal.SIGTERM)
        assert finish(p, 60) != 0
        psutil.wait_procs([kernel], timeout=60)
        s = summary_of(rd)
        assert s["status"] == "interrupted" and s["failure"]["reason"] == "signal SIGTERM", s
        step2 = s["steps_completed"]
        assert run.checkpoint_step(rd / "checkpoints" / "last.ckpt") == step2 and step1 < step2 < 16
        assert s["history"][-1]["from_step"] == step1
        # 3. the third start finishes the run; the result is the uninterrupted run's
        p = start(tmp_path, "b3", out_dir=out, name="tiny", **TINY)
        assert finish(p) == 0, log_text(tmp_path, "b3")[-3000:]
        s = summary_of(rd)
        assert s["status"] == "completed" and s["retries"] == 2 and [h["action"] for h in s["history"]] == [
            "new", "resume", "resume"]
        assert "SIGUSR2" in (rd / "run.log").read_text() and "SIGTERM" in (rd / "run.log").read_text()
        assert_once(rd)
        assert_same(values(rd), reference())


LAPTOP = [["-p", "lr", "0.1", "-p", "epochs", "2", "-p", "width_mult", "0.125", "-p", "n_train", "512", "-p", "n_val",
           "256"],  # the README's laptop command, verbatim
          ["-p", "lr", "0.1", "-p", "epochs", "3", "-p", "width_mult", "0.125", "-p", "n_train", "512", "-p", "n_val",
           "256", "-p", "batch_size", "32"]]  # the same with 3 epochs of batch 32 (the noise window: < 64 steps)


class TestReadmeCommands:
    "The README's papermill commands, as written there."

    def test_readme_command_with_relative_out_dir(self, tmp_path):
        "The README's `papermill nbs/train.ipynb out.ipynb -p lr 0.1 …` from another working directory: out_dir defaults to\n"
        "the relative 'runs', so every path the run records (checkpoints, run_dir) must work from a relative root."
        cmd = [console_script("papermill"), str(ROOT / "nbs" / "train.ipynb"), "out.ipynb", "--no-progress-bar",
               "-p", "lr", "0.1", "-p", "epochs", "2", "-p", "width_mult", "0.125", "-p", "n_train", "256", "-p", "n_val", "64",
               "-p", "batch_size", "32", "-p", "overrides", json.dumps(OVERRIDES)]
        p = subprocess.run(cmd, cwd=tmp_path, env={**os.environ, **ENV}, capture_output=True, text=True, timeout=240)
        assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
        (rd,) = (tmp_path / "runs" / "default").iterdir()
        s = json.loads((rd / "summary.json").read_text())
        assert s["status"] == "completed" and s["checkpoints"]["last"] == "checkpoints/last.ckpt", s
        assert (rd / s["checkpoints"]["best"]).exists() and Path(s["run_dir"]).is_absolute()


    def test_readme_laptop_runs_verify_complete(self, tmp_path):
        "The README's laptop-sized runs, then `lls verify`: complete (psd_tail is NaN on a noise window of < 64 steps:\n"
        "not computable, allowed with its reason in config.NAN_ALLOWED, not a fault)."
        for i, params in enumerate(LAPTOP):
            cmd = [console_script("papermill"), str(ROOT / "nbs" / "train.ipynb"), f"out{i}.ipynb", "--no-progress-bar",
                   *params]
            p = subprocess.run(cmd, cwd=tmp_path, env={**os.environ, **ENV}, capture_output=True, text=True, timeout=600)
            assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
        assert any(store.read_metrics(rd, metrics=["psd_tail"]).value.isna().any()
                   for rd in (tmp_path / "runs" / "default").iterdir())  # the case that used to be called corrupt
        v = lls("verify", "default", "--runs-dir", "runs", "--no-cache", cwd=tmp_path, env=ENV)
        assert v.returncode == 0 and v.stdout.strip().splitlines()[-1].startswith("OK default: 2 expected runs: 2 complete"), \
            v.stdout + v.stderr


@pytest.mark.parametrize("param,value,message", [
    ("lr", -1, "lr=-1 is not allowed"),
    ("variant", "nope", "variant='nope' is not allowed"),
    ("learning_rate", 0.1, "learning_rate=0.1 is not allowed: unknown notebook parameter (did you mean 'lr'?)"),
    ("overrides", '{"lr": -1}', "contradicts lr = 0.1"),  # was a TypeError from make_config
    ("n_train", 16, "n_train=16 is not allowed: at least batch_size (32)"),  # no training step at all
    ("dataset", "cifar10", "CIFAR-10 not found"),  # data_dir 'data' has no CIFAR-10 here
])
def test_bad_parameters_fail_before_training(tmp_path, param, value, message):
    out = tmp_path / "runs"
    p = start(tmp_path, "bad", out_dir=out, **{**TINY, param: value})
    rc = finish(p, 120)
    text = log_text(tmp_path, "bad")
    assert rc != 0
    assert "ConfigError" in text and message in text, text[-2000:]
    assert not out.exists()  # no run directory at all, let alone one claiming success
    # one clear line: the output notebook's first output is the message alone, and so is the terminal's last word
    first = notebook_outputs(tmp_path / "bad.ipynb")[0]
    assert first["output_type"] == "error" and first["traceback"] == [f"ConfigError: {first['evalue']}"], first
    assert message in first["evalue"] and f"ConfigError: {first['evalue']}" in text.splitlines(), text[-2000:]


def test_unknown_notebook_parameter_names_the_closest():
    "In-process (the papermill path is the test above): a misspelling is matched by spelling, an abbreviation's\n"
    "long form by its initials."
    for given, message in (("lrr", "lrr=0.1 is not allowed: unknown notebook parameter (did you mean 'lr'?)"),
                           ("learning_rate", "(did you mean 'lr'?)"), ("bs", "(did you mean 'batch_size'?)")):
        with pytest.raises(ConfigError) as e:
            run.notebook_config({given: 0.1})
        assert message in str(e.value), e.value


def test_divergence_is_final_and_not_retried(tmp_path):
    out = tmp_path / "runs"
    params = {**TINY, "lr": 1e6, "overrides": json.dumps({**OVERRIDES, "monitors.curvature_every_n_steps": 100,
                                                           "monitors.noise": False})}
    p = start(tmp_path, "d1", out_dir=out, name="boom", **params)
    assert finish(p) == 0, log_text(tmp_path, "d1")[-3000:]
    rd = run_dir_for(out, "boom")
    s = summary_of(rd)
    assert s["status"] == "diverged", s
    assert 1 <= s["diverged"]["step"] < 16 and s["diverged"]["value"] in ("nan", "inf", "-inf")
    assert s["steps_completed"] < 16 and "non-finite training loss" in s["failure"]["reason"]
    chunks = sorted((rd / "metrics").glob("*.parquet"))
    p = start(tmp_path, "d2", out_dir=out, name="boom", **params)
    assert finish(p, 120) == 0
    assert "diverged" in (tmp_path / "d2.ipynb").read_text() and "not retraining" in (tmp_path / "d2.ipynb").read_text()
    assert sorted((rd / "metrics").glob("*.parquet")) == chunks and len(summary_of(rd)["history"]) == 1


COMPACT_CHILD = """
import sys, time
from loss_lin_slope.store import compact_chunks
import pyarrow, pyarrow.parquet, pyarrow.compute  # imported before 'ready': the kill lands in the compaction
print("ready", flush=True)
time.sleep(float(sys.argv[2]))
compact_chunks(sys.argv[1])
print("done", flush=True)
"""


def test_kill9_during_compaction_loses_and_duplicates_nothing(tmp_path):
    "Compactions killed (SIGKILL) at many moments: readers always see every row once; the next store open tidies up."
    ms = store.MetricStore(tmp_path / "template", fsync=False)
    rng = np.random.default_rng(0)
    for k in range(120):  # 120 chunks of 3 metrics × 50 steps
        steps = np.arange(50 * k + 1, 50 * k + 51)
        for m in ("loss_train_nats", "lr", "acc_train"):
            ms.write(pd.DataFrame({"step": steps, "epoch": steps / 391, "metric": m,
                                      "value": rng.random(len(steps)), "time": 0.0}))
        ms.flush()
    expected = store.read_metrics(tmp_path / "template")
    outcomes = set()
    for i, delay in enumerate(np.linspace(0.0, 0.4, 12)):
        d = tmp_path / f"m{i}"
        shutil.copytree(tmp_path / "template", d)
        p = subprocess.Popen([sys.executable, "-c", COMPACT_CHILD, str(d), str(delay)], stdout=subprocess.PIPE,
                             text=True, env={**os.environ, **ENV})
        assert p.stdout.readline().strip() == "ready"
        time.sleep(delay * rng.random())
        p.kill()
        p.wait(30)
        names = sorted(x.name for x in d.iterdir())
        alls = [n for n in names if n.endswith(".all.parquet")]
        outcomes.add("done" if names == alls else ("leftovers" if alls else "not yet"))
        live = store.live_chunks(d)
        raw = pd.concat([pd.read_parquet(x) for x in live])
        assert not raw.duplicated(["metric", "step"]).any(), (i, names[:5])
        pd.testing.assert_frame_equal(store.read_metrics(d), expected)
        s = store.MetricStore(d)  # a resumed run: leftovers (and temporary files) are deleted, every key is known
        assert sorted(x.name for x in d.iterdir()) == [x.name for x in live]
        assert s.write(pd.DataFrame({"step": [6000, 6001], "epoch": 0.0, "metric": "lr", "value": 1.0,
                                     "time": 0.0})) == 1
        s.compact()
        assert [x.name for x in d.iterdir()] == ["chunk-000121.all.parquet"]
        assert len(store.read_metrics(d)) == len(expected) + 1
    assert "not yet" in outcomes, outcomes  # the kills did land before and after the compaction


def _ignore_sigint():
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # what a background job of a non-interactive shell inherits


def _start_ignoring_sigint(tmp: Path, tag: str, how: str, **params) -> subprocess.Popen:
    logf = open(tmp / f"{tag}.log", "w")
    if how == "papermill":
        cmd = papermill_cmd(tmp / f"{tag}.ipynb", **params)
    else:  # the library call in a plain Python process
        code = ("import json, sys; from loss_lin_slope import run\n"
                "cfg, opts = run.notebook_config(json.loads(sys.argv[1]))\n"
                "run.run_experiment(cfg, **opts)")
        cmd = [sys.executable, "-c", code, json.dumps({k: v for k, v in params.items()})]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=logf, stderr=subprocess.STDOUT, env={**os.environ, **ENV},
                            start_new_session=True, preexec_fn=_ignore_sigint)


class TestSigint:
    "Ctrl-C and `kill -INT`, to a papermill job and to the library call."

    @pytest.mark.parametrize("how", ["papermill", "python"])
    def test_sigint_stops_a_run_even_when_inherited_ignored(self, tmp_path, how):
        "SIGINT (Ctrl-C, or `kill -INT` of a job started with `&` in a script) checkpoints and marks the run interrupted\n"
        "although the process inherited SIGINT as ignored; the rerun resumes and completes."
        out = tmp_path / "runs"
        rd = run_dir_for(out, "sig")
        p = _start_ignoring_sigint(tmp_path, "i1", how, out_dir=str(out), name="sig", **TINY)
        wait_until(lambda: steps_done(rd) >= 3, interval=0.1, what="step 3", proc=p)
        kill_tree(p.pid, signal.SIGINT)  # every process of the job, as a terminal's Ctrl-C reaches its process group
        rc = finish(p, 120)
        s = summary_of(rd)
        assert rc != 0, log_text(tmp_path, "i1")[-2000:]
        assert s["status"] == "interrupted" and s["failure"]["reason"] == "signal SIGINT", s
        assert run.checkpoint_step(rd / "checkpoints" / "last.ckpt") == s["steps_completed"] < 16
        p = start(tmp_path, "i2", out_dir=out, name="sig", **TINY)
        assert finish(p) == 0, log_text(tmp_path, "i2")[-3000:]
        s = summary_of(rd)
        assert s["status"] == "completed" and [h["action"] for h in s["history"]] == ["new", "resume"], s["history"]
        assert_once(rd)


def test_two_starts_of_one_run_one_writer(tmp_path):
    "Two identical papermill starts at once: one trains, the other exits non-zero naming the holder (pid, host) and\n"
    "touches nothing (no attempts/ archive, one attempt in the history); a start while it trains is refused too."
    import platform

    out = tmp_path / "runs"
    rd = run_dir_for(out, "dup")
    ps = [start(tmp_path, f"d{i}", out_dir=out, name="dup", **TINY) for i in range(2)]
    wait_until(lambda: any(p.poll() is not None for p in ps) or steps_done(rd) >= 2, interval=0.1,
               what="one start to win")
    third = start(tmp_path, "d2", out_dir=out, name="dup", **TINY)  # started while the winner trains
    rcs = [finish(p) for p in ps + [third]]
    logs = [log_text(tmp_path, f"d{i}") for i in range(3)]
    winner = [i for i, rc in enumerate(rcs[:2]) if rc == 0]
    assert len(winner) == 1, (rcs, [t[-1500:] for t in logs])
    for i in (1 - winner[0], 2):
        assert rcs[i] != 0 and "RunLocked" in logs[i] and f"on host {platform.node()}" in logs[i], logs[i][-2000:]
        assert "in use by pid " in logs[i]
    s = summary_of(rd)
    assert s["status"] == "completed" and len(s["history"]) == 1 and s["retries"] == 0, s["history"]
    assert not (rd / "attempts").exists()
    assert_once(rd)
    held, rec = run.lock_state(rd)
    assert held is False and rec["host"] == platform.node()


@pytest.fixture
def tiny_disk(tmp_path):
    "A 64 MiB tmpfs (needs root / CAP_SYS_ADMIN: skipped otherwise): a disk that can really fill up (ENOSPC)."
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill ({r.stderr.strip()[:120]})")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_leaves_no_tmp_files_and_the_truth(tmp_path, tiny_disk):
    "A real full disk (a tmpfs filled up mid-run): the run exits non-zero, no .tmp file is left, `lls verify` reports\n"
    "the run as not complete with the reason (No space left on device), and once there is space the rerun completes."
    out = tiny_disk / "runs"
    rd = run_dir_for(out, "full")
    p = start(tmp_path, "f1", out_dir=out, name="full", **TINY)  # (papermill's output notebook is outside the tmpfs)
    wait_until(lambda: steps_done(rd) >= 3, interval=0.1, what="step 3", proc=p)
    filler = tiny_disk / "filler"
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1M", "count=100"], capture_output=True)
    rc = finish(p, 180)
    text = log_text(tmp_path, "f1")
    assert rc != 0 and "No space left on device" in text, text[-3000:]
    assert not [q for q in rd.rglob("*") if q.name.endswith(".tmp")], list(rd.rglob("*"))
    v = lls("verify", out / TINY["sweep"], "--no-cache", env=ENV)
    assert v.returncode == 1 and "No space left on device" in v.stdout, v.stdout + v.stderr
    filler.unlink()
    p = start(tmp_path, "f2", out_dir=out, name="full", **TINY)
    assert finish(p) == 0, log_text(tmp_path, "f2")[-3000:]
    s = summary_of(rd)
    assert s["status"] == "completed" and len(s["history"]) == 2, s["history"]
    assert_once(rd)
