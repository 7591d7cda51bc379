"""The estimator family: quantize with binarize_, train with plain autograd.

A method of this family is a (weight quantizer, bits, estimator) triple plus an
optional activation quantizer; the estimator's autograd Function supplies the
surrogate derivative of the binarization. Annealed estimators (IR-Net's EDE,
ReSTE, RBNN's sign approximation) read the training progress p from
``on_epoch_start``, through the same :class:`bnnopt.quant.EstimatorSchedule` a
user's own loop would use: p = epoch / (epochs - 1) (``endpoint=True``), and
p = epoch / epochs for ``rbnn`` (``endpoint=False``, the public RBNN code).

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
    #: EstimatorSchedule's ``endpoint``: True gives p = epoch / (epochs - 1).
    progress_endpoint = True

    def __init__(self, **options: Any):
        #: the resolved typed options (:class:`bnnopt.methods.estimator_config.EstimatorConfig`)
        self.config = EstimatorConfig.from_options(options, method=self.preset_name)
        super().__init__(**self.config.to_options())
        self.estimator_schedule = None  # an EstimatorSchedule, created by on_epoch_start

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
        """Set the estimators' progress for ``epoch`` (0-based) of ``total_epochs``."""
        from bnnopt.quant import EstimatorSchedule

        sched = self.estimator_schedule
        if sched is None or sched.total != total_epochs or sched.model is not self._model:
            sched = EstimatorSchedule(self._model, total_epochs=total_epochs,
                                      endpoint=self.progress_endpoint)
            self.estimator_schedule = sched
        sched.set_step(epoch)


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

    ``prepare`` binarizes with the ``rbnn`` quantizer (``binarize_`` creates each layer's
    R1, R2, alpha and theta); every epoch starts with the alternating update of R1, R2
    (:func:`bnnopt.nn.update_rotations`, every ``rotation_update`` epochs, 1 as in the
    public code) and sets the sign approximation's progress p = epoch / epochs (the
    public code's t schedule). A hand-written loop does the same with ``binarize_``, a
    torch optimizer, ``EstimatorSchedule(model, total_epochs=E, endpoint=False)`` and
    ``update_rotations(model)`` at each epoch start.

    ``act_path``: "policy" (default) quantizes the layer inputs as the policy says
    (act_quantizer None, "sign", "dorefa" with their estimators); "official" uses the
    public code's activation path, the ``standardized`` activation quantizer: every sample's
    input standardised, then (policy act_quantizer "sign": W1A1) binarized with
    ``rbnn_act_sign`` (k = 1, t = max(t, 1)), or (no act_quantizer: W1A32) left in float.
    """

    progress_endpoint = False
    added_options = {"act_path": "policy"}

    def __init__(self, **options: Any):
        self.config = RBNNConfig.from_options(options)
        Method.__init__(self, **self.config.to_options())
        self.estimator_schedule = None

    def quant_config(self, policy: dict[str, Any]):
        if self.options["act_path"] == "official":
            policy = self._official_act_policy(policy)
        opts = {k: v for k, v in self.options.items() if k not in ("rotation_update", "act_path")}
        saved, self.options = self.options, opts
        try:
            return super().quant_config(policy)
        finally:
            self.options = saved

    @staticmethod
    def _official_act_policy(policy: dict[str, Any]) -> dict[str, Any]:
        """The policy with its activation quantizer replaced by the public code's path."""
        policy = dict(policy)
        act = policy.get("act_quantizer")
        act = None if isinstance(act, str) and act.lower() == "none" else act
        if act not in (None, "sign", "standardized"):
            raise ValueError(f"invalid act_quantizer {act!r} for rbnn act_path 'official'; "
                             "valid: none (W1A32, standardised inputs), sign (W1A1)")
        estimator = policy.get("act_estimator", "rbnn_act_sign")
        if estimator != "rbnn_act_sign":
            raise ValueError(f"invalid act_estimator {estimator!r} for rbnn act_path 'official'; "
                             "valid: rbnn_act_sign (the path fixes its estimator)")
        bits = 32 if act is None else 1
        if policy.get("act_bits", bits) not in (bits, 32):
            raise ValueError(f"invalid act_bits {policy['act_bits']!r} for rbnn act_path "
                             f"'official' with act_quantizer {act!r}; valid: {bits}")
        policy.update(act_quantizer="standardized", act_bits=bits, act_estimator="rbnn_act_sign")
        return policy

    def on_epoch_start(self, epoch: int, total_epochs: int) -> None:
        from bnnopt.nn import update_rotations

        super().on_epoch_start(epoch, total_epochs)
        if epoch % self.options["rotation_update"] == 0:
            update_rotations(self._model)
