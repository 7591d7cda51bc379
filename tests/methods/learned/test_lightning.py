"""bnnopt.FSG under Lightning's automatic optimization (optimizer.step(closure))."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import bnnopt

from .conftest import ALL_LAYERS, batches, tiny_mlp

L = pytest.importorskip("lightning")


class Module(L.LightningModule):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = tiny_mlp().double()
        bnnopt.binarize_(self.net, bnnopt.FSG.quant_config(**ALL_LAYERS))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        base = torch.optim.SGD(self.net.parameters(), lr=0.05, momentum=0.9)
        return bnnopt.FSG(self.net, base, history=2, meta_seed=0)


def _loader():
    data = batches(4, seed=4)
    dataset = torch.utils.data.TensorDataset(torch.cat([x for x, _ in data]),
                                             torch.cat([y for _, y in data]))
    return torch.utils.data.DataLoader(dataset, batch_size=5, shuffle=False)


def _trainer(root, epochs, callbacks=()):
    return L.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False,
                     enable_progress_bar=False, enable_model_summary=False,
                     enable_checkpointing=bool(callbacks), callbacks=list(callbacks),
                     default_root_dir=str(root))


def test_lightning_steps_checkpoints_and_resumes_exactly(tmp_path):
    full = Module()
    trainer = _trainer(tmp_path / "full", 3)
    trainer.fit(full, _loader())
    assert trainer.global_step == 12 == trainer.optimizers[0].steps   # 4 batches x 3 epochs

    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True,
                                               save_top_k=-1)
    first = Module()
    _trainer(tmp_path / "first", 2, [ckpt]).fit(first, _loader())
    state = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)
    saved = state["optimizer_states"][0]
    assert saved["steps"] == 8 and saved["meta_modules"] and saved["g"] is not None
    resumed = Module()
    again = _trainer(tmp_path / "resumed", 3, [ckpt])
    again.fit(resumed, _loader(), ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert again.global_step == 12
    for key, value in full.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    for p, q in zip(trainer.optimizers[0].meta_modules.parameters(),
                    again.optimizers[0].meta_modules.parameters()):
        assert torch.equal(p, q)
