"""``bnnopt summary``: per-layer storage of a model, checkpoint or packed file."""
from __future__ import annotations

import json
from pathlib import Path


def summarize_target(target: str | None, *, model: str | None = None, method: str = "ste",
                     json_out: bool = False) -> str:
    """Summary table (or JSON) of a registered model binarized by ``method``, of a
    checkpoint / run directory, or of a packed file (file size vs float32)."""
    from bnnopt.nn import summary

    if target is None and model is None:
        raise ValueError("give a checkpoint / packed file, or --model NAME")
    if target is not None:
        path = Path(target)
        if not path.exists():
            raise ValueError(f"no such file or directory: {path}")
        try:
            from bnnopt.export import is_packed, packed_summary
        except ImportError:  # pragma: no cover
            is_packed = None
        if is_packed is not None and path.is_file() and is_packed(path):
            info = packed_summary(path)
            return json.dumps(info, indent=2) if json_out else _packed_text(info)
        from bnnopt.train.checkpoint import load_model

        net = load_model(path)[0]
    else:
        from bnnopt.registry import METHODS, MODELS

        net = MODELS.get(model)()
        METHODS.get(method)().prepare(net, {})
    result = summary(net)
    return json.dumps(result.to_dict(), indent=2) if json_out else str(result)


def _packed_text(info: dict) -> str:
    from bnnopt.export import describe_packed

    return describe_packed(info)
