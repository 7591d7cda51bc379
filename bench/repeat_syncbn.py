"""Repeat a 2-process ``--sync-bn`` training under torchrun and count failed exits.

    python bench/repeat_syncbn.py [--runs 20] [--nproc 2] [--epochs 15]

Each repetition is::

    torchrun --standalone --nproc-per-node 2 -m bnnopt train --protocol digits \\
        --method ste --batch-size 64 --sync-bn --device cpu --out TMP/run-i

A repetition passes when torchrun exits 0, the run directory holds summary.json,
and no rank printed a C++ abort (``terminate called``). Too slow for the test
suite (about 10 s per repetition on two free cores); prints one line per
repetition and a final count, exit status 1 if any failed.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=None,
                        help="override the protocol's 15 epochs (fewer: more exits per minute)")
    args = parser.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
    failures = 0
    with tempfile.TemporaryDirectory(prefix="bnnopt-syncbn-") as tmp:
        for i in range(args.runs):
            out = Path(tmp) / f"run-{i}"
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   f"--nproc-per-node={args.nproc}", "-m", "bnnopt", "train",
                   "--protocol", "digits", "--method", "ste", "--batch-size", "64",
                   "--sync-bn", "--device", "cpu", "--out", str(out)]
            if args.epochs is not None:
                cmd += ["--epochs", str(args.epochs)]
            start = time.perf_counter()
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
            seconds = time.perf_counter() - start
            text = proc.stdout + proc.stderr
            ok = (proc.returncode == 0 and (out / "summary.json").is_file()
                  and "terminate called" not in text)
            failures += not ok
            print(f"run {i + 1:>2}/{args.runs}: exit {proc.returncode}, "
                  f"{'ok' if ok else 'FAILED'} ({seconds:.1f} s)", flush=True)
            if not ok:
                print("  " + "\n  ".join(text.strip().splitlines()[-15:]), flush=True)
    print(f"{failures} failure(s) in {args.runs} runs")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
