"""``bnnopt eval``: test accuracy of whatever a user has on disk.

Accepted inputs, detected by content (not by extension):
- a run directory or bnnopt checkpoint: model + method rebuilt from its config;
- a packed deployment file (``bnnopt export``): loaded with ``load_packed``;
- a plain float state dict (e.g. the official FSG ResNet checkpoints): needs
  ``--model`` unless the file name contains a registered model name.

Anything else (random bytes, a foreign pickle) is refused as "not a checkpoint".
Every file is read with ``torch.load(weights_only=True)``. A ``--dataset`` other
than the run's must have the same image shape and number of classes.
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
    from bnnopt.train.checkpoint import looks_like_checkpoint, load_model, read_torch_file

    path = Path(path)
    if not path.exists():
        raise ValueError(f"no such file or directory: {path}")
    obj = None
    if path.is_file():
        try:
            from bnnopt.export import is_packed
        except ImportError:  # pragma: no cover - export package absent
            is_packed = None
        if is_packed is None or not is_packed(path):
            obj = read_torch_file(path)  # ValueError "not a checkpoint" for random bytes
    if path.is_dir() or looks_like_checkpoint(obj):
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

    from bnnopt.models.pretrained import extract_state_dict

    try:
        extract_state_dict(obj)
    except ValueError as err:
        raise ValueError(f"{path} is not a checkpoint, packed file or state dict: {err}") from None
    name = model_name or _guess_model(path)
    if name is None:
        raise ValueError(
            f"{path} is a plain state dict; say which model it is with --model "
            f"(valid: {', '.join(MODELS.names())})")
    model = MODELS.get(name)(num_classes=10)
    load_pretrained(model, path)
    model.eval()
    return model, {"kind": "state_dict", "dataset": None, "data_root": None, "data": None}


def _shape(data: dict[str, Any]) -> tuple:
    size = data.get("image_size")
    return (data.get("in_channels"), tuple(size) if size is not None else None,
            data.get("num_classes"))


def check_data_fits(info: dict[str, Any], data_info: dict[str, Any], dataset: str,
                    path: str | Path) -> None:
    """Refuse a dataset whose images / classes differ from those the model was trained on."""
    trained = info.get("data")
    if not trained:
        return
    want, have = _shape(trained), _shape(data_info)
    if any(a is not None and b is not None and a != b for a, b in zip(want, have)):
        def fmt(s):
            return f"{s[0]}x{s[1][0]}x{s[1][1]} images, {s[2]} classes" if s[1] else str(s)
        raise ValueError(
            f"{path} was trained on {info.get('dataset')} ({fmt(want)}); dataset {dataset} has "
            f"{fmt(have)}; evaluate it on {info.get('dataset')} or a dataset of that shape")


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
    check_data_fits(info, data_info, dataset, path)
    net.to(dev)
    with torch.no_grad():
        loss, acc = evaluate(net, test_loader.epoch(0))
    return {"path": str(path), "kind": info["kind"], "dataset": dataset,
            "images": test_loader.num_samples,
            "test_acc": acc, "test_loss": loss}
