"""Seconds per training step of BLAQ vs LAQ vs STE, measured in one run (issue 5).

BLAQ evaluates the loss twice per step (the current point and the trial point),
so 2x LAQ's forward+backward is its floor. This script times, on MNIST-shaped
random batches (the data do not change the cost), a small MLP and LeNet-5 with
every layer quantized at 1 bit (``--bits`` for 2/4), for the methods

    ste       DoReFa sign + identity STE, torch.optim.Adam     (the estimator baseline)
    laq       LAQ/LAB (bnnopt.methods.lossaware.LAQ)
    blaq      BLAQ (bnnopt.methods.lossaware.BLAQ, a = 0.6, m = 5), the paper's two passes per step
    blaq_rec  BLAQ with reading="recursive" (Eq. 9-10 over steps), one pass per step

Methods are interleaved round-robin within each repeat (so load drift hits all
of them alike); each repeat times ``--steps`` steps after ``--warmup`` untimed
ones; the reported value is the median over ``--repeats`` of seconds per step.
It also splits each step: ``fwd_bwd`` (one forward+backward of the same model,
timed on its own), ``quantize`` (time inside LossAwareQuantizer.requantize),
and ``other`` = step - n_passes * fwd_bwd - quantize (moment updates, the
trial/backtrack copies, BatchNorm statistics snapshot, Python overhead).

    PYTHONPATH=src python bench/bench_blaq.py                 # writes bench/results/blaq.json
    PYTHONPATH=src python bench/bench_blaq.py --hidden 2048   # the paper's MLP width
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bnnopt.methods.lossaware import LossAwareQuantizer
from bnnopt.registry import METHODS, MODELS
from bnnopt.methods.base import OptimConfig

ROOT = Path(__file__).resolve().parents[1]
ARMS = {"ste": ("ste", {}), "laq": ("laq", {}), "blaq": ("blaq", {"a": 0.6, "m": 5}),
        "blaq_rec": ("blaq", {"a": 0.6, "m": 5, "reading": "recursive"})}
PASSES = {"ste": 1, "laq": 1, "blaq": 2, "blaq_rec": 1}


class _QuantTimer:
    """Accumulates wall time spent in LossAwareQuantizer.requantize (monkeypatched)."""

    def __init__(self):
        self.seconds = 0.0
        self._orig = LossAwareQuantizer.requantize
        timer = self

        def timed(self_q, *args, **kwargs):
            start = time.perf_counter()
            try:
                return timer._orig(self_q, *args, **kwargs)
            finally:
                timer.seconds += time.perf_counter() - start

        LossAwareQuantizer.requantize = timed

    def close(self):
        LossAwareQuantizer.requantize = self._orig


def build(model_name: str, arm: str, bits: int, hidden: int, seed: int):
    torch.manual_seed(seed)
    kwargs = {"hidden": hidden} if model_name == "mlp" else {}
    model = MODELS.get(model_name)(num_classes=10, in_channels=1, input_size=28, **kwargs)
    method, options = ARMS[arm]
    options = dict(options)
    if method != "ste" or bits > 1:
        options["bits"] = bits
    m = METHODS.get(method)(**options)
    m.prepare(model, {"keep_first": False, "keep_last": False})
    m.build(model, OptimConfig(name="adam", lr=1e-3))
    model.train()
    return model, m


def time_steps(model, method, batches, steps: int, timer: _QuantTimer) -> tuple[float, float]:
    timer.seconds = 0.0
    start = time.perf_counter()
    for i in range(steps):
        x, y = batches[i % len(batches)]
        method.train_step(model, x, y, F.cross_entropy)
    total = time.perf_counter() - start
    return total / steps, timer.seconds / steps


def time_fwd_bwd(model, batches, steps: int) -> float:
    start = time.perf_counter()
    for i in range(steps):
        x, y = batches[i % len(batches)]
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
    return (time.perf_counter() - start) / steps


def bench_model(model_name: str, args, timer: _QuantTimer) -> dict:
    gen = torch.Generator().manual_seed(args.seed)
    batches = [(torch.randn(args.batch_size, 1, 28, 28, generator=gen),
                torch.randint(0, 10, (args.batch_size,), generator=gen)) for _ in range(8)]
    runs = {name: build(model_name, name, args.bits, args.hidden, args.seed) for name in ARMS}
    samples = {name: {"step": [], "quantize": [], "fwd_bwd": []} for name in runs}
    for model, method in runs.values():
        time_steps(model, method, batches, args.warmup, timer)
    for _ in range(args.repeats):
        for name, (model, method) in runs.items():
            step, quant = time_steps(model, method, batches, args.steps, timer)
            samples[name]["step"].append(step)
            samples[name]["quantize"].append(quant)
            samples[name]["fwd_bwd"].append(time_fwd_bwd(model, batches, args.steps))
    out = {}
    for name, s in samples.items():
        med = {k: statistics.median(v) for k, v in s.items()}
        med["other"] = med["step"] - PASSES[name] * med["fwd_bwd"] - med["quantize"]
        med["passes"] = PASSES[name]
        out[name] = med
    ratios = {"blaq/laq": out["blaq"]["step"] / out["laq"]["step"],
              "blaq_rec/laq": out["blaq_rec"]["step"] / out["laq"]["step"],
              "blaq/ste": out["blaq"]["step"] / out["ste"]["step"],
              "laq/ste": out["laq"]["step"] / out["ste"]["step"]}
    params = sum(p.numel() for p in runs["laq"][0].parameters())
    return {"model": model_name, "params": params, "methods": out, "ratios": ratios}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="mlp,lenet5,lenet5_alq")
    parser.add_argument("--hidden", type=int, default=512, help="MLP width (paper: 2048)")
    parser.add_argument("--bits", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "blaq.json"))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    timer = _QuantTimer()
    try:
        results = [bench_model(name, args, timer) for name in args.models.split(",")]
    finally:
        timer.close()
    report = {"settings": {**vars(args), "torch_threads": torch.get_num_threads(),
                           "torch": torch.__version__}, "results": results}
    for r in results:
        print(f"\n{r['model']} ({r['params']:,} params, {args.bits} bit, batch {args.batch_size};"
              f" median of {args.repeats} x {args.steps} steps)")
        print(f"{'method':<8} {'ms/step':>8} {'fwd+bwd':>8} {'passes':>6} {'quantize':>9} "
              f"{'other':>7}")
        for name, m in r["methods"].items():
            print(f"{name:<8} {1e3 * m['step']:8.2f} {1e3 * m['fwd_bwd']:8.2f} {m['passes']:6d} "
                  f"{1e3 * m['quantize']:9.2f} {1e3 * m['other']:7.2f}")
        print("ratios: " + ", ".join(f"{k} {v:.2f}x" for k, v in r["ratios"].items()))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(out)
    print(f"\nwrote {out}")
    return report


if __name__ == "__main__":
    main()
