"""``bnnopt summary``: per-layer bits, storage, MACs and BOPs of a model, checkpoint or packed file.

The input shape for the MAC count comes from ``--input-shape C,H,W`` if given,
else from the run's / file's data info, else from the registered model's
``in_channels`` / ``input_size`` defaults (see :func:`bnnopt.nn.summary.summary`).
A packed file also reports its size next to the float32 state dict's: the *file
ratio* (whole files on disk), printed apart from the model table's *parameter
storage* ratio (parameters at their bit widths only), which is larger.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def parse_shape(text: str | None) -> list[int] | None:
    """``"3,32,32"`` -> [3, 32, 32] (ValueError naming the bad value)."""
    if text is None:
        return None
    try:
        shape = [int(v) for v in text.replace("x", ",").split(",") if v.strip()]
    except ValueError:
        shape = []
    if not shape or any(v < 1 for v in shape):
        raise ValueError(f"invalid --input-shape {text!r}; give positive integers C,H,W such as 3,32,32")
    return shape


def summarize_target(target: str | None, *, model: str | None = None, method: str = "ste",
                     json_out: bool = False, input_shape: str | list[int] | None = None) -> str:
    """Summary table (or JSON) of a registered model binarized by ``method``, of a
    checkpoint / run directory, or of a packed file (plus file size vs float32)."""
    from bnnopt.nn import summary
    from bnnopt.nn.summary import default_input_shape

    shape = parse_shape(input_shape) if isinstance(input_shape, str) else input_shape
    if target is None and model is None:
        raise ValueError("give a checkpoint / packed file, or --model NAME")
    packed_info: dict[str, Any] | None = None
    if target is not None:
        path = Path(target)
        if not path.exists():
            raise ValueError(f"no such file or directory: {path}")
        from bnnopt.export import is_packed, load_packed, packed_summary

        if path.is_file() and is_packed(path):
            packed_info = packed_summary(path)
            net = load_packed(path)
            if shape is None:
                from bnnopt.export.onnx_export import packed_input_shape

                shape = packed_input_shape(path)
        else:
            from bnnopt.train.checkpoint import load_model, model_options

            net, config, data = load_model(path)
            shape = shape or default_input_shape(config.model, model_options(config, data), data)
    else:
        from bnnopt.registry import METHODS, MODELS

        net = MODELS.get(model)()
        METHODS.get(method)().prepare(net, {})
        shape = shape or default_input_shape(model)
    try:
        result = summary(net, shape)
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"cannot run the model on an input of shape {shape} to count MACs "
                         f"({' '.join(str(err).split())[:200]}); give --input-shape C,H,W") from None
    if json_out:
        out = result.to_dict()
        if packed_info is not None:
            out = {**packed_info, "summary": out}
        return json.dumps(out, indent=2)
    if packed_info is None:
        return str(result)
    from bnnopt.export import describe_packed

    return describe_packed(packed_info) + "\n\n" + label_parameter_storage(str(result))


PARAMETER_STORAGE = ("parameter storage (parameters only: weights at their bit width, "
                     "float32 scales and biases; no buffers, no file format)")


def label_parameter_storage(table: str) -> str:
    """Name the model table's storage totals for what they are, next to a packed file's
    on-disk ratio: ``memory: ... compression Rx`` -> ``parameter storage (...): ... ratio Rx``.

    Both figures are correct and differ (the file also stores BatchNorm buffers and its
    own format): each is printed under its own name so they cannot be mistaken for
    one another.
    """
    lines = []
    for line in table.splitlines():
        if line.startswith("memory: "):
            line = PARAMETER_STORAGE + ": " + line[len("memory: "):]
        if line.startswith((PARAMETER_STORAGE, "quantized layers: ")):
            line = line.replace(", compression ", ", ratio ")
        lines.append(line)
    return "\n".join(lines)
