"""``packed_summary``: a packed file's size next to the float32 model's.

Two float32 reference sizes are reported:

- ``float32_bytes``: the raw tensor payload of the float model, i.e. 4 bytes per
  parameter / floating buffer (latent weights of the quantized layers counted
  as float32) plus integer buffers at their own width;
- ``float32_state_dict_bytes``: the size ``torch.save`` gives the equivalent
  float32 state dict (same keys as the float model) on disk, measured by
  serialising it to memory.

One ratio is reported for the file, the *file ratio*::

    compression = float32_state_dict_bytes / file_bytes

i.e. how many times smaller the packed file is on disk than the float32 state dict
of the same model. It counts everything either file stores (BatchNorm buffers,
float layers, level tables, the manifest, alignment, pickling overhead). It is not
the *parameter storage* ratio of :func:`bnnopt.nn.summary.summary` (weights at their
bit width plus float32 scales and biases, parameters only, no file format), which
is larger; ``bnnopt summary FILE.bnnpk`` prints both, each under its own name.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch

from bnnopt.export.container import FORMAT_VERSION, read_header
from bnnopt.export.reader import assemble_float_state, decoded_layers, read_packed


def packed_summary(path: str | os.PathLike) -> dict[str, Any]:
    """Sizes (bytes) and contents of packed file ``path`` as a flat JSON-able dict."""
    path = Path(path)
    manifest, tensors = read_packed(path)
    file_bytes = path.stat().st_size
    manifest_bytes = read_header(path.read_bytes(), str(path))
    layers = decoded_layers(manifest, tensors, path)
    state = assemble_float_state(manifest, tensors, layers, path)
    state32 = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
    buf = io.BytesIO()
    torch.save(state32, buf)
    sd_bytes = buf.tell()

    def nbytes(prefix: str, suffix: str = "") -> int:
        return sum(t.numel() * t.element_size() for k, t in tensors.items()
                   if k.startswith(prefix) and k.endswith(suffix))

    bits = sorted({int(e["bits"]) for e in manifest["qlayers"]})
    return {
        "file": str(path),
        "format_version": FORMAT_VERSION,
        "model": manifest["model"].get("name") or manifest["model"].get("class"),
        "file_bytes": file_bytes,
        "float32_state_dict_bytes": sd_bytes,
        "float32_bytes": int(manifest.get("float32_bytes") or sum(
            v.numel() * (4 if v.is_floating_point() else v.element_size()) for v in state.values())),
        "compression": round(sd_bytes / file_bytes, 2),
        "quantized_layers": len(manifest["qlayers"]),
        "quantized_weights": sum(int(e["count"]) for e in manifest["qlayers"]),
        "weight_bits": ",".join(map(str, bits)) if bits else "-",
        "packed_code_bytes": nbytes("q/", "/codes"),
        "level_table_bytes": nbytes("q/", "/levels"),
        "quantized_bias_bytes": nbytes("q/", "/bias"),
        "float_tensor_bytes": nbytes("state/"),
        "manifest_bytes": manifest_bytes,
    }


def describe_packed(info: dict[str, Any]) -> str:
    """One human line per fact of :func:`packed_summary`'s dict, headline first.

    The headline states the file ratio (``compression``) with its definition; the
    other lines list the remaining facts.
    """
    head = (f"{info['file']}: {info['file_bytes']:,} bytes on disk, {info['compression']}x "
            f"smaller than the same model's float32 state dict saved with torch.save "
            f"({info['float32_state_dict_bytes']:,} bytes) [file ratio: whole files, "
            "buffers and format included]")
    rest = [f"  {k}: {v:,}" if isinstance(v, int) else f"  {k}: {v}"
            for k, v in info.items() if k not in ("file", "compression")]
    return "\n".join([head, *rest])
