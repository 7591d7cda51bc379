"""bnnopt.hyper: learned-gradient methods (hypernetworks that generate the gradient).

Registered methods (``METHODS``):

fcgrad    MetaQuant FC-Grad: M = FC(dL/dQ)
multifc   MetaQuant MultiFC: M = dL/dQ * MultiFC(W-hat)
lstmfc    MetaQuant LSTMFC:  M = dL/dQ * fc(LSTM(W-hat)), hidden state per layer
fsg       FSG (AAAI 2025): fast-net + Mamba/LSTM slow-net over HGS with LRE

Building blocks: :class:`LearnedGradientMethod` (the shared step, FSG Algorithm 1),
:class:`HistoryBuffer` (HGS), :class:`LayerEmbedding` (LRE), :class:`LinearStack`
and :class:`LSTMFCNet` (element-wise meta-nets); the slow-nets live in
``bnnopt.hyper.slow_nets``.
"""
from bnnopt.hyper.fsg import FSG
from bnnopt.hyper.hgs import HistoryBuffer
from bnnopt.hyper.learned import LearnedGradientMethod, MetaInputs, calibration
from bnnopt.hyper.lre import LayerEmbedding
from bnnopt.hyper.meta_nets import LinearStack, LSTMFCNet
from bnnopt.hyper.metaquant import FCGrad, LSTMFC, MetaQuantMethod, MultiFC

__all__ = [
    "FSG", "FCGrad", "HistoryBuffer", "LSTMFC", "LSTMFCNet", "LayerEmbedding",
    "LearnedGradientMethod", "LinearStack", "MetaInputs", "MetaQuantMethod", "MultiFC",
    "calibration",
]
