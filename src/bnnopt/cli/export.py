"""``bnnopt export``: ship a run's trained network as packed bits, ONNX or QONNX.

    bnnopt export RUN_DIR|CHECKPOINT|FILE.bnnpk [--format packed|onnx|qonnx] [--out FILE]
                  [--fold-bn] [--bench] [--force] [--no-verify] [--json]

The work is :func:`bnnopt.export.from_run.export_checkpoint`; its docstring says what each
format writes and how it is verified.
"""
from __future__ import annotations

import argparse
import json
from typing import Any

from bnnopt.export.from_run import FORMATS, describe_graph, export_checkpoint


def cmd_export(args: argparse.Namespace) -> int:
    from bnnopt.export.summary import describe_packed

    info = export_checkpoint(args.source, args.out, fmt=args.format, force=args.force,
                             verify=not args.no_verify, fold_bn=args.fold_bn, bench=args.bench)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    if args.format == "packed":
        print(describe_packed({k: v for k, v in info.items() if k != "bench"}))
        if "verified_max_abs_diff" in info:
            print("  verified: logits equal the checkpoint model's on a random batch (max |diff| 0)")
    else:
        print(describe_graph(info))
    if "bench" in info:
        from bnnopt.export.bench import describe_bench

        print(describe_bench(info["bench"]))
    return 0


def add_export_commands(subparsers: Any) -> None:
    """Add ``bnnopt export`` to the CLI's sub-command parsers."""
    p = subparsers.add_parser("export", help="ship a trained binary network: packed bits, ONNX or QONNX",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("source", help="run directory or bnnopt checkpoint (or a .bnnpk file for onnx/qonnx)")
    p.add_argument("--format", default="packed", choices=FORMATS,
                   help="packed (bnnopt's bit-packed file, default), onnx (standard ONNX, weights as their "
                        "exact quantized values) or qonnx (QONNX ops carry the bit widths)")
    p.add_argument("--out", help="output file (default: model.bnnpk / model.onnx / model.qonnx.onnx "
                                 "beside the checkpoint)")
    p.add_argument("--fold-bn", dest="fold_bn", action="store_true",
                   help="onnx/qonnx: fold each BatchNorm after a quantized layer into a per-channel "
                        "scale and bias (binary weights become +-1 codes)")
    p.add_argument("--bench", action="store_true",
                   help="also time the float model, load_packed and onnxruntime at batch 1 and 64")
    p.add_argument("--force", action="store_true", help="overwrite an existing file of another kind")
    p.add_argument("--no-verify", dest="no_verify", action="store_true",
                   help="skip the load-back equality check")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_export)
