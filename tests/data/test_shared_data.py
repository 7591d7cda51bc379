"""The real CIFAR-10 / MNIST subsets in ../shared/data (skipped when absent)."""
import torch

from bnnopt.data import CIFAR10_MEAN, make_loaders, read_cifar10, read_mnist


def test_shared_cifar10_subset(shared_dir):
    ds = read_cifar10(shared_dir / "data")
    assert ds.train_x.shape == (5085, 3, 32, 32) and ds.test_x.shape == (1017, 3, 32, 32)
    assert ds.classes == ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    assert set(ds.train_y.tolist()) == set(range(10)) == set(ds.test_y.tolist())
    # real photos: per-channel pixel means close to the published CIFAR-10 means
    means = ds.train_x.double().div(255).mean(dim=(0, 2, 3))
    assert torch.allclose(means, torch.tensor(CIFAR10_MEAN, dtype=torch.float64), atol=0.01)
    train, _ = make_loaders(ds, 512, seed=0)
    x, _ = next(iter(train.epoch(0)))
    assert x.shape == (512, 3, 32, 32) and abs(x.mean().item()) < 0.3


def test_shared_mnist_subset(shared_dir):
    ds = read_mnist(shared_dir / "data")
    assert ds.train_x.shape == (17435, 1, 28, 28) and ds.test_x.shape == (10000, 1, 28, 28)
    assert ds.train_y[:8].tolist() == [5, 0, 4, 1, 9, 2, 1, 3]  # the famous first MNIST labels
    assert torch.bincount(ds.test_y).tolist()[:3] == [980, 1135, 1032]  # official test class counts
    assert abs(ds.train_x.double().div(255).mean().item() - 0.1307) < 0.005
