"""The first steps of a learned-gradient run, step by step: does G still point downhill?

Builds the run of a config exactly as ``bnnopt train`` would (a run directory's
``config.json``, or any config file ``RunConfig.from_dict`` reads, with ``--set``
overrides), trains its first ``--steps`` steps of epoch 1 and, before each step,
compares the gradient that step will hand to the base optimizer with STE's
(:func:`probe_metagrad_scale.generated_vs_ste`, on a copy of the method):

    loss        the step's training loss
    |G|/|c*g|   the raw generated gradient's scale relative to STE's
    cos(G,c*g)  its direction relative to STE's (< 0: uphill)
    fast, slow  FSG (paper variant): cos of c*F and of -(beta/eta)*S with c*g
    gain        FSG product form: the fast-net's output phi_f(1), its gain at W-hat = 1
                (phi_f is bias-free and linear: phi_f(x) = gain * x)

    PYTHONPATH=src python bench/trace_meta_steps.py runs/cmp/fsg_adam_/s2/config.json \
        --steps 32 [--set method_options.grad_norm=ste-detached] [--json out.json]

Nothing is written besides ``--json``. Used for docs/results.md ("grad_norm=ste: the
meta-nets turned the step uphill").
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from probe_metagrad_scale import generated_vs_ste  # noqa: E402


def trace(cfg, steps: int) -> list[dict]:
    import torch.nn.functional as F

    from bnnopt.methods.learned.base import LearnedGradientMethod
    from bnnopt.train.schedule import lr_at
    from bnnopt.train.trainer import Trainer

    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, Path(tmp) / "run", log=None)
        method, model = trainer.method, trainer.train_model
        if not isinstance(method, LearnedGradientMethod):
            raise ValueError(f"method {cfg.method!r} generates no gradient; "
                             "valid: fcgrad, multifc, lstmfc, fsg")
        method.on_epoch_start(0, cfg.epochs)
        method.set_lr(lr_at(0, cfg.optim_config().lr, cfg.epochs, cfg.schedule,
                            cfg.step_size, cfg.gamma))
        model.train()
        rows = []
        for step, (x, y) in enumerate(trainer.train_loader.epoch(0)):
            if step >= steps:
                break
            row = {"step": step}
            if method._g is not None:  # from the second step on, G is generated
                row.update(generated_vs_ste(copy.deepcopy(method), cfg))
                fast = method.meta_modules["fast"] if "fast" in method.meta_modules else None
                if cfg.method == "fsg" and method.options.get("fast_form") == "product":
                    with torch.no_grad():
                        ones = torch.ones(1, 1, dtype=next(fast.parameters()).dtype)
                        row["gain"] = float(fast(ones))
            row["loss"] = float(method.train_step(model, x, y, F.cross_entropy).loss)
            rows.append(row)
    return rows


def main(argv=None) -> int:
    from bnnopt.train.config import RunConfig

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("config", help="a run's config.json (or any RunConfig JSON)")
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. seed=2 or method_options.grad_norm=ste")
    p.add_argument("--json", help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    cfg = RunConfig.from_dict(json.loads(Path(args.config).read_text()))
    for assignment in args.set:
        cfg.set(assignment)
    cfg.validate()
    rows = trace(cfg, args.steps)
    widths = {"scale": (9, 2), "cos": (6, 2), "cos_fast": (6, 2), "cos_slow": (6, 2),
              "gain": (8, 3)}
    print(f"{'step':>4s} {'loss':>8s} {'|G|/|c*g|':>9s} {'cos':>6s} {'fast':>6s} {'slow':>6s} "
          f"{'gain':>8s}")
    for r in rows:
        cells = [f"{r[k]:{w}.{d}f}" if k in r else " " * w for k, (w, d) in widths.items()]
        print(f"{r['step']:4d} {r['loss']:8.3f} " + " ".join(cells), flush=True)
    if args.json:
        from bnnopt.runs.io import write_json

        write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
