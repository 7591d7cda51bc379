"""Deprecated alias of :mod:`bnnopt.methods.learned` (and :mod:`bnnopt.ssm`); kept for one release."""
import warnings

from bnnopt.methods.learned import *  # noqa: F401,F403
from bnnopt.methods.learned import __all__ as _learned_all
from bnnopt.ssm import Mamba, selective_scan, selective_scan_ref  # noqa: F401

__all__ = [*_learned_all, "Mamba", "selective_scan", "selective_scan_ref"]

warnings.warn("bnnopt.hyper is deprecated; import from bnnopt.methods.learned "
              "(Mamba and selective_scan: bnnopt.ssm)", DeprecationWarning, stacklevel=2)
