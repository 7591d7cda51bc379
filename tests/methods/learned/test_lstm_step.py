"""lstm_step_fc = nn.LSTM (one step) + nn.Linear, in values and gradients."""
import pytest
import torch

from bnnopt.methods.learned.lstm_step import lstm_step_fc
from bnnopt.methods.learned.meta_nets import LSTMFCNet


def _reference(x, state, lstm, fc):
    _, (h, c) = lstm(x.reshape(1, -1, 1), state)
    return fc(h[0]).squeeze(-1), (h, c)


@pytest.mark.parametrize("save_gates", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("chunk_elems", [4 * 5 * 3, 4 * 5 * 64, 1 << 18])  # 3 rows, 64 rows, all
def test_matches_nn_lstm_in_values_and_gradients(with_state, chunk_elems, save_gates):
    torch.manual_seed(0)
    N, H = 101, 5  # 101 rows: the last chunk is ragged
    lstm = torch.nn.LSTM(1, H).double()
    fc = torch.nn.Linear(H, 1).double()
    x = torch.rand(N, dtype=torch.float64, requires_grad=True)
    state = None
    if with_state:
        state = tuple(torch.randn(1, N, H, dtype=torch.float64, requires_grad=True)
                      for _ in range(2))
    weight = torch.randn(N, dtype=torch.float64)
    inputs = [x, *(state or ()), *lstm.parameters(), *fc.parameters()]

    out, (h, c) = lstm_step_fc(x, state, lstm, fc, chunk_elems, save_gates=save_gates)
    ref_out, (ref_h, ref_c) = _reference(x, state, lstm, fc)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-12)
    torch.testing.assert_close(h, ref_h, rtol=0, atol=1e-12)
    torch.testing.assert_close(c, ref_c, rtol=0, atol=1e-12)

    grads = torch.autograd.grad((out * weight).sum(), inputs)
    ref_grads = torch.autograd.grad((ref_out * weight).sum(), inputs)
    for got, want, t in zip(grads, ref_grads, inputs):
        # with a zero initial state, W_hh (multiplying h0 = 0) rightly gets a zero gradient
        assert want.abs().max() > 0 or (t is lstm.weight_hh_l0 and not with_state)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-11)


def test_new_state_carries_no_gradient_and_inputs_without_grad_get_none():
    lstm, fc = torch.nn.LSTM(1, 4), torch.nn.Linear(4, 1)
    x = torch.rand(10)
    out, (h, c) = lstm_step_fc(x, None, lstm, fc)
    assert not h.requires_grad and not c.requires_grad and h.shape == c.shape == (1, 10, 4)
    out.sum().backward()
    assert lstm.weight_hh_l0.grad is not None and fc.weight.grad is not None
    assert x.grad is None


@pytest.mark.parametrize("save_gates", [False, True])
def test_gradcheck_through_every_input(save_gates):
    torch.manual_seed(1)
    lstm = torch.nn.LSTM(1, 3).double()
    fc = torch.nn.Linear(3, 1).double()
    x = torch.rand(7, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(1, 7, 3, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(1, 7, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, h0, c0: lstm_step_fc(x, (h0, c0), lstm, fc, chunk_elems=24,
                                     save_gates=save_gates)[0], (x, h0, c0))


@pytest.mark.parametrize("lstm, fc, match", [
    (torch.nn.LSTM(2, 4), torch.nn.Linear(4, 1), "input size 1"),
    (torch.nn.LSTM(1, 4, num_layers=2), torch.nn.Linear(4, 1), "1-layer"),
    (torch.nn.LSTM(1, 4), torch.nn.Linear(4, 2), "Linear"),
])
def test_rejects_other_shapes(lstm, fc, match):
    with pytest.raises(ValueError, match=match):
        lstm_step_fc(torch.rand(3), None, lstm, fc)


def test_lstmfc_net_implementations_agree_and_bad_impl_is_named():
    torch.manual_seed(2)
    fast, saved, slow = LSTMFCNet(6), LSTMFCNet(6, impl="saved"), LSTMFCNet(6, impl="torch")
    saved.load_state_dict(fast.state_dict())
    slow.load_state_dict(fast.state_dict())
    x = torch.rand(50)
    state = None
    for _ in range(3):  # the carried state keeps them equal step after step
        a, state_a = fast(x, state)
        s_, state_s = saved(x, state)
        b, state_b = slow(x, state)
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(s_, b)
        torch.testing.assert_close(state_a[1], state_b[1])
        torch.testing.assert_close(state_s[1], state_b[1])
        state = tuple(s.detach() for s in state_b)
    with pytest.raises(ValueError, match="'cuda'.*chunked.*saved.*torch"):
        LSTMFCNet(6, impl="cuda")
