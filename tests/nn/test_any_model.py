"""binarize_ on foreign models: nn.TransformerEncoder (fused fast path), Conv1d nets,
BERT-like stacks; the report, on_unsupported, keep_first/keep_last, and training."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from bnnopt.nn import QMultiheadAttention, QuantConfig, binarize_, quantized_layers
from bnnopt.nn.convert import BinarizeResult, UnsupportedLayerWarning

from .conftest import Conv1dNet


class EncoderNet(nn.Module):
    """nn.TransformerEncoder (batch_first, even heads: eligible for torch's fused path) + head."""

    def __init__(self, d=16, layers=2, classes=3):
        super().__init__()
        layer = nn.TransformerEncoderLayer(d, 4, 2 * d, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=True)
        self.head = nn.Linear(d, classes)

    def forward(self, x, src_key_padding_mask=None):
        return self.head(self.encoder(x, src_key_padding_mask=src_key_padding_mask).mean(dim=1))


def _encoder_net(seed=0):
    torch.manual_seed(seed)
    net = EncoderNet()
    with torch.no_grad():  # nn.TransformerEncoder copies one layer: make the layers differ
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net


def _no_dropout_train_forward(model, *args, **kwargs):
    """The quantized forward through the layers' Python code: train mode, dropout off."""
    ref = copy.deepcopy(model).train()
    for m in ref.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
        if isinstance(m, (nn.MultiheadAttention, QMultiheadAttention)):
            m.dropout = 0.0
    return ref(*args, **kwargs).detach()


@pytest.mark.parametrize("exclude", [None, "self_attn"])
def test_binarized_encoder_eval_no_grad_runs_quantized_weights(exclude):
    float_net = _encoder_net().eval()
    net = copy.deepcopy(float_net)
    names = binarize_(net, QuantConfig(exclude=exclude))
    assert "encoder.layers.0.linear1" in names and "head" not in names
    assert ("encoder.layers.0.self_attn.in_proj" in names) == (exclude is None)
    x = torch.randn(4, 6, 16, generator=torch.Generator().manual_seed(1))
    kpm = torch.zeros(4, 6, dtype=torch.bool)
    kpm[1:, -2:] = True  # left-aligned padding: torch's nested-tensor path would apply
    for kwargs in ({}, {"src_key_padding_mask": kpm}):
        with torch.no_grad():
            got, floats = net.eval()(x, **kwargs), float_net(x, **kwargs)
        want = _no_dropout_train_forward(net, x, **kwargs)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        assert (got - floats).abs().max() > 0.05  # it is not the float model
    # the guard is what makes it right: re-enable the fused kernel and the output drifts
    # towards the float weights (only where the MultiheadAttention stayed float, the
    # fused kernel can run at all)
    if exclude == "self_attn":
        for layer in net.encoder.layers:
            layer.activation_relu_or_gelu = 1
        with torch.no_grad():
            assert (net(x) - _no_dropout_train_forward(net, x)).abs().max() > 0.05


def test_binarize_result_is_a_list_with_a_report():
    net = _encoder_net()
    net.extra = nn.LSTM(16, 4)  # a layer with weights binarize_ cannot quantize (unused)
    with pytest.warns(UnsupportedLayerWarning, match=r"extra \(LSTM\): LSTM has no quantized layer"):
        result = binarize_(net, QuantConfig(exclude="linear2"))
    assert isinstance(result, BinarizeResult) and isinstance(result, list)
    assert result == [n for n, _ in quantized_layers(net)]
    assert result == ["encoder.layers.0.self_attn.in_proj", "encoder.layers.0.self_attn.out_proj",
                      "encoder.layers.0.linear1", "encoder.layers.1.self_attn.in_proj",
                      "encoder.layers.1.self_attn.out_proj", "encoder.layers.1.linear1"]
    reasons = {d.name: (d.action, d.reason) for d in result.skipped}
    assert reasons["head"][0] == "kept" and "keep_last" in reasons["head"][1]
    assert reasons["encoder.layers.0.linear2"] == ("skipped", "matches exclude='linear2'")
    assert reasons["extra"][0] == "unsupported"
    assert [d.name for d in result.unsupported] == ["extra"]
    table = result.report
    for name in [*result, "head", "extra", "encoder.layers.1.linear2"]:
        assert name in table
    assert table.splitlines()[-1] == "6 swapped, 1 kept, 2 skipped, 1 unsupported"
    assert repr(result) == repr(list(result)) and str(result) == str(list(result))
    assert copy.deepcopy(result).decisions == result.decisions


def test_on_unsupported_error_ignore_and_bad_value():
    def make():
        return nn.Sequential(nn.Conv2d(1, 2, 3), nn.ConvTranspose2d(2, 2, 3), nn.Conv2d(2, 2, 3))
    with pytest.raises(ValueError, match=r"cannot quantize layer '1' \(ConvTranspose2d\).*valid: on_unsupported"):
        binarize_(make(), QuantConfig(keep_first=False), on_unsupported="error")
    with pytest.raises(ValueError, match=r"cannot quantize layer '1'"):
        binarize_(make(), QuantConfig(keep_first=False, on_unsupported="error"))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert binarize_(make(), QuantConfig(keep_first=False), on_unsupported="ignore") == ["0"]
    with pytest.raises(ValueError, match="invalid on_unsupported 'loud'; valid: warn, error, ignore"):
        binarize_(make(), on_unsupported="loud")
    with pytest.raises(ValueError, match="invalid on_unsupported"):
        binarize_(make(), QuantConfig(on_unsupported="loud"))


class DirectWeightReader(nn.Module):
    """Reads its child's weight directly (as fused blocks do): a swap would stay float."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 4)

    def forward(self, x):
        return torch.nn.functional.linear(x, self.proj.weight, self.proj.bias)


def test_example_input_finds_layers_whose_forward_never_runs():
    model = nn.Sequential(nn.Linear(4, 4), DirectWeightReader(), nn.Linear(4, 4), nn.Linear(4, 2))
    x = torch.randn(2, 4)
    assert binarize_(copy.deepcopy(model)) == ["1.proj", "2"]  # blind: 1.proj would stay float
    with pytest.warns(UnsupportedLayerWarning, match=r"1\.proj.*forward never runs"):
        result = binarize_(model, example_input=x)
    assert result == ["2"] and type(model[1].proj) is nn.Linear


# -- keep_first / keep_last -----------------------------------------------------------------
class SelfAttention(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.query, self.key, self.value = (nn.Linear(d, d) for _ in range(3))

    def forward(self, h):
        a = torch.softmax(self.query(h) @ self.key(h).transpose(1, 2) / h.shape[-1] ** 0.5, dim=-1)
        return a @ self.value(h)


class BertLikeLayer(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.attention = SelfAttention(d)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.intermediate, self.output = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)

    def forward(self, h):
        h = self.norm1(h + self.attention(h))
        return self.norm2(h + self.output(torch.relu(self.intermediate(h))))


class BertLike(nn.Module):
    """Embeddings + repeated attention layers + pooler + classifier, from torch modules."""

    def __init__(self, vocab=20, d=16, layers=2, classes=2):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, d)
        self.position_embeddings = nn.Embedding(32, d)
        self.layer = nn.ModuleList([BertLikeLayer(d) for _ in range(layers)])
        self.pooler = nn.Linear(d, d)
        self.classifier = nn.Linear(d, classes)

    def forward(self, ids):
        h = self.word_embeddings(ids) + self.position_embeddings(torch.arange(ids.shape[1]))
        for layer in self.layer:
            h = layer(h)
        return self.classifier(torch.tanh(self.pooler(h[:, 0])))


class HeadFirstCNN(nn.Module):
    """A CNN whose classifier is registered before its stem (module order != execution order)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 3)
        self.stem = nn.Conv1d(2, 8, 3, padding=1)
        self.body = nn.Sequential(nn.Conv1d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv1d(8, 8, 3, padding=1))

    def forward(self, x):
        return self.fc(self.body(torch.relu(self.stem(x))).mean(-1))


def _kept(result):
    return [d.name for d in result.kept]


def test_keep_first_last_on_transformer_encoder_keeps_only_the_head():
    for example in (None, torch.randn(2, 5, 16)):
        net = _encoder_net()
        result = binarize_(net, QuantConfig(), example_input=example)
        assert _kept(result) == ["head"]
        assert result[0] == "encoder.layers.0.self_attn.in_proj"
        assert result[-1] == "encoder.layers.1.linear2"


def test_keep_first_last_on_bert_like_stack():
    ids = torch.randint(0, 20, (2, 5))
    for example in (None, ids):
        result = binarize_(BertLike(), QuantConfig(), example_input=example)
        assert _kept(result) == ["classifier"]  # the first query projection is binarized
        assert "layer.0.attention.query" in result and "pooler" in result
    result = binarize_(BertLike(), QuantConfig(embedding=True), example_input=ids)
    assert _kept(result) == ["word_embeddings", "classifier"]
    assert result[0] == "position_embeddings"
    skipped = {d.name: d.reason for d in binarize_(BertLike(), QuantConfig()).skipped}
    assert "embedding" in skipped["word_embeddings"].lower()


def test_keep_first_last_on_cnn_follows_execution_order_when_given_an_example():
    blind = binarize_(HeadFirstCNN(), QuantConfig())
    assert _kept(blind) == ["fc", "body.2"]  # module order: registration puts fc first
    traced = binarize_(HeadFirstCNN(), QuantConfig(), example_input=torch.randn(2, 2, 7))
    assert set(_kept(traced)) == {"stem", "fc"} and traced == ["body.0", "body.2"]


# -- training on foreign models: binarize_ + STE + Adam lowers the loss --------------------
def _train(model, batches, loss_fn, steps, lr):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()

    def full_loss():
        with torch.no_grad():
            model.eval()
            value = sum(float(loss_fn(model(x), y)) for x, y in batches) / len(batches)
            model.train()
            return value

    before = full_loss()
    for step in range(steps):
        x, y = batches[step % len(batches)]
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    return before, full_loss()


def test_training_a_binarized_transformer_encoder_lowers_the_loss():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 6, 16, generator=g)
    y = (x[:, :, 0].sum(1) > 0).long() + (x[:, :, 1].sum(1) > 0).long()  # 3 classes
    net = _encoder_net()
    binarize_(net, QuantConfig(estimator="ste"))
    for m in net.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    before, after = _train(net, [(x[:32], y[:32]), (x[32:], y[32:])], nn.functional.cross_entropy, 60, 3e-3)
    assert after < 0.7 * before, (before, after)


def test_training_a_binarized_conv1d_net_lowers_the_loss():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 1, 24, generator=g)
    y = torch.randint(0, 2, (128,), generator=g)
    x[y == 1, 0, 8:12] += 3.0  # class 1 carries a bump somewhere the convs can find
    net = Conv1dNet()
    names = binarize_(net, QuantConfig(keep_first=False, keep_last=False))
    assert names == ["conv1", "conv2", "fc1", "fc2"]
    before, after = _train(net, [(x[:64], y[:64]), (x[64:], y[64:])], nn.functional.cross_entropy, 60, 1e-2)
    assert after < 0.6 * before, (before, after)


def test_training_a_binarized_hf_bert_lowers_the_loss():
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=32, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=64,
                                     max_position_embeddings=16, num_labels=2,
                                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 32, (64, 8), generator=g)
    y = (ids == 7).any(dim=1).long()  # does token 7 occur?
    # BWN (alpha * sign W, alpha = mean |W|): unscaled +-1 weights (1-bit DoReFa) saturate
    # BERT's attention softmax at this width and only the class prior is learnt.
    result = binarize_(model, QuantConfig(weight_quantizer="bwn", estimator="ste"), example_input=ids[:2])
    assert _kept(result) == ["classifier"]
    assert "bert.encoder.layer.0.attention.self.query" in result
    assert not result.unsupported

    def loss_fn(out, target):
        return nn.functional.cross_entropy(out.logits, target)
    before, after = _train(model, [(ids[:32], y[:32]), (ids[32:], y[32:])], loss_fn, 40, 3e-3)
    assert after < 0.7 * before, (before, after)


class MixedNet(nn.Module):
    """Embedding -> Conv1d -> self-attention -> head: every new quantized layer class."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 8)
        self.conv = nn.Conv1d(8, 8, 3, padding=1)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, ids):
        h = self.conv(self.emb(ids).transpose(1, 2)).transpose(1, 2)
        return self.head(self.attn(h, h, h, need_weights=False)[0].mean(1))


@pytest.mark.parametrize("name", ["fcgrad", "fsg"])
def test_learned_gradient_methods_step_every_new_layer_class(name):
    import torch.nn.functional as F

    from bnnopt.methods.base import OptimConfig
    from bnnopt.registry import METHODS

    torch.manual_seed(0)
    model = MixedNet().double()
    method = METHODS.get(name)()
    names = method.prepare(model, {"keep_first": False, "keep_last": False})
    assert names == ["conv", "attn.in_proj", "attn.out_proj", "head"]
    method.build(model, OptimConfig(name="sgd", lr=0.05))
    before = {n: layer.weight.detach().clone() for n, layer in quantized_layers(model)}
    g = torch.Generator().manual_seed(1)
    for _ in range(2):
        ids, y = torch.randint(0, 10, (4, 5), generator=g), torch.randint(0, 3, (4,), generator=g)
        method.train_step(model, ids, y, F.cross_entropy)
    for n, layer in quantized_layers(model):
        assert torch.isfinite(layer.weight).all() and not torch.equal(layer.weight, before[n]), n


def test_binarized_nn_transformer_with_cross_attention_runs_quantized_weights():
    torch.manual_seed(0)
    float_model = nn.Transformer(16, 4, 1, 1, 32, dropout=0.0, batch_first=True).eval()
    model = copy.deepcopy(float_model)
    names = binarize_(model, QuantConfig(keep_first=False, keep_last=False))
    assert "decoder.layers.0.multihead_attn.in_proj" in names and len(names) == 10
    src, tgt = torch.randn(2, 5, 16), torch.randn(2, 4, 16)
    with torch.no_grad():
        got, floats = model(src, tgt), float_model(src, tgt)
    torch.testing.assert_close(got, _no_dropout_train_forward(model, src, tgt), rtol=1e-5, atol=1e-5)
    assert (got - floats).abs().max() > 0.1


def test_embedding_flag_is_validated():
    with pytest.raises(ValueError, match="invalid embedding 'yes'; valid: True, False"):
        binarize_(nn.Sequential(nn.Embedding(3, 2)), QuantConfig(embedding="yes"))
