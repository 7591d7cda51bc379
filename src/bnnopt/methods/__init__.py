"""bnnopt.methods: what happens inside one optimisation step, in three families.

- :mod:`bnnopt.methods.base`: the :class:`Method` interface the Trainer drives, and
  the base-optimizer factory;
- :mod:`bnnopt.methods.estimator`: ``binarize_`` + any optimizer (STE, EDE, ReSTE, ...);
- :mod:`bnnopt.methods.learned`: meta-nets that generate the gradient (MetaQuant, FSG);
- :mod:`bnnopt.methods.lossaware`: optimizers that own quantization (LAB, LAQ, BLAQ).

Importing the package registers every method in ``METHODS``.
"""
from bnnopt.methods.base import Method, OptimConfig, StepOutput, build_optimizer  # noqa: F401
from bnnopt.methods import estimator, learned, lossaware  # noqa: F401  (registers entries)
from bnnopt.methods import bop  # noqa: F401  (registers "bop")
