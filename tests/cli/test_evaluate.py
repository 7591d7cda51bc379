"""bnnopt eval on the official FSG full-precision checkpoints (skips without ../shared)."""
import pytest

from bnnopt.cli.evaluate import evaluate_path


@pytest.mark.parametrize("name", ["resnet20"])
def test_eval_official_fp_checkpoint(shared_dir, name):
    result = evaluate_path(shared_dir / "pretrained" / f"{name}-cifar10-fp.pth",
                           data_root=str(shared_dir / "data"), limit=300, device="cpu")
    assert result["kind"] == "state_dict" and result["images"] == 300
    assert result["test_acc"] > 85.0, result  # 91.9 % on all 1,017 shared test images


def test_plain_state_dict_needs_a_model_name(tmp_path):
    import torch

    torch.save({"w": torch.zeros(1)}, tmp_path / "weights.pth")
    with pytest.raises(ValueError, match="say which model it is with --model"):
        evaluate_path(tmp_path / "weights.pth")
