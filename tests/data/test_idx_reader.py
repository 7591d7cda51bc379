import gzip

import numpy as np
import pytest

from bnnopt.data import FASHION_MEAN, MNIST_MEAN, MNIST_STD, DataError, read_fashion_mnist, read_idx, read_mnist


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_round_trip(tmp_path, fmt, gz):
    xtr, ytr, xte, yte = fmt.mnist(tmp_path / "mnist", n_train=9, n_test=4, gz=gz)
    ds = read_mnist(tmp_path)
    assert ds.train_x.shape == (9, 1, 28, 28) and ds.test_x.shape == (4, 1, 28, 28)
    assert np.array_equal(ds.train_x[:, 0].numpy(), xtr) and np.array_equal(ds.test_x[:, 0].numpy(), xte)
    assert np.array_equal(ds.train_y.numpy(), ytr) and np.array_equal(ds.test_y.numpy(), yte)
    assert ds.mean == MNIST_MEAN and ds.std == MNIST_STD and ds.augment is None


def test_torchvision_layout_and_fashion(tmp_path, fmt):
    fmt.mnist(tmp_path / "MNIST" / "raw", n_train=3, n_test=2, gz=False)
    assert read_mnist(tmp_path).train_x.shape[0] == 3
    fmt.mnist(tmp_path / "fashion_mnist", n_train=5, n_test=2)
    f = read_fashion_mnist(tmp_path)
    assert f.train_x.shape[0] == 5 and f.classes[9] == "Ankle boot" and f.mean == FASHION_MEAN


def test_read_idx_header_semantics(tmp_path, fmt):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    p = fmt.idx(tmp_path / "a", a, gz=False)
    raw = p.read_bytes()
    assert raw[:4] == bytes([0, 0, 8, 3]) and int.from_bytes(raw[4:8], "big") == 2
    assert np.array_equal(read_idx(p), a)
    with pytest.raises(DataError, match="3 dimensions, expected 1"):
        read_idx(p, 1)


def test_labels_file_in_images_slot(tmp_path, fmt):
    fmt.mnist(tmp_path)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(
        (tmp_path / "train-labels-idx1-ubyte.gz").read_bytes())
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz.*0x00000801"):
        read_mnist(tmp_path)


def test_bad_magic(tmp_path, fmt):
    fmt.mnist(tmp_path, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x12\x34" + b"\x00" * 20)
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte: bad magic"):
        read_mnist(tmp_path)


@pytest.mark.parametrize("gz", [True, False])
def test_truncated_data_names_file(tmp_path, fmt, gz):
    fmt.mnist(tmp_path, gz=gz)
    name = "train-images-idx3-ubyte" + (".gz" if gz else "")
    f = tmp_path / name
    if gz:
        f.write_bytes(f.read_bytes()[:-30])  # cut gzip stream
    else:
        f.write_bytes(f.read_bytes()[:-100])  # header intact, data short
    with pytest.raises(DataError, match=f"truncated.*{name}"):
        read_mnist(tmp_path)


def test_extra_bytes_and_count_mismatch(tmp_path, fmt):
    fmt.mnist(tmp_path, n_train=5, gz=False)
    f = tmp_path / "train-images-idx3-ubyte"
    f.write_bytes(f.read_bytes() + b"\x00")
    with pytest.raises(DataError, match="corrupt IDX file .*train-images"):
        read_mnist(tmp_path)
    fmt.idx(tmp_path / "train-images-idx3-ubyte", np.zeros((4, 28, 28), np.uint8), gz=False)
    with pytest.raises(DataError, match="4 images.*5 labels"):
        read_mnist(tmp_path)


def test_missing_lists_every_place(tmp_path):
    with pytest.raises(DataError) as e:
        read_mnist(tmp_path)
    msg = str(e.value)
    for place in ("mnist", "MNIST/raw"):
        assert str(tmp_path / place) in msg
    assert "--download" in msg and "train-images-idx3-ubyte" in msg and "\n" not in msg


def test_gzip_detected_by_magic_not_name(tmp_path, fmt):
    a = np.ones((3,), np.uint8)
    p = tmp_path / "labels"
    p.write_bytes(gzip.compress(fmt.idx_bytes(a)))
    assert np.array_equal(read_idx(p, 1), a)
