"""bnnopt.methods.lossaware: the loss-aware family (LAB, LAQ, BLAQ) — optimizers that own quantization.

    from bnnopt.methods.lossaware import LAQ, BLAQ
    opt = LAQ.from_model(model, lr=1e-3)           # model prepared with "lossaware" layers
    opt = BLAQ.from_model(model, lr=1e-3, a=0.6)   # opt.step(closure): two passes per step

Modules: ``levels`` (level sets, D-weighted scale solvers), ``quantizer`` (the
"lossaware" weight quantizer, registered in QUANTIZERS), ``laq`` (LAB/LAQ),
``blaq`` (BLAQ), ``method`` (the ``lab``, ``laq``, ``blaq`` METHODS).
"""
from bnnopt.methods.lossaware.levels import (  # noqa: F401
    BITS,
    LEVEL_KINDS,
    code_table,
    level_values,
    project,
    scale_for,
    solve,
    solve_exact,
    weighted_error,
)
from bnnopt.methods.lossaware.quantizer import LossAwareQuantizer, is_lossaware  # noqa: F401
from bnnopt.methods.lossaware.laq import LAQ, lossaware_params  # noqa: F401
from bnnopt.methods.lossaware.blaq import BLAQ  # noqa: F401
from bnnopt.methods.lossaware.method import BLAQMethod, LABMethod, LAQMethod, LossAwareMethod  # noqa: F401
