"""bnnopt.train: the Trainer, methods of the estimator family, run records."""
from bnnopt.train.config import RunConfig, load_toml  # noqa: F401
from bnnopt.train.method import Method, OptimConfig, StepOutput, build_optimizer  # noqa: F401
from bnnopt.train import estimator_methods, protocols  # noqa: F401  (registers entries)
from bnnopt.train.trainer import Trainer, evaluate, summarize  # noqa: F401
from bnnopt.train.checkpoint import load_checkpoint, load_model  # noqa: F401
