"""``bnnopt export``: pack a run's trained network into a deployable file.

    bnnopt export RUN_DIR_or_CHECKPOINT [--out FILE] [--force] [--no-verify] [--json]

The checkpoint's model is rebuilt (``bnnopt.train.checkpoint.load_model``),
written with :func:`export_packed` (meta: registered model name and options,
the run config, dataset and normalisation, so that ``bnnopt eval FILE`` and
``load_packed(FILE)`` need nothing else), then, unless ``--no-verify``, loaded
back and compared with the checkpoint's model on a random batch (atol = 0).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

DEFAULT_NAME = "model.bnnpk"


def export_checkpoint(source: str | Path, out: str | Path | None = None, *, force: bool = False,
                      verify: bool = True) -> dict[str, Any]:
    """Export the model of a run directory / checkpoint; return packed_summary + verification."""
    from bnnopt.export.reader import is_packed, load_packed
    from bnnopt.export.summary import packed_summary
    from bnnopt.export.writer import export_packed
    from bnnopt.train.checkpoint import load_model

    source = Path(source)
    out = Path(out) if out is not None else (source if source.is_dir() else source.parent) / DEFAULT_NAME
    if out.is_dir():
        raise ValueError(f"--out {out} is a directory; give a file name such as {out / DEFAULT_NAME}")
    if out.exists() and not force and not is_packed(out):
        raise ValueError(f"--out {out} exists and is not a packed model; refusing to overwrite it (use --force)")
    model, config, data_info = load_model(source)
    options = dict(config.model_options)
    options.setdefault("num_classes", data_info["num_classes"])
    meta = {"model": config.model, "model_options": options, "config": config.to_dict(),
            "dataset": config.dataset, "data_root": config.data_root, "data": data_info,
            "test_limit": config.test_limit, "source": str(source)}
    export_packed(model, out, meta)
    info = packed_summary(out)
    if verify:
        info["verified_max_abs_diff"] = _verify(model, load_packed(out), data_info)
    return info


@torch.no_grad()
def _verify(model: torch.nn.Module, packed: torch.nn.Module, data_info: dict[str, Any]) -> float:
    """Max |difference| of the two models' logits on a seeded random batch; must be 0."""
    size = data_info.get("image_size") or [32, 32]
    size = [size, size] if isinstance(size, int) else list(size)
    gen = torch.Generator().manual_seed(0)
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    x = torch.randn([8, int(data_info.get("in_channels") or 3), *size], generator=gen).to(dtype)
    model = model.cpu().eval()
    a, b = model(x), packed(x)
    diff = float((a - b).abs().max()) if a.numel() else 0.0
    if a.shape != b.shape or not torch.equal(a, b):
        raise ValueError(f"packed model differs from the checkpoint's model (max |diff| {diff}); "
                         "please report this as a bnnopt bug")
    return diff


def cmd_export(args: argparse.Namespace) -> int:
    from bnnopt.export.summary import describe_packed

    info = export_checkpoint(args.source, args.out, force=args.force, verify=not args.no_verify)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(describe_packed(info))
        if "verified_max_abs_diff" in info:
            print("  verified: logits equal the checkpoint model's on a random batch (max |diff| 0)")
    return 0


def add_export_commands(subparsers: Any) -> None:
    """Add ``bnnopt export`` to the CLI's sub-command parsers."""
    p = subparsers.add_parser("export", help="pack a trained binary network into a deployable file",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("source", help="run directory or bnnopt checkpoint")
    p.add_argument("--out", help=f"output file (default: {DEFAULT_NAME} beside the checkpoint)")
    p.add_argument("--force", action="store_true", help="overwrite an existing non-packed file")
    p.add_argument("--no-verify", dest="no_verify", action="store_true",
                   help="skip the load-back equality check")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_export)
