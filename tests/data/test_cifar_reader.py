import os
import pickle

import numpy as np
import pytest
import torch

from bnnopt.data import CIFAR10_MEAN, CIFAR10_STD, DataError, load_dataset, read_cifar10, read_cifar100


def test_cifar10_round_trip_any_count(tmp_path, fmt):
    xtr, ytr, _, yte = fmt.cifar10(tmp_path, n_per_batch=7, n_test=5)
    ds = read_cifar10(tmp_path)
    assert ds.train_x.shape == (35, 3, 32, 32) and ds.test_x.shape == (5, 3, 32, 32)
    assert ds.train_x.dtype == torch.uint8 and ds.train_y.dtype == torch.int64
    # channel-major rows: data[n, c*1024 + h*32 + w] == x[n, c, h, w]
    n, c, h, w = 11, 2, 5, 30
    assert ds.train_x[n, c, h, w].item() == xtr[n, c * 1024 + h * 32 + w]
    assert np.array_equal(ds.train_x.numpy().reshape(35, -1), xtr)
    assert np.array_equal(ds.train_y.numpy(), ytr) and np.array_equal(ds.test_y.numpy(), yte)
    assert ds.classes[0] == "airplane" and ds.classes[9] == "truck"
    assert ds.mean == CIFAR10_MEAN and ds.std == CIFAR10_STD
    assert ds.augment is not None and ds.augment.pad == 4 and ds.augment.flip


def test_cifar10_str_keys_and_root_is_the_folder(tmp_path, fmt):
    fmt.cifar10(tmp_path, n_per_batch=2, n_test=3, str_keys=True)
    ds = read_cifar10(tmp_path / "cifar-10-batches-py")  # root pointing at the folder itself
    assert len(ds.train_y) == 10 and len(ds.test_y) == 3


def test_cifar10_through_registry_and_env(tmp_path, fmt, monkeypatch):
    fmt.cifar10(tmp_path, n_per_batch=1, n_test=1)
    monkeypatch.setenv("BNNOPT_DATA", str(tmp_path))
    assert load_dataset("cifar10").train_x.shape[0] == 5


def test_cifar100_fine_and_coarse(tmp_path, fmt):
    out = fmt.cifar100(tmp_path)
    fine = read_cifar100(tmp_path)
    coarse = read_cifar100(tmp_path, label_mode="coarse")
    assert fine.num_classes == 100 and coarse.num_classes == 20
    assert np.array_equal(fine.train_y.numpy(), out["train"][1])
    assert np.array_equal(coarse.test_y.numpy(), out["test"][2])
    with pytest.raises(ValueError, match="label_mode.*fine, coarse"):
        read_cifar100(tmp_path, label_mode="medium")


def test_missing_root_names_paths_and_download(tmp_path):
    with pytest.raises(DataError) as e:
        read_cifar10(tmp_path / "nowhere")
    msg = str(e.value)
    assert "\n" not in msg
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py") in msg and "--download" in msg
    assert "cifar-10-python.tar.gz" in msg


def test_truncated_batch_names_file(tmp_path, fmt):
    fmt.cifar10(tmp_path)
    f = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    f.write_bytes(f.read_bytes()[:500])
    with pytest.raises(DataError, match="data_batch_3"):
        read_cifar10(tmp_path)


def test_corrupt_shapes_and_labels(tmp_path, fmt):
    fmt.cifar10(tmp_path)
    d = tmp_path / "cifar-10-batches-py"
    fmt.cifar_batch(d / "test_batch", np.zeros((3, 100), np.uint8), [0, 1, 2])
    with pytest.raises(DataError, match=r"test_batch.*\[N, 3072\]"):
        read_cifar10(tmp_path)
    fmt.cifar_batch(d / "test_batch", np.zeros((3, 3072), np.uint8), [0, 1])
    with pytest.raises(DataError, match="3 images but 2 labels"):
        read_cifar10(tmp_path)
    fmt.cifar_batch(d / "test_batch", np.zeros((2, 3072), np.uint8), [0, 10])
    with pytest.raises(DataError, match="labels outside"):
        read_cifar10(tmp_path)


class _Evil:
    def __reduce__(self):
        return (os.getcwd, ())


def test_foreign_pickle_is_refused(tmp_path, fmt):
    fmt.cifar10(tmp_path)
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_1", "wb") as f:
        pickle.dump({b"data": _Evil()}, f, protocol=2)
    with pytest.raises(DataError, match="data_batch_1.*not allowed"):
        read_cifar10(tmp_path)
