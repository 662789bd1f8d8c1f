"""The fast path on a CPU: a papermill job with every fast-path option set (bf16-mixed autocast,
channels_last, cuDNN benchmark — a no-op without CUDA — and torch.compile) records every metric at its frequency and,
killed with SIGKILL mid-run, resumes to exactly the uninterrupted run's numbers; the compiled step agrees with the
eager one while `.model` stays the plain module the monitors differentiate twice; `profile_concurrency` times
concurrent worker processes over a common window.

torch.compile runs with the `aot_eager` backend in the job (graph capture + AOTAutograd forward/backward, no code
generation: ~10 s per process on a CPU) and with `inductor` (C++ code generation: ~3 min on 2 shared cores) only in
the test marked `slow`. Runs are tiny (width 0.125, 256 synthetic images, batch 32 -> 8 steps per epoch, 2 epochs)."""
import json
import math
import signal
import time

import numpy as np
import pandas as pd
import pytest
from helpers import finish, kernel_of, kill_tree, start, steps_done, values

from loss_lin_slope import run, store
from loss_lin_slope.callbacks import CurvatureMonitor, expected_counts
from loss_lin_slope.config import METRICS, ExperimentConfig, make_config
from loss_lin_slope.module import MemorySink, train
from loss_lin_slope.profile import profile_concurrency

FAST = {"trainer.precision": "bf16-mixed", "model.channels_last": True, "trainer.cudnn_benchmark": True,
        "model.compile": True, "model.compile_backend": "aot_eager"}
OVERRIDES = {"monitors.curvature_every_n_steps": 4, "monitors.noise_every_epochs": 1, "monitors.curvature_max_iter": 4,
             "monitors.trace_matvecs": 3, "monitors.noise_batches": 2, "monitors.early_window": [0.5, 1.0],
             "monitors.flush_every_n_steps": 1, "data.eval_batch_size": 64, **FAST}
TINY = {"epochs": 2, "batch_size": 32, "width_mult": 0.125, "n_train": 256, "n_val": 64, "sweep": "fast",
        "overrides": json.dumps(OVERRIDES)}
TINY_CFG = dict(width_mult=0.125, n_train=128, n_val=64, batch_size=32, epochs=1, accelerator="cpu", lr=0.002,
                val_check_interval=1.0)


def test_fast_path_job_records_every_metric_and_resumes_exactly_after_kill9(tmp_path):
    out_ref, out = tmp_path / "ref", tmp_path / "runs"
    ref = start(tmp_path, "ref", out_dir=out_ref, name="fast", **TINY)  # the uninterrupted run, alongside
    rd = out / "fast" / "fast"

    def rows_beyond_checkpoint():
        done = steps_done(rd)
        chunks = store.live_chunks(rd / "metrics") if (rd / "metrics").exists() else []
        return done >= 5 and chunks and pd.read_parquet(chunks[-1]).step.max() > done

    p = start(tmp_path, "a1", out_dir=out, name="fast", **TINY)
    t0 = time.time()
    while not rows_beyond_checkpoint():
        assert p.poll() is None, (tmp_path / "a1.log").read_text()[-3000:]
        assert time.time() - t0 < 400, "timed out waiting for rows stored after the last checkpoint"
        time.sleep(0.1)
    kill_tree(kernel_of(p).pid, signal.SIGKILL)
    assert finish(p, 60) != 0
    ck = run.checkpoint_step(rd / "checkpoints" / "last.ckpt")
    assert 5 <= ck < 16 and store.read_metrics(rd).step.max() > ck
    p = start(tmp_path, "a2", out_dir=out, name="fast", **TINY)
    assert finish(p, 400) == 0, (tmp_path / "a2.log").read_text()[-3000:]
    assert finish(ref, 400) == 0, (tmp_path / "ref.log").read_text()[-3000:]

    s = run.read_summary(rd)
    assert s["status"] == "completed" and s["steps_completed"] == 16 and s["retries"] == 1, s
    cfg = ExperimentConfig.from_yaml((rd / "config.yaml").read_text())
    assert (cfg.trainer.precision, cfg.model.channels_last, cfg.model.compile, cfg.trainer.cudnn_benchmark) == (
        "bf16-mixed", True, True, True)
    log = (tmp_path / "a2.log").read_text() + (tmp_path / "a2.ipynb").read_text()
    assert "bfloat16 Automatic Mixed Precision" in log or "bf16" in log
    df = store.read_metrics(rd)
    assert set(df.metric) == set(METRICS), set(METRICS) ^ set(df.metric)
    assert df.groupby("metric").size().to_dict() == expected_counts(cfg, steps_per_epoch=8)
    assert not df.duplicated(["metric", "step"]).any()
    assert sorted(df[df.metric == "lambda_max"].step) == [4, 8, 12, 16]
    assert np.isfinite(df[df.metric.isin(["lambda_max", "hessian_trace", "loss_train_nats"])].value).all()
    a, b = values(rd), values(out_ref / "fast" / "fast")
    assert a.index.equals(b.index)
    m = a.index.get_level_values("metric") != "curv_seconds"  # a wall time
    va, vb = a.value.to_numpy()[m], b.value.to_numpy()[m]
    assert np.array_equal(np.isnan(va), np.isnan(vb))
    ok = ~np.isnan(va)
    np.testing.assert_allclose(va[ok], vb[ok], rtol=1e-6, atol=1e-6)


def _short(**kw):
    return make_config(**{**TINY_CFG, "max_steps": 3, **kw})


def test_compiled_step_matches_eager_and_monitors_get_the_plain_model():
    t0 = time.perf_counter()
    losses, mods = {}, {}
    for c in (False, True):
        s = MemorySink()
        _, mods[c] = train(_short(compile=c, **{"model.compile_backend": "aot_eager"}), sink=s,
                           callbacks=[CurvatureMonitor(2, max_iter=4, trace_matvecs=3)])
        losses[c] = s.series("loss_train_nats").to_numpy()
        assert np.isfinite(s.series("lambda_max")).all() and len(s.series("lambda_max")) == 1
    # same kernels, captured: the first steps agree to fp32 rounding (later ones drift apart chaotically)
    np.testing.assert_allclose(losses[True][:2], losses[False][:2], rtol=1e-5)
    m = mods[True]
    assert type(m.model).__name__ == "ResNetCIFAR" and type(m._forward).__name__ == "OptimizedModule"
    assert m._forward._orig_mod is m.model  # the compiled callable wraps the very same parameters
    assert not any("_orig_mod" in k for k in m.state_dict())  # checkpoints keep plain keys
    print(f"aot_eager compile test: {time.perf_counter() - t0:.1f} s")


@pytest.mark.slow
def test_compile_inductor_trains_and_matches_eager():
    "The real backend (C++ code generation with gcc): ~3 min on 2 shared CPU cores, most of it compilation."
    t0 = time.perf_counter()
    s_e, s_c = MemorySink(), MemorySink()
    train(_short(max_steps=2), sink=s_e)
    _, m = train(_short(max_steps=2, compile=True), sink=s_c)
    np.testing.assert_allclose(s_c.series("loss_train_nats").to_numpy()[:1], s_e.series("loss_train_nats").to_numpy()[:1],
                               rtol=1e-4)
    assert np.isfinite(s_c.series("loss_val_nats")).all()
    assert type(m._forward).__name__ == "OptimizedModule" and type(m.model).__name__ == "ResNetCIFAR"
    print(f"inductor compile test: {time.perf_counter() - t0:.1f} s")


def test_profile_concurrency_times_two_processes_over_a_common_window():
    rows = profile_concurrency("base", workers=[2], steps=3, warmup=1, width_mult=0.125, batch_size=32, n_train=256, n_val=64,
                               accelerator="cpu")
    (r,) = rows
    assert r["workers"] == 2 and r["window_s"] > 0 and math.isfinite(r["steps_per_s"]) and r["steps_per_s"] > 0
    assert r["peak_mem_bytes"] > 0 and r["memory"] == "rss" and r["precision"] == "32-true"
    assert math.isnan(r["speedup"])  # no 1-worker row to compare with


def test_bad_fast_path_values_fail_before_any_work(tmp_path):
    for ov, key in (({"trainer.precision": "fp16"}, "trainer.precision='fp16'"),  # not a choice: config time
                    ({"trainer.precision": "16-mixed"}, "16-mixed needs a GPU")):  # a choice, but not on a CPU
        p = start(tmp_path, "bad", out_dir=tmp_path / "runs", **{**TINY, "overrides": json.dumps(ov)})
        assert finish(p, 200) != 0
        text = (tmp_path / "bad.log").read_text() + (tmp_path / "bad.ipynb").read_text()
        assert "ConfigError" in text and key in text, text[-2000:]
        assert not any((tmp_path / "runs").glob("*/*/metrics/*.parquet")), "it trained"

