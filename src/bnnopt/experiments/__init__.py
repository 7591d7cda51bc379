"""bnnopt.experiments: protocols, fair comparisons (tuning, seeds, worker pool), the demo and BLAQ's toy problems."""
from bnnopt.experiments import protocols  # noqa: F401  (registers entries)
