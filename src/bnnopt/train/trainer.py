"""One Trainer for every method: data, epochs, schedule, evaluation, records.

Per epoch e (0-based)::

    method.on_epoch_start(e, E); method.set_lr(lr_at(e))
    for x, y in loader.epoch(e):      # order and augmentation = f(seed, e)
        method.train_step(model, x, y, cross_entropy)
    evaluate on the validation split (if val_fraction > 0) and the test split;
    append a metrics row (with "flip_rate": {layer: fraction of weights whose
    quantized level changed in the epoch}, bnnopt.diagnostics.flips); save checkpoint.pt

With a validation split, every choice is made on it: the summary's ``best_epoch``
is the epoch of highest validation accuracy (``selected_test_acc`` is the test
accuracy there); ``best_test_acc`` (the maximum over test evaluations) is kept
for reference only and must not be used to pick anything.

Everything a run writes lives in its run directory (all writes atomic)::

    config.json     resolved RunConfig        argv.json   command line + git revision,
                                                          resolved method options
    metrics.jsonl   one row per epoch         summary.json final/best accuracy, timings
    checkpoint.pt   model + method + RNG state after the last finished epoch
    .lock           PID + host of the process writing it (bnnopt.runs.lock)

The output location is checked before any data or model setup; a second process
on a locked directory is refused. A non-finite training loss stops the run
(``NonFiniteLossError``, naming epoch and step) and keeps the last checkpoint; so do a
failed write (``bnnopt.runs.io.WriteError``) and an interruption (Ctrl-C, or SIGTERM
under the CLI, ``bnnopt.runs.process``). When no epoch had finished, none of these
leaves a file behind.

Resume (``Trainer.resume(run_dir)``) reloads checkpoint.pt and continues; since the
batches of an epoch depend only on (seed, epoch) and the RNG states (CPU and, when
present, CUDA) are restored, the final weights equal those of an uninterrupted run
bit for bit. ``Trainer.resume(run_dir, epochs=N)`` extends (or shortens an
unfinished) run to N epochs; the learning-rate schedule is then that of an N-epoch
run from the next epoch on.

Under ``torchrun`` (``bnnopt.train.distributed``) every rank builds the same model and
method; the model is wrapped in DistributedDataParallel for the training forwards,
each rank takes its shard of every global batch (``batch_size`` is the global
batch), evaluation is sharded and all-reduced (every rank reports the same numbers),
and rank 0 alone writes (and locks) the run directory. ``precision`` /
``channels_last`` / ``sync_bn`` (``bnnopt.train.precision``,
``bnnopt.nn.sync_batchnorm``) apply in one process as well as in many.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from bnnopt.diagnostics import flips
from bnnopt.train import distributed, lm
from bnnopt.train.checkpoint import CHECKPOINT_NAME, build_model, load_checkpoint, save_checkpoint
from bnnopt.train.config import RunConfig
from bnnopt.train.distributed import DistContext
from bnnopt.train.precision import check_precision, param_dtype, with_precision
from bnnopt.runs.io import check_output_dir, read_jsonl, write_json, write_jsonl
from bnnopt.runs.rundir import (check_finite, check_finite_row,
                                 open_run_dir, record_argv, resume_dir)
from bnnopt.train.schedule import lr_at

EpochCallback = Callable[["Trainer", dict[str, Any]], None]


def resolve_device(name: str, local_rank: int | None = None) -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` -> torch.device (ValueError if unusable here).

    Under torchrun (``local_rank`` given) ``cuda`` and ``auto`` mean ``cuda:LOCAL_RANK``.
    """
    from bnnopt.train.config import check_device_name

    name = check_device_name(name)
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        name = "cuda"
    if name == "cpu":
        return torch.device("cpu")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise ValueError(f"device {name!r} requested but CUDA is not available; "
                         "valid here: auto, cpu")
    if ":" in name and local_rank is not None:
        raise ValueError(f"device {name!r} under torchrun: each process takes cuda:LOCAL_RANK; "
                         "valid: cuda, auto (limit the GPUs with CUDA_VISIBLE_DEVICES)")
    index = int(name.split(":")[1]) if ":" in name else (local_rank or 0)
    if index >= count:
        valid = ", ".join(["auto", "cpu", "cuda"] + [f"cuda:{i}" for i in range(count)])
        raise ValueError(f"device {name!r} does not exist ({count} CUDA device(s)); "
                         f"valid here: {valid}")
    return torch.device("cuda", index)


def git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


@torch.no_grad()
def evaluate(model: nn.Module, batches, dist: DistContext | None = None,
             memory_format: torch.memory_format | None = None) -> tuple[float, float]:
    """Mean cross-entropy and top-1 accuracy (%) of ``model`` over ``batches``.

    With ``dist`` (torchrun), ``batches`` is this rank's shard and the sums are
    all-reduced, so every rank returns the numbers of the whole split.
    """
    was_training = model.training
    model.eval()
    total, loss_sum, correct = 0, 0.0, 0
    for x, y in batches:
        if memory_format is not None:
            x = x.contiguous(memory_format=memory_format)
        logits = model(x)
        loss_sum += lm.token_cross_entropy(logits, y, "sum").item()  # per token for LMs
        correct += lm.count_correct(logits, y)
        total += y.numel()
    model.train(was_training)
    if dist is not None and dist.enabled:
        device = next(model.parameters()).device
        sums = dist.sum_(torch.tensor([loss_sum, correct, total], dtype=torch.float64, device=device))
        loss_sum, correct, total = float(sums[0]), int(sums[1]), int(sums[2])
    return loss_sum / max(total, 1), 100.0 * correct / max(total, 1)


class Trainer:
    """Train ``config`` into ``run_dir`` (created only once everything validated)."""

    def __init__(self, config: RunConfig, run_dir: str | Path | None = None, *,
                 argv: list[str] | None = None, progress: bool = False,
                 log: Callable[[str], None] | None = None,
                 callbacks: list[EpochCallback] | None = None,
                 dist: DistContext | None = None):
        self.config = config.validate()
        self.dist = distributed.current() if dist is None else dist
        if run_dir is None:  # every rank must agree on the time stamp
            run_dir = self.dist.broadcast_object(str(default_run_dir(config)))
        self.run_dir = Path(run_dir)
        self.argv = list(sys.argv if argv is None else argv)
        self.progress = progress and self.dist.is_main
        quiet = not self.dist.is_main
        self.log = (lambda msg: None) if quiet or log is None else log
        self.callbacks = list(callbacks or [])
        self.device = resolve_device(config.device,
                                     self.dist.local_rank if self.dist.enabled else None)
        if self.dist.is_main:
            check_output_dir(self.run_dir)  # before any expensive data / model setup
        self.metrics: list[dict[str, Any]] = []
        self.start_epoch = 0
        self.resumed = False
        self._setup()

    # -- construction -------------------------------------------------------------
    def _setup(self) -> None:
        from bnnopt.train.data_setup import load_run_loaders

        cfg, dist = self.config, self.dist
        distributed.check_global_batch(cfg.batch_size, dist.world_size)
        torch.manual_seed(cfg.seed)
        from bnnopt.registry import METHODS

        (self.train_loader, self.val_loader, self.test_loader, self.data_info,
         self.meta_loader) = load_run_loaders(
            cfg.dataset, root=cfg.data_root, download=cfg.download, batch_size=cfg.batch_size,
            augment=cfg.augment, device=self.device, seed=cfg.seed,
            train_limit=cfg.train_limit, test_limit=cfg.test_limit,
            val_fraction=cfg.val_fraction, dtype=param_dtype(cfg.precision),
            meta_fraction=METHODS.get(cfg.method).held_out_fraction(cfg.method_options),
            block_size=cfg.model_options.get("block_size"))
        self.model, self.method = build_model(cfg, self.data_info)
        check_precision(cfg.precision, self.method.family, cfg.method)
        init_ckpt = None
        if cfg.init:
            init_ckpt = _load_init(self.model, cfg.init)
        self.quantized_layers = prepare_model(self.method, self.model, cfg)
        if init_ckpt is not None:
            _load_init_state(self.model, init_ckpt["model"], cfg.init)
        self.memory_format = torch.channels_last if cfg.channels_last else None
        if cfg.precision == "fp64":
            self.model.to(dtype=torch.float64)
        self.model.to(self.device)
        if self.memory_format is not None:
            self.model.to(memory_format=self.memory_format)
        if cfg.sync_bn and dist.enabled:
            from bnnopt.nn.sync_batchnorm import convert_sync_batchnorm

            convert_sync_batchnorm(self.model, self.device)
        for loader in (self.val_loader, self.test_loader, self.meta_loader):
            if loader is not None:
                loader.shard(dist.rank, dist.world_size)
        self.train_loader.shard(dist.rank, dist.world_size,  # see distributed.min_shard_images
                                min_shard=distributed.min_shard_images(self.model, dist.world_size))
        if cfg.precision == "fp16":
            self.method.scaler = torch.amp.GradScaler(self.device.type)
        self.method.build(self.model, cfg.optim_config())
        self.train_model = self.model
        if dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            self.method.set_distributed(dist)
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = DistributedDataParallel(self.model, device_ids=ids)
        self.train_model = with_precision(self.train_model, cfg.precision, self.device)
        self.eval_model = with_precision(self.model, cfg.precision, self.device)
        if self.meta_loader is not None:  # the meta-nets' held-out split, run without DDP
            self.method.set_meta_data(self.meta_loader, self.eval_model)
        self.zigzag = None
        if cfg.zigzag:
            from bnnopt.diagnostics.zigzag import ZigZagTracker

            self.zigzag = ZigZagTracker(self.model, num_weights=cfg.zigzag, seed=cfg.seed,
                                        **cfg.zigzag_options)

    @classmethod
    def resume(cls, run_dir: str | Path, epochs: int | None = None, **kwargs: Any) -> "Trainer":
        """Continue the run in ``run_dir`` from its last finished epoch (to ``epochs``
        epochs if given: extends a finished run; never fewer than already done).

        Under torchrun rank 0 reads the checkpoint and broadcasts it, so the other
        ranks (other nodes too) need not see the run directory.
        """
        dist = kwargs.get("dist") or distributed.current()
        if dist.enabled:
            try:
                found = load_checkpoint(resume_dir(run_dir)) if dist.is_main else None
            except ValueError as err:
                found = err
            found = dist.broadcast_object(found)
            if isinstance(found, ValueError):
                raise found
            ckpt = found
        else:
            run_dir = resume_dir(run_dir)
            ckpt = load_checkpoint(run_dir)
        config = RunConfig.from_dict(ckpt["config"])
        if epochs is not None:
            done = ckpt["epoch"] + 1
            if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < done:
                raise ValueError(f"invalid --epochs {epochs!r} for --resume {run_dir}: the run "
                                 f"has already finished {done} epoch(s); give N >= {done}")
            config.epochs = epochs
        trainer = cls(config, run_dir, **kwargs)
        trainer.resumed = True
        trainer.model.load_state_dict(ckpt["model"])
        trainer.method.load_state_dict(ckpt["method"])
        if trainer.zigzag is not None and ckpt.get("zigzag") is not None:
            trainer.zigzag.load_state_dict(ckpt["zigzag"])
        torch.set_rng_state(ckpt["rng"])
        cuda_rng = ckpt.get("cuda_rng")
        if cuda_rng and torch.cuda.is_available() and len(cuda_rng) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_rng)
        trainer.metrics = list(ckpt["metrics"])
        trainer.start_epoch = ckpt["epoch"] + 1
        return trainer

    # -- the loop -------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        cfg, main = self.config, self.dist.is_main
        lock = open_run_dir(self.run_dir, log=self.log) if main else None
        try:
            if main:
                write_json(self.run_dir / "config.json", cfg.to_dict())
                record_argv(self.run_dir, self.argv, git_revision(),
                            {"quantized_layers": self.quantized_layers,
                             "world_size": self.dist.world_size,
                             "images_dropped_per_epoch": self.train_loader.dropped_images(),
                             "method_options": self.method.resolved_options()},
                            resumed=self.resumed)
            for epoch in range(self.start_epoch, cfg.epochs):
                row = self.train_epoch(epoch)
                check_finite_row(row, self.run_dir, epoch - 1)
                self.metrics.append(row)
                self.save(epoch)
                self.log(_format_row(row, cfg.epochs))
                if not cfg.bn_recalibrate:  # a short run's test number may mean nothing yet
                    from bnnopt.nn.batchnorm import stale_statistics_hint

                    hint = stale_statistics_hint(self.model, (epoch + 1) * len(self.train_loader),
                                                 row["train_acc"], row["test_acc"])
                    if hint:
                        self.log(hint)
                for callback in self.callbacks:
                    callback(self, row)
                if stop_early(self.metrics, cfg.early_stop):
                    self.log(f"early stop: no better validation accuracy in {cfg.early_stop} epochs")
                    break
            summary = summarize(self.metrics, cfg)
            if main:
                write_json(self.run_dir / "summary.json", summary)
        except BaseException:  # a non-finite loss, a failed write, SIGTERM / Ctrl-C ...
            if main and not (self.run_dir / CHECKPOINT_NAME).exists():
                for name in ("config.json", "argv.json"):  # nothing trained: leave nothing
                    (self.run_dir / name).unlink(missing_ok=True)
            raise
        finally:
            if lock is not None:
                lock.release()
        return summary

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        cfg, method, model, dist = self.config, self.method, self.model, self.dist
        lr = lr_at(epoch, cfg.optim_config().lr, cfg.epochs, cfg.schedule, cfg.step_size,
                   cfg.gamma)
        method.on_epoch_start(epoch, cfg.epochs)
        method.set_lr(lr)
        self.train_model.train()
        batches = self.train_loader.epoch(epoch)
        if self.progress:
            from tqdm import tqdm

            batches = tqdm(batches, total=len(self.train_loader), leave=False,
                           desc=f"epoch {epoch + 1}/{cfg.epochs}")
        global_sizes = self.train_loader.global_sizes()
        codes_before = flips.layer_codes(model)  # per-layer flip rate of this epoch
        start, cpu_start = time.perf_counter(), time.process_time()
        seen, loss_sum, correct, targets = 0, 0.0, 0, 0
        for step, (x, y) in enumerate(batches):
            if self.memory_format is not None:
                x = x.contiguous(memory_format=self.memory_format)
            if dist.enabled:  # each rank: its shard's summed loss, scaled (distributed.py)
                n = global_sizes[step]
                criterion = (distributed.sharded_criterion(n, dist.world_size) if y.dim() == 1
                             else lm.sharded_token_criterion(n, dist.world_size))
                out = method.train_step(self.train_model, x, y, criterion)
                # the global batch's mean loss, identical on every rank (one scalar all-reduce)
                loss = float(dist.sum_(out.loss.detach().double().reshape(1))) / dist.world_size
            else:
                out = method.train_step(self.train_model, x, y, lm.token_cross_entropy)
                loss, n = float(out.loss), y.numel()
            check_finite(loss, epoch, step, len(self.train_loader), self.run_dir, epoch - 1, lr)
            seen += n
            loss_sum += loss * n
            correct += lm.count_correct(out.logits, y)
            targets += y.numel()
            if self.zigzag is not None:
                self.zigzag.after_step(model)
        if dist.enabled:
            self._broadcast_buffers()
            sums = dist.sum_(torch.tensor([correct, targets], dtype=torch.float64,
                                          device=self.device))
            correct, targets = int(sums[0]), int(sums[1])
        seconds = time.perf_counter() - start
        cpu_seconds = time.process_time() - cpu_start  # all threads; less sensitive to sharing
        flip_rate = flips.flip_rates(codes_before, model)
        if cfg.bn_recalibrate:  # BN statistics of the current weights (bnnopt.nn.batchnorm)
            from bnnopt.nn.batchnorm import recalibrate_bn_

            recalibrate_bn_(self.eval_model, self.train_loader.epoch(epoch), cfg.bn_recalibrate,
                            self.memory_format)
            if dist.enabled:
                self._broadcast_buffers()
        test_loss, test_acc = evaluate(self.eval_model, self.test_loader.epoch(0), dist,
                                       self.memory_format)
        row = {"epoch": epoch + 1, "lr": lr, "loss": loss_sum / max(seen, 1),
               "train_acc": 100.0 * correct / max(targets, 1), "test_loss": test_loss,
               "test_acc": test_acc, "seconds": seconds, "cpu_seconds": cpu_seconds}
        if self.val_loader is not None:
            row["val_loss"], row["val_acc"] = evaluate(self.eval_model, self.val_loader.epoch(0),
                                                       dist, self.memory_format)
        if flip_rate:
            row["flip_rate"] = flip_rate
        if self.zigzag is not None:
            row["zigzag"] = self.zigzag.end_epoch(epoch, self.model)
        if self.data_info.get("task") == "lm":
            lm.add_bpc(row)
        return row

    def _broadcast_buffers(self) -> None:
        """Rank 0's buffers (BatchNorm running statistics) on every rank.

        DDP broadcasts them before each forward; after an epoch's last forward each rank
        holds its own shard's statistics (unless sync_bn), so evaluation and checkpoints
        would differ between ranks without this.
        """
        for buf in self.model.buffers():
            torch.distributed.broadcast(buf, src=0)

    def release_distributed(self) -> None:
        """Drop the DistributedDataParallel wrapper (its reducer holds the process group),
        so that leaving the group (``distributed.shutdown``) frees it while the interpreter
        is alive. Call it after the last ``run``; evaluation (``eval_model``) still works."""
        if self.dist.enabled:
            self.train_model = None

    def save(self, epoch: int) -> None:
        """Checkpoint first, then the metrics log: a kill in between loses nothing,
        since resume restores the metrics from the checkpoint. Rank 0 alone writes; every
        rank takes the method's state (a collective for a method that splits its state)."""
        method_state = self.method.state_dict()
        if not self.dist.is_main:
            return
        save_checkpoint(self.run_dir / CHECKPOINT_NAME, {
            "config": self.config.to_dict(), "data": self.data_info, "epoch": epoch,
            "model": self.model.state_dict(), "method": method_state,
            "metrics": self.metrics, "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "zigzag": self.zigzag.state_dict() if self.zigzag is not None else None,
        })
        write_jsonl(self.run_dir / "metrics.jsonl", self.metrics)


def prepare_model(method, model: nn.Module, cfg: RunConfig) -> list[str]:
    """``method.prepare`` that refuses a quantizing method whose policy swaps no layer."""
    import warnings

    from bnnopt.nn.convert import NothingSwappedWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", NothingSwappedWarning)
        names = method.prepare(model, dict(cfg.policy))
    for w in caught:
        if not issubclass(w.category, NothingSwappedWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if not names and cfg.method != "fp":
        why = next((str(w.message) for w in caught
                    if issubclass(w.category, NothingSwappedWarning)), "")
        raise ValueError(f"method {cfg.method!r} would quantize no layer of {cfg.model} with "
                         f"policy {cfg.policy}{': ' + why if why else ''}; "
                         "use method fp for a float run")
    return names


def stop_early(metrics: list[dict[str, Any]], patience: int) -> bool:
    """True when the last ``patience`` epochs (>= 1) brought no higher validation accuracy
    than the best before them (0 = never stop)."""
    if patience < 1 or len(metrics) <= patience or "val_acc" not in metrics[-1]:
        return False
    best_before = max(r["val_acc"] for r in metrics[:-patience])
    return max(r["val_acc"] for r in metrics[-patience:]) <= best_before


def summarize(metrics: list[dict[str, Any]], config: RunConfig) -> dict[str, Any]:
    """Final and best test accuracy, final train loss, mean seconds per epoch (wall
    time, and the process's CPU time over all its threads, which other processes
    sharing the cores disturb much less); with a validation split also the epoch
    chosen on it and the test accuracy there."""
    if not metrics:
        return {"epochs": 0}
    best = max(metrics, key=lambda r: r["test_acc"])
    summary = {
        "method": config.method, "model": config.model, "dataset": config.dataset,
        "seed": config.seed, "optimizer": config.optim.get("name"), "epochs": len(metrics),
        "final_test_acc": metrics[-1]["test_acc"], "best_test_acc": best["test_acc"],
        "best_epoch": best["epoch"], "final_train_loss": metrics[-1]["loss"],
        "seconds_per_epoch": sum(r["seconds"] for r in metrics) / len(metrics),
    }
    if all("cpu_seconds" in r for r in metrics):  # rows of runs resumed from older records lack it
        summary["cpu_seconds_per_epoch"] = sum(r["cpu_seconds"] for r in metrics) / len(metrics)
    if "val_acc" in metrics[-1]:  # choices on validation: the first epoch of highest val acc
        chosen = max(metrics, key=lambda r: r["val_acc"])
        summary.update(best_epoch=chosen["epoch"], best_val_acc=chosen["val_acc"],
                       selected_test_acc=chosen["test_acc"],
                       final_val_acc=metrics[-1]["val_acc"],
                       final_val_loss=metrics[-1]["val_loss"])
    if len(metrics) < config.epochs and config.early_stop:
        summary["stopped_early"] = True
    if "zigzag" in metrics[-1]:
        summary["zigzag"] = metrics[-1]["zigzag"]
    summary.update(lm.bpc_summary(metrics))
    return summary


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    return read_jsonl(Path(run_dir) / "metrics.jsonl")


def default_run_dir(config: RunConfig) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{config.method}-{config.model}-{config.dataset}-s{config.seed}-{stamp}"


def _load_init(model: nn.Module, path: str) -> dict[str, Any] | None:
    """Initialise from a bnnopt checkpoint (returned, loaded after prepare) or a plain
    float state dict such as the official FSG checkpoints (loaded now, strict)."""
    from bnnopt.train.checkpoint import is_checkpoint

    if is_checkpoint(path):  # a damaged checkpoint raises here, not below
        return load_checkpoint(path)
    from bnnopt.models import load_pretrained

    load_pretrained(model, path)
    return None


def _load_init_state(model: nn.Module, state: dict[str, Any], path: str) -> None:
    """Load a bnnopt checkpoint's weights into the prepared ``model``.

    Quantizer state (``*_quantizer.*`` keys, e.g. LAQ's alpha and codes) may be absent
    on either side, since it depends on the method; every other key must match, so a
    checkpoint of another architecture or width is refused instead of half-loaded.
    """
    own = model.state_dict()
    shapes = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
              if k in own and "_quantizer." not in k and v.shape != own[k].shape]
    if shapes:
        raise ValueError(f"--init {path} does not fit this model: shape (checkpoint vs model) "
                         f"of {'; '.join(shapes[:3])}{' ...' if len(shapes) > 3 else ''}")
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if "_quantizer." not in k]
    unexpected = [k for k in result.unexpected_keys if "_quantizer." not in k]
    if missing or unexpected:
        raise ValueError(f"--init {path} does not fit this model: missing keys {missing[:5]}"
                         f"{' ...' if len(missing) > 5 else ''}, unexpected keys "
                         f"{unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")


def _format_row(row: dict[str, Any], epochs: int) -> str:
    return (f"epoch {row['epoch']:>3}/{epochs}  lr {row['lr']:.2e}  loss {row['loss']:.4f}  "
            f"train {row['train_acc']:6.2f}%  "
            + (f"val {row['val_acc']:6.2f}%  " if "val_acc" in row else "")
            + f"test {row['test_acc']:6.2f}%  {row['seconds']:.1f}s")
