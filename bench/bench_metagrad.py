"""Speed (and optionally accuracy) of the learned-gradient methods on cifar10-subset.

Protocol (issue 4; the paper's Table 5 reports FCGrad 1.45x and FSG 4.6x the
time of STE): ResNet-20 from ../shared/pretrained/resnet20-cifar10-fp.pth,
binarized with first conv and last linear kept FP, the 5,085 shared CIFAR-10
training images, batch 128 (40 steps per epoch), Adam lr 1e-3, CPU.

Every configuration runs in its own subprocess (so that its peak resident
memory is its own); it times ``--steps`` training steps after ``--warmup``
untimed ones (the first step of a learned-gradient method is plain STE, so the
warm-up also reaches the meta-step regime) and extrapolates seconds per epoch
= seconds per step x 40. With ``--accuracy-epochs E`` a grid row also trains E
full epochs (fresh run) and reports the final test accuracy on the 1,017 shared
test images. Prints tables and writes JSON (default bench/results/metagrad.json).

    PYTHONPATH=src python bench/bench_metagrad.py                  # methods table
    PYTHONPATH=src python bench/bench_metagrad.py --grid           # + expand x history
    PYTHONPATH=src python bench/bench_metagrad.py --paper          # FSG at paper sizes too
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT / ".." / "shared"
STEPS_PER_EPOCH = 40  # ceil(5085 / 128)


# -- one configuration (runs in a subprocess) --------------------------------------------
def run_one(spec: dict) -> dict:
    import torch
    import torch.nn.functional as F

    from bnnopt.models import load_pretrained, resnet20
    from bnnopt.registry import METHODS
    from bnnopt.train.data_setup import load_split_loaders
    from bnnopt.train.method import OptimConfig

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(spec["seed"])
    train, test, _ = load_split_loaders("cifar10", root=str(SHARED / "data"),
                                        batch_size=128, seed=spec["seed"])
    model = load_pretrained(resnet20(), str(SHARED / "pretrained" / "resnet20-cifar10-fp.pth"))
    method = METHODS.get(spec["method"])(**spec["options"])
    method.prepare(model, {"keep_first": True, "keep_last": True})
    method.build(model, OptimConfig(name="adam", lr=1e-3))
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    model.train()

    def batches():
        epoch = 0
        while True:
            yield from train.epoch(epoch)
            epoch += 1

    stream = batches()
    for _ in range(spec["warmup"]):
        x, y = next(stream)
        method.train_step(model, x, y, F.cross_entropy)
    times = []
    for _ in range(spec["steps"]):
        x, y = next(stream)
        t0 = time.perf_counter()
        method.train_step(model, x, y, F.cross_entropy)
        times.append(time.perf_counter() - t0)
    times.sort()
    sec_step = times[len(times) // 2]  # median: robust to other jobs on the 2 cores
    out = {"sec_per_step": sec_step, "sec_per_epoch": sec_step * STEPS_PER_EPOCH,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "setup_rss_mb": base_rss}
    if spec.get("accuracy_epochs"):
        out.update(train_for_accuracy(spec))
    return out


def train_for_accuracy(spec: dict) -> dict:
    """Fresh run of ``accuracy_epochs`` full epochs (cosine lr); final test accuracy."""
    import math

    import torch
    import torch.nn.functional as F

    from bnnopt.models import load_pretrained, resnet20
    from bnnopt.registry import METHODS
    from bnnopt.train.data_setup import load_split_loaders
    from bnnopt.train.method import OptimConfig

    torch.manual_seed(spec["seed"])
    train, test, _ = load_split_loaders("cifar10", root=str(SHARED / "data"),
                                        batch_size=128, seed=spec["seed"])
    model = load_pretrained(resnet20(), str(SHARED / "pretrained" / "resnet20-cifar10-fp.pth"))
    method = METHODS.get(spec["method"])(**spec["options"])
    method.prepare(model, {"keep_first": True, "keep_last": True})
    method.build(model, OptimConfig(name="adam", lr=1e-3))
    epochs, losses = spec["accuracy_epochs"], []
    for epoch in range(epochs):
        method.set_lr(1e-3 * 0.5 * (1 + math.cos(math.pi * epoch / epochs)))
        model.train()
        total = 0.0
        for n, (x, y) in enumerate(train.epoch(epoch), start=1):
            total += float(method.train_step(model, x, y, F.cross_entropy).loss)
        losses.append(total / n)
    model.eval()
    correct = count = 0
    with torch.no_grad():
        for x, y in test.epoch(0):
            correct += int((model(x).argmax(1) == y).sum())
            count += y.numel()
    return {"accuracy": 100.0 * correct / count, "train_loss": losses}


# -- driver ------------------------------------------------------------------------------
def launch(spec: dict, timeout: float) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    try:
        proc = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fsg_options(layout: str, expand: int, history: int, **extra) -> dict:
    return {"layout": layout, "expand": expand, "history": history, **extra}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, default=6, help="timed steps per configuration")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (>= 2)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--expand", type=int, default=1, help="FSG Mamba expand of the methods table")
    p.add_argument("--history", type=int, default=6, help="FSG history l of the methods table")
    p.add_argument("--paper", action="store_true", help="also FSG at the paper's expand 100")
    p.add_argument("--grid", action="store_true", help="expand x history table (per-weight)")
    p.add_argument("--grid-expand", default="1,2,4,16")
    p.add_argument("--grid-history", default="1,3,6")
    p.add_argument("--accuracy-epochs", type=int, default=0,
                   help="also train E epochs per grid row and report test accuracy")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per configuration")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "metagrad.json"))
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return 0
    if not (SHARED / "data").is_dir():
        print(f"shared data not found at {SHARED.resolve()}", file=sys.stderr)
        return 1
    base = {"steps": args.steps, "warmup": max(args.warmup, 2), "threads": args.threads,
            "seed": args.seed}
    rows = [("ste", "ste", {}), ("fcgrad", "fcgrad", {}), ("lstmfc", "lstmfc", {})]
    for layout in ("per-weight", "flat"):
        rows.append((f"fsg {layout} e{args.expand} l{args.history}", "fsg",
                     fsg_options(layout, args.expand, args.history)))
    if args.paper:
        for layout in ("per-weight", "flat"):
            rows.append((f"fsg {layout} e100 l6 (paper)", "fsg", fsg_options(layout, 100, 6)))
    result = {"protocol": "cifar10-subset (ResNet-20, 5,085 images, batch 128, adam)",
              "steps_per_epoch": STEPS_PER_EPOCH, "settings": vars(args), "methods": [],
              "grid": []}
    print(f"{'method':38s} {'s/epoch':>9s} {'x STE':>7s} {'peak MB':>8s}")
    ste = None
    for label, method, options in rows:
        r = launch({**base, "method": method, "options": options}, args.timeout)
        if method == "ste" and "sec_per_epoch" in r:
            ste = r["sec_per_epoch"]
        r.update(label=label, method=method, options=options)
        if ste and "sec_per_epoch" in r:
            r["ratio_to_ste"] = r["sec_per_epoch"] / ste
        result["methods"].append(r)
        _print_row(label, r)
        _write(args.out, result)
    if args.grid:
        print(f"\n{'expand x history (per-weight)':38s} {'s/epoch':>9s} {'x STE':>7s} "
              f"{'peak MB':>8s} {'acc %':>6s}")
        for expand in map(int, args.grid_expand.split(",")):
            for history in map(int, args.grid_history.split(",")):
                spec = {**base, "method": "fsg",
                        "options": fsg_options("per-weight", expand, history),
                        "accuracy_epochs": args.accuracy_epochs}
                r = launch(spec, args.timeout)
                r.update(label=f"e{expand} l{history}", expand=expand, history=history)
                if ste and "sec_per_epoch" in r:
                    r["ratio_to_ste"] = r["sec_per_epoch"] / ste
                result["grid"].append(r)
                _print_row(r["label"], r)
                _write(args.out, result)
    print(f"\nwrote {args.out}")
    return 0


def _print_row(label: str, r: dict) -> None:
    if "error" in r:
        print(f"{label:38s} {r['error']}")
        return
    ratio = f"{r['ratio_to_ste']:.2f}" if "ratio_to_ste" in r else "-"
    acc = f" {r['accuracy']:6.2f}" if "accuracy" in r else ""
    print(f"{label:38s} {r['sec_per_epoch']:9.1f} {ratio:>7s} {r['peak_rss_mb']:8.0f}{acc}",
          flush=True)


def _write(path: str, result: dict) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(out)


if __name__ == "__main__":
    sys.exit(main())
