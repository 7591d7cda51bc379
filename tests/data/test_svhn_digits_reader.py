import numpy as np
import pytest

from bnnopt.data import DataError, read_digits, read_svhn
from bnnopt.data._digits import split_stratified


def test_svhn_round_trip_and_label_ten_is_zero(tmp_path, fmt):
    out = fmt.svhn(tmp_path / "svhn", n_train=6, n_test=3)
    ds = read_svhn(tmp_path)
    x, y = out["train"]
    assert ds.train_x.shape == (6, 3, 32, 32) and ds.test_x.shape == (3, 3, 32, 32)
    # X[h, w, c, n] -> x[n, c, h, w]
    assert ds.train_x[4, 1, 7, 20].item() == x[7, 20, 1, 4]
    assert ds.train_y[0].item() == 0  # file label 10
    assert np.array_equal(ds.train_y.numpy(), y[:, 0] % 10)
    assert ds.num_classes == 10 and ds.in_channels == 3


def test_svhn_corrupt_and_missing(tmp_path, fmt):
    fmt.svhn(tmp_path)
    f = tmp_path / "test_32x32.mat"
    f.write_bytes(f.read_bytes()[:300])
    with pytest.raises(DataError, match="test_32x32.mat"):
        read_svhn(tmp_path)
    with pytest.raises(DataError, match=r"svhn data not found.*ufldl.*--download|--download.*ufldl"):
        read_svhn(tmp_path / "empty")


def test_svhn_wrong_variables(tmp_path, fmt):
    import scipy.io

    fmt.svhn(tmp_path)
    scipy.io.savemat(str(tmp_path / "train_32x32.mat"), {"images": np.zeros((2, 2), np.uint8)})
    with pytest.raises(DataError, match="train_32x32.mat.*lack 'X'"):
        read_svhn(tmp_path)


def test_split_stratified_is_deterministic_disjoint_and_balanced():
    labels = np.repeat(np.arange(3), [8, 4, 12])
    tr, te = split_stratified(labels, 0.25, seed=5)
    tr2, te2 = split_stratified(labels, 0.25, seed=5)
    assert np.array_equal(tr, tr2) and np.array_equal(te, te2)
    assert set(tr).isdisjoint(te) and len(tr) + len(te) == labels.size
    assert [int((labels[te] == c).sum()) for c in range(3)] == [2, 1, 3]
    assert not np.array_equal(te, split_stratified(labels, 0.25, seed=6)[1])
    with pytest.raises(ValueError, match="test_fraction"):
        split_stratified(labels, 1.5, 0)


def test_digits_embedded():
    sk = pytest.importorskip("sklearn.datasets")
    ds = read_digits()
    raw = sk.load_digits()
    assert ds.train_x.shape[0] + ds.test_x.shape[0] == 1797 and ds.train_x.shape[1:] == (1, 8, 8)
    assert ds.test_x.shape[0] == sum(round(0.25 * n) for n in np.bincount(raw.target))
    assert int(ds.train_x.max()) == 255  # 16 -> 255
    assert set(np.unique(ds.train_x.numpy())) <= set(np.rint(np.arange(17) * 255 / 16).astype(int))
    px = ds.train_x.double() / 255
    assert ds.mean[0] == pytest.approx(px.mean().item()) and ds.std[0] == pytest.approx(px.std(unbiased=False).item())
    again = read_digits()
    assert (again.test_y == ds.test_y).all() and (again.train_x == ds.train_x).all()
