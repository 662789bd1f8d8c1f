"""The sweep at GPU speed: steady-state seconds per epoch of every variant (all monitors at the study's frequencies,
and monitors off), peak GPU memory, the total throughput of 1, 2, 3, 4, 6 concurrent runs on one GPU, and, printed
last, the projected GPU-hours of the 216-run sweep at the best workers-per-GPU setting beside the target (<= 6).

What one row measures (in this process, one `module.train` per row, the real Lightning loop, data module and
monitors): the study's run shape — width 1 (x the variant's own width), batch 128, CIFAR-shaped synthetic data
(50 000 training / 10 000 validation images, generated once and reused by every row), validation 4x per epoch on
all 10 000 validation images, the fast-path defaults of `config` (precision `auto` = bf16-mixed on a bf16 GPU,
channels_last, cuDNN benchmark; `--compile` adds torch.compile rows). Each run trains 3 full epochs (391 steps each);
the clock is device-synchronised at the start and at the end of every epoch, and the **steady state is epochs 2-3**
(epoch 1 carries cuDNN autotuning, allocator growth and, with compile, compilation; it is reported as
"first-epoch overhead" and charged once per run in the projection).

Monitors at the study's frequencies: norms at every validation and slopes every epoch (as in the study), noise every
2 epochs (fires once in the 2 timed epochs: the study's rate), curvature every 500 steps. The timed window
(steps 392-1173) holds 2 curvature measurements where the study averages 391/500 = 0.78 per epoch (1.56 per 2
epochs): the measured time is corrected by (0.78 - n/2) x the mean measured `curv_seconds` per epoch; the table
shows the correction. "Monitors off" runs the same training and validation with no monitor callbacks.

Concurrency (`sweep.profile_concurrency`, the code behind `lls profile --workers`): for each k, k fresh processes
train the base variant at once on GPU 0 (what the local pool's `--workers-per-gpu k` does), are released together
after warm-up, and their optimizer steps in the common window give the total steps/s; speedup(k) = total(k) /
total(1). These processes train without validation or monitors; the projection assumes the same speedup for whole
runs. `sweep.recommend_workers_per_gpu` picks the fewest workers within 5 % of the best total that fit in memory.

Curvature on the GPU (`curvature_choices`, after the per-run rows; `--no-curvature` skips it): the HVP routes of
`curvature.HVP_METHODS` at the study's size (width 1, 128-image probe, BatchNorm train), one by one and 8 at once, in
training steps of the same batch, and lambda_max with TF32 inside the HVPs against float32; it prints the values to
set for `monitors.curvature_hvp` (the cheapest route; `curvature.HVP_DEFAULT["cuda"]` is today's double backward until
this is measured) and `monitors.curvature_tf32` (true only if within 1e-3 of float32 and faster). ~1-2 min on a GPU.

Projection: GPU-hours = sum over the 216 runs (54 per variant) of [50 x steady s/epoch (monitors on) + first-epoch
overhead] / speedup(k*) / 3600. Not included: process start-up (imports, data generation/loading ~10-20 s per run;
with k workers it overlaps with the others' GPU work), checkpoint writes, retries.

Time (an estimate from the design, not yet measured on a GPU): on one H100/H200-class GPU about 3-5 min for the
11 rows (each 3 epochs of 391 steps + 12 validations) and ~2-3 min for the concurrency sweep (16 worker processes in
5 groups), <= 8 min; the wall time is printed before the last line. `--variants base` or `--workers 1,2,4`
shortens it. The one prepared GPU command (from the repository root, with
the project's environment):

    OMP_NUM_THREADS=4 python benchmarks/bench_gpu.py --json bench_gpu.json 2>&1 | tee bench_gpu.txt
    OMP_NUM_THREADS=4 python benchmarks/bench_gpu.py --compile          # also torch.compile rows (+1-2 min)

CPU smoke run (what CI can afford; tiny settings — width 0.125, batch 32, 8 steps per epoch, 64 validation images,
curvature every 10 steps, cheap monitor knobs — and worker counts 1,2; the figures are NOT GPU figures):

    OMP_NUM_THREADS=1 python benchmarks/bench_gpu.py --tiny      # 282 s measured on the shared 2-core CI box
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings

import torch
from lightning.pytorch.callbacks import Callback

from loss_lin_slope import curvature
from loss_lin_slope.callbacks import monitor_callbacks
from loss_lin_slope.config import GRID, VARIANTS, ConfigError, make_config
from loss_lin_slope.loaders import SyntheticDataModule
from loss_lin_slope.module import MemorySink, resolve_precision, train
from loss_lin_slope.profile import profile_concurrency, recommend_workers_per_gpu

TARGET_GPU_HOURS = 6.0
STUDY_EPOCHS = 50
RUNS_PER_VARIANT = len(GRID["lrs"]) * len(GRID["wds"]) * len(GRID["seeds"])  # 54
STUDY_STEPS_PER_EPOCH = 391  # ceil(50 000 / 128)
TINY = {"width_mult": 0.125, "batch_size": 32, "n_train": 256, "n_val": 64, "data.eval_batch_size": 64,
        "monitors.curvature_every_n_steps": round(500 * 8 / STUDY_STEPS_PER_EPOCH),
        "monitors.curvature_max_iter": 4, "monitors.trace_matvecs": 3, "monitors.noise_batches": 2,
        "accelerator": "cpu"}


class CachedSynthetic(SyntheticDataModule):
    "The synthetic data module, generating each split once per process (rows differ only in model and options)."

    cache: dict = {}

    def load(self, split, n):
        key = (split, n, self.cfg.model.num_classes)
        if key not in self.cache:
            self.cache[key] = super().load(split, n)
        return self.cache[key]


class EpochClock(Callback):
    "Device-synchronised wall times at train start and at every epoch end (registered last: after the monitors)."

    def __init__(self):
        self.marks: list[float] = []

    def _mark(self, pl_module):
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        self.marks.append(time.perf_counter())

    def on_train_start(self, trainer, pl_module):
        self._mark(pl_module)

    def on_train_epoch_end(self, trainer, pl_module):
        self._mark(pl_module)


def curvature_choices(cuda: bool, tiny: bool) -> dict:
    """The GPU settings of the curvature monitor, measured: the cheapest HVP route per vector (every route of
    `curvature.HVP_METHODS`, one by one and 8 at once, `bench_curvature_hvp.hvp_routes`) → `monitors.curvature_hvp`,
    and on CUDA lambda_max with TF32 inside the HVPs against float32 (same start vector) and their seconds →
    `monitors.curvature_tf32` (on only if within 1e-3 and faster). Study size: width 1, a 128-image probe."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import torch.nn.functional as F
    from bench_curvature_hvp import hvp_routes

    from loss_lin_slope.loaders import make_synthetic, normalize
    from loss_lin_slope.model import resnet18_cifar

    width, probe = (0.125, 16) if tiny else (1.0, 128)
    dev = "cuda" if cuda else "cpu"
    print(f"\ncurvature HVP routes ({dev}, width {width:g}, {probe}-image probe, BatchNorm train; unit: one training "
          f"step of the same batch):", flush=True)
    r = hvp_routes(width=width, probe=probe, k=8, reps=3, device=dev)
    best = min(r["rows"], key=lambda k: min(r["rows"][k]["one"], r["rows"][k]["mat"]))
    route = best.split(" ")[0]
    out = {"hvp_rows": r["rows"], "curvature_hvp": route, "curvature_tf32": False}
    if cuda:
        torch.manual_seed(0)
        model = resnet18_cifar(width_mult=width).cuda().to(memory_format=torch.channels_last)
        x, y = make_synthetic(probe, "train")
        batch = (normalize(x).cuda(), y.cuda())
        res = {}
        for tf32 in (False, True):
            curvature.measure(model, F.cross_entropy, batch, hvp=route, tf32=tf32)  # warm-up (cuDNN, allocator)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            lam, tr = curvature.measure(model, F.cross_entropy, batch, hvp=route, tf32=tf32, seed=1)
            torch.cuda.synchronize()
            res[tf32] = (lam.value, time.perf_counter() - t0, lam.n_matvecs + tr.n_matvecs)
        rel = abs(res[True][0] - res[False][0]) / abs(res[False][0])
        out.update(tf32_rel_diff=rel, fp32_s=res[False][1], tf32_s=res[True][1],
                   curvature_tf32=bool(rel <= 1e-3 and res[True][1] < res[False][1]))
        print(f"  lambda_max fp32 {res[False][0]:.6g} ({res[False][1]:.2f} s, {res[False][2]} HVPs), TF32 "
              f"{res[True][0]:.6g} ({res[True][1]:.2f} s): relative difference {rel:.1e} (needs <= 1e-3)")
    print(f"  set monitors.curvature_hvp: {route} (curvature.HVP_DEFAULT[{dev!r}] is "
          f"{curvature.HVP_DEFAULT.get(dev)!r}); monitors.curvature_tf32: {str(out['curvature_tf32']).lower()}"
          + ("" if cuda else " (TF32 is CUDA only: not measured here)"), flush=True)
    return out


def measure(cfg, monitors: bool) -> dict:
    "One run of `cfg.trainer.max_epochs` epochs: steady s/epoch (epochs 2..E), first-epoch overhead, peak memory."
    resolve_precision(cfg)  # a precision this device cannot run fails here, naming trainer.precision
    cuda = torch.cuda.is_available() and cfg.trainer.accelerator != "cpu"
    dm = CachedSynthetic(cfg)
    dm.setup()  # data generation is not part of a training epoch
    clock, sink = EpochClock(), MemorySink()
    cbs = monitor_callbacks(cfg) if monitors else []
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    train(cfg, callbacks=[*cbs, clock], sink=sink, datamodule=dm)
    m, E, spe = clock.marks, cfg.trainer.max_epochs, dm.steps_per_epoch
    steady = (m[E] - m[1]) / (E - 1)
    out = {"steady_s": steady, "first_s": m[1] - m[0], "correction_s": 0.0, "steps_per_epoch": spe,
           "precision": resolve_precision(cfg)}
    if monitors and cfg.monitors.curvature:
        df = sink.df
        curv = df[df.metric == "curv_seconds"]
        n = int(((curv.step > spe) & (curv.step <= E * spe)).sum())
        rate = spe / cfg.monitors.curvature_every_n_steps  # per epoch: 391 / 500 = 0.78 in the study
        out["correction_s"] = (rate - n / (E - 1)) * float(curv.value.mean()) if len(curv) else 0.0
        out["steady_s"] += out["correction_s"]
        out["curv_per_epoch_timed"] = n / (E - 1)
    out["overhead_s"] = max(0.0, out["first_s"] - out["steady_s"])
    out["peak_reserved"] = torch.cuda.max_memory_reserved() if cuda else None
    out["peak_allocated"] = torch.cuda.max_memory_allocated() if cuda else None
    return out


def _gib(b):
    return "-" if b is None else f"{b / 2**30:.2f}"


def _workers(s: str) -> list[int]:
    ks = [int(x) for x in s.split(",") if x.strip()]
    if not ks or min(ks) < 1:
        raise argparse.ArgumentTypeError(f"{s!r}: comma-separated worker counts >= 1")
    return ks


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="CPU smoke settings (not GPU figures)")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated (default: all four)")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per row; the steady state is epochs 2..E (odd, >= 3)")
    ap.add_argument("--workers", type=_workers, default=None, help="concurrent runs (default 1,2,3,4,6; tiny: 1,2)")
    ap.add_argument("--conc-steps", type=int, default=None, help="timed steps per concurrent run (default 60; tiny 6)")
    ap.add_argument("--conc-warmup", type=int, default=None, help="warm-up steps (default 15; tiny 2)")
    ap.add_argument("--compile", action="store_true", help="also base with torch.compile (monitors on and off)")
    ap.add_argument("--gpu-mem", type=float, default=None, help="GiB per GPU (default: the device's; CPU: 8)")
    ap.add_argument("--json", default=None, help="also write every figure to this JSON file")
    ap.add_argument("--no-curvature", action="store_true", help="skip the curvature HVP-route / TF32 measurement")
    a = ap.parse_args(argv)
    variants = [v for v in a.variants.split(",") if v]
    bad = [v for v in variants if v not in VARIANTS]
    if bad or not variants:
        raise ConfigError("--variants", a.variants, "a comma-separated subset of " + ", ".join(VARIANTS))
    if a.epochs < 3 or a.epochs % 2 == 0:
        raise ConfigError("--epochs", a.epochs, "an odd integer >= 3 (noise fires every 2 epochs: the timed window "
                          "must hold an even number of epochs)")
    warnings.filterwarnings("ignore")
    import logging

    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("LLS_PROGRESS_BAR", "0")
    cuda = torch.cuda.is_available() and not a.tiny
    device = torch.cuda.get_device_name(0) if cuda else "cpu"
    gpu_mem = a.gpu_mem or (torch.cuda.get_device_properties(0).total_memory / 2**30 if cuda else 8.0)
    base_kw = dict(TINY) if a.tiny else {}
    base_kw["epochs"] = a.epochs
    workers = a.workers or ([1, 2] if a.tiny else [1, 2, 3, 4, 6])
    conc_steps = a.conc_steps or (6 if a.tiny else 60)
    conc_warmup = a.conc_warmup or (2 if a.tiny else 15)
    t_all = time.perf_counter()
    print(f"device: {device}; {'TINY CPU settings: not GPU figures' if a.tiny else 'study size'}; torch "
          f"{torch.__version__}; {a.epochs} epochs per row, steady state = epochs 2-{a.epochs}", flush=True)

    rows = []
    plan = [(v, "fast", {}, mon) for v in variants for mon in (True, False)]
    if "base" in variants:
        plan.append(("base", "fp32 NCHW", {"precision": "32-true", "channels_last": False,
                                           "cudnn_benchmark": False}, False))
        if a.compile:
            plan += [("base", "fast+compile", {"compile": True}, mon) for mon in (True, False)]
    for v, label, kw, mon in plan:
        cfg = make_config(v, **{**base_kw, **kw})
        t0 = time.perf_counter()
        r = measure(cfg, mon)
        r.update(variant=v, path=label, monitors="on" if mon else "off", wall_s=time.perf_counter() - t0)
        rows.append(r)
        print(f"  {v:7s} {label:13s} monitors {r['monitors']:3s}: {r['steady_s']:.3f} s/epoch "
              f"(row {r['wall_s']:.0f} s)", flush=True)

    print(f"\nper run ({device}):")
    hdr = (f"{'variant':8s} {'path':13s} {'precision':10s} {'monitors':8s} {'s/epoch':>8s} {'curv.corr':>9s} "
           f"{'1st-epoch+':>10s} {'peak GiB':>8s} {'alloc GiB':>9s}")
    print(hdr)
    for r in rows:
        print(f"{r['variant']:8s} {r['path']:13s} {r['precision']:10s} {r['monitors']:8s} {r['steady_s']:8.3f} "
              f"{r['correction_s']:+9.3f} {r['overhead_s']:10.2f} {_gib(r['peak_reserved']):>8s} "
              f"{_gib(r['peak_allocated']):>9s}")
    for v in variants:
        on = next(r for r in rows if r["variant"] == v and r["path"] == "fast" and r["monitors"] == "on")
        off = next(r for r in rows if r["variant"] == v and r["path"] == "fast" and r["monitors"] == "off")
        print(f"  {v}: monitors cost {100 * (on['steady_s'] / off['steady_s'] - 1):+.1f} % per epoch")
    plain = next((r for r in rows if r["path"] == "fp32 NCHW"), None)
    if plain:
        off = next(r for r in rows if r["variant"] == "base" and r["path"] == "fast" and r["monitors"] == "off")
        print(f"  base: fast path {plain['steady_s'] / off['steady_s']:.2f}x faster than fp32 NCHW without benchmark "
              f"(monitors off)")

    curv = None if a.no_curvature else curvature_choices(cuda, a.tiny)

    conc_kw = {k: v for k, v in base_kw.items() if k != "epochs"}
    conc = profile_concurrency("base", workers, conc_steps, conc_warmup, **conc_kw)
    peaks = [r["peak_reserved"] for r in rows if r["peak_reserved"] is not None]
    rec = recommend_workers_per_gpu(conc, gpu_mem, peak_bytes=max(peaks) if peaks else None)
    print(f"\nconcurrent base runs on one device ({conc[0]['device']}, {conc[0]['precision']}, training steps only, "
          f"{conc_steps} timed steps each):")
    print(f"{'workers':>7s} {'steps/s total':>13s} {'per run':>8s} {'images/s':>9s} {'speedup':>8s} {'peak GiB':>8s} "
          f"{'window s':>8s}")
    for r in conc:
        print(f"{r['workers']:7d} {r['steps_per_s']:13.2f} {r['steps_per_s_per_run']:8.2f} {r['images_per_s']:9.0f} "
              f"{r['speedup']:8.2f} {r['peak_mem_bytes'] / 2**30:8.2f} {r['window_s']:8.1f}")
    print(f"recommended workers per GPU ({gpu_mem:.0f} GiB): {rec['workers']} - {rec['reason']}")

    k = max(rec["workers"], 1)
    speedup = rec["speedup"] if rec["workers"] >= 1 and math.isfinite(rec["speedup"]) else 1.0
    seconds = 0.0
    for v in variants:
        on = next(r for r in rows if r["variant"] == v and r["path"] == "fast" and r["monitors"] == "on")
        seconds += RUNS_PER_VARIANT * (STUDY_EPOCHS * on["steady_s"] + on["overhead_s"])
    scale = len(VARIANTS) / len(variants)  # the sweep has all four variants; missing ones count as the measured mean
    gpu_hours = seconds * scale / speedup / 3600
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"device": device, "tiny": a.tiny, "rows": rows, "concurrency": conc, "recommendation": rec,
                       "gpu_mem_gib": gpu_mem, "projected_gpu_hours": gpu_hours, "target_gpu_hours": TARGET_GPU_HOURS,
                       "variants": variants, "curvature": curv}, f, indent=1, default=str)
    print(f"\nbenchmark wall time {time.perf_counter() - t_all:.0f} s")
    note = " (TINY CPU settings: NOT a GPU figure)" if a.tiny else ""
    extrap = "" if len(variants) == len(VARIANTS) else f" ({len(variants)} of 4 variants measured, scaled)"
    print(f"projected sweep, 216 runs x {STUDY_EPOCHS} epochs at {k} workers/GPU{extrap}: {gpu_hours:.2f} GPU-hours"
          f"   target <= {TARGET_GPU_HOURS:g} GPU-hours{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
