"""Validation split: disjoint from train and test, a pure function of the seed."""
import pytest
import torch

from bnnopt.data import ArrayDataset
from bnnopt.data.split import hold_out_validation, validation_indices


def toy_dataset(n_train=50, n_test=20):
    # every image carries its own id in pixel (0, 0, 0): train ids 0..49, test ids 100..119
    def images(ids):
        x = torch.zeros(len(ids), 1, 2, 2, dtype=torch.uint8)
        x[:, 0, 0, 0] = torch.tensor(ids, dtype=torch.uint8)
        return x

    return ArrayDataset("toy", images(range(n_train)), torch.arange(n_train) % 3,
                        images(range(100, 100 + n_test)), torch.arange(n_test) % 3,
                        ("a", "b", "c"), (0.5,), (0.5,))


def test_partition_disjoint_and_complete():
    train, val = validation_indices(1000, 0.1, seed=3)
    assert val.numel() == 100 and train.numel() == 900
    assert not set(train.tolist()) & set(val.tolist())
    assert sorted(train.tolist() + val.tolist()) == list(range(1000))


def test_function_of_the_seed():
    a = validation_indices(500, 0.2, seed=0)[1]
    assert torch.equal(a, validation_indices(500, 0.2, seed=0)[1])  # same seed, same split
    torch.manual_seed(123)  # the global RNG plays no part
    assert torch.equal(a, validation_indices(500, 0.2, seed=0)[1])
    b = validation_indices(500, 0.2, seed=1)[1]
    assert not torch.equal(a, b)  # another seed, another split


def test_hold_out_never_touches_test():
    ds = toy_dataset()
    train, val_x, val_y = hold_out_validation(ds, 0.2, seed=7)
    train_ids = set(train.train_x[:, 0, 0, 0].tolist())
    val_ids = set(val_x[:, 0, 0, 0].tolist())
    test_ids = set(train.test_x[:, 0, 0, 0].tolist())
    assert len(val_ids) == 10 and len(train_ids) == 40
    assert not train_ids & val_ids and not val_ids & test_ids and not train_ids & test_ids
    assert train_ids | val_ids == set(range(50)) and test_ids == set(range(100, 120))
    assert torch.equal(val_y, torch.tensor(sorted(val_ids)) % 3)  # labels follow their images


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5, True, "0.1", 0.0001])
def test_bad_fractions(fraction):
    with pytest.raises(ValueError, match="val_fraction"):
        validation_indices(100, fraction, seed=0)


def test_zero_holds_nothing_out():
    train, val = validation_indices(10, 0.0, seed=0)
    assert train.tolist() == list(range(10)) and val.numel() == 0


def test_meta_stream_is_another_split_and_names_its_option():
    from bnnopt.data.split import META_STREAM

    val = validation_indices(500, 0.2, seed=0)[1]
    meta = validation_indices(500, 0.2, seed=0, stream=META_STREAM, name="meta_fraction")[1]
    assert not torch.equal(val, meta)
    assert torch.equal(meta, validation_indices(500, 0.2, seed=0, stream=META_STREAM)[1])
    with pytest.raises(ValueError, match="invalid meta_fraction 1.5"):
        validation_indices(100, 1.5, seed=0, name="meta_fraction")
