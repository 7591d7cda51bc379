"""bnnopt.train: the training loop — Trainer, schedule, precision, distributed, checkpoint, config."""
from bnnopt.train.config import RunConfig, load_toml  # noqa: F401
from bnnopt.methods.base import Method, OptimConfig, StepOutput, build_optimizer  # noqa: F401
from bnnopt.train.trainer import Trainer, evaluate, summarize  # noqa: F401
from bnnopt.train.checkpoint import load_checkpoint, load_model  # noqa: F401
