"""Per-rank shards (torchrun): the ranks' parts of every global batch, concatenated,
are the one-process batch, with the same augmentation; eval shards cover the split."""
import numpy as np
import pytest
import torch

from bnnopt.data import ImageFolderLoader, InMemoryLoader, make_loaders, read_imagenet


def _images(n=37, seed=0):
    g = np.random.default_rng(seed)
    return g.integers(0, 256, (n, 3, 8, 8), dtype=np.uint8), g.integers(0, 10, n)


@pytest.mark.parametrize("world", [2, 3])
def test_in_memory_shards_concatenate_to_the_global_batch(world):
    x, y = _images()
    kw = dict(batch_size=12, mean=(0.5,) * 3, std=(0.25,) * 3, augment=True, seed=5)
    whole = InMemoryLoader(x, y, **kw)
    ranks = [InMemoryLoader(x, y, **kw).shard(r, world) for r in range(world)]
    assert len({len(r) for r in ranks}) == 1
    full = list(whole.epoch(2))
    parts = [list(r.epoch(2)) for r in ranks]
    # 37 = 12 + 12 + 12 + 1: the last global batch (1 image) goes to rank 0, the others get none
    assert len(parts[0]) == 4 and len(full) == 4
    assert [p[3][0].shape[0] for p in parts] == [1] + [0] * (world - 1)
    for i in range(4):
        xs = torch.cat([p[i][0] for p in parts])
        ys = torch.cat([p[i][1] for p in parts])
        assert torch.equal(xs, full[i][0]) and torch.equal(ys, full[i][1])
    assert ranks[0].global_sizes() == [12, 12, 12, 1]
    assert ranks[0].dropped_images() == 0


@pytest.mark.parametrize("n, world, kept, dropped", [(37, 2, 3, 1), (39, 2, 3, 3), (40, 2, 4, 0),
                                                     (41, 3, 3, 5), (42, 3, 4, 0)])
def test_min_shard_drops_only_a_final_batch_too_small_for_every_rank(n, world, kept, dropped):
    x, y = _images(n)
    kw = dict(batch_size=12, mean=(0.5,) * 3, std=(0.25,) * 3)
    # the final batch of n mod 12 images is kept when (n mod 12) // world >= min_shard = 2
    loader = InMemoryLoader(x, y, **kw).shard(world - 1, world, min_shard=2)
    assert len(loader) == kept and loader.dropped_images() == dropped
    assert len(list(loader.epoch(0))) == kept
    assert InMemoryLoader(x, y, **kw).shard(0, 1, min_shard=2).dropped_images() == 0
    with pytest.raises(ValueError, match="invalid min_shard -1"):
        InMemoryLoader(x, y, **kw).shard(0, world, min_shard=-1)


def test_eval_shards_cover_the_split_once():
    x, y = _images(23)
    kw = dict(batch_size=5, mean=(0.5,) * 3, std=(0.25,) * 3)
    whole = torch.cat([b[1] for b in InMemoryLoader(x, y, **kw).eval()])
    parts = [torch.cat([b[1] for b in InMemoryLoader(x, y, **kw).shard(r, 3).eval()])
             for r in range(3)]
    assert [len(p) for p in parts] == [8, 8, 7]
    assert torch.equal(torch.cat(parts), whole)


def test_bad_shard_is_refused():
    x, y = _images(4)
    with pytest.raises(ValueError, match="invalid shard rank 2 of world 2"):
        InMemoryLoader(x, y, 2, (0.5,) * 3, (0.25,) * 3).shard(2, 2)


@pytest.mark.parametrize("executor", ["process", "thread"])
def test_image_folder_shards_and_worker_processes(tmp_path, fmt, executor):
    fmt.image_folder(tmp_path, per_class=4, size=(14, 11))  # 12 train images
    ds = read_imagenet(tmp_path, size=8, resize=9, workers=2, executor=executor)
    whole, _ = make_loaders(ds, batch_size=6, seed=1)
    ranks = [ImageFolderLoader(ds.train, 6, ds.mean, ds.std, 8, 9, True, seed=1, workers=2,
                               executor=executor).shard(r, 2) for r in range(2)]
    full = list(whole.epoch(0))
    parts = [list(r.epoch(0)) for r in ranks]
    for i in range(len(full)):
        assert parts[0][i][0].shape[0] == 3
        assert torch.equal(torch.cat([p[i][0] for p in parts]), full[i][0])
        assert torch.equal(torch.cat([p[i][1] for p in parts]), full[i][1])
    evals = [torch.cat([b[1] for b in r.eval()]) for r in ranks]
    assert torch.equal(torch.cat(evals), torch.tensor([s[1] for s in ds.train.samples]))
    for r in ranks:
        r.close()
    whole.close()


def test_image_folder_rank_without_images_in_the_final_batch(tmp_path, fmt):
    fmt.image_folder(tmp_path, per_class=4, size=(14, 11))  # 12 train images: 11 + 1
    ds = read_imagenet(tmp_path, size=8, resize=9, workers=1, executor="thread")
    ranks = [ImageFolderLoader(ds.train, 11, ds.mean, ds.std, 8, 9, False, seed=1, workers=1,
                               executor="thread").shard(r, 2) for r in range(2)]
    last = [list(r.epoch(0))[-1] for r in ranks]
    assert [b[0].shape for b in last] == [(1, 3, 8, 8), (0, 3, 8, 8)]
    assert [b[1].shape[0] for b in last] == [1, 0]
    for r in ranks:
        r.close()
