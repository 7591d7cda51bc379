"""recalibrate_bn_: BatchNorm running statistics re-estimated for the current weights."""
import pytest
import torch
from torch import nn

from bnnopt.nn.batchnorm import batchnorm_layers, recalibrate_bn_


def shifted_task(n: int = 512, d: int = 4, shift: float = 5.0, seed: int = 0):
    """x = z + shift, label 1 iff z_0 > 0: right only if BN removes the shift."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, d, generator=g)
    return z + shift, (z[:, 0] > 0).long()


def classifier(d: int = 4, scale: float = 3.0) -> nn.Sequential:
    """Linear (scale * I) -> BN (no affine) -> a fixed read-out of feature 0."""
    lin = nn.Linear(d, d, bias=False)
    head = nn.Linear(d, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(scale * torch.eye(d))
        head.weight.zero_()
        head.weight[1, 0], head.weight[0, 0] = 1.0, -1.0
    return nn.Sequential(lin, nn.BatchNorm1d(d, affine=False), nn.Dropout(0.5), head)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def batches(x, y, size=64):
    return [(x[i:i + size], y[i:i + size]) for i in range(0, len(x), size)]


def test_stale_statistics_break_eval_and_recalibration_restores_it():
    x, y = shifted_task()
    model = classifier()  # running stats at their initial (0, 1): stale for this input
    stale = accuracy(model, x, y)
    assert stale < 0.6  # every input has feature 0 far above 0 -> one class
    model.train()
    used = recalibrate_bn_(model, batches(x, y), num_batches=4)
    assert used == 4
    assert accuracy(model, x, y) > 0.95


def test_statistics_are_the_cumulative_average_of_the_batches():
    x, y = shifted_task(seed=1)
    model = classifier()
    bn = model[1]
    bn.momentum = 0.1
    data = batches(x, y)[:3]
    model.train()
    recalibrate_bn_(model, data, num_batches=3)
    h = [model[0](xb).detach() for xb, _ in data]
    mean = torch.stack([t.mean(0) for t in h]).mean(0)
    var = torch.stack([t.var(0, unbiased=True) for t in h]).mean(0)
    torch.testing.assert_close(bn.running_mean, mean)
    torch.testing.assert_close(bn.running_var, var)
    assert bn.momentum == 0.1 and int(bn.num_batches_tracked) == 3
    assert model.training and bn.training and model[2].training  # modes restored


def test_no_weight_changes_and_other_modules_stay_in_eval_mode():
    x, y = shifted_task(seed=2)
    model = classifier()
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k
              and "num_batches" not in k}
    seen_modes = []
    model[2].register_forward_pre_hook(lambda m, inp: seen_modes.append(m.training))
    model.eval()
    recalibrate_bn_(model, batches(x, y), num_batches=2)
    assert seen_modes == [False, False]  # dropout was not active during the pass
    assert not model.training and not model[1].training
    for key, value in before.items():
        assert torch.equal(model.state_dict()[key], value), key


def test_stops_at_num_batches_and_accepts_plain_tensors():
    x, _ = shifted_task(seed=3)
    calls = []
    model = classifier()
    model.register_forward_pre_hook(lambda m, inp: calls.append(1))
    assert recalibrate_bn_(model, [x[:32], x[32:64], x[64:96]], num_batches=2) == 2
    assert len(calls) == 2
    assert recalibrate_bn_(model, [x[:32]], num_batches=5) == 1  # fewer batches than asked


def test_a_model_without_batchnorm_is_left_alone():
    model = nn.Sequential(nn.Linear(3, 2))
    assert batchnorm_layers(model) == []
    assert recalibrate_bn_(model, [torch.randn(4, 3)], num_batches=1) == 0


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "3"])
def test_bad_num_batches_is_refused(bad):
    with pytest.raises(ValueError, match="num_batches"):
        recalibrate_bn_(classifier(), [torch.randn(8, 4)], num_batches=bad)


def test_empty_batches_are_refused_before_anything_changes():
    model = classifier()
    model[1].running_mean.fill_(7.0)
    with pytest.raises(ValueError, match="empty"):
        recalibrate_bn_(model, [], num_batches=2)
    assert torch.all(model[1].running_mean == 7.0)


def test_stale_fraction_follows_the_momentum():
    from bnnopt.nn.batchnorm import stale_fraction

    model = classifier()
    assert stale_fraction(model, 4) == pytest.approx(0.9 ** 4)
    model[1].momentum = None
    assert stale_fraction(model, 4) == pytest.approx(1 / 5)
    assert stale_fraction(nn.Sequential(nn.Linear(2, 2)), 4) == 0.0


def test_stale_statistics_hint_only_when_both_signs_agree():
    from bnnopt.nn.batchnorm import stale_statistics_hint

    model = classifier()
    hint = stale_statistics_hint(model, 4, train_acc=56.6, test_acc=10.4)
    assert hint is not None and "--bn-recalibrate" in hint and "66%" in hint
    assert stale_statistics_hint(model, 4, train_acc=56.6, test_acc=50.0) is None  # plausible
    assert stale_statistics_hint(model, 40, train_acc=56.6, test_acc=10.4) is None  # caught up
    assert stale_statistics_hint(nn.Sequential(nn.Linear(2, 2)), 1, 90.0, 10.0) is None
