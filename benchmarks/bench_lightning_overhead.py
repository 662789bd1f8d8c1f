"""Lightning training step ÷ a plain PyTorch loop: seconds per optimizer step on the same tiny model and data.

Both sides train `resnet18_cifar(width_mult=0.125)` on the same device-resident synthetic batches (the
`DeviceLoader` with batched augmentation), with the same SGD + warmup-cosine `LambdaLR`, from the same initial
weights. The Lightning side is the real thing: `module.train` → `LitClassifier` (per-batch metrics buffered on
the device, flushed every 100 steps to an in-memory sink) under `make_trainer` (no validation: `limit_val_batches=0`).
The plain side is `for x, y in loader: loss = CE(model(x), y); zero_grad; backward; step; sched.step()` with the
loss and accuracy kept on the device the same way. Each side's time per step is the median over the timed steps
(after warm-up steps), measured between consecutive batch starts; passes alternate and each side keeps its best
median. One torch thread by default, and the figure uses the process's CPU time (`time.process_time`), which on a
shared machine is not inflated by other people's jobs the way wall-clock time is (both are printed; on an idle
machine they agree for this CPU-bound loop). Target: ratio ≤ 1.10.

    python benchmarks/bench_lightning_overhead.py [--steps 30] [--warmup 5] [--repeats 3] [--batch 128] [--threads 1]
"""

import argparse
import logging
import statistics
import time
import warnings

import torch


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30, help="timed steps per pass")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: leave the default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    def now():
        return time.perf_counter(), time.process_time()

    def medians(t):
        "Median wall and CPU seconds per step over the timed steps."
        return tuple(statistics.median([b[k] - a[k] for a, b in zip(t, t[1:])][args.warmup:]) for k in (0, 1))
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning").setLevel(logging.ERROR)

    import lightning as L
    import torch.nn.functional as F

    from loss_lin_slope.config import make_config
    from loss_lin_slope.loaders import build_datamodule
    from loss_lin_slope.model import resnet18_cifar
    from loss_lin_slope.module import MemorySink, build_optimizer, build_scheduler, train

    n_steps = args.warmup + args.steps
    cfg = make_config(width_mult=0.125, batch_size=args.batch, n_train=args.batch * n_steps, n_val=args.batch,
                      epochs=1, accelerator="cpu")

    class StepTimes(L.Callback):
        def __init__(self):
            self.t = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.t.append(now())

        def on_train_end(self, trainer, pl_module):
            self.t.append(now())

    def lightning_pass():
        cb = StepTimes()
        trainer, _ = train(cfg, sink=MemorySink(), callbacks=[cb], limit_val_batches=0)
        assert trainer.global_step == n_steps
        return medians(cb.t)

    def plain_pass():
        L.seed_everything(cfg.seed, verbose=False)
        dm = build_datamodule(cfg)
        dm.setup()
        model = resnet18_cifar(10, cfg.model.width_mult, cfg.model.norm_type).train()
        opt = build_optimizer(model.parameters(), cfg)
        total, warm = dm.steps_per_epoch * cfg.trainer.max_epochs, cfg.schedule.warmup_epochs * dm.steps_per_epoch
        sched = build_scheduler(opt, warm, total)
        buf, t = [], []
        for x, y in dm.train_dataloader():
            t.append(now())
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            buf.append(torch.stack([loss.detach(), (logits.argmax(1) == y).float().mean()]))
        t.append(now())
        assert len(buf) == n_steps
        torch.stack(buf).cpu()
        return medians(t)

    best = {"lightning": [float("inf")] * 2, "plain": [float("inf")] * 2}
    for _ in range(args.repeats):
        for name, fn in (("plain", plain_pass), ("lightning", lightning_pass)):
            best[name] = [min(a, b) for a, b in zip(best[name], fn())]
    (pw, pc), (lw, lc) = best["plain"], best["lightning"]
    print(f"threads={torch.get_num_threads()} batch={args.batch} width_mult=0.125 timed steps={args.steps}")
    print(f"plain PyTorch loop: {pc * 1e3:.1f} ms/step CPU, {pw * 1e3:.1f} ms/step wall")
    print(f"Lightning (LitClassifier + make_trainer): {lc * 1e3:.1f} ms/step CPU, {lw * 1e3:.1f} ms/step wall")
    print(f"wall-clock ratio (noisy on a shared machine): {lw / pw:.3f}")
    print(f"Lightning overhead (Lightning / plain, CPU time per step): {lc / pc:.3f}  (target <= 1.10)")


if __name__ == "__main__":
    main()
