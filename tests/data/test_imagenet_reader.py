import numpy as np
import pytest
import torch

from bnnopt.data import DataError, ImageFolderLoader, make_loaders, read_imagenet
from bnnopt.data._imagenet import decode_image


def test_index_and_center_crop_exact(tmp_path, fmt):
    images = fmt.image_folder(tmp_path / "imagenet", size=(12, 10))  # w=12, h=10
    ds = read_imagenet(tmp_path, size=8, resize=10)  # shorter side already 10: no resampling
    assert ds.classes == ("n01", "n02", "n03") and len(ds.train) == 6 and len(ds.test) == 6
    path, label = ds.test.samples[3]
    assert label == 1 and path.name == "img1.png"
    got = decode_image(path, 10, 8)
    want = images[("val", "n02", 1)][1:9, 2:10].transpose(2, 0, 1)  # top=(10-8)//2, left=(12-8)//2
    assert np.array_equal(got, want)


def test_random_crop_offsets(tmp_path, fmt):
    images = fmt.image_folder(tmp_path, per_class=1, size=(12, 10))
    p = tmp_path / "train" / "n01" / "img0.png"
    a = images[("train", "n01", 0)]
    assert np.array_equal(decode_image(p, 10, 8, (0.0, 0.99)), a[0:8, 4:12].transpose(2, 0, 1))
    assert np.array_equal(decode_image(p, 10, 8, (0.99, 0.0)), a[2:10, 0:8].transpose(2, 0, 1))


def test_loader_deterministic_and_normalised(tmp_path, fmt):
    fmt.image_folder(tmp_path, per_class=3, size=(14, 11))
    ds = read_imagenet(tmp_path, size=8, resize=9, workers=2)
    train, test = make_loaders(ds, batch_size=4, seed=3, drop_last=True)
    assert isinstance(train, ImageFolderLoader) and len(train) == 2 and len(test) == 3
    a = list(train.epoch(1))
    b = list(ImageFolderLoader(ds.train, 4, ds.mean, ds.std, 8, 9, True, seed=3, drop_last=True).epoch(1))
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))
    assert a[0][0].shape == (4, 3, 8, 8) and a[0][0].dtype == torch.float32
    xs, ys = zip(*test.eval())
    assert torch.cat(ys).tolist() == [s[1] for s in ds.test.samples]
    first = decode_image(ds.test.samples[0][0], 9, 8)
    mean, std = torch.tensor(ds.mean).view(3, 1, 1), torch.tensor(ds.std).view(3, 1, 1)
    assert torch.allclose(xs[0][0], (torch.from_numpy(first).float() / 255 - mean) / std, atol=1e-5)


def test_val_without_class_folders(tmp_path, fmt):
    fmt.image_folder(tmp_path, per_class=1)
    import shutil

    for c in ("n01", "n02", "n03"):
        shutil.move(str(tmp_path / "val" / c / "img0.png"), str(tmp_path / "val" / f"{c}.png"))
        (tmp_path / "val" / c).rmdir()
    with pytest.raises(DataError, match="sort them into one folder per class"):
        read_imagenet(tmp_path)


def test_corrupt_image_and_missing(tmp_path, fmt):
    fmt.image_folder(tmp_path, per_class=1)
    bad = tmp_path / "val" / "n02" / "img0.png"
    bad.write_bytes(b"\x89PNG garbage")
    ds = read_imagenet(tmp_path, size=4, resize=6)
    _, test = make_loaders(ds, 2)
    with pytest.raises(DataError, match="img0.png"):
        list(test.eval())
    with pytest.raises(DataError, match="image-net.org"):
        read_imagenet(tmp_path / "nothing", download=True)
