"""Command-line interface: ``bnnopt <command> ...`` (also ``python -m bnnopt``).

list      registered estimators, quantizers, methods, models, datasets, protocols
summary   per-layer bits, memory, MACs and BOPs of a model, checkpoint or packed file
train     train one run (flags < --protocol < --config < flags < --set key=value)
eval      accuracy of a checkpoint, run directory, packed file or float state dict
compare   several methods x optimizers x seeds on one protocol -> report.md + PNG
report    table of finished run directories (with zig-zag statistics if recorded)
demo      the embedded default: binarized MLP on digits, three methods (fp, ste, irnet), offline
toy       BLAQ's toy problems: LAQ vs BLAQ trajectories and oscillation counts
export    ship a trained binary network: packed bits, ONNX or QONNX

Every error from bad input is one line on stderr and exit status 2 (an argument the
parser refuses: that line plus a one-line hint). A write that fails (disk full, a
file-size limit) is one line naming the file and the cause, exit status 1. SIGTERM is
handled as Ctrl-C: the run stops at once keeping its last checkpoint, the resume
command is printed, and the exit status is 143 (130 for Ctrl-C). A closed standard
output (``bnnopt list | head -1``) ends the output quietly; ``train`` and ``compare``
then train on, writing their records to the run directories as always.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bnnopt.cli.generate import add_generate_command
from bnnopt.runs.io import WriteError
from bnnopt.runs.process import Terminated, exit_status, stop_on_signals, tolerate_closed_stdout
from bnnopt.runs.rundir import clear_run, open_run_dir, resume_dir

FLAG_KEYS = {  # argparse dest -> RunConfig key (scalars)
    "model": "model", "dataset": "dataset", "method": "method", "data_root": "data_root",
    "epochs": "epochs", "batch_size": "batch_size", "seed": "seed", "device": "device",
    "init": "init", "schedule": "schedule", "zigzag": "zigzag",
    "train_limit": "train_limit", "test_limit": "test_limit", "val_fraction": "val_fraction",
    "precision": "precision", "bn_recalibrate": "bn_recalibrate",
}


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a short error: one line naming the problem, one line of hint."""

    def error(self, message: str):  # noqa: D401 - argparse's hook
        print(f"bnnopt: error: {message.splitlines()[0] if message else 'bad arguments'}",
              file=sys.stderr)
        print(f"bnnopt: hint: '{self.prog} --help' lists the arguments", file=sys.stderr)
        raise SystemExit(2)


def _add_run_flags(p: argparse.ArgumentParser, with_method: bool = True) -> None:
    p.add_argument("--protocol", help="named protocol (bnnopt list protocol)")
    p.add_argument("--config", help="TOML file with RunConfig keys (see configs/)")
    p.add_argument("--model")
    p.add_argument("--dataset")
    if with_method:
        p.add_argument("--method")
    p.add_argument("--data-root", dest="data_root",
                   help="dataset directory (default: $BNNOPT_DATA, else ~/.cache/bnnopt)")
    p.add_argument("--download", action="store_true", help="fetch the official archive if missing")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", dest="batch_size", type=int)
    p.add_argument("--optimizer", help="base optimizer: sgd, sgdm or adam")
    p.add_argument("--lr", type=float)
    p.add_argument("--schedule", help="step | cosine | constant")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--init", help="initial weights: FP state dict or bnnopt checkpoint")
    p.add_argument("--zigzag", type=int, help="track N weights for oscillation statistics")
    p.add_argument("--zigzag-every", dest="zigzag_every",
                   help="zig-zag sampling: after every step (default) or once per epoch "
                        "(BLAQ Table 1); window: --set zigzag_options.last_k=K")
    p.add_argument("--train-limit", dest="train_limit", type=int)
    p.add_argument("--test-limit", dest="test_limit", type=int)
    p.add_argument("--val-fraction", dest="val_fraction", type=float,
                   help="hold this fraction of the training set out for validation, chosen by "
                        "the seed; every choice uses it (train: default 0; compare: 0.1)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set method_options.beta=0.5")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="tqdm progress bar (default: on when stderr is a terminal and $CI is unset)")
    p.add_argument("--bn-recalibrate", dest="bn_recalibrate", type=int, metavar="N",
                   help="before each evaluation, re-estimate BatchNorm statistics over N "
                        "training batches with the current weights (0 = off)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    _add_scale_flags(p)


def _add_scale_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--precision", help="fp32 (default) | bf16 | fp16 | fp64: autocast of the "
                   "task network (meta-nets, HGS, loss-aware D/alpha stay fp32)")
    p.add_argument("--channels-last", dest="channels_last", action="store_true", default=None,
                   help="NHWC memory format for the model and its inputs")
    p.add_argument("--sync-bn", dest="sync_bn", action="store_true", default=None,
                   help="under torchrun: BatchNorm statistics over the global batch")
    p.add_argument("--dist-timeout", dest="dist_timeout", type=float, default=None,
                   help="under torchrun: seconds a collective waits for a peer before the job "
                        "fails (default 300)")


def resolve_config(args: argparse.Namespace):
    """defaults < protocol < --config file < flags < --set."""
    from bnnopt.train import RunConfig, load_toml
    from bnnopt.experiments.protocols import protocol_config

    cfg = RunConfig()
    protocol = getattr(args, "protocol", None)
    if getattr(args, "config", None) and Path(args.config).is_dir():
        raise ValueError(f"--config {args.config} is a directory; give a TOML file "
                         "(examples in configs/)")
    data = load_toml(args.config) if getattr(args, "config", None) else {}
    file_protocol = data.pop("protocol", None)
    if file_protocol is not None:  # honoured: the protocol lies beneath the file's keys
        if not isinstance(file_protocol, str):
            raise ValueError(f"invalid protocol {file_protocol!r} in {args.config}; "
                             "expected a protocol name (bnnopt list protocol)")
        if protocol and protocol != file_protocol:
            raise ValueError(f"--protocol {protocol} conflicts with protocol = "
                             f"{file_protocol!r} in {args.config}; give one of them")
        protocol = file_protocol
    if protocol:
        cfg.update(protocol_config(protocol))
    cfg.update(data)
    for dest, key in FLAG_KEYS.items():
        value = getattr(args, dest, None)
        if value is not None:
            cfg.update({key: value})
    if getattr(args, "download", False):
        cfg.download = True
    if getattr(args, "zigzag_every", None):
        cfg.update({"zigzag_options": {"every": args.zigzag_every}})
    for key in ("channels_last", "sync_bn"):
        if getattr(args, key, None):
            cfg.update({key: True})
    if getattr(args, "optimizer", None):
        cfg.update({"optim": {"name": args.optimizer}})
    if getattr(args, "lr", None) is not None:
        cfg.update({"optim": {"lr": args.lr}})
    for assignment in getattr(args, "set", []) or []:
        if assignment.split("=", 1)[0].strip() == "protocol":
            raise ValueError(f"--set {assignment} would only relabel the run; "
                             "choose a protocol with --protocol NAME")
        cfg.set(assignment)
    return cfg.validate()


# flags that define a new run's config: with --resume the run's own config is used
_CONFIG_FLAGS = ("protocol", "config", *FLAG_KEYS, "optimizer", "lr", "set", "download", "out",
                 "channels_last", "sync_bn", "overwrite")


def _refuse_flags_with_resume(args: argparse.Namespace) -> None:
    given = [d for d in _CONFIG_FLAGS if d != "epochs" and getattr(args, d, None)
             not in (None, False, [])]
    if given:
        names = ", ".join("--" + d.replace("_", "-") for d in given)
        raise ValueError(f"--resume continues a run with its own config; {names} cannot be "
                         "changed (only --epochs N, to extend it)")


# -- commands ----------------------------------------------------------------------
def cmd_list(args) -> int:
    from bnnopt.registry import ALL

    kinds = [args.kind] if args.kind else list(ALL)
    for kind in kinds:
        if kind not in ALL:
            raise ValueError(f"unknown kind {kind!r}; valid kinds: {', '.join(ALL)}")
        print(f"{kind}s:")
        for entry in ALL[kind].entries():
            print(f"  {entry.name:<16} {entry.description}")
    return 0


def join_torchrun(args, device: str):
    """Join torchrun's process group if this process was launched by it (else one process)."""
    from bnnopt.train.distributed import DEFAULT_TIMEOUT_S, init_from_env

    timeout = getattr(args, "dist_timeout", None)
    ctx = init_from_env(device, DEFAULT_TIMEOUT_S if timeout is None else timeout)
    if ctx.enabled:
        _stop_quietly_on_sigterm(ctx)
    return ctx


def _stop_quietly_on_sigterm(ctx) -> None:
    """torchrun SIGTERMs the surviving ranks when one fails: say so in one line, exit 143."""
    import signal

    def handler(signum, frame):  # noqa: ARG001
        print(f"bnnopt: rank {ctx.rank}/{ctx.world_size} stopped by torchrun (another rank "
              "failed; torchrun's summary names it)", file=sys.stderr, flush=True)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def _resume_device(run_dir: str) -> str:
    try:
        return json.loads((Path(run_dir) / "config.json").read_text()).get("device", "auto")
    except (OSError, ValueError):
        return "auto"


def cmd_train(args) -> int:
    from bnnopt.train import Trainer
    from bnnopt.diagnostics.tensorboard import show_progress

    if getattr(args, "dry_run", False):
        print(json.dumps(dry_run(args), indent=2, sort_keys=True, default=str))
        return 0
    progress = show_progress(args.progress)
    lock = None
    try:
        if args.resume:
            _refuse_flags_with_resume(args)
            ctx = join_torchrun(args, _resume_device(args.resume))
            if ctx.is_main:  # locked before its state is read: one writer per directory
                lock = open_run_dir(resume_dir(args.resume), log=print)
            trainer = Trainer.resume(args.resume, epochs=args.epochs, progress=progress,
                                     log=print, dist=ctx)
        else:
            cfg = resolve_config(args)
            ctx = join_torchrun(args, cfg.device)
            if args.out is not None and ctx.is_main:
                lock = _claim_out(args.out, args.overwrite)
            trainer = Trainer(cfg, args.out, progress=progress, log=print, dist=ctx)
        return _train(trainer, ctx, args)
    finally:
        if lock is not None:
            lock.release()


def _claim_out(out: str, overwrite: bool):
    """Lock a new run's --out, then refuse (or with --overwrite clear) a run already there."""
    from bnnopt.runs.io import check_output_dir

    check_output_dir(out)
    lock = open_run_dir(out, log=print)
    try:
        if (Path(out) / "checkpoint.pt").exists() or (Path(out) / "summary.json").exists():
            if not overwrite:
                raise ValueError(f"run directory {out} already holds a run; use --resume {out} "
                                 "to continue it, or --overwrite to replace it")
            clear_run(out)
    except BaseException:
        lock.release()
        raise
    return lock


def _train(trainer, ctx, args) -> int:
    say = print if ctx.is_main else (lambda *a, **k: None)
    if args.log == "tensorboard" and ctx.is_main:
        from bnnopt.diagnostics.tensorboard import TensorBoardLogger

        logger = TensorBoardLogger.attach(trainer)
        if logger is not None:
            print(f"tensorboard: {logger.log_dir}")
    say(f"run directory: {trainer.run_dir}" + (f" ({ctx.world_size} processes, {ctx.backend})"
                                                 if ctx.enabled else ""))
    try:
        summary = _run_collective(trainer.run, ctx, release=trainer.release_distributed)
    except KeyboardInterrupt as err:
        print(f"bnnopt: {_stopped_by(err)}; {_kept(trainer)}", file=sys.stderr, flush=True)
        return exit_status(err)
    except WriteError as err:
        print(f"bnnopt: error: {err}; {_kept(trainer)}", file=sys.stderr, flush=True)
        return 1
    say(json.dumps(summary, indent=2))
    return 0


def _stopped_by(err: BaseException) -> str:
    return f"stopped by {err}" if isinstance(err, Terminated) and str(err) != "SIGINT" \
        else "interrupted"


def _kept(trainer) -> str:
    """What a stopped run left: the resume command, or that there is nothing to resume."""
    if (Path(trainer.run_dir) / "checkpoint.pt").exists():
        return f"continue with: bnnopt train --resume {trainer.run_dir}"
    return "no epoch had finished, so there is nothing to resume; start it again"


def dry_run(args) -> dict[str, Any]:
    """The fully resolved run of ``bnnopt train`` without running or writing anything.

    The config after protocol < --config < flags < --set, with ``method_options``
    replaced by every option of the method after its presets and variants
    (``Method.resolved_options``), ``optim`` completed with the optimizer's
    defaults and ``policy`` with the layer-selection defaults.
    """
    import dataclasses

    from bnnopt.methods.config import POLICY_KEYS
    from bnnopt.nn import QuantConfig
    from bnnopt.registry import METHODS
    from bnnopt.train import RunConfig
    from bnnopt.train.checkpoint import load_checkpoint

    if args.resume:
        cfg = RunConfig.from_dict(load_checkpoint(args.resume)["config"]).validate()
    else:
        cfg = resolve_config(args)
    method = METHODS.get(cfg.method)(**cfg.method_options)
    resolved = cfg.to_dict()
    resolved["method_options"] = method.resolved_options()
    resolved["optim"] = cfg.optim_config().to_dict()
    policy_defaults = {f.name: f.default for f in dataclasses.fields(QuantConfig)
                       if f.name in POLICY_KEYS}
    resolved["policy"] = {**policy_defaults, **method.policy_defaults, **cfg.policy}
    return {"dry_run": True, "run_directory": str(args.resume or args.out or "runs/<method>-"
                                                  "<model>-<dataset>-s<seed>-<time>"),
            "config": resolved}


def _run_collective(fn, ctx, release=None):
    """Run ``fn``; under torchrun turn a failed collective into a one-line error, and
    after success call ``release`` (drop references to the process group) and leave
    the group (``distributed.shutdown``: barrier, collect, destroy)."""
    if not ctx.enabled:
        return fn()
    import torch.distributed as dist

    from bnnopt.train.distributed import describe_failure, shutdown

    try:
        result = fn()
        if release is not None:
            release()
        shutdown(ctx)
    except (dist.DistError, RuntimeError) as err:
        if isinstance(err, dist.DistError) or "gloo" in str(err).lower() or "nccl" in str(err).lower():
            raise DistributedFailure(describe_failure(err, ctx)) from None
        raise
    return result


class DistributedFailure(Exception):
    """A collective failed under torchrun (exit status 1, one line)."""


def cmd_eval(args) -> int:
    from bnnopt.cli.evaluate import evaluate_path

    result = evaluate_path(args.path, model=args.model, dataset=args.dataset,
                           data_root=args.data_root, limit=args.limit, device=args.device)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['path']}: test accuracy {result['test_acc']:.2f}% "
              f"(loss {result['test_loss']:.4f}) on {result['images']} {result['dataset']} images")
    return 0


COMPARE_VAL_FRACTION = 0.1  # compare's default validation split (train's is 0)


def cmd_compare(args) -> int:
    from bnnopt.experiments.compare import build_arms, parse_tune, run_compare
    from bnnopt.runs.io import check_output_dir

    cfg = resolve_config(args)
    from bnnopt.data.text import has_fixed_validation

    if args.val_fraction is None and not any(a.split("=")[0].strip() == "val_fraction"
                                             for a in args.set) and not cfg.val_fraction \
            and not has_fixed_validation(cfg.dataset):
        cfg.val_fraction = COMPARE_VAL_FRACTION  # compare's default: choices on validation
    arms = build_arms([m for m in args.methods.split(",") if m.strip()],
                      [o for o in (args.optimizers or "").split(",") if o.strip()] or None,
                      args.sweep)
    tune = parse_tune(args.tune)
    if args.seeds < 1:
        raise ValueError(f"invalid --seeds {args.seeds}; must be >= 1")
    if args.jobs < 1:
        raise ValueError(f"invalid --jobs {args.jobs}; must be >= 1")
    if args.tune_seeds < 1:
        raise ValueError(f"invalid --tune-seeds {args.tune_seeds}; must be >= 1")
    if args.tune_seeds > 1 and not tune:
        raise ValueError(f"--tune-seeds {args.tune_seeds} without --tune: nothing is tuned; "
                         "valid: add --tune KEY=V1,V2,... or drop --tune-seeds")
    if args.tune_metric is not None:
        from bnnopt.experiments.compare import check_tune_metric

        check_tune_metric(args.tune_metric, "--tune-metric")
        if not tune:
            raise ValueError(f"--tune-metric {args.tune_metric} without --tune: nothing is "
                             "tuned; valid: add --tune KEY=V1,V2,... or drop --tune-metric")
    out = Path(args.out or f"runs/compare-{cfg.protocol or cfg.dataset}")
    reference = _reference(args.reference)
    if reference and args.reference is not None:  # given explicitly: it must be compared
        from bnnopt.report.stats import check_reference

        check_reference({a.label: (a.method, a.context) for a in arms}, reference)
    from bnnopt.diagnostics.tensorboard import show_progress

    ctx = join_torchrun(args, cfg.device)
    if ctx.enabled and args.jobs != 1:
        raise ValueError(f"--jobs {args.jobs} under torchrun: every run already trains with all "
                         "processes; valid there: --jobs 1")
    if ctx.is_main:
        check_output_dir(out)
    say = print if ctx.is_main else (lambda *a, **k: None)
    try:
        _run_collective(lambda: run_compare(cfg, arms, args.seeds, out,
                                            progress=show_progress(args.progress) and args.jobs == 1,
                                            target_acc=args.target, tune=tune,
                                            reference=reference, log=say, jobs=args.jobs,
                                            threads=args.threads,
                                            tune_seeds=args.tune_seeds,
                                            tune_metric=args.tune_metric or "acc"), ctx)
    except KeyboardInterrupt as err:
        print(f"bnnopt: {_stopped_by(err)}; run the same command again to continue (finished "
              "runs are reused, the interrupted ones resume from their last epoch)",
              file=sys.stderr, flush=True)
        return exit_status(err)
    if ctx.is_main:
        print((out / "report.md").read_text())
        print(f"wrote {out / 'report.md'}, {out / 'report.json'}, {out / 'curves.png'}")
    return 0


def _reference(value: str | None) -> str | None:
    """--reference: None (not given) means ste, compared only when present; '' / none: off."""
    if value is None:
        return "ste"
    return None if value in ("", "none") else value


def cmd_report(args) -> int:
    from bnnopt.report.published import papers, published_table
    from bnnopt.report.runs import report_runs

    names = [p.strip() for p in (args.published or "").split(",") if p.strip()]
    if names == ["all"]:
        names = papers()
    for name in names:
        if name not in papers():
            raise ValueError(f"unknown --published paper {name!r}; valid: all, {', '.join(papers())}")
    if not args.run_dirs:
        if not names:
            raise ValueError("nothing to report: give run directories and/or --published PAPER")
        text = "".join(published_table(name, args.table) for name in names)
        print(text, end="")
        if args.out:
            from bnnopt.runs.io import write_text

            write_text(args.out, text)
        return 0
    print(report_runs(args.run_dirs, out=args.out, published=names,
                      reference=_reference(args.reference),
                      strict_reference=args.reference is not None,
                      warn=lambda msg: print(f"bnnopt: warning: {msg}", file=sys.stderr)),
          end="")
    if args.flip_plot:
        from bnnopt.report.runs import flip_plots

        for path in flip_plots(args.run_dirs, args.flip_plot,
                               warn=lambda msg: print(f"bnnopt: warning: {msg}", file=sys.stderr)):
            print(f"wrote {path}")
    return 0


def cmd_summary(args) -> int:
    from bnnopt.cli.summary import summarize_target

    print(summarize_target(args.target, model=args.model, method=args.method, json_out=args.json,
                           input_shape=args.input_shape))
    return 0


def cmd_demo(args) -> int:
    from bnnopt.experiments.demo import run_demo

    if args.threads is None:  # the demo's MLP is tiny: one thread is fastest, even on a busy machine
        import torch

        torch.set_num_threads(1)
    run_demo(args.out, epochs=args.epochs)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="bnnopt", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list registered names")
    p.add_argument("kind", nargs="?", help="estimator|quantizer|method|model|dataset|optimizer|protocol")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("train", help="train one run")
    _add_run_flags(p)
    p.add_argument("--out", help="run directory (default runs/<method>-<model>-...)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run already in --out (default: refuse, suggest --resume)")
    p.add_argument("--dry-run", dest="dry_run", action="store_true",
                   help="print the fully resolved config (every method option after presets "
                        "and variants) and exit; reads no data, writes nothing")
    p.add_argument("--log", choices=("none", "tensorboard"), default="none",
                   help="also write per-epoch scalars to RUN_DIR/tensorboard (extra [tensorboard])")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="test accuracy of a checkpoint / run dir / packed file")
    p.add_argument("path")
    p.add_argument("--model", help="model name, for a plain float state dict")
    p.add_argument("--dataset", help="dataset (default: the run's, or cifar10)")
    p.add_argument("--data-root", dest="data_root")
    p.add_argument("--limit", type=int, default=0, help="first N test images only")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("compare", help="methods x optimizers x seeds on one protocol")
    _add_run_flags(p, with_method=False)
    p.add_argument("--methods", required=True, help="comma list of name[:key=value...]")
    p.add_argument("--optimizers", help="comma list of base optimizer specs name[:key=value...], e.g. sgd:lr=0.05,adam")
    p.add_argument("--sweep", help="KEY=v1,v2,... e.g. method_options.beta=0.1,0.3,0.5")
    p.add_argument("--tune", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="tune a config key per method on the validation split, then train the "
                        "chosen value with --seeds fresh seeds, e.g. lr=0.01,0.05 (repeatable: grid)")
    p.add_argument("--tune-seeds", type=int, default=1, metavar="M",
                   help="train every grid point with M seeds (each its own validation split) "
                        "and choose on their mean validation accuracy; the reported seeds "
                        "follow them (default 1)")
    p.add_argument("--tune-metric", default=None, metavar="acc|loss",
                   help="choose the grid point on the highest final validation accuracy "
                        "('acc', the default) or the lowest final validation loss ('loss', "
                        "e.g. bits per character for a language model)")
    p.add_argument("--reference", default=None,
                   help="method (or method spec, e.g. fsg:fast_form=product) the others are "
                        "compared with (95%% Welch interval); 'none' for none (default: ste, "
                        "when compared)")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--jobs", type=int, default=1,
                   help="train this many runs at once, in worker processes (--threads each, "
                        "default: the CPU cores split evenly; several GPUs: one per worker, round "
                        "robin); results equal a sequential compare's at the same threads")
    p.add_argument("--target", type=float, help="report epochs to reach this test accuracy")
    p.add_argument("--out", help="output directory (default runs/compare-<protocol>)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("report", help="table of finished run directories (+ published numbers)")
    p.add_argument("run_dirs", nargs="*")
    p.add_argument("--published", metavar="PAPER[,PAPER]",
                   help="print the paper's published numbers beside the runs' (or alone, without "
                        "run directories); 'all' = every paper with a file")
    p.add_argument("--table", help="with --published and no runs: only this table of the paper")
    p.add_argument("--out", help="also write the markdown table to this file")
    p.add_argument("--reference", default=None,
                   help="method (or method spec, e.g. fsg:fast_form=product) to compare every "
                        "other with (95%% Welch interval over seeds); 'none' for no comparison "
                        "(default: ste, when among the runs)")
    p.add_argument("--flip-plot", dest="flip_plot", metavar="FILE.png",
                   help="also plot the per-layer flip rate per epoch of the runs that recorded it "
                        "(several runs: FILE-<run dir>.png each)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("summary", help="per-layer bits and memory of a model or file")
    p.add_argument("target", nargs="?", help="checkpoint, run directory or packed file")
    p.add_argument("--model", help="registered model name (binarized with --method)")
    p.add_argument("--method", default="ste", help="method whose quantization to apply")
    p.add_argument("--input-shape", dest="input_shape", metavar="C,H,W",
                   help="input of one sample for the MAC count (default: the run's data / model's)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_summary)

    from bnnopt.experiments.demo import DEMO_METHODS

    count = {2: "two", 3: "three", 4: "four"}.get(len(DEMO_METHODS), str(len(DEMO_METHODS)))
    p = sub.add_parser("demo", help=f"offline demo: binarized MLP on digits, {count} methods "
                       f"({', '.join(DEMO_METHODS)}; fp = float ceiling)")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.set_defaults(func=cmd_demo)

    add_generate_command(sub)
    for hook in (_toy_commands, _export_commands):
        hook(sub)
    return parser


def _toy_commands(sub) -> None:
    try:
        from bnnopt.experiments.toy import add_toy_command
    except ImportError:
        return
    add_toy_command(sub)


def _export_commands(sub) -> None:
    try:
        from bnnopt.cli.export import add_export_commands
    except ImportError:
        return
    add_export_commands(sub)


def main(argv: list[str] | None = None) -> int:
    import signal

    tolerate_closed_stdout()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help (0) or a refused argument (2, already printed)
        return stop.code if isinstance(stop.code, int) else 2
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    stop_on_signals(tuple(previous))
    try:
        out = getattr(args, "out", None)
        if out is not None and not str(out).strip():
            raise ValueError(f"invalid --out {out!r}; give a directory or file path (an empty "
                             "one would write into the current directory)")
        threads = getattr(args, "threads", None)
        if threads is not None:
            if threads < 1:
                raise ValueError(f"invalid --threads {threads}; must be >= 1")
            import torch

            torch.set_num_threads(threads)
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"bnnopt: error: {msg}", file=sys.stderr)
        return 2
    except WriteError as err:
        print(f"bnnopt: error: {err}", file=sys.stderr)
        return 1
    except (PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError) as err:
        where = f"{err.filename}: " if getattr(err, "filename", None) else ""
        print(f"bnnopt: error: {where}{err.strerror or type(err).__name__}", file=sys.stderr)
        return 2
    except DistributedFailure as err:
        print(f"bnnopt: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:
        print(f"bnnopt: {_stopped_by(err)}", file=sys.stderr)
        return exit_status(err)
    finally:
        for signum, handler in previous.items():
            if handler is not None:
                try:
                    signal.signal(signum, handler)
                except ValueError:  # not the main thread
                    pass


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
