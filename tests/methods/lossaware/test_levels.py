"""Level sets and the D-weighted scale solvers (LAB Eq. 6-7, LAQ Eq. 8-9)."""
from __future__ import annotations

import pytest
import torch

from bnnopt.methods.lossaware.levels import (code_table, level_values, project, scale_for, solve,
                                 solve_exact, weighted_error)

CASES = [(1, "linear"), (2, "linear"), (2, "log"), (4, "linear"), (4, "log"), (2, "pow2"),
         (4, "pow2")]


def _brute_min(w, d, bits, kind, steps=4000):
    """Global min of sum d (alpha b - w)^2 by a fine alpha grid with the optimal b per alpha."""
    table = code_table(bits, kind).double()
    alphas = torch.linspace(1e-4, 2.0 * float(w.abs().max()) * 2 ** (bits - 1), steps,
                            dtype=torch.float64)[:, None]
    b = table[project(w[None, :] / alphas, bits, kind).long()]        # [steps, n]
    return float((d * (alphas * b - w) ** 2).sum(1).min())


def test_level_sets_are_the_papers():
    assert level_values(1).tolist() == [-1.0, 1.0]
    assert level_values(2, "linear").tolist() == [-1.0, 0.0, 1.0]
    assert level_values(2, "log").tolist() == [-1.0, 0.0, 1.0]
    lin = level_values(4, "linear")
    assert torch.allclose(lin, torch.arange(-7, 8, dtype=torch.float32) / 7)
    log = level_values(4, "log")
    pos = [2.0 ** -k for k in range(6, -1, -1)]
    assert log.tolist() == [-p for p in reversed(pos)] + [0.0] + pos
    assert code_table(4).numel() == 16 and code_table(1).numel() == 2


@pytest.mark.parametrize("bits,kind", CASES)
def test_projection_is_nearest_level(bits, kind):
    x = torch.linspace(-1.3, 1.3, 1001)
    x = torch.cat([x, torch.zeros(1)])
    values = level_values(bits, kind)
    got = values[project(x, bits, kind).long()]
    dist = (x[:, None] - values[None, :]).abs()
    assert torch.allclose((got - x).abs(), dist.min(1).values, atol=1e-7)
    if bits == 1:
        assert got[-1] == 1.0  # sign(0) := +1


def test_one_bit_alpha_is_labs_closed_form_and_optimal():
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        w = torch.randn(7, generator=gen, dtype=torch.float64)
        d = torch.rand(7, generator=gen, dtype=torch.float64) + 0.05
        alpha, codes, _ = solve(w, d, 1)
        assert torch.allclose(alpha, (d * w).abs().sum() / d.sum())
        assert torch.equal(codes.bool(), w >= 0)
        err = float(weighted_error(w, d, alpha * torch.where(w >= 0, 1.0, -1.0)))
        assert err <= _brute_min(w, d, 1, "linear") + 1e-9
        # alpha is the exact minimiser along the line: perturbing it increases the error
        for eps in (1e-3, -1e-3):
            b = torch.where(w >= 0, 1.0, -1.0).double()
            assert float(weighted_error(w, d, (alpha + eps) * b)) > err


@pytest.mark.parametrize("bits,kind", CASES[1:])
def test_exact_solver_matches_brute_force(bits, kind):
    gen = torch.Generator().manual_seed(bits)
    for _ in range(4):
        w = torch.randn(6, generator=gen, dtype=torch.float64)
        d = torch.rand(6, generator=gen, dtype=torch.float64) + 0.05
        alpha, codes = solve_exact(w, d, bits, kind)
        b = code_table(bits, kind).double()[codes.long()]
        assert torch.allclose(alpha, scale_for(w, d, b))          # closed form for its b
        err = float(weighted_error(w, d, alpha * b))
        assert err <= _brute_min(w, d, bits, kind) + 1e-9


@pytest.mark.parametrize("bits,kind", CASES[1:])
def test_alternation_reaches_a_fixed_point_no_worse_than_its_start(bits, kind):
    gen = torch.Generator().manual_seed(10 + bits)
    w = torch.randn(200, generator=gen, dtype=torch.float64)
    d = torch.rand(200, generator=gen, dtype=torch.float64) + 0.05
    table = code_table(bits, kind).double()
    alpha, codes, iters = solve(w, d, bits, kind, max_iter=200)
    assert iters < 200
    b = table[codes.long()]
    assert torch.allclose(alpha, scale_for(w, d, b))              # alpha-step exact
    assert torch.equal(project(w / alpha, bits, kind), codes)     # b-step exact
    start = scale_for(w, d, torch.sign(w))
    b0 = table[project(w / start, bits, kind).long()]
    assert weighted_error(w, d, alpha * b) <= weighted_error(w, d, start * b0) + 1e-12
    # the exact solver is at least as good
    ea, ec = solve_exact(w, d, bits, kind)
    assert weighted_error(w, d, ea * table[ec.long()]) <= weighted_error(w, d, alpha * b) + 1e-9


def test_pow2_levels_are_blaqs_powers_of_two_without_zero():
    # BLAQ "Notations": 2k values +-1 .. +-1/2^(k-1); k = 1 gives {-1, 1}
    assert level_values(1, "pow2").tolist() == [-1.0, 1.0]
    assert level_values(2, "pow2").tolist() == [-1.0, -0.5, 0.5, 1.0]
    assert level_values(4, "pow2").tolist() == [-1.0, -0.5, -0.25, -0.125,
                                                0.125, 0.25, 0.5, 1.0]
    for bits in (1, 2, 4):
        values = level_values(bits, "pow2")
        assert values.numel() == 2 * bits and not bool((values == 0).any())
        mags = values.abs()
        assert torch.equal(torch.exp2(torch.round(torch.log2(mags))), mags)  # powers of two
        table = code_table(bits, "pow2")
        assert table.numel() == 2 ** bits and torch.equal(table[: 2 * bits], values)
    # nearest-level rounding never produces zero, and sign(0) := +smallest level
    x = torch.tensor([0.0, -1e-9, 0.3, 0.374, 0.376, -0.74, -0.76, 5.0, -5.0])
    got = level_values(4, "pow2")[project(x, 4, "pow2").long()]
    assert got.tolist() == [0.125, -0.125, 0.25, 0.25, 0.5, -0.5, -1.0, 1.0, -1.0]


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_pow2_alpha_closed_form_vs_brute_force(bits):
    gen = torch.Generator().manual_seed(40 + bits)
    values = level_values(bits, "pow2").double()
    for _ in range(3):
        w = torch.randn(5, generator=gen, dtype=torch.float64)
        d = torch.rand(5, generator=gen, dtype=torch.float64) + 0.05
        alpha, codes = solve_exact(w, d, bits, "pow2")
        b = code_table(bits, "pow2").double()[codes.long()]
        assert not bool((b == 0).any())
        assert torch.allclose(alpha, (d * b * w).sum() / (d * b * b).sum())  # closed form
        # brute force over every assignment of levels (|Q|^5) with its optimal alpha
        grids = torch.cartesian_prod(*[values] * 5)                        # [|Q|^5, 5]
        den = (d * grids * grids).sum(1)
        a_opt = ((d * grids * w).sum(1) / den).clamp_min(0)
        best = float((d * (a_opt[:, None] * grids - w) ** 2).sum(1).min())
        assert float(weighted_error(w, d, alpha * b)) <= best + 1e-9


def test_degenerate_inputs():
    z = torch.zeros(5)
    alpha, codes, _ = solve(z, None, 2)
    assert alpha == 0 and torch.all(code_table(2)[codes.long()] == 0)
    alpha, codes = solve_exact(z, None, 4)
    assert alpha == 0
    with pytest.raises(ValueError, match="bits"):
        level_values(3)
    with pytest.raises(ValueError, match="levels"):
        level_values(2, "cubic")
