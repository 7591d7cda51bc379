"""Deprecated alias of :mod:`bnnopt.methods.lossaware`; kept for one release."""
import warnings

from bnnopt.methods.lossaware import *  # noqa: F401,F403
from bnnopt.methods.lossaware import (  # noqa: F401
    BITS, BLAQ, LAQ, LEVEL_KINDS, BLAQMethod, LABMethod, LAQMethod, LossAwareMethod,
    LossAwareQuantizer, code_table, is_lossaware, level_values, lossaware_params, project,
    scale_for, solve, solve_exact, weighted_error,
)

warnings.warn("bnnopt.optim is deprecated; import from bnnopt.methods.lossaware",
              DeprecationWarning, stacklevel=2)
