"""Worker for the language-model multi-process tests (run by ``torchrun``, not by pytest).

Usage: torchrun --standalone --nproc-per-node 2 dist_lm_worker.py CASES.json OUT_DIR

CASES.json maps a case name to ``{"config": RunConfig dict}``. For every case each
rank builds a Trainer under the process group torchrun describes, trains one epoch
with ``train_epoch`` and saves its model state, method state and metrics row to
``OUT_DIR/<case>-rank<r>.pt``.
"""
import json
import sys
from pathlib import Path

import torch


def main() -> None:
    cases_file, out = Path(sys.argv[1]), Path(sys.argv[2])
    from bnnopt.train import RunConfig, Trainer
    from bnnopt.train.distributed import init_from_env, shutdown

    ctx = init_from_env("cpu", timeout_s=60)
    assert ctx.world_size > 1, "run me under torchrun with several processes"
    for name, case in json.loads(cases_file.read_text()).items():
        trainer = Trainer(RunConfig.from_dict(case["config"]), out / f"run-{name}", dist=ctx)
        row = trainer.train_epoch(0)
        torch.save({"model": trainer.model.state_dict(), "method": trainer.method.state_dict(),
                    "row": row, "batches": len(trainer.train_loader)},
                   out / f"{name}-rank{ctx.rank}.pt")
        trainer.release_distributed()
    shutdown(ctx)


if __name__ == "__main__":
    main()
