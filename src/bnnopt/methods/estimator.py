"""The estimator family: quantize with binarize_, train with plain autograd.

A method of this family is a (weight quantizer, bits, estimator) triple plus an
optional activation quantizer; the estimator's autograd Function supplies the
surrogate derivative of the binarization. Annealed estimators (IR-Net's EDE,
ReSTE) read the training progress p = epoch / (epochs - 1) from
``on_epoch_start``.

Registered methods (all options can be overridden, e.g.
``method_options = {estimator = "clipped_ste", bits = 2}``):

fp            full precision, nothing quantized (the accuracy ceiling)
ste           DoReFa weights (FSG Eq. 1-2) + identity STE: the FSG paper's baseline
clipped_ste   sign(W) with the clipped STE 1{|W| <= 1} (BinaryConnect / BNN)
bwn           BWN/XNOR: mean|W| * sign(W), clipped STE
approx_sign   Bi-Real's ApproxSign derivative 2 - 2|W|
irnet         IR-Net's EDE estimator (t annealed 1e-3 -> 10, k = max(1/t, 1))
reste         ReSTE's rectified power estimator (o annealed 1 -> 3)
rbnn          RBNN: bi-rotated standardised weights, alpha*sign, training-aware sign
              approximation (bnnopt.quant.rbnn)
"""
from __future__ import annotations

from typing import Any

from torch import nn

from bnnopt.methods.base import Method
from bnnopt.methods.config import check_policy
from bnnopt.methods.estimator_config import (ESTIMATOR_PRESETS, EstimatorConfig, FPConfig,
                                             RBNNConfig)
from bnnopt.registry import METHODS


class EstimatorMethod(Method):
    """binarize_ the model with ``QuantConfig(quantizer, bits, estimator, ...)`` + autograd."""

    family = "estimator"
    #: the registered name whose :data:`ESTIMATOR_PRESETS` entry gives the defaults
    preset_name = "ste"

    def __init__(self, **options: Any):
        #: the resolved typed options (:class:`bnnopt.methods.estimator_config.EstimatorConfig`)
        self.config = EstimatorConfig.from_options(options, method=self.preset_name)
        super().__init__(**self.config.to_options())

    def quant_config(self, policy: dict[str, Any]):
        from bnnopt.nn import QuantConfig

        check_policy(policy)
        cfg = QuantConfig(
            weight_quantizer=self.options["quantizer"],
            weight_bits=self.options["bits"],
            estimator=self.options["estimator"],
            estimator_options=dict(self.options.get("estimator_options", {})),
            **policy,
        )
        return cfg.validate()

    def prepare(self, model: nn.Module, policy: dict[str, Any]) -> list[str]:
        from bnnopt.nn import binarize_

        self._model = model
        return binarize_(model, self.quant_config(policy))

    def on_epoch_start(self, epoch: int, total_epochs: int) -> None:
        from bnnopt.nn import set_progress

        set_progress(self._model, epoch / max(total_epochs - 1, 1))


@METHODS.register("fp", "full precision: nothing quantized (accuracy ceiling)")
class FullPrecision(Method):
    family = "estimator"

    def __init__(self, **options: Any):
        self.config = FPConfig.from_options(options)
        super().__init__()

    def prepare(self, model: nn.Module, policy: dict[str, Any]) -> list[str]:
        return []


def _register(name: str, description: str) -> None:
    cls = type(f"{name.title().replace('_', '')}Method", (EstimatorMethod,),
               {"preset_name": name, "__doc__": description})
    METHODS.register(name, description)(cls)


for _name, (_description, _) in ESTIMATOR_PRESETS.items():
    _register(_name, _description)


@METHODS.register("rbnn", "RBNN (NeurIPS 2020): bi-rotated weights, adjustable rotation, "
                          "training-aware sign approximation")
class RBNNMethod(EstimatorMethod):
    """RBNN (Lin et al., NeurIPS 2020), see :mod:`bnnopt.quant.rbnn`.

    ``prepare`` binarizes with the ``rbnn`` quantizer and creates each layer's R1, R2,
    alpha and theta; every epoch starts with the alternating update of R1, R2 (every
    ``rotation_update`` epochs, 1 as in the public code) and sets the sign
    approximation's progress p = epoch / epochs (the public code's t schedule).
    """

    def __init__(self, **options: Any):
        self.config = RBNNConfig.from_options(options)
        Method.__init__(self, **self.config.to_options())

    def quant_config(self, policy: dict[str, Any]):
        opts = {k: v for k, v in self.options.items() if k != "rotation_update"}
        saved, self.options = self.options, opts
        try:
            return super().quant_config(policy)
        finally:
            self.options = saved

    def prepare(self, model: nn.Module, policy: dict[str, Any]) -> list[str]:
        from bnnopt.nn import quantized_layers

        names = super().prepare(model, policy)
        for _, layer in quantized_layers(model):
            layer.weight_quantizer.attach(layer.weight)
        return names

    def on_epoch_start(self, epoch: int, total_epochs: int) -> None:
        from bnnopt.nn import quantized_layers, set_progress

        set_progress(self._model, epoch / max(total_epochs, 1))
        if epoch % self.options["rotation_update"] == 0:
            for _, layer in quantized_layers(self._model):
                layer.weight_quantizer.update_rotation(layer.weight)
