"""GPT.generate and ``bnnopt generate``: the same text from a run and its packed export."""
from __future__ import annotations

import pytest
import torch

from bnnopt.cli.generate import encode_prompt, generate_text
from bnnopt.cli.main import main
from bnnopt.models.gpt import GPT
from bnnopt.train import RunConfig, Trainer


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    """A tiny 1-bit GPT trained two steps on the embedded Shakespeare, and its packed export."""
    from bnnopt.export import export_checkpoint

    root = tmp_path_factory.mktemp("lm")
    cfg = RunConfig(model="gpt_tiny", dataset="shakespeare_embedded", method="ste", epochs=1,
                    batch_size=4, model_options={"block_size": 16, "d_model": 32},
                    policy={"keep_first": False, "keep_last": True}, schedule="constant",
                    optim={"name": "adam", "lr": 2e-3}, augment=False, device="cpu",
                    train_limit=8, test_limit=4)
    Trainer(cfg, root / "run").run()
    export_checkpoint(root / "run", root / "gpt.bnnpk")
    return root / "run", root / "gpt.bnnpk"


def tiny_gpt(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(num_classes=11, block_size=4, n_layer=1, n_head=2, d_model=8).eval()


def test_generate_shapes_context_crop_and_determinism():
    model = tiny_gpt()
    idx = torch.tensor([[1, 2, 3], [4, 5, 6]])
    out = model.generate(idx, 6, generator=torch.Generator().manual_seed(3))
    assert out.shape == (2, 9) and out.dtype == torch.int64
    assert torch.equal(out[:, :3], idx) and int(out.min()) >= 0 and int(out.max()) < 11
    again = model.generate(idx, 6, generator=torch.Generator().manual_seed(3))
    assert torch.equal(out, again)
    # greedy: each new token is the argmax of the logits of the last block_size tokens
    greedy = model.generate(idx[:1], 5, temperature=0)
    for t in range(3, 8):
        context = greedy[:, max(0, t - model.block_size):t]
        assert int(greedy[0, t]) == int(model(context)[0, -1].argmax())


def test_generate_bad_input():
    model = tiny_gpt()
    idx = torch.tensor([[1, 2]])
    for kwargs, match in [({"max_new_tokens": 0}, "max_new_tokens"),
                          ({"max_new_tokens": 2, "temperature": -1.0}, "temperature"),
                          ({"max_new_tokens": 2.0}, "max_new_tokens")]:
        with pytest.raises(ValueError, match=match):
            model.generate(idx, **kwargs)
    with pytest.raises(ValueError, match="token 11 is outside the vocabulary; valid: 0..10"):
        model.generate(torch.tensor([[1, 11]]), 1)
    with pytest.raises(ValueError, match=r"integer tokens \[B, T\]"):
        model.generate(torch.tensor([1, 2]), 1)


def test_encode_prompt():
    assert encode_prompt("Hi é", 256).tolist() == [[72, 105, 32, 195, 169]]
    with pytest.raises(ValueError, match=r"character 'é' \(byte 195\) is not in the model's "
                                         r"vocabulary; valid: bytes 0..127"):
        encode_prompt("Hi é", 128)
    with pytest.raises(ValueError, match="--prompt ''"):
        encode_prompt("", 256)


def test_packed_export_generates_the_same_text_as_the_run(lm_run, capsys):
    run, packed = lm_run
    for temperature in (1.0, 0.0):
        a = generate_text(run, "ROMEO:", 24, temperature=temperature, seed=7)
        b = generate_text(packed, "ROMEO:", 24, temperature=temperature, seed=7)
        assert a == b and a.startswith("ROMEO:")
    assert generate_text(run, "ROMEO:", 24, seed=7) != generate_text(run, "ROMEO:", 24, seed=8)
    assert main(["generate", str(packed), "--prompt", "ROMEO:", "--tokens", "24", "--seed", "7"]) == 0
    assert capsys.readouterr().out == generate_text(run, "ROMEO:", 24, seed=7) + "\n"


@pytest.mark.parametrize("args, match", [
    (["--tokens", "0"], "invalid --tokens 0; must be an integer >= 1"),
    (["--tokens", "3", "--temperature", "-1"], "invalid --temperature -1.0"),
    (["--tokens", "3", "--prompt", ""], "invalid --prompt ''"),
])
def test_cli_bad_input_is_one_line_exit_2(lm_run, capsys, args, match):
    run, _ = lm_run
    argv = ["generate", str(run), "--prompt", "ab", *args]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1


def test_cli_refuses_a_run_that_is_not_a_language_model(tmp_path, capsys):
    cfg = RunConfig(model="mlp", dataset="digits", method="ste", epochs=1, batch_size=32,
                    model_options={"hidden": 8}, augment=False, device="cpu",
                    train_limit=32, test_limit=32)
    Trainer(cfg, tmp_path / "run").run()
    assert main(["generate", str(tmp_path / "run"), "--prompt", "a", "--tokens", "2"]) == 2
    err = capsys.readouterr().err
    assert "is not a language model (model MLP on digits)" in err and err.count("\n") == 1
    assert main(["generate", str(tmp_path / "nothing"), "--prompt", "a", "--tokens", "2"]) == 2
    assert "no such run directory or file" in capsys.readouterr().err
