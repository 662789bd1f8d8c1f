"""Curvature benchmark: HVP counts and costs of `loss_lin_slope.curvature` on a CIFAR-shaped ResNet.

Measured in one process, on one model -- the project's CIFAR ResNet-18 at width_mult 0.125 (176k
parameters; `--arch small` for a 20k-parameter 3-block ResNet), trained briefly on synthetic
CIFAR-shaped data -- and one 32-example batch:

1. HVPs to reach 1e-3 relative error in lambda_max: Lanczos / power iteration (target <= 0.5).
   "Reached" = the first iteration after which the estimate stays within 1e-3 of a tightly converged
   Lanczos reference; both methods start from the same random vectors. The count depends on the
   spectrum (power iteration is fast when lambda_1 / lambda_2 is large), so it is summed over several
   model states (`--train-steps`), both BatchNorm modes (eval: what the monitors measure; train:
   the curvature the optimiser sees) and seeds. Each method's own stopping rule at tol=1e-3
   (Lanczos: gap rule; power: PyHessian's relative-change rule) is reported too, with its error.
2. Seconds per HVP / seconds per gradient (target <= 3): the gradient is forward + backward of the
   mean loss on the same batch (BatchNorm in eval mode, as the estimators run); the HVP figure is
   end to end -- `hessian_trace(n_matvecs=B)` wall time / B, so it includes building the gradient
   graph, the probes and the QR -- with the steady-state cost of each HVP method printed too.
   Each timing is paired with a gradient timed just before it; medians of the paired ratios. With one
   torch thread (the default) the clock is this thread's CPU time, so other load on the machine does
   not distort the ratio.
3. Relative trace error of Hutch++ / Hutchinson at an equal budget of B HVPs (report): both are
   unbiased (tested against exact Hessians in nbs/04_curvature.ipynb), so the RMS error is the
   standard deviation over seeds and the ratio needs no exact trace; `--exact-trace` computes the
   exact trace from n unit-vector HVPs (slow) and uses it instead.

    python benchmarks/bench_curvature.py            # ~8 min on an idle 2-core CPU
    python benchmarks/bench_curvature.py --quick    # smoke run (~1 min)
"""


from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from loss_lin_slope.curvature import (
    HVP_METHODS,
    HessianOperator,
    curvature_mode,
    hessian_operator,
    hessian_trace,
    lambda_max,
    lanczos,
    power_iteration,
    select_batch,
    trainable_params,
)


class Block(nn.Module):
    "A CIFAR ResNet basic block (two 3x3 convs with BatchNorm, identity or 1x1 projection shortcut)."

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.sc = nn.Sequential()
        if stride != 1 or cin != cout:
            self.sc = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.b1(self.c1(x)))
        return F.relu(self.b2(self.c2(out)) + self.sc(x))


class SmallResNet(nn.Module):
    "CIFAR-shaped ResNet: 3x32x32 input, stem + 3 stages of one basic block (w, 2w, 4w channels), 10 classes."

    def __init__(self, width: int = 8, n_classes: int = 10):
        super().__init__()
        w = width
        self.stem = nn.Sequential(nn.Conv2d(3, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU())
        self.stages = nn.Sequential(Block(w, w, 1), Block(w, 2 * w, 2), Block(2 * w, 4 * w, 2))
        self.fc = nn.Linear(4 * w, n_classes)

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool2d(self.stages(self.stem(x)), 1).flatten(1))


def synthetic_cifar(n: int, seed: int = 0):
    "CIFAR-shaped synthetic data: a fixed random template per class plus noise (learnable, offline)."
    g = torch.Generator().manual_seed(seed)
    templates = torch.randn(10, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    x = 0.5 * templates[y] + torch.randn(n, 3, 32, 32, generator=g)
    return x, y


def make_models(width: int, train_steps: list[int], seed: int = 0, arch: str = "small", width_mult: float = 0.125):
    """Snapshots of a SmallResNet (or the project's `resnet18_cifar(width_mult)`, `arch="resnet18"`) after each of
    `train_steps` SGD steps (batch 64, lr 0.05, momentum 0.9) on synthetic data, and one 32-example batch
    (`select_batch`, as the monitors choose it)."""
    torch.manual_seed(seed)
    if arch == "resnet18":
        from loss_lin_slope.model import resnet18_cifar

        model = resnet18_cifar(width_mult=width_mult)
    else:
        model = SmallResNet(width)
    x, y = synthetic_cifar(2048, seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    model.train()
    snaps = {}
    for step in range(max(train_steps) + 1):
        if step in train_steps:
            snaps[step] = copy.deepcopy(model)
            snaps[step].zero_grad(set_to_none=True)
        i = (step * 64) % len(x)
        opt.zero_grad()
        F.cross_entropy(model(x[i : i + 64]), y[i : i + 64]).backward()
        opt.step()
    batch = select_batch(x, y, subsample_ratio=32 / len(x), max_batch_size=32, seed=seed)
    return snaps, batch


def first_within(history, ref, rel_tol):
    "1-based count of matvecs after which every later estimate is within rel_tol of ref (None if never)."
    ok = np.abs(np.asarray(history) - ref) <= rel_tol * abs(ref)
    if not ok[-1]:
        return None
    bad = np.flatnonzero(~ok)
    return int(bad[-1]) + 2 if bad.size else 1


def pyhessian_stop(history, tol):
    "Matvecs after which PyHessian's rule (relative change < tol) stops power iteration, or None."
    for k in range(1, len(history)):
        if abs(history[k] - history[k - 1]) / (abs(history[k - 1]) + 1e-6) < tol:
            return k + 1
    return None


def bench_lambda(model, batch, bn_mode, seeds, rel_tol, max_lanczos, max_power):
    "HVPs to rel_tol for Lanczos and power iteration from the same start vectors, against a tight reference."
    with hessian_operator(model, F.cross_entropy, batch, bn_mode=bn_mode) as op:
        kw = dict(device=op.device, dtype=op.dtype)
        ref = lanczos(op, op.n, tol=1e-7, max_iter=200, seed=10_000, **kw)
        lam = ref.value
        print(f"  bn_mode={bn_mode}: loss {op.loss:.3f}, reference lambda_max {lam:.5g} ({ref.n_matvecs} HVPs, residual "
              f"{ref.residual:.1g}), next Ritz values {[round(t, 3) for t in ref.info['ritz_values'][-4:-1]]}")
        rows = []
        for s in range(seeds):
            # run well past 1e-3 (to ~1e-6) so that "stays within" can be judged from the history
            lz = lanczos(op, op.n, tol=1e-6, max_iter=max_lanczos, seed=s, **kw)
            pw = power_iteration(op, op.n, tol=1e-6, max_iter=max_power, seed=s, **kw)
            lz_rule = lanczos(op, op.n, tol=rel_tol, max_iter=max_lanczos, seed=s, **kw)
            k = pyhessian_stop(pw.history, rel_tol)
            rows.append(dict(
                seed=s, lanczos_to_tol=first_within(lz.history, lam, rel_tol),
                power_to_tol=first_within(pw.history, lam, rel_tol),
                lanczos_rule_matvecs=lz_rule.n_matvecs, lanczos_rule_err=abs(lz_rule.value - lam) / abs(lam),
                power_rule_matvecs=k, power_rule_err=abs(pw.history[k - 1] - lam) / abs(lam) if k else float("nan")))
            print("    seed {seed}: HVPs to {tol:g}: lanczos {lanczos_to_tol}, power {power_to_tol} | own stopping rule at "
                  "tol={tol:g}: lanczos {lanczos_rule_matvecs} HVPs (error {lanczos_rule_err:.1e}), "
                  "power (PyHessian) {power_rule_matvecs} HVPs (error {power_rule_err:.1e})".format(tol=rel_tol, **rows[-1]))
    if any(r["power_to_tol"] is None for r in rows):
        print(f"    power iteration did not reach {rel_tol:g} within {max_power} HVPs for some seeds: counted as {max_power}")
    return dict(reference=lam, rows=rows, lanczos_hvps=sum(r["lanczos_to_tol"] or max_lanczos for r in rows),
                power_hvps=sum(r["power_to_tol"] or max_power for r in rows))


def bench_time(model, batch, reps, budget, clock=time.perf_counter):
    """Seconds per gradient and per HVP (each method, steady state) and end to end (`hessian_trace` and
    `lambda_max` time / HVPs). Each HVP timing is paired with a gradient timed just before it; the medians
    of the paired ratios are returned with the median seconds. `clock=time.thread_time` (with one torch thread
    all CPU work runs in this thread) counts CPU time only, so other processes on the machine do not inflate it."""
    x, y = batch
    keys = [*HVP_METHODS, "trace_e2e", "lanczos_e2e"]
    secs = {k: [] for k in ["grad", *keys]}
    ratios = {k: [] for k in keys}

    def grad_time():
        with curvature_mode(model):
            t = clock()
            torch.autograd.grad(F.cross_entropy(model(x), y), trainable_params(model))
            secs["grad"].append(clock() - t)
        return secs["grad"][-1]

    with curvature_mode(model):
        ops = {m: HessianOperator(model, F.cross_entropy, batch, method=m) for m in HVP_METHODS}
        v = torch.randn(ops["double_backward"].n, generator=torch.Generator().manual_seed(0))
        for m in HVP_METHODS:  # warm-up
            ops[m](v)
        for _ in range(reps):
            for m in HVP_METHODS:
                g = grad_time()
                t = clock()
                ops[m](v)
                secs[m].append(clock() - t)
                ratios[m].append(secs[m][-1] / g)
        for op in ops.values():
            op.close()
    for r in range(max(3, reps // 4)):
        for k in ("trace_e2e", "lanczos_e2e"):
            g = grad_time()
            t = clock()
            if k == "trace_e2e":
                e = hessian_trace(model, F.cross_entropy, batch, n_matvecs=budget, seed=r, bn_mode="eval")
            else:
                e = lambda_max(model, F.cross_entropy, batch, seed=r, bn_mode="eval")
            secs[k].append((clock() - t) / e.n_matvecs)
            ratios[k].append(secs[k][-1] / g)
    return {k: statistics.median(v) for k, v in secs.items()}, {k: statistics.median(v) for k, v in ratios.items()}


def exact_trace(model, batch):
    "tr H = sum_i e_i' H e_i from n unit-vector HVPs (slow: n HVPs)."
    with curvature_mode(model):
        op = HessianOperator(model, F.cross_entropy, batch)
        e = torch.zeros(op.n)
        total = 0.0
        for i in range(op.n):
            e[i] = 1.0
            total += op(e)[i].item()
            e[i] = 0.0
        op.close()
    return total


def bench_trace(model, batch, seeds, budgets, exact=None):
    out = {}
    for b in budgets:
        ests = {m: [hessian_trace(model, F.cross_entropy, batch, m, n_matvecs=b, seed=s, bn_mode="eval")
                    for s in range(seeds)]
                for m in ("hutch++", "hutchinson")}
        vals = {m: np.array([e.value for e in es]) for m, es in ests.items()}
        # calibration: the reported stderr against the spread over seeds
        calib = {m: float(np.sqrt(np.mean([e.stderr**2 for e in es])) / vals[m].std(ddof=1)) for m, es in ests.items()}
        centre = exact if exact is not None else float(np.mean(np.concatenate(list(vals.values()))))
        if exact is None:  # unbiased: RMS error = sd over seeds
            rel = {m: float(v.std(ddof=1) / abs(centre)) for m, v in vals.items()}
        else:
            rel = {m: float(np.sqrt(np.mean((v - exact) ** 2)) / abs(exact)) for m, v in vals.items()}
        out[b] = dict(rel_err=rel, ratio=rel["hutch++"] / rel["hutchinson"], trace=centre,
                      mean={m: float(v.mean()) for m, v in vals.items()}, stderr_calibration=calib)
        print(f"  budget {b:4d} HVPs: relative RMS error hutch++ {rel['hutch++']:.3%}, hutchinson {rel['hutchinson']:.3%}"
              f" (trace {'exact' if exact is not None else 'pooled mean'} {centre:.5g}; rms stderr / sd over seeds "
              f"hutch++ {calib['hutch++']:.2f}, hutchinson {calib['hutchinson']:.2f})")
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", choices=["small", "resnet18"], default="resnet18",
                   help="small: SmallResNet(--width); resnet18: loss_lin_slope.model.resnet18_cifar(--width-mult)")
    p.add_argument("--width", type=int, default=8, help="channels of the first stage (8: ~20k parameters)")
    p.add_argument("--width-mult", type=float, default=0.125, help="width multiplier for --arch resnet18")
    p.add_argument("--train-steps", type=int, nargs="+", default=[60, 300],
                   help="model states (SGD steps) for the lambda_max comparison; the first is used for [2] and [3]")
    p.add_argument("--bn-modes", nargs="+", default=["eval", "train"], help="BatchNorm modes for the lambda_max comparison")
    p.add_argument("--seeds", type=int, default=3, help="start vectors per state and BN mode")
    p.add_argument("--trace-seeds", type=int, default=20)
    p.add_argument("--budgets", type=int, nargs="+", default=[30], help="HVP budgets for the trace comparison")
    p.add_argument("--reps", type=int, default=20, help="timing repetitions")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: least sensitive to other load)")
    p.add_argument("--max-power", type=int, default=150, help="power iterations; not reaching 1e-3 counts as this")
    p.add_argument("--max-lanczos", type=int, default=30)
    p.add_argument("--exact-trace", action="store_true", help="compute the exact trace with n HVPs (slow)")
    p.add_argument("--quick", action="store_true", help="smoke run: small model, few seeds")
    p.add_argument("--parts", type=int, nargs="+", default=[1, 2, 3], help="which measurements to run")
    p.add_argument("--json", help="also write the results to this file")
    a = p.parse_args(argv)
    if a.quick:
        a.arch, a.width, a.train_steps, a.bn_modes, a.seeds, a.trace_seeds, a.budgets, a.reps = (
            "small", 4, [10], ["eval"], 1, 5, [30], 5)
        a.max_power = 60
    sys.stdout.reconfigure(line_buffering=True)
    torch.set_num_threads(a.threads)
    models, batch = make_models(a.width, a.train_steps, arch=a.arch, width_mult=a.width_mult)
    main_model = models[a.train_steps[0]]
    n = sum(p.numel() for p in trainable_params(main_model))
    name = f"SmallResNet(width={a.width})" if a.arch == "small" else f"resnet18_cifar(width_mult={a.width_mult})"
    print(f"{name}: {n} parameters, batch {tuple(batch[0].shape)}, states after {a.train_steps} "
          f"SGD steps, torch {torch.__version__}, {torch.get_num_threads()} thread(s)")

    print("\n[1] lambda_max: HVPs to 1e-3 relative error (Lanczos vs power iteration, same start vectors)")
    lam = {}
    for steps, model in models.items() if 1 in a.parts else ():
        print(f" after {steps} steps:")
        for bn in a.bn_modes:
            lam[f"{steps}/{bn}"] = r = bench_lambda(model, batch, bn, a.seeds, 1e-3, a.max_lanczos, a.max_power)
            print(f"    -> Lanczos {r['lanczos_hvps']} / power {r['power_hvps']} HVPs = {r['lanczos_hvps'] / r['power_hvps']:.2f}")
    nan = float("nan")
    n_l, n_p = sum(r["lanczos_hvps"] for r in lam.values()) or nan, sum(r["power_hvps"] for r in lam.values()) or nan
    rule_l = sum(x["lanczos_rule_matvecs"] for r in lam.values() for x in r["rows"]) or nan
    rule_p = sum(x["power_rule_matvecs"] or a.max_power for r in lam.values() for x in r["rows"]) or nan

    print(f"\n[2] seconds per HVP / seconds per gradient (state after {a.train_steps[0]} steps, bn_mode=eval)")
    clock = time.thread_time if a.threads == 1 else time.perf_counter
    tm, tr_ = bench_time(main_model, batch, a.reps, a.budgets[0], clock) if 2 in a.parts else ({}, {})
    print(f"  ({'CPU time of this thread' if a.threads == 1 else 'wall time'}; HVP ratios: medians of paired ratios)")
    for k, v in tm.items():
        print(f"  {k:16s} {v * 1e3:8.2f} ms median" + (f"   {tr_[k]:.2f} x gradient" if k in tr_ else ""))

    print(f"\n[3] relative trace error at equal HVP budget (state after {a.train_steps[0]} steps, bn_mode=eval)")
    ex = exact_trace(main_model, batch) if a.exact_trace else None
    tr = bench_trace(main_model, batch, a.trace_seeds, a.budgets, ex) if 3 in a.parts else {}

    b0 = a.budgets[0]
    figures = {
        "lanczos_over_power_hvps_to_1e-3": (n_l / n_p, "target <= 0.5"),
        "hvp_seconds_over_grad_seconds": (tr_.get("trace_e2e", nan), "target <= 3"),
        f"hutchpp_over_hutchinson_rel_trace_error_at_{b0}_hvps": (tr.get(b0, {}).get("ratio", nan), "report"),
    }
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(args=vars(a), n_params=n, lambda_max=lam, timing_seconds=tm, timing_ratios=tr_, trace={str(k): v for k, v in tr.items()}, figures=figures),
                      f, indent=1, default=str)
    if 1 in a.parts:
        print(f"\n(HVPs to 1e-3 summed over {len(lam)} state/BN-mode cases x {a.seeds} seeds: Lanczos {n_l}, power {n_p}; "
              f"with their own stopping rules at tol=1e-3: Lanczos {rule_l}, PyHessian power {rule_p} = {rule_l / rule_p:.2f})")
    if 2 in a.parts:
        print(f"(HVP / gradient: steady-state double backward {tr_['double_backward']:.2f}, forward-over-reverse "
              f"{tr_['fwd_rev']:.2f}, rebuilt graph {tr_['fresh']:.2f}; end to end Hutch++ {tr_['trace_e2e']:.2f}, "
              f"Lanczos {tr_['lanczos_e2e']:.2f})")
    for name, (value, target) in figures.items():
        print(f"{name} = {value:.3f}   ({target})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
