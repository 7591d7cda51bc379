"""Time of the learned-gradient meta step per process at 1 and P processes (split meta work).

For each method (default fcgrad, fsg) and process count (default 1, 2; one CPU thread
each) this launches ``torchrun --standalone --nproc-per-node P`` on itself. Every
process builds the protocol's model (default cifar10-subset: ResNet-20, DoReFa 1-bit
weights, the method's own policy), wraps it in DistributedDataParallel (P > 1), and
trains ``--steps`` steps of the public optimizer (``bnnopt.FSG`` / ``FCGrad`` /
``MultiFC`` / ``LSTMFC`` over Adam, lr 1e-3) on a synthetic global batch of
``--batch-size`` images (each process takes its contiguous B/P). It times, with
``time.perf_counter``, the method's two meta phases per step::

    begin_step   generate (Δ, G) for the process's share (all weights at P = 1),
                 all-gather them, install the look-ahead
    finish_step  Ŵ, all-reduce g, ∂L/∂Δ recomputed from g through the weight quantizer
                 on the share's layers, meta backward on the share, all-reduce (sum) of
                 ∂L/∂φ, meta-optimizer and base optimizer steps, HGS push

and the whole step, and these parts of the two phases (seconds per step, summed over
calls): ``w_hat`` (Ŵ = A(W̃)), ``record`` (the HGS push), ``outer_vjp`` (∂L/∂Δ from g),
``meta_backward``, ``meta_opt`` (the meta-optimizers' steps), ``comm_gather`` (Δ and G),
``comm_average`` (g; with the meta-gradients when unsplit) and ``comm_meta`` (the sum of
the meta-gradients under the split). A communication part includes the wait for the
slower process. Under P > 1 a barrier (not timed) precedes each phase, so a
phase's time is its own work and communication, not the wait for a slower peer's
forward. The meta time is begin_step + finish_step less the base optimizer's step
(timed too; not meta work, the same at every P); ``generate`` is the meta-nets'
forward alone (``generate_share`` under the split). The first step (a plain STE step,
no meta-nets) and ``--warmup`` more are excluded; the median over the remaining steps
is reported for the slowest process, and the ratio meta(P) / meta(1) (0.5 is a perfect
split at P = 2), in wall time and in the process's CPU time (``time.process_time``,
which a machine shared with other jobs inflates less than wall time). ``--no-split`` runs
the unsplit path for comparison (every process does all the meta work).

    PYTHONPATH=src python bench/profile_meta_split.py                 # bench/results/meta_split.json
    PYTHONPATH=src python bench/profile_meta_split.py --methods fsg --procs 1,2,4 --steps 6
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# parts of the two meta phases, each timed on its own (summed when called more than once a step)
PARTS = ("w_hat", "record", "outer_vjp", "meta_backward", "meta_opt", "comm_gather",
         "comm_average", "comm_meta")


def worker(args) -> None:
    """One process of the torchrun job: train, time the phases, write OUT/rank<r>.json."""
    import torch
    import torch.nn.functional as F

    import bnnopt
    from bnnopt.experiments.protocols import protocol_config
    from bnnopt.train.checkpoint import build_model
    from bnnopt.train.config import RunConfig

    torch.set_num_threads(1)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = 0
    if world > 1:
        torch.distributed.init_process_group("gloo")
        rank = torch.distributed.get_rank()
    cfg = RunConfig().update(protocol_config(args.protocol)).update({"method": args.method,
                                                                      "init": None})
    info = {"num_classes": 10, "in_channels": 3, "image_size": [32, 32]}
    torch.manual_seed(0)
    model, method = build_model(cfg, info)
    method.prepare(model, dict(cfg.policy))
    net = model if world == 1 else torch.nn.parallel.DistributedDataParallel(model)
    classes = {"fsg": bnnopt.FSG, "fcgrad": bnnopt.FCGrad, "multifc": bnnopt.MultiFC,
               "lstmfc": bnnopt.LSTMFC}
    opt = classes[args.method](net, torch.optim.Adam(model.parameters(), lr=1e-3))
    opt.method.meta_split = not args.no_split
    names = ("begin_step", "finish_step", "step", "base_step", "generate") + PARTS
    times: dict[str, list[float]] = {k: [] for k in names}
    times.update({f"{k}_cpu": [] for k in names})

    current: dict[str, float] = {}  # this step's seconds per timed name (summed over calls)

    def timed(name, fn, barrier=False):
        def run(*a, **kw):
            if barrier and world > 1:
                torch.distributed.barrier()
            start, cpu = time.perf_counter(), time.process_time()
            out = fn(*a, **kw)
            current[name] = current.get(name, 0.0) + time.perf_counter() - start
            current[f"{name}_cpu"] = current.get(f"{name}_cpu", 0.0) + time.process_time() - cpu
            return out
        return run

    meth = opt.method
    meth.begin_step = timed("begin_step", meth.begin_step, barrier=True)
    meth.finish_step = timed("finish_step", meth.finish_step, barrier=True)
    # the parts of the two phases (module docstring); each a wrapper around the call
    meth.end_lookahead = timed("w_hat", meth.end_lookahead)
    meth.record = timed("record", meth.record)
    meth._lookahead_gradient = timed("outer_vjp", meth._lookahead_gradient)
    meth._sum_meta_gradients = timed("comm_meta", meth._sum_meta_gradients)
    for meta_opt in meth.meta_optimizers.values():
        meta_opt.step = timed("meta_opt", meta_opt.step)
    if world > 1:
        import bnnopt.methods.learned.base as learned_base

        learned_base.all_gather_rows = timed("comm_gather", learned_base.all_gather_rows)
        if meth.dist is not None:
            meth.dist.average_ = timed("comm_average", meth.dist.average_)
    plain_backward = torch.autograd.backward

    def backward(tensors, *a, **kw):  # only the meta backward of finish_step is timed
        inner = tensors if isinstance(tensors, (list, tuple)) else [tensors]
        if inner and not any(t.grad_fn is not None and t.dim() == 0 for t in inner):
            return timed("meta_backward", plain_backward)(tensors, *a, **kw)
        return plain_backward(tensors, *a, **kw)
    torch.autograd.backward = backward
    if meth.split_active():
        meth.generate_share = timed("generate", meth.generate_share)
    else:
        meth.generate = timed("generate", meth.generate)
    opt.base.step = timed("base_step", opt.base.step)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(args.batch_size, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (args.batch_size,), generator=g)
    lo, hi = rank * args.batch_size // world, (rank + 1) * args.batch_size // world
    xs, ys = x[lo:hi], y[lo:hi]
    model.train()
    for _ in range(args.steps + args.warmup + 1):
        def closure():
            opt.zero_grad()
            loss = F.cross_entropy(net(xs), ys)
            loss.backward()
            return loss
        current.clear()
        start, cpu = time.perf_counter(), time.process_time()
        opt.step(closure)
        current["step"] = time.perf_counter() - start
        current["step_cpu"] = time.process_time() - cpu
        for name in times:
            times[name].append(current.get(name, 0.0))
    kept = {k: v[1 + args.warmup:] for k, v in times.items()}  # step 0 has no meta-nets
    split = bool(opt.method.split_active())
    weights = sum(layer.weight.numel() for _, layer in opt.method.layers)
    Path(args.worker_out, f"rank{rank}.json").write_text(json.dumps(
        {"rank": rank, "world": world, "split": split, "quantized_weights": weights,
         "seconds": kept}))
    if world > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def launch(method: str, procs: int, args) -> list[dict]:
    """Run the worker under torchrun with ``procs`` processes; their JSON records."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={procs}", str(Path(__file__).resolve()), "--worker-out", tmp,
               "--method", method, "--protocol", args.protocol, "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--batch-size", str(args.batch_size)]
        if args.no_split:
            cmd.append("--no-split")
        env = dict(os.environ, OMP_NUM_THREADS="1",
                   PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"{method} x{procs} failed:\n{proc.stderr[-3000:]}")
        return [json.loads(Path(tmp, f"rank{r}.json").read_text()) for r in range(procs)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--methods", default="fcgrad,fsg")
    p.add_argument("--procs", default="1,2")
    p.add_argument("--protocol", default="cifar10-subset")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=4, help="timed meta steps")
    p.add_argument("--warmup", type=int, default=1, help="meta steps run before timing")
    p.add_argument("--no-split", action="store_true", help="the unsplit meta work")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "meta_split.json"))
    p.add_argument("--method", help=argparse.SUPPRESS)
    p.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker_out:
        return worker(args)
    procs = [int(n) for n in args.procs.split(",") if n]
    if args.batch_size % max(procs):
        raise SystemExit(f"--batch-size {args.batch_size} must divide by every process count {procs}")
    result = {"protocol": args.protocol, "batch_size_global": args.batch_size,
              "steps": args.steps, "threads_per_process": 1, "cpu_count": os.cpu_count(),
              "split": not args.no_split, "methods": {}}
    print(f"{'method':<8}{'P':>3}{'split':>7}{'begin_s':>10}{'finish_s':>10}{'base_s':>9}"
          f"{'gen_s':>9}{'meta_s':>9}{'step_s':>9}{'meta/meta(1)':>14}{'meta_cpu_s':>12}"
          f"{'cpu/cpu(1)':>12}   (median per step, slowest process)")
    for method in [m for m in args.methods.split(",") if m]:
        rows, base, base_cpu = {}, None, None
        for n in procs:
            ranks = launch(method, n, args)
            for r in ranks:
                sec = r["seconds"]
                for cpu in ("", "_cpu"):
                    sec["meta" + cpu] = [b + f - o for b, f, o in zip(
                        sec["begin_step" + cpu], sec["finish_step" + cpu], sec["base_step" + cpu])]
            med = {k: max(statistics.median(r["seconds"][k]) for r in ranks)
                   for k in r["seconds"]}
            base = med["meta"] if base is None else base
            base_cpu = med["meta_cpu"] if base_cpu is None else base_cpu
            rows[str(n)] = {"split": ranks[0]["split"], "median_seconds": med,
                            "meta_ratio_vs_first": med["meta"] / base,
                            "meta_cpu_ratio_vs_first": med["meta_cpu"] / base_cpu,
                            "quantized_weights": ranks[0]["quantized_weights"],
                            "per_rank": ranks}
            print(f"{method:<8}{n:>3}{str(ranks[0]['split']):>7}{med['begin_step']:10.4f}"
                  f"{med['finish_step']:10.4f}{med['base_step']:9.4f}{med['generate']:9.4f}"
                  f"{med['meta']:9.4f}{med['step']:9.4f}"
                  f"{med['meta'] / base:14.2f}{med['meta_cpu']:12.4f}"
                  f"{med['meta_cpu'] / base_cpu:12.2f}", flush=True)
        result["methods"][method] = rows
        print("  parts (median s per step, slowest process): "
              + "  ".join(f"P={n}: " + ", ".join(f"{k} {rows[n]['median_seconds'][k]:.4f}"
                                               for k in PARTS) for n in rows), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
