"""The BLAQ paper's toys: BLAQ oscillates less and flips less than LAQ."""
from __future__ import annotations

import json

import pytest
import torch

from bnnopt.experiments.toy import power_loss, quadratic_loss, run_toy, trajectory


def test_blaq_zigzags_less_than_laq(tmp_path):
    result = run_toy(tmp_path, plot=False, starts=())
    assert json.loads((tmp_path / "toy.json").read_text())["settings"]["steps"] == 200
    for toy in ("quadratic", "power"):
        laq, blaq = result[toy]["laq"], result[toy]["blaq"]
        for window in ("all", "last"):
            assert blaq[window]["flips"] < laq[window]["flips"], (toy, window)
        assert blaq["last"]["max_amplitude"] < laq["last"]["max_amplitude"], toy
        assert blaq["all"]["max_amplitude"] <= laq["all"]["max_amplitude"], toy


def test_trajectory_shapes_and_quantized_points():
    run = trajectory("laq", quadratic_loss, [0.1, 0.08], 5, 0.05)
    assert run["w"].shape == (6, 2) and run["loss"].shape == (5,)
    # 1 bit with one scale: both coordinates have the same magnitude
    assert torch.allclose(run["w_hat"].abs()[:, 0], run["w_hat"].abs()[:, 1])
    # a scalar is quantized exactly at 1 bit (alpha = |w|)
    run = trajectory("blaq", power_loss, [0.7], 3, 0.05)
    assert torch.allclose(run["w_hat"], run["w"])
    with pytest.raises(ValueError, match="laq, blaq"):
        trajectory("sgd", power_loss, [1.0], 2, 0.1)


def test_toy_command_writes_json_and_pngs(tmp_path, capsys):
    from bnnopt.cli.main import main

    assert main(["toy", "--out", str(tmp_path), "--steps", "40", "--last", "20"]) == 0
    assert (tmp_path / "toy_quadratic.png").stat().st_size > 0
    assert (tmp_path / "toy_power.png").stat().st_size > 0
    data = json.loads((tmp_path / "toy.json").read_text())
    assert data["quadratic_sweep"]["starts"] == 5
    assert "quadratic" in capsys.readouterr().out


def test_paper_mechanism_with_exact_hessian_laq_cycles_blaq_converges():
    """f = c w^(3/2), Eq. 2-3 with D = f'': LAQ goes w -> -w forever; BLAQ (trial reading)
    goes w -> (3 - 4a) w (module docstring)."""
    from bnnopt.experiments.toy import newton_trajectory

    laq = newton_trajectory("laq", [0.8], 12, c=2.0)
    expected = torch.tensor([0.8 * (-1) ** t for t in range(13)], dtype=torch.float64)
    assert torch.allclose(laq["w"][:, 0], expected)
    assert torch.allclose(laq["w_hat"], laq["w"])                  # 1 bit scalar: exact
    for a in (0.6, 0.9):
        blaq = newton_trajectory("blaq", [0.8], 12, a=a, c=2.0)
        factor = torch.tensor([(3 - 4 * a) ** t for t in range(13)], dtype=torch.float64)
        assert torch.allclose(blaq["w"][:, 0], 0.8 * factor)
        assert float(blaq["loss"][-1]) < 1e-3 * float(blaq["loss"][0])
    rec = newton_trajectory("blaq", [0.8], 40, a=0.6, reading="recursive")
    assert abs(float(rec["w"][-1, 0])) < 1e-2 * 0.8                 # converges too
    with pytest.raises(ValueError, match="reading 'x'; valid: trial, recursive"):
        newton_trajectory("blaq", [0.8], 2, reading="x")
