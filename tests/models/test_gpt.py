"""The decoder-only GPT: shapes, causality, binarize_ coverage, argument checks."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from bnnopt.models import GPT_POLICY, create_model
from bnnopt.models.gpt import GPT
from bnnopt.nn import QLinear, QuantConfig, binarize_


def _tiny(**kw):
    torch.manual_seed(0)
    return create_model("gpt_tiny", num_classes=11, block_size=16, **kw)


def test_shapes_and_backward():
    model = _tiny()
    x = torch.randint(0, 11, (3, 16))
    out = model(x)
    assert out.shape == (3, 16, 11)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert model(x[:, :5]).shape == (3, 5, 11)


@pytest.mark.parametrize("quantized", [False, True])
def test_causal(quantized):
    model = _tiny()
    if quantized:
        binarize_(model, QuantConfig(weight_quantizer="bitnet_b158", weight_bits=2,
                                     act_quantizer="absmax_ln", act_bits=8, **GPT_POLICY))
    model.eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 11, (2, 16), generator=g)
    base = model(x)
    for t in (0, 7, 14):
        x2 = x.clone()
        x2[:, t + 1:] = torch.randint(0, 11, (2, 15 - t), generator=g)
        assert not torch.equal(x2, x)
        out = model(x2)
        torch.testing.assert_close(out[:, :t + 1], base[:, :t + 1], rtol=0, atol=1e-6)
        # and a change at position t does change position t's output
    x3 = x.clone()
    x3[:, 3] = (x3[:, 3] + 1) % 11
    assert not torch.allclose(model(x3)[:, 3], base[:, 3])


def test_binarize_swaps_exactly_the_projections():
    model = _tiny(n_layer=3)
    swapped = binarize_(model, QuantConfig(weight_quantizer="bitnet", **GPT_POLICY))
    expected = [f"blocks.{i}.{p}" for i in range(3)
                for p in ("attn.qkv", "attn.proj", "mlp.fc", "mlp.proj")]
    assert swapped == expected
    assert isinstance(model.tok_emb, nn.Embedding) and isinstance(model.pos_emb, nn.Embedding)
    assert type(model.head) is nn.Linear
    assert sum(isinstance(m, QLinear) for m in model.modules()) == 12
    # the same choice by name, and the head too with keep_last=False
    m2 = _tiny(n_layer=3)
    assert binarize_(m2, QuantConfig(keep_first=False, keep_last=False, exclude="head")) == expected
    m3 = _tiny(n_layer=3)
    assert binarize_(m3, QuantConfig(keep_first=False, keep_last=False))[-1] == "head"


def test_tied_head_and_presets():
    model = _tiny(tie_weights=True)
    assert model.head.weight is model.tok_emb.weight
    for name, layers, width in (("gpt_tiny", 2, 64), ("gpt_small", 6, 384)):
        m = create_model(name, num_classes=256, in_channels=1, input_size=8)
        assert len(m.blocks) == layers and m.tok_emb.weight.shape == (256, width)


def test_bad_arguments():
    with pytest.raises(ValueError, match="divisible"):
        GPT(d_model=30, n_head=4)
    with pytest.raises(ValueError, match="block_size"):
        GPT(block_size=0)
    with pytest.raises(ValueError, match="dropout"):
        GPT(dropout=1.5)
    model = _tiny()
    with pytest.raises(ValueError, match="exceeds block_size 16"):
        model(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match="integer tokens"):
        model(torch.zeros(1, 4))
