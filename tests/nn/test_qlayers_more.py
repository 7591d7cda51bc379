"""QConv1d / QConv3d / QEmbedding and QMultiheadAttention against torch's float layers
fed the quantized weights; the learned-gradient hooks (delta, track_quantized) on each."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bnnopt.nn import QConv1d, QConv3d, QEmbedding, QLayer, QMultiheadAttention, QuantConfig
from bnnopt.quant import make_weight_quantizer

CASES = {
    "conv1d": (lambda: nn.Conv1d(3, 5, 3, stride=2, padding=1), QConv1d, (2, 3, 9),
               lambda x, w, m: F.conv1d(x, w, m.bias, stride=2, padding=1)),
    "conv3d": (lambda: nn.Conv3d(2, 4, 3, padding=1, bias=False), QConv3d, (2, 2, 4, 5, 5),
               lambda x, w, m: F.conv3d(x, w, None, padding=1)),
    "embedding": (lambda: nn.Embedding(11, 6, padding_idx=0), QEmbedding, None,
                  lambda x, w, m: F.embedding(x, w, 0)),
}


def _input(shape, gen):
    if shape is None:
        return torch.randint(0, 11, (3, 4), generator=gen)
    return torch.randn(*shape, generator=gen)


@pytest.mark.parametrize("kind", list(CASES))
def test_forward_delta_and_tracking(kind):
    make, qcls, shape, ref = CASES[kind]
    torch.manual_seed(0)
    float_layer = make()
    config = QuantConfig(weight_quantizer="bwn", estimator="clipped_ste",
                         quantizer_options={"per_channel": True})
    q = qcls.from_float(float_layer, config)
    assert isinstance(q, QLayer) and isinstance(q, type(float_layer))
    assert set(q.state_dict()) == set(float_layer.state_dict())
    x = _input(shape, torch.Generator().manual_seed(1))
    wq = make_weight_quantizer("bwn", 1, "clipped_ste", per_channel=True)(float_layer.weight)
    assert len(torch.unique(wq[1])) <= 2  # one scale per output channel / token row
    torch.testing.assert_close(q(x), ref(x, wq, float_layer))

    delta = (0.2 * torch.randn_like(q.weight)).requires_grad_(True)
    q.delta = delta
    q.track_quantized = True
    r = torch.randn_like(q(x))
    (q(x) * r).sum().backward()
    torch.testing.assert_close(delta.grad, q.weight.grad)  # W~ = W + delta
    assert q.last_quantized.grad is not None and q.last_quantized.grad.abs().sum() > 0
    wq_leaf = q.quantized_weight().detach().requires_grad_(True)
    (ref(x, wq_leaf, float_layer) * r).sum().backward()
    torch.testing.assert_close(q.last_quantized.grad, wq_leaf.grad)  # dL/dQ


def test_embedding_refuses_max_norm_and_has_no_act_quantizer():
    with pytest.raises(ValueError, match="max_norm"):
        QEmbedding.from_float(nn.Embedding(4, 2, max_norm=1.0))
    q = QEmbedding.from_float(nn.Embedding(4, 2), QuantConfig(act_quantizer="sign"))
    assert q.act_quantizer is None and q.bias is None


def _reference(mha: nn.MultiheadAttention, q: QMultiheadAttention) -> nn.MultiheadAttention:
    """torch's MultiheadAttention holding q's quantized projection weights."""
    ref = copy.deepcopy(mha)
    with torch.no_grad():
        if mha._qkv_same_embed_dim:
            ref.in_proj_weight.copy_(q.in_proj.quantized_weight())
        else:
            for n in "qkv":
                getattr(ref, f"{n}_proj_weight").copy_(getattr(q, f"{n}_proj").quantized_weight())
        ref.out_proj.weight.copy_(q.out_proj.quantized_weight())
    return ref


MHA_OPTIONS = {
    "seq_first": {}, "batch_first": {"batch_first": True}, "kdim_vdim": {"kdim": 5, "vdim": 3},
    "bias_kv_zero_attn": {"add_bias_kv": True, "add_zero_attn": True}, "no_bias": {"bias": False},
}


@pytest.mark.parametrize("key", list(MHA_OPTIONS))
def test_qmha_equals_torch_mha_with_quantized_weights(key):
    opts = MHA_OPTIONS[key]
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, **opts).eval()
    if opts.get("add_bias_kv"):
        with torch.no_grad():
            mha.bias_k.normal_()
            mha.bias_v.normal_()
    q = QMultiheadAttention.from_float(mha, QuantConfig(weight_bits=2)).eval()
    ref = _reference(mha, q)
    g = torch.Generator().manual_seed(3)
    L, S, B = 4, 6, 3
    bf = opts.get("batch_first", False)
    shape = (lambda n, d: (B, n, d) if bf else (n, B, d))
    x = torch.randn(*shape(L, 8), generator=g)
    key_t = torch.randn(*shape(S, q.kdim), generator=g)
    val_t = torch.randn(*shape(S, q.vdim), generator=g)
    kpm = torch.zeros(B, S, dtype=torch.bool)
    kpm[0, -2:] = True
    self_kpm = torch.zeros(B, L, dtype=torch.bool)
    self_kpm[1, -1] = True
    calls = [((x, key_t, val_t), {"key_padding_mask": kpm, "attn_mask": torch.rand(L, S, generator=g) > 0.7}),
             ((x, key_t, val_t), {"attn_mask": torch.rand(B * 2, L, S, generator=g) > 0.8})]
    if q._qkv_same_embed_dim:  # self-attention (query is key is value) and the causal hint
        causal = nn.Transformer.generate_square_subsequent_mask(L)
        calls += [((x, x, x), {"key_padding_mask": self_kpm}),
                  ((x, x, x), {"attn_mask": causal, "is_causal": True})]
    for args, kwargs in calls:
        for need in (True, False):
            for avg in (True, False):
                a = q(*args, need_weights=need, average_attn_weights=avg, **kwargs)
                b = ref(*args, need_weights=need, average_attn_weights=avg, **kwargs)
                torch.testing.assert_close(a[0], b[0], rtol=1e-5, atol=1e-5)
                if need:
                    torch.testing.assert_close(a[1], b[1], rtol=1e-5, atol=1e-5)
                else:
                    assert a[1] is None
    # unbatched input
    x1 = x[0] if bf else x[:, 0]
    k1, v1 = (key_t[0], val_t[0]) if bf else (key_t[:, 0], val_t[:, 0])
    for a, b in zip(q(x1, k1, v1), ref(x1, k1, v1)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_qmha_cross_attention_tracks_dL_dQ_once():
    torch.manual_seed(0)
    q = QMultiheadAttention.from_float(nn.MultiheadAttention(8, 2), QuantConfig())
    q.in_proj.track_quantized = True
    x, mem = torch.randn(3, 2, 8), torch.randn(5, 2, 8)
    r = torch.randn(3, 2, 8)
    (q(x, mem, mem)[0] * r).sum().backward()
    got = q.in_proj.last_quantized.grad
    # reference: the same computation with Q(in_proj) as a leaf, through torch's functional MHA
    w = q.in_proj.quantized_weight().detach().requires_grad_(True)
    out = F.multi_head_attention_forward(
        x, mem, mem, 8, 2, w, q.in_proj.bias.detach(), None, None, False, 0.0,
        q.out_proj.quantized_weight().detach(), q.out_proj.bias.detach(), need_weights=False)[0]
    (out * r).sum().backward()
    torch.testing.assert_close(got, w.grad, rtol=1e-3, atol=1e-4)  # float32 sums of +-1 weights
    assert q.in_proj.weight.grad is not None and q.out_proj.weight.grad is not None


def test_qmha_refuses_bad_projection_names_and_has_no_float_weight_attribute():
    mha = nn.MultiheadAttention(4, 2)
    with pytest.raises(ValueError, match="invalid projection.*valid: in_proj, out_proj"):
        QMultiheadAttention.from_float(mha, None, quantize=["q_proj"])
    q = QMultiheadAttention.from_float(mha, None, quantize=["out_proj"])
    assert type(q.in_proj) is nn.Linear and isinstance(q.out_proj, QLayer)
    assert not hasattr(q, "in_proj_weight")
    torch.testing.assert_close(q.in_proj_bias, mha.in_proj_bias)


@pytest.mark.parametrize("opts", [{}, {"kdim": 5, "vdim": 3}])
def test_qmha_loads_a_float_multihead_attention_state_dict(opts):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, **opts)
    q = QMultiheadAttention.from_float(mha, QuantConfig())
    torch.manual_seed(1)
    other = nn.MultiheadAttention(8, 2, **opts)
    q.load_state_dict(other.state_dict())  # float keys: in_proj_weight, q_proj_weight, ...
    torch.testing.assert_close(q.state_dict()["out_proj.weight"], other.out_proj.weight)
    torch.testing.assert_close(QMultiheadAttention.from_float(other, QuantConfig()).state_dict(), q.state_dict())
