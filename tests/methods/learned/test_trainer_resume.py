"""The learned-gradient methods under the Trainer: a killed run resumes bit for bit."""
from __future__ import annotations

import pytest
import torch

from bnnopt.train import RunConfig, Trainer


def _config(method: str, options: dict) -> RunConfig:
    return RunConfig(model="mlp", dataset="digits", method=method, method_options=options,
                     epochs=3, batch_size=128, model_options={"hidden": 16}, schedule="cosine",
                     optim={"name": "adam", "lr": 1e-2}, augment=False, device="cpu",
                     train_limit=384, test_limit=128,
                     policy={"keep_first": False, "keep_last": False})


@pytest.mark.parametrize("method, options", [
    ("fsg", {"history": 3}), ("fsg", {"layout": "flat", "variant": "official", "history": 2}),
    ("lstmfc", {"hidden": 8}), ("fcgrad", {"variant": "official"}),
])
def test_resume_after_kill_is_bit_exact(tmp_path, method, options, full_and_killed):
    full, _ = full_and_killed(_config(method, options), tmp_path / "full", tmp_path / "resumed")
    resumed = Trainer.resume(tmp_path / "resumed")
    resumed.run()
    a, b = full.model.state_dict(), resumed.model.state_dict()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    for p, q in zip(full.method.meta_modules.parameters(), resumed.method.meta_modules.parameters()):
        assert torch.equal(p, q)
