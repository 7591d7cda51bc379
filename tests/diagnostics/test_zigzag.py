"""ZigZagTracker: turning points, swing amplitude and flips on hand-made sequences."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from bnnopt.nn import QuantConfig, binarize_
from bnnopt.diagnostics.zigzag import ZigZagStream, ZigZagTracker, sequence_stats


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


def test_per_epoch_sampling_and_per_weight_statistics_on_a_hand_made_trajectory():
    """every="epoch": one record per end_epoch (steps in between are not seen); per-weight
    median/max and the locked weight's amplitude and flips over the window."""
    model = _model()
    tracker = ZigZagTracker(model, num_weights=4, seed=0, every="epoch", last_k=3, lock=1)
    layers = dict((n, m) for n, m in model.named_modules() if hasattr(m, "weight_quantizer"))

    def set_tracked(values):
        with torch.no_grad():
            for (li, fi), v in zip(tracker.index, values):
                layers[tracker.names[li]].weight.view(-1)[fi] = v

    set_tracked([0.0, 0.1, 0.2, 0.3])
    tracker.stream = ZigZagStream(torch.tensor([0.0, 0.1, 0.2, 0.3]), torch.ones(4).long())
    # per-epoch values of the 4 tracked weights; a wild excursion inside epoch 1 that is
    # undone before its end must not be seen
    epochs = [[0.5, -0.1, 0.3, 0.4],    # w0 up, w1 flips, w2 up, w3 up
              [-0.5, 0.2, 0.4, 0.5],    # w0 reverses at .5, w1 reverses at -.1 and flips back
              [0.5, -0.2, 0.5, 0.6],    # swings: w0 1.0 (.5 -> -.5), w1 .3 (-.1 -> .2)
              [-0.5, 0.3, 0.6, 0.7]]    # swings: w0 1.0, w1 .4 (.2 -> -.2)
    for e, values in enumerate(epochs):
        if e == 1:
            set_tracked([-9.0, 9.0, -9.0, 9.0])
            tracker.after_step(model)                      # ignored per epoch
        set_tracked(values)
        tracker.after_step(model)
        row = tracker.end_epoch(e, model)
        assert row["records"] == 1 and row["every"] == "epoch"
    assert row["locked"] == f"{tracker.names[tracker.index[1][0]]}[{tracker.index[1][1]}]"
    s = tracker.summary(3)                                 # epochs 2-4
    # flips per weight in epochs 2-4: w0 3 (sign + - + -... from .5: -, +, -), w1 3, w2 0, w3 0
    assert s["flips"] == 6 and s["flips_max"] == 3 and s["flips_median"] == 1.5
    # largest swing per weight confirmed in epochs 2-4: w0 1.0, w1 .4, w2 0, w3 0
    assert s["amplitude_max"] == pytest.approx(1.0) and s["max_amplitude"] == s["amplitude_max"]
    assert s["amplitude_median"] == pytest.approx(0.2)
    assert s["locked_flips"] == 3 and s["locked_amplitude"] == pytest.approx(0.4)
    # the same trajectory sampled per step sees the excursion: more flips
    step = ZigZagTracker(_model(), num_weights=4, seed=0, every="step")
    step.stream = ZigZagStream(torch.tensor([0.0, 0.1, 0.2, 0.3]), torch.ones(4).long())
    _feed(step, [epochs[0], [-9.0, 9.0, -9.0, 9.0], *epochs[1:]])
    assert step.end_epoch(0)["flips"] > tracker.summary()["flips"]
    with pytest.raises(ValueError, match="needs the model"):
        tracker.end_epoch(4)
    with pytest.raises(ValueError, match="invalid zigzag every 'batch'; valid: step, epoch"):
        ZigZagTracker(model, every="batch")
    with pytest.raises(ValueError, match="lock"):
        ZigZagTracker(model, num_weights=4, lock=4)


def test_trainer_records_per_epoch_and_report_shows_per_weight_columns(tmp_path):
    from bnnopt.report.runs import report_runs
    from bnnopt.train import RunConfig, Trainer

    cfg = RunConfig(model="mlp", dataset="digits", method="laq", epochs=2, batch_size=128,
                    model_options={"hidden": 16}, optim={"name": "adam", "lr": 1e-2},
                    augment=False, device="cpu", train_limit=256, test_limit=64, zigzag=8,
                    zigzag_options={"every": "epoch", "last_k": 2})
    Trainer(cfg.validate(), tmp_path / "run").run()
    rows = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["zigzag"]["records"] for r in rows] == [1, 1]
    assert rows[-1]["zigzag"]["last_k"]["epochs"] == 2
    text = report_runs([tmp_path / "run"], reference=None)
    assert "flips_median" in text and "locked_amplitude" in text
    with pytest.raises(ValueError, match="unknown zigzag_options key 'window'"):
        RunConfig(zigzag_options={"window": 3}).validate()
