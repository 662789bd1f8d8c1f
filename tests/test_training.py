"""Training core tests that are too slow or too end-to-end for the notebooks.

Exact mid-epoch resume: a run interrupted after a checkpoint taken at a mid-epoch validation and resumed with
`ckpt_path` in a fresh Trainer reproduces the uninterrupted run's per-step metrics (CPU, deterministic).
"""

import math
import warnings

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from loss_lin_slope.config import make_config
from loss_lin_slope.loaders import build_datamodule, write_fake_cifar10
from loss_lin_slope.module import BATCH_METRICS, VAL_METRICS, LitClassifier, MemorySink, train

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def tiny(**kw):
    base = dict(width_mult=0.125, n_train=128, n_val=64, batch_size=32, epochs=3, accelerator="cpu", lr=0.05,
                flush_every_n_steps=5)
    return make_config(**{**base, **kw})


class Killed(Exception):
    pass


class KillAt(L.Callback):
    "Stands in for kill -9: abort the run when it is about to take optimizer step `step + 1`."

    def __init__(self, step):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            raise Killed


def _by_step(sink, metric):
    d = sink.df
    return d[d.metric == metric].set_index("step").value.sort_index()


# with accumulation, 256 images = 8 batches = 4 optimizer steps per epoch, so validations (every 2 batches) fall on
# optimizer-step boundaries: a checkpoint between micro-batches would lack the partial gradient sum
@pytest.mark.parametrize("variant_kw", [{}, {"accumulate_grad_batches": 2, "n_train": 256}, {"optimizer": "adamw"}],
                         ids=["sgd", "accumulate", "adamw"])
def test_resume_mid_epoch_is_exact(tmp_path, variant_kw):
    cfg = tiny(**variant_kw)  # 128 images: 4 steps per epoch, validation after every step (0.25 epoch)
    straight = MemorySink()
    t0, _ = train(cfg, sink=straight)
    total = t0.global_step
    kill = total // 2 + 1  # a checkpoint is written at each validation; kill just after one in mid-epoch
    ckpt = ModelCheckpoint(dirpath=tmp_path, filename="latest", monitor=None, save_top_k=1,
                           enable_version_counter=False)
    first = MemorySink()
    with pytest.raises(Killed):
        train(cfg, sink=first, callbacks=[ckpt, KillAt(kill)])
    path = tmp_path / "latest.ckpt"
    state = torch.load(path, weights_only=False)
    saved_step = state["global_step"]
    dm = build_datamodule(cfg)
    dm.setup()
    spe = dm.steps_per_epoch
    assert saved_step % spe != 0  # really mid-epoch
    loader_state = state["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]
    assert loader_state["position"] > 0 and loader_state["perm"] is not None
    assert state["lls_stream"]["last_step"] == saved_step
    restored = LitClassifier.load_from_checkpoint(path)  # the config travels in the checkpoint's hparams
    assert restored.cfg == cfg
    torch.testing.assert_close(restored.state_dict(), dict(state["state_dict"]))

    resumed = MemorySink()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        t2, m2 = train(cfg, sink=resumed, ckpt_path=str(path))
    assert not [x for x in w if "not resumable" in str(x.message)]
    assert t2.global_step == total

    # rows before the kill were flushed by the first attempt up to the checkpoint; the resumed run continues after it
    assert _by_step(first, "loss_train_nats").index.max() >= saved_step
    for metric in BATCH_METRICS + VAL_METRICS:
        a, c = _by_step(straight, metric), _by_step(resumed, metric)
        assert c.index.min() == saved_step + 1 and c.index.max() == total, metric
        np.testing.assert_allclose(c.to_numpy(), a.loc[c.index].to_numpy(), rtol=0, atol=1e-6, err_msg=metric)
        # together the two attempts cover every step exactly like the straight run
        both = _by_step(first, metric)
        both = both[both.index <= saved_step]
        assert list(both.index) + list(c.index) == list(a.index), metric
    assert resumed.df.duplicated(["step", "metric"]).sum() == 0
    # epochs are step / steps_per_epoch
    v = resumed.df[resumed.df.metric == "loss_val_nats"]
    np.testing.assert_allclose(v.epoch, v.step / spe)


def test_cifar10_from_disk_trains(tmp_path):
    "A tiny fake CIFAR-10 in torchvision's pickle layout (no internet here) trains through the same path."
    write_fake_cifar10(tmp_path, n_per_batch=20)
    cfg = tiny(dataset="cifar10", data_dir=str(tmp_path), n_train=None, n_val=None, epochs=1)
    s = MemorySink()
    trainer, _ = train(cfg, sink=s)
    assert trainer.global_step == 100 // 32
    assert np.isfinite(_by_step(s, "loss_train_nats")).all()


def test_missing_cifar10_is_a_clear_error(tmp_path):
    cfg = tiny(dataset="cifar10", data_dir=str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError) as e:
        train(cfg, sink=MemorySink())
    msg = str(e.value)
    assert "cifar-10-batches-py" in msg and "download=true" in msg and str(tmp_path / "nowhere") in msg


def test_val_four_times_per_epoch_at_cifar_scale_counts():
    "With 50 000 images at batch 128 (390 steps per epoch) Lightning validates after batches 97, 194, 291, 388."
    cfg = make_config(batch_size=128, accelerator="cpu")
    assert math.floor(50_000 / 128) == 390 and int(390 * cfg.trainer.val_check_interval) == 97
