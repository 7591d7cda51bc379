"""ZigZagTracker: turning points, swing amplitude and flips on hand-made sequences."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from bnnopt.nn import QuantConfig, binarize_
from bnnopt.train.zigzag import ZigZagStream, ZigZagTracker, sequence_stats


def _model(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    binarize_(model, QuantConfig(weight_quantizer="sign", keep_first=False, keep_last=False))
    return model


def _feed(tracker, rows):
    for row in rows:
        w = torch.tensor(row, dtype=torch.float32)
        tracker.record(w, (w >= 0).long())


def test_hand_made_sequences():
    model = _model()
    tracker = ZigZagTracker(model, num_weights=3, seed=0)
    assert tracker.n == 3
    tracker.stream = ZigZagStream(torch.zeros(3), torch.ones(3, dtype=torch.long))
    # weight 0 zig-zags 0 -> .5 -> -.5 -> .5 -> -.5 (swings of 1.0; 3 reversals; flips 3)
    # weight 1 increases monotonically (no swing, no flip)
    # weight 2: 0 -> .2 -> .2 -> .1 -> .4 (plateau skipped: turning at .2 then .1; swing .1)
    _feed(tracker, [[0.5, 0.1, 0.2], [-0.5, 0.2, 0.2], [0.5, 0.3, 0.1], [-0.5, 0.4, 0.4]])
    ep = tracker.end_epoch(0)
    assert ep["reversals"] == 3 + 0 + 2
    assert ep["max_amplitude"] == pytest.approx(1.0)
    assert ep["mean_amplitude"] == pytest.approx((1.0 + 0.0 + 0.1) / 3)
    assert ep["flips"] == 3 and ep["flipped_fraction"] == pytest.approx(1 / 3)
    assert ep["records"] == 4 and ep["epoch"] == 1
    # epoch 2: weight 0 goes on -.5 -> .3 -> -.1. The last swing of epoch 1 (.5 -> -.5)
    # is confirmed only by the reversal after -.5, seen in epoch 2: swings 1.0 and .8
    _feed(tracker, [[0.3, 0.5, 0.4], [-0.1, 0.6, 0.4]])
    ep2 = tracker.end_epoch(1)
    assert ep2["reversals"] == 2 and ep2["max_amplitude"] == pytest.approx(1.0)
    assert ep2["flips"] == 2
    # epoch 3: -.1 -> -.1 -> .0 (plateau, then a reversal at -.1: swing .4)
    _feed(tracker, [[-0.1, 0.7, 0.4], [0.0, 0.8, 0.4]])
    ep3 = tracker.end_epoch(2)
    assert ep3["reversals"] == 1 and ep3["max_amplitude"] == pytest.approx(0.4)
    assert ep3["flips"] == 1
    s = tracker.summary(2)
    assert s["epochs"] == 2 and s["flips"] == 3 and s["max_amplitude"] == pytest.approx(1.0)
    assert s["first_epoch"] == 2
    assert tracker.summary(1)["max_amplitude"] == pytest.approx(0.4)
    assert tracker.summary()["flips"] == 6
    assert ep3["last_k"] == tracker.summary(5)
    json.dumps(ep2)
    json.dumps(tracker.summary())


def test_tracks_real_layers_and_resumes():
    model = _model()
    tracker = ZigZagTracker(model, num_weights=5, seed=1)
    assert tracker.n == 5 and {li for li, _ in tracker.index} <= {0, 1}
    with torch.no_grad():
        model[0].weight.neg_()
    tracker.after_step(model)
    ep = tracker.end_epoch(0)
    in_first = sum(1 for li, _ in tracker.index if li == 0)
    assert ep["flips"] == in_first
    state = tracker.state_dict()
    again = ZigZagTracker(_model(), num_weights=5, seed=1)
    again.load_state_dict(state)
    assert again.summary() == tracker.summary()
    with pytest.raises(ValueError, match="different"):
        ZigZagTracker(_model(), num_weights=4, seed=1).load_state_dict(state)
    with pytest.raises(ValueError, match="no quantized layer"):
        ZigZagTracker(nn.Linear(2, 2))


def test_small_models_track_everything():
    tracker = ZigZagTracker(_model(), num_weights=10_000)
    assert tracker.n == 3 * 4 + 4 * 2


def test_sequence_stats_matches_the_stream():
    values = torch.tensor([[0.0, 0.0], [1.0, 0.1], [-1.0, 0.2], [0.5, 0.3]])
    out = sequence_stats(values, (values >= 0).long())
    assert out["reversals"] == 2 and out["max_amplitude"] == pytest.approx(2.0)
    assert out["flips"] == 2 and out["records"] == 3 and out["tracked"] == 2
