"""Images/s of bnnopt's in-memory batched loader vs a per-sample Python pipeline.

Both produce the same thing per training epoch: shuffled batches of normalised images,
randomly cropped with 4-pixel zero padding and horizontally flipped.

- ``inmemory``: :class:`bnnopt.data.InMemoryLoader` (uint8 on the device, one gather per
  batch for crop + flip, fused normalisation).
- ``per_sample``: the classic torchvision-style pipeline written out in Python: for each
  image ``np.pad`` -> random slice -> random flip -> to float tensor -> normalise, then
  ``torch.stack`` (collate) and copy to the device (a DataLoader with num_workers=0).

Data: the shared CIFAR-10 subset (5,085 training images) when ../shared is present,
else synthetic uint8 images of the same shape. Each measurement is a full epoch; the
figure reported is the median over ``--repeats`` epochs (after one warm-up epoch).
Both pipelines run with the same torch thread count (``--threads``, default 1).
Writes bench/results/loader.json (atomically) and prints a table.

    PYTHONPATH=src python bench/bench_loader.py [--batch-size 128] [--repeats 5] [--device cpu]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from bnnopt.data import CIFAR10_MEAN, CIFAR10_STD, DataError, InMemoryLoader, read_cifar10  # noqa: E402

SHARED_DATA = ROOT / ".." / "shared" / "data"


def load_images(n_synthetic: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    try:
        ds = read_cifar10(SHARED_DATA)
        return ds.train_x, ds.train_y, f"shared CIFAR-10 subset ({ds.source})"
    except DataError:
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, 256, (n_synthetic, 3, 32, 32), generator=g, dtype=torch.uint8)
        return x, torch.randint(0, 10, (n_synthetic,), generator=g), "synthetic uint8 32x32x3"


class PerSamplePipeline:
    """Per-image augmentation in Python + collate, as a num_workers=0 DataLoader would run it."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, device: torch.device, seed: int = 0):
        self.images = [img.permute(1, 2, 0).numpy() for img in x]  # HWC uint8, as PIL/numpy pipelines hold them
        self.labels = y.tolist()
        self.batch_size, self.device = batch_size, device
        self.mean = torch.tensor(CIFAR10_MEAN).view(3, 1, 1)
        self.std = torch.tensor(CIFAR10_STD).view(3, 1, 1)
        self.rng = random.Random(seed)

    def sample(self, i: int) -> tuple[torch.Tensor, int]:
        img = np.pad(self.images[i], ((4, 4), (4, 4), (0, 0)))  # zero padding
        top, left = self.rng.randint(0, 8), self.rng.randint(0, 8)
        img = img[top:top + 32, left:left + 32]
        if self.rng.random() < 0.5:
            img = img[:, ::-1]
        t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255)
        return (t - self.mean) / self.std, self.labels[i]

    def epoch(self):
        order = list(range(len(self.images)))
        self.rng.shuffle(order)
        for s in range(0, len(order), self.batch_size):
            items = [self.sample(i) for i in order[s:s + self.batch_size]]
            xb = torch.stack([a for a, _ in items]).to(self.device)
            yb = torch.tensor([b for _, b in items]).to(self.device)
            yield xb, yb


def time_epoch(make_iter, device: torch.device) -> float:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    checksum = 0.0
    for xb, _ in make_iter():
        checksum += float(xb[0, 0, 0, 0])  # touch each batch (forces async work to finish)
    sync()
    return time.perf_counter() - t0


def measure(name: str, make_iter, n: int, repeats: int, device: torch.device) -> dict:
    time_epoch(make_iter, device)  # warm-up
    secs = [time_epoch(make_iter, device) for _ in range(repeats)]
    med = statistics.median(secs)
    return {"name": name, "images_per_s": n / med, "epoch_s_median": med, "epoch_s_all": secs}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=1,
                   help="torch.set_num_threads (default 1: on a shared 2-core box more threads oversubscribe "
                        "and slow every op; 0 keeps torch's default)")
    p.add_argument("--synthetic", type=int, default=5085, help="image count when ../shared is absent")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "loader.json"))
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    x, y, source = load_images(args.synthetic)
    n = int(x.shape[0])

    mem = InMemoryLoader(x, y, args.batch_size, CIFAR10_MEAN, CIFAR10_STD, augment=True, device=device, seed=0)
    counter = iter(range(10 ** 9))
    results = [
        measure("inmemory (crop+flip+normalise on device)", lambda: mem.epoch(next(counter)), n, args.repeats, device),
        measure("inmemory eval (normalise only)", mem.eval, n, args.repeats, device),
    ]
    slow = PerSamplePipeline(x, y, args.batch_size, device)
    results.append(measure("per-sample python (pad/crop/flip/normalise + collate)", slow.epoch, n,
                           max(1, min(args.repeats, 3)), device))
    speedup = results[0]["images_per_s"] / results[2]["images_per_s"]
    report = {
        "benchmark": "loader", "data": source, "images": n, "batch_size": args.batch_size,
        "device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
        "results": results, "speedup_inmemory_vs_per_sample": speedup,
    }
    print(f"data: {source}; {n} images, batch {args.batch_size}, device {device}, torch threads "
          f"{torch.get_num_threads()}")
    for r in results:
        print(f"  {r['name']:<55s} {r['images_per_s']:>12,.0f} img/s   (median epoch {r['epoch_s_median']:.3f} s)")
    print(f"  speed-up of the in-memory loader over the per-sample pipeline: {speedup:.1f}x")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, out)
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
