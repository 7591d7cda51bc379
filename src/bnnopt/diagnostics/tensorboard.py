"""``bnnopt train --log tensorboard``: per-epoch scalars for TensorBoard, as a Trainer callback.

    logger = TensorBoardLogger.attach(trainer)     # writes to <run_dir>/tensorboard
    trainer.run()                                  # called with (trainer, row) after every epoch

Scalars, with the epoch number (1-based) as the step:

- ``train/loss``, ``train/acc``, ``test/loss``, ``test/acc``, ``lr``,
  ``time/epoch_seconds``, and every other number in the epoch's metrics row
  under ``metrics/<key>`` (e.g. a validation accuracy);
- ``flips/<layer>`` and ``flips/all``: the fraction of a quantized layer's
  weights whose code changed during the epoch. The code of a weight is its
  quantizer's ``encode`` code (the sign for a binary weight, the level index for
  k bits) or, for a quantizer without ``encode``, its quantized value;
- for learned-gradient methods (FCGrad, MultiFC, LSTMFC, FSG), per layer and
  averaged over the epoch's meta steps, how the generated gradient ``G`` compares
  with the straight-through estimate built from the same inputs,
  ``G_ste = g ⊙ c`` (``g = ∂L/∂Q`` stored from the previous step, ``c = ∂Ŵ/∂W``
  the calibration; FSG Eq. 1-3, which is what STE would apply given that ``g``):

      grad_vs_ste/ratio/<layer>  = ||G|| / ||G_ste||
      grad_vs_ste/cosine/<layer> = <G, G_ste> / (||G|| ||G_ste||)

  measured by wrapping the method's ``generate`` (no change to the method).

Needs the ``tensorboard`` extra (``pip install "bnnopt[tensorboard]"``;
``torch.utils.tensorboard`` imports it).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from bnnopt.extras import require

LOG_CHOICES = ("none", "tensorboard")
_ROW_NAMES = {"loss": "train/loss", "train_acc": "train/acc", "test_loss": "test/loss",
              "test_acc": "test/acc", "lr": "lr", "seconds": "time/epoch_seconds",
              "cpu_seconds": "time/epoch_cpu_seconds"}


def _codes(layer: torch.nn.Module) -> torch.Tensor:
    """Integer codes of a quantized layer's weight (or its quantized values)."""
    with torch.no_grad():
        try:
            enc = layer.encode()
            codes = enc.get("codes") if isinstance(enc, dict) else None
            if isinstance(codes, torch.Tensor):
                return codes.detach().clone()
        except (AttributeError, NotImplementedError):
            pass
        return layer.quantized_weight().detach().clone()


class GradientComparison:
    """Accumulates ||G|| / ||g ⊙ c|| and the cosine of G and g ⊙ c per layer (see module doc)."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.reset()

    def reset(self) -> None:
        self.ratio = [0.0] * len(self.names)
        self.cosine = [0.0] * len(self.names)
        self.steps = 0

    @torch.no_grad()
    def add(self, generated: list[torch.Tensor], g: list[torch.Tensor], c: list[torch.Tensor]) -> None:
        for i, (G, gi, ci) in enumerate(zip(generated, g, c)):
            G = G.detach().reshape(-1).double()
            ste = (gi.detach() * ci.detach()).reshape(-1).double()
            n_g, n_s = G.norm(), ste.norm()
            self.ratio[i] += float(n_g / n_s) if n_s > 0 else 0.0
            self.cosine[i] += float(G @ ste / (n_g * n_s)) if n_g > 0 and n_s > 0 else 0.0
        self.steps += 1

    def means(self) -> dict[str, float]:
        if not self.steps:
            return {}
        out = {}
        for name, r, c in zip(self.names, self.ratio, self.cosine):
            out[f"grad_vs_ste/ratio/{name}"] = r / self.steps
            out[f"grad_vs_ste/cosine/{name}"] = c / self.steps
        return out


class TensorBoardLogger:
    """Trainer epoch callback (``callback(trainer, row)``) writing the scalars above."""

    def __init__(self, log_dir: str | Path, model: torch.nn.Module | None = None, method: Any = None) -> None:
        tb = require("torch.utils.tensorboard", "tensorboard", "--log tensorboard")
        self.log_dir = Path(log_dir)
        self.writer = tb.SummaryWriter(log_dir=str(self.log_dir))
        self.layers: list[tuple[str, torch.nn.Module]] = []
        self.previous: dict[str, torch.Tensor] = {}
        self.gradients: GradientComparison | None = None
        if model is not None:
            from bnnopt.nn import quantized_layers

            self.layers = list(quantized_layers(model))
            self.previous = {name: _codes(layer) for name, layer in self.layers}
        if method is not None:
            self._watch_generate(method)

    @classmethod
    def attach(cls, trainer: Any, log_dir: str | Path | None = None) -> "TensorBoardLogger | None":
        """Create a logger for ``trainer`` (default dir ``<run_dir>/tensorboard``) and
        append it to ``trainer.callbacks``. Under torchrun only rank 0 logs (the others
        get None), as only rank 0 writes the run directory."""
        dist = getattr(trainer, "dist", None)
        if dist is not None and not dist.is_main:
            return None
        logger = cls(log_dir or Path(trainer.run_dir) / "tensorboard", trainer.model, trainer.method)
        trainer.callbacks.append(logger)
        return logger

    def _watch_generate(self, method: Any) -> None:
        generate = getattr(method, "generate", None)
        names = [name for name, _ in getattr(method, "layers", [])]
        if generate is None or not names:
            return
        self.gradients = GradientComparison(names)
        comparison = self.gradients

        def watched(inputs):
            deltas, grads = generate(inputs)
            comparison.add(grads, inputs.g, inputs.c)
            return deltas, grads

        method.generate = watched  # instance attribute: the class and its state_dict are untouched

    def flip_fractions(self) -> dict[str, float]:
        """Fraction of changed codes per quantized layer since the last call; updates the snapshot."""
        out, changed, total = {}, 0, 0
        for name, layer in self.layers:
            now = _codes(layer)
            before = self.previous.get(name)
            if before is not None and before.shape == now.shape:
                diff = int((before.to(now.device) != now).sum())
                out[f"flips/{name}"] = diff / max(now.numel(), 1)
                changed += diff
                total += now.numel()
            self.previous[name] = now
        if total:
            out["flips/all"] = changed / total
        return out

    def scalars(self, row: dict[str, Any]) -> dict[str, float]:
        """Every scalar of this epoch (metrics row, flips, gradient comparison)."""
        values: dict[str, float] = {}
        for key, value in row.items():
            if key == "epoch" or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            values[_ROW_NAMES.get(key, f"metrics/{key}")] = float(value)
        values.update(self.flip_fractions())
        if self.gradients is not None:
            values.update(self.gradients.means())
            self.gradients.reset()
        return values

    def __call__(self, trainer: Any, row: dict[str, Any]) -> None:
        step = int(row.get("epoch", 0))
        for tag, value in self.scalars(row).items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def show_progress(flag: bool | None, stream: Any = None) -> bool:
    """The tqdm bar's default: ``flag`` if given (``--progress`` / ``--no-progress``), else on
    only when ``stream`` (default stderr) is a terminal and the ``CI`` variable is unset."""
    import os
    import sys

    if flag is not None:
        return bool(flag)
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and not os.environ.get("CI")
