"""HGS ring buffer: order (oldest first), length while filling and after wrapping."""
from __future__ import annotations

import pytest
import torch

from bnnopt.methods.learned.hgs import HistoryBuffer


def _grads(n, numel=5):
    return [torch.full((numel,), float(i)) + torch.arange(numel) * 0.01 for i in range(n)]


@pytest.mark.parametrize("length", [1, 2, 3, 6])
def test_order_and_length_while_filling_and_after_wrap(length):
    grads = _grads(length + 3)
    buf = HistoryBuffer(length, 5)
    for t, g in enumerate(grads, start=1):
        buf.push(g.reshape(5, 1))  # any shape with the right numel
        k = min(t, length)
        assert len(buf) == k
        expected = torch.stack(grads[t - k:t])  # last k pushes, oldest first
        assert torch.equal(buf.sequence(), expected)


def test_checked_lengths_1_lm1_l_lp3():
    length = 4
    grads = _grads(length + 3)
    for steps in (1, length - 1, length, length + 3):
        buf = HistoryBuffer(length, 5)
        for g in grads[:steps]:
            buf.push(g)
        seq = buf.sequence()
        assert seq.shape == (min(steps, length), 5)
        assert torch.equal(seq[-1], grads[steps - 1])  # newest last
        assert torch.equal(seq[0], grads[max(0, steps - length)])  # oldest first


def test_push_copies_and_state_round_trip():
    buf = HistoryBuffer(3, 4)
    g = torch.ones(4)
    for i in range(5):
        buf.push(g * i)
    g.fill_(100.0)  # mutating the source must not change the buffer
    state = buf.state_dict()
    other = HistoryBuffer(3, 4)
    other.load_state_dict(state)
    assert torch.equal(other.sequence(), buf.sequence())
    buf.push(torch.full((4,), 7.0))
    other.push(torch.full((4,), 7.0))
    assert torch.equal(other.sequence(), buf.sequence())
    assert torch.equal(buf.sequence()[:, 0], torch.tensor([3.0, 4.0, 7.0]))


def test_bad_input():
    with pytest.raises(ValueError, match="history length 0"):
        HistoryBuffer(0, 3)
    buf = HistoryBuffer(2, 3)
    with pytest.raises(ValueError, match="empty"):
        buf.sequence()
    with pytest.raises(ValueError, match="4 elements"):
        buf.push(torch.zeros(4))
    with pytest.raises(ValueError, match="length 2"):
        HistoryBuffer(3, 3).load_state_dict(buf.state_dict())
