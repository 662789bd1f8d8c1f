"""Live curves from a real job: `papermill nbs/train.ipynb … -p logger tensorboard` writes TensorBoard event files
that hold every per-batch training loss of the Parquet store (read back with TensorBoard's own EventAccumulator);
`lls sweep submit --logger csv` records the logger in the ledger and each run writes the same losses to CSV; a bad
`logger` fails before any work, naming it. Runs are tiny (width 0.125, 128 synthetic images, batch 32: 4 steps per
epoch, 2 epochs, monitors off)."""
import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
from helpers import ENV, ROOT, papermill_cmd, user_env

from loss_lin_slope import store

OV = {"monitors.curvature": False, "monitors.noise": False, "monitors.flush_every_n_steps": 3,
      "data.eval_batch_size": 64}
TINY = {"epochs": 2, "batch_size": 32, "width_mult": 0.125, "n_train": 128, "n_val": 64, "sweep": "live",
        "overrides": json.dumps(OV)}


def _papermill(tmp: Path, **params) -> subprocess.CompletedProcess:
    return subprocess.run(papermill_cmd(tmp / "out.ipynb", **params), cwd=ROOT, env=user_env(ENV), capture_output=True,
                          text=True, timeout=600)


def _stored_losses(run_dir: Path) -> pd.Series:
    df = store.read_metrics(run_dir, metrics=("loss_train_nats",))
    return df.set_index("step").value.sort_index()


def test_tensorboard_event_file_has_every_training_loss(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    p = _papermill(tmp_path, out_dir=tmp_path / "runs", name="tb", logger="tensorboard", **TINY)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    rd = tmp_path / "runs" / "live" / "tb"
    want = _stored_losses(rd)
    assert len(want) == 8 and list(want.index) == list(range(1, 9))
    ea = EventAccumulator(str(rd / "tensorboard"), size_guidance={"scalars": 0})  # 0: keep every event
    ea.Reload()
    got = pd.Series({e.step: e.value for e in ea.Scalars("loss_train_nats")}).sort_index()
    assert list(got.index) == list(want.index)
    np.testing.assert_allclose(got.to_numpy(), want.to_numpy(), rtol=1e-6)  # float32 in the event file
    assert {"loss_val_nats", "lr", "acc_train"} <= set(ea.Tags()["scalars"]), ea.Tags()


def test_sweep_logger_csv_and_bad_value(tmp_path, lls):
    out = tmp_path / "runs"
    bad = lls("sweep", "submit", "lv", "--runs-dir", out, "--logger", "wandb")
    assert bad.returncode == 2 and "--logger" in bad.stderr and not out.exists(), bad.stderr
    p = _papermill(tmp_path, out_dir=out, logger="bogus", **TINY)
    assert p.returncode != 0 and "logger='bogus' is not allowed" in (p.stdout + p.stderr)
    assert not (out / "live").exists()  # nothing trained, no run directory
    args = ["sweep", "submit", "lv", "--runs-dir", out, "--variants", "base", "--lrs", "0.1", "--wds", "1e-4",
            "--seeds", "0", "--epochs", "2", "--batch-size", "32", "--width-mult", "0.125", "--n-train", "128",
            "--n-val", "64", "--set", "monitors.curvature=false", "monitors.noise=false",
            "monitors.flush_every_n_steps=3", "data.eval_batch_size=64", "--logger", "csv", "--no-progress"]
    r = lls(*args, cwd=tmp_path, env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stdout + r.stderr
    led = json.loads((out / "lv" / "sweep.json").read_text())
    assert led["executor"]["logger"] == "csv"
    (rid,) = led["runs"]
    (f,) = (out / "lv" / rid / "csv").glob("version_*/metrics.csv")
    got = pd.read_csv(f).dropna(subset=["loss_train_nats"]).set_index("step").loss_train_nats.sort_index()
    want = _stored_losses(out / "lv" / rid)
    assert list(got.index) == list(want.index) == list(range(1, 9))
    np.testing.assert_allclose(got.to_numpy(), want.to_numpy(), rtol=1e-12)
