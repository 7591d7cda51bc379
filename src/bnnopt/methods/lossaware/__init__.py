"""bnnopt.methods.lossaware: the loss-aware family (LAB, LAQ, BLAQ) — optimizers that own quantization.

    import bnnopt
    opt = bnnopt.LAQ(model, lr=1e-3, bits=2)          # swaps model's layers, then optimizes
    opt = bnnopt.BLAQ(model, lr=1e-3, bits=2, a=0.6)  # opt.step(closure): two passes per step

Modules: ``levels`` (level sets, D-weighted scale solvers), ``quantizer`` (the
"lossaware" weight quantizer, registered in QUANTIZERS), ``prepare`` (swapping a
plain model's layers), ``laq`` (LAB/LAQ), ``blaq`` (BLAQ), ``method`` (the
``lab``, ``laq``, ``blaq`` METHODS).
"""
from bnnopt.methods.lossaware.levels import (  # noqa: F401
    BITS,
    LEVEL_KINDS,
    code_table,
    level_values,
    project,
    scale_for,
    scale_official,
    solve,
    solve_exact,
    weighted_error,
)
from bnnopt.methods.lossaware.quantizer import LossAwareQuantizer, is_lossaware  # noqa: F401
from bnnopt.methods.lossaware.prepare import prepare_lossaware  # noqa: F401
from bnnopt.methods.lossaware.laq import LAB, LAQ, NonFiniteStepError, lossaware_params  # noqa: F401
from bnnopt.methods.lossaware.blaq import BLAQ  # noqa: F401
from bnnopt.methods.lossaware.method import BLAQMethod, LABMethod, LAQMethod, LossAwareMethod  # noqa: F401
