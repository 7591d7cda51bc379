"""Export a run's trained network (run directory, checkpoint or .bnnpk file) as packed bits, ONNX or QONNX.

    export_checkpoint(RUN_DIR|CHECKPOINT|FILE.bnnpk, out=None, fmt="packed"|"onnx"|"qonnx",
                      fold_bn=False, bench=False, force=False, verify=True) -> info dict

``bnnopt export`` (:mod:`bnnopt.cli.export`) is its command line.

``packed`` (default): the checkpoint's model (``bnnopt.train.checkpoint.load_model``)
is written with :func:`export_packed` (meta: registered model name and options,
the run config, dataset and normalisation, so that ``bnnopt eval FILE`` and
``load_packed(FILE)`` need nothing else), loaded back and compared with the
checkpoint's model on a random batch (atol = 0) unless ``--no-verify``.

``onnx`` / ``qonnx``: the packed model is exported as an ONNX graph
(:mod:`bnnopt.export.onnx_export`); verified with onnxruntime (``onnx``) or the
qonnx package's executor (``qonnx``; if qonnx is not installed, the graph is
checked structurally: onnx.checker and the bit width of every quantized weight)
against ``load_packed`` logits (max |diff| <= 1e-5 * max(1, max |logit|)).
``--fold-bn`` folds each BatchNorm after a quantized layer into a per-channel
scale and bias (ONNX formats only; the packed format keeps BatchNorm as is, so
``load_packed`` stays bit-exact). ``--bench`` adds the latency table of
:mod:`bnnopt.export.bench`.

Every output is written to a temporary file and renamed into place only after it
was verified, so a failed export leaves no file behind (and an older file untouched).
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

FORMATS = ("packed", "onnx", "qonnx")
DEFAULT_NAMES = {"packed": "model.bnnpk", "onnx": "model.onnx", "qonnx": "model.qonnx.onnx"}
DEFAULT_NAME = DEFAULT_NAMES["packed"]


def _default_out(source: Path, fmt: str, packed_source: bool) -> Path:
    if packed_source:
        return source.with_name(source.stem + (".onnx" if fmt == "onnx" else ".qonnx.onnx"))
    return (source if source.is_dir() else source.parent) / DEFAULT_NAMES[fmt]


def _check_out(out: Path, fmt: str, force: bool) -> None:
    from bnnopt.export.reader import is_packed

    if out.is_dir():
        raise ValueError(f"--out {out} is a directory; give a file name such as {out / DEFAULT_NAMES[fmt]}")
    same_kind = is_packed(out) if fmt == "packed" else out.suffix == ".onnx"
    if out.exists() and not force and not same_kind:
        kind = "a packed model" if fmt == "packed" else "an .onnx file"
        raise ValueError(f"--out {out} exists and is not {kind}; refusing to overwrite it (use --force)")


def checkpoint_meta(source: Path, config: Any, data_info: dict[str, Any]) -> dict[str, Any]:
    """What ``export_packed`` stores so that the file rebuilds its model on its own."""
    from bnnopt.train.checkpoint import model_options

    return {"model": config.model, "model_options": model_options(config, data_info),
            "config": config.to_dict(), "dataset": config.dataset, "data_root": config.data_root,
            "data": data_info, "test_limit": config.test_limit, "source": str(source)}


def export_checkpoint(source: str | Path, out: str | Path | None = None, *, fmt: str = "packed",
                      force: bool = False, verify: bool = True, fold_bn: bool = False,
                      bench: bool = False) -> dict[str, Any]:
    """Export a run directory / checkpoint (or, for ONNX formats, a packed file);
    return a summary dict (sizes, verification, optional latency table)."""
    from bnnopt.export.reader import is_packed, load_packed
    from bnnopt.export.summary import packed_summary
    from bnnopt.export.writer import export_packed
    from bnnopt.runs.io import atomic_path

    if fmt not in FORMATS:
        raise ValueError(f"invalid --format {fmt!r}; valid: {', '.join(FORMATS)}")
    if fold_bn and fmt == "packed":
        raise ValueError("--fold-bn applies to --format onnx or qonnx; the packed format keeps "
                         "BatchNorm unfolded so that load_packed stays bit-exact")
    source = Path(source)
    packed_source = source.is_file() and is_packed(source)
    if packed_source and fmt == "packed":
        raise ValueError(f"{source} is already a packed model; give a run directory or checkpoint, "
                         f"or choose --format onnx / qonnx")
    out = Path(out) if out is not None else _default_out(source, fmt, packed_source)
    _check_out(out, fmt, force)
    model = data_info = None
    if not packed_source:
        from bnnopt.train.checkpoint import load_model

        model, config, data_info = load_model(source)
        meta = checkpoint_meta(source, config, data_info)

    with tempfile.TemporaryDirectory(prefix="bnnopt-export-") as scratch:
        if fmt == "packed":
            with atomic_path(out) as tmp:
                export_packed(model, tmp, meta)
                diff = _verify(model, load_packed(tmp), data_info) if verify else None
            info = packed_summary(out)
            if diff is not None:
                info["verified_max_abs_diff"] = diff
            packed = out
        else:
            packed = source
            if not packed_source:
                packed = Path(scratch) / DEFAULT_NAME
                export_packed(model, packed, meta)
                if verify:
                    _verify(model, load_packed(packed), data_info)
            info = _export_graph(packed, out, fmt, fold_bn, verify)
        if bench:
            from bnnopt.export.bench import bench_latency

            info["bench"] = bench_latency(packed, onnx_path=out if fmt == "onnx" else None,
                                          scratch=Path(scratch), fold_bn=fold_bn)
    return info


def _export_graph(packed: Path, out: Path, fmt: str, fold_bn: bool, verify: bool) -> dict[str, Any]:
    from bnnopt.export.onnx_export import export_onnx, verify_graph
    from bnnopt.export.summary import packed_summary
    from bnnopt.runs.io import atomic_path

    sizes = packed_summary(packed)
    with atomic_path(out) as tmp:
        info = export_onnx(packed, tmp, qonnx=fmt == "qonnx", fold_bn=fold_bn)
        if verify:
            info.update(verify_graph(packed, tmp, info, qonnx=fmt == "qonnx"))
    info["file"] = str(out)
    info["file_bytes"] = out.stat().st_size
    info["packed_bytes"] = sizes["file_bytes"]
    info["float32_state_dict_bytes"] = sizes["float32_state_dict_bytes"]
    return info


@torch.no_grad()
def _verify(model: torch.nn.Module, packed: torch.nn.Module, data_info: dict[str, Any]) -> float:
    """Max |difference| of the two models' logits on a seeded random batch; must be 0."""
    size = data_info.get("image_size") or [32, 32]
    size = [size, size] if isinstance(size, int) else list(size)
    gen = torch.Generator().manual_seed(0)
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    x = torch.randn([8, int(data_info.get("in_channels") or 3), *size], generator=gen).to(dtype)
    if data_info.get("task") == "lm":  # token models: random tokens [8, block_size]
        x = torch.randint(0, int(data_info["num_classes"]), [8, int(data_info["block_size"])],
                          generator=gen)
    model = model.cpu().eval()
    a, b = model(x), packed(x)
    diff = float((a - b).abs().max()) if a.numel() else 0.0
    if a.shape != b.shape or not torch.equal(a, b):
        raise ValueError(f"packed model differs from the checkpoint's model (max |diff| {diff}); "
                         "please report this as a bnnopt bug")
    return diff


def describe_graph(info: dict[str, Any]) -> str:
    """Human lines for an ONNX / QONNX export."""
    lines = [f"{info['file']}: {info['format']} graph, {info['file_bytes']:,} bytes "
             f"(packed file {info['packed_bytes']:,} bytes, float32 state dict "
             f"{info['float32_state_dict_bytes']:,} bytes)",
             f"  nodes: {info['nodes']}, quantized layers: {info['quantized_layers']}, "
             f"BatchNorms folded: {info['folded_bn']}, input: [batch, {', '.join(map(str, info['input_shape']))}]"]
    if "verified_with" in info:
        lines.append(f"  verified: {info['verified_with']}")
    return "\n".join(lines)
