"""``bnnopt export --bench``: latency of the float model, ``load_packed`` and onnxruntime.

Three arms run the same network on the same seeded random input, at each batch
size (default 1 and 64), on the CPU:

    float         the architecture with the decoded weights as ordinary float
                  Conv2d / Linear layers (what a user without bnnopt would run)
    load_packed   bnnopt's inference module (PackedConv2d / PackedLinear)
    onnxruntime   the standard ONNX export, CPUExecutionProvider

Each arm is warmed up, then the arms are timed *interleaved* (one call of each
per round) and the median over rounds is reported in milliseconds, so machine
noise hits all arms alike. Sizes are in bytes. The honest summary line says
what packing buys (file size) and what it does not (time): all three arms run
float kernels; without binary (XNOR-popcount) kernels a 1-bit weight is not
faster on a CPU than a float one.
"""
from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch

BATCHES = (1, 64)


def float_model(packed: str | os.PathLike) -> torch.nn.Module | None:
    """The float architecture holding the packed file's decoded weights (None when the
    file does not name a registered model)."""
    from bnnopt.export.reader import float_state_dict, read_manifest
    from bnnopt.registry import MODELS

    info = read_manifest(packed)["model"]
    if not info.get("name"):
        return None
    model = MODELS.get(info["name"])(**(info.get("options") or {}))
    model.load_state_dict(float_state_dict(packed), strict=True)
    return model.eval().requires_grad_(False)


def _time(fn, x) -> float:
    start = time.perf_counter()
    fn(x)
    return (time.perf_counter() - start) * 1e3


@torch.no_grad()
def bench_latency(packed: str | os.PathLike, onnx_path: str | os.PathLike | None = None, *,
                  scratch: Path | None = None, fold_bn: bool = False, batches=BATCHES,
                  rounds: int = 15, warmup: int = 3) -> dict[str, Any]:
    """Median latency (ms) per arm and batch size, plus the file sizes (see module docstring)."""
    import tempfile

    from bnnopt.export.onnx_export import example_input, export_onnx, ort_session, packed_input_shape
    from bnnopt.export.reader import load_packed
    from bnnopt.export.summary import packed_summary

    packed_model = load_packed(packed)
    shape = packed_input_shape(packed)
    arms: dict[str, Any] = {}
    fp = float_model(packed)
    if fp is not None:
        arms["float"] = fp
    arms["load_packed"] = packed_model
    with tempfile.TemporaryDirectory(prefix="bnnopt-bench-", dir=scratch) as tmp:
        if onnx_path is None:
            onnx_path = Path(tmp) / "bench.onnx"
            export_onnx(packed, onnx_path, fold_bn=fold_bn)
        session = ort_session(onnx_path, threads=torch.get_num_threads())
        arms["onnxruntime"] = lambda x: session.run(None, {"input": x.numpy()})
        rows = []
        for batch in batches:
            x = example_input(shape, batch=batch, seed=0)
            for fn in arms.values():
                for _ in range(warmup):
                    fn(x)
            times: dict[str, list[float]] = {name: [] for name in arms}
            for _ in range(rounds):
                for name, fn in arms.items():
                    times[name].append(_time(fn, x))
            rows.append({"batch": batch, **{f"{name}_ms": round(statistics.median(t), 3)
                                            for name, t in times.items()}})
        onnx_bytes = Path(onnx_path).stat().st_size
    sizes = packed_summary(packed)
    ratio = sizes["float32_state_dict_bytes"] / sizes["file_bytes"]
    note = (f"the packed file is {ratio:.1f}x smaller than the float32 state dict "
            f"({sizes['file_bytes']:,} vs {sizes['float32_state_dict_bytes']:,} bytes; ONNX "
            f"{onnx_bytes:,} bytes, since ONNX stores the quantized weights as float32). It is not "
            "faster: load_packed decodes the bits to float once and runs the same float kernels as the "
            "float model, and onnxruntime's time is that of its own float kernels, whose cost does not "
            "depend on the weight values; on a CPU without binary (XNOR-popcount) kernels 1-bit weights save "
            "memory and disk, not time.")
    return {"threads": torch.get_num_threads(), "rounds": rounds, "input_shape": shape, "rows": rows,
            "float32_state_dict_bytes": sizes["float32_state_dict_bytes"],
            "packed_bytes": sizes["file_bytes"], "onnx_bytes": onnx_bytes, "note": note}


def describe_bench(bench: dict[str, Any]) -> str:
    """Markdown latency table and the summary line."""
    arms = [k[:-3] for k in bench["rows"][0] if k.endswith("_ms")]
    lines = [f"latency, median of {bench['rounds']} interleaved rounds, {bench['threads']} CPU thread(s), "
             f"input [batch, {', '.join(map(str, bench['input_shape']))}]:",
             "| batch | " + " | ".join(f"{a} (ms)" for a in arms) + " |",
             "|---:|" + "---:|" * len(arms)]
    for row in bench["rows"]:
        lines.append(f"| {row['batch']} | " + " | ".join(f"{row[a + '_ms']:.2f}" for a in arms) + " |")
    lines.append(bench["note"])
    return "\n".join(lines)
