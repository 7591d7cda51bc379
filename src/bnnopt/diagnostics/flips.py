"""Per-layer flip rate: how many quantized weights changed level during an epoch.

For a quantized layer l with weight codes c (``layer.encode()["codes"]``, the level
index of every weight: for 1 bit, 0 for -1 and 1 for +1; for BitNet b1.58, 0/1/2
for -1/0/+1) taken at the start (c_0) and the end (c_1) of an epoch,

    flip_rate_l = (1 / n_l) sum_i 1{c_1,i != c_0,i}        in [0, 1],

n_l the number of weights of layer l. It counts level changes only: a change of
the layer's scale (e.g. mean|W|) moves every quantized value without flipping
any. A weight that flips twice within the epoch (there and back) counts as
unchanged; the rate is a net per-epoch measure, not a count of steps.

The Trainer records it in every metrics row as ``"flip_rate": {layer: fraction}``
(:func:`layer_codes` before the epoch, :func:`flip_rates` after its last step);
:func:`bnnopt.report.plots.plot_flip_rates` draws one line per layer.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["layer_codes", "flip_rates"]


@torch.no_grad()
def layer_codes(model: nn.Module) -> dict[str, torch.Tensor]:
    """The integer weight codes of every quantized layer of ``model`` (copies), by name.

    Shapes: each tensor has the shape of the layer's weight (dtype uint8). An
    unquantized model gives {}.
    """
    from bnnopt.nn import quantized_layers

    return {name: layer.encode()["codes"].detach().clone()
            for name, layer in quantized_layers(model)}


@torch.no_grad()
def flip_rates(before: dict[str, torch.Tensor], model: nn.Module) -> dict[str, float]:
    """Fraction of each layer's weights whose code differs from ``before`` (a
    :func:`layer_codes` result), for the layers present in both, in ``before``'s order.

    ValueError if a layer's weight changed shape in between.
    """
    now = layer_codes(model)
    rates: dict[str, float] = {}
    for name, old in before.items():
        new = now.get(name)
        if new is None:
            continue
        if new.shape != old.shape:
            raise ValueError(f"layer {name!r} changed shape from {tuple(old.shape)} to "
                             f"{tuple(new.shape)}; flip rates compare codes of one shape")
        rates[name] = float((new != old).sum()) / max(old.numel(), 1)
    return rates
