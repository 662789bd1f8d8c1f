"""Batched on-device augmentation ÷ torchvision's per-image PIL pipeline, images per second on the CPU.

Both sides apply the same transforms to the same uint8 CIFAR-shaped images and produce the same normalised float
batch: RandomResizedCrop(32, scale=(0.08, 1), ratio=(3/4, 4/3)) + RandomHorizontalFlip + ToTensor + Normalize
(CIFAR mean/std), batch 128. The PIL side is what a `torchvision.datasets.CIFAR10` + DataLoader pipeline does per
image in `__getitem__` (`Image.fromarray` then the transforms) plus the collate `torch.stack`; the batched side is
`loss_lin_slope.loaders.augment` (crop parameters for the whole batch, one `roi_align`, flip, normalise). Both run in
this process on the same number of threads (default 1: a per-core comparison), timed with the process's CPU time
(`time.process_time`; on a shared machine wall-clock time also counts other people's jobs; both are printed).
Target: ratio ≥ 5.

    python benchmarks/bench_augment.py [--n 4096] [--threads 1] [--repeats 3]
"""

import argparse
import time

import torch


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4096, help="images per timed pass")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3, help="alternating timed passes per side; the best is kept")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    import numpy as np
    from PIL import Image
    from torchvision import transforms as T

    from loss_lin_slope.loaders import CIFAR_MEAN, CIFAR_STD, augment, make_synthetic

    x, _ = make_synthetic(args.n)
    x_hwc = x.permute(0, 2, 3, 1).contiguous().numpy()  # how torchvision's CIFAR10 stores images
    pil_tf = T.Compose([T.RandomResizedCrop(32, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)), T.RandomHorizontalFlip(),
                        T.ToTensor(), T.Normalize(CIFAR_MEAN, CIFAR_STD)])
    g = torch.Generator().manual_seed(0)

    def pil_pass():
        for lo in range(0, args.n, args.batch):
            torch.stack([pil_tf(Image.fromarray(x_hwc[i])) for i in range(lo, min(lo + args.batch, args.n))])

    def batched_pass():
        for lo in range(0, args.n, args.batch):
            augment(x[lo:lo + args.batch], g)

    # same output contract
    a = torch.stack([pil_tf(Image.fromarray(x_hwc[i])) for i in range(4)])
    b = augment(x[:4], g)
    assert a.shape == b.shape and a.dtype == b.dtype == torch.float32
    assert np.isclose(float(a.mean()), float(b.mean()), atol=1.0)

    best = {k: {"cpu": float("inf"), "wall": float("inf")} for k in ("pil", "batched")}
    batched_pass()  # warm-up
    for _ in range(args.repeats):
        for name, fn in (("pil", pil_pass), ("batched", batched_pass)):
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            w1, c1 = time.perf_counter(), time.process_time()
            best[name]["cpu"] = min(best[name]["cpu"], c1 - c0)
            best[name]["wall"] = min(best[name]["wall"], w1 - w0)
    ips = {k: {c: args.n / t for c, t in v.items()} for k, v in best.items()}
    print(f"threads={args.threads} n={args.n} batch={args.batch}")
    for k, label in (("pil", "torchvision PIL per-image pipeline"), ("batched", "batched device augmentation (cpu)")):
        print(f"{label}: {ips[k]['cpu']:,.0f} images/s per CPU-second, {ips[k]['wall']:,.0f} images/s wall")
    print(f"wall-clock ratio (noisy on a shared machine): {ips['batched']['wall'] / ips['pil']['wall']:.1f}x")
    print(f"augment speedup (batched / PIL, images per CPU-second): {ips['batched']['cpu'] / ips['pil']['cpu']:.1f}x"
          "  (target >= 5x)")


if __name__ == "__main__":
    main()
