"""--log tensorboard (TensorBoardLogger callback) and the progress bar's default."""
from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from bnnopt.diagnostics.tensorboard import GradientComparison, show_progress


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_progress_default_follows_terminal_and_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    assert show_progress(None, _Tty()) is True
    assert show_progress(None, io.StringIO()) is False  # piped
    assert show_progress(False, _Tty()) is False and show_progress(True, io.StringIO()) is True
    monkeypatch.setenv("CI", "true")
    assert show_progress(None, _Tty()) is False


def test_gradient_comparison_ratio_and_cosine():
    g = [torch.tensor([1.0, -2.0, 0.5]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])]
    c = [torch.tensor([1.0, 0.5, 2.0]), torch.ones(2, 2)]
    ste = [gi * ci for gi, ci in zip(g, c)]
    comp = GradientComparison(["a", "b"])
    comp.add([3 * ste[0], torch.tensor([[0.0, 1.0], [1.0, 0.0]])], g, c)
    comp.add([3 * ste[0], torch.tensor([[0.0, 2.0], [2.0, 0.0]])], g, c)
    m = comp.means()
    assert m["grad_vs_ste/ratio/a"] == pytest.approx(3.0)
    assert m["grad_vs_ste/cosine/a"] == pytest.approx(1.0)
    assert m["grad_vs_ste/ratio/b"] == pytest.approx(1.5)  # (1 + 2) / 2
    assert m["grad_vs_ste/cosine/b"] == pytest.approx(0.0)  # orthogonal


def test_flip_fraction_counts_changed_signs(tmp_path):
    pytest.importorskip("tensorboard")
    from bnnopt.nn import QuantConfig, binarize_
    from bnnopt.diagnostics.tensorboard import TensorBoardLogger

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(10, 10), nn.Linear(4, 2))
    binarize_(model, QuantConfig(weight_quantizer="dorefa"))
    logger = TensorBoardLogger(tmp_path / "tb", model)
    with torch.no_grad():
        flat = model[1].weight.view(-1)
        flat[:7] = -flat[:7] + torch.sign(-flat[:7]) * 1e-3  # 7 of 100 weights change sign
    fr = logger.flip_fractions()
    assert fr["flips/1"] == pytest.approx(0.07) and fr["flips/all"] == pytest.approx(0.07)
    assert logger.flip_fractions()["flips/1"] == 0.0  # snapshot moved on
    logger.close()


def _scalars(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [e.value for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_train_cli_writes_tensorboard_scalars_for_a_learned_gradient_method(tmp_path, capsys):
    pytest.importorskip("tensorboard")
    from bnnopt.cli.main import main

    run = tmp_path / "run"
    code = main(["train", "--protocol", "digits", "--method", "fcgrad", "--epochs", "2",
                 "--train-limit", "256", "--test-limit", "64", "--set", "model_options.hidden=32",
                 "--threads", "1", "--out", str(run), "--log", "tensorboard", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    scalars = _scalars(run / "tensorboard")
    for tag in ("train/loss", "train/acc", "test/acc", "test/loss", "lr", "flips/all"):
        assert len(scalars[tag]) == 2, tag
    cosines = [t for t in scalars if t.startswith("grad_vs_ste/cosine/")]
    ratios = [t for t in scalars if t.startswith("grad_vs_ste/ratio/")]
    assert cosines and len(cosines) == len(ratios)
    assert all(-1.0 - 1e-6 <= v <= 1.0 + 1e-6 for t in cosines for v in scalars[t])
    assert all(v > 0 for t in ratios for v in scalars[t])
    assert all(0.0 <= v <= 1.0 for v in scalars["flips/all"])
