"""Instrumentation overhead: wall time of training with all monitors at their spec frequencies ÷ wall time of the same
training without monitors, measured in one process (target <= 1.05).

Both conditions run the same `module.train` (same config, data, validation 4x per epoch, metrics to a `MemorySink`,
no checkpoints); "with monitors" adds `callbacks.monitor_callbacks(cfg)`: `LossSlopeLogger` (grad/weight norms at
every validation, slopes every epoch), `CurvatureMonitor` (Lanczos lambda_max + Hutch++ trace, spec knobs) and
`NoiseMonitor`. The timed span is `on_train_start` -> `on_train_end` (data generation and Trainer set-up excluded);
conditions alternate `--repeats` times after an untimed warm-up. The figure is the ratio of the *minimum* wall times
(other jobs on a shared machine only ever add time, so the minimum is the least disturbed measurement); the ratio of
the medians and a load-independent cross-check, 1 + (time spent inside the monitors' hooks) / (minimum time without
monitors), are printed too.

Frequencies. The study's run has 390 optimizer steps per epoch (50 000 images / batch 128) and 50 epochs; the spec is
curvature every 500 steps, noise every 2 epochs, norms every 0.25 epoch, slopes every epoch. The default benchmark
keeps 390 steps per epoch (12 480 synthetic images / batch 32) and runs 2 epochs = 780 steps, so the spec frequencies
apply *unscaled*: curvature once (step 500), noise once (end of epoch 2), norms at 8 validations, slopes twice, and
every monitor costs the same share of an epoch as in the study (the curvature subsample is ceil(0.1 x 32) = 4 images
instead of 13, the noise batches are training-sized, so each costs about as many training steps as at batch 128).
With `--steps-per-epoch S` < 390 (a quicker run) the step-based interval is scaled in proportion,
curvature every round(500 x S / 390) steps, and the epoch-based ones are kept: each monitor then fires as often per
epoch as in the study, and the measured overhead of the periodic monitors is overstated by about 390 / S (printed).

    python benchmarks/bench_instrumentation.py                 # ~8-10 min on 2 shared CPU cores
    python benchmarks/bench_instrumentation.py --steps-per-epoch 64 --repeats 1   # smoke run (scaled)
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from lightning.pytorch.callbacks import Callback

from loss_lin_slope.callbacks import monitor_callbacks
from loss_lin_slope.config import make_config
from loss_lin_slope.module import MemorySink, train

SPEC_STEPS_PER_EPOCH = 390  # 50 000 // 128
SPEC_CURVATURE_EVERY = 500
TARGET = 1.05


class Clock(Callback):
    "Wall time from on_train_start to on_train_end (device-synchronised)."

    def __init__(self):
        self.seconds = float("nan")

    def _sync(self, pl_module):
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_start(self, trainer, pl_module):
        self._sync(pl_module)
        self.t0 = time.perf_counter()

    def on_train_end(self, trainer, pl_module):
        self._sync(pl_module)
        self.seconds = time.perf_counter() - self.t0


HOOKS = ("on_train_batch_end", "on_before_optimizer_step", "on_validation_start", "on_train_epoch_end")


def timed(cb, totals: dict):
    "Wrap the hooks of a monitor instance so their wall time is added to totals[class name]."
    name = type(cb).__name__
    totals.setdefault(name, 0.0)
    for h in HOOKS:
        f = getattr(cb, h, None)
        if f is None or getattr(type(cb), h) is getattr(Callback, h):
            continue

        def wrap(*a, _f=f, **k):
            t0 = time.perf_counter()
            try:
                return _f(*a, **k)
            finally:
                totals[name] += time.perf_counter() - t0

        setattr(cb, h, wrap)
    return cb


def make_cfg(args):
    spe = args.steps_per_epoch
    every = SPEC_CURVATURE_EVERY if spe >= SPEC_STEPS_PER_EPOCH else max(1, round(SPEC_CURVATURE_EVERY * spe / SPEC_STEPS_PER_EPOCH))
    return make_config("base", epochs=args.epochs, batch_size=args.batch_size, width_mult=args.width_mult,
                       n_train=spe * args.batch_size, n_val=args.n_val, accelerator=args.accelerator,
                       **{"monitors.curvature_every_n_steps": every})


def one(cfg, monitors: bool, totals: dict | None = None, max_steps: int | None = None) -> float:
    clock = Clock()
    cbs = [clock]
    if monitors:
        cbs += [timed(cb, totals) if totals is not None else cb for cb in monitor_callbacks(cfg)]
    kw = {"enable_progress_bar": False, "enable_model_summary": False}
    if max_steps:
        kw["max_steps"] = max_steps
    train(cfg, callbacks=cbs, sink=MemorySink(), **kw)
    return clock.seconds


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--steps-per-epoch", type=int, default=SPEC_STEPS_PER_EPOCH)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--width-mult", type=float, default=0.125)
    ap.add_argument("--n-val", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is steadiest on shared machines)")
    ap.add_argument("--accelerator", default="auto")
    ap.add_argument("--json", help="also write the numbers to this file")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

    cfg = make_cfg(args)
    m, spe = cfg.monitors, args.steps_per_epoch
    steps = spe * args.epochs
    scaled = spe < SPEC_STEPS_PER_EPOCH
    print(f"run: width {args.width_mult}, batch {args.batch_size}, {spe} steps/epoch x {args.epochs} epochs = {steps} "
          f"steps, validation every {cfg.trainer.val_check_interval} epoch on {args.n_val} images, "
          f"{torch.get_num_threads()} thread(s)")
    print(f"monitors: curvature every {m.curvature_every_n_steps} steps ({m.curvature_method} max_iter "
          f"{m.curvature_max_iter}, {m.trace_method} {m.trace_matvecs} matvecs, subsample {m.subsample_ratio} of the "
          f"batch, <= {m.max_batch_size}), noise every {m.noise_every_epochs} epochs ({m.noise_batches} batches), "
          f"norms every {m.norms_every_epochs} epoch, slopes every epoch")
    if scaled:
        print(f"scaled: {spe} < {SPEC_STEPS_PER_EPOCH} steps/epoch, so curvature every round(500 x {spe}/390) = "
              f"{m.curvature_every_n_steps} steps; per-epoch frequencies kept; the periodic monitors' share is "
              f"overstated by about {SPEC_STEPS_PER_EPOCH / spe:.1f}x")
    else:
        print("spec frequencies unscaled (390 steps per epoch, as in the study)")

    one(cfg, True, max_steps=min(steps, 8))  # warm-up: allocator, lazy init, first-call costs (untimed)
    base, mon, totals = [], [], {}
    for r in range(args.repeats):
        for monitors in (False, True):
            t = one(cfg, monitors, totals if monitors else None)
            (mon if monitors else base).append(t)
            print(f"  repeat {r + 1}: {'with monitors   ' if monitors else 'without monitors'} {t:8.2f} s")
    mb, mm = statistics.median(base), statistics.median(mon)
    per_run = {k: v / args.repeats for k, v in totals.items()}
    print("time inside the monitors' hooks per run: " + ", ".join(f"{k} {v:.2f} s" for k, v in per_run.items()))
    out = {"steps": steps, "steps_per_epoch": spe, "scaled": scaled, "curvature_every_n_steps": m.curvature_every_n_steps,
           "base_s": base, "monitors_s": mon, "hook_s_per_run": per_run, "ratio_median": mm / mb,
           "ratio_hooks": 1 + sum(per_run.values()) / min(base), "ratio_min": min(mon) / min(base), "target": TARGET}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    print(f"ratio of medians: {out['ratio_median']:.3f}; 1 + hook time / base time: {out['ratio_hooks']:.3f}")
    print(f"instrumentation overhead (with / without monitors, minimum wall time of {args.repeats}): "
          f"{out['ratio_min']:.3f} (target <= {TARGET})")


if __name__ == "__main__":
    main()
