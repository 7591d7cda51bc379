"""Losses and metrics shared by classification and language modelling.

A classifier returns logits [B, C] for targets [B]; a language model returns
logits [B, T, V] for targets [B, T] (one next-token prediction per position).
The helpers here treat both alike by flattening the positions into the batch:

    token_cross_entropy(logits [B, T, V], y [B, T]) = CE(logits [B*T, V], y [B*T])
    count_correct = number of positions with argmax over the last dim == target

so the Trainer's loss is the mean cross-entropy per token, its accuracy the
per-token accuracy (%), and for byte-level text ``bpc = loss / ln 2`` (bits per
character), recorded as ``train_bpc`` / ``val_bpc`` / ``test_bpc`` in the
metrics rows and ``final_test_bpc`` (and ``selected_test_bpc`` with a
validation split) in the summary.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F

__all__ = ["token_cross_entropy", "count_correct", "sharded_token_criterion", "add_bpc",
           "bpc_summary"]


def _flat(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, T, V], [B, T] -> [B*T, V], [B*T]; classification shapes unchanged."""
    if logits.dim() >= 3 and logits.shape[:-1] == y.shape:
        return logits.reshape(-1, logits.shape[-1]), y.reshape(-1)
    return logits, y


def token_cross_entropy(logits: torch.Tensor, y: torch.Tensor,
                        reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy per target: [B, C] with [B], or [B, T, V] with [B, T] (flattened)."""
    logits, y = _flat(logits, y)
    return F.cross_entropy(logits, y, reduction=reduction)


def count_correct(logits: torch.Tensor, y: torch.Tensor) -> int:
    """Targets equal to the argmax of the last dimension (per sample or per token)."""
    return int((logits.argmax(-1) == y).sum())


def sharded_token_criterion(n_global: int, world_size: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """torchrun: L_r = world / (n_global * T) * sum of CE over rank r's tokens, so the mean
    over ranks of dL_r is the gradient of the global batch's mean per-token CE
    (T = targets per sample; n_global samples in the global batch)."""

    def criterion(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        per_sample = y[0].numel() if y.dim() > 1 and y.shape[0] else 1
        return token_cross_entropy(logits, y, "sum") * (world_size / (n_global * per_sample))

    return criterion


def add_bpc(row: dict[str, Any]) -> dict[str, Any]:
    """Add ``train_bpc`` / ``val_bpc`` / ``test_bpc`` = loss / ln 2 to a metrics row (in place)."""
    for loss_key, bpc_key in (("loss", "train_bpc"), ("val_loss", "val_bpc"),
                              ("test_loss", "test_bpc")):
        if loss_key in row:
            row[bpc_key] = row[loss_key] / math.log(2)
    return row


def bpc_summary(metrics: list[dict[str, Any]]) -> dict[str, float]:
    """``final_test_bpc``, and with validation rows ``best_val_bpc`` and
    ``selected_test_bpc`` (test bpc at the epoch of lowest validation bpc)."""
    if not metrics or "test_bpc" not in metrics[-1]:
        return {}
    out = {"final_test_bpc": metrics[-1]["test_bpc"]}
    if "val_bpc" in metrics[-1]:
        chosen = min(metrics, key=lambda r: r["val_bpc"])
        out.update(best_val_bpc=chosen["val_bpc"], selected_test_bpc=chosen["test_bpc"])
    return out
