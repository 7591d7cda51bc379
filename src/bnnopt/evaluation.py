"""``bnnopt eval``: test accuracy of whatever a user has on disk.

Accepted inputs, detected by content (not by extension):
- a run directory or bnnopt checkpoint: model + method rebuilt from its config;
- a packed deployment file (``bnnopt export``): loaded with ``load_packed``;
- a plain float state dict (e.g. the official FSG ResNet checkpoints): needs
  ``--model`` unless the file name contains a registered model name.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch


def _guess_model(path: Path) -> str | None:
    from bnnopt.registry import MODELS

    names = sorted(MODELS.names(), key=len, reverse=True)
    for name in names:
        if re.search(rf"(^|[^a-z0-9]){re.escape(name)}([^a-z0-9]|$)", path.name.lower()):
            return name
    return None


def load_any(path: str | Path, model_name: str | None = None):
    """Return ``(model, info)`` where info has dataset / data_root / kind / normalisation."""
    from bnnopt.train.checkpoint import is_checkpoint, load_model

    path = Path(path)
    if not path.exists():
        raise ValueError(f"no such file or directory: {path}")
    if path.is_dir() or is_checkpoint(path):
        model, config, data_info = load_model(path)
        return model, {"kind": "checkpoint", "dataset": config.dataset,
                       "data_root": config.data_root, "data": data_info,
                       "test_limit": config.test_limit}
    try:
        from bnnopt.export import is_packed, load_packed
    except ImportError:  # pragma: no cover - export package absent
        is_packed = None
    if is_packed is not None and is_packed(path):
        model = load_packed(path)
        meta = getattr(model, "bnnopt_meta", {}) or {}
        return model, {"kind": "packed", "dataset": meta.get("dataset"),
                       "data_root": meta.get("data_root"), "data": meta.get("data"),
                       "test_limit": meta.get("test_limit", 0)}
    from bnnopt.models import load_pretrained
    from bnnopt.registry import MODELS

    name = model_name or _guess_model(path)
    if name is None:
        raise ValueError(
            f"{path} is a plain state dict; say which model it is with --model "
            f"(valid: {', '.join(MODELS.names())})")
    model = MODELS.get(name)(num_classes=10)
    load_pretrained(model, path)
    model.eval()
    return model, {"kind": "state_dict", "dataset": None, "data_root": None, "data": None}


def evaluate_path(path: str | Path, *, model: str | None = None, dataset: str | None = None,
                  data_root: str | None = None, limit: int = 0, device: str = "auto",
                  batch_size: int = 500) -> dict[str, Any]:
    """Accuracy of ``path`` on the test split of its dataset (JSON-serialisable dict).

    A run's checkpoint is evaluated on the same test images the run used
    (its ``test_limit``) unless ``limit`` says otherwise.
    """
    from bnnopt.train.data_setup import load_split_loaders
    from bnnopt.train.trainer import evaluate, resolve_device

    net, info = load_any(path, model)
    dataset = dataset or info["dataset"] or "cifar10"
    data_root = data_root or info["data_root"]
    dev = resolve_device(device)
    _, test_loader, data_info = load_split_loaders(
        dataset, root=data_root, batch_size=batch_size, augment=False, device=dev,
        seed=0, test_limit=limit or info.get("test_limit", 0), need_train=False)
    net.to(dev)
    with torch.no_grad():
        loss, acc = evaluate(net, test_loader.epoch(0))
    return {"path": str(path), "kind": info["kind"], "dataset": dataset,
            "images": test_loader.num_samples,
            "test_acc": acc, "test_loss": loss}
