"""bnnopt.runs: run-directory storage — atomic writes, the one-writer lock, the run directory."""
