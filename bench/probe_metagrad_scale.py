"""How a trained learned-gradient run's generated gradient relates to STE's.

For each run directory (a finished ``bnnopt train`` / ``compare`` run of fcgrad,
multifc, lstmfc or fsg), rebuilds the model, the method and its meta-nets from
``checkpoint.pt`` and generates the gradient of the next step from the stored
g = dL/dQ and W-hat, exactly as training would (on a copy: nothing is written).
Over all quantized weights it prints

    |c*g|        the STE gradient (c = dA/dW, the calibration)
    |G|          the generated gradient handed to the base optimizer
    |G|/|c*g|    its scale relative to STE's (a learned step-size factor under SGD)
    cos(G, c*g)  whether it still points where STE's does
and for FSG the two parts of G = c*F - (beta/eta)*S separately (``fast``, ``slow``; with
``slow_scale=lr-schedule`` beta is beta*eta/eta_0). G is the raw generated gradient:
a run with ``grad_norm=ste`` hands the base optimizer G rescaled to |c*g| per layer.

    PYTHONPATH=src python bench/probe_metagrad_scale.py runs/cmp/fsg_adam_/s0 ...
    PYTHONPATH=src python bench/probe_metagrad_scale.py RUN... --json out.json
"""
from __future__ import annotations

import argparse
import sys

import torch


def probe(run_dir: str) -> dict:
    from bnnopt.methods.learned.base import LearnedGradientMethod
    from bnnopt.train.checkpoint import build_model, load_checkpoint
    from bnnopt.train.config import RunConfig

    ckpt = load_checkpoint(run_dir)
    cfg = RunConfig.from_dict(ckpt["config"])
    model, method = build_model(cfg, ckpt["data"])
    if not isinstance(method, LearnedGradientMethod):
        raise ValueError(f"{run_dir}: method {cfg.method!r} generates no gradient; "
                         "use a run of fcgrad, multifc, lstmfc or fsg")
    method.prepare(model, dict(cfg.policy))
    model.load_state_dict(ckpt["model"])
    method.build(model, cfg.optim_config())
    method.load_state_dict(ckpt["method"])
    row = generated_vs_ste(method, cfg)
    row["run"] = run_dir
    return row


def generated_vs_ste(method, cfg) -> dict:
    """The next step's generated gradient G against STE's c*g, for a built method with
    something stored (as :func:`probe` describes); nothing of the method is changed
    except what ``generate`` itself advances (an LSTM's carried state: pass a copy)."""
    from bnnopt.methods.learned.base import MetaInputs, calibration, flat_cat

    layers = [layer for _, layer in method.layers]
    c = [calibration(layer.weight_quantizer, layer.weight) for layer in layers]
    lr = float(method.optimizer.param_groups[0]["lr"])
    with torch.no_grad():
        _, grads = method.generate(MetaInputs(method._g, method._w_hat, c, lr))
    ste = flat_cat([ci * gi for ci, gi in zip(c, method._g)])
    gen = flat_cat(grads)

    def cos(a, b):
        return float(a @ b / (a.norm() * b.norm()).clamp_min(1e-30))

    row = {"method": cfg.method, "optimizer": cfg.optim["name"], "lr": lr,
           "ste_norm": float(ste.norm()), "generated_norm": float(gen.norm()),
           "scale": float(gen.norm() / ste.norm().clamp_min(1e-30)), "cos": cos(gen, ste)}
    if cfg.method == "fsg" and method.options["variant"] == "paper" and lr > 0:
        from bnnopt.methods.learned.variants import slow_weight

        beta = slow_weight(float(method.options["beta"]), lr, method.base_lr,
                           method.options.get("slow_scale", "constant"))
        with torch.no_grad():  # G = c*F - (beta/eta)*S: recover S from the look-ahead part
            hist = [buf.sequence() for buf in method.hgs]
            slow = -(beta / lr) * method.slow_gradients(hist, method._scales(hist))
        fast = gen - slow
        row.update({"fast_norm": float(fast.norm()), "slow_norm": float(slow.norm()),
                    "cos_fast": cos(fast, ste), "cos_slow": cos(slow, ste)})
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", help="run directories (or checkpoint files)")
    p.add_argument("--json", help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    print(f"{'run':60s} {'|c*g|':>9s} {'|G|':>9s} {'|G|/|c*g|':>9s} {'cos':>6s}  fsg: "
          "|fast| cos |slow| cos")
    for run in args.runs:
        r = probe(run)
        rows.append(r)
        extra = (f"  {r['fast_norm']:.3e} {r['cos_fast']:.2f} {r['slow_norm']:.3e} "
                 f"{r['cos_slow']:.2f}" if "fast_norm" in r else "")
        print(f"{run[-60:]:60s} {r['ste_norm']:9.3e} {r['generated_norm']:9.3e} "
              f"{r['scale']:9.2f} {r['cos']:6.3f}{extra}", flush=True)
    if args.json:
        from bnnopt.runs.io import write_json

        write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
