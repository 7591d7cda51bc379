"""The BLAQ paper's toy problems: LAQ zig-zags, BLAQ does not (BLAQ Fig. 1 and the
toy ``f(w) = c w^(3/2)`` of its section "Zig-zagging-like Issue of Weight Updating").

The first two toys run the library's real optimizers (:class:`bnnopt.methods.lossaware.LAQ` and
:class:`bnnopt.methods.lossaware.BLAQ`, Adam-style D, 1 bit) on a parameter vector W with
one "lossaware" quantizer, in float64:

1. ``quadratic``: ``f(W_hat) = 5 (w1 - 0.054)^2 + (w2 + 0.055)^2`` with the
   1-bit ``W_hat = alpha sign(W)``, ``alpha = ||D W||_1 / ||D||_1`` (one scale for
   both coordinates). The minimiser (0.054, -0.055) is close to, but not on, the
   quantized set, so the gradient at W_hat keeps pushing the latent weights
   across the quantization boundaries: LAQ's latent trajectory zig-zags.
2. ``power``: ``f(w) = c |w|^(3/2)`` for one scalar (the paper writes
   ``c w^(3/2)``; the absolute value extends it to w < 0). At 1 bit a scalar is
   quantized exactly (alpha = |w|), so LAQ here is the Adam-style step on a
   function whose curvature is unbounded at its minimum 0, and it oscillates
   around 0; BLAQ's trial gradient points back and damps the oscillation.
3. ``power_newton``: the paper's own mechanism on that toy -- Eq. 2-3 with D the
   exact (diagonal) Hessian ``D = f''`` instead of Adam's second moment, one scalar,
   1 bit (Eq. 2 then gives ``w_hat = w``). For ``w > 0``: ``f' = 1.5 c w^(1/2)``,
   ``f'' = 0.75 c w^(-1/2)``, so LAQ's Eq. 3 step ``w - f'/f''`` is ``-w``: LAQ
   cycles between ``+w0`` and ``-w0`` for every start, the paper's claim. BLAQ
   (Eq. 4-10, ``reading="trial"``): the trial point is ``-w_t``, where
   ``g* = -g_t`` and ``D* = D_t``, so the mixed step is
   ``w_{t+1} = w_t - (2a - 1) g_t / D_t = (3 - 4a) w_t``: it converges for
   ``1/2 < a < 1`` (monotonically for a <= 3/4: ``0.6 w_t`` at the paper's a = 0.6;
   ``-0.6 w_t`` at a = 0.9). The one-pass ``reading="recursive"`` (mixing the
   previous mixed gradient and D) is run beside them. This toy is computed here
   directly (no Adam, no learning rate), with f' and f'' from autograd.

Reported for each (run on ``steps`` steps; "last" = the last ``last`` steps):
the zig-zag statistics of :mod:`bnnopt.diagnostics.zigzag` over the latent weights
and their 1-bit codes -- ``max_amplitude`` (largest peak-to-peak swing between
consecutive turning points), ``flips`` (sign flips of the quantized weights),
``reversals`` (direction changes) -- plus the final loss and latent weights.

``run_toy(out_dir)`` writes ``toy.json``, ``toy_quadratic.png`` (latent and
quantized trajectories over the loss contours, like BLAQ Fig. 1) and
``toy_power.png`` (w_t against t: the Adam-style run and the D = f'' one).
``bnnopt toy`` calls it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import torch

from bnnopt.methods.lossaware import BLAQ, LAQ, LossAwareQuantizer
from bnnopt.diagnostics.zigzag import sequence_stats

__all__ = ["run_toy", "trajectory", "newton_trajectory", "quadratic_loss", "power_loss",
           "add_toy_command"]

TARGET = (0.054, -0.055)


def quadratic_loss(w_hat: torch.Tensor) -> torch.Tensor:
    """5 (w1 - 0.054)^2 + (w2 + 0.055)^2 (BLAQ Fig. 1)."""
    return 5 * (w_hat[0] - TARGET[0]) ** 2 + (w_hat[1] - TARGET[1]) ** 2


def power_loss(w_hat: torch.Tensor, c: float = 1.0) -> torch.Tensor:
    """c |w|^(3/2), summed over the entries."""
    return c * w_hat.abs().pow(1.5).sum()


def trajectory(method: str, loss_fn: Callable[[torch.Tensor], torch.Tensor], w0: list[float],
               steps: int, lr: float, a: float = 0.6, betas: tuple[float, float] = (0.9, 0.999),
               clip: float | None = None) -> dict[str, torch.Tensor]:
    """Run 1-bit ``method`` ("laq" or "blaq") from ``w0``; returns the float64 tensors
    ``w`` [steps+1, n] (latent), ``w_hat`` [steps+1, n], ``codes`` [steps+1, n] and
    ``loss`` [steps] (at the quantized point before each step)."""
    w = torch.nn.Parameter(torch.tensor(w0, dtype=torch.float64))
    quantizer = LossAwareQuantizer(bits=1)
    quantizer.requantize(w, None)
    if method == "laq":
        opt = LAQ([(w, quantizer)], lr=lr, betas=betas, clip=clip)
    elif method == "blaq":
        opt = BLAQ([(w, quantizer)], lr=lr, betas=betas, clip=clip, a=a)
    else:
        raise ValueError(f"invalid toy method {method!r}; valid: laq, blaq")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = loss_fn(quantizer(w))
        loss.backward()
        return loss

    ws, hats = [w.detach().clone()], [quantizer(w).detach()]
    codes, losses = [quantizer.codes.clone()], []
    for _ in range(steps):
        if method == "laq":
            loss = closure()
            opt.step()
        else:
            loss = opt.step(closure)
        losses.append(float(loss.detach()))
        ws.append(w.detach().clone())
        hats.append(quantizer(w).detach())
        codes.append(quantizer.codes.clone())
    return {"w": torch.stack(ws), "w_hat": torch.stack(hats), "codes": torch.stack(codes),
            "loss": torch.tensor(losses, dtype=torch.float64)}


def _derivatives(w_hat: torch.Tensor, loss_fn) -> tuple[torch.Tensor, torch.Tensor]:
    """(f'(w_hat), diag f''(w_hat)) by autograd (exact for a scalar)."""
    x = w_hat.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(loss_fn(x), x, create_graph=True)
    d = torch.stack([torch.autograd.grad(g[i], x, retain_graph=True)[0][i]
                     for i in range(x.numel())])
    return g.detach(), d.detach()


def newton_trajectory(method: str, w0: list[float], steps: int, a: float = 0.6,
                      c: float = 1.0, reading: str = "trial") -> dict[str, torch.Tensor]:
    """BLAQ's toy ``f = c |w|^(3/2)`` under the paper's Eq. 2-3 (LAQ) / Eq. 4-10 (BLAQ)
    with ``D = f''`` (module docstring). Returns float64 ``w`` [steps+1, n] (latent),
    ``w_hat`` and ``codes`` [steps+1, n] and ``loss`` [steps]. A step that reaches
    ``w_hat = 0`` exactly (where f'' is infinite) stops there: the rest repeats it.
    """
    from bnnopt.methods.lossaware.levels import solve

    if method not in ("laq", "blaq"):
        raise ValueError(f"invalid toy method {method!r}; valid: laq, blaq")
    if reading not in ("trial", "recursive"):
        raise ValueError(f"invalid reading {reading!r}; valid: trial, recursive")

    def f(v):
        return power_loss(v, c)

    def quantize(v, d):  # Eq. 2 / 5 / 7: argmin_{alpha, b} ||v - alpha b||_D^2, 1 bit
        alpha, codes, _ = solve(v, d, 1)
        return alpha * (codes.double() * 2 - 1), codes

    w = torch.tensor(w0, dtype=torch.float64)
    w_hat, codes = quantize(w, None)
    ws, hats, cs, losses = [w.clone()], [w_hat.clone()], [codes.clone()], []
    mix = None
    for _ in range(steps):
        losses.append(float(f(w_hat)))
        if bool((w_hat == 0).all()):
            ws.append(w.clone()), hats.append(w_hat.clone()), cs.append(codes.clone())
            continue
        g, d = _derivatives(w_hat, f)
        if method == "laq":
            w = w_hat - g / d                                   # Eq. 3
        elif reading == "trial":
            w_trial = w - g / d                                 # Eq. 6
            w_hat_trial, _ = quantize(w_trial, d)               # Eq. 5
            g_t, d_t = _derivatives(w_hat_trial, f)             # trial gradient and D
            g_mix, d_mix = a * g + (1 - a) * g_t, a * d + (1 - a) * d_t   # Eq. 9-10
            w = w - g_mix / d_mix                               # Eq. 8 (from w_t)
            d = d_mix
        else:
            mix = (g, d) if mix is None else (a * mix[0] + (1 - a) * g, a * mix[1] + (1 - a) * d)
            w = w - mix[0] / mix[1]
            d = mix[1]
        w_hat, codes = quantize(w, d)                           # Eq. 2 / 7
        ws.append(w.clone()), hats.append(w_hat.clone()), cs.append(codes.clone())
    return {"w": torch.stack(ws), "w_hat": torch.stack(hats), "codes": torch.stack(cs),
            "loss": torch.tensor(losses, dtype=torch.float64)}


def _summary(run: dict[str, torch.Tensor], last: int) -> dict[str, Any]:
    w, codes = run["w"], run["codes"]
    return {"all": sequence_stats(w, codes),
            "last": sequence_stats(w[-last - 1:], codes[-last - 1:]),
            "final_loss": float(run["loss"][-1]), "best_loss": float(run["loss"].min()),
            "final_w": w[-1].tolist(), "final_w_hat": run["w_hat"][-1].tolist()}


def _ratio(laq: dict[str, Any], blaq: dict[str, Any], key: str) -> dict[str, float | None]:
    out = {}
    for window in ("all", "last"):
        den = blaq[window][key]
        out[window] = None if den == 0 else laq[window][key] / den
    return out


NEWTON_STEPS = 30
NEWTON_RUNS = {"laq": ("laq", "trial"), "blaq": ("blaq", "trial"),
               "blaq_recursive": ("blaq", "recursive")}

STARTS = ((0.1, 0.08), (-0.1, 0.1), (0.2, -0.2), (-0.05, -0.1), (0.15, 0.02))


def _sweep(starts, steps: int, last: int, lr: float, a: float) -> dict[str, Any]:
    """The quadratic toy from several starts: how often BLAQ is calmer (last window)."""
    rows = []
    for w0 in starts:
        row = {"w0": list(w0)}
        for m in ("laq", "blaq"):
            r = trajectory(m, quadratic_loss, list(w0), steps, lr, a)
            row[m] = sequence_stats(r["w"][-last - 1:], r["codes"][-last - 1:])
        rows.append(row)
    count = len(rows)
    return {
        "runs": rows,
        "blaq_fewer_flips": sum(r["blaq"]["flips"] < r["laq"]["flips"] for r in rows),
        "blaq_at_most_flips": sum(r["blaq"]["flips"] <= r["laq"]["flips"] for r in rows),
        "blaq_lower_amplitude": sum(r["blaq"]["max_amplitude"] < r["laq"]["max_amplitude"]
                                    for r in rows),
        "starts": count,
        "mean": {m: {k: sum(r[m][k] for r in rows) / count
                     for k in ("max_amplitude", "flips", "reversals")} for m in ("laq", "blaq")},
    }


def run_toy(out_dir: str | Path = "runs/toy", steps: int = 200, last: int = 100,
            lr: float = 0.05, a: float = 0.6, w0: tuple[float, float] = (0.1, 0.08),
            power_w0: float = 1.0, power_lr: float = 0.05, power_c: float = 1.0,
            starts=STARTS, plot: bool = True) -> dict[str, Any]:
    """Run both toys with LAQ and BLAQ; write toy.json (+ PNGs); return the results.

    ``starts``: start points of the robustness sweep of the quadratic toy (key
    "quadratic_sweep"; empty to skip).
    """
    if steps < 2 or not 1 <= last <= steps:
        raise ValueError(f"invalid steps/last {steps!r}/{last!r}; "
                         "need steps >= 2 and 1 <= last <= steps")
    from bnnopt.runs.io import check_output_dir

    out = check_output_dir(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    quad = {m: trajectory(m, quadratic_loss, list(w0), steps, lr, a) for m in ("laq", "blaq")}
    power = {m: trajectory(m, lambda v: power_loss(v, power_c), [power_w0], steps, power_lr, a)
             for m in ("laq", "blaq")}
    newton_steps = min(steps, NEWTON_STEPS)
    newton = {name: newton_trajectory(m, [power_w0], newton_steps, a, power_c, reading)
              for name, (m, reading) in NEWTON_RUNS.items()}
    result: dict[str, Any] = {
        "settings": {"steps": steps, "last": last, "a": a, "bits": 1, "betas": [0.9, 0.999],
                     "quadratic": {"lr": lr, "w0": list(w0), "target": list(TARGET)},
                     "power": {"lr": power_lr, "w0": power_w0, "c": power_c}},
        "quadratic": {m: _summary(r, last) for m, r in quad.items()},
        "power": {m: _summary(r, last) for m, r in power.items()},
        "power_newton": {name: {**_summary(r, min(last, newton_steps)),
                                "w": r["w"][:, 0].tolist()}
                         for name, r in newton.items()},
    }
    result["settings"]["power_newton"] = {"steps": newton_steps, "D": "f''", "a": a,
                                          "w0": power_w0, "c": power_c}
    for toy in ("quadratic", "power"):
        laq, blaq = result[toy]["laq"], result[toy]["blaq"]
        result[toy]["laq_over_blaq"] = {k: _ratio(laq, blaq, k)
                                        for k in ("max_amplitude", "flips", "reversals")}
    if starts:
        result["quadratic_sweep"] = _sweep(starts, steps, last, lr, a)
    if plot:
        result["figures"] = [_plot_quadratic(quad, out / "toy_quadratic.png"),
                             _plot_power(power, newton, out / "toy_power.png")]
    tmp = out / "toy.json.tmp"
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(out / "toy.json")
    return result


COLORS = {"laq": "tab:red", "blaq": "tab:blue"}


def _plot_quadratic(runs: dict[str, dict[str, torch.Tensor]], path: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = torch.cat([r["w"] for r in runs.values()] + [r["w_hat"] for r in runs.values()])
    lo, hi = pts.min(0).values - 0.02, pts.max(0).values + 0.02
    g1, g2 = torch.meshgrid(torch.linspace(float(lo[0]), float(hi[0]), 200),
                            torch.linspace(float(lo[1]), float(hi[1]), 200), indexing="ij")
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.contour(g1, g2, quadratic_loss(torch.stack([g1, g2])), levels=20, cmap="Greys",
               linewidths=0.6)
    for name, r in runs.items():
        ax.plot(r["w"][:, 0], r["w"][:, 1], "-o", ms=2, lw=0.8, color=COLORS[name],
                label=f"{name.upper()} latent W")
        ax.plot(r["w_hat"][:, 0], r["w_hat"][:, 1], "x", ms=4, color=COLORS[name], alpha=0.5,
                label=f"{name.upper()} quantized")
    ax.plot(*TARGET, "k*", ms=10, label="minimiser")
    ax.axhline(0, color="k", lw=0.4)
    ax.axvline(0, color="k", lw=0.4)
    ax.set_xlabel("w1")
    ax.set_ylabel("w2")
    ax.set_title("5(w1-0.054)^2 + (w2+0.055)^2, 1 bit: LAQ vs BLAQ")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path.name


def _plot_power(runs: dict[str, dict[str, torch.Tensor]],
                newton: dict[str, dict[str, torch.Tensor]], path: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.5))
    for name, r in runs.items():
        ax.plot(r["w"][:, 0], lw=0.9, color=COLORS[name], label=name.upper())
    ax.set_title("f(w) = c |w|^(3/2), 1 bit, Adam-style D")
    styles = {"laq": ("tab:red", "-o"), "blaq": ("tab:blue", "-o"),
              "blaq_recursive": ("tab:green", "--s")}
    for name, r in newton.items():
        color, style = styles[name]
        bx.plot(r["w"][:, 0], style, ms=3, lw=0.9, color=color, label=name)
    bx.set_title("same toy, paper's Eq. 2-3 / 4-10 with D = f''")
    for axis in (ax, bx):
        axis.axhline(0, color="k", lw=0.4)
        axis.set_xlabel("step")
        axis.set_ylabel("w")
        axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path.name


def add_toy_command(subparsers) -> None:
    """Register ``bnnopt toy`` on an argparse subparsers object."""
    p = subparsers.add_parser("toy", help="BLAQ paper toy problems: LAQ vs BLAQ zig-zag (PNG+JSON)")
    p.add_argument("--out", default="runs/toy", help="output directory")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--last", type=int, default=100, help="window of the 'last' statistics")
    p.add_argument("--lr", type=float, default=0.05, help="lr of the 2-D quadratic toy")
    p.add_argument("--a", type=float, default=0.6, help="BLAQ mixing coefficient")
    p.add_argument("--json", action="store_true", help="print toy.json to stdout")
    p.set_defaults(func=_cmd_toy)


def _cmd_toy(args) -> int:
    result = run_toy(args.out, steps=args.steps, last=args.last, lr=args.lr, a=args.a)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{'toy':<10} {'method':<6} {'window':<6} {'max_amp':>9} {'flips':>6} "
          f"{'reversals':>9} {'final loss':>11}")
    for toy in ("quadratic", "power"):
        for m in ("laq", "blaq"):
            r = result[toy][m]
            for window in ("all", "last"):
                z = r[window]
                print(f"{toy:<10} {m:<6} {window:<6} {z['max_amplitude']:9.4f} {z['flips']:6d} "
                      f"{z['reversals']:9d} {r['final_loss']:11.3e}")
    pn = result["power_newton"]
    print(f"\npower toy with the paper's D = f'' (Eq. 2-3 / 4-10), w0 = "
          f"{result['settings']['power']['w0']}, a = {args.a}, "
          f"{result['settings']['power_newton']['steps']} steps:")
    for name, r in pn.items():
        traj = ", ".join(f"{v:+.3g}" for v in r["w"][:6])
        print(f"  {name:<15} flips {r['all']['flips']:3d}  final |w| {abs(r['final_w'][0]):.3e}"
              f"  w_t: {traj}, ...")
    if "quadratic_sweep" in result:
        sw = result["quadratic_sweep"]
        print(f"quadratic toy from {sw['starts']} starts (last {args.last} steps): BLAQ fewer "
              f"flips in {sw['blaq_fewer_flips']}, at most as many in {sw['blaq_at_most_flips']},"
              f" lower amplitude in {sw['blaq_lower_amplitude']}")
    print(f"wrote {Path(args.out) / 'toy.json'} and PNGs")
    return 0
