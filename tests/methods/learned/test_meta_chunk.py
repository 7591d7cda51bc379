"""``meta_chunk``: the meta work in chunks of C weight elements, recomputed in the backward.

Same values as all N at once (float64), and what it bounds: the activations the
meta-nets keep for the backward between the look-ahead and the step."""
from __future__ import annotations

import pytest
import torch

from bnnopt.methods.learned.base import flat_cat, flat_range, layer_pieces
from bnnopt.methods.learned.config import FSGConfig, LSTMFCConfig
from bnnopt.methods.learned.hgs import HistoryBuffer

from .conftest import batches, make, step, weights

CASES = [
    ("fcgrad", {}),
    ("multifc", {}),
    ("fsg", {"history": 3}),
    ("fsg", {"history": 3, "normalize": "none", "grad_norm": "ste-detached"}),
    ("fsg", {"history": 2, "lookahead": "optimizer", "d_model": 2}),
    ("fcgrad", {"variant": "official"}),
]
IDS = ["fcgrad", "multifc", "fsg", "fsg-ste-detached", "fsg-lookahead-dmodel", "fcgrad-official"]


@pytest.mark.parametrize("name, options", CASES, ids=IDS)
@pytest.mark.parametrize("chunk", [7, 64])
def test_chunked_meta_work_equals_all_at_once(name, options, chunk):
    data = batches(6, cnn=True, seed=4)
    model_a, whole = make(name, cnn=True, optim="sgdm", **options)
    model_b, chunked = make(name, cnn=True, optim="sgdm", meta_chunk=chunk, **options)
    n = sum(layer.weight.numel() for _, layer in chunked.layers)
    assert n > 2 * chunk  # several chunks, and a last one shorter than C
    for batch in data:
        step(model_a, whole, batch)
        step(model_b, chunked, batch)
    for a, b in zip(weights(whole), weights(chunked)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    for p, q in zip(whole.meta_modules.parameters(), chunked.meta_modules.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12)
    assert any(not torch.equal(p, q) for p, q in zip(   # the meta-nets did train
        chunked.meta_modules.parameters(), make(name, cnn=True, **options)[1].meta_modules.parameters()))


def saved_bytes_of_look_ahead(method, model, batch) -> int:
    """Bytes of the tensors autograd saves while the look-ahead is generated (outside a
    checkpoint; a checkpointed chunk saves none of its own)."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        method.begin_step()
    method.discard_step()
    return total


def test_chunks_bound_what_the_meta_nets_keep_for_the_backward():
    data = batches(2, cnn=True)
    kept = {}
    for chunk in (0, 16):
        model, method = make("fsg", cnn=True, history=3, meta_chunk=chunk)
        step(model, method, data[0])   # the first step stores g; the next one generates
        kept[chunk] = saved_bytes_of_look_ahead(method, model, data[1])
    n = sum(layer.weight.numel() for _, layer in method.layers)
    # all at once the slow-net keeps several (N, k+1) tensors; in chunks only their
    # results (Δ pieces), about one value per weight and layer boundary
    assert kept[0] > 8 * n * 8
    assert kept[16] < kept[0] / 4


def test_flat_range_and_layer_pieces_match_flat_cat():
    tensors = [torch.arange(6.0).reshape(2, 3), torch.arange(6.0, 10.0), torch.arange(10.0, 17.0)]
    flat = flat_cat(tensors)
    for lo in range(0, 17):
        for hi in range(lo, 18):
            assert torch.equal(flat_range(tensors, lo, hi), flat[lo:hi])
    assert layer_pieces(tensors, 4, 12) == [(0, 4, 6), (1, 0, 4), (2, 0, 2)]


def test_hgs_columns_equal_the_columns_of_the_sequence_in_every_ring_state():
    buf = HistoryBuffer(3, 5)
    for t in range(7):
        buf.push(torch.arange(5.0) + 10 * t)
        for a, b in [(0, 5), (1, 4), (2, 3), (4, 5)]:
            assert torch.equal(buf.columns(a, b), buf.sequence()[:, a:b])


@pytest.mark.parametrize("make_config, message", [
    (lambda: LSTMFCConfig(meta_chunk=8), "lstmfc meta_chunk 8 is not available"),
    (lambda: FSGConfig.paper(meta_chunk=8), "fsg meta_chunk 8 needs layout 'per-weight'"),
    (lambda: FSGConfig.cpu(slow_net="lstmfc", meta_chunk=8), "needs layout 'per-weight'"),
    (lambda: FSGConfig.cpu(meta_chunk=-1), "invalid fsg meta_chunk -1"),
])
def test_meta_chunk_is_refused_where_it_cannot_apply(make_config, message):
    with pytest.raises(ValueError, match=message):
        make_config()
