"""Worker script for the multi-process tests (run by ``torchrun``, not by pytest).

Usage: torchrun --standalone --nproc-per-node 2 dist_worker.py CASES.json OUT_DIR

CASES.json maps a case name to ``{"config": RunConfig dict, "epochs": E,
"sync_learned": bool, "meta_split": bool}``. For every case each rank builds a Trainer
(under the process group torchrun describes), trains E epochs with ``train_epoch`` and
saves to ``OUT_DIR/<case>-rank<r>.pt`` its model state, method state, metrics rows,
batch counts and whether the learned-gradient meta work was split across the ranks.
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
        if not case.get("sync_learned", True):
            trainer.method.sync_learned = False
        if "meta_split" in case:
            trainer.method.meta_split = case["meta_split"]
        rows = [trainer.train_epoch(e) for e in range(case.get("epochs", 1))]
        torch.save({"model": trainer.model.state_dict(), "method": trainer.method.state_dict(),
                    "rows": rows, "batches": len(trainer.train_loader),
                    "dropped": trainer.train_loader.dropped_images(),
                    "split": bool(getattr(trainer.method, "split_active", lambda: False)())},
                   out / f"{name}-rank{ctx.rank}.pt")
    shutdown(ctx)


if __name__ == "__main__":
    main()
