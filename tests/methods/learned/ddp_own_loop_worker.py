"""Worker of test_optimizer_ddp.py (run by torchrun, not by pytest): each rank trains a
DistributedDataParallel tiny model with bnnopt.FSG / FCGrad / LSTMFC on its half of every
global batch (the meta work split across the ranks) and saves its model and optimizer
state to OUT_DIR/<name>-rank<r>.pt (LSTMFC's state_dict() gathers the ranks' hidden
states: every rank calls it)."""
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import bnnopt

OPTIONS = {"fsg": (bnnopt.FSG, {"history": 2}), "fcgrad": (bnnopt.FCGrad, {}),
           "lstmfc": (bnnopt.LSTMFC, {"hidden": 4})}


def global_batches(n):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(10, 6, generator=g, dtype=torch.float64),
             torch.randint(0, 3, (10,), generator=g)) for _ in range(n)]


def build(name):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(),
                          nn.Linear(8, 3)).double()
    cls, options = OPTIONS[name]
    bnnopt.binarize_(model, cls.quant_config(options, keep_first=False, keep_last=False))
    return model, cls, options


def main() -> None:
    out = Path(sys.argv[1])
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    for name in OPTIONS:
        model, cls, options = build(name)
        ddp = DistributedDataParallel(model)
        opt = cls(ddp, torch.optim.SGD(ddp.parameters(), lr=0.05, momentum=0.9), options)
        opt.method.meta_split = True  # fcgrad's default is off; every method's split path is tested
        for x, y in global_batches(4):
            xs, ys = x.chunk(world)[rank], y.chunk(world)[rank]

            def closure(opt=opt, ddp=ddp, xs=xs, ys=ys):
                opt.zero_grad()
                loss = F.cross_entropy(ddp(xs), ys)
                loss.backward()
                return loss
            opt.step(closure)
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(),
                    "split": opt.method.split_active()},
                   out / f"{name}-rank{rank}.pt")
    model, cls, options = build("fsg")
    ddp = DistributedDataParallel(model)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    opt = cls(ddp, torch.optim.SGD(ddp.parameters(), lr=0.05, momentum=0.9), options,
              scaler=scaler)
    for x, y in scaled_batches():
        xs, ys = x.chunk(world)[rank], y.chunk(world)[rank]
        run_scaled(opt, scaler, ddp, xs, ys)
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(),
                "scale": scaler.get_scale(), "split": opt.method.split_active()},
               out / f"fsg-scaler-rank{rank}.pt")
    dist.destroy_process_group()


def scaled_batches():
    """Five global batches; the third has an infinite input (a step a GradScaler skips)."""
    batches = global_batches(5)
    batches[2][0][-1, 0] = float("inf")  # in the last rows: rank 1's half only
    return batches


def run_scaled(opt, scaler, model, x, y):
    """One two-phase step of bnnopt's optimizer with a GradScaler."""
    opt.zero_grad()
    with opt.lookahead():
        scaler.scale(F.cross_entropy(model(x), y)).backward()
    scaler.step(opt)
    scaler.update()


if __name__ == "__main__":
    main()
