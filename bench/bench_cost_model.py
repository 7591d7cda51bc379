"""The cost model of docs/cost-model.md against measured step times, and its speed-ups.

For each model (CIFAR-sized: 32x32 images, 10 classes; ResNet-18 with the CIFAR
stem) the script counts the task network's multiply-accumulates per image (forward
hooks on every conv and linear layer: output elements x weight[0].numel()) and the
quantized weight count N, then predicts each method's step time relative to STE's
from the formulas of docs/cost-model.md (all in MACs, training = 3 x forward):

    task step        3 B F                     F: forward MACs per image
    learned methods  3 B F + 3 N m_meta        m_meta: forward MACs per weight (below)
    laq              3 B F                     (D, alpha: O(N), not MACs)
    blaq             6 B F                     (two forward/backward passes)

and measures the same ratio: median seconds per step of each method over ``--rounds``
steps taken round-robin in ONE process (after ``--warmup`` untimed steps; a learned
method's first step is STE's), on random images, so foreign load on the machine
hits every method alike. From the measured times (T_task = STE's step, T_meta =
method - STE) it predicts the speed-up at P processes, with the meta work repeated
on every process (what bnnopt does) and split across them::

    S_repeat(P) = (T_task + T_meta) / (T_task / P + T_meta + T_comm(P, V))
    S_split(P)  = (T_task + T_meta) / ((T_task + T_meta) / P + T_comm(P, V + N))
    T_comm(P, V) = 2 (P - 1) / P x 4 V bytes / bandwidth      (ring all-reduce, float32)

V: values all-reduced per step (parameters, quantized weights, meta-net parameters);
splitting adds an all-gather of Δ and G (2N values received per process, the volume of
an all-reduce of N, hence V + N). ``--memory`` also runs
STE, FSG and FSG with ``meta_chunk`` (2^20 and 2^18 weights per chunk: the meta-nets'
activations recomputed chunk by chunk in the backward, one more meta forward) on
ResNet-18 in fresh processes and reports their peak resident memory
(``resource.getrusage`` maxrss: torch allocations included, unlike tracemalloc;
measured before any model is built here, since a child's maxrss starts at its parent's).

    PYTHONPATH=src python bench/bench_cost_model.py --rounds 3 --memory
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: label -> (registered method, options); "fsg-paper": FSG at the paper's sizes (flat layout)
METHOD_OPTIONS = {"ste": ("ste", {}), "fcgrad": ("fcgrad", {}), "multifc": ("multifc", {}),
                  "lstmfc": ("lstmfc", {}), "fsg": ("fsg", {}),
                  "fsg-paper": ("fsg", {"preset": "paper"}), "laq": ("laq", {}),
                  "blaq": ("blaq", {}),
                  "fsg-chunk1m": ("fsg", {"meta_chunk": 1 << 20}),
                  "fsg-chunk256k": ("fsg", {"meta_chunk": 1 << 18})}


# -- the model ----------------------------------------------------------------------------
def mamba_forward_last_macs(L: int, E: int, d: int, n: int, k: int, r: int) -> float:
    """MACs per sequence of Mamba.forward_last over L tokens (per-weight layout)."""
    per_token = E * (d + min(k, L) + 2 * r + n + 2 * n)  # in_proj x, conv, x_proj dt+B, dt_proj, scan
    return L * per_token + E * (d + 2 * n + d)           # z, C at the last token, y.C, out_proj


def mamba_forward_macs_per_token(E: int, d: int, n: int, k: int, r: int) -> float:
    """MACs per token of Mamba.forward (flat layout: every token's output is computed)."""
    return E * (2 * d + k + r + 2 * n + r + 3 * n + 1 + d)


def meta_macs_per_weight(method: str, opts: dict) -> float:
    """Forward MACs per quantized weight of a learned method's meta-nets (defaults below)."""
    h = opts.get("hidden", 100)
    collapsed = opts.get("nonlinear", "none") == "none"  # LinearStack evaluates W_d...W_1 x
    if method == "fcgrad":
        return 1 if collapsed else 2 * h
    if method == "multifc":
        depth = opts.get("depth", 3)
        return 1 if collapsed else 2 * h + (depth - 2) * h * h
    if method == "lstmfc":
        return 4 * h * (h + 1) + h
    if method == "fsg":
        fast = 1  # product form, activation-free stack: collapsed
        l, E = opts.get("history", 6), opts.get("expand", 1) * opts.get("d_model", 1)
        n, k, d = opts.get("d_state", 4), opts.get("d_conv", 8), opts.get("d_model", 1)
        r = math.ceil(d / 16)
        if opts.get("layout", "per-weight") == "per-weight":
            return fast + mamba_forward_last_macs(l + 1, E, d, n, k, r)
        return fast + l * mamba_forward_macs_per_token(E, d, n, k, r)
    return 0.0


def predicted_ratio(method: str, opts: dict, batch: int, fwd_per_image: float, n_q: int) -> float:
    task = 3 * batch * fwd_per_image
    if method == "blaq":
        return 2.0
    passes = 4 if opts.get("meta_chunk") else 3  # chunks: the forward again in the backward
    return (task + passes * n_q * meta_macs_per_weight(method, opts)) / task


def count_task(model, image: int) -> tuple[float, int, int]:
    """(forward MACs per image, quantized weights N, all parameters)."""
    import torch

    from bnnopt.nn import quantized_layers

    macs = [0.0]

    def hook(module, _inputs, out):
        macs[0] += out.numel() * module.weight[0].numel()

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if ("Conv" in type(m).__name__ or "Linear" in type(m).__name__)
               and getattr(m, "weight", None) is not None and m.weight.dim() in (2, 4)]
    was = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, image, image))
    model.train(was)
    for h in handles:
        h.remove()
    n_q = sum(layer.weight.numel() for _, layer in quantized_layers(model))
    return macs[0], n_q, sum(p.numel() for p in model.parameters())


def make_model(name: str):
    from bnnopt import models

    if name == "resnet18":
        return models.resnet18(num_classes=10, input_size=32, small_input=True)
    return getattr(models, name)()


def build(model_name: str, method: str, seed: int = 0):
    import torch

    from bnnopt.methods.base import OptimConfig
    from bnnopt.registry import METHODS

    torch.manual_seed(seed)
    model = make_model(model_name)
    registered, options = METHOD_OPTIONS[method]
    m = METHODS.get(registered)(**options)
    m.prepare(model, {"keep_first": True, "keep_last": True})
    m.build(model, OptimConfig(name="adam", lr=1e-3))
    model.train()
    return model, m


def step(model, method, batch: int, image: int, gen) -> float:
    import torch
    import torch.nn.functional as F

    x = torch.randn(batch, 3, image, image, generator=gen)
    y = torch.randint(0, 10, (batch,), generator=gen)
    t0 = time.perf_counter()
    method.train_step(model, x, y, F.cross_entropy)
    return time.perf_counter() - t0


def measure(model_name: str, methods: list[str], batch: int, rounds: int, warmup: int) -> dict:
    import torch

    built = {m: build(model_name, m) for m in methods}
    gen = torch.Generator().manual_seed(1)
    times = {m: [] for m in methods}
    for i in range(warmup + rounds):
        for m, (model, method) in built.items():
            t = step(model, method, batch, 32, gen)
            if i >= warmup:
                times[m].append(t)
    meta = {m: sum(q.numel() for q in getattr(method, "meta_modules", torch.nn.ModuleDict()).parameters())
            for m, (_, method) in built.items()}
    return {m: sorted(t)[len(t) // 2] for m, t in times.items()}, meta


def comm_seconds(P: int, values: float, bandwidth: float) -> float:
    return 0.0 if P == 1 else 2 * (P - 1) / P * 4 * values / bandwidth


def speedups(t_task: float, t_meta: float, values: float, n_q: int, bandwidth: float) -> dict:
    out = {}
    for P in (1, 2, 8, 64):
        total = t_task + t_meta
        rep = total / (t_task / P + t_meta + comm_seconds(P, values, bandwidth))
        split = total / (total / P + comm_seconds(P, values + (n_q if t_meta > 0 else 0), bandwidth))
        out[P] = {"repeat": rep, "split": split}
    return out


def peak_rss(model_name: str, method: str, batch: int, steps: int) -> dict:
    """Peak resident memory (MiB) of a fresh process building and stepping one method."""
    code = ("import json, resource, sys; start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss"
            " / 1024; import torch; sys.path.insert(0, %r); import bench_cost_model as b;"
            "torch.set_num_threads(1); model, m = b.build(%r, %r);"
            "setup = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024;"
            "g = torch.Generator().manual_seed(1);"
            "[b.step(model, m, %d, 32, g) for _ in range(%d)];"
            "print(json.dumps({'start_mib': start, 'setup_mib': setup, "
            "'peak_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))"
            % (str(Path(__file__).parent), model_name, method, batch, steps))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=1800)
    if proc.returncode:
        return {"error": proc.stderr.strip().splitlines()[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet20,resnet56,resnet18")
    ap.add_argument("--methods", default="ste,fcgrad,multifc,lstmfc,fsg,fsg-paper,laq,blaq")
    ap.add_argument("--skip", default="resnet20:fsg-paper,resnet56:fsg-paper,resnet18:fsg-paper,"
                    "resnet56:lstmfc,resnet18:lstmfc",
                    help="model:method pairs predicted only (too slow or large to step here)")
    ap.add_argument("--batch", default="resnet20:32,resnet56:32,resnet18:8")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--bandwidth-gbs", type=float, default=10.0,
                    help="all-reduce bus bandwidth for the speed-up prediction (GB/s)")
    ap.add_argument("--memory", action="store_true",
                    help="peak RSS of --memory-methods on resnet18, batch 8, 3 steps")
    ap.add_argument("--memory-methods", default="ste,fsg,fsg-chunk1m,fsg-chunk256k")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "cost_model.json"))
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from bnnopt.registry import METHODS

    skip = set(args.skip.split(",")) if args.skip else set()
    batches = dict(kv.split(":") for kv in args.batch.split(","))
    result = {"threads": args.threads, "rounds": args.rounds, "warmup": args.warmup,
              "bandwidth_gbs": args.bandwidth_gbs, "models": {}}
    bw = args.bandwidth_gbs * 1e9
    if args.memory:  # first, while this process is small: a child's maxrss starts at its parent's
        result["memory"] = {m: peak_rss("resnet18", m, 8, 3)
                            for m in args.memory_methods.split(",")}
        print("peak RSS resnet18 batch 8 (MiB):", json.dumps(result["memory"]))
    for name in filter(None, args.models.split(",")):
        batch = int(batches.get(name, 32))
        fwd, n_q, n_params = count_task(make_model_prepared(name), 32)
        methods = args.methods.split(",")
        timed = [m for m in methods if f"{name}:{m}" not in skip]
        times, meta_params = measure(name, timed, batch, args.rounds, args.warmup)
        rows = {}
        for m in methods:
            registered, options = METHOD_OPTIONS[m]
            opts = METHODS.get(registered)(**options).resolved_options() if m != "ste" else {}
            pred = predicted_ratio(registered, opts, batch, fwd, n_q)
            row = {"predicted_ratio": pred,
                   "meta_macs_per_weight": meta_macs_per_weight(registered, opts)}
            if m in times:
                row["sec_per_step"] = times[m]
                row["measured_ratio"] = times[m] / times["ste"]
                learned = registered not in ("ste", "laq", "blaq")
                t_meta = max(times[m] - times["ste"], 0.0) if learned else 0.0
                t_task = times[m] - t_meta
                values = n_params + (n_q + meta_params[m] if t_meta else 0)
                row["speedup"] = speedups(t_task, t_meta, values, n_q, bw)
            rows[m] = row
        result["models"][name] = {"batch": batch, "fwd_macs_per_image": fwd, "quantized_weights": n_q,
                                  "parameters": n_params, "methods": rows}
        _print_model(name, result["models"][name])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


def make_model_prepared(name: str):
    """The model with STE's binarization applied (the quantized layers define N)."""
    return build(name, "ste")[0]


def _print_model(name: str, r: dict) -> None:
    print(f"\n{name}: batch {r['batch']}, {r['fwd_macs_per_image'] / 1e6:.1f} MMAC/image forward, "
          f"N = {r['quantized_weights']:,} quantized weights")
    print(f"{'method':8} {'meta MAC/w':>10} {'pred':>6} {'meas':>6}  speed-up P=2/8/64 repeat | split")
    for m, row in r["methods"].items():
        meas = f"{row['measured_ratio']:6.2f}" if "measured_ratio" in row else "     -"
        sp = row.get("speedup")
        s = ("  " + "/".join(f"{sp[P]['repeat']:.1f}" for P in (2, 8, 64)) + " | "
             + "/".join(f"{sp[P]['split']:.1f}" for P in (2, 8, 64))) if sp else ""
        print(f"{m:8} {row['meta_macs_per_weight']:10.0f} {row['predicted_ratio']:6.2f} {meas}{s}")


if __name__ == "__main__":
    sys.exit(main())
