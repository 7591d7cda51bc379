import numpy as np
import pytest
import torch

from bnnopt.data import ArrayDataset, Augment, InMemoryLoader, Normalizer, crop_flip, epoch_generator, make_loaders


def _reference(x: np.ndarray, dy, dx, flips, pad: int, mode: str) -> np.ndarray:
    """Per-image numpy pad -> slice -> flip (what RandomCrop(padding) + RandomHorizontalFlip do)."""
    n, _, h, w = x.shape
    out = np.empty_like(x)
    np_mode = "constant" if mode == "zero" else "reflect"
    for i in range(n):
        p = np.pad(x[i], ((0, 0), (pad, pad), (pad, pad)), mode=np_mode)
        crop = p[:, dy[i]:dy[i] + h, dx[i]:dx[i] + w]
        out[i] = crop[:, :, ::-1] if flips[i] else crop
    return out


@pytest.mark.parametrize("mode", ["zero", "reflect"])
def test_crop_flip_matches_per_image_reference(mode):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1, 256, (12, 2, 6, 9), generator=g, dtype=torch.uint8)  # no zeros: padding visible
    pad = 3
    dy = torch.tensor([0, 6, 3, 1, 5, 0, 6, 2, 4, 3, 0, 6])
    dx = torch.tensor([0, 6, 3, 6, 0, 2, 1, 5, 4, 3, 6, 0])
    flips = torch.tensor([0, 0, 0, 1, 1, 1, 0, 1, 0, 1, 1, 0]).bool()
    index = torch.tensor([11, 0, 3, 3, 7, 1, 2, 4, 5, 6, 8, 9])
    got = crop_flip(x, index, dy, dx, flips, pad, mode)
    want = _reference(x[index].numpy(), dy.numpy(), dx.numpy(), flips.numpy(), pad, mode)
    assert got.dtype == torch.uint8 and np.array_equal(got.numpy(), want)
    assert (got[0, :, :3, :] == 0).all() == (mode == "zero")  # dy=0 shows the top padding
    assert torch.equal(got[2], x[3])  # centred, unflipped crop is the image


def test_crop_flip_bad_args():
    x = torch.zeros(1, 1, 4, 4, dtype=torch.uint8)
    z = torch.zeros(1, dtype=torch.long)
    with pytest.raises(ValueError, match="reflect padding 4"):
        crop_flip(x, None, z, z, z.bool(), 4, "reflect")
    with pytest.raises(ValueError, match="pad_mode 'wrap'"):
        crop_flip(x, None, z, z, z.bool(), 1, "wrap")
    with pytest.raises(ValueError, match="pad_mode"):
        Augment(pad_mode="wrap")
    with pytest.raises(ValueError, match="pad -1"):
        Augment(pad=-1)


def test_normalizer_closed_form():
    x = torch.tensor([0, 1, 128, 255], dtype=torch.uint8).view(1, 1, 2, 2).repeat(1, 3, 1, 1)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
    got = Normalizer(mean, std)(x)
    for c in range(3):
        want = (x[0, c].double() / 255 - mean[c]) / std[c]
        assert torch.allclose(got[0, c].double(), want, atol=1e-6)
    with pytest.raises(ValueError, match="std > 0"):
        Normalizer((0.5,), (0.0,))


def _data(n=10, c=3, h=8, w=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, h, w), generator=g, dtype=torch.uint8), torch.arange(n)


def _batches(loader, epoch, **kw):
    return [(x.clone(), y.clone()) for x, y in loader.epoch(epoch, **kw)]


def _same(a, b):
    return len(a) == len(b) and all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))


def test_epoch_is_pure_function_of_seed_and_epoch():
    x, y = _data(23)
    mk = lambda seed: InMemoryLoader(x, y, 5, (0.5,) * 3, (0.25,) * 3, augment=True, seed=seed)
    a = mk(7)
    for e in range(3):
        _batches(a, e)  # history must not matter
    assert _same(_batches(a, 3), _batches(mk(7), 3))
    assert not _same(_batches(a, 3), _batches(a, 4))
    assert not _same(_batches(a, 3), _batches(mk(8), 3))
    assert _same(_batches(a, 3, start=2), _batches(a, 3)[2:])


def test_batches_equal_reference_augmentation_of_the_plan():
    x, y = _data(13, h=6, w=7)
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.6, 0.7)
    loader = InMemoryLoader(x, y, 4, mean, std, augment=Augment(pad=2, flip=True), seed=1)
    plan = loader.plan(5)
    xs, ys = zip(*loader.epoch(5))
    order = plan["order"].numpy()
    assert np.array_equal(torch.cat(ys).numpy(), order)  # every sample exactly once, in plan order
    ref = _reference(x[order].numpy(), plan["dy"].numpy(), plan["dx"].numpy(), plan["flips"].numpy(), 2, "zero")
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    assert torch.allclose(torch.cat(xs), (torch.from_numpy(ref).float() / 255 - m) / s, atol=1e-5)


def test_augmentation_parameters_are_spread():
    loader = InMemoryLoader(*_data(2000, h=4, w=4), 100, (0.5,) * 3, (0.5,) * 3, augment=True, seed=0)
    plan = loader.plan(0)
    assert set(plan["dy"].tolist()) == set(range(9)) == set(plan["dx"].tolist())
    assert 0.45 < plan["flips"].float().mean().item() < 0.55
    no_flip = InMemoryLoader(*_data(50), 10, (0.5,) * 3, (0.5,) * 3, augment=Augment(flip=False)).plan(0)
    assert not no_flip["flips"].any()


def test_drop_last_and_len():
    x, y = _data(10)
    keep = InMemoryLoader(x, y, 4, (0.5,) * 3, (0.5,) * 3)
    drop = InMemoryLoader(x, y, 4, (0.5,) * 3, (0.5,) * 3, drop_last=True)
    assert len(keep) == 3 and [b[1].numel() for b in keep.epoch(0)] == [4, 4, 2]
    assert len(drop) == 2 and [b[1].numel() for b in drop.epoch(0)] == [4, 4]


def test_eval_is_ordered_and_unaugmented():
    x, y = _data(9)
    loader = InMemoryLoader(x, y, 4, (0.0,) * 3, (1.0,) * 3, augment=True, drop_last=True)
    xs, ys = zip(*loader.eval())
    assert torch.equal(torch.cat(ys), y)
    assert torch.allclose(torch.cat(xs), x.float() / 255)
    unshuffled = InMemoryLoader(x, y, 4, (0.0,) * 3, (1.0,) * 3, shuffle=False)
    assert torch.equal(torch.cat([b[1] for b in unshuffled.epoch(3)]), y)


def test_make_loaders_uses_dataset_defaults():
    x, y = _data(12)
    ds = ArrayDataset("toy", x, y % 3, x[:5], y[:5] % 3, ("a", "b", "c"), (0.5,) * 3, (0.5,) * 3,
                      Augment(pad=1, flip=False))
    train, test = make_loaders(ds, 4, seed=2, eval_batch_size=2)
    assert train.augment == Augment(pad=1, flip=False) and test.augment is None and not test.shuffle
    assert len(test) == 3 and torch.equal(torch.cat([b[1] for b in test.epoch(0)]), y[:5] % 3)
    train2, _ = make_loaders(ds, 4, augment=False)
    assert train2.augment is None


def test_bad_inputs():
    x, y = _data(4)
    with pytest.raises(ValueError, match="batch_size 0"):
        InMemoryLoader(x, y, 0, (0.5,) * 3, (0.5,) * 3)
    with pytest.raises(ValueError, match="uint8"):
        InMemoryLoader(x.float(), y, 2, (0.5,) * 3, (0.5,) * 3)
    with pytest.raises(ValueError, match="seed -1"):
        InMemoryLoader(x, y, 2, (0.5,) * 3, (0.5,) * 3, seed=-1)
    with pytest.raises(ValueError, match="augment 'yes'"):
        InMemoryLoader(x, y, 2, (0.5,) * 3, (0.5,) * 3, augment="yes")
    with pytest.raises(ValueError, match="epoch -2"):
        epoch_generator(0, -2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_batches_equal_cpu_batches():
    x, y = _data(20)
    cpu = InMemoryLoader(x, y, 6, (0.5,) * 3, (0.2,) * 3, augment=True, seed=4)
    gpu = InMemoryLoader(x, y, 6, (0.5,) * 3, (0.2,) * 3, augment=True, seed=4, device="cuda")
    for (a, b), (c, d) in zip(cpu.epoch(2), gpu.epoch(2)):
        assert torch.equal(b, d.cpu()) and torch.allclose(a, c.cpu(), atol=1e-6)
