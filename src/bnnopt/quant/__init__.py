"""bnnopt.quant: forward quantizers and backward (surrogate-gradient) estimators.

Importing this package registers the estimators (``ESTIMATORS``: ste,
clipped_ste, approx_sign, ede, reste, rbnn_sign, rbnn_act_sign), the weight quantizers
(``QUANTIZERS``: sign, dorefa, bwn, uniform, rbnn) and the activation quantizers
(``ACT_QUANTIZERS``: sign, dorefa, standardized). Convention: sign(0) := +1.

    from bnnopt.quant import make_weight_quantizer
    q = make_weight_quantizer("dorefa", bits=1, estimator="ste")
    w_q = q(w)                                  # forward value, surrogate gradient
    enc = q.encode(w); q.decode(enc)            # == w_q bit for bit

    sched = EstimatorSchedule(model, total_epochs=E)   # anneals EDE / ReSTE / RBNN
    sched.step()                                        # once per epoch (or per step)
"""
from bnnopt.quant._functions import (
    EDE,
    ApproxSign,
    KBitRound,
    ReSTE,
    SignClipped,
    SignSTE,
    UnitQuantize,
    binary_sign,
    kbit_codes,
    levels_from_codes,
)
from bnnopt.quant.activation import (
    ACT_QUANTIZERS,
    ActQuantizer,
    DoReFaActivation,
    SignActivation,
    make_act_quantizer,
)
from bnnopt.quant.estimators import (
    ApproxSignEstimator,
    ClippedSTEEstimator,
    EDEEstimator,
    Estimator,
    ReSTEEstimator,
    STEEstimator,
    approx_sign,
    ede,
    ede_schedule,
    make_estimator,
    reste,
    reste_schedule,
    sign_clipped_ste,
    sign_ste,
)
from bnnopt.quant.weight import (
    MULTIBIT_ESTIMATORS,
    BWNQuantizer,
    DoReFaQuantizer,
    ScaledSignQuantizer,
    SignQuantizer,
    UniformQuantizer,
    WeightQuantizer,
    make_weight_quantizer,
)
from bnnopt.quant._lookup import resolve as resolve_spec
from bnnopt.quant.schedule import EstimatorSchedule, estimator_progress, set_estimator_progress
from bnnopt.registry import ESTIMATORS, QUANTIZERS

from bnnopt.quant.rbnn import (  # noqa: E402  (registers rbnn, rbnn_sign, rbnn_act_sign)
    RBNNActivation,
    RBNNActSignEstimator,
    RBNNQuantizer,
    RBNNSignEstimator,
)
from bnnopt.quant import bitnet  # noqa: E402,F401  (registers bitnet, bitnet_b158, absmax*)

__all__ = [
    "ESTIMATORS", "QUANTIZERS",
    # autograd Functions and helpers
    "SignSTE", "SignClipped", "ApproxSign", "EDE", "ReSTE", "KBitRound", "UnitQuantize",
    "binary_sign", "kbit_codes", "levels_from_codes",
    # estimators
    "Estimator", "STEEstimator", "ClippedSTEEstimator", "ApproxSignEstimator", "EDEEstimator",
    "ReSTEEstimator", "make_estimator", "sign_ste", "sign_clipped_ste", "approx_sign", "ede",
    "reste", "ede_schedule", "reste_schedule",
    # annealing
    "EstimatorSchedule", "estimator_progress", "set_estimator_progress",
    # names or objects
    "resolve_spec",
    # weight quantizers
    "WeightQuantizer", "SignQuantizer", "DoReFaQuantizer", "BWNQuantizer", "ScaledSignQuantizer",
    "UniformQuantizer",
    "make_weight_quantizer", "MULTIBIT_ESTIMATORS", "RBNNQuantizer", "RBNNSignEstimator",
    "RBNNActSignEstimator", "RBNNActivation",
    # activation quantizers
    "ACT_QUANTIZERS", "ActQuantizer", "SignActivation", "DoReFaActivation", "make_act_quantizer",
]
