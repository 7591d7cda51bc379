"""Speed (and optionally accuracy) of the learned-gradient methods on cifar10-subset.

Protocol (issue 4; the paper's Table 5 reports FCGrad 1.45x and FSG 4.6x the
time of STE): ResNet-20 from ../shared/pretrained/resnet20-cifar10-fp.pth,
binarized with first conv and last linear kept FP, the 5,085 shared CIFAR-10
training images, batch 128 (40 steps per epoch), Adam lr 1e-3, CPU.

Timing: all configurations of a table are built in ONE process and their
steps are taken round-robin (``--rounds`` timed steps each, after ``--warmup``
untimed ones; the first learned-gradient step is plain STE, so the warm-up
also reaches the meta-step regime); the median seconds per step x 40 gives
seconds per epoch, and ratios to STE come from the same rounds, so load from
other jobs on the machine hits every configuration alike. Peak resident memory
is measured per configuration in a fresh process. With ``--accuracy-epochs E``
STE, FCGrad and the FSG configurations of ``--accuracy-configs`` also train E
full epochs from the checkpoint (cosine lr) and report the test accuracy on the 1,017 shared
test images. Prints tables and writes JSON (default bench/results/metagrad.json).

    PYTHONPATH=src python bench/bench_metagrad.py                  # methods table
    PYTHONPATH=src python bench/bench_metagrad.py --grid           # + expand x history x d_state
    PYTHONPATH=src python bench/bench_metagrad.py --paper          # FSG at paper sizes too
    PYTHONPATH=src python bench/bench_metagrad.py --accuracy-epochs 3   # + short accuracy runs
    PYTHONPATH=src python bench/bench_metagrad.py --quick 1,2 --rounds 3  # STE/FSG/LSTMFC only
    PYTHONPATH=src python bench/bench_metagrad.py --quick 1 --profile 3   # + where the time goes
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


# -- building a configuration ----------------------------------------------------------
def build(spec: dict):
    """(model, method, batch stream) for ``spec`` on cifar10-subset; same batches for all."""
    import torch

    from bnnopt.models import load_pretrained, resnet20
    from bnnopt.registry import METHODS
    from bnnopt.train.data_setup import load_run_loaders
    from bnnopt.methods.base import OptimConfig

    torch.manual_seed(spec["seed"])
    cls = METHODS.get(spec["method"])
    train, _, test, _, meta = load_run_loaders(
        "cifar10", root=str(SHARED / "data"), batch_size=128, seed=spec["seed"],
        meta_fraction=cls.held_out_fraction(spec["options"]))
    model = load_pretrained(resnet20(), str(SHARED / "pretrained" / "resnet20-cifar10-fp.pth"))
    method = cls(**spec["options"])
    method.prepare(model, {"keep_first": True, "keep_last": True})
    method.build(model, OptimConfig(name="adam", lr=1e-3))
    if meta is not None:  # meta_data="heldout": its meta split, as the Trainer hands it over
        method.set_meta_data(meta, model)
    model.train()

    def stream():
        epoch = 0
        while True:
            yield from train.epoch(epoch)
            epoch += 1

    return model, method, stream(), train, test


def timed_step(cfg) -> tuple[float, float]:
    """One training step of a built configuration: (wall seconds, process CPU seconds)."""
    import torch.nn.functional as F

    model, method, stream = cfg[:3]
    x, y = next(stream)
    w0, c0 = time.perf_counter(), time.process_time()
    method.train_step(model, x, y, F.cross_entropy)
    return time.perf_counter() - w0, time.process_time() - c0


def time_interleaved(specs: list[dict], rounds: int, warmup: int, threads: int) -> list[dict]:
    """Median seconds/step of each spec, steps taken round-robin over the specs.

    Interleaving makes the ratios robust to other jobs on the machine: a burst
    of foreign load slows every configuration in the same round alike.
    """
    import torch

    torch.set_num_threads(threads)
    cfgs = [build(spec) for spec in specs]
    for _ in range(warmup):  # the first learned-gradient step is STE: reach the meta regime
        for cfg in cfgs:
            timed_step(cfg)
    walls = [[] for _ in cfgs]
    cpus = [[] for _ in cfgs]
    for _ in range(rounds):
        for i, cfg in enumerate(cfgs):
            wall, cpu = timed_step(cfg)
            walls[i].append(wall)
            cpus[i].append(cpu)
    out = []
    for wall, cpu in zip(walls, cpus):
        med = sorted(wall)[len(wall) // 2]
        out.append({"sec_per_step": med, "sec_per_epoch": med * STEPS_PER_EPOCH,
                    "cpu_sec_per_step": sorted(cpu)[len(cpu) // 2], "steps_timed": len(wall)})
    return out


def peak_memory(spec: dict) -> dict:
    """Peak resident memory (MB) of a fresh process running ``spec`` for a few steps."""
    import torch

    torch.set_num_threads(spec["threads"])
    cfg = build(spec)
    setup = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for _ in range(spec["warmup"] + 1):
        timed_step(cfg)
    return {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "setup_rss_mb": setup}


def train_for_accuracy(spec: dict) -> dict:
    """Fresh run of ``accuracy_epochs`` full epochs (cosine lr); final test accuracy."""
    import math

    import torch
    import torch.nn.functional as F

    torch.set_num_threads(spec["threads"])
    model, method, _, train, test = build(spec)
    epochs, losses = spec["accuracy_epochs"], []
    t0 = time.perf_counter()
    for epoch in range(epochs):
        method.set_lr(1e-3 * 0.5 * (1 + math.cos(math.pi * epoch / epochs)))
        model.train()
        total, n = 0.0, 0
        for x, y in train.epoch(epoch):
            total += float(method.train_step(model, x, y, F.cross_entropy).loss)
            n += 1
        losses.append(total / max(n, 1))
    seconds = time.perf_counter() - t0
    model.eval()
    correct = count = 0
    with torch.no_grad():
        for x, y in test.epoch(0):
            correct += int((model(x).argmax(1) == y).sum())
            count += y.numel()
    return {"accuracy": 100.0 * correct / count, "train_loss": losses,
            "train_seconds": seconds}


# -- driver ------------------------------------------------------------------------------
TASKS = {"timing": lambda job: time_interleaved(job["specs"], job["rounds"], job["warmup"],
                                                job["threads"]),
         "memory": lambda job: peak_memory(job["spec"]),
         "accuracy": lambda job: train_for_accuracy(job["spec"])}


def launch(job: dict, timeout: float):
    """Run one job (timing / memory / accuracy) in a fresh subprocess; its JSON result."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    try:
        proc = subprocess.run([sys.executable, __file__, "--one", json.dumps(job)], env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fsg_spec(base: dict, layout: str, expand=None, history=None, d_state=None) -> dict:
    """FSG spec; sizes left None take the method's defaults (preset "cpu")."""
    options = {"layout": layout, "expand": expand, "history": history, "d_state": d_state}
    return {**base, "method": "fsg", "options": {k: v for k, v in options.items() if v is not None}}


def fsg_label(layout: str, options: dict) -> str:
    from bnnopt.registry import METHODS

    o = METHODS.get("fsg")(**options).options
    return f"fsg {layout} e{o['expand']} l{o['history']} N{o['d_state']}"


def measure(label_specs: list[tuple[str, dict]], args, base: dict, rounds: int,
            memory: bool = True) -> list[dict]:
    """Interleaved timing of all specs in one process, then peak memory of each alone."""
    specs = [spec for _, spec in label_specs]
    timing = launch({"task": "timing", "specs": specs, "rounds": rounds,
                     "warmup": base["warmup"], "threads": base["threads"]},
                    args.timeout * len(specs))
    if isinstance(timing, dict):  # an error for the whole group
        timing = [dict(timing) for _ in specs]
    rows = []
    ste = next((t.get("sec_per_step") for (label, _), t in zip(label_specs, timing)
                if label == "ste"), None)
    for (label, spec), t in zip(label_specs, timing):
        row = {"label": label, "method": spec["method"], "options": spec["options"], **t}
        if ste and "sec_per_step" in t:
            row["ratio_to_ste"] = t["sec_per_step"] / ste
        if memory and "error" not in t:
            row.update(launch({"task": "memory", "spec": spec}, args.timeout))
        rows.append(row)
        _print_row(row)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--rounds", type=int, default=5, help="timed steps per configuration")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (>= 2)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1: on a shared 2-core machine, 2 threads mostly spin)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--expand", type=int, default=None, help="FSG expand (default: the method's)")
    p.add_argument("--history", type=int, default=None, help="FSG history l (default: the method's)")
    p.add_argument("--d-state", type=int, default=None, help="FSG d_state (default: the method's)")
    p.add_argument("--paper", action="store_true",
                   help="also FSG at the paper's expand 100, l 6 (both layouts)")
    p.add_argument("--paper-rounds", type=int, default=1)
    p.add_argument("--grid", action="store_true", help="expand x history table (per-weight)")
    p.add_argument("--grid-expand", default="1,4,16")
    p.add_argument("--grid-history", default="1,3,6")
    p.add_argument("--grid-d-state", default="4,16")
    p.add_argument("--accuracy-epochs", type=int, default=0,
                   help="also train E epochs (STE, FCGrad and FSG configurations) for test accuracy")
    p.add_argument("--accuracy-configs",
                   default="1:6:4,1:6:16,4:6:16,1:1:4,1:3:4,1:6:4:normalize=none:meta_init=paper,"
                           "1:6:4:variant=official",
                   help="FSG expand:history:d_state[:option=value...] trained with "
                        "--accuracy-epochs (comma-separated)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per configuration")
    p.add_argument("--quick", metavar="THREADS", default=None,
                   help="only STE, FSG (default) and LSTMFC, interleaved in this process, once per "
                        "thread count of this comma list (e.g. 1,2); no memory column")
    p.add_argument("--quick-methods", default="ste,fsg,lstmfc,lstmfc:impl=saved",
                   help="--quick: comma list of method specs name[:key=value...] (first: the "
                        "reference the ratios are taken to)")
    p.add_argument("--profile", type=int, default=0, metavar="STEPS",
                   help="--quick: also profile STEPS steps of each method (torch.profiler, "
                        "top operators by self CPU time)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "metagrad.json"))
    args = p.parse_args(argv)
    if args.one:
        job = json.loads(args.one)
        print(json.dumps(TASKS[job["task"]](job)))
        return 0
    if not (SHARED / "data").is_dir():
        print(f"shared data not found at {SHARED.resolve()}", file=sys.stderr)
        return 1
    base = {"warmup": max(args.warmup, 2), "threads": args.threads, "seed": args.seed,
            "options": {}}
    if args.quick:
        return quick(args, base)
    result = {"protocol": "cifar10-subset: ResNet-20 (FP checkpoint, first/last FP), 5,085 "
                          "images, batch 128, Adam lr 1e-3, CPU",
              "steps_per_epoch": STEPS_PER_EPOCH, "settings": vars(args)}
    header = f"{'configuration':34s} {'s/epoch':>8s} {'x STE':>6s} {'cpu s/step':>10s} {'peak MB':>8s}"
    print(header)
    table = [("ste", {**base, "method": "ste"}), ("fcgrad", {**base, "method": "fcgrad"}),
             ("lstmfc", {**base, "method": "lstmfc"}),
             ("lstmfc impl=torch (nn.LSTM)", {**base, "method": "lstmfc",
                                              "options": {"impl": "torch"}})]
    for layout in ("per-weight", "flat"):
        spec = fsg_spec(base, layout, args.expand, args.history, args.d_state)
        table.append((fsg_label(layout, spec["options"]), spec))
    result["methods"] = measure(table, args, base, args.rounds)
    _write(args.out, result)
    if args.paper:
        print("\npaper sizes (timed together with STE)")
        paper = [("ste", {**base, "method": "ste"})]
        paper += [(f"fsg {layout} e100 l6 N16 (paper)", fsg_spec(base, layout, 100, 6, 16))
                  for layout in ("per-weight", "flat")]
        result["paper"] = measure(paper, args, base, args.paper_rounds)
        _write(args.out, result)
    if args.grid:
        print("\nexpand x history x d_state, per-weight layout (timed together with STE)")
        grid = [("ste", {**base, "method": "ste"})]
        for d_state in map(int, args.grid_d_state.split(",")):
            for expand in map(int, args.grid_expand.split(",")):
                for history in map(int, args.grid_history.split(",")):
                    spec = fsg_spec(base, "per-weight", expand, history, d_state)
                    grid.append((fsg_label("per-weight", spec["options"]), spec))
        result["grid"] = measure(grid, args, base, args.rounds, memory=False)
        _write(args.out, result)
    if args.accuracy_epochs:
        print(f"\nfinal test accuracy after {args.accuracy_epochs} epochs (cosine lr)")
        runs = [("ste", {**base, "method": "ste"}), ("fcgrad", {**base, "method": "fcgrad"})]
        for item in args.accuracy_configs.split(","):
            expand, history, d_state, *extra = item.split(":")
            spec = fsg_spec(base, "per-weight", int(expand), int(history), int(d_state))
            spec["options"].update(kv.split("=", 1) for kv in extra)
            label = fsg_label("per-weight", spec["options"])
            runs.append((" ".join([label] + extra), spec))
        result["accuracy"] = []
        for label, spec in runs:
            acc = launch({"task": "accuracy",
                          "spec": {**spec, "accuracy_epochs": args.accuracy_epochs}},
                         args.timeout * args.accuracy_epochs)
            result["accuracy"].append({"label": label, "options": spec["options"], **acc})
            print(f"{label:34s} " + (f"{acc['accuracy']:6.2f} %   final train loss "
                  f"{acc['train_loss'][-1]:.4f}   {acc['train_seconds']:.0f} s"
                  if "accuracy" in acc else acc["error"]), flush=True)
            _write(args.out, result)
    print(f"\nwrote {args.out}")
    return 0


def _spec(text: str) -> tuple[str, dict]:
    name, *parts = text.split(":")
    options = {}
    for part in parts:
        key, value = part.split("=", 1)
        options[key] = int(value) if value.isdigit() else value
    return name, options


def quick(args, base: dict) -> int:
    """--quick: the --quick-methods timed round-robin at each thread count; ratios to the first."""
    result = {"settings": vars(args), "quick": {}}
    labels = [m.strip() for m in args.quick_methods.split(",") if m.strip()]
    for threads in [int(t) for t in args.quick.split(",")]:
        specs = []
        for label in labels:
            name, options = _spec(label)
            specs.append({**base, "threads": threads, "method": name, "options": options})
        rows = time_interleaved(specs, args.rounds, base["warmup"], threads)
        ref = rows[0]["sec_per_step"]
        result["quick"][threads] = {}
        for label, row in zip(labels, rows):
            row["ratio_to_ste"] = row["sec_per_step"] / ref
            result["quick"][threads][label] = row
            print(f"threads {threads} {label:18s} {row['sec_per_step']:8.3f} s/step "
                  f"{row['sec_per_epoch']:8.1f} s/epoch x{row['ratio_to_ste']:.2f}", flush=True)
        _write(args.out, result)
        if args.profile:
            result.setdefault("profile", {})[threads] = profile_steps(specs, args.profile, threads)
            _write(args.out, result)
    print(f"\nwrote {args.out}")
    return 0


def profile_steps(specs: list[dict], steps: int, threads: int) -> dict:
    """Top operators (self CPU ms per step) of ``steps`` steps of each spec, after warm-up."""
    import torch
    from torch.profiler import profile

    torch.set_num_threads(threads)
    out = {}
    for spec in specs:
        cfg = build(spec)
        for _ in range(2):
            timed_step(cfg)
        with profile() as prof:
            for _ in range(steps):
                timed_step(cfg)
        events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:12]
        label = spec["method"] + "".join(f":{k}={v}" for k, v in spec["options"].items())
        out[label] = {e.key: round(e.self_cpu_time_total / 1e3 / steps, 1) for e in events}
        print(f"\nprofile {label} ({threads} thread(s)), self CPU ms per step:")
        for name, ms in out[label].items():
            print(f"  {ms:9.1f}  {name}")
    return out


def _print_row(r: dict) -> None:
    if "error" in r:
        print(f"{r['label']:34s} {r['error']}", flush=True)
        return
    ratio = f"{r['ratio_to_ste']:.2f}" if "ratio_to_ste" in r else "-"
    mem = f"{r['peak_rss_mb']:8.0f}" if "peak_rss_mb" in r else f"{'-':>8s}"
    print(f"{r['label']:34s} {r['sec_per_epoch']:8.1f} {ratio:>6s} "
          f"{r['cpu_sec_per_step']:10.2f} {mem}", flush=True)


def _write(path: str, result: dict) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(out)


if __name__ == "__main__":
    sys.exit(main())
