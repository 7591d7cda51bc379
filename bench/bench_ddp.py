"""Training throughput of 1 vs N processes under torchrun, and what each family sends.

For each method (default ste, blaq, fsg) and each process count (default 1 and 2,
one CPU thread each) this runs, interleaved round-robin within every repeat so that
load drift hits all arms alike::

    torchrun --standalone --nproc-per-node P -m bnnopt train --protocol cifar10-subset \\
        --method M --epochs 1 --threads 1 --train-limit N --test-limit T --out <tmp>

and reads the epoch's training seconds from metrics.jsonl (evaluation excluded):
images/s = training images / seconds. The ratio images/s(P) / images/s(1) is taken
within each repeat, then the median over repeats. ``--batch-size`` is the global
batch, so every process count trains exactly the same optimisation.

It also states the communication per step of each family for the protocol's model
(float32 values all-reduced per optimisation step; gloo/NCCL move about twice that
in a ring all-reduce):

    estimator        DDP all-reduce of every parameter gradient            P
    loss-aware       LAQ: P; BLAQ: both passes go through DDP              2 P
    learned gradient DDP's P + the stored g = dL/dQ of the quantized
      (unsplit)      weights (Q) + the meta-nets' (and LRE's) gradients M  P + Q + M
    learned gradient DDP's P + g and dL/dDelta (2 Q) + the meta-nets'
      (split, the    partial gradients, summed, and one flag per meta-net
      default)       tensor (M + m); all-gathered: Delta and G, 2 Q/n sent
                     and 2 Q received per process (n processes)            P + 2 Q + M + m
                                                                           (+ 2 Q gathered)
    every family     + 1 scalar (the step's loss, for the non-finite check)

(the split: each process runs the meta-nets on its contiguous share of the Q weights,
bnnopt.methods.learned.base; LSTMFC also gathers its 2H·Q hidden state at a checkpoint.)

    PYTHONPATH=src python bench/bench_ddp.py                   # writes bench/results/ddp.json
    PYTHONPATH=src python bench/bench_ddp.py --procs 1,2 --repeats 3 --train-limit 2048
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def communication(method: str, protocol: str) -> dict[str, int]:
    """Values all-reduced per step for ``method`` on ``protocol``'s model (counted, not timed)."""
    import torch

    from bnnopt.train.checkpoint import build_model
    from bnnopt.train.config import RunConfig
    from bnnopt.experiments.protocols import protocol_config

    cfg = RunConfig().update(protocol_config(protocol)).update({"method": method, "init": None})
    info = {"num_classes": 10, "in_channels": 3, "image_size": [32, 32]}
    model, meth = build_model(cfg, info)
    meth.prepare(model, dict(cfg.policy))
    meth.build(model, cfg.optim_config())
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    out = {"ddp_gradients": params, "loss_scalar": 1}
    if meth.family == "loss-aware":
        out["ddp_gradients"] = params * (2 if method == "blaq" else 1)
    if meth.family == "learned-gradient":
        out["stored_g"] = sum(layer.weight.numel() for _, layer in meth.layers)
        out["meta_gradients"] = sum(p.numel() for p in meth.meta_modules.parameters())
        split = meth.splittable() and meth.meta_split  # the method's default under torchrun
        if split:  # the meta-gradients' sum carries one flag per tensor
            out["meta_reached_flags"] = len(list(meth.meta_modules.parameters()))
    out["total_values"] = sum(out.values())
    if meth.family == "learned-gradient" and split:
        out["all_gathered_values"] = 2 * out["stored_g"]  # Delta and G, not in the total
    out["total_MB_float32"] = round(out["total_values"] * 4 / 2**20, 3)
    del torch
    return out


def run_once(method: str, procs: int, args) -> float:
    """Images per second of one training epoch (evaluation excluded)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={procs}", "-m", "bnnopt", "train", "--protocol", args.protocol,
               "--method", method, "--epochs", "1", "--threads", "1", "--device", "cpu",
               "--train-limit", str(args.train_limit), "--test-limit", str(args.test_limit),
               "--batch-size", str(args.batch_size), "--out", str(out), "--no-progress"]
        env = dict(os.environ, OMP_NUM_THREADS="1",
                   PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"{method} x{procs} failed:\n{proc.stderr[-3000:]}")
        row = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
        return args.train_limit / row["seconds"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--methods", default="ste,blaq,fsg")
    p.add_argument("--procs", default="1,2")
    p.add_argument("--protocol", default="cifar10-subset")
    p.add_argument("--train-limit", type=int, default=1024)
    p.add_argument("--test-limit", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "ddp.json"))
    args = p.parse_args()
    if args.train_limit % args.batch_size:
        raise SystemExit(f"--train-limit {args.train_limit} must be a multiple of --batch-size "
                         f"{args.batch_size} (every process count then trains the same batches)")
    methods = [m for m in args.methods.split(",") if m]
    procs = [int(n) for n in args.procs.split(",")]
    speed: dict[str, dict[int, list[float]]] = {m: {n: [] for n in procs} for m in methods}
    for rep in range(args.repeats):
        for method in methods:
            for n in procs:
                ips = run_once(method, n, args)
                speed[method][n].append(ips)
                print(f"repeat {rep + 1}/{args.repeats}  {method:<6} x{n}: {ips:8.1f} images/s",
                      flush=True)
    result = {"protocol": args.protocol, "train_limit": args.train_limit,
              "batch_size_global": args.batch_size, "repeats": args.repeats,
              "threads_per_process": 1, "cpu_count": os.cpu_count(), "methods": {}}
    print(f"\n{'method':<8}" + "".join(f"{'x' + str(n) + ' img/s':>14}" for n in procs)
          + "".join(f"{'x' + str(n) + '/x1':>10}" for n in procs[1:]) + "   values all-reduced/step")
    for method in methods:
        med = {n: statistics.median(v) for n, v in speed[method].items()}
        ratios = {n: statistics.median(a / b for a, b in zip(speed[method][n], speed[method][procs[0]]))
                  for n in procs[1:]}
        comm = communication(method, args.protocol)
        result["methods"][method] = {"images_per_s": {str(n): v for n, v in speed[method].items()},
                                     "median_images_per_s": {str(n): v for n, v in med.items()},
                                     "speedup_vs_first": {str(n): r for n, r in ratios.items()},
                                     "communication_per_step": comm}
        print(f"{method:<8}" + "".join(f"{med[n]:14.1f}" for n in procs)
              + "".join(f"{ratios[n]:10.2f}" for n in procs[1:])
              + f"   {comm['total_values']:,} ({comm['total_MB_float32']} MB fp32)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
